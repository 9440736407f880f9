//! The message store on DynamoDB (single table, partition key `pk`).
//!
//! Items:
//! - `MSG#<id>`: a message (`item::MessageItem`, plus `lease_id`/`lease_expires_at`
//!   while a delivery attempt holds it);
//! - `INBOUND#<source>#<messaging_provider_id>`: uniqueness guard of an inbound
//!   message from that source (`api`, `twilio`, `sendgrid`), written in the same
//!   transaction as the message; expires (TTL `expires_at`) after 7 days;
//! - `IDEMPOTENCY#<key>`: an outbound request's idempotency key with the body's
//!   fingerprint, the message id and the first response; expires (TTL
//!   `expires_at`, epoch seconds) after 24 hours;
//! - `PROVIDER#<provider>#<provider message id>`: the message a provider knows
//!   by that id (Twilio `SM…` sids, SendGrid `X-Message-Id`s), written just
//!   before the `sent` status, so status callbacks find their message; expires
//!   (TTL `expires_at`) after 30 days;
//! - `EVENT#<provider>#<event id>`: a provider event already handled (TTL 7 days);
//! - conversations (see [`conversations`]): `CONV#<id>` and `CONVPART#<id>#<participant>`;
//! - API keys (see [`keys`]): `APIKEY#<SHA-256 of the key>`;
//! - the suppression list (see [`suppressions`]): `SUPPRESSION#<channel>#<address>`.
//!
//! Message items also carry `conversation_sort`, their position in their
//! conversation (GSI `conversation-messages`).

mod condition;
mod conversations;
mod item;
mod keys;
mod reports;
mod suppressions;

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, ReturnValue, TransactWriteItem};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use self::condition::{condition, target};
use self::item::MessageItem;
use crate::domain::conversation::sort_key;
use crate::domain::{InboundSource, Message, ProviderKind, Status, Transition};
use crate::ports::{
    Claim, Completion, DeliveryStore, IdempotencyRecord, InboundInsert, Lease, MessageStore,
    OutboundInsert, StoreError,
};

type Item = HashMap<String, AttributeValue>;

#[derive(Clone, Debug)]
pub struct DynamoDbStore {
    client: Client,
    table: String,
}

impl DynamoDbStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    pub fn message_key(id: &str) -> AttributeValue {
        AttributeValue::S(format!("MSG#{id}"))
    }

    pub fn inbound_guard_key(source: InboundSource, provider_id: &str) -> AttributeValue {
        AttributeValue::S(format!("INBOUND#{}#{provider_id}", source.as_str()))
    }

    /// The item a message is stored as.
    pub fn message_item(message: &Message) -> Result<Item, StoreError> {
        let mut item: Item = serde_dynamo::to_item(MessageItem::from(message))
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        item.insert("pk".into(), Self::message_key(&message.id));
        item.insert(
            "conversation_sort".into(),
            s(sort_key(message.timestamp, &message.id)),
        );
        Ok(item)
    }

    async fn get_item(&self, key: AttributeValue) -> Result<Option<Item>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", key)
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(output.item)
    }

    pub fn provider_key(provider: ProviderKind, provider_message_id: &str) -> AttributeValue {
        AttributeValue::S(format!(
            "PROVIDER#{}#{provider_message_id}",
            provider.as_str()
        ))
    }

    pub fn idempotency_key(key: &str) -> AttributeValue {
        AttributeValue::S(format!("IDEMPOTENCY#{key}"))
    }

    /// Writes `message` and its guard item in one transaction. If the guard's
    /// condition fails, the stored guard is read and handed to `existing`; while a
    /// concurrent writer's transaction is still committing (guard not yet
    /// readable) the write is tried again. `Ok(None)` means the message was created.
    async fn put_guarded<T, F, Fut>(
        &self,
        guard: Put,
        guard_key: AttributeValue,
        message: &Message,
        existing: F,
    ) -> Result<Option<T>, StoreError>
    where
        F: Fn(Item) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(Self::message_item(message)?))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        for attempt in 1..=5u64 {
            let result = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().put(guard.clone()).build())
                .transact_items(TransactWriteItem::builder().put(put.clone()).build())
                .send()
                .await;
            match result.map_err(|e| e.into_service_error()) {
                Ok(_) => return Ok(None),
                Err(e) if e.is_transaction_canceled_exception() => {}
                Err(e) => return Err(unavailable(e)),
            }
            if let Some(item) = self.get_item(guard_key.clone()).await? {
                return existing(item).await.map(Some);
            }
            tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
        }
        Err(StoreError::Conflict(format!(
            "message {} kept conflicting",
            message.id
        )))
    }
}

