//! The items messages and conversation summaries are stored as (through
//! serde_dynamo), with explicit conversions from and to the domain types.
//! Attribute names are part of the stored data: renaming a field here leaves
//! items already written unreadable.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::domain::{
    Channel, Conversation, Direction, HistoryEntry, Keyword, LastMessage, Message, Status,
};

/// A `MSG#<id>` item's message attributes (the adapter adds `pk` and
/// `conversation_sort`; deliveries add and remove the lease attributes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct MessageItem {
    id: String,
    direction: Direction,
    #[serde(rename = "type")]
    channel: Channel,
    from: String,
    to: String,
    body: String,
    attachments: Option<Vec<String>>,
    #[serde(with = "time::serde::rfc3339")]
    timestamp: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    messaging_provider_id: Option<String>,
    conversation_id: String,
    status: Status,
    #[serde(default)]
    attempts: u32,
    #[serde(default)]
    last_error: Option<String>,
    #[serde(default)]
    provider_message_id: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    next_attempt_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
    #[serde(default)]
    history: Vec<HistoryItem>,
    /// `opt_out`, `opt_in` or `help` on our answer to an inbound keyword.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keyword_reply: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sender_verified: Option<bool>,
}

/// One entry of a message item's `history` list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct HistoryItem {
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
    status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl From<&Message> for MessageItem {
    fn from(message: &Message) -> Self {
        Self {
            id: message.id.clone(),
            direction: message.direction,
            channel: message.channel,
            from: message.from.clone(),
            to: message.to.clone(),
            body: message.body.clone(),
            attachments: message.attachments.clone(),
            timestamp: message.timestamp,
            messaging_provider_id: message.messaging_provider_id.clone(),
            conversation_id: message.conversation_id.clone(),
            status: message.status,
            attempts: message.attempts,
            last_error: message.last_error.clone(),
            provider_message_id: message.provider_message_id.clone(),
            next_attempt_at: message.next_attempt_at,
            created_at: message.created_at,
            updated_at: message.updated_at,
            history: message
                .history
                .iter()
                .map(|entry| HistoryItem {
                    at: entry.at,
                    status: entry.status,
                    error: entry.error.clone(),
                })
                .collect(),
            keyword_reply: message.keyword_reply.map(|k| k.as_str().to_owned()),
            sender_verified: message.sender_verified,
        }
    }
}

impl From<MessageItem> for Message {
    fn from(item: MessageItem) -> Self {
        Self {
            id: item.id,
            direction: item.direction,
            channel: item.channel,
            from: item.from,
            to: item.to,
            body: item.body,
            attachments: item.attachments,
            timestamp: item.timestamp,
            messaging_provider_id: item.messaging_provider_id,
            conversation_id: item.conversation_id,
            status: item.status,
            attempts: item.attempts,
            last_error: item.last_error,
            provider_message_id: item.provider_message_id,
            next_attempt_at: item.next_attempt_at,
            created_at: item.created_at,
            updated_at: item.updated_at,
            history: item
                .history
                .into_iter()
                .map(|entry| HistoryEntry {
                    at: entry.at,
                    status: entry.status,
                    error: entry.error,
                })
                .collect(),
            keyword_reply: item.keyword_reply.as_deref().and_then(Keyword::parse),
            sender_verified: item.sender_verified,
        }
    }
}

/// A summary's `last_message` map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct LastMessageItem {
    id: String,
    direction: Direction,
    #[serde(rename = "type")]
    channel: Channel,
    from: String,
    to: String,
    preview: String,
    #[serde(with = "time::serde::rfc3339")]
    timestamp: OffsetDateTime,
}

impl From<&LastMessage> for LastMessageItem {
    fn from(last: &LastMessage) -> Self {
        Self {
            id: last.id.clone(),
            direction: last.direction,
            channel: last.channel,
            from: last.from.clone(),
            to: last.to.clone(),
            preview: last.preview.clone(),
            timestamp: last.timestamp,
        }
    }
}

impl From<LastMessageItem> for LastMessage {
    fn from(item: LastMessageItem) -> Self {
        Self {
            id: item.id,
            direction: item.direction,
            channel: item.channel,
            from: item.from,
            to: item.to,
            preview: item.preview,
            timestamp: item.timestamp,
        }
    }
}

