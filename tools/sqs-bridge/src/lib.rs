//! Local stand-in for AWS Lambda's SQS event source mapping (ESM) with
//! `ReportBatchItemFailures`: receive from a queue, invoke a function, delete only the
//! messages the function did not report as failed.
//!
//! The function is invoked over the Lambda Invoke API (`--invoke-url`: `cargo lambda
//! watch` in the local stack). What this leaves out of the real mapping, a fresh
//! execution environment after a crash or a timeout, is what the deployed stack
//! (`cargo xtask dev --deployed`) has: the emulator's own event source mapping.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use aws_config::BehaviorVersion;
use aws_config::environment::region::EnvironmentVariableRegionProvider;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::ProfileFileRegionProvider;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, Message, MessageAttributeValue, MessageSystemAttributeName,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

/// Lambda's maximum function timeout.
const INVOKE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Pause after a connection error (the function server or emulator may still be starting).
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// How long in-flight batches may run after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// DeleteMessageBatch accepts at most ten entries.
const DELETE_CHUNK: usize = 10;

pub const USAGE: &str = "usage: sqs-bridge --queue-url URL --invoke-url URL \
[--batch-size 1..=10] [--wait-seconds 0..=20] [--pollers 1..=64]
  --invoke-url       POST each batch to this Lambda Invoke API URL (e.g. cargo lambda watch)
env fallbacks: QUEUE_URL, BRIDGE_INVOKE_URL, BRIDGE_BATCH_SIZE (default 10), \
BRIDGE_WAIT_SECONDS (default 1), BRIDGE_POLLERS (default 2); flags take precedence \
over the environment";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub queue_url: String,
    /// The Lambda Invoke API URL each batch is POSTed to.
    pub invoke_url: String,
    pub batch_size: i32,
    pub wait_seconds: i32,
    pub pollers: usize,
}

impl Config {
    /// Parses `--flag value` / `--flag=value` arguments, falling back to `env` lookups.
    pub fn from_args(
        args: impl IntoIterator<Item = String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Self> {
        let mut flags: [(&str, &str, Option<String>); 5] = [
            ("--queue-url", "QUEUE_URL", None),
            ("--invoke-url", "BRIDGE_INVOKE_URL", None),
            ("--batch-size", "BRIDGE_BATCH_SIZE", None),
            ("--wait-seconds", "BRIDGE_WAIT_SECONDS", None),
            ("--pollers", "BRIDGE_POLLERS", None),
        ];
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
                None => (arg, None),
            };
            let Some(slot) = flags.iter_mut().find(|(flag, ..)| *flag == name) else {
                bail!("unknown argument {name:?}");
            };
            let value = inline.or_else(|| args.next());
            slot.2 = Some(value.with_context(|| format!("{name} needs a value"))?);
        }
        let [queue_url, invoke_url, batch_size, wait_seconds, pollers] = flags
            .map(|(flag, var, value)| (flag, value.or_else(|| env(var)).filter(|v| !v.is_empty())));
        let required = |(flag, value): (&str, Option<String>)| {
            value
                .filter(|v| !v.is_empty())
                .with_context(|| format!("{flag} is required"))
        };
        let number = |(flag, value): (&str, Option<String>), default: i64, min: i64, max: i64| {
            let Some(raw) = value.filter(|v| !v.is_empty()) else {
                return Ok(default);
            };
            match raw.trim().parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => bail!("{flag} must be an integer in {min}..={max}, got {raw:?}"),
            }
        };
        Ok(Self {
            queue_url: required(queue_url)?,
            invoke_url: required(invoke_url)?,
            batch_size: i32::try_from(number(batch_size, 10, 1, 10)?)?,
            wait_seconds: i32::try_from(number(wait_seconds, 1, 0, 20)?)?,
            pollers: usize::try_from(number(pollers, 2, 1, 64)?)?,
        })
    }
}

/// `arn:aws:sqs:<region>:<account>:<name>` from a queue URL whose path ends in
/// `/<account>/<queue-name>`.
pub fn queue_arn(queue_url: &str, region: &str) -> anyhow::Result<String> {
    let without_scheme = queue_url
        .split_once("://")
        .map_or(queue_url, |(_, rest)| rest);
    let path = without_scheme.split_once('/').map_or("", |(_, path)| path);
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let mut segments = path.split('/').filter(|s| !s.is_empty()).rev();
    match (segments.next(), segments.next()) {
        (Some(name), Some(account)) => Ok(format!("arn:aws:sqs:{region}:{account}:{name}")),
        _ => bail!("queue URL {queue_url:?} does not end in /<account>/<queue-name>"),
    }
}

