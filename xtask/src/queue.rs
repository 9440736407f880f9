//! `cargo xtask queue <subcommand>`: queue operations on this stack, what
//! `redis-cli LRANGE celery 0 -1` (and friends) were to the Celery one.
//!
//! The table is the source of truth; the queue carries only message ids
//! (`{"id":"<message id>"}`). So these commands read the table wherever they can
//! and touch a queue only where that is harmless:
//!
//! - `stats` reads queue attributes (GetQueueAttributes receives nothing) and
//!   counts the table's messages by status.
//! - `peek` never receives from the main queue. Any ReceiveMessage, even with
//!   VisibilityTimeout 0, increments the message's ApproximateReceiveCount, which
//!   counts toward the redrive policy's maxReceiveCount: a peek could push a
//!   message into the dead-letter queue (and makes the delivery function give up
//!   one attempt early, since it marks a message failed on the last receive the
//!   queue allows). A received message is also hidden from the consumer while it
//!   is in flight. So `peek` lists what the table says is waiting instead.
//!   `peek --dlq` does receive, with VisibilityTimeout 0: the dead-letter queue
//!   has no redrive policy and no consumer, so receive counts do no harm there.
//! - `redrive` moves dead-lettered messages back to the main queue.
//! - `show` prints one message item, its lease and what its state means.
//!
//! Locally the commands talk to the emulator; with `--aws` (or `QUEUE_URL` set)
//! to whatever the SDK's default configuration points at, with the names taken
//! from `TABLE_NAME`, `QUEUE_URL` and `DLQ_URL`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::{
    BatchResultErrorEntry, ChangeMessageVisibilityBatchRequestEntry,
    DeleteMessageBatchRequestEntry, Message as SqsMessage, MessageSystemAttributeName,
    QueueAttributeName, SendMessageBatchRequestEntry,
};

use crate::stack::{DLQ_NAME, QUEUE_NAME, TABLE_NAME, aws_config};

pub const USAGE: &str = "\
usage: cargo xtask queue [--endpoint URL [--sqs-endpoint URL] | --aws] <subcommand>

subcommands:
  stats                 depths of the queue and the dead-letter queue (visible,
                        in flight, delayed) and the table's messages by status
  peek [--limit N]      the messages waiting for delivery (status queued or
                        sending; default 20), read from the TABLE. It never
                        receives from the main queue: every ReceiveMessage, even
                        with VisibilityTimeout 0, counts toward the queue's
                        maxReceiveCount (a peek could push a message into the
                        dead-letter queue) and hides the message from the
                        delivery function while it is in flight
  peek --dlq [--limit N]
                        receives from the dead-letter queue with VisibilityTimeout
                        0 (it has no redrive policy, so receive counts are
                        harmless there) and shows each SQS message with the
                        table's status of the message its body names
  redrive [--limit N]   moves messages from the dead-letter queue back to the
                        main queue (all of them unless --limit). Redelivering a
                        message the table says is sent or failed is a no-op
  show <message-id>     one message item, its lease and what its state means

where:
  (default)             the local stack: emulator at --endpoint (default
                        http://127.0.0.1:4566), table messages, queues messages
                        and messages-dlq
  --sqs-endpoint URL    SQS at URL, DynamoDB at --endpoint (`cargo xtask dev
                        --emulator localstack` prints the two)
  --aws                 the AWS SDK's default configuration (AWS_PROFILE,
                        AWS_REGION, AWS_ENDPOINT_URL, ...) with TABLE_NAME,
                        QUEUE_URL and DLQ_URL from the environment; implied when
                        QUEUE_URL is set and --endpoint is not given";

const LOCAL_ENDPOINT: &str = "http://127.0.0.1:4566";
const DEFAULT_PEEK: usize = 20;
/// Statuses in lifecycle order (see shared/src/domain/status.rs).
const STATUSES: [&str; 6] = [
    "queued",
    "sending",
    "sent",
    "delivered",
    "failed",
    "received",
];
/// The order `show` lists a message's attributes in; any others follow by name.
const FIELDS: [&str; 15] = [
    "id",
    "direction",
    "type",
    "from",
    "to",
    "body",
    "status",
    "attempts",
    "last_error",
    "provider_message_id",
    "next_attempt_at",
    "created_at",
    "updated_at",
    "lease_id",
    "lease_expires_at",
];

type Item = HashMap<String, AttributeValue>;

