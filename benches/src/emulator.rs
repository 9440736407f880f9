//! The AWS emulator's own latency, with the functions' own adapters (release build):
//! what `PutItem` (the outbound insert), `SendMessage` (the enqueue), the conversation
//! summary (three UpdateItems), `GetItem` (the read), the opt-out check (one
//! `GetItem`) and a delivery's claim + completion cost on the local stack without any function around them, one at a
//! time and 16 at a time. `cargo xtask bench` runs it against its stack and compares
//! it with the API's latency (`bench emulator`); alone (without the stack's
//! environment) it does nothing.
//!
//! Prints one line `BENCH_RESULT {json}`: per operation and concurrency, the latency
//! percentiles in microseconds and the operations per second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{Value, json};
use shared::adapters::aws_config;
use shared::adapters::dynamodb::DynamoDbStore;
use shared::adapters::sqs::SqsQueue;
use shared::compliance::blocking_suppression;
use shared::domain::{
    Channel, Direction, Message, OptOutScope, Suppression, SuppressionChannel, SuppressionSource,
    validate_outbound,
};
use shared::ports::{
    Claim, Completion, ConversationLog, DeliveryQueue, DeliveryStore, Lease, MessageStore,
    SuppressionList,
};
use time::OffsetDateTime;

const CONCURRENCY: [usize; 2] = [1, 16];

fn message() -> Message {
    message_to("+12016661234")
}

/// A message to `to`: a conversation of its own per recipient.
fn message_to(to: &str) -> Message {
    let payload = json!({"from": "+18045551234", "to": to, "type": "sms",
                         "body": "emulator bench", "attachments": null});
    let new = validate_outbound(payload.as_object().expect("an object")).expect("valid");
    Message::accept(new, Direction::Outbound, OffsetDateTime::now_utc())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1e6
}

/// Runs `ops` calls of `op` with `concurrency` callers; latency percentiles and rate.
async fn measure<F, Fut>(ops: usize, concurrency: usize, op: F) -> Value
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let callers = (0..concurrency).map(|caller| {
        let op = Arc::clone(&op);
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0;
            for i in (caller..ops).step_by(concurrency) {
                let t = Instant::now();
                if !op(i).await {
                    failures += 1;
                }
                latencies.push(t.elapsed());
            }
            (latencies, failures)
        })
    });
    let mut latencies = Vec::with_capacity(ops);
    let mut failures = 0;
    for joined in join_all(callers).await {
        let (l, f) = joined.expect("caller task");
        latencies.extend(l);
        failures += f;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    json!({
        "concurrency": concurrency,
        "ops": ops,
        "failures": failures,
        "p50_us": percentile(&latencies, 50.0),
        "p99_us": percentile(&latencies, 99.0),
        "ops_per_s": ops as f64 / elapsed.as_secs_f64(),
    })
}

