//! Opt-out compliance: inbound keywords (STOP, START, HELP) and their replies,
//! the suppression check on the send paths, provider signals, and the
//! `/suppressions` routes' use cases.

use serde_json::{Map, Value};
use time::OffsetDateTime;
use tracing::{info, warn};

use crate::api::{AcceptError, ReadError, queue_outbound};
use crate::conversations::{Listing, parse_limit};
use crate::cursor::CursorCodec;
use crate::domain::idempotency;
use crate::domain::suppression::{MAX_REASON_CHARS, validate_sender};
use crate::domain::{
    Channel, FieldError, Keyword, Message, OptOutPolicy, OptOutScope, Suppression,
    SuppressionChannel, SuppressionSource,
};
use crate::metrics::{self, Metric, dimension, name};
use crate::ports::{
    ConversationLog, DeliveryQueue, IdempotencyRecord, Lift, MessageStore, Position, StoreError,
    Suppressed, SuppressionList,
};

/// What the inbound paths need to answer keywords: the queue replies go on and
/// the policy (keywords, replies, scope).
pub struct KeywordReplies<Q> {
    pub queue: Q,
    pub policy: OptOutPolicy,
}

/// The suppression entry that stops a message from `from` to `to` on
/// `channel`, if any: one read of the recipient's entries.
pub async fn blocking_suppression(
    store: &impl SuppressionList,
    scope: OptOutScope,
    channel: Channel,
    from: &str,
    to: &str,
) -> Result<Option<Suppression>, StoreError> {
    let list = SuppressionChannel::of(channel);
    let Ok(address) = list.normalize(to) else {
        return Ok(None);
    };
    let entries = store.suppressions_of(list, &address).await?;
    Ok(scope.blocking(list, from.trim(), &entries).cloned())
}

/// Adds an entry to the list, counted by source; the stored entry is returned
/// (the earlier one if the address and sender were already there).
pub async fn suppress(
    store: &impl SuppressionList,
    entry: Suppression,
) -> Result<Suppressed, StoreError> {
    let stored = store.suppress(&entry).await?;
    if let Suppressed::Added(added) = &stored {
        info!(
            channel = added.channel.as_str(),
            sender = added.sender.as_deref().unwrap_or("*"),
            source = added.source.as_str(),
            reason = %added.reason,
            "recipient suppressed"
        );
        metrics::emit(
            &[Metric::count(name::SUPPRESSIONS_ADDED, 1)],
            &[(dimension::SOURCE, added.source.as_str())],
        );
    }
    Ok(stored)
}

/// Honours the keyword an inbound SMS/MMS is, if it is one: STOP suppresses its
/// sender (for the number it wrote to, or for all our numbers) and is confirmed
/// once; START lifts that; HELP is answered. Safe to run again for the same
/// message: the suppression is added once, and each reply is queued under an
/// idempotency key made of the inbound message's id.
pub async fn answer_keyword<S, Q>(
    store: &S,
    replies: &KeywordReplies<Q>,
    inbound: &Message,
) -> Result<Option<Keyword>, AcceptError>
where
    S: MessageStore + ConversationLog + SuppressionList,
    Q: DeliveryQueue,
{
    if !inbound.channel.is_phone() {
        return Ok(None);
    }
    let policy = &replies.policy;
    let Some((keyword, word)) = policy.keywords.classify(&inbound.body) else {
        return Ok(None);
    };
    let channel = SuppressionChannel::Phone;
    let address = channel
        .normalize(&inbound.from)
        .unwrap_or_else(|_| inbound.from.trim().to_owned());
    let sender = policy.scope.entry_sender(inbound.to.trim());
    let now = OffsetDateTime::now_utc();
    info!(message_id = %inbound.id, keyword = keyword.as_str(), "inbound keyword");
    let reply = match keyword {
        Keyword::OptOut => {
            let entry = Suppression {
                channel,
                address,
                sender,
                reason: format!("opt-out keyword {word}"),
                source: SuppressionSource::Keyword,
                message_id: Some(inbound.id.clone()),
                created_at: now,
            };
            let stored = suppress(store, entry).await?;
            // One confirmation per opt-out: only the STOP that made the entry
            // (or a retry of it) is answered, not a repeated STOP.
            stored.entry().message_id.as_deref() == Some(inbound.id.as_str())
        }
        Keyword::OptIn => {
            let lifted = store.lift(channel, &address, &Lift::Sender(sender)).await?;
            if !lifted.is_empty() {
                info!(message_id = %inbound.id, "opt-in: suppression lifted");
            }
            true
        }
        // Only the opt-out confirmation goes to a number that opted out: a
        // HELP from one is stored and not answered.
        Keyword::Help => blocking_suppression(
            store,
            policy.scope,
            inbound.channel,
            inbound.to.trim(),
            &inbound.from,
        )
        .await?
        .is_none(),
    };
    if let Some(text) = policy.reply(keyword).filter(|_| reply) {
        let message = Message::keyword_reply(inbound, keyword, text, now);
        let record = IdempotencyRecord {
            key: format!("keyword-reply:{}", inbound.id),
            fingerprint: keyword.as_str().to_owned(),
            message_id: message.id.clone(),
            response: String::new(),
            expires_at: now + idempotency::RETENTION,
            completed: false,
        };
        queue_outbound(store, &replies.queue, message, Some(record)).await?;
    }
    Ok(Some(keyword))
}