/// `cargo xtask inspect`, kept for old docs: `queue stats` (its `--limit`, for
/// the list of latest messages it used to print, is now `queue peek --limit`).
pub async fn inspect(args: &[String]) -> Result<()> {
    let mut forwarded = vec!["stats".to_owned()];
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--limit" {
            args.next();
            eprintln!(
                "xtask: `inspect` is now `queue stats`; to list messages: `queue peek --limit N`"
            );
        } else {
            forwarded.push(arg.clone());
        }
    }
    run(&forwarded).await
}

pub async fn run(args: &[String]) -> Result<()> {
    // Die quietly when the reader goes away (`queue peek | head`), as Unix tools
    // do, rather than panic on a broken pipe.
    // SAFETY: restores the default action of a signal; no handler runs.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let args = parse(args)?;
    if args.help {
        println!("{USAGE}");
        return Ok(());
    }
    let Some((command, rest)) = args.words.split_first() else {
        bail!("which subcommand?\n\n{USAGE}");
    };
    let (dlq_ok, limit_ok, words) = match command.as_str() {
        "stats" => (false, false, 0),
        "peek" => (true, true, 0),
        "redrive" => (false, true, 0),
        "show" => (false, false, 1),
        other => bail!("unknown subcommand {other} (see `cargo xtask queue --help`)"),
    };
    if (args.dlq && !dlq_ok) || (args.limit.is_some() && !limit_ok) || rest.len() != words {
        bail!("wrong arguments for `queue {command}` (see `cargo xtask queue --help`)");
    }
    let target = Target::connect(&args).await?;
    let limit = args.limit;
    match command.as_str() {
        "stats" => stats(&target).await,
        "peek" if args.dlq => peek_dlq(&target, limit.unwrap_or(DEFAULT_PEEK)).await,
        "peek" => peek(&target, limit.unwrap_or(DEFAULT_PEEK)).await,
        "redrive" => redrive(&target, limit.unwrap_or(usize::MAX)).await,
        _ => show(&target, &rest[0]).await,
    }
}

#[derive(Debug, Default, PartialEq)]
struct Args {
    aws: bool,
    endpoint: Option<String>,
    sqs_endpoint: Option<String>,
    dlq: bool,
    limit: Option<usize>,
    help: bool,
    /// The subcommand and its operands.
    words: Vec<String>,
}

fn parse(args: &[String]) -> Result<Args> {
    let mut parsed = Args::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| {
            args.next()
                .cloned()
                .with_context(|| format!("{flag} needs a value"))
        };
        match arg.as_str() {
            "--aws" => parsed.aws = true,
            "--dlq" => parsed.dlq = true,
            "-h" | "--help" => parsed.help = true,
            "--endpoint" => parsed.endpoint = Some(value("--endpoint")?),
            "--sqs-endpoint" => parsed.sqs_endpoint = Some(value("--sqs-endpoint")?),
            "--limit" => {
                let n = value("--limit")?.parse().ok().filter(|&n: &usize| n > 0);
                parsed.limit = Some(n.context("--limit takes a number above 0")?);
            }
            flag if flag.starts_with('-') => {
                bail!("unknown option {flag} (see `cargo xtask queue --help`)")
            }
            word => parsed.words.push(word.to_owned()),
        }
    }
    if parsed.aws && (parsed.endpoint.is_some() || parsed.sqs_endpoint.is_some()) {
        bail!(
            "--aws and --endpoint/--sqs-endpoint exclude each other (on AWS set AWS_ENDPOINT_URL if needed)"
        );
    }
    Ok(parsed)
}

/// The table and queues the commands work on, and the clients to reach them.
struct Target {
    sqs: aws_sdk_sqs::Client,
    dynamodb: aws_sdk_dynamodb::Client,
    table: String,
    /// The SQS emulator's URL; `None` on AWS (names from the environment).
    endpoint: Option<String>,
}

impl Target {
    async fn connect(args: &Args) -> Result<Self> {
        let local = args.endpoint.is_some() || args.sqs_endpoint.is_some();
        let on_aws = args.aws || (!local && std::env::var_os("QUEUE_URL").is_some());
        let (config, sqs_config, table, endpoint) = if on_aws {
            let table = required("TABLE_NAME")?;
            eprintln!(
                "xtask: AWS SDK default configuration (--aws or QUEUE_URL set), table {table}"
            );
            // What the functions load.
            let config = shared::adapters::aws_config().await;
            (config.clone(), config, table, None)
        } else {
            let endpoint = args.endpoint.as_deref().unwrap_or(LOCAL_ENDPOINT);
            let sqs_endpoint = args.sqs_endpoint.as_deref().unwrap_or(endpoint);
            let config = aws_config(endpoint).await;
            let sqs_config = aws_config(sqs_endpoint).await;
            let table = TABLE_NAME.to_owned();
            (config, sqs_config, table, Some(sqs_endpoint.to_owned()))
        };
        Ok(Self {
            sqs: aws_sdk_sqs::Client::new(&sqs_config),
            dynamodb: aws_sdk_dynamodb::Client::new(&config),
            table,
            endpoint,
        })
    }

