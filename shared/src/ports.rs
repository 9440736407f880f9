//! The traits the application needs from the outside world. Adapters in
//! [`crate::adapters`] implement them; tests may substitute their own.

use std::future::Future;
use std::time::Duration;

use time::OffsetDateTime;

use crate::domain::{
    Conversation, InboundSource, Message, ProviderKind, Suppression, SuppressionChannel, Transition,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store answered, but the write's condition did not hold.
    #[error("conditional write rejected: {0}")]
    Conflict(String),
    /// An item could not be read back as a message.
    #[error("stored item is malformed: {0}")]
    Corrupt(String),
    /// The store could not be reached or failed.
    #[error("message store unavailable: {0}")]
    Unavailable(String),
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("delivery queue unavailable: {0}")]
    Unavailable(String),
}

/// Result of storing an inbound message.
#[derive(Debug, Clone, PartialEq)]
pub enum InboundInsert {
    Created(Message),
    /// A message with the same `messaging_provider_id` exists: here it is, unchanged.
    Duplicate(Message),
}

/// What an idempotent outbound accept remembers under its key.
#[derive(Debug, Clone, PartialEq)]
pub struct IdempotencyRecord {
    pub key: String,
    /// Fingerprint of the request body the key was first used with.
    pub fingerprint: String,
    pub message_id: String,
    /// The first response body, replayed verbatim to repeats.
    pub response: String,
    pub expires_at: OffsetDateTime,
    /// Whether the first request finished (its message queued). Until then a
    /// repeat waits; if it ends without queueing, the record is removed.
    pub completed: bool,
}

/// Result of storing an outbound message.
#[derive(Debug, Clone, PartialEq)]
pub enum OutboundInsert {
    Created,
    /// The idempotency key is taken (and not expired): here is what it holds.
    KeyUsed(IdempotencyRecord),
}

/// A time-bound right to deliver one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub id: String,
    pub expires_at: OffsetDateTime,
}

/// Result of trying to claim a message for delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The caller now holds the lease; `message.attempts` counts this attempt.
    Claimed(Message),
    /// Another delivery holds a live lease until the given time.
    Busy {
        until: OffsetDateTime,
    },
    /// The message is `sent` or `failed`: nothing to do.
    Settled(Message),
    NotFound,
}

/// How a delivery attempt ended, recorded under the lease that made it.
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    Sent {
        /// Who accepted it: the provider id is unique only within its provider.
        provider: ProviderKind,
        provider_message_id: Option<String>,
    },
    Failed {
        reason: String,
    },
    Retry {
        reason: String,
        next_attempt_at: OffsetDateTime,
    },
}

/// Accepting and reading messages: what the API and the inbound webhooks need.
/// Delivery has its own port, [`DeliveryStore`].
pub trait MessageStore: Send + Sync {
    /// Stores a new outbound message, and its idempotency record in the same
    /// write unless that key is already taken. `Conflict` if the id exists.
    fn insert_outbound(
        &self,
        message: &Message,
        idempotency: Option<&IdempotencyRecord>,
    ) -> impl Future<Output = Result<OutboundInsert, StoreError>> + Send;

    /// Stores a new inbound message unless one with the same
    /// `messaging_provider_id` from the same source exists.
    fn insert_inbound(
        &self,
        source: InboundSource,
        message: &Message,
    ) -> impl Future<Output = Result<InboundInsert, StoreError>> + Send;

    fn get(&self, id: &str) -> impl Future<Output = Result<Option<Message>, StoreError>> + Send;

