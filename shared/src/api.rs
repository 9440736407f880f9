//! The message use cases: accept outbound, record inbound, read back. Each is a
//! plain async function over the ports returning a domain error; the HTTP edge
//! (`crate::http`) maps those to answers.

use serde_json::{Map, Value};
use time::OffsetDateTime;
use tracing::{error, info};

use crate::compliance::{self, KeywordReplies};
use crate::domain::OptOutScope;
use crate::domain::access::Senders;
use crate::domain::idempotency::{self, IdempotencyKey, fingerprint};
use crate::domain::{
    Direction, FieldError, InboundSource, Message, validate_inbound, validate_outbound,
};
use crate::metrics::{self, Metric, dimension, name};
use crate::ports::{
    ConversationLog, DeliveryQueue, IdempotencyRecord, InboundInsert, MessageStore, OutboundInsert,
    QueueError, StoreError, SuppressionList,
};
use crate::views::MessageView;

/// Why a message was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The payload failed validation: one entry per offending field.
    #[error("the message is invalid")]
    Invalid(Vec<FieldError>),
    /// The idempotency key was first used with a different request body.
    #[error("this Idempotency-Key was already used with a different request body")]
    IdempotencyKeyReused,
    /// A request with this idempotency key is still being accepted.
    #[error("a request with this Idempotency-Key is still in progress; retry it shortly")]
    IdempotencyKeyInProgress,
    /// The store or the queue failed; nothing was accepted.
    #[error("{0}")]
    Unavailable(String),
}

impl From<StoreError> for AcceptError {
    fn from(e: StoreError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

impl From<QueueError> for AcceptError {
    fn from(e: QueueError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

/// What a read looked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Message,
    Conversation,
}

impl Resource {
    /// The request field that named it.
    pub const fn field(self) -> &'static str {
        "id"
    }

    const fn as_str(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::Conversation => "conversation",
        }
    }
}

/// Why a read found nothing to answer.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("no {} with id {id:?}", what.as_str())]
    NotFound { what: Resource, id: String },
    /// A query parameter (limit, cursor, participant) is out of range or garbled.
    #[error("{}: {}", .0.field, .0.message)]
    BadQuery(FieldError),
    #[error("{0}")]
    Unavailable(String),
}

impl ReadError {
    pub(crate) fn bad_query(field: &str, message: impl Into<String>) -> Self {
        Self::BadQuery(FieldError::new(field, message))
    }
}