    /// The URL of the main queue, or of the dead-letter queue.
    async fn queue_url(&self, dlq: bool) -> Result<String> {
        let Some(endpoint) = &self.endpoint else {
            return required(if dlq { "DLQ_URL" } else { "QUEUE_URL" });
        };
        let name = if dlq { DLQ_NAME } else { QUEUE_NAME };
        let url = self.sqs.get_queue_url().queue_name(name).send().await;
        url.with_context(|| format!("queue {name} at {endpoint} (is `cargo xtask dev` running?)"))?
            .queue_url
            .with_context(|| format!("the emulator has no URL for queue {name}"))
    }

    /// A queue's attributes by name (those GetQueueAttributes has; no receive).
    async fn attributes(&self, url: &str) -> Result<HashMap<String, String>> {
        let output = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .with_context(|| format!("attributes of {url}"))?;
        let attributes = output.attributes.unwrap_or_default().into_iter();
        Ok(attributes
            .map(|(k, v)| (k.as_str().to_owned(), v))
            .collect())
    }

    async fn message(&self, id: &str) -> Result<Option<Item>> {
        let output = self
            .dynamodb
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(format!("MSG#{id}")))
            .consistent_read(true)
            .send()
            .await
            .with_context(|| format!("reading message {id} from table {}", self.table))?;
        Ok(output.item)
    }

    /// The message items (`MSG#…`, not the guard items) with `attributes` (and
    /// `status`), only those with one of `statuses` unless it is empty. This is a
    /// Scan: fine for a dev/ops tool; the service itself never scans.
    async fn scan_messages(&self, attributes: &[&str], statuses: &[&str]) -> Result<Vec<Item>> {
        let mut names = attributes.to_vec();
        if !names.contains(&"status") {
            names.push("status");
        }
        let projection: Vec<String> = names.iter().map(|n| format!("#{n}")).collect();
        let mut filter = "begins_with(pk, :msg)".to_owned();
        let mut request = self
            .dynamodb
            .scan()
            .table_name(&self.table)
            .projection_expression(projection.join(", "))
            .expression_attribute_values(":msg", AttributeValue::S("MSG#".into()));
        for name in names {
            request = request.expression_attribute_names(format!("#{name}"), name);
        }
        if !statuses.is_empty() {
            let values: Vec<String> = (0..statuses.len()).map(|i| format!(":s{i}")).collect();
            filter += &format!(" AND #status IN ({})", values.join(", "));
            for (value, status) in values.iter().zip(statuses) {
                request = request
                    .expression_attribute_values(value, AttributeValue::S(status.to_string()));
            }
        }
        let request = request.filter_expression(filter);
        let (mut items, mut start) = (Vec::new(), None);
        loop {
            let page = request.clone().set_exclusive_start_key(start).send().await;
            let page = page.with_context(|| format!("scanning table {}", self.table))?;
            items.extend(page.items.unwrap_or_default());
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(items);
            }
        }
    }
}

fn required(name: &str) -> Result<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty()).with_context(|| {
        format!("{name} is not set; on AWS (--aws, or QUEUE_URL set) the table and queues come from TABLE_NAME, QUEUE_URL and DLQ_URL")
    })
}

const VISIBLE: &str = "ApproximateNumberOfMessages";
const IN_FLIGHT: &str = "ApproximateNumberOfMessagesNotVisible";
const DELAYED: &str = "ApproximateNumberOfMessagesDelayed";
/// Some emulators return it; on AWS it is a CloudWatch metric, not an attribute.
const OLDEST: &str = "ApproximateAgeOfOldestMessage";