/// How long an inbound guard turns away a repeat of its message: well past
/// the providers' own retries (SendGrid retries Inbound Parse for 3 days).
pub const INBOUND_GUARD_RETENTION: time::Duration = time::Duration::days(7);

/// How long a provider's message id leads its status reports to the message:
/// past Twilio's 10-hour validity period and SendGrid's 72 hours of retries
/// for deferred mail, with room for late events.
pub const PROVIDER_ID_RETENTION: time::Duration = time::Duration::days(30);

/// An idempotency record's `state`: the first request is still running, or
/// its message is queued. Records written before states existed have none and
/// count as completed.
const IN_PROGRESS: &str = "in_progress";
const COMPLETED: &str = "completed";

fn to_idempotency_record(item: &Item) -> Result<IdempotencyRecord, StoreError> {
    let expires_at = match item.get("expires_at") {
        Some(AttributeValue::N(n)) => n.parse::<i64>().ok(),
        _ => None,
    }
    .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok())
    .ok_or_else(|| StoreError::Corrupt("idempotency record without expires_at".into()))?;
    Ok(IdempotencyRecord {
        key: string_attribute(item, "key")?,
        fingerprint: string_attribute(item, "fingerprint")?,
        message_id: string_attribute(item, "message_id")?,
        response: string_attribute(item, "response")?,
        expires_at,
        completed: !matches!(item.get("state"), Some(AttributeValue::S(state)) if state == IN_PROGRESS),
    })
}

fn string_attribute(item: &Item, name: &str) -> Result<String, StoreError> {
    match item.get(name) {
        Some(AttributeValue::S(s)) => Ok(s.clone()),
        _ => Err(StoreError::Corrupt(format!("item has no string {name}"))),
    }
}

fn unavailable<E: std::error::Error>(e: E) -> StoreError {
    StoreError::Unavailable(DisplayErrorContext(e).to_string())
}

