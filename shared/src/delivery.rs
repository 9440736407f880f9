//! Delivery of queued messages: one function per queue record, run concurrently
//! over a batch, each outcome reported on its own (SQS partial batch failures).

use std::time::Duration;

use time::OffsetDateTime;
use tokio::time::Instant;
use tracing::{Instrument, error, info, info_span, warn};

use crate::compliance;
use crate::domain::breaker::{Breaker, CallResult, Gate};
use crate::domain::suppression::opted_out_reason;
use crate::domain::{
    Message, OptOutScope, RetryPolicy, Suppression, SuppressionChannel, SuppressionSource,
};
use crate::metrics::{self, Metric, dimension, name};
use crate::ports::{
    Claim, Completion, DeliveryStore, Lease, Provider, ProviderError, QueueHandOver,
    QueueVisibility, RetryReason, Routing, StoreError, SuppressionList,
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
    /// How many times a delivery handed the message over to a fresh queue
    /// message before this one (see [`RetryPolicy::max_hops`]).
    pub hop: u32,
    /// The provider and acceptance time the queue message carries, if any.
    pub routing: Routing,
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

/// The longest a provider call takes by default (`PROVIDER_TIMEOUT_SECONDS`).
const DEFAULT_CALL_BUDGET: Duration = Duration::from_secs(10);

pub struct Deliverer<S, Q, P> {
    store: S,
    queue: Q,
    provider: P,
    retry: RetryPolicy,
    lease: Duration,
    opt_out_scope: OptOutScope,
    /// The longest a provider call can take: none is started later than this
    /// before the deadline's margin, so none is ever cut off.
    call_budget: Duration,
    /// Pauses calls to a provider that keeps failing (off unless configured).
    breaker: Breaker,
}

impl<S, Q, P> Deliverer<S, Q, P>
where
    S: DeliveryStore + SuppressionList,
    Q: QueueHandOver + QueueVisibility,
    P: Provider,
{
    pub fn new(store: S, queue: Q, provider: P, retry: RetryPolicy, lease: Duration) -> Self {
        Self {
            store,
            queue,
            provider,
            retry,
            lease,
            opt_out_scope: OptOutScope::default(),
            call_budget: DEFAULT_CALL_BUDGET,
            breaker: Breaker::new(0, Duration::ZERO),
        }
    }

    /// Pauses calls to a provider for `cooldown` after `threshold` retryable
    /// failures in a row (`BREAKER_THRESHOLD`, `BREAKER_COOLDOWN_SECONDS`).
    pub fn with_breaker(mut self, threshold: u32, cooldown: Duration) -> Self {
        self.breaker = Breaker::new(threshold, cooldown);
        self
    }

    /// The provider client's whole-request timeout: how long before the
    /// deadline the last provider call may start.
    pub fn with_provider_timeout(mut self, timeout: Duration) -> Self {
        self.call_budget = timeout;
        self
    }

    /// How far a phone opt-out reaches (`OPT_OUT_SCOPE`; default: the sender).
    pub fn with_opt_out_scope(mut self, scope: OptOutScope) -> Self {
        self.opt_out_scope = scope;
        self
    }

    /// Handles a batch concurrently and returns the queue ids of the records that
    /// must be received again. Near the `deadline` no provider call is started
    /// (those records are reported, untouched); a call in flight is never cut,
    /// as it ends within its timeout. Records still unfinished at the deadline
    /// (less a margin: a store call that hangs) are reported too, instead of
    /// being lost with the invocation.
    pub async fn deliver_batch(
        &self,
        records: &[DeliveryRecord],
        deadline: Option<Instant>,
    ) -> Vec<String> {
        let cutoff = deadline.map(|d| d.checked_sub(DEADLINE_MARGIN).unwrap_or(d));
        let start_by = cutoff.map(|c| c.checked_sub(self.call_budget).unwrap_or(c));
        let outcomes = futures::future::join_all(records.iter().map(|record| async move {
            let span = info_span!(
                "record",
                sqs_message_id = %record.queue_message_id,
                message_id = record.message_id.as_deref().unwrap_or("-"),
                receive_count = record.receive_count,
                conversation_id = tracing::field::Empty,
                provider = tracing::field::Empty,
            );
            let work = self.deliver_starting_by(record, start_by).instrument(span);
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
        self.deliver_starting_by(record, None).await
    }

    /// [`Self::deliver`], unless `start_by` has passed: then the record is
    /// reported back for later, its message untouched.
    async fn deliver_starting_by(
        &self,
        record: &DeliveryRecord,
        start_by: Option<Instant>,
    ) -> RecordOutcome {
        let id = match &record.message_id {
            Ok(id) => id.as_str(),
            Err(reason) => {
                warn!(sqs_message_id = %record.queue_message_id, reason, "unreadable queue record");
                return RecordOutcome::Retry;
            }
        };
        if start_by.is_some_and(|t| Instant::now() >= t) {
            info!("too close to the deadline to start a provider call; reported for later");
            return self.try_again(record, id, self.retry.base).await;
        }
        if let Some(wait) = self.paused(record) {
            // Not claimed, not called: the wait counts as no attempt.
            let jitter = Duration::from_millis(rand::random::<u64>() % 1000);
            return self.try_again(record, id, wait + jitter).await;
        }
        let now = OffsetDateTime::now_utc();
        let lease = Lease {
            id: uuid::Uuid::new_v4().to_string(),
            expires_at: now + self.lease,
        };
        let message = match self.store.claim(id, &lease, now).await {
            Ok(Claim::Claimed(message)) => {
                let span = tracing::Span::current();
                span.record("conversation_id", message.conversation_id.as_str());
                span.record("provider", message.channel.provider().as_str());
                message
            }
            Ok(Claim::Settled(message)) => {
                info!(
                    status = message.status.as_str(),
                    "already settled; not sending again"
                );
                return RecordOutcome::Done;
            }
            Ok(Claim::Busy { until }) => {
                info!(lease_until = %until, "another delivery holds the lease");
                let delay = duration_until(now, until) + Duration::from_secs(1);
                return self.try_again(record, id, delay).await;
            }
            Ok(Claim::NotFound) => {
                warn!("queue record names an unknown message");
                return RecordOutcome::Retry;
            }
            Err(e) => {
                warn!(error = %e, "could not claim the message");
                return self.try_again(record, id, self.retry.base).await;
            }
        };

        let (completion, delay) = match self.suppression(&message).await {
            Ok(None) => self.send(&message).await,
            Ok(Some(entry)) => {
                let reason = opted_out_reason(&entry);
                info!(reason, "recipient has opted out; not sending");
                metrics::emit(&[Metric::count(name::SUPPRESSED, 1)], &[]);
                metrics::emit(
                    &[Metric::count(name::MESSAGES_FAILED, 1)],
                    &[(dimension::CHANNEL, message.channel.as_str())],
                );
                (Completion::Failed { reason }, None)
            }
            Err(e) => {
                let delay = self
                    .retry
                    .delay(message.attempts, None, rand::random::<f64>());
                warn!(error = %e, delay_s = delay.as_secs_f64(), "could not read the suppression list; will retry");
                let reason = format!("suppression list unavailable: {e}");
                let next_attempt_at = OffsetDateTime::now_utc() + delay;
                (
                    Completion::Retry {
                        reason,
                        next_attempt_at,
                    },
                    Some(delay),
                )
            }
        };
        let now = OffsetDateTime::now_utc();

        match self.store.complete(id, &lease.id, &completion, now).await {
            Ok(()) => {}
            Err(StoreError::Conflict(e)) => {
                // Someone took the lease over (ours outlived it): they own the message now.
                warn!(error = %e, "lease lost before recording the outcome");
                return RecordOutcome::Done;
            }
            Err(e) => {
                // The outcome is not recorded; once the lease expires a later receive
                // takes over. If the provider accepted, that is the one duplicate window.
                warn!(error = %e, "could not record the outcome");
                return self.try_again(record, id, self.lease).await;
            }
        }
        match delay {
            Some(delay) => self.try_again(record, id, delay).await,
            None => RecordOutcome::Done,
        }
    }

    /// How long to wait if the record's provider is paused by the breaker.
    /// A message past its age is let through: its next failure ends it.
    fn paused(&self, record: &DeliveryRecord) -> Option<Duration> {
        let provider = record.routing.provider?;
        let now = OffsetDateTime::now_utc();
        let expired = record.routing.accepted_at.is_some_and(|at| {
            Duration::try_from(now - at).is_ok_and(|age| age > self.retry.max_age)
        });
        if expired {
            return None;
        }
        match self.breaker.gate(provider, std::time::Instant::now()) {
            Gate::Call => None,
            Gate::Probe => {
                info!(
                    provider = provider.as_str(),
                    "circuit half-open: this call probes the provider"
                );
                None
            }
            Gate::Wait(wait) => {
                info!(
                    provider = provider.as_str(),
                    wait_s = wait.as_secs_f64(),
                    "circuit open: the provider is paused; not calling"
                );
                Some(wait)
            }
        }
    }

    /// The suppression that stops this message, if any (one read of the
    /// recipient's entries). Our answers to STOP and HELP pass.
    async fn suppression(&self, message: &Message) -> Result<Option<Suppression>, StoreError> {
        if message
            .keyword_reply
            .is_some_and(|keyword| keyword.reply_passes_suppression())
        {
            return Ok(None);
        }
        compliance::blocking_suppression(
            &self.store,
            self.opt_out_scope,
            message.channel,
            &message.from,
            &message.to,
        )
        .await
    }

    /// Hands the message to its provider and decides what to record: sent,
    /// failed, or a retry after a delay.
    async fn send(&self, message: &Message) -> (Completion, Option<Duration>) {
        let started = std::time::Instant::now();
        let result = self.provider.send(message).await;
        let elapsed = started.elapsed();
        let elapsed_ms = elapsed.as_millis() as u64;
        let now = OffsetDateTime::now_utc();
        let channel = [(dimension::CHANNEL, message.channel.as_str())];
        let provider = message.channel.provider();
        let call = match &result {
            Err(ProviderError::Retryable { .. }) => CallResult::Failed,
            _ => CallResult::Answered,
        };
        if self
            .breaker
            .record(provider, call, std::time::Instant::now())
        {
            warn!(
                provider = provider.as_str(),
                "circuit opened: calls to the provider pause"
            );
            metrics::emit(
                &[Metric::count(name::CIRCUIT_OPENED, 1)],
                &[(dimension::PROVIDER, provider.as_str())],
            );
        }
        metrics::emit(
            &[Metric::milliseconds(name::PROVIDER_LATENCY, elapsed)],
            &[(dimension::PROVIDER, message.channel.provider().as_str())],
        );
        match result {
            Ok(accepted) => {
                info!(provider_message_id = ?accepted.provider_message_id, elapsed_ms, "sent");
                metrics::emit(&[Metric::count(name::MESSAGES_DELIVERED, 1)], &channel);
                let age = Duration::try_from(now - message.created_at).unwrap_or_default();
                metrics::emit(
                    &[Metric::milliseconds(name::MESSAGE_AGE_AT_DELIVERY, age)],
                    &[],
                );
                (
                    Completion::Sent {
                        provider,
                        provider_message_id: accepted.provider_message_id,
                    },
                    None,
                )
            }
            Err(ProviderError::Rejected { reason }) => {
                warn!(reason, elapsed_ms, "provider rejected the message");
                metrics::emit(&[Metric::count(name::MESSAGES_FAILED, 1)], &channel);
                (Completion::Failed { reason }, None)
            }
            Err(ProviderError::Unsubscribed { reason }) => {
                warn!(
                    reason,
                    elapsed_ms, "provider says the recipient unsubscribed"
                );
                metrics::emit(&[Metric::count(name::MESSAGES_FAILED, 1)], &channel);
                self.provider_opt_out(message, &reason, now).await;
                (
                    Completion::Failed {
                        reason: format!("the recipient has opted out ({reason})"),
                    },
                    None,
                )
            }
            Err(ProviderError::Retryable {
                reason,
                kind,
                retry_after,
            }) => {
                let delay = self
                    .retry
                    .delay(message.attempts, retry_after, rand::random::<f64>());
                let age = Duration::try_from(now - message.created_at).unwrap_or_default();
                if self.retry.exhausted(age, delay) {
                    warn!(
                        reason,
                        attempts = message.attempts,
                        age_s = age.as_secs(),
                        "retries exhausted"
                    );
                    metrics::emit(&[Metric::count(name::MESSAGES_FAILED, 1)], &channel);
                    return (
                        Completion::Failed {
                            reason: format!("retries exhausted after {}: {reason}", age_text(age)),
                        },
                        None,
                    );
                }
                metrics::emit(
                    &[Metric::count(name::DELIVERY_RETRIED, 1)],
                    &[(dimension::REASON, kind.as_str())],
                );
                if kind == RetryReason::Credentials {
                    error!(
                        provider = provider.as_str(),
                        reason, "the provider refuses our credentials, also as read again"
                    );
                    metrics::emit(
                        &[Metric::count(name::PROVIDER_AUTH_FAILED, 1)],
                        &[(dimension::PROVIDER, provider.as_str())],
                    );
                }
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
        }
    }

    /// Puts the recipient the provider says unsubscribed on our list, for the
    /// sender it refused (phone, unless the scope is all) or every sender (email).
    async fn provider_opt_out(&self, message: &Message, reason: &str, now: OffsetDateTime) {
        let channel = SuppressionChannel::of(message.channel);
        let Ok(address) = channel.normalize(&message.to) else {
            return;
        };
        let sender = match channel {
            SuppressionChannel::Phone => self.opt_out_scope.entry_sender(message.from.trim()),
            SuppressionChannel::Email => None,
        };
        compliance::provider_signal(
            &self.store,
            Suppression {
                channel,
                address,
                sender,
                reason: reason.to_owned(),
                source: match message.channel.provider() {
                    crate::domain::ProviderKind::Twilio => SuppressionSource::Twilio,
                    crate::domain::ProviderKind::SendGrid => SuppressionSource::SendGrid,
                },
                message_id: Some(message.id.clone()),
                created_at: now,
            },
        )
        .await;
    }
    /// Schedules another attempt after `delay`. Normally the record itself is
    /// hidden for that long and reported back. On the last receive the queue allows
    /// it would go to the dead-letter queue instead, leaving a healthy message
    /// stranded `queued` or `sending`; so it is handed over to a fresh queue message
    /// (with a fresh receive count and one more hop) and this one is acknowledged.
    /// After [`RetryPolicy::max_hops`] hand-overs the record is let go to the
    /// dead-letter queue: it cannot be processed (a message being retried ends
    /// `failed` by its age well before).
    async fn try_again(&self, record: &DeliveryRecord, id: &str, delay: Duration) -> RecordOutcome {
        if self.retry.is_last_receive(record.receive_count) {
            if record.hop >= self.retry.max_hops() {
                warn!(
                    hop = record.hop,
                    "last receive of the last hand-over; the record goes to the dead-letter queue"
                );
                return RecordOutcome::Retry;
            }
            return match self
                .queue
                .hand_over(id, record.routing, delay, record.hop + 1)
                .await
            {
                Ok(()) => {
                    info!(
                        delay_s = delay.as_secs_f64(),
                        "last receive: handed over to a new queue message"
                    );
                    RecordOutcome::Done
                }
                Err(e) => {
                    warn!(error = %e, "last receive and the hand-over failed; the record goes to the dead-letter queue");
                    RecordOutcome::Retry
                }
            };
        }
        if let Err(e) = self.queue.postpone(&record.receipt_handle, delay).await {
            warn!(error = %e, "could not reschedule the record; the queue's visibility timeout applies");
        }
        RecordOutcome::Retry
    }
}

/// A message's age as people read it: `42s`, `5m 3s`, `10h 0m 3s`.
fn age_text(age: Duration) -> String {
    let s = age.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, m, s) => format!("{h}h {m}m {s}s"),
    }
}

fn duration_until(now: OffsetDateTime, until: OffsetDateTime) -> Duration {
    Duration::try_from(until - now).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::compliance::testing::{MemorySuppressions, delegate_suppressions};
    use crate::domain::{Channel, Direction, Keyword, NewMessage, Status};
    use crate::metrics::testing::{Capture, dimension_sets};
    use crate::ports::{Accepted, QueueError};
    use serde_json::json;

    // ---- fakes ---------------------------------------------------------------

    /// What `complete` answers.
    #[derive(Debug, Clone, Copy)]
    enum CompleteAnswer {
        Ok,
        Conflict,
        Unavailable,
    }

    /// A store that answers `claim` per message id from a script (unknown ids are
    /// `NotFound`; `Err(reason)` becomes `StoreError::Unavailable`) and records
    /// every `claim` and `complete` call.
    struct FakeStore {
        claims: HashMap<String, Result<Claim, String>>,
        complete_answer: CompleteAnswer,
        claimed: Mutex<Vec<(String, Lease)>>,
        completed: Mutex<Vec<(String, String, Completion)>>,
        suppressions: MemorySuppressions,
    }

    delegate_suppressions!(FakeStore, suppressions);

    impl FakeStore {
        fn new() -> Self {
            Self {
                claims: HashMap::new(),
                complete_answer: CompleteAnswer::Ok,
                claimed: Mutex::new(Vec::new()),
                completed: Mutex::new(Vec::new()),
                suppressions: MemorySuppressions::default(),
            }
        }

        /// The recipient of [`claimed_message`] opted out of `sender` (`None`: all).
        fn with_opt_out(self, sender: Option<&str>) -> Self {
            self.suppressions.0.lock().unwrap().push(Suppression {
                channel: SuppressionChannel::Phone,
                address: "+12016661234".into(),
                sender: sender.map(str::to_owned),
                reason: "opt-out keyword STOP".into(),
                source: SuppressionSource::Keyword,
                message_id: Some("inbound-1".into()),
                created_at: OffsetDateTime::now_utc(),
            });
            self
        }

        fn with_claim(mut self, id: &str, claim: Claim) -> Self {
            self.claims.insert(id.to_owned(), Ok(claim));
            self
        }

        fn with_claim_error(mut self, id: &str, reason: &str) -> Self {
            self.claims.insert(id.to_owned(), Err(reason.to_owned()));
            self
        }

        fn answering_complete(mut self, answer: CompleteAnswer) -> Self {
            self.complete_answer = answer;
            self
        }

        fn claimed(&self) -> Vec<(String, Lease)> {
            self.claimed.lock().unwrap().clone()
        }

        fn completed(&self) -> Vec<(String, String, Completion)> {
            self.completed.lock().unwrap().clone()
        }
    }

    impl DeliveryStore for FakeStore {
        async fn claim(
            &self,
            id: &str,
            lease: &Lease,
            _now: OffsetDateTime,
        ) -> Result<Claim, StoreError> {
            self.claimed
                .lock()
                .unwrap()
                .push((id.to_owned(), lease.clone()));
            match self.claims.get(id) {
                Some(Ok(claim)) => Ok(claim.clone()),
                Some(Err(reason)) => Err(StoreError::Unavailable(reason.clone())),
                None => Ok(Claim::NotFound),
            }
        }

        async fn complete(
            &self,
            id: &str,
            lease_id: &str,
            completion: &Completion,
            _now: OffsetDateTime,
        ) -> Result<(), StoreError> {
            self.completed.lock().unwrap().push((
                id.to_owned(),
                lease_id.to_owned(),
                completion.clone(),
            ));
            match self.complete_answer {
                CompleteAnswer::Ok => Ok(()),
                CompleteAnswer::Conflict => Err(StoreError::Conflict("lease taken over".into())),
                CompleteAnswer::Unavailable => {
                    Err(StoreError::Unavailable("table unreachable".into()))
                }
            }
        }
    }

    /// A queue that records every `postpone` and hand-over.
    #[derive(Default)]
    struct FakeQueue {
        postponed: Mutex<Vec<(String, Duration)>>,
        enqueued: Mutex<Vec<(String, Duration)>>,
        hops: Mutex<Vec<u32>>,
    }

    impl FakeQueue {
        fn postponed(&self) -> Vec<(String, Duration)> {
            self.postponed.lock().unwrap().clone()
        }

        fn enqueued(&self) -> Vec<(String, Duration)> {
            self.enqueued.lock().unwrap().clone()
        }

        fn hops(&self) -> Vec<u32> {
            self.hops.lock().unwrap().clone()
        }
    }

    impl QueueHandOver for FakeQueue {
        async fn hand_over(
            &self,
            message_id: &str,
            _routing: Routing,
            delay: Duration,
            hop: u32,
        ) -> Result<(), QueueError> {
            self.enqueued
                .lock()
                .unwrap()
                .push((message_id.to_owned(), delay));
            self.hops.lock().unwrap().push(hop);
            Ok(())
        }
    }

    impl QueueVisibility for FakeQueue {
        async fn postpone(&self, receipt_handle: &str, delay: Duration) -> Result<(), QueueError> {
            self.postponed
                .lock()
                .unwrap()
                .push((receipt_handle.to_owned(), delay));
            Ok(())
        }
    }

    /// A provider that answers every send the same way, after an optional sleep.
    struct FakeProvider {
        result: Result<Accepted, ProviderError>,
        sleep: Option<Duration>,
        calls: AtomicUsize,
    }

    impl FakeProvider {
        fn answering(result: Result<Accepted, ProviderError>) -> Self {
            Self {
                result,
                sleep: None,
                calls: AtomicUsize::new(0),
            }
        }

        fn accepting(provider_message_id: &str) -> Self {
            Self::answering(Ok(Accepted {
                provider_message_id: Some(provider_message_id.to_owned()),
            }))
        }

        fn sleeping(mut self, sleep: Duration) -> Self {
            self.sleep = Some(sleep);
            self
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl Provider for FakeProvider {
        async fn send(&self, _message: &Message) -> Result<Accepted, ProviderError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if let Some(sleep) = self.sleep {
                tokio::time::sleep(sleep).await;
            }
            self.result.clone()
        }
    }

    // ---- helpers -------------------------------------------------------------

    const MSG_ID: &str = "msg-1";
    const RECEIPT: &str = "receipt-1";

    fn policy() -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(4),
            max_receives: 5,
            max_age: Duration::from_secs(3600),
        }
    }

    /// An outbound message as a successful claim returns it: `sending`, with
    /// `attempts` counting this attempt.
    fn claimed_message(id: &str, attempts: u32) -> Message {
        let now = OffsetDateTime::now_utc();
        let new = NewMessage {
            channel: Channel::Sms,
            from: "+18045551234".into(),
            to: "+12016661234".into(),
            body: "hello".into(),
            attachments: None,
            timestamp: None,
            messaging_provider_id: None,
        };
        let mut message = Message::accept(new, Direction::Outbound, now);
        message.id = id.to_owned();
        message.status = Status::Sending;
        message.attempts = attempts;
        message
    }

    fn settled_message(id: &str) -> Message {
        let mut message = claimed_message(id, 1);
        message.status = Status::Sent;
        message.provider_message_id = Some("SM-old".into());
        message
    }

    fn record(queue_id: &str, message_id: &str, receive_count: u32) -> DeliveryRecord {
        DeliveryRecord {
            queue_message_id: queue_id.to_owned(),
            receipt_handle: format!("receipt-{queue_id}"),
            message_id: Ok(message_id.to_owned()),
            receive_count,
            hop: 0,
            routing: Routing::default(),
        }
    }

    fn single_record(receive_count: u32) -> DeliveryRecord {
        DeliveryRecord {
            queue_message_id: "q-1".into(),
            receipt_handle: RECEIPT.into(),
            message_id: Ok(MSG_ID.into()),
            receive_count,
            hop: 0,
            routing: Routing::default(),
        }
    }

    fn deliverer(
        store: FakeStore,
        provider: FakeProvider,
    ) -> Deliverer<FakeStore, FakeQueue, FakeProvider> {
        Deliverer::new(
            store,
            FakeQueue::default(),
            provider,
            policy(),
            Duration::from_secs(60),
        )
    }

    fn claimed_store(attempts: u32) -> FakeStore {
        FakeStore::new().with_claim(MSG_ID, Claim::Claimed(claimed_message(MSG_ID, attempts)))
    }

    fn retryable(reason: &str, retry_after: Option<Duration>) -> FakeProvider {
        retryable_as(RetryReason::ServerError, reason, retry_after)
    }

    fn retryable_as(
        kind: RetryReason,
        reason: &str,
        retry_after: Option<Duration>,
    ) -> FakeProvider {
        FakeProvider::answering(Err(ProviderError::Retryable {
            reason: reason.to_owned(),
            kind,
            retry_after,
        }))
    }

    fn sorted(mut ids: Vec<String>) -> Vec<String> {
        ids.sort();
        ids
    }

    // ---- deliver -------------------------------------------------------------

    #[tokio::test]
    async fn a_message_to_an_opted_out_recipient_fails_without_a_provider_call() {
        let d = deliverer(
            claimed_store(1).with_opt_out(Some("+18045551234")),
            FakeProvider::accepting("SM123"),
        );

        let outcome = d.deliver(&single_record(1)).await;

        assert_eq!(outcome, RecordOutcome::Done);
        assert_eq!(d.provider.calls(), 0, "the provider is never called");
        let completed = d.store.completed();
        let Completion::Failed { reason } = &completed[0].2 else {
            panic!("not failed: {completed:?}");
        };
        assert_eq!(reason, "the recipient has opted out (opt-out keyword STOP)");
    }

    #[tokio::test]
    async fn an_opt_out_of_another_of_our_numbers_does_not_stop_the_message() {
        let d = deliverer(
            claimed_store(1).with_opt_out(Some("+18045550000")),
            FakeProvider::accepting("SM123"),
        );
        d.deliver(&single_record(1)).await;
        assert_eq!(d.provider.calls(), 1);
        let d = deliverer(
            claimed_store(1).with_opt_out(Some("+18045550000")),
            FakeProvider::accepting("SM123"),
        )
        .with_opt_out_scope(OptOutScope::All);
        d.deliver(&single_record(1)).await;
        assert_eq!(d.provider.calls(), 0, "OPT_OUT_SCOPE=all");
    }

    #[tokio::test]
    async fn the_opt_out_confirmation_passes_its_own_suppression() {
        let mut reply = claimed_message(MSG_ID, 1);
        reply.keyword_reply = Some(Keyword::OptOut);
        let store = FakeStore::new()
            .with_claim(MSG_ID, Claim::Claimed(reply))
            .with_opt_out(None);
        let d = deliverer(store, FakeProvider::accepting("SM123"));
        d.deliver(&single_record(1)).await;
        assert_eq!(d.provider.calls(), 1);
    }

    #[tokio::test]
    async fn twilio_21610_fails_the_message_and_suppresses_the_recipient_for_that_sender() {
        let d = deliverer(
            claimed_store(1),
            FakeProvider::answering(Err(ProviderError::Unsubscribed {
                reason: "twilio answered 400: unsubscribed recipient (code 21610)".into(),
            })),
        );

        assert_eq!(d.deliver(&single_record(1)).await, RecordOutcome::Done);

        let completed = d.store.completed();
        assert!(
            matches!(&completed[0].2, Completion::Failed { reason } if reason.starts_with("the recipient has opted out")),
            "{completed:?}"
        );
        let entries = d.store.suppressions.entries();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].source, SuppressionSource::Twilio);
        assert_eq!(entries[0].sender.as_deref(), Some("+18045551234"));
        assert_eq!(entries[0].message_id.as_deref(), Some(MSG_ID));
    }

    #[tokio::test]
    async fn accepted_records_sent_under_the_claimed_lease() {
        let d = deliverer(claimed_store(1), FakeProvider::accepting("SM123"));
        let before = OffsetDateTime::now_utc();

        let outcome = d.deliver(&single_record(1)).await;

        assert_eq!(outcome, RecordOutcome::Done);
        assert_eq!(d.provider.calls(), 1);
        let claimed = d.store.claimed();
        assert_eq!(claimed.len(), 1);
        let (claimed_id, lease) = &claimed[0];
        assert_eq!(claimed_id, MSG_ID);
        assert!(
            lease.expires_at >= before + Duration::from_secs(60)
                && lease.expires_at <= OffsetDateTime::now_utc() + Duration::from_secs(60),
            "lease must last the configured 60 s, expires at {}",
            lease.expires_at
        );
        assert_eq!(
            d.store.completed(),
            vec![(
                MSG_ID.to_owned(),
                lease.id.clone(),
                Completion::Sent {
                    provider: crate::domain::ProviderKind::Twilio,
                    provider_message_id: Some("SM123".into())
                }
            )]
        );
        assert!(d.queue.postponed().is_empty());
    }

    #[tokio::test]
    async fn each_delivery_takes_a_fresh_lease() {
        let d = deliverer(claimed_store(1), FakeProvider::accepting("SM123"));
        d.deliver(&single_record(1)).await;
        d.deliver(&single_record(2)).await;
        let claimed = d.store.claimed();
        assert_eq!(claimed.len(), 2);
        assert_ne!(claimed[0].1.id, claimed[1].1.id);
    }

    #[tokio::test]
    async fn rejected_records_failed_with_the_providers_reason() {
        let d = deliverer(
            claimed_store(1),
            FakeProvider::answering(Err(ProviderError::Rejected {
                reason: "invalid number".into(),
            })),
        );

        let outcome = d.deliver(&single_record(1)).await;

        assert_eq!(outcome, RecordOutcome::Done);
        assert_eq!(d.provider.calls(), 1);
        let completed = d.store.completed();
        assert_eq!(completed.len(), 1);
        assert_eq!(completed[0].0, MSG_ID);
        assert_eq!(
            completed[0].2,
            Completion::Failed {
                reason: "invalid number".into()
            }
        );
        assert!(d.queue.postponed().is_empty());
    }

    #[tokio::test]
    async fn retryable_before_the_last_receive_schedules_a_retry() {
        // attempts = 3: the backoff step is min(1 s * 2^2, 4 s) = 4 s, jittered into [1 s, 4 s].
        let d = deliverer(claimed_store(3), retryable("503 from provider", None));
        let before = OffsetDateTime::now_utc();

        let outcome = d.deliver(&single_record(4)).await;

        let after = OffsetDateTime::now_utc();
        assert_eq!(outcome, RecordOutcome::Retry);
        let postponed = d.queue.postponed();
        assert_eq!(postponed.len(), 1, "exactly one postpone: {postponed:?}");
        let (handle, delay) = &postponed[0];
        assert_eq!(handle, RECEIPT);
        assert!(
            (Duration::from_secs(1)..=Duration::from_secs(4)).contains(delay),
            "delay {delay:?} outside [base, cap]"
        );
        let completed = d.store.completed();
        assert_eq!(completed.len(), 1);
        match &completed[0].2 {
            Completion::Retry {
                reason,
                next_attempt_at,
            } => {
                assert_eq!(reason, "503 from provider");
                let scheduled_from = *next_attempt_at - *delay;
                assert!(
                    scheduled_from >= before && scheduled_from <= after,
                    "next_attempt_at {next_attempt_at} is not now + {delay:?}"
                );
            }
            other => panic!("expected Completion::Retry, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn retryable_honours_a_longer_retry_after() {
        let d = deliverer(
            claimed_store(1),
            retryable_as(
                RetryReason::Throttled,
                "429 throttled",
                Some(Duration::from_secs(30)),
            ),
        );
        let before = OffsetDateTime::now_utc();

        let outcome = d.deliver(&single_record(1)).await;

        let after = OffsetDateTime::now_utc();
        assert_eq!(outcome, RecordOutcome::Retry);
        assert_eq!(
            d.queue.postponed(),
            vec![(RECEIPT.to_owned(), Duration::from_secs(30))]
        );
        let completed = d.store.completed();
        assert_eq!(completed.len(), 1);
        match &completed[0].2 {
            Completion::Retry {
                reason,
                next_attempt_at,
            } => {
                assert_eq!(reason, "429 throttled");
                let scheduled_from = *next_attempt_at - Duration::from_secs(30);
                assert!(scheduled_from >= before && scheduled_from <= after);
            }
            other => panic!("expected Completion::Retry, got {other:?}"),
        }
    }

    /// A store whose message is `age` old.
    fn aged_store(attempts: u32, age: Duration) -> FakeStore {
        let mut message = claimed_message(MSG_ID, attempts);
        message.created_at = OffsetDateTime::now_utc() - age;
        FakeStore::new().with_claim(MSG_ID, Claim::Claimed(message))
    }

    #[tokio::test]
    async fn retryable_on_the_last_receive_is_handed_over_while_the_message_is_young() {
        let d = deliverer(claimed_store(5), retryable("503 from provider", None));
        let mut record = single_record(policy().max_receives);
        record.hop = 2;

        let outcome = d.deliver(&record).await;

        assert_eq!(
            outcome,
            RecordOutcome::Done,
            "acknowledged: a new queue message carries it"
        );
        let completed = d.store.completed();
        assert!(
            matches!(&completed[0].2, Completion::Retry { .. }),
            "{completed:?}"
        );
        assert_eq!(d.queue.enqueued().len(), 1);
        assert_eq!(d.queue.hops(), [3], "one more hop");
        assert!(d.queue.postponed().is_empty());
    }

    #[tokio::test]
    async fn retryable_past_the_max_age_fails_naming_the_age_and_the_last_error() {
        let age = Duration::from_secs(3600 - 1);
        let d = deliverer(aged_store(40, age), retryable("503 from provider", None));

        let outcome = d.deliver(&single_record(2)).await;

        assert_eq!(outcome, RecordOutcome::Done);
        let completed = d.store.completed();
        match &completed[0].2 {
            Completion::Failed { reason } => assert!(
                reason.starts_with("retries exhausted after 59m 59s: 503 from provider"),
                "reason: {reason}"
            ),
            other => panic!("expected Completion::Failed, got {other:?}"),
        }
        assert!(d.queue.postponed().is_empty() && d.queue.enqueued().is_empty());
    }

    #[tokio::test]
    async fn a_record_past_its_last_hop_goes_to_the_dead_letter_queue() {
        let store = FakeStore::new().with_claim_error(MSG_ID, "table unreachable");
        let d = deliverer(store, FakeProvider::accepting("SM1"));
        let mut record = single_record(policy().max_receives);
        record.hop = policy().max_hops() - 1;
        assert_eq!(d.deliver(&record).await, RecordOutcome::Done, "handed over");
        record.hop = policy().max_hops();
        assert_eq!(
            d.deliver(&record).await,
            RecordOutcome::Retry,
            "let go to the dead-letter queue"
        );
        assert_eq!(d.queue.hops(), [policy().max_hops()]);
        assert_eq!(d.provider.calls(), 0);
    }

    #[tokio::test]
    async fn settled_message_is_not_sent_again() {
        let store = FakeStore::new().with_claim(MSG_ID, Claim::Settled(settled_message(MSG_ID)));
        let d = deliverer(store, FakeProvider::accepting("SM-new"));

        let outcome = d.deliver(&single_record(2)).await;

        assert_eq!(outcome, RecordOutcome::Done);
        assert_eq!(d.provider.calls(), 0);
        assert_eq!(d.store.claimed().len(), 1);
        assert!(d.store.completed().is_empty());
        assert!(d.queue.postponed().is_empty());
    }

    #[tokio::test]
    async fn busy_message_is_postponed_past_the_other_lease() {
        let until = OffsetDateTime::now_utc() + Duration::from_secs(10);
        let store = FakeStore::new().with_claim(MSG_ID, Claim::Busy { until });
        let d = deliverer(store, FakeProvider::accepting("SM123"));

        let outcome = d.deliver(&single_record(1)).await;

        assert_eq!(outcome, RecordOutcome::Retry);
        assert_eq!(d.provider.calls(), 0);
        assert!(d.store.completed().is_empty());
        let postponed = d.queue.postponed();
        assert_eq!(postponed.len(), 1, "{postponed:?}");
        assert_eq!(postponed[0].0, RECEIPT);
        let delay = postponed[0].1;
        assert!(
            delay > Duration::from_secs(10) && delay < Duration::from_secs(12),
            "delay {delay:?} should be ~11 s"
        );
    }

    #[tokio::test]
    async fn busy_with_an_expired_lease_is_postponed_one_second() {
        let until = OffsetDateTime::now_utc() - Duration::from_secs(30);
        let store = FakeStore::new().with_claim(MSG_ID, Claim::Busy { until });
        let d = deliverer(store, FakeProvider::accepting("SM123"));

        assert_eq!(d.deliver(&single_record(1)).await, RecordOutcome::Retry);
        assert_eq!(
            d.queue.postponed(),
            vec![(RECEIPT.to_owned(), Duration::from_secs(1))]
        );
    }

    #[tokio::test]
    async fn unknown_message_is_retried_without_sending() {
        let d = deliverer(FakeStore::new(), FakeProvider::accepting("SM123"));

        let outcome = d.deliver(&single_record(1)).await;

        assert_eq!(outcome, RecordOutcome::Retry);
        assert_eq!(d.store.claimed().len(), 1);
        assert_eq!(d.provider.calls(), 0);
        assert!(d.store.completed().is_empty());
        assert!(d.queue.postponed().is_empty());
    }

    #[tokio::test]
    async fn unreadable_record_is_retried_without_touching_the_store() {
        let d = deliverer(claimed_store(1), FakeProvider::accepting("SM123"));
        let mut bad = single_record(1);
        bad.message_id = Err("body is not JSON".into());

        let outcome = d.deliver(&bad).await;

        assert_eq!(outcome, RecordOutcome::Retry);
        assert!(d.store.claimed().is_empty());
        assert_eq!(d.provider.calls(), 0);
        assert!(d.store.completed().is_empty());
        assert!(d.queue.postponed().is_empty());
    }

    #[tokio::test]
    async fn claim_failure_is_retried_without_sending() {
        let store = FakeStore::new().with_claim_error(MSG_ID, "throttled");
        let d = deliverer(store, FakeProvider::accepting("SM123"));

        assert_eq!(d.deliver(&single_record(1)).await, RecordOutcome::Retry);
        assert_eq!(d.provider.calls(), 0);
        assert!(d.store.completed().is_empty());
    }

    #[tokio::test]
    async fn lost_lease_on_complete_is_done() {
        let d = deliverer(
            claimed_store(1).answering_complete(CompleteAnswer::Conflict),
            FakeProvider::accepting("SM123"),
        );

        assert_eq!(d.deliver(&single_record(1)).await, RecordOutcome::Done);
        assert_eq!(d.provider.calls(), 1);
        assert_eq!(d.store.completed().len(), 1);
    }

    #[tokio::test]
    async fn lost_lease_after_a_retryable_error_is_done_and_not_postponed() {
        let d = deliverer(
            claimed_store(1).answering_complete(CompleteAnswer::Conflict),
            retryable("503", None),
        );

        assert_eq!(d.deliver(&single_record(1)).await, RecordOutcome::Done);
        assert_eq!(d.store.completed().len(), 1);
        assert!(d.queue.postponed().is_empty());
    }

    #[tokio::test]
    async fn unrecorded_outcome_is_retried_once_the_lease_expires() {
        let d = deliverer(
            claimed_store(1).answering_complete(CompleteAnswer::Unavailable),
            FakeProvider::accepting("SM123"),
        );

        assert_eq!(d.deliver(&single_record(1)).await, RecordOutcome::Retry);
        assert_eq!(d.provider.calls(), 1);
        assert_eq!(d.store.completed().len(), 1);
        assert_eq!(
            d.queue.postponed(),
            vec![(RECEIPT.to_owned(), Duration::from_secs(60))],
            "the next receive comes when the lease has expired"
        );
        assert!(d.queue.enqueued().is_empty());
    }

    #[tokio::test]
    async fn unrecorded_retry_waits_for_the_lease() {
        let d = deliverer(
            claimed_store(1).answering_complete(CompleteAnswer::Unavailable),
            retryable("503", None),
        );

        assert_eq!(d.deliver(&single_record(1)).await, RecordOutcome::Retry);
        assert_eq!(
            d.queue.postponed(),
            vec![(RECEIPT.to_owned(), Duration::from_secs(60))]
        );
    }

    // ---- the last receive the queue allows -------------------------------------

    #[tokio::test]
    async fn busy_on_the_last_receive_is_handed_to_a_new_queue_message() {
        let until = OffsetDateTime::now_utc() + time::Duration::seconds(10);
        let store = FakeStore::new().with_claim(MSG_ID, Claim::Busy { until });
        let d = deliverer(store, FakeProvider::accepting("SM1"));

        assert_eq!(d.deliver(&single_record(5)).await, RecordOutcome::Done);
        assert!(d.queue.postponed().is_empty());
        let enqueued = d.queue.enqueued();
        assert_eq!(enqueued.len(), 1, "{enqueued:?}");
        assert_eq!(enqueued[0].0, MSG_ID);
        assert!(
            (Duration::from_secs(10)..=Duration::from_secs(12)).contains(&enqueued[0].1),
            "{enqueued:?}"
        );
    }

    #[tokio::test]
    async fn unrecorded_outcome_on_the_last_receive_is_handed_over() {
        let d = deliverer(
            claimed_store(5).answering_complete(CompleteAnswer::Unavailable),
            FakeProvider::accepting("SM123"),
        );

        assert_eq!(d.deliver(&single_record(5)).await, RecordOutcome::Done);
        assert_eq!(
            d.queue.enqueued(),
            vec![(MSG_ID.to_owned(), Duration::from_secs(60))]
        );
        assert!(d.queue.postponed().is_empty());
    }

    #[tokio::test]
    async fn poison_records_on_the_last_receive_still_go_to_the_dead_letter_queue() {
        let d = deliverer(FakeStore::new(), FakeProvider::accepting("SM1"));
        assert_eq!(d.deliver(&single_record(5)).await, RecordOutcome::Retry);
        assert!(
            d.queue.enqueued().is_empty(),
            "an unknown message is not re-queued"
        );
    }

    // ---- deliver_batch -------------------------------------------------------

    #[tokio::test]
    async fn batch_reports_only_the_records_to_receive_again() {
        let store = FakeStore::new()
            .with_claim("m-a", Claim::Claimed(claimed_message("m-a", 1)))
            .with_claim("m-b", Claim::Settled(settled_message("m-b")));
        // "m-missing" has no script: the store answers NotFound.
        let d = deliverer(store, FakeProvider::accepting("SM123"));
        let mut unreadable = record("q-unreadable", "ignored", 1);
        unreadable.message_id = Err("missing message_id".into());
        let records = [
            record("q-a", "m-a", 1),
            unreadable,
            record("q-b", "m-b", 1),
            record("q-missing", "m-missing", 1),
        ];

        let failed = d.deliver_batch(&records, None).await;

        assert_eq!(
            sorted(failed),
            vec!["q-missing".to_owned(), "q-unreadable".to_owned()]
        );
        assert_eq!(d.provider.calls(), 1, "only m-a is sent");
        let completed = d.store.completed();
        assert_eq!(completed.len(), 1);
        assert_eq!(completed[0].0, "m-a");
    }

    #[tokio::test]
    async fn a_batch_of_ten_with_three_failures_reports_exactly_those_three() {
        let mut store = FakeStore::new();
        for i in 0..10 {
            let id = format!("m-{i}");
            store = store.with_claim(&id, Claim::Claimed(claimed_message(&id, 1)));
        }
        let d = deliverer(store, FakeProvider::accepting("SM1"));
        let mut records: Vec<DeliveryRecord> = (0..10)
            .map(|i| record(&format!("q-{i}"), &format!("m-{i}"), 1))
            .collect();
        // Three bad records among ten: two unreadable bodies and an unknown message.
        records[2].message_id = Err("not a queued message".into());
        records[5].message_id = Err("not a queued message".into());
        records[8].message_id = Ok("m-unknown".into());

        let failed = d.deliver_batch(&records, None).await;

        assert_eq!(
            sorted(failed),
            vec!["q-2".to_owned(), "q-5".to_owned(), "q-8".to_owned()]
        );
        assert_eq!(d.provider.calls(), 7, "the seven good records are sent");
    }

    #[tokio::test]
    async fn empty_batch_reports_nothing() {
        let d = deliverer(FakeStore::new(), FakeProvider::accepting("SM123"));
        assert!(d.deliver_batch(&[], None).await.is_empty());
    }

    #[tokio::test]
    async fn a_paused_provider_is_not_called_and_its_records_wait_unclaimed() {
        let d = deliverer(claimed_store(1), retryable("503 from provider", None))
            .with_breaker(2, Duration::from_secs(30));
        let capture = Capture::start();
        let routed = |n| DeliveryRecord {
            routing: Routing {
                provider: Some(crate::domain::ProviderKind::Twilio),
                accepted_at: Some(OffsetDateTime::now_utc()),
            },
            ..single_record(n)
        };
        d.deliver(&routed(1)).await;
        d.deliver(&routed(1)).await;
        assert_eq!(d.provider.calls(), 2);
        assert_eq!(
            capture.with_metric("CircuitOpened").len(),
            1,
            "{:?}",
            capture.names()
        );

        let outcome = d.deliver(&routed(1)).await;

        assert_eq!(outcome, RecordOutcome::Retry);
        assert_eq!(d.provider.calls(), 2, "no call while the circuit is open");
        assert_eq!(
            d.store.claimed().len(),
            2,
            "not claimed: no attempt counted"
        );
        let (_, wait) = d.queue.postponed().last().cloned().unwrap();
        assert!(
            (Duration::from_secs(29)..=Duration::from_secs(31)).contains(&wait),
            "waits out the cool-down: {wait:?}"
        );
        // A message past its age is let through to end.
        let mut old = routed(1);
        old.routing.accepted_at = Some(OffsetDateTime::now_utc() - Duration::from_secs(7200));
        d.deliver(&old).await;
        assert_eq!(d.provider.calls(), 3);
    }

    #[tokio::test]
    async fn near_the_deadline_no_provider_call_is_started() {
        let d = deliverer(claimed_store(1), FakeProvider::accepting("SM123"))
            .with_provider_timeout(Duration::from_secs(5));
        // Less than the provider timeout is left before the deadline's margin.
        let deadline = Instant::now() + DEADLINE_MARGIN + Duration::from_secs(4);

        let failed = d.deliver_batch(&[single_record(1)], Some(deadline)).await;

        assert_eq!(failed, vec!["q-1".to_owned()]);
        assert_eq!(d.provider.calls(), 0);
        assert!(d.store.claimed().is_empty(), "the message is untouched");
        assert_eq!(
            d.queue.postponed(),
            vec![(RECEIPT.to_owned(), policy().base)]
        );
    }

    #[tokio::test]
    async fn a_provider_call_in_flight_is_never_cut_off() {
        let d = deliverer(
            claimed_store(1),
            FakeProvider::accepting("SM123").sleeping(Duration::from_millis(800)),
        )
        .with_provider_timeout(Duration::from_secs(1));
        // The call may start (a little over its timeout is left), and outlasts
        // what would be left if the margin were the only rule.
        let deadline = Instant::now() + DEADLINE_MARGIN + Duration::from_millis(1100);

        let failed = d.deliver_batch(&[single_record(1)], Some(deadline)).await;

        assert!(failed.is_empty(), "{failed:?}");
        assert_eq!(d.provider.calls(), 1);
        assert!(
            matches!(&d.store.completed()[0].2, Completion::Sent { .. }),
            "the send finished and was recorded"
        );
    }

    #[tokio::test]
    async fn batch_finishing_before_the_deadline_reports_nothing() {
        let d = deliverer(
            claimed_store(1),
            FakeProvider::accepting("SM123").sleeping(Duration::from_millis(20)),
        )
        .with_provider_timeout(Duration::from_secs(1));
        let deadline = Instant::now() + DEADLINE_MARGIN + Duration::from_secs(5);

        let failed = d.deliver_batch(&[single_record(1)], Some(deadline)).await;

        assert!(failed.is_empty(), "{failed:?}");
        assert_eq!(d.store.completed().len(), 1);
    }

    // ---- metrics -------------------------------------------------------------

    #[tokio::test]
    async fn a_sent_message_counts_latency_delivery_and_age() {
        let d = deliverer(claimed_store(1), FakeProvider::accepting("SM123"));
        let capture = Capture::start();

        d.deliver(&single_record(1)).await;

        assert_eq!(
            capture.names(),
            [
                "ProviderLatency",
                "MessagesDelivered",
                "MessageAgeAtDelivery"
            ]
        );
        let latency = &capture.with_metric("ProviderLatency")[0];
        assert_eq!(latency["Provider"], "twilio");
        assert_eq!(
            dimension_sets(latency),
            json!([["Service"], ["Service", "Provider"]])
        );
        assert!(latency["ProviderLatency"].as_f64().unwrap() >= 0.0);
        let delivered = &capture.with_metric("MessagesDelivered")[0];
        assert_eq!(delivered["MessagesDelivered"], 1);
        assert_eq!(delivered["Channel"], "sms");
        assert_eq!(
            dimension_sets(delivered),
            json!([["Service"], ["Service", "Channel"]])
        );
        let age = &capture.with_metric("MessageAgeAtDelivery")[0];
        assert_eq!(dimension_sets(age), json!([["Service"]]));
        let age_ms = age["MessageAgeAtDelivery"].as_f64().unwrap();
        assert!(
            (0.0..60_000.0).contains(&age_ms),
            "claimed_message was created just now: {age_ms} ms"
        );
    }

    #[tokio::test]
    async fn email_latency_is_sendgrids() {
        let mut message = claimed_message(MSG_ID, 1);
        message.channel = Channel::Email;
        let d = deliverer(
            FakeStore::new().with_claim(MSG_ID, Claim::Claimed(message)),
            FakeProvider::accepting("sg-1"),
        );
        let capture = Capture::start();

        d.deliver(&single_record(1)).await;

        assert_eq!(
            capture.with_metric("ProviderLatency")[0]["Provider"],
            "sendgrid"
        );
        assert_eq!(
            capture.with_metric("MessagesDelivered")[0]["Channel"],
            "email"
        );
    }

    #[tokio::test]
    async fn a_throttled_send_counts_a_retry_for_throttling() {
        let d = deliverer(
            claimed_store(1),
            retryable_as(
                RetryReason::Throttled,
                "twilio answered 429: slow down",
                None,
            ),
        );
        let capture = Capture::start();

        assert_eq!(d.deliver(&single_record(1)).await, RecordOutcome::Retry);

        assert_eq!(capture.names(), ["ProviderLatency", "DeliveryRetried"]);
        let retried = &capture.with_metric("DeliveryRetried")[0];
        assert_eq!(retried["DeliveryRetried"], 1);
        assert_eq!(retried["Reason"], "throttled");
        assert_eq!(
            dimension_sets(retried),
            json!([["Service"], ["Service", "Reason"]])
        );
    }

    #[tokio::test]
    async fn every_retry_reason_is_its_own_dimension_value() {
        for (kind, expected) in [
            (RetryReason::Throttled, "throttled"),
            (RetryReason::ServerError, "server_error"),
            (RetryReason::Timeout, "timeout"),
            (RetryReason::Connection, "connection"),
            (RetryReason::Credentials, "credentials"),
        ] {
            let d = deliverer(claimed_store(1), retryable_as(kind, "x", None));
            let capture = Capture::start();
            d.deliver(&single_record(1)).await;
            let retried = capture.with_metric("DeliveryRetried");
            assert_eq!(retried.len(), 1, "{kind:?}");
            assert_eq!(retried[0]["Reason"], expected);
        }
    }

    #[tokio::test]
    async fn refused_credentials_are_retried_and_counted_not_failed() {
        let d = deliverer(
            claimed_store(1),
            retryable_as(
                RetryReason::Credentials,
                "Twilio answered 401: Authenticate",
                None,
            ),
        );
        let capture = Capture::start();
        d.deliver(&single_record(1)).await;
        assert!(
            matches!(&d.store.completed()[0].2, Completion::Retry { .. }),
            "{:?}",
            d.store.completed()
        );
        let failed = capture.with_metric("ProviderAuthFailed");
        assert_eq!(failed.len(), 1, "{:?}", capture.names());
        assert_eq!(failed[0]["Provider"], "twilio");
        assert!(capture.with_metric("MessagesFailed").is_empty());
    }

    #[tokio::test]
    async fn a_rejected_message_counts_as_failed() {
        let d = deliverer(
            claimed_store(1),
            FakeProvider::answering(Err(ProviderError::Rejected {
                reason: "invalid number".into(),
            })),
        );
        let capture = Capture::start();

        d.deliver(&single_record(1)).await;

        assert_eq!(capture.names(), ["ProviderLatency", "MessagesFailed"]);
        let failed = &capture.with_metric("MessagesFailed")[0];
        assert_eq!(failed["MessagesFailed"], 1);
        assert_eq!(failed["Channel"], "sms");
        assert_eq!(
            dimension_sets(failed),
            json!([["Service"], ["Service", "Channel"]])
        );
    }

    #[tokio::test]
    async fn exhausted_retries_count_as_failed_not_retried() {
        let d = deliverer(
            aged_store(5, Duration::from_secs(3600)),
            retryable("503 from provider", None),
        );
        let capture = Capture::start();

        d.deliver(&single_record(1)).await;

        assert_eq!(capture.names(), ["ProviderLatency", "MessagesFailed"]);
    }

    #[tokio::test]
    async fn no_provider_call_no_metrics() {
        let store = FakeStore::new().with_claim(MSG_ID, Claim::Settled(settled_message(MSG_ID)));
        let d = deliverer(store, FakeProvider::accepting("SM-new"));
        let capture = Capture::start();

        d.deliver(&single_record(2)).await;

        assert!(capture.names().is_empty(), "{:?}", capture.names());
    }

    #[tokio::test]
    async fn an_invocation_counts_its_batch_and_failures() {
        use aws_lambda_events::event::sqs::SqsEvent;
        use lambda_runtime::{Context, LambdaEvent};

        let d = deliverer(claimed_store(1), FakeProvider::accepting("SM123"));
        let event: SqsEvent = serde_json::from_value(json!({"Records": [
            {"messageId": "q-1", "receiptHandle": RECEIPT, "body": format!("{{\"id\":\"{MSG_ID}\"}}"),
             "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {}},
            {"messageId": "q-bad", "receiptHandle": "r-bad", "body": "garbage",
             "attributes": {}, "messageAttributes": {}}
        ]}))
        .unwrap();
        let capture = Capture::start();

        let response =
            crate::sqs_trigger::handle_event(&d, LambdaEvent::new(event, Context::default())).await;

        assert_eq!(response.batch_item_failures.len(), 1);
        let batch = capture.with_metric("BatchSize");
        assert_eq!(batch.len(), 1, "one line per invocation");
        assert_eq!(batch[0]["BatchSize"], 2);
        assert_eq!(batch[0]["BatchFailures"], 1);
        assert_eq!(dimension_sets(&batch[0]), json!([["Service"]]));
    }
}