async fn stats(target: &Target) -> Result<()> {
    let mut rows = Vec::new();
    let mut has_age = false;
    for dlq in [false, true] {
        let url = target.queue_url(dlq).await?;
        let attributes = target.attributes(&url).await?;
        let get = |name: &str| attributes.get(name).cloned().unwrap_or_else(|| "?".into());
        has_age |= attributes.contains_key(OLDEST);
        let age = attributes
            .get(OLDEST)
            .map_or("-".into(), |s| format!("{s}s"));
        rows.push(vec![
            queue_name(&url).into(),
            get(VISIBLE),
            get(IN_FLIGHT),
            get(DELAYED),
            age,
        ]);
    }
    let mut headers = vec!["queue", "visible", "in flight", "delayed", "oldest"];
    if !has_age {
        headers.pop();
        for row in &mut rows {
            row.pop();
        }
    }
    print!("{}", table(&headers, &rows));
    if !has_age {
        // Only some emulators have it as an attribute; don't make one up.
        println!(
            "(age of the oldest message: not a queue attribute here; on AWS it is the CloudWatch metric ApproximateAgeOfOldestMessage)"
        );
    }

    // A Scan (with a projection) to count: fine for a dev/ops tool; the service never scans.
    let items = target.scan_messages(&["status"], &[]).await?;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for item in &items {
        *counts
            .entry(text(item, "status").unwrap_or("-").to_owned())
            .or_default() += 1;
    }
    let mut rows: Vec<Vec<String>> = STATUSES
        .iter()
        .map(|s| vec![s.to_string(), counts.remove(*s).unwrap_or(0).to_string()])
        .collect();
    rows.extend(counts.into_iter().map(|(s, n)| vec![s, n.to_string()]));
    rows.push(vec!["total".into(), items.len().to_string()]);
    println!("\nmessages in table {} by status:", target.table);
    print!("{}", table(&["status", "count"], &rows));
    Ok(())
}

/// Lists the messages waiting for delivery from the table, never from the
/// queue: a receive would count toward maxReceiveCount (see the module docs).
async fn peek(target: &Target, limit: usize) -> Result<()> {
    let url = target.queue_url(false).await?;
    let attributes = target.attributes(&url).await?;
    let get = |name: &str| attributes.get(name).map_or("?", String::as_str);
    println!(
        "queue {}: {} visible, {} in flight, {} delayed (not received from: the table says what waits)",
        queue_name(&url),
        get(VISIBLE),
        get(IN_FLIGHT),
        get(DELAYED)
    );
    // Queue entries naming no waiting message (junk, unknown ids, duplicates of
    // settled ones) are not in this list; they show in `peek --dlq` once dead.
    let columns = [
        "id",
        "status",
        "type",
        "to",
        "attempts",
        "next_attempt_at",
        "last_error",
    ];
    let mut items = target
        .scan_messages(&columns, &["queued", "sending"])
        .await?;
    items.sort_by(|a, b| text(a, "id").cmp(&text(b, "id"))); // UUIDv7: oldest first
    let shown = if items.len() > limit {
        format!(", the first {limit}")
    } else {
        String::new()
    };
    println!(
        "{} message(s) in table {} are queued or sending{shown}, oldest first:",
        items.len(),
        target.table
    );
    let rows: Vec<Vec<String>> = items
        .iter()
        .take(limit)
        .map(|item| {
            columns
                .iter()
                .map(|c| text(item, c).unwrap_or("-").to_owned())
                .collect()
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "id",
                "status",
                "type",
                "to",
                "tries",
                "next attempt",
                "last error"
            ],
            &rows
        )
    );
    Ok(())
}

/// Receives from the dead-letter queue with VisibilityTimeout 0: harmless there
/// (no redrive policy, no consumer), and the messages stay visible.
async fn peek_dlq(target: &Target, limit: usize) -> Result<()> {
    let url = target.queue_url(true).await?;
    let (mut seen, mut rows) = (HashSet::new(), Vec::new());
    // Each receive may return the same messages again (they stay visible):
    // stop when one brings nothing new.
    for _ in 0..limit.div_ceil(10) + 2 {
        let received = target
            .sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages((limit - rows.len()).min(10) as i32)
            .visibility_timeout(0)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .with_context(|| format!("receiving from {url}"))?;
        let before = rows.len();
        for message in received.messages.unwrap_or_default() {
            if rows.len() < limit && seen.insert(message.message_id.clone()) {
                rows.push(dlq_row(target, &message).await?);
            }
        }
        if rows.len() == before || rows.len() >= limit {
            break;
        }
    }
    let attributes = target.attributes(&url).await?;
    let visible = attributes.get(VISIBLE).map_or("?", String::as_str);
    println!(
        "dead-letter queue {}: {visible} visible; received {} with VisibilityTimeout 0:",
        queue_name(&url),
        rows.len()
    );
    if visible.parse().is_ok_and(|n: usize| n > rows.len()) && rows.len() < limit {
        println!("(receives kept returning these: the others cannot be seen without hiding these)");
    }
    print!(
        "{}",
        table(
            &[
                "sqs message id",
                "receives",
                "sent at",
                "body",
                "message (from the table)"
            ],
            &rows
        )
    );
    Ok(())
}

