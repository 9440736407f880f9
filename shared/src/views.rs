//! What the API answers: the JSON views of messages and conversations. Kept
//! apart from the domain types (which have no serde form) and from the items
//! the store keeps (see `adapters::dynamodb`), so that neither shape follows
//! the other by accident.

use serde::Serialize;
use time::OffsetDateTime;

use crate::domain::{
    Channel, Conversation, Direction, HistoryEntry, LastMessage, Message, Status, Suppression,
};

/// A suppression list entry as the API returns it (`Suppression` in `openapi.yaml`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SuppressionView {
    pub channel: &'static str,
    pub address: String,
    /// `null`: every one of our senders.
    pub sender: Option<String>,
    pub reason: String,
    pub source: &'static str,
    pub message_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<&Suppression> for SuppressionView {
    fn from(s: &Suppression) -> Self {
        Self {
            channel: s.channel.as_str(),
            address: s.address.clone(),
            sender: s.sender.clone(),
            reason: s.reason.clone(),
            source: s.source.as_str(),
            message_id: s.message_id.clone(),
            created_at: s.created_at,
        }
    }
}

/// A message as the API returns it (`Message` in `openapi.yaml`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageView {
    pub id: String,
    pub direction: Direction,
    #[serde(rename = "type")]
    pub channel: Channel,
    pub from: String,
    pub to: String,
    pub body: String,
    /// `null` when the message has none.
    pub attachments: Option<Vec<String>>,
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    /// Left out when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messaging_provider_id: Option<String>,
    pub conversation_id: String,
    pub status: Status,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub provider_message_id: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub history: Vec<HistoryView>,
    /// Inbound email only: whether SPF or DKIM vouched for the sender's domain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender_verified: Option<bool>,
}

/// One status change of a message, as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryView {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub status: Status,
    /// Left out when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl From<&HistoryEntry> for HistoryView {
    fn from(entry: &HistoryEntry) -> Self {
        Self {
            at: entry.at,
            status: entry.status,
            error: entry.error.clone(),
        }
    }
}

impl From<&Message> for MessageView {
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
            history: message.history.iter().map(HistoryView::from).collect(),
            sender_verified: message.sender_verified,
        }
    }
}

/// The newest message of a conversation, as its summary shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastMessageView {
    pub id: String,
    pub direction: Direction,
    #[serde(rename = "type")]
    pub channel: Channel,
    pub from: String,
    pub to: String,
    pub preview: String,
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
}

impl From<&LastMessage> for LastMessageView {
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

/// A conversation as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConversationView {
    pub id: String,
    pub channel: String,
    pub participants: Vec<String>,
    pub message_count: u64,
    pub last_message: LastMessageView,
    pub last_message_preview: String,
    #[serde(with = "time::serde::rfc3339")]
    pub last_message_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<&Conversation> for ConversationView {
    fn from(conversation: &Conversation) -> Self {
        Self {
            id: conversation.id.clone(),
            channel: conversation.channel.clone(),
            participants: conversation.participants.clone(),
            message_count: conversation.message_count,
            last_message: LastMessageView::from(&conversation.last_message),
            last_message_preview: conversation.last_message_preview.clone(),
            last_message_at: conversation.last_message_at,
            created_at: conversation.created_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::macros::datetime;

    use super::*;
    use crate::domain::NewMessage;

    fn sms() -> Message {
        Message::accept(
            NewMessage {
                channel: Channel::Sms,
                from: "+18045551234".into(),
                to: "+12016661234".into(),
                body: "hi".into(),
                attachments: None,
                timestamp: None,
                messaging_provider_id: None,
            },
            Direction::Outbound,
            datetime!(2024-11-01 14:00 UTC),
        )
    }

    #[test]
    fn a_message_has_the_api_field_names_in_order() {
        let message = sms();
        let json = serde_json::to_string(&MessageView::from(&message)).unwrap();
        let expected = format!(
            concat!(
                r#"{{"id":"{id}","direction":"outbound","type":"sms","#,
                r#""from":"+18045551234","to":"+12016661234","body":"hi","#,
                r#""attachments":null,"timestamp":"2024-11-01T14:00:00Z","#,
                r#""conversation_id":"{conversation}","status":"queued","attempts":0,"#,
                r#""last_error":null,"provider_message_id":null,"next_attempt_at":null,"#,
                r#""created_at":"2024-11-01T14:00:00Z","updated_at":"2024-11-01T14:00:00Z","#,
                r#""history":[{{"at":"2024-11-01T14:00:00Z","status":"queued"}}]}}"#
            ),
            id = message.id,
            conversation = message.conversation_id,
        );
        assert_eq!(json, expected);
    }

    #[test]
    fn optional_fields_appear_once_set() {
        let mut message = sms();
        message.messaging_provider_id = Some("SM1".into());
        message.next_attempt_at = Some(datetime!(2024-11-01 14:05 UTC));
        message.history[0].error = Some("throttled".into());
        let json = serde_json::to_value(MessageView::from(&message)).unwrap();
        assert_eq!(json["messaging_provider_id"], "SM1");
        assert_eq!(json["next_attempt_at"], "2024-11-01T14:05:00Z");
        assert_eq!(json["history"][0]["error"], "throttled");
    }

    #[test]
    fn a_conversation_has_the_api_field_names() {
        let message = sms();
        let last = LastMessage::of(&message);
        let conversation = Conversation {
            id: message.conversation_id.clone(),
            channel: "phone".into(),
            participants: vec!["+12016661234".into(), "+18045551234".into()],
            message_count: 2,
            last_message_preview: last.preview.clone(),
            last_message: last,
            last_message_at: message.timestamp,
            created_at: message.created_at,
        };
        let json = serde_json::to_value(ConversationView::from(&conversation)).unwrap();
        assert_eq!(
            json,
            json!({
                "id": message.conversation_id,
                "channel": "phone",
                "participants": ["+12016661234", "+18045551234"],
                "message_count": 2,
                "last_message": {
                    "id": message.id,
                    "direction": "outbound",
                    "type": "sms",
                    "from": "+18045551234",
                    "to": "+12016661234",
                    "preview": "hi",
                    "timestamp": "2024-11-01T14:00:00Z",
                },
                "last_message_preview": "hi",
                "last_message_at": "2024-11-01T14:00:00Z",
                "created_at": "2024-11-01T14:00:00Z",
            })
        );
    }
}