fn to_message(item: Item) -> Result<Message, StoreError> {
    serde_dynamo::from_item::<_, MessageItem>(item)
        .map(Message::from)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn rfc3339(t: OffsetDateTime) -> AttributeValue {
    s(t.format(&Rfc3339).unwrap_or_default())
}

fn epoch(t: OffsetDateTime) -> AttributeValue {
    AttributeValue::N(t.unix_timestamp().to_string())
}

/// A one-entry list to append to the message's `history`.
fn history_entry(at: OffsetDateTime, status: Status, error: Option<&str>) -> AttributeValue {
    let mut entry = HashMap::from([
        ("at".to_owned(), rfc3339(at)),
        ("status".to_owned(), s(status.as_str())),
    ]);
    if let Some(error) = error {
        entry.insert("error".to_owned(), s(error));
    }
    AttributeValue::L(vec![AttributeValue::M(entry)])
}

const APPEND_HISTORY: &str = "history = list_append(if_not_exists(history, :no_history), :history)";

impl MessageStore for DynamoDbStore {
    async fn insert_outbound(
        &self,
        message: &Message,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<OutboundInsert, StoreError> {
        let Some(record) = idempotency else {
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(Self::message_item(message)?))
                .condition_expression("attribute_not_exists(pk)")
                .send()
                .await
                .map_err(|e| match e.into_service_error() {
                    e if e.is_conditional_check_failed_exception() => {
                        StoreError::Conflict(format!("message {} exists", message.id))
                    }
                    e => unavailable(e),
                })?;
            return Ok(OutboundInsert::Created);
        };
        let now = OffsetDateTime::now_utc();
        // An expired key may be reused before DynamoDB's TTL has removed it.
        let guard = Put::builder()
            .table_name(&self.table)
            .item("pk", Self::idempotency_key(&record.key))
            .item("key", s(&record.key))
            .item("fingerprint", s(&record.fingerprint))
            .item("message_id", s(&record.message_id))
            .item("response", s(&record.response))
            .item("expires_at", epoch(record.expires_at))
            .item(
                "state",
                s(if record.completed {
                    COMPLETED
                } else {
                    IN_PROGRESS
                }),
            )
            .condition_expression("attribute_not_exists(pk) OR expires_at < :now")
            .expression_attribute_values(":now", epoch(now))
            .build()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let existing = self
            .put_guarded(
                guard,
                Self::idempotency_key(&record.key),
                message,
                |item| async move { to_idempotency_record(&item) },
            )
            .await?;
        Ok(existing.map_or(OutboundInsert::Created, OutboundInsert::KeyUsed))
    }

    async fn insert_inbound(
        &self,
        source: InboundSource,
        message: &Message,
    ) -> Result<InboundInsert, StoreError> {
        let provider_id = message.messaging_provider_id.as_deref().ok_or_else(|| {
            StoreError::Corrupt("inbound message without messaging_provider_id".into())
        })?;
        let guard = Put::builder()
            .table_name(&self.table)
            .item("pk", Self::inbound_guard_key(source, provider_id))
            .item("message_id", s(&message.id))
            .item(
                "expires_at",
                epoch(message.created_at + INBOUND_GUARD_RETENTION),
            )
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let existing = self
            .put_guarded(
                guard,
                Self::inbound_guard_key(source, provider_id),
                message,
                |guard| async move {
                    let id = string_attribute(&guard, "message_id")?;
                    self.get(&id).await?.ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "inbound guard {provider_id} names missing message {id}"
                        ))
                    })
                },
            )
            .await?;
        Ok(existing.map_or_else(
            || InboundInsert::Created(message.clone()),
            InboundInsert::Duplicate,
        ))
    }

    async fn complete_idempotency(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", Self::idempotency_key(key))
            .update_expression("SET #state = :completed")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":completed", s(COMPLETED))
            .send()
            .await
            .map_err(|e| match e.into_service_error() {
                e if e.is_conditional_check_failed_exception() => {
                    StoreError::Conflict(format!("no idempotency record {key}"))
                }
                e => unavailable(e),
            })?;
        Ok(())
    }

    async fn idempotency_record(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        let Some(item) = self.get_item(Self::idempotency_key(key)).await? else {
            return Ok(None);
        };
        let record = to_idempotency_record(&item)?;
        Ok((record.expires_at > OffsetDateTime::now_utc()).then_some(record))
    }

    async fn get(&self, id: &str) -> Result<Option<Message>, StoreError> {
        self.get_item(Self::message_key(id))
            .await?
            .map(to_message)
            .transpose()
    }

    async fn remove_queued(
        &self,
        id: &str,
        idempotency_key: Option<&str>,
    ) -> Result<(), StoreError> {
        let withdraw = condition(Transition::Withdraw, None, OffsetDateTime::now_utc())?;
        let delete = withdraw
            .on_delete(
                Delete::builder()
                    .table_name(&self.table)
                    .key("pk", Self::message_key(id)),
            )
            .build()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut request = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().delete(delete).build());
        if let Some(key) = idempotency_key {
            let guard = Delete::builder()
                .table_name(&self.table)
                .key("pk", Self::idempotency_key(key))
                .condition_expression("message_id = :id")
                .expression_attribute_values(":id", s(id))
                .build()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            request = request.transact_items(TransactWriteItem::builder().delete(guard).build());
        }
        request
            .send()
            .await
            .map_err(|e| match e.into_service_error() {
                e if e.is_transaction_canceled_exception() => {
                    StoreError::Conflict(format!("message {id} is not queued"))
                }
                e => unavailable(e),
            })?;
        Ok(())
    }
}

