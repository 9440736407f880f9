//! The delivery queue on SQS and the body of a queued message. The Lambda SQS
//! event the delivery function receives is read in [`crate::sqs_trigger`].

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::domain::{Message, ProviderKind};
use crate::ports::{DeliveryQueue, QueueError, QueueHandOver, QueueVisibility, Routing};

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
}