    /// Marks an idempotency record completed: its message is queued, and
    /// repeats get the first answer.
    fn complete_idempotency(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The idempotency record under `key`, if there is one (and it has not expired).
    fn idempotency_record(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<IdempotencyRecord>, StoreError>> + Send;

    /// Removes an outbound message that is still `queued`, with its idempotency
    /// record if it has one (undoing an accept whose enqueue failed).
    fn remove_queued(
        &self,
        id: &str,
        idempotency_key: Option<&str>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Delivering messages: the lease a delivery attempt holds and the outcome it
/// records under it. Stores make each status move as its [`Transition`] allows.
pub trait DeliveryStore: Send + Sync {
    /// Takes the delivery lease of a `queued` message, or of a `sending` one whose
    /// lease expired before `now` ([`Transition::Claim`]).
    fn claim(
        &self,
        id: &str,
        lease: &Lease,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send;

    /// Records the outcome of an attempt ([`Transition::MarkSent`],
    /// [`Transition::MarkFailed`] or [`Transition::Requeue`]); `Conflict` if the
    /// lease was lost.
    fn complete(
        &self,
        id: &str,
        lease_id: &str,
        completion: &Completion,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// What a queue message tells a delivery before it reads the message: which
/// provider it goes to (for the circuit breaker) and when it was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Routing {
    pub provider: Option<ProviderKind>,
    pub accepted_at: Option<OffsetDateTime>,
}

impl Routing {
    pub fn of(message: &Message) -> Self {
        Self {
            provider: Some(message.channel.provider()),
            accepted_at: Some(message.created_at),
        }
    }
}

/// Queueing messages for delivery: the accept paths.
pub trait DeliveryQueue: Send + Sync {
    /// Queues a message id for delivery, visible after `delay` (at most 15 minutes).
    fn enqueue(
        &self,
        message_id: &str,
        delay: Duration,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Queues a message with its [`Routing`] (what [`Self::enqueue`] does where
    /// the queue carries nothing else).
    fn enqueue_message(
        &self,
        message: &Message,
        delay: Duration,
    ) -> impl Future<Output = Result<(), QueueError>> + Send {
        self.enqueue(&message.id, delay)
    }
}

/// A delivery handing a record over to a fresh queue message (on the last
/// receive the queue allows), counting the hand-overs.
pub trait QueueHandOver: Send + Sync {
    fn hand_over(
        &self,
        message_id: &str,
        routing: Routing,
        delay: Duration,
        hop: u32,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// Queue messages already received, by receipt handle: how a delivery schedules
/// its retry.
pub trait QueueVisibility: Send + Sync {
    /// Hides a received queue message for `delay` (how a retry is scheduled).
    fn postpone(
        &self,
        receipt_handle: &str,
        delay: Duration,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// Why a provider did not accept a message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// Worth trying again later: throttled, server error, timeout, connection failure.
    #[error("{reason}")]
    Retryable {
        reason: String,
        /// What kind of failure it was (the `Reason` of the `DeliveryRetried` metric).
        kind: RetryReason,
        retry_after: Option<Duration>,
    },
    /// The provider refused this message; sending it again would fail the same way.
    #[error("{reason}")]
    Rejected { reason: String },
    /// The provider refused because the recipient unsubscribed (Twilio error
    /// 21610): the message fails and the recipient goes on the suppression list.
    #[error("{reason}")]
    Unsubscribed { reason: String },
}

/// Why a retryable provider call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryReason {
    /// 429 Too Many Requests.
    Throttled,
    /// A 5xx answer, or 408 Request Timeout.
    ServerError,
    /// No answer in time.
    Timeout,
    /// The connection failed, or another transport error.
    Connection,
    /// 401 or 403: the provider refused our credentials (rotated, revoked), even
    /// after they were read again. Retried like any outage until the operator
    /// fixes them; nothing fails for it before the message's maximum age.
    Credentials,
}

impl RetryReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Throttled => "throttled",
            Self::ServerError => "server_error",
            Self::Timeout => "timeout",
            Self::Connection => "connection",
            Self::Credentials => "credentials",
        }
    }
}

/// The provider accepted the message.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub provider_message_id: Option<String>,
}

pub trait Provider: Send + Sync {
    fn send(
        &self,
        message: &Message,
    ) -> impl Future<Output = Result<Accepted, ProviderError>> + Send;
}

/// Where a page of a query ended: the sort key and id of its last item. Opaque
/// to callers; the API hands it out only inside a signed cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub sort: String,
    pub id: String,
}

/// One page of a query, and where the next one starts (`None` on the last page).
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Position>,
}

/// Threads of messages, written: summaries kept up to date as messages are
/// stored (the accept paths).
pub trait ConversationLog: Send + Sync {
    /// Counts a newly stored message in its conversation's summary, and makes
    /// it the conversation's last message unless a later one is already there.
    fn record_in_conversation(
        &self,
        message: &Message,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Threads of messages, read: the read paths of the conversation API.
pub trait ConversationReader: Send + Sync {
    fn conversation(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<Conversation>, StoreError>> + Send;

    /// A participant's conversations, latest activity first.
    fn conversations_of(
        &self,
        participant: &str,
        limit: usize,
        after: Option<&Position>,
    ) -> impl Future<Output = Result<Page<Conversation>, StoreError>> + Send;

    /// A conversation's messages in timestamp order (ties by id).
    fn conversation_messages(
        &self,
        conversation_id: &str,
        limit: usize,
        after: Option<&Position>,
    ) -> impl Future<Output = Result<Page<Message>, StoreError>> + Send;
}

/// What a provider report did to the message it is about.
#[derive(Debug, Clone, PartialEq)]
pub enum ReportApplied {
    /// The message moved to the reported status.
    Applied(Message),
    /// The message is already there or further along: nothing changed.
    Ignored(Message),
    NotFound,
}

/// Provider reports (status callbacks, events) applied to stored messages.
pub trait ReportStore: Send + Sync {
    /// The message a provider knows by `provider_message_id`.
    fn find_by_provider_id(
        &self,
        provider: ProviderKind,
        provider_message_id: &str,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    /// Moves a message along `transition` if its status allows it (forward only).
    fn apply_report(
        &self,
        message_id: &str,
        transition: Transition,
        detail: Option<&str>,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<ReportApplied, StoreError>> + Send;

    /// Whether a provider event with this id was recorded by [`Self::remember_event`].
    fn event_seen(
        &self,
        provider: ProviderKind,
        event_id: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records a provider event id as handled (kept for a few days).
    fn remember_event(
        &self,
        provider: ProviderKind,
        event_id: &str,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// API keys, found by the hash of the key (the key itself is never stored).
pub trait ApiKeyStore: Send + Sync {
    fn api_key(
        &self,
        hash: &str,
    ) -> impl Future<Output = Result<Option<crate::domain::access::ApiKey>, StoreError>> + Send;

    /// Records a use: sets `last_used_at` unless it is less than a minute old.
    fn touch_api_key(
        &self,
        hash: &str,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Creating, listing and revoking keys (operators' tooling).
pub trait ApiKeyAdmin: ApiKeyStore {
    /// Stores a key under its hash; `false` if that key exists already.
    fn create_api_key(
        &self,
        hash: &str,
        key: &crate::domain::access::ApiKey,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Every key, oldest first.
    fn api_keys(
        &self,
    ) -> impl Future<Output = Result<Vec<(String, crate::domain::access::ApiKey)>, StoreError>> + Send;

    /// Marks a key revoked; `false` if there is no such key.
    fn revoke_api_key(
        &self,
        hash: &str,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// Which of an address's suppressions to lift.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lift {
    /// All of them.
    All,
    /// The one for this sender (`None`: the entry for every sender).
    Sender(Option<String>),
}

/// Whether [`SuppressionList::suppress`] added an entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Suppressed {
    /// New; here it is.
    Added(Suppression),
    /// An entry for the same address and sender was there already; here it is, unchanged.
    Existing(Suppression),
}

impl Suppressed {
    pub fn entry(&self) -> &Suppression {
        match self {
            Self::Added(s) | Self::Existing(s) => s,
        }
    }
}

/// The suppression list: one record per channel and address holds all of that
/// address's entries, so the send path reads it with one key lookup.
pub trait SuppressionList: Send + Sync {
    /// The entries of one address (already normalized) on one channel.
    fn suppressions_of(
        &self,
        channel: SuppressionChannel,
        address: &str,
    ) -> impl Future<Output = Result<Vec<Suppression>, StoreError>> + Send;

    /// Adds an entry unless one for the same channel, address and sender exists.
    fn suppress(
        &self,
        entry: &Suppression,
    ) -> impl Future<Output = Result<Suppressed, StoreError>> + Send;

    /// Removes entries of one address; returns those removed (empty: none were there).
    fn lift(
        &self,
        channel: SuppressionChannel,
        address: &str,
        which: &Lift,
    ) -> impl Future<Output = Result<Vec<Suppression>, StoreError>> + Send;

    /// The whole list, one channel or both (email first), by address then sender.
    fn suppression_page(
        &self,
        channel: Option<SuppressionChannel>,
        limit: usize,
        after: Option<&Position>,
    ) -> impl Future<Output = Result<Page<Suppression>, StoreError>> + Send;
}