/// `bench emulator`: prints the `BENCH_RESULT` line.
pub fn run() {
    let (Ok(_), Ok(table), Ok(queue_url)) = (
        std::env::var("AWS_ENDPOINT_URL"),
        std::env::var("TABLE_NAME"),
        std::env::var("QUEUE_URL"),
    ) else {
        eprintln!(
            "emulator bench skipped: it needs the local stack's AWS_ENDPOINT_URL, TABLE_NAME \
             and QUEUE_URL (`cargo xtask bench` runs it)"
        );
        return;
    };
    let ops: usize = std::env::var("BENCH_EMULATOR_OPS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(400);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = runtime.block_on(async move {
        let aws = aws_config().await;
        let store = Arc::new(DynamoDbStore::new(
            aws_sdk_dynamodb::Client::new(&aws),
            table,
        ));
        let queue = Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(&aws), queue_url));
        let existing = message();
        store
            .insert_outbound(&existing, None)
            .await
            .expect("the emulator accepts a PutItem");
        // One of each first: connections and credentials are set up outside the timing.
        queue
            .enqueue(&existing.id, Duration::ZERO)
            .await
            .expect("the emulator accepts a SendMessage");
        let mut results = serde_json::Map::new();
        for concurrency in CONCURRENCY {
            let s = Arc::clone(&store);
            let put = measure(ops, concurrency, move |_| {
                let s = Arc::clone(&s);
                async move { s.insert_outbound(&message(), None).await.is_ok() }
            })
            .await;
            let q = Arc::clone(&queue);
            let send = measure(ops, concurrency, move |i| {
                let q = Arc::clone(&q);
                async move {
                    q.enqueue(&format!("emulator-bench-{i}"), Duration::ZERO)
                        .await
                        .is_ok()
                }
            })
            .await;
            let (s, id) = (Arc::clone(&store), existing.id.clone());
            let get = measure(ops, concurrency, move |_| {
                let (s, id) = (Arc::clone(&s), id.clone());
                async move { matches!(s.get(&id).await, Ok(Some(_))) }
            })
            .await;
            // What delivery does per message in the table: claim, then record `sent`.
            let claimable: Arc<Vec<String>> = Arc::new({
                let mut ids = Vec::with_capacity(ops);
                for _ in 0..ops {
                    let m = message();
                    store.insert_outbound(&m, None).await.expect("PutItem");
                    ids.push(m.id);
                }
                ids
            });
            let s = Arc::clone(&store);
            let claim = measure(ops, concurrency, move |i| {
                let (s, ids) = (Arc::clone(&s), Arc::clone(&claimable));
                async move {
                    let now = OffsetDateTime::now_utc();
                    let lease = Lease {
                        id: format!("emulator-bench-{i}"),
                        expires_at: now + Duration::from_secs(60),
                    };
                    let sent = Completion::Sent {
                        provider: shared::domain::ProviderKind::Twilio,
                        provider_message_id: Some("SM-bench".to_owned()),
                    };
                    matches!(s.claim(&ids[i], &lease, now).await, Ok(Claim::Claimed(_)))
                        && s.complete(&ids[i], &lease.id, &sent, now).await.is_ok()
                }
            })
            .await;
            let (s, q) = (Arc::clone(&store), Arc::clone(&queue));
            let both = measure(ops, concurrency, move |_| {
                let (s, q) = (Arc::clone(&s), Arc::clone(&q));
                async move {
                    let m = message();
                    s.insert_outbound(&m, None).await.is_ok()
                        && q.enqueue(&m.id, Duration::ZERO).await.is_ok()
                }
            })
            .await;
            // The conversation summary a stored message updates (three UpdateItems,
            // concurrently), each in a thread of its own.
            let s = Arc::clone(&store);
            let summary = measure(ops, concurrency, move |i| {
                let s = Arc::clone(&s);
                async move {
                    let m = message_to(&format!("+1303{concurrency:02}{i:05}"));
                    s.record_in_conversation(&m).await.is_ok()
                }
            })
            .await;
            // What the outbound function does per request: the insert, the enqueue,
            // then the conversation summary.
            let (s, q) = (Arc::clone(&store), Arc::clone(&queue));
            let outbound = measure(ops, concurrency, move |i| {
                let (s, q) = (Arc::clone(&s), Arc::clone(&q));
                async move {
                    let m = message_to(&format!("+1404{concurrency:02}{i:05}"));
                    s.insert_outbound(&m, None).await.is_ok()
                        && q.enqueue(&m.id, Duration::ZERO).await.is_ok()
                        && s.record_in_conversation(&m).await.is_ok()
                }
            })
            .await;
            // The opt-out check on the send paths (accept and delivery): one
            // GetItem of the recipient's entries, here a recipient who opted out.
            let s = Arc::clone(&store);
            let opted_out = format!("+1505{concurrency:02}00000");
            s.suppress(&Suppression {
                channel: SuppressionChannel::Phone,
                address: opted_out.clone(),
                sender: Some("+18045551234".to_owned()),
                reason: "emulator bench".to_owned(),
                source: SuppressionSource::Api,
                message_id: None,
                created_at: OffsetDateTime::now_utc(),
            })
            .await
            .expect("a suppression");
            let suppression = measure(ops, concurrency, move |_| {
                let (s, to) = (Arc::clone(&s), opted_out.clone());
                async move {
                    let found = blocking_suppression(
                        s.as_ref(),
                        OptOutScope::Sender,
                        Channel::Sms,
                        "+18045551234",
                        &to,
                    )
                    .await;
                    matches!(found, Ok(Some(_)))
                }
            })
            .await;
            for (name, value) in [
                ("suppression_check", suppression),
                ("put_item", put),
                ("send_message", send),
                ("get_item", get),
                ("put_item_then_send_message", both),
                ("conversation_summary", summary),
                ("outbound_writes", outbound),
                ("claim_then_complete", claim),
            ] {
                results.insert(format!("{name}@{concurrency}"), value);
            }
        }
        Value::Object(results)
    });
    println!("BENCH_RESULT {result}");
}