/// The Lambda SQS event (`{"Records": [...]}`) for a received batch.
pub fn build_event(messages: &[Message], queue_arn: &str, region: &str) -> Value {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| record(m, queue_arn, region))
        .collect();
    json!({ "Records": records })
}

fn record(m: &Message, queue_arn: &str, region: &str) -> Value {
    let attributes: Map<String, Value> = (m.attributes().into_iter().flatten())
        .map(|(k, v)| (k.as_str().to_owned(), v.as_str().into()))
        .collect();
    let message_attributes: Map<String, Value> = (m.message_attributes().into_iter().flatten())
        .map(|(name, a)| (name.clone(), message_attribute(a)))
        .collect();
    let mut record = json!({
        "messageId": m.message_id(),
        "receiptHandle": m.receipt_handle(),
        "body": m.body(),
        "attributes": attributes,
        "messageAttributes": message_attributes,
        "md5OfBody": m.md5_of_body(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    });
    if let (Some(md5), Some(obj)) = (m.md5_of_message_attributes(), record.as_object_mut()) {
        obj.insert("md5OfMessageAttributes".into(), md5.into());
    }
    record
}

fn message_attribute(a: &MessageAttributeValue) -> Value {
    let mut attr = Map::new();
    if let Some(s) = a.string_value() {
        attr.insert("stringValue".into(), s.into());
    }
    if let Some(b) = a.binary_value() {
        attr.insert("binaryValue".into(), base64(b).into());
    }
    attr.insert("stringListValues".into(), a.string_list_values().into());
    let binary_list = a.binary_list_values().iter().map(base64).collect();
    attr.insert("binaryListValues".into(), binary_list);
    attr.insert("dataType".into(), a.data_type().into());
    Value::Object(attr)
}

/// Why a response makes Lambda treat the whole batch as failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchFailed {
    InvalidJson(String),
    InvalidResponse(String),
    UnknownIdentifier(String),
}

impl fmt::Display for BatchFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidJson(e) => write!(f, "response is not JSON: {e}"),
            Self::InvalidResponse(e) => write!(f, "invalid batch response: {e}"),
            Self::UnknownIdentifier(id) => write!(f, "itemIdentifier {id:?} is not in the batch"),
        }
    }
}

/// The message ids a successful invocation reported in `batchItemFailures`.
/// An empty body, `null`, `{}` or a null/absent list mean no failures.
pub fn failed_ids(body: &[u8], batch_ids: &[&str]) -> Result<HashSet<String>, BatchFailed> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(HashSet::new());
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| BatchFailed::InvalidJson(e.to_string()))?;
    let failures = match &value {
        Value::Null => return Ok(HashSet::new()),
        Value::Object(obj) => match obj.get("batchItemFailures") {
            None | Some(Value::Null) => return Ok(HashSet::new()),
            Some(Value::Array(items)) => items,
            Some(other) => {
                let msg = format!("batchItemFailures is not a list: {other}");
                return Err(BatchFailed::InvalidResponse(msg));
            }
        },
        other => {
            return Err(BatchFailed::InvalidResponse(format!(
                "not an object: {other}"
            )));
        }
    };
    failures
        .iter()
        .map(
            |item| match item.get("itemIdentifier").and_then(Value::as_str) {
                Some(id) if batch_ids.contains(&id) => Ok(id.to_owned()),
                Some(id) => Err(BatchFailed::UnknownIdentifier(id.to_owned())),
                None => Err(BatchFailed::InvalidResponse(format!("bad entry {item}"))),
            },
        )
        .collect()
}

/// The messages to delete: every one whose id was not reported as failed.
pub fn deletable<'a>(messages: &'a [Message], failed: &HashSet<String>) -> Vec<&'a Message> {
    messages
        .iter()
        .filter(|m| m.message_id().is_none_or(|id| !failed.contains(id)))
        .collect()
}

/// Standard padded base64, as Lambda renders binary message attributes.
fn base64(blob: &Blob) -> String {
    STANDARD.encode(blob)
}

struct Bridge {
    config: Config,
    sqs: aws_sdk_sqs::Client,
    http: reqwest::Client,
    arn: String,
    region: String,
}