/// A `CONV#<id>` or `CONVPART#<id>#<participant>` item's summary attributes, as
/// read (the adapter writes them attribute by attribute; `pk`, `last_sort` and
/// `participant` are its own).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(super) struct ConversationItem {
    id: String,
    channel: String,
    participants: Vec<String>,
    message_count: u64,
    last_message: LastMessageItem,
    #[serde(default)]
    last_message_preview: String,
    #[serde(with = "time::serde::rfc3339")]
    last_message_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

impl From<ConversationItem> for Conversation {
    fn from(item: ConversationItem) -> Self {
        Self {
            id: item.id,
            channel: item.channel,
            participants: item.participants,
            message_count: item.message_count,
            last_message: item.last_message.into(),
            last_message_preview: item.last_message_preview,
            last_message_at: item.last_message_at,
            created_at: item.created_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use aws_sdk_dynamodb::types::AttributeValue;
    use time::macros::datetime;

    use super::*;
    use crate::domain::NewMessage;

    fn email() -> Message {
        let mut message = Message::accept(
            NewMessage {
                channel: Channel::Email,
                from: "user@usehatchapp.com".into(),
                to: "contact@example.com".into(),
                body: "Hello".into(),
                attachments: Some(vec!["https://example.com/a.pdf".into()]),
                timestamp: None,
                messaging_provider_id: None,
            },
            Direction::Outbound,
            datetime!(2024-11-01 14:00 UTC),
        );
        message.last_error = Some("throttled".into());
        message.next_attempt_at = Some(datetime!(2024-11-01 14:01 UTC));
        message
    }

    #[test]
    fn a_message_keeps_its_attribute_names_and_reads_back() {
        let message = email();
        let item: HashMap<String, AttributeValue> =
            serde_dynamo::to_item(MessageItem::from(&message)).unwrap();
        let mut names: Vec<&str> = item.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "attachments",
                "attempts",
                "body",
                "conversation_id",
                "created_at",
                "direction",
                "from",
                "history",
                "id",
                "last_error",
                "next_attempt_at",
                "provider_message_id",
                "status",
                "timestamp",
                "to",
                "type",
                "updated_at",
            ]
        );
        assert_eq!(item["type"], AttributeValue::S("email".into()));
        assert_eq!(
            item["timestamp"],
            AttributeValue::S("2024-11-01T14:00:00Z".into())
        );
        assert_eq!(item["provider_message_id"], AttributeValue::Null(true));
        let back: MessageItem = serde_dynamo::from_item(item).unwrap();
        assert_eq!(Message::from(back), message);
    }

    #[test]
    fn older_items_without_the_delivery_attributes_still_read() {
        let message = email();
        let mut item: HashMap<String, AttributeValue> =
            serde_dynamo::to_item(MessageItem::from(&message)).unwrap();
        for name in [
            "attempts",
            "last_error",
            "provider_message_id",
            "next_attempt_at",
            "history",
        ] {
            item.remove(name);
        }
        item.insert(
            "pk".into(),
            AttributeValue::S(format!("MSG#{}", message.id)),
        );
        item.insert("lease_id".into(), AttributeValue::S("lease".into()));
        let back = Message::from(serde_dynamo::from_item::<_, MessageItem>(item).unwrap());
        assert_eq!(back.attempts, 0);
        assert!(back.history.is_empty());
        assert_eq!(back.next_attempt_at, None);
    }

    #[test]
    fn a_last_message_keeps_its_attribute_names() {
        let last = LastMessage::of(&email());
        let value = serde_dynamo::to_attribute_value(LastMessageItem::from(&last)).unwrap();
        let AttributeValue::M(map) = &value else {
            panic!("{value:?}");
        };
        let mut names: Vec<&str> = map.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "direction",
                "from",
                "id",
                "preview",
                "timestamp",
                "to",
                "type"
            ]
        );
        let back: LastMessageItem = serde_dynamo::from_attribute_value(value).unwrap();
        assert_eq!(LastMessage::from(back), last);
    }
}