/// A provider told us a recipient does not want our messages (Twilio 21610, a
/// SendGrid bounce, spam report or unsubscribe): add them to the list. A
/// failure is logged and counted, never allowed to fail what reported it.
pub async fn provider_signal(store: &impl SuppressionList, entry: Suppression) {
    let address = entry.address.clone();
    if let Err(e) = suppress(store, entry).await {
        warn!(error = %e, address_chars = address.len(), "could not record a provider's opt-out signal");
    }
}

// ---- the /suppressions routes ------------------------------------------------

fn bad(field: &str, message: impl Into<String>) -> ReadError {
    ReadError::bad_query(field, message)
}

fn parse_channel(value: &str) -> Result<SuppressionChannel, ReadError> {
    SuppressionChannel::parse(value).ok_or_else(|| bad("channel", "must be phone or email"))
}

/// `GET /suppressions`: one address's entries (one read), or the whole list,
/// by channel (email first), address and sender.
pub async fn list_suppressions(
    store: &impl SuppressionList,
    cursors: &CursorCodec,
    address: Option<&str>,
    channel: Option<&str>,
    limit: Option<&str>,
    cursor: Option<&str>,
) -> Result<Listing<Suppression>, ReadError> {
    let limit = parse_limit(limit)?;
    let channel = channel.map(parse_channel).transpose()?;
    if let Some(address) = address {
        let channel = channel.unwrap_or_else(|| SuppressionChannel::of_address(address));
        let address = channel.normalize(address).map_err(|e| bad("address", e))?;
        let scope = format!("suppressions:{channel}:{address}");
        let after = decode(cursors, &scope, cursor)?;
        let mut entries = store.suppressions_of(channel, &address).await?;
        if let Some(after) = &after {
            entries.retain(|e| e.sender.as_deref().unwrap_or("*") > after.id.as_str());
        }
        let more = entries.len() > limit;
        entries.truncate(limit);
        let next_cursor = entries.last().filter(|_| more).map(|last| {
            cursors.encode(
                &scope,
                &Position {
                    sort: String::new(),
                    id: last.sender.as_deref().unwrap_or("*").to_owned(),
                },
            )
        });
        return Ok(Listing {
            items: entries,
            next_cursor,
        });
    }
    let scope = format!(
        "suppressions:{}",
        channel.map_or("all", SuppressionChannel::as_str)
    );
    let after = decode(cursors, &scope, cursor)?;
    let page = store
        .suppression_page(channel, limit, after.as_ref())
        .await?;
    Ok(Listing {
        next_cursor: page.next.map(|p| cursors.encode(&scope, &p)),
        items: page.items,
    })
}