/// Why an invocation yielded no usable response; the whole batch stays in the queue.
struct InvokeFailed {
    what: String,
    detail: String,
    /// The function could not be reached or started: the poller pauses before retrying.
    back_off: bool,
}

impl InvokeFailed {
    fn new(what: impl Into<String>, detail: impl fmt::Display) -> Self {
        Self {
            what: what.into(),
            detail: detail.to_string(),
            back_off: false,
        }
    }
}

async fn invoke_http(
    client: &reqwest::Client,
    url: &str,
    event: &Value,
) -> Result<Vec<u8>, InvokeFailed> {
    let response = client.post(url).json(event).send().await.map_err(|e| {
        let back_off = e.is_connect();
        InvokeFailed {
            back_off,
            ..InvokeFailed::new("invoke failed", format!("{:#}", anyhow::Error::new(e)))
        }
    })?;
    let status = response.status();
    let function_error = response
        .headers()
        .get("x-amz-function-error")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let body = response
        .bytes()
        .await
        .map_err(|e| InvokeFailed::new("reading invoke response failed", e))?;
    let excerpt = || {
        String::from_utf8_lossy(&body)
            .chars()
            .take(500)
            .collect::<String>()
    };
    if let Some(kind) = function_error {
        return Err(InvokeFailed::new(
            format!("function error ({kind})"),
            excerpt(),
        ));
    }
    if !status.is_success() {
        return Err(InvokeFailed::new(
            format!("invoke returned {status}"),
            excerpt(),
        ));
    }
    Ok(body.to_vec())
}

/// Polls until `shutdown` resolves, then lets in-flight batches finish (bounded).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    // Environment, then profile, then us-east-1: no IMDS probe for a local tool.
    let region = RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
        .or_else(ProfileFileRegionProvider::new())
        .or_else("us-east-1");
    let sdk_config = aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .load()
        .await;
    let region = sdk_config
        .region()
        .map_or_else(|| "us-east-1".to_owned(), ToString::to_string);
    let arn = queue_arn(&config.queue_url, &region)?;
    let http = reqwest::Client::builder()
        .timeout(INVOKE_TIMEOUT)
        .build()
        .context("building HTTP client")?;
    println!(
        "sqs-bridge polling {} -> {}",
        config.queue_url, config.invoke_url
    );
    let bridge = Arc::new(Bridge {
        sqs: aws_sdk_sqs::Client::new(&sdk_config),
        http,
        arn,
        region,
        config,
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut pollers = JoinSet::new();
    for _ in 0..bridge.config.pollers {
        pollers.spawn(poll(Arc::clone(&bridge), stop_rx.clone()));
    }
    shutdown.await;
    info!("shutting down; waiting for in-flight batches");
    stop_tx.send_replace(true);
    let drain = async {
        while let Some(joined) = pollers.join_next().await {
            if let Err(e) = joined {
                warn!("poller task failed: {e}");
            }
        }
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        warn!("in-flight batches still running after {SHUTDOWN_GRACE:?}; abandoning them");
        pollers.abort_all();
        while pollers.join_next().await.is_some() {}
    }
    Ok(())
}

/// Resolves once a stop has been requested (or the sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the sender was dropped, which also means stop.
    let _ = stop.wait_for(|s| *s).await;
}

/// Sleeps for `pause`, returning `false` early if a stop was requested.
async fn pause_unless_stopped(stop: &mut watch::Receiver<bool>, pause: Duration) -> bool {
    tokio::select! {
        () = stopped(stop) => false,
        () = tokio::time::sleep(pause) => true,
    }
}

/// One poller: receive, invoke, delete, until stopped.
async fn poll(bridge: Arc<Bridge>, mut stop: watch::Receiver<bool>) {
    let config = &bridge.config;
    while !*stop.borrow() {
        let request = bridge
            .sqs
            .receive_message()
            .queue_url(&config.queue_url)
            .max_number_of_messages(config.batch_size)
            .wait_time_seconds(config.wait_seconds)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send();
        let received = tokio::select! {
            () = stopped(&mut stop) => break,
            received = request => received,
        };
        let messages = match received {
            Ok(output) => output.messages.unwrap_or_default(),
            Err(e) => {
                warn!("ReceiveMessage failed: {}", DisplayErrorContext(&e));
                if pause_unless_stopped(&mut stop, RETRY_PAUSE).await {
                    continue;
                }
                break;
            }
        };
        if !messages.is_empty() && !bridge.process(&messages).await {
            pause_unless_stopped(&mut stop, RETRY_PAUSE).await;
        }
    }
}

