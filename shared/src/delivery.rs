//! Delivery of queued messages: one function per queue record, run concurrently
//! over a batch, each outcome reported on its own (SQS partial batch failures).

use std::time::Duration;

use time::OffsetDateTime;
use tokio::time::Instant;
use tracing::{Instrument, info, info_span, warn};

use crate::domain::RetryPolicy;
use crate::ports::{
    Claim, Completion, DeliveryQueue, Lease, MessageStore, Provider, ProviderError, StoreError,
};

/// One received queue message, as the delivery logic needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    /// The queue's id for this message (reported back on failure).
    pub queue_message_id: String,
    pub receipt_handle: String,
    /// The message id the record carries, or why it could not be read.
    pub message_id: Result<String, String>,
    /// How many times the queue has handed this record out, this time included.
    pub receive_count: u32,
}

/// What to tell the queue about a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordOutcome {
    /// Done with it (sent, failed for good, or nothing left to do): delete it.
    Done,
    /// Not done: leave it on the queue to be received again.
    Retry,
}

/// Time kept back from the function's deadline to report unfinished records.
pub const DEADLINE_MARGIN: Duration = Duration::from_millis(1500);

pub struct Deliverer<S, Q, P> {
    store: S,
    queue: Q,
    provider: P,
    retry: RetryPolicy,
    lease: Duration,
}

impl<S: MessageStore, Q: DeliveryQueue, P: Provider> Deliverer<S, Q, P> {
    pub fn new(store: S, queue: Q, provider: P, retry: RetryPolicy, lease: Duration) -> Self {
        Self {
            store,
            queue,
            provider,
            retry,
            lease,
        }
    }

    /// Handles a batch concurrently and returns the queue ids of the records that
    /// must be received again. Records unfinished when `deadline` (minus a margin)
    /// arrives are reported too, instead of being lost with the invocation.
    pub async fn deliver_batch(
        &self,
        records: &[DeliveryRecord],
        deadline: Option<Instant>,
    ) -> Vec<String> {
        let cutoff = deadline.map(|d| d.checked_sub(DEADLINE_MARGIN).unwrap_or(d));
        let outcomes = futures::future::join_all(records.iter().map(|record| async move {
            let span = info_span!(
                "record",
                sqs_message_id = %record.queue_message_id,
                message_id = record.message_id.as_deref().unwrap_or("-"),
                receive_count = record.receive_count,
            );
            let work = self.deliver(record).instrument(span);
            let outcome = match cutoff {
                Some(cutoff) => tokio::time::timeout_at(cutoff, work).await.unwrap_or_else(|_| {
                    warn!(sqs_message_id = %record.queue_message_id, "deadline reached before the record finished");
                    RecordOutcome::Retry
                }),
                None => work.await,
            };
            (record, outcome)
        }))
        .await;
        outcomes
            .into_iter()
            .filter(|(_, outcome)| *outcome == RecordOutcome::Retry)
            .map(|(record, _)| record.queue_message_id.clone())
            .collect()
    }

    /// Delivers the message one record points at, at most once per lease.
    pub async fn deliver(&self, record: &DeliveryRecord) -> RecordOutcome {
        let id = match &record.message_id {
            Ok(id) => id.as_str(),
            Err(reason) => {
                warn!(sqs_message_id = %record.queue_message_id, reason, "unreadable queue record");
                return RecordOutcome::Retry;
            }
        };
        let now = OffsetDateTime::now_utc();
        let lease = Lease {
            id: uuid::Uuid::new_v4().to_string(),
            expires_at: now + self.lease,
        };
        let message = match self.store.claim(id, &lease, now).await {
            Ok(Claim::Claimed(message)) => message,
            Ok(Claim::Settled(message)) => {
                info!(
                    status = message.status.as_str(),
                    "already settled; not sending again"
                );
                return RecordOutcome::Done;
            }
            Ok(Claim::Busy { until }) => {
                info!(lease_until = %until, "another delivery holds the lease");
                self.postpone(record, duration_until(now, until) + Duration::from_secs(1))
                    .await;
                return RecordOutcome::Retry;
            }
            Ok(Claim::NotFound) => {
                warn!("queue record names an unknown message");
                return RecordOutcome::Retry;
            }
            Err(e) => {
                warn!(error = %e, "could not claim the message");
                return RecordOutcome::Retry;
            }
        };

        let started = std::time::Instant::now();
        let result = self.provider.send(&message).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let now = OffsetDateTime::now_utc();
        let (completion, delay) = match result {
            Ok(accepted) => {
                info!(provider_message_id = ?accepted.provider_message_id, elapsed_ms, "sent");
                (
                    Completion::Sent {
                        provider_message_id: accepted.provider_message_id,
                    },
                    None,
                )
            }
            Err(ProviderError::Rejected { reason }) => {
                warn!(reason, elapsed_ms, "provider rejected the message");
                (Completion::Failed { reason }, None)
            }
            Err(ProviderError::Retryable { reason, .. })
                if self.retry.is_last_receive(record.receive_count) =>
            {
                warn!(reason, attempts = message.attempts, "retries exhausted");
                (
                    Completion::Failed {
                        reason: format!("retries exhausted: {reason}"),
                    },
                    None,
                )
            }
            Err(ProviderError::Retryable {
                reason,
                retry_after,
            }) => {
                let delay = self
                    .retry
                    .delay(message.attempts, retry_after, rand::random::<f64>());
                warn!(
                    reason,
                    attempts = message.attempts,
                    delay_s = delay.as_secs_f64(),
                    "will retry"
                );
                (
                    Completion::Retry {
                        reason,
                        next_attempt_at: now + delay,
                    },
                    Some(delay),
                )
            }
        };

        match self.store.complete(id, &lease.id, &completion, now).await {
            Ok(()) => {}
            Err(StoreError::Conflict(e)) => {
                // Someone took the lease over (ours outlived it): they own the message now.
                warn!(error = %e, "lease lost before recording the outcome");
                return RecordOutcome::Done;
            }
            Err(e) => {
                // The outcome is not recorded; the lease expires and a later receive
                // takes over. If the provider accepted, that is the one duplicate window.
                warn!(error = %e, "could not record the outcome");
                return RecordOutcome::Retry;
            }
        }
        match delay {
            Some(delay) => {
                self.postpone(record, delay).await;
                RecordOutcome::Retry
            }
            None => RecordOutcome::Done,
        }
    }

    async fn postpone(&self, record: &DeliveryRecord, delay: Duration) {
        if let Err(e) = self.queue.postpone(&record.receipt_handle, delay).await {
            warn!(error = %e, "could not reschedule the record; the queue's visibility timeout applies");
        }
    }
}

fn duration_until(now: OffsetDateTime, until: OffsetDateTime) -> Duration {
    Duration::try_from(until - now).unwrap_or_default()
}