async fn dlq_row(target: &Target, message: &SqsMessage) -> Result<Vec<String>> {
    let attribute = |name| {
        message
            .attributes
            .as_ref()
            .and_then(|a| a.get(&name))
            .cloned()
    };
    let sent = attribute(MessageSystemAttributeName::SentTimestamp)
        .and_then(|ms| ms.parse::<i64>().ok())
        .map_or("-".into(), |ms| utc(ms.div_euclid(1000)));
    let body = message.body.clone().unwrap_or_default();
    let state = match message_id(&body) {
        None => "not a message id".to_owned(),
        Some(id) => match target.message(&id).await? {
            None => "no such message in the table".to_owned(),
            Some(item) => match (text(&item, "status"), text(&item, "last_error")) {
                (status, Some(error)) => format!("{}: {error}", status.unwrap_or("-")),
                (status, None) => status.unwrap_or("-").to_owned(),
            },
        },
    };
    Ok(vec![
        message.message_id.clone().unwrap_or_default(),
        attribute(MessageSystemAttributeName::ApproximateReceiveCount).unwrap_or("-".into()),
        sent,
        clip(&body, 60),
        state,
    ])
}

/// Moves up to `limit` messages from the dead-letter queue to the main queue.
///
/// On AWS, SQS's StartMessageMoveTask does this server-side, but emulators may
/// not implement it; this receive / send / delete loop works everywhere. A message
/// is deleted from the dead-letter queue only once its copy is on the main queue.
async fn redrive(target: &Target, limit: usize) -> Result<()> {
    let (from, to) = (
        target.queue_url(true).await?,
        target.queue_url(false).await?,
    );
    let (mut moved, mut errors) = (0, Vec::new());
    while moved < limit && errors.is_empty() {
        let received = target
            .sqs
            .receive_message()
            .queue_url(&from)
            .max_number_of_messages((limit - moved).min(10) as i32)
            .visibility_timeout(30)
            .wait_time_seconds(1)
            .send()
            .await
            .with_context(|| format!("receiving from {from}"))?
            .messages
            .unwrap_or_default();
        if received.is_empty() {
            break;
        }
        let batch = move_batch(target, &from, &to, &received).await;
        let (n, batch_errors) =
            batch.inspect_err(|_| println!("moved {moved} message(s) before the error"))?;
        moved += n;
        errors = batch_errors;
    }
    let (from, to) = (queue_name(&from), queue_name(&to));
    println!("moved {moved} message(s) from {from} to {to}");
    if !errors.is_empty() {
        bail!(
            "redrive stopped; the rest stays in {from}: {}",
            errors.join("; ")
        );
    }
    Ok(())
}

/// Sends a batch received from `from` to `to`, then deletes from `from` the
/// messages whose send succeeded. Returns how many moved and what failed.
async fn move_batch(
    target: &Target,
    from: &str,
    to: &str,
    received: &[SqsMessage],
) -> Result<(usize, Vec<String>)> {
    // Batch entry ids are indexes into `received`.
    let index = |id: &str| id.parse::<usize>().ok().and_then(|i| received.get(i));
    let entries = received.iter().enumerate().map(|(i, message)| {
        let entry = SendMessageBatchRequestEntry::builder().id(i.to_string());
        entry.set_message_body(message.body.clone()).build()
    });
    let request = target.sqs.send_message_batch().queue_url(to);
    let sent = request
        .set_entries(Some(entries.collect::<Result<_, _>>()?))
        .send()
        .await;
    let sent = match sent {
        Ok(sent) => sent,
        Err(e) => {
            release(target, from, received.iter().collect()).await;
            return Err(e).with_context(|| format!("sending to {to}"));
        }
    };
    release(
        target,
        from,
        sent.failed.iter().filter_map(|f| index(&f.id)).collect(),
    )
    .await;
    let mut errors: Vec<String> = sent
        .failed
        .iter()
        .map(|f| {
            format!(
                "send: {} {}",
                f.code,
                f.message.as_deref().unwrap_or_default()
            )
        })
        .collect();
    if sent.successful.is_empty() {
        return Ok((0, errors));
    }
    let entries = sent.successful.iter().map(|ok| {
        let handle = index(&ok.id).and_then(|m| m.receipt_handle.clone());
        DeleteMessageBatchRequestEntry::builder()
            .id(&ok.id)
            .set_receipt_handle(handle)
            .build()
    });
    let request = target.sqs.delete_message_batch().queue_url(from);
    let deleted = request
        .set_entries(Some(entries.collect::<Result<_, _>>()?))
        .send()
        .await;
    let n = sent.successful.len();
    let deleted =
        deleted.with_context(|| format!("deleting from {from} {n} message(s) now on {to} too"))?;
    let on_both = |f: &BatchResultErrorEntry| {
        format!("delete: {} (the message is now on both queues)", f.code)
    };
    errors.extend(deleted.failed.iter().map(on_both));
    Ok((n, errors))
}