fn decode(
    cursors: &CursorCodec,
    scope: &str,
    cursor: Option<&str>,
) -> Result<Option<Position>, ReadError> {
    cursor
        .map(|cursor| {
            cursors
                .decode(scope, cursor)
                .map_err(|_| bad("cursor", "is not a cursor this API issued for this query"))
        })
        .transpose()
}

/// Why an operator's suppression was not added or removed.
#[derive(Debug, thiserror::Error)]
pub enum SuppressionError {
    #[error("the suppression is invalid")]
    Invalid(Vec<FieldError>),
    /// A path or query parameter is not a channel, address or sender.
    #[error("{}: {}", .0.field, .0.message)]
    BadParameter(FieldError),
    #[error("{channel} address {address:?} has no suppression to remove")]
    NotFound {
        channel: SuppressionChannel,
        address: String,
    },
    #[error("{0}")]
    Unavailable(String),
}

impl From<StoreError> for SuppressionError {
    fn from(e: StoreError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

/// `POST /suppressions`: `{"channel", "address", "sender"?, "reason"?}`.
pub async fn add_suppression(
    store: &impl SuppressionList,
    payload: &Map<String, Value>,
) -> Result<Suppressed, SuppressionError> {
    let mut errors = Vec::new();
    let text = |field: &str, errors: &mut Vec<FieldError>| match payload.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errors.push(FieldError::new(field, "must be a string"));
            None
        }
    };
    let channel = text("channel", &mut errors);
    let address = text("address", &mut errors);
    let sender = text("sender", &mut errors);
    let reason = text("reason", &mut errors);
    let channel = match channel.as_deref() {
        Some(c) => SuppressionChannel::parse(c).or_else(|| {
            errors.push(FieldError::new("channel", "must be phone or email"));
            None
        }),
        None => {
            if !errors.iter().any(|e| e.field == "channel") {
                errors.push(FieldError::new("channel", "is required (phone or email)"));
            }
            None
        }
    };
    let address = match (channel, address) {
        (Some(channel), Some(address)) => match channel.normalize(&address) {
            Ok(address) => Some(address),
            Err(e) => {
                errors.push(FieldError::new("address", e));
                None
            }
        },
        (_, None) if !errors.iter().any(|e| e.field == "address") => {
            errors.push(FieldError::new("address", "is required"));
            None
        }
        _ => None,
    };
    let sender = match channel.map(|c| validate_sender(c, sender.as_deref())) {
        Some(Ok(sender)) => sender,
        Some(Err(e)) => {
            errors.push(e);
            None
        }
        None => None,
    };
    let reason = reason
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    if reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON_CHARS)
    {
        errors.push(FieldError::new(
            "reason",
            format!("must be at most {MAX_REASON_CHARS} characters"),
        ));
    }
    for field in payload.keys() {
        if !["channel", "address", "sender", "reason"].contains(&field.as_str()) {
            errors.push(FieldError::new(field, "is not a field of a suppression"));
        }
    }
    let (Some(channel), Some(address), true) = (channel, address, errors.is_empty()) else {
        return Err(SuppressionError::Invalid(errors));
    };
    Ok(suppress(
        store,
        Suppression {
            channel,
            address,
            sender,
            reason: reason.unwrap_or_else(|| "added by an operator".to_owned()),
            source: SuppressionSource::Api,
            message_id: None,
            created_at: OffsetDateTime::now_utc(),
        },
    )
    .await?)
}

/// `DELETE /suppressions/{channel}/{address}[?sender=]`: lifts all of an
/// address's entries, or one sender's.
pub async fn remove_suppression(
    store: &impl SuppressionList,
    channel: &str,
    address: &str,
    sender: Option<&str>,
) -> Result<Vec<Suppression>, SuppressionError> {
    let invalid = |field: &str, message: String| {
        SuppressionError::BadParameter(FieldError::new(field, message))
    };
    let channel = SuppressionChannel::parse(channel)
        .ok_or_else(|| invalid("channel", "must be phone or email".into()))?;
    let address = channel
        .normalize(address)
        .map_err(|e| invalid("address", e))?;
    let which = match sender {
        None => Lift::All,
        Some(sender) => Lift::Sender(
            validate_sender(channel, Some(sender)).map_err(SuppressionError::BadParameter)?,
        ),
    };
    let lifted = store.lift(channel, &address, &which).await?;
    if lifted.is_empty() {
        return Err(SuppressionError::NotFound { channel, address });
    }
    info!(
        channel = channel.as_str(),
        entries = lifted.len(),
        "suppression lifted by an operator"
    );
    Ok(lifted)
}