impl From<StoreError> for ReadError {
    fn from(e: StoreError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

/// The answer to an accepted outbound request.
#[derive(Debug, Clone, PartialEq)]
pub enum OutboundAccepted {
    /// Stored and queued now.
    Queued(Box<Message>),
    /// A repeat of an earlier request with the same idempotency key and body: the
    /// first answer's body, nothing new stored or queued.
    Replayed {
        message_id: String,
        response: String,
    },
}

/// Who may send, and to whom: what an outbound message is checked against
/// besides its fields.
#[derive(Debug, Clone, Default)]
pub struct SendRules {
    /// `ALLOWED_SENDERS`: the `from` values of this service.
    pub senders: Senders,
    /// `OPT_OUT_SCOPE`: whether a STOP silences one of our numbers or all.
    pub opt_out_scope: OptOutScope,
}

impl From<Senders> for SendRules {
    fn from(senders: Senders) -> Self {
        Self {
            senders,
            ..Self::default()
        }
    }
}

/// Validates (including that `from` is one of our senders and that the
/// recipient has not opted out), stores (`queued`) and enqueues an outbound
/// message. If the enqueue fails the stored message is removed again and the
/// caller gets 503: a message is never acknowledged unless it is on its way.
/// With an idempotency key, a repeat of the same body gets the first answer and
/// a different body a 409.
pub async fn accept_outbound(
    store: &(impl MessageStore + ConversationLog + SuppressionList),
    queue: &impl DeliveryQueue,
    rules: &SendRules,
    payload: &Map<String, Value>,
    key: Option<&IdempotencyKey>,
) -> Result<OutboundAccepted, AcceptError> {
    let new = validate_outbound(payload).map_err(rejected)?;
    if !rules.senders.allows(&new.from) {
        return Err(rejected(vec![FieldError::new(
            "from",
            "is not one of this service's senders (ALLOWED_SENDERS)",
        )]));
    }
    if let Some(entry) = compliance::blocking_suppression(
        store,
        rules.opt_out_scope,
        new.channel,
        &new.from,
        &new.to,
    )
    .await?
    {
        info!(reason = %entry.reason, source = entry.source.as_str(), "recipient has opted out; not accepted");
        metrics::emit(&[Metric::count(name::SUPPRESSED, 1)], &[]);
        return Err(AcceptError::Invalid(vec![FieldError::new(
            "to",
            "the recipient has opted out",
        )]));
    }
    let now = OffsetDateTime::now_utc();
    let message = Message::accept(new, Direction::Outbound, now);
    let record = key.map(|key| IdempotencyRecord {
        key: key.as_str().to_owned(),
        fingerprint: fingerprint(payload),
        message_id: message.id.clone(),
        response: serde_json::to_string(&MessageView::from(&message)).unwrap_or_default(),
        expires_at: now + idempotency::RETENTION,
        completed: false,
    });
    queue_outbound(store, queue, message, record).await
}

/// How long a repeat waits for the first request with its idempotency key to
/// finish, and how often it looks.
const IN_PROGRESS_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
const IN_PROGRESS_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Stores a new outbound message (with its idempotency record, if any) and
/// queues it; undoes the store if the queue refuses it.
///
/// The idempotency record is written `in progress` with the message and
/// marked completed once the message is queued. A repeat never replays an
/// answer the first request did not give: it waits (up to
/// [`IN_PROGRESS_WAIT`]) for the first to finish and then replays its answer;
/// if the first ended without queueing (its record removed), the repeat is a
/// new request; still in progress after the wait, it gets a 409.
pub(crate) async fn queue_outbound(
    store: &(impl MessageStore + ConversationLog),
    queue: &impl DeliveryQueue,
    message: Message,
    record: Option<IdempotencyRecord>,
) -> Result<OutboundAccepted, AcceptError> {
    let mut waited = std::time::Duration::ZERO;
    while let OutboundInsert::KeyUsed(mut first) =
        store.insert_outbound(&message, record.as_ref()).await?
    {
        let Some(mine) = &record else {
            return Err(AcceptError::IdempotencyKeyReused);
        };
        if mine.fingerprint != first.fingerprint {
            return Err(AcceptError::IdempotencyKeyReused);
        }
        while !first.completed && waited < IN_PROGRESS_WAIT {
            tokio::time::sleep(IN_PROGRESS_POLL).await;
            waited += IN_PROGRESS_POLL;
            match store.idempotency_record(&mine.key).await? {
                Some(now) => first = now,
                // The first request ended without queueing: this one is new.
                None => break,
            }
        }
        if first.completed {
            info!(message_id = %first.message_id, "idempotent repeat; replaying the first answer");
            return Ok(OutboundAccepted::Replayed {
                message_id: first.message_id,
                response: first.response,
            });
        }
        if waited >= IN_PROGRESS_WAIT {
            return Err(AcceptError::IdempotencyKeyInProgress);
        }
    }
    if let Err(enqueue_error) = queue
        .enqueue_message(&message, std::time::Duration::ZERO)
        .await
    {
        error!(message_id = %message.id, error = %enqueue_error, "enqueue failed; removing the message");
        let key = record.as_ref().map(|r| r.key.as_str());
        if let Err(undo_error) = store.remove_queued(&message.id, key).await {
            error!(message_id = %message.id, error = %undo_error, "could not remove a message that was never queued");
        }
        return Err(enqueue_error.into());
    }
    if let Some(record) = &record
        && let Err(e) = store.complete_idempotency(&record.key).await
    {
        // The message is queued; repeats wait, then get a 409, until the key expires.
        error!(message_id = %message.id, error = %e, "idempotency record not marked completed");
    }
    record_in_conversation(store, &message).await;
    info!(
        message_id = %message.id,
        conversation_id = %message.conversation_id,
        channel = message.channel.as_str(),
        body_chars = message.body.chars().count(),
        "outbound message queued"
    );
    metrics::emit(
        &[Metric::count(name::MESSAGES_ACCEPTED, 1)],
        &[(dimension::CHANNEL, message.channel.as_str())],
    );
    Ok(OutboundAccepted::Queued(Box::new(message)))
}

/// Validates and stores an inbound message, once per `messaging_provider_id`,
/// and answers it if it is a keyword (STOP, START, HELP).
pub async fn accept_inbound<S, Q>(
    store: &S,
    keywords: &KeywordReplies<Q>,
    payload: &Map<String, Value>,
) -> Result<InboundInsert, AcceptError>
where
    S: MessageStore + ConversationLog + SuppressionList,
    Q: DeliveryQueue,
{
    let new = validate_inbound(payload).map_err(rejected)?;
    let message = Message::accept(new, Direction::Inbound, OffsetDateTime::now_utc());
    store_inbound(store, keywords, InboundSource::Api, message).await
}

/// Stores a validated inbound message (from the API or a provider webhook) once
/// per `messaging_provider_id` and source, counts it in its conversation and honours its
/// keyword. The keyword is handled for a repeat too (idempotently), so a post
/// retried after a failure half-way still gets its opt-out recorded.
pub async fn store_inbound<S, Q>(
    store: &S,
    keywords: &KeywordReplies<Q>,
    source: InboundSource,
    message: Message,
) -> Result<InboundInsert, AcceptError>
where
    S: MessageStore + ConversationLog + SuppressionList,
    Q: DeliveryQueue,
{
    let insert = store.insert_inbound(source, &message).await?;
    if let InboundInsert::Created(m) = &insert {
        record_in_conversation(store, m).await;
    }
    match &insert {
        InboundInsert::Created(m) => info!(
            message_id = %m.id,
            conversation_id = %m.conversation_id,
            body_chars = m.body.chars().count(),
            "inbound message stored"
        ),
        InboundInsert::Duplicate(m) => info!(message_id = %m.id, "inbound message already stored"),
    }
    let (InboundInsert::Created(stored) | InboundInsert::Duplicate(stored)) = &insert;
    compliance::answer_keyword(store, keywords, stored).await?;
    Ok(insert)
}

/// Counts a stored message in its conversation's summary. The message itself is
/// already stored (and listed among the conversation's messages); a failure
/// here leaves only the summary behind, so it is logged and counted, and the
/// request still succeeds.
async fn record_in_conversation(store: &impl ConversationLog, message: &Message) {
    if let Err(e) = store.record_in_conversation(message).await {
        error!(
            message_id = %message.id,
            conversation_id = %message.conversation_id,
            error = %e,
            "conversation summary not updated"
        );
        metrics::emit(&[Metric::count(name::CONVERSATION_SUMMARY_FAILED, 1)], &[]);
    }
}

/// The 422 for a payload that failed validation, counted.
fn rejected(errors: Vec<FieldError>) -> AcceptError {
    metrics::emit(&[Metric::count(name::VALIDATION_REJECTED, 1)], &[]);
    AcceptError::Invalid(errors)
}

/// Reads one message by id.
pub async fn find_message(store: &impl MessageStore, id: &str) -> Result<Message, ReadError> {
    let not_found = || ReadError::NotFound {
        what: Resource::Message,
        id: id.to_owned(),
    };
    if uuid::Uuid::parse_str(id).is_err() {
        return Err(not_found());
    }
    store.get(id).await?.ok_or_else(not_found)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::compliance::testing::{MemorySuppressions, delegate_suppressions};
    use crate::domain::{Keyword, OptOutPolicy};
    use crate::metrics::testing::{Capture, dimension_sets};
    use crate::ports::{QueueError, StoreError};

    /// Messages, idempotency records and suppressions in memory.
    #[derive(Default)]
    struct MemoryStore {
        messages: Mutex<HashMap<String, Message>>,
        keys: Mutex<HashMap<String, IdempotencyRecord>>,
        /// Inbound guards: (source, messaging_provider_id) -> message id.
        inbound_guards: Mutex<HashMap<(InboundSource, String), String>>,
        /// Ids of the messages counted in their conversation, in order.
        in_conversations: Mutex<Vec<String>>,
        suppressions: MemorySuppressions,
    }

    delegate_suppressions!(MemoryStore, suppressions);

    impl ConversationLog for MemoryStore {
        async fn record_in_conversation(&self, message: &Message) -> Result<(), StoreError> {
            self.in_conversations
                .lock()
                .unwrap()
                .push(message.id.clone());
            Ok(())
        }
    }

    impl MessageStore for MemoryStore {
        async fn insert_outbound(
            &self,
            message: &Message,
            idempotency: Option<&IdempotencyRecord>,
        ) -> Result<OutboundInsert, StoreError> {
            if let Some(record) = idempotency {
                let mut keys = self.keys.lock().unwrap();
                if let Some(first) = keys.get(&record.key) {
                    return Ok(OutboundInsert::KeyUsed(first.clone()));
                }
                keys.insert(record.key.clone(), record.clone());
            }
            self.messages
                .lock()
                .unwrap()
                .insert(message.id.clone(), message.clone());
            Ok(OutboundInsert::Created)
        }

        async fn insert_inbound(
            &self,
            source: InboundSource,
            message: &Message,
        ) -> Result<InboundInsert, StoreError> {
            let mut messages = self.messages.lock().unwrap();
            let guard = (
                source,
                message.messaging_provider_id.clone().unwrap_or_default(),
            );
            let mut guards = self.inbound_guards.lock().unwrap();
            if let Some(first) = guards.get(&guard) {
                return Ok(InboundInsert::Duplicate(messages[first].clone()));
            }
            guards.insert(guard, message.id.clone());
            messages.insert(message.id.clone(), message.clone());
            Ok(InboundInsert::Created(message.clone()))
        }

        async fn get(&self, id: &str) -> Result<Option<Message>, StoreError> {
            Ok(self.messages.lock().unwrap().get(id).cloned())
        }

        async fn complete_idempotency(&self, key: &str) -> Result<(), StoreError> {
            if let Some(record) = self.keys.lock().unwrap().get_mut(key) {
                record.completed = true;
            }
            Ok(())
        }

        async fn idempotency_record(
            &self,
            key: &str,
        ) -> Result<Option<IdempotencyRecord>, StoreError> {
            Ok(self.keys.lock().unwrap().get(key).cloned())
        }

        async fn remove_queued(
            &self,
            id: &str,
            idempotency_key: Option<&str>,
        ) -> Result<(), StoreError> {
            self.messages.lock().unwrap().remove(id);
            if let Some(key) = idempotency_key {
                self.keys.lock().unwrap().remove(key);
            }
            Ok(())
        }
    }

    /// A queue that records what is enqueued, or refuses everything.
    #[derive(Default)]
    struct MemoryQueue {
        down: bool,
        enqueued: Mutex<Vec<String>>,
    }

    impl DeliveryQueue for MemoryQueue {
        async fn enqueue(&self, message_id: &str, _delay: Duration) -> Result<(), QueueError> {
            if self.down {
                return Err(QueueError::Unavailable("queue down".into()));
            }
            self.enqueued.lock().unwrap().push(message_id.to_owned());
            Ok(())
        }
    }

    fn payload(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    fn sms() -> Map<String, Value> {
        payload(
            json!({"from": "+18045551234", "to": "+12016661234", "type": "sms",
                       "body": "hi", "attachments": null}),
        )
    }

    #[tokio::test]
    async fn queued_outbound_counts_as_accepted_per_channel() {
        let (store, queue) = (MemoryStore::default(), MemoryQueue::default());
        let capture = Capture::start();

        let accepted = accept_outbound(&store, &queue, &SendRules::default(), &sms(), None)
            .await
            .unwrap();

        let OutboundAccepted::Queued(message) = accepted else {
            panic!("not queued: {accepted:?}");
        };
        assert_eq!(queue.enqueued.lock().unwrap().len(), 1);
        assert_eq!(
            *store.in_conversations.lock().unwrap(),
            std::slice::from_ref(&message.id)
        );
        let docs = capture.documents();
        assert_eq!(docs.len(), 1, "{docs:?}");
        assert_eq!(docs[0]["MessagesAccepted"], 1);
        assert_eq!(docs[0]["Channel"], "sms");
        assert_eq!(docs[0]["Service"], "messaging");
        assert_eq!(
            dimension_sets(&docs[0]),
            json!([["Service"], ["Service", "Channel"]])
        );
    }

    #[tokio::test]
    async fn email_is_counted_under_its_channel() {
        let (store, queue) = (MemoryStore::default(), MemoryQueue::default());
        let capture = Capture::start();
        let email = payload(
            json!({"from": "user@usehatchapp.com", "to": "contact@example.com",
                                   "type": "email", "body": "Hello", "attachments": []}),
        );

        accept_outbound(&store, &queue, &SendRules::default(), &email, None)
            .await
            .unwrap();

        let docs = capture.with_metric("MessagesAccepted");
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0]["Channel"], "email");
    }

    #[tokio::test]
    async fn idempotent_replays_are_not_counted_again() {
        let (store, queue) = (MemoryStore::default(), MemoryQueue::default());
        let key = IdempotencyKey::parse("order-1").unwrap();
        let capture = Capture::start();

        accept_outbound(&store, &queue, &SendRules::default(), &sms(), Some(&key))
            .await
            .unwrap();
        let replay = accept_outbound(&store, &queue, &SendRules::default(), &sms(), Some(&key))
            .await
            .unwrap();

        assert!(matches!(replay, OutboundAccepted::Replayed { .. }));
        assert_eq!(capture.names(), ["MessagesAccepted"]);
    }

    #[tokio::test]
    async fn an_outbound_that_could_not_be_queued_is_not_counted() {
        let store = MemoryStore::default();
        let queue = MemoryQueue {
            down: true,
            ..MemoryQueue::default()
        };
        let capture = Capture::start();

        let err = accept_outbound(&store, &queue, &SendRules::default(), &sms(), None)
            .await
            .unwrap_err();

        assert!(matches!(err, AcceptError::Unavailable(_)), "{err:?}");
        assert!(capture.names().is_empty(), "{:?}", capture.names());
    }

    #[tokio::test]
    async fn invalid_outbound_counts_as_validation_rejected() {
        let (store, queue) = (MemoryStore::default(), MemoryQueue::default());
        let capture = Capture::start();
        let mut bad = sms();
        bad.insert("type".into(), json!("fax"));

        let err = accept_outbound(&store, &queue, &SendRules::default(), &bad, None)
            .await
            .unwrap_err();

        assert!(matches!(err, AcceptError::Invalid(_)), "{err:?}");
        let docs = capture.documents();
        assert_eq!(docs.len(), 1, "{docs:?}");
        assert_eq!(docs[0]["ValidationRejected"], 1);
        assert_eq!(dimension_sets(&docs[0]), json!([["Service"]]));
        assert!(queue.enqueued.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_sender_outside_allowed_senders_is_refused_and_nothing_is_stored() {
        let (store, queue) = (MemoryStore::default(), MemoryQueue::default());
        let senders = Senders::parse("+18045550000,@usehatchapp.com").unwrap();

        let err = accept_outbound(&store, &queue, &senders.clone().into(), &sms(), None)
            .await
            .unwrap_err();

        let AcceptError::Invalid(fields) = err else {
            panic!("not a validation error: {err:?}");
        };
        assert_eq!(fields[0].field, "from");
        assert!(store.messages.lock().unwrap().is_empty());
        assert!(queue.enqueued.lock().unwrap().is_empty());
        let mut allowed = sms();
        allowed.insert("from".into(), json!("+18045550000"));
        accept_outbound(&store, &queue, &senders.into(), &allowed, None)
            .await
            .expect("an allowed sender is accepted");
    }

    #[tokio::test]
    async fn invalid_inbound_counts_as_validation_rejected() {
        let store = MemoryStore::default();
        let capture = Capture::start();

        let err = accept_inbound(&store, &replies(), &sms())
            .await
            .unwrap_err();

        assert!(
            matches!(err, AcceptError::Invalid(_)),
            "no messaging_provider_id: {err:?}"
        );
        assert_eq!(capture.names(), ["ValidationRejected"]);
    }

    #[tokio::test]
    async fn stored_inbound_emits_nothing() {
        let store = MemoryStore::default();
        let capture = Capture::start();
        let mut inbound = sms();
        inbound.insert("messaging_provider_id".into(), json!("abc123"));

        let insert = accept_inbound(&store, &replies(), &inbound).await.unwrap();

        assert!(matches!(insert, InboundInsert::Created(_)));
        assert!(capture.names().is_empty());
    }

    fn replies() -> KeywordReplies<MemoryQueue> {
        KeywordReplies {
            queue: MemoryQueue::default(),
            policy: OptOutPolicy::default(),
        }
    }

    /// An inbound SMS to our number `to` from the recipient `from`.
    fn inbound(body: &str, provider_id: &str, to: &str) -> Map<String, Value> {
        payload(
            json!({"from": "+12016661234", "to": to, "type": "sms", "body": body,
                       "attachments": null, "messaging_provider_id": provider_id}),
        )
    }

    /// Our messages queued by a keyword, with their keyword marks.
    fn keyword_replies(store: &MemoryStore) -> Vec<(String, Option<Keyword>)> {
        let messages = store.messages.lock().unwrap();
        let mut replies: Vec<_> = messages
            .values()
            .filter(|m| m.direction == Direction::Outbound)
            .map(|m| (m.to.clone(), m.keyword_reply))
            .collect();
        replies.sort_by_key(|(to, _)| to.clone());
        replies
    }

    #[tokio::test]
    async fn stop_suppresses_its_sender_for_our_number_and_is_confirmed_once() {
        let store = MemoryStore::default();
        let replies = replies();
        let ours = "+18045551234";
        accept_inbound(&store, &replies, &inbound(" Stop ", "SM1", ours))
            .await
            .unwrap();
        // The provider retries the same post, then the recipient says STOP again.
        accept_inbound(&store, &replies, &inbound(" Stop ", "SM1", ours))
            .await
            .unwrap();
        accept_inbound(&store, &replies, &inbound("STOP", "SM2", ours))
            .await
            .unwrap();

        let entries = store.suppressions.entries();
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert_eq!(entries[0].sender.as_deref(), Some(ours));
        assert_eq!(entries[0].reason, "opt-out keyword STOP");
        assert_eq!(
            keyword_replies(&store),
            [("+12016661234".to_owned(), Some(Keyword::OptOut))],
            "exactly one confirmation"
        );
        assert_eq!(replies.queue.enqueued.lock().unwrap().len(), 1);

        // Our number is refused; another of our numbers still sends.
        let mut to_them = sms();
        to_them.insert("to".into(), json!("+12016661234"));
        let err = accept_outbound(
            &store,
            &replies.queue,
            &SendRules::default(),
            &to_them,
            None,
        )
        .await
        .unwrap_err();
        let AcceptError::Invalid(fields) = err else {
            panic!("not a 422: {err:?}");
        };
        assert_eq!(fields[0].field, "to");
        assert_eq!(fields[0].message, "the recipient has opted out");
        to_them.insert("from".into(), json!("+18045550000"));
        accept_outbound(
            &store,
            &replies.queue,
            &SendRules::default(),
            &to_them,
            None,
        )
        .await
        .expect("another of our numbers still sends");
        let everywhere = SendRules {
            opt_out_scope: OptOutScope::All,
            ..SendRules::default()
        };
        assert!(
            accept_outbound(&store, &replies.queue, &everywhere, &to_them, None)
                .await
                .is_err(),
            "OPT_OUT_SCOPE=all: silenced everywhere"
        );
    }

    #[tokio::test]
    async fn start_lifts_the_opt_out_and_help_is_answered() {
        let store = MemoryStore::default();
        let replies = replies();
        let ours = "+18045551234";
        for (body, id) in [
            ("stop", "SM1"),
            ("help", "SM2"),
            ("Start", "SM3"),
            ("help", "SM4"),
            ("stop me", "SM5"),
        ] {
            accept_inbound(&store, &replies, &inbound(body, id, ours))
                .await
                .unwrap();
        }
        assert!(store.suppressions.entries().is_empty(), "START lifted it");
        let kinds: Vec<_> = keyword_replies(&store)
            .into_iter()
            .map(|(_, k)| k)
            .collect();
        assert_eq!(
            kinds.len(),
            2,
            "no OPT_IN_REPLY by default, no answer to HELP while opted out; {kinds:?}"
        );
        assert!(kinds.contains(&Some(Keyword::OptOut)));
        assert!(
            kinds.contains(&Some(Keyword::Help)),
            "HELP after START is answered"
        );
    }
}