/// Makes received messages visible again now rather than when their visibility
/// timeout ends (best effort: they come back then anyway).
async fn release(target: &Target, url: &str, messages: Vec<&SqsMessage>) {
    let entries = messages.iter().enumerate().map(|(i, message)| {
        let entry = ChangeMessageVisibilityBatchRequestEntry::builder().id(i.to_string());
        entry
            .set_receipt_handle(message.receipt_handle.clone())
            .visibility_timeout(0)
            .build()
    });
    let Ok(entries) = entries.collect::<Result<Vec<_>, _>>() else {
        return;
    };
    if entries.is_empty() {
        return;
    }
    let request = target.sqs.change_message_visibility_batch().queue_url(url);
    if let Err(e) = request.set_entries(Some(entries)).send().await {
        eprintln!("xtask: could not make them visible again (they will be within 30 s): {e}");
    }
}

async fn show(target: &Target, id: &str) -> Result<()> {
    let Some(item) = target.message(id).await? else {
        bail!("no message {id} in table {}", target.table);
    };
    let now = now();
    let mut names: Vec<&String> = item.keys().collect();
    names.sort_by_key(|n| {
        (
            FIELDS.iter().position(|f| f == n).unwrap_or(FIELDS.len()),
            *n,
        )
    });
    let rows: Vec<Vec<String>> = names
        .into_iter()
        .filter(|name| !(*name == "history" && matches!(item[*name], AttributeValue::L(_))))
        .map(|name| {
            let mut value = render(&item[name]);
            if let (true, Some(secs)) = (name.ends_with("expires_at"), epoch(&item, name)) {
                value += &format!(" ({})", utc(secs));
            }
            vec![name.clone(), value]
        })
        .collect();
    print!("{}", table(&["attribute", "value"], &rows));
    println!("\nlease: {}", lease(&item, now));
    println!("state: {}", interpret(&item, now));
    if let Some(AttributeValue::L(history)) = item.get("history") {
        println!("\nhistory:");
        print!(
            "{}",
            table(
                &["at", "status", "attempt", "error"],
                &history_rows(history)
            )
        );
    }
    Ok(())
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A string or number attribute as text (`None` if missing, null or other).
fn text<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(s) | AttributeValue::N(s)) => Some(s),
        _ => None,
    }
}

fn epoch(item: &Item, name: &str) -> Option<i64> {
    text(item, name)?.parse().ok()
}

/// The lease a delivery attempt holds on the message, if any.
fn lease(item: &Item, now: i64) -> String {
    let id = text(item, "lease_id").unwrap_or("-");
    match epoch(item, "lease_expires_at") {
        None => "none".into(),
        Some(until) if until >= now => {
            format!(
                "held until {} ({}s left), lease id {id}",
                utc(until),
                until - now
            )
        }
        Some(until) => format!(
            "expired at {} ({}s ago), lease id {id}: the next delivery may take it over",
            utc(until),
            now - until
        ),
    }
}

/// One line saying what the message's state means.
fn interpret(item: &Item, now: i64) -> String {
    let attempts = text(item, "attempts").unwrap_or("0");
    let error = text(item, "last_error");
    match text(item, "status") {
        Some("queued") => match (text(item, "next_attempt_at"), error) {
            (Some(at), Some(e)) => format!(
                "queued, next attempt at {at} (after {attempts} attempt(s); last error: {e})"
            ),
            (Some(at), None) => format!("queued, next attempt at {at}"),
            _ => "queued, waiting for its first delivery attempt".into(),
        },
        Some("sending") => match epoch(item, "lease_expires_at") {
            Some(until) if until >= now => {
                format!(
                    "sending under lease until {} (attempt {attempts})",
                    utc(until)
                )
            }
            Some(until) => format!(
                "sending, but its lease expired at {} (attempt {attempts} died?); the next receive takes it over",
                utc(until)
            ),
            None => format!("sending without a lease (attempt {attempts})"),
        },
        Some("sent") => format!(
            "sent, provider id {} (after {attempts} attempt(s))",
            text(item, "provider_message_id").unwrap_or("unknown")
        ),
        Some("delivered") => format!(
            "delivered, as the provider reports; provider id {} (after {attempts} attempt(s))",
            text(item, "provider_message_id").unwrap_or("unknown")
        ),
        Some("failed") => format!(
            "failed: {} (after {attempts} attempt(s))",
            error.unwrap_or("no error recorded")
        ),
        Some("received") => format!(
            "received (inbound), provider id {}",
            text(item, "messaging_provider_id").unwrap_or("unknown")
        ),
        Some(other) => format!("unknown status {other}"),
        None => "no status".into(),
    }
}

