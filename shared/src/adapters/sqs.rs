//! The delivery queue on SQS, and the SQS wire formats: the body of a queued
//! message and the Lambda SQS event the delivery function receives.

use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use std::time::{SystemTime, UNIX_EPOCH};

use lambda_runtime::LambdaEvent;
use tokio::time::Instant;

use crate::delivery::{Deliverer, DeliveryRecord};
use crate::domain::{Message, ProviderKind};
use crate::metrics::{self, Metric, name};
use crate::ports::{
    DeliveryQueue, DeliveryStore, Provider, QueueError, QueueHandOver, QueueVisibility, Routing,
    SuppressionList,
};

/// Longest visibility timeout SQS accepts (12 hours).
const MAX_VISIBILITY_SECS: u64 = 12 * 60 * 60;
/// Longest delivery delay SQS accepts (15 minutes).
const MAX_DELAY_SECS: u64 = 15 * 60;

fn whole_seconds(delay: Duration, max: u64) -> i32 {
    delay.as_secs_f64().ceil().clamp(0.0, max as f64) as i32
}

#[derive(Clone, Debug)]
pub struct SqsQueue {
    client: Client,
    queue_url: String,
}

impl SqsQueue {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }
}

/// The body of a queued message: the id (the table holds the message) and, on a
/// message a delivery handed a record over to, how many hand-overs it has had.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct QueuedMessage {
    id: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    hop: u32,
    /// `twilio` or `sendgrid`: lets a paused provider's records wait unread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    provider: Option<String>,
    /// When the message was accepted (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    accepted: Option<i64>,
}

/// A queued body, read.
#[derive(Debug, Clone, PartialEq)]
pub struct Queued {
    pub message_id: String,
    pub hop: u32,
    pub routing: Routing,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

pub fn encode_body(message_id: &str) -> String {
    encode_queued(message_id, Routing::default(), 0)
}

fn encode_queued(message_id: &str, routing: Routing, hop: u32) -> String {
    serde_json::to_string(&QueuedMessage {
        id: message_id.to_owned(),
        hop,
        provider: routing.provider.map(|p| p.as_str().to_owned()),
        accepted: routing.accepted_at.map(OffsetDateTime::unix_timestamp),
    })
    .unwrap_or_default()
}

/// The message id in a queued body, or why there is none.
pub fn decode_body(body: &str) -> Result<String, String> {
    decode_queued(body).map(|q| q.message_id)
}

/// Everything a queued body says.
pub fn decode_queued(body: &str) -> Result<Queued, String> {
    match serde_json::from_str::<QueuedMessage>(body) {
        Ok(q) if !q.id.trim().is_empty() => Ok(Queued {
            message_id: q.id,
            hop: q.hop,
            routing: Routing {
                provider: q.provider.as_deref().and_then(ProviderKind::parse),
                accepted_at: q
                    .accepted
                    .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok()),
            },
        }),
        Ok(_) => Err("queued body has an empty id".to_owned()),
        Err(e) => Err(format!("queued body is not {{\"id\": ...}}: {e}")),
    }
}

impl SqsQueue {
    async fn send(&self, body: String, delay: Duration) -> Result<(), QueueError> {
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .delay_seconds(whole_seconds(delay, MAX_DELAY_SECS))
            .send()
            .await
            .map_err(|e| QueueError::Unavailable(DisplayErrorContext(e).to_string()))?;
        Ok(())
    }
}

impl DeliveryQueue for SqsQueue {
    async fn enqueue(&self, message_id: &str, delay: Duration) -> Result<(), QueueError> {
        self.send(encode_body(message_id), delay).await
    }

    async fn enqueue_message(&self, message: &Message, delay: Duration) -> Result<(), QueueError> {
        self.send(encode_queued(&message.id, Routing::of(message), 0), delay)
            .await
    }
}

impl QueueHandOver for SqsQueue {
    async fn hand_over(
        &self,
        message_id: &str,
        routing: Routing,
        delay: Duration,
        hop: u32,
    ) -> Result<(), QueueError> {
        self.send(encode_queued(message_id, routing, hop), delay)
            .await
    }
}

impl QueueVisibility for SqsQueue {
    async fn postpone(&self, receipt_handle: &str, delay: Duration) -> Result<(), QueueError> {
        let secs = delay
            .as_secs_f64()
            .ceil()
            .clamp(0.0, MAX_VISIBILITY_SECS as f64) as i32;
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(secs)
            .send()
            .await
            .map_err(|e| QueueError::Unavailable(DisplayErrorContext(e).to_string()))?;
        Ok(())
    }
}

fn queued(record: &SqsMessage) -> Result<Queued, String> {
    record
        .body
        .as_deref()
        .ok_or_else(|| "record has no body".to_owned())
        .and_then(decode_queued)
}