impl Bridge {
    /// Invokes the function with one batch and deletes the successful messages.
    /// Returns `false` if the function could not be reached (caller backs off).
    async fn process(&self, messages: &[Message]) -> bool {
        let received = messages.len();
        let event = build_event(messages, &self.arn, &self.region);
        let body = match invoke_http(&self.http, &self.config.invoke_url, &event).await {
            Ok(body) => body,
            Err(InvokeFailed {
                what,
                detail,
                back_off,
            }) => {
                warn!(received, "{what}, nothing deleted: {detail}");
                return !back_off;
            }
        };
        let ids: Vec<&str> = messages.iter().filter_map(Message::message_id).collect();
        let failed = match failed_ids(&body, &ids) {
            Ok(failed) => failed,
            Err(e) => {
                warn!(received, "whole batch failed, nothing deleted: {e}");
                return true;
            }
        };
        let deleted = self.delete(&deletable(messages, &failed)).await;
        info!(received, failed = failed.len(), deleted, "batch processed");
        true
    }

    /// Deletes messages in chunks of ten; returns how many were deleted.
    async fn delete(&self, messages: &[&Message]) -> usize {
        let mut deleted = 0;
        for chunk in messages.chunks(DELETE_CHUNK) {
            let entries: Result<Vec<_>, _> = chunk
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .set_receipt_handle(m.receipt_handle.clone())
                        .build()
                })
                .collect();
            let request = match entries {
                Ok(entries) => self
                    .sqs
                    .delete_message_batch()
                    .queue_url(&self.config.queue_url)
                    .set_entries(Some(entries)),
                Err(e) => {
                    warn!("cannot build DeleteMessageBatch entries: {e}");
                    continue;
                }
            };
            match request.send().await {
                Ok(output) => {
                    deleted += output.successful().len();
                    for failure in output.failed() {
                        let message_id = failure
                            .id()
                            .parse::<usize>()
                            .ok()
                            .and_then(|i| chunk.get(i))
                            .and_then(|m| m.message_id());
                        warn!(
                            message_id,
                            code = failure.code(),
                            "delete failed: {}",
                            failure.message().unwrap_or_default()
                        );
                    }
                }
                Err(e) => warn!("DeleteMessageBatch failed: {}", DisplayErrorContext(&e)),
            }
        }
        deleted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lambda_events::event::sqs::SqsEvent;

    fn message(id: &str) -> Message {
        Message::builder()
            .message_id(id)
            .receipt_handle(format!("rh-{id}"))
            .body(format!("body-{id}"))
            .md5_of_body("md5")
            .build()
    }

    #[test]
    fn event_deserializes_into_lambda_sqs_event() {
        let full = Message::builder()
            .message_id("m1")
            .receipt_handle("rh-1")
            .body("{\"hello\":1}")
            .md5_of_body("abc")
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "1")
            .attributes(MessageSystemAttributeName::SentTimestamp, "1520621625029")
            .message_attributes(
                "kind",
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value("sms")
                    .build()
                    .unwrap(),
            )
            .message_attributes(
                "raw",
                MessageAttributeValue::builder()
                    .data_type("Binary")
                    .binary_value(Blob::new(b"1100".to_vec()))
                    .build()
                    .unwrap(),
            )
            .build();
        let event = build_event(
            &[full, message("m2")],
            "arn:aws:sqs:us-east-1:0:q",
            "us-east-1",
        );
        let event: SqsEvent = serde_json::from_value(event).unwrap();
        assert_eq!(event.records.len(), 2);
        let r = &event.records[0];
        assert_eq!(r.message_id.as_deref(), Some("m1"));
        assert_eq!(r.receipt_handle.as_deref(), Some("rh-1"));
        assert_eq!(r.body.as_deref(), Some("{\"hello\":1}"));
        assert_eq!(r.md5_of_body.as_deref(), Some("abc"));
        assert_eq!(r.event_source.as_deref(), Some("aws:sqs"));
        assert_eq!(
            r.event_source_arn.as_deref(),
            Some("arn:aws:sqs:us-east-1:0:q")
        );
        assert_eq!(r.aws_region.as_deref(), Some("us-east-1"));
        assert_eq!(r.attributes["ApproximateReceiveCount"], "1");
        assert_eq!(r.attributes["SentTimestamp"], "1520621625029");
        let kind = &r.message_attributes["kind"];
        assert_eq!(kind.string_value.as_deref(), Some("sms"));
        assert_eq!(kind.data_type.as_deref(), Some("String"));
        assert!(kind.binary_value.is_none());
        assert!(r.message_attributes["raw"].string_value.is_none());
        let raw = &r.message_attributes["raw"];
        assert_eq!(
            raw.binary_value.as_ref().map(|b| b.0.as_slice()),
            Some(&b"1100"[..])
        );
        assert!(event.records[1].message_attributes.is_empty());
    }

    #[test]
    fn base64_matches_lambda_fixture() {
        assert_eq!(base64(&Blob::new(b"1100".to_vec())), "MTEwMA==");
        assert_eq!(base64(&Blob::new(b"0".to_vec())), "MA==");
        assert_eq!(base64(&Blob::new(b"ab".to_vec())), "YWI=");
        assert_eq!(base64(&Blob::new(b"abc".to_vec())), "YWJj");
    }

    #[test]
    fn arn_from_both_url_shapes() {
        let ministack = "http://127.0.0.1:4566/000000000000/messages";
        let localstack = "http://127.0.0.1:4566/queue/us-east-1/000000000000/messages";
        let expected = "arn:aws:sqs:eu-west-1:000000000000:messages";
        assert_eq!(queue_arn(ministack, "eu-west-1").unwrap(), expected);
        assert_eq!(queue_arn(localstack, "eu-west-1").unwrap(), expected);
        assert!(queue_arn("http://127.0.0.1:4566/messages", "us-east-1").is_err());
    }

    #[test]
    fn failure_list_parsing() {
        let ids = ["a", "b", "c"];
        for empty in [
            "",
            "null",
            "{}",
            r#"{"batchItemFailures":null}"#,
            r#"{"batchItemFailures":[]}"#,
        ] {
            assert_eq!(
                failed_ids(empty.as_bytes(), &ids),
                Ok(HashSet::new()),
                "{empty}"
            );
        }
        let body = br#"{"batchItemFailures":[{"itemIdentifier":"b"},{"itemIdentifier":"c"}]}"#;
        let expected: HashSet<String> = ["b".to_owned(), "c".to_owned()].into();
        assert_eq!(failed_ids(body, &ids), Ok(expected));
        let whole_batch = [
            r#"{"batchItemFailures":[{"itemIdentifier":""}]}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":"zzz"}]}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":null}]}"#,
            r#"{"batchItemFailures":[{"id":"a"}]}"#,
            r#"{"batchItemFailures":"a"}"#,
            r#""ok""#,
            "not json",
        ];
        for body in whole_batch {
            assert!(failed_ids(body.as_bytes(), &ids).is_err(), "{body}");
        }
    }

    #[test]
    fn deletes_only_unreported_messages() {
        let messages = [message("a"), message("b"), message("c")];
        let failed: HashSet<String> = ["b".to_owned()].into();
        let ids: Vec<_> = deletable(&messages, &failed)
            .iter()
            .filter_map(|m| m.message_id())
            .collect();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(deletable(&messages, &HashSet::new()).len(), 3);
    }

    #[test]
    fn config_flags_override_env() {
        let env = |k: &str| match k {
            "QUEUE_URL" => Some("http://q/0/x".to_owned()),
            "BRIDGE_INVOKE_URL" => Some("http://env".to_owned()),
            "BRIDGE_POLLERS" => Some("4".to_owned()),
            _ => None,
        };
        let args = ["--invoke-url", "http://flag", "--batch-size=5"].map(String::from);
        let config = Config::from_args(args, env).unwrap();
        assert_eq!(config.queue_url, "http://q/0/x");
        assert_eq!(config.invoke_url, "http://flag");
        assert_eq!(
            (config.batch_size, config.wait_seconds, config.pollers),
            (5, 1, 4)
        );
        assert!(Config::from_args(["--batch-size=11".to_owned()], env).is_err());
        assert!(Config::from_args([], |_| None).is_err());
        let no_url = |k: &str| (k == "QUEUE_URL").then(|| "http://q/0/x".to_owned());
        assert!(
            Config::from_args([], no_url).is_err(),
            "--invoke-url is required"
        );
    }
}