/// The rows of a `history` list (maps with at/status/attempt/error).
fn history_rows(history: &[AttributeValue]) -> Vec<Vec<String>> {
    let cell = |entry: &Item, key: &str| entry.get(key).map_or("-".into(), render);
    history
        .iter()
        .map(|entry| match entry {
            AttributeValue::M(m) => ["at", "status", "attempt", "error"]
                .map(|k| cell(m, k))
                .to_vec(),
            other => vec![render(other), "-".into(), "-".into(), "-".into()],
        })
        .collect()
}

/// An attribute as text: strings as they are, anything else as JSON.
fn render(value: &AttributeValue) -> String {
    match value {
        AttributeValue::S(s) => s.clone(),
        other => json(other).to_string(),
    }
}

fn json(value: &AttributeValue) -> serde_json::Value {
    use serde_json::Value;
    let number = |n: &String| serde_json::from_str(n).unwrap_or_else(|_| Value::from(n.as_str()));
    match value {
        AttributeValue::S(s) => Value::from(s.as_str()),
        AttributeValue::N(n) => number(n),
        AttributeValue::Bool(b) => Value::from(*b),
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::L(list) => list.iter().map(json).collect(),
        AttributeValue::M(map) => map.iter().map(|(k, v)| (k.clone(), json(v))).collect(),
        AttributeValue::Ss(set) => set.iter().map(|s| Value::from(s.as_str())).collect(),
        AttributeValue::Ns(set) => set.iter().map(number).collect(),
        other => Value::from(format!("{other:?}")),
    }
}

/// The message id in a queue body, if the body is one.
fn message_id(body: &str) -> Option<String> {
    shared::adapters::sqs::decode_body(body).ok()
}

/// The last segment of a queue URL: its name.
fn queue_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

/// `secs` since the epoch as an RFC 3339 UTC time.
fn utc(secs: i64) -> String {
    // Howard Hinnant's civil_from_days.
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (rest / 3600, rest % 3600 / 60, rest % 60);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

/// At most `max` characters of `s`, with `…` when cut.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    s.chars().take(max - 1).chain(['…']).collect()
}