/// An in-memory suppression list for the use cases' unit tests (the DynamoDB
/// list is tested against the emulator).
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Mutex;

    use super::*;
    use crate::ports::Page;

    #[derive(Default)]
    pub struct MemorySuppressions(pub Mutex<Vec<Suppression>>);

    impl MemorySuppressions {
        pub fn entries(&self) -> Vec<Suppression> {
            self.0.lock().unwrap().clone()
        }
    }

    impl SuppressionList for MemorySuppressions {
        async fn suppressions_of(
            &self,
            channel: SuppressionChannel,
            address: &str,
        ) -> Result<Vec<Suppression>, StoreError> {
            Ok(self
                .entries()
                .into_iter()
                .filter(|e| e.channel == channel && e.address == address)
                .collect())
        }

        async fn suppress(&self, entry: &Suppression) -> Result<Suppressed, StoreError> {
            let mut entries = self.0.lock().unwrap();
            let same = |e: &&Suppression| {
                e.channel == entry.channel && e.address == entry.address && e.sender == entry.sender
            };
            if let Some(existing) = entries.iter().find(same) {
                return Ok(Suppressed::Existing(existing.clone()));
            }
            entries.push(entry.clone());
            Ok(Suppressed::Added(entry.clone()))
        }

        async fn lift(
            &self,
            channel: SuppressionChannel,
            address: &str,
            which: &Lift,
        ) -> Result<Vec<Suppression>, StoreError> {
            let mut entries = self.0.lock().unwrap();
            let (lifted, kept) = entries.drain(..).partition(|e: &Suppression| {
                e.channel == channel
                    && e.address == address
                    && match which {
                        Lift::All => true,
                        Lift::Sender(sender) => &e.sender == sender,
                    }
            });
            *entries = kept;
            Ok(lifted)
        }

        async fn suppression_page(
            &self,
            channel: Option<SuppressionChannel>,
            limit: usize,
            _after: Option<&Position>,
        ) -> Result<Page<Suppression>, StoreError> {
            let mut items: Vec<_> = self
                .entries()
                .into_iter()
                .filter(|e| channel.is_none_or(|c| c == e.channel))
                .collect();
            items.truncate(limit);
            Ok(Page { items, next: None })
        }
    }

    /// Implements [`SuppressionList`] for a test store by handing every call
    /// to its [`MemorySuppressions`] field.
    macro_rules! delegate_suppressions {
        ($store:ty, $field:ident) => {
            impl $crate::ports::SuppressionList for $store {
                async fn suppressions_of(
                    &self,
                    channel: $crate::domain::SuppressionChannel,
                    address: &str,
                ) -> Result<Vec<$crate::domain::Suppression>, $crate::ports::StoreError> {
                    self.$field.suppressions_of(channel, address).await
                }

                async fn suppress(
                    &self,
                    entry: &$crate::domain::Suppression,
                ) -> Result<$crate::ports::Suppressed, $crate::ports::StoreError> {
                    self.$field.suppress(entry).await
                }

                async fn lift(
                    &self,
                    channel: $crate::domain::SuppressionChannel,
                    address: &str,
                    which: &$crate::ports::Lift,
                ) -> Result<Vec<$crate::domain::Suppression>, $crate::ports::StoreError> {
                    self.$field.lift(channel, address, which).await
                }

                async fn suppression_page(
                    &self,
                    channel: Option<$crate::domain::SuppressionChannel>,
                    limit: usize,
                    after: Option<&$crate::ports::Position>,
                ) -> Result<
                    $crate::ports::Page<$crate::domain::Suppression>,
                    $crate::ports::StoreError,
                > {
                    self.$field.suppression_page(channel, limit, after).await
                }
            }
        };
    }
    pub(crate) use delegate_suppressions;
}