impl DeliveryStore for DynamoDbStore {
    async fn claim(
        &self,
        id: &str,
        lease: &Lease,
        now: OffsetDateTime,
    ) -> Result<Claim, StoreError> {
        let to = target(Transition::Claim)?;
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", Self::message_key(id))
            .update_expression(format!(
                "SET #status = :to, lease_id = :lease, lease_expires_at = :expires, \
                 attempts = if_not_exists(attempts, :zero) + :one, updated_at = :now, {APPEND_HISTORY}"
            ))
            .expression_attribute_values(":history", history_entry(now, to, None))
            .expression_attribute_values(":no_history", AttributeValue::L(Vec::new()))
            .expression_attribute_values(":to", s(to.as_str()))
            .expression_attribute_values(":lease", s(&lease.id))
            .expression_attribute_values(":expires", epoch(lease.expires_at))
            .expression_attribute_values(":now", rfc3339(now))
            .expression_attribute_values(":zero", AttributeValue::N("0".into()))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .return_values(ReturnValue::AllNew);
        let result = condition(Transition::Claim, None, now)?
            .on_update(update)
            .send()
            .await;
        match result {
            Ok(output) => {
                let item = output
                    .attributes
                    .ok_or_else(|| StoreError::Corrupt("claim returned no item".into()))?;
                Ok(Claim::Claimed(to_message(item)?))
            }
            Err(e) => match e.into_service_error() {
                e if e.is_conditional_check_failed_exception() => {
                    // Why not? Read the message to tell the caller.
                    let Some(item) = self.get_item(Self::message_key(id)).await? else {
                        return Ok(Claim::NotFound);
                    };
                    let until = match item.get("lease_expires_at") {
                        Some(AttributeValue::N(n)) => n
                            .parse::<i64>()
                            .ok()
                            .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok()),
                        _ => None,
                    };
                    let message = to_message(item)?;
                    if message.status.is_final() {
                        Ok(Claim::Settled(message))
                    } else {
                        Ok(Claim::Busy {
                            until: until.unwrap_or(now),
                        })
                    }
                }
                e => Err(unavailable(e)),
            },
        }
    }

    async fn complete(
        &self,
        id: &str,
        lease_id: &str,
        completion: &Completion,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let (transition, reason, set) = match completion {
            Completion::Sent { .. } => (
                Transition::MarkSent,
                None,
                "provider_message_id = :pid, next_attempt_at = :null",
            ),
            Completion::Failed { reason } => (
                Transition::MarkFailed,
                Some(reason),
                "last_error = :reason, next_attempt_at = :null",
            ),
            Completion::Retry { reason, .. } => (
                Transition::Requeue,
                Some(reason),
                "last_error = :reason, next_attempt_at = :next",
            ),
        };
        let status = target(transition)?;
        let held = condition(transition, Some(lease_id), now)?;
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", Self::message_key(id))
            .update_expression(format!(
                "SET #status = :status, {set}, updated_at = :now, {APPEND_HISTORY} REMOVE lease_id, lease_expires_at"
            ))
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":now", rfc3339(now))
            .expression_attribute_values(":status", s(status.as_str()))
            .expression_attribute_values(":history", history_entry(now, status, reason.map(String::as_str)))
            .expression_attribute_values(":no_history", AttributeValue::L(Vec::new()));
        if let Some(reason) = reason {
            update = update.expression_attribute_values(":reason", s(reason));
        }
        update = match completion {
            Completion::Sent {
                provider,
                provider_message_id,
            } => {
                // The provider's id for the message, so its status callbacks find it.
                // Written first: a callback may come as soon as the provider has
                // answered, and it must find the message (still `sending`; reports move
                // it on from there too). The mapping holds whatever happens to the
                // status write below, so it is a plain put, not a transaction.
                if let Some(provider_id) = provider_message_id {
                    self.client
                        .put_item()
                        .table_name(&self.table)
                        .item("pk", Self::provider_key(*provider, provider_id))
                        .item("message_id", s(id))
                        .item("expires_at", epoch(now + PROVIDER_ID_RETENTION))
                        .send()
                        .await
                        .map_err(unavailable)?;
                }
                update
                    .expression_attribute_values(
                        ":pid",
                        provider_message_id
                            .clone()
                            .map_or(AttributeValue::Null(true), AttributeValue::S),
                    )
                    .expression_attribute_values(":null", AttributeValue::Null(true))
            }
            Completion::Failed { .. } => {
                update.expression_attribute_values(":null", AttributeValue::Null(true))
            }
            Completion::Retry {
                next_attempt_at, ..
            } => update.expression_attribute_values(":next", rfc3339(*next_attempt_at)),
        };
        held.on_update(update)
            .send()
            .await
            .map_err(|e| match e.into_service_error() {
                // A report that overtook this write has moved the message on (or our
                // lease was taken over): either way the message is no longer ours.
                e if e.is_conditional_check_failed_exception() => StoreError::Conflict(format!(
                    "message {id} is no longer sending under lease {lease_id}"
                )),
                e => unavailable(e),
            })?;
        Ok(())
    }
}