/// The records of a Lambda SQS event, as delivery records.
pub fn delivery_records(event: &SqsEvent) -> Vec<DeliveryRecord> {
    event
        .records
        .iter()
        .map(|r| {
            // The body is read once; an unreadable one keeps its reason.
            let (message_id, hop, routing) = match queued(r) {
                Ok(q) => (Ok(q.message_id), q.hop, q.routing),
                Err(reason) => (Err(reason), 0, Routing::default()),
            };
            DeliveryRecord {
                queue_message_id: r.message_id.clone().unwrap_or_default(),
                receipt_handle: r.receipt_handle.clone().unwrap_or_default(),
                message_id,
                hop,
                routing,
                receive_count: r
                    .attributes
                    .get("ApproximateReceiveCount")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1),
            }
        })
        .collect()
}

/// Runs one Lambda invocation of the delivery function: every record of the
/// event, concurrently, within the invocation's deadline.
pub async fn handle_event<S, Q, P>(
    deliverer: &Deliverer<S, Q, P>,
    event: LambdaEvent<SqsEvent>,
) -> SqsBatchResponse
where
    S: DeliveryStore + SuppressionList,
    Q: QueueHandOver + QueueVisibility,
    P: Provider,
{
    let records = delivery_records(&event.payload);
    let deadline = deadline_instant(event.context.deadline, SystemTime::now());
    let failed = deliverer.deliver_batch(&records, deadline).await;
    tracing::info!(
        request_id = %event.context.request_id,
        records = records.len(),
        failed = failed.len(),
        "batch handled"
    );
    metrics::emit(
        &[
            Metric::count(name::BATCH_SIZE, records.len() as u64),
            Metric::count(name::BATCH_FAILURES, failed.len() as u64),
        ],
        &[],
    );
    batch_response(failed)
}

/// Lambda's deadline (epoch milliseconds) as a monotonic instant. A deadline
/// that has passed before the invocation even started is not a real one (local
/// runtimes such as `cargo lambda watch` send the timeout instead): none then.
fn deadline_instant(deadline_ms: u64, now: SystemTime) -> Option<Instant> {
    let deadline = UNIX_EPOCH.checked_add(Duration::from_millis(deadline_ms))?;
    let remaining = deadline.duration_since(now).ok()?;
    Some(Instant::now() + remaining)
}

/// The partial batch response naming the records to receive again.
pub fn batch_response(failed_queue_message_ids: Vec<String>) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failed_queue_message_ids
        .into_iter()
        .map(|id| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            failure
        })
        .collect();
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip() {
        let body = encode_body("0192f0a0-0000-7000-8000-000000000001");
        assert_eq!(body, r#"{"id":"0192f0a0-0000-7000-8000-000000000001"}"#);
        assert_eq!(
            decode_body(&body).unwrap(),
            "0192f0a0-0000-7000-8000-000000000001"
        );
    }

    #[test]
    fn bad_bodies_are_explained() {
        for bad in ["", "not json", "{}", r#"{"id": ""}"#, r#"{"id": 5}"#] {
            assert!(decode_body(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn records_come_from_the_lambda_event() {
        let event: SqsEvent = serde_json::from_value(serde_json::json!({"Records": [
            {"messageId": "m1", "receiptHandle": "r1", "body": "{\"id\":\"a\"}",
             "attributes": {"ApproximateReceiveCount": "3"}, "messageAttributes": {},
             "eventSource": "aws:sqs"},
            {"messageId": "m2", "receiptHandle": "r2", "body": "garbage",
             "attributes": {}, "messageAttributes": {}}
        ]}))
        .unwrap();
        let records = delivery_records(&event);
        assert_eq!(records[0].message_id.as_deref(), Ok("a"));
        assert_eq!(records[0].receive_count, 3);
        assert_eq!(records[0].receipt_handle, "r1");
        assert!(records[1].message_id.is_err());
        assert_eq!(records[1].receive_count, 1);
    }

    #[test]
    fn deadlines_are_epoch_milliseconds_in_the_future() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let in_30s = 1_800_000_030_000;
        let remaining = deadline_instant(in_30s, now).unwrap() - Instant::now();
        assert!(
            remaining > Duration::from_secs(29) && remaining <= Duration::from_secs(30),
            "{remaining:?}"
        );
        assert_eq!(
            deadline_instant(600_000, now),
            None,
            "a relative timeout is not a deadline"
        );
        assert_eq!(deadline_instant(1_799_999_999_000, now), None);
    }

    #[test]
    fn batch_response_names_only_failures() {
        let json = serde_json::to_value(batch_response(vec!["m2".into()])).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"batchItemFailures": [{"itemIdentifier": "m2"}]})
        );
        let json = serde_json::to_value(batch_response(vec![])).unwrap();
        assert_eq!(json, serde_json::json!({"batchItemFailures": []}));
    }
}