/// A plain text table: columns padded to their widest cell (the last one not),
/// control characters escaped so every row stays on one line.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let escape = |s: &str| -> String {
        let escaped = |c: char| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.into()
            }
        };
        s.chars().map(escaped).collect()
    };
    let mut lines: Vec<Vec<String>> = vec![headers.iter().map(|h| h.to_string()).collect()];
    lines.extend(
        rows.iter()
            .map(|row| row.iter().map(|c| escape(c)).collect()),
    );
    let width = |i: usize| {
        lines
            .iter()
            .filter_map(|l| l.get(i))
            .map(|c| c.chars().count())
            .max()
    };
    let widths: Vec<usize> = (0..headers.len()).map(|i| width(i).unwrap_or(0)).collect();
    let mut out = String::new();
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .enumerate()
            .map(|(i, c)| {
                format!(
                    "{c:<w$}",
                    w = if i + 1 == line.len() { 0 } else { widths[i] }
                )
            })
            .collect();
        out += cells.join("  ").trim_end();
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(pairs: &[(&str, AttributeValue)]) -> Item {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.into())
    }

    fn n(v: i64) -> AttributeValue {
        AttributeValue::N(v.to_string())
    }

    fn args(line: &str) -> Result<Args> {
        parse(
            &line
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>(),
        )
    }

    const NOW: i64 = 1_800_000_000; // 2027-01-15T08:00:00Z

    #[test]
    fn arguments() {
        let a = args("peek --dlq --limit 5 --endpoint http://x:1").unwrap();
        assert_eq!(
            a,
            Args {
                endpoint: Some("http://x:1".into()),
                dlq: true,
                limit: Some(5),
                words: vec!["peek".into()],
                ..Args::default()
            }
        );
        assert!(args("--aws show abc").unwrap().aws);
        let a = args("--endpoint http://d:1 --sqs-endpoint http://s:2 stats").unwrap();
        assert_eq!(
            (a.endpoint.as_deref(), a.sqs_endpoint.as_deref()),
            (Some("http://d:1"), Some("http://s:2"))
        );
        assert_eq!(args("show abc").unwrap().words, ["show", "abc"]);
        for bad in [
            "peek --limit",
            "peek --limit x",
            "peek --limit 0",
            "peek --nope",
            "--aws --endpoint http://x stats",
            "--aws --sqs-endpoint http://x stats",
        ] {
            assert!(args(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn utc_times() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(utc(NOW), "2027-01-15T08:00:00Z");
        assert_eq!(utc(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn interpretations() {
        let queued = item(&[
            ("status", s("queued")),
            ("attempts", n(0)),
            ("next_attempt_at", AttributeValue::Null(true)),
        ]);
        assert_eq!(
            interpret(&queued, NOW),
            "queued, waiting for its first delivery attempt"
        );
        let retry = item(&[
            ("status", s("queued")),
            ("attempts", n(2)),
            ("next_attempt_at", s("2027-01-15T08:00:30Z")),
            ("last_error", s("provider answered 500")),
        ]);
        assert_eq!(
            interpret(&retry, NOW),
            "queued, next attempt at 2027-01-15T08:00:30Z (after 2 attempt(s); last error: provider answered 500)"
        );
        let sending = item(&[
            ("status", s("sending")),
            ("attempts", n(1)),
            ("lease_id", s("L")),
            ("lease_expires_at", n(NOW + 60)),
        ]);
        assert_eq!(
            interpret(&sending, NOW),
            "sending under lease until 2027-01-15T08:01:00Z (attempt 1)"
        );
        assert_eq!(
            lease(&sending, NOW),
            "held until 2027-01-15T08:01:00Z (60s left), lease id L"
        );
        assert!(
            interpret(&sending, NOW + 61)
                .starts_with("sending, but its lease expired at 2027-01-15T08:01:00Z")
        );
        assert!(lease(&sending, NOW + 61).starts_with("expired at 2027-01-15T08:01:00Z (1s ago)"));
        assert_eq!(lease(&queued, NOW), "none");
        let sent = item(&[
            ("status", s("sent")),
            ("attempts", n(1)),
            ("provider_message_id", s("SM1")),
        ]);
        assert_eq!(
            interpret(&sent, NOW),
            "sent, provider id SM1 (after 1 attempt(s))"
        );
        let failed = item(&[
            ("status", s("failed")),
            ("attempts", n(5)),
            ("last_error", s("retries exhausted: 503")),
        ]);
        assert_eq!(
            interpret(&failed, NOW),
            "failed: retries exhausted: 503 (after 5 attempt(s))"
        );
        let inbound = item(&[
            ("status", s("received")),
            ("messaging_provider_id", s("abc")),
        ]);
        assert_eq!(
            interpret(&inbound, NOW),
            "received (inbound), provider id abc"
        );
        assert_eq!(
            interpret(&item(&[("status", s("odd"))]), NOW),
            "unknown status odd"
        );
    }

    #[test]
    fn history_is_a_table() {
        let entry = AttributeValue::M(item(&[
            ("at", s("2027-01-15T08:00:00Z")),
            ("status", s("queued")),
            ("attempt", n(1)),
        ]));
        assert_eq!(
            history_rows(&[entry, s("odd")]),
            [
                ["2027-01-15T08:00:00Z", "queued", "1", "-"],
                ["odd", "-", "-", "-"]
            ]
        );
    }

    #[test]
    fn attributes_render_as_text_or_json() {
        assert_eq!(render(&s("hi")), "hi");
        assert_eq!(render(&n(3)), "3");
        assert_eq!(render(&AttributeValue::Null(true)), "null");
        let list = AttributeValue::L(vec![
            s("a"),
            AttributeValue::M(item(&[("k", AttributeValue::Bool(true))])),
        ]);
        assert_eq!(render(&list), r#"["a",{"k":true}]"#);
    }

    #[test]
    fn tables_pad_all_but_the_last_column() {
        let rows = vec![
            vec!["a".to_string(), "long value".into(), "x".into()],
            vec!["bb".into(), "v".into(), "two\nlines".into()],
        ];
        assert_eq!(
            table(&["h1", "h2", "h3"], &rows),
            "h1  h2          h3\na   long value  x\nbb  v           two\\nlines\n"
        );
    }

    #[test]
    fn small_helpers() {
        assert_eq!(
            queue_name("http://127.0.0.1:4566/000000000000/messages-dlq"),
            "messages-dlq"
        );
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 4), "abc");
        let id = "0192f0a0-0000-7000-8000-000000000001";
        assert_eq!(
            message_id(&format!(r#"{{"id":"{id}"}}"#)).as_deref(),
            Some(id)
        );
        for junk in ["", "junk", "{}", r#"{"id":""}"#, r#"{"id":5}"#] {
            assert_eq!(message_id(junk), None, "{junk}");
        }
    }
}
