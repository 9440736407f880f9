//! Messages: what is accepted, stored and delivered. The API's JSON view is
//! `views::MessageView`, the stored item the DynamoDB adapter's own type.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{ConversationKey, HistoryEntry, Keyword, Status};

/// The channel a message travels on (the API's `type` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Sms,
    Mms,
    Email,
}

impl Channel {
    pub const ALL: [Self; 3] = [Self::Sms, Self::Mms, Self::Email];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Sms => "sms",
            Self::Mms => "mms",
            Self::Email => "email",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// SMS and MMS share phone numbers (and a conversation); email has its own.
    pub const fn is_phone(self) -> bool {
        matches!(self, Self::Sms | Self::Mms)
    }

    /// The provider that carries this channel's messages: SMS and MMS go to
    /// Twilio, email to SendGrid. The one place this mapping lives (routing and
    /// the `Provider` metric dimension both use it).
    pub const fn provider(self) -> ProviderKind {
        match self {
            Self::Sms | Self::Mms => ProviderKind::Twilio,
            Self::Email => ProviderKind::SendGrid,
        }
    }
}

/// The providers messages are handed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    Twilio,
    SendGrid,
}

impl ProviderKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Twilio => "twilio",
            Self::SendGrid => "sendgrid",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Twilio, Self::SendGrid]
            .into_iter()
            .find(|p| p.as_str() == s)
    }
}

/// Where an inbound message came from. A `messaging_provider_id` is unique
/// only within its source: a Twilio `MessageSid`, an email's `Message-ID`
/// (chosen by whoever sent the mail) and the id an API caller gives are
/// different namespaces, and one source must not block or read another's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InboundSource {
    /// `POST /messages/inbound`.
    Api,
    /// Twilio's incoming-message webhook.
    Twilio,
    /// SendGrid's Inbound Parse.
    SendGrid,
}

impl InboundSource {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Twilio => "twilio",
            Self::SendGrid => "sendgrid",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Outbound,
    Inbound,
}

/// Time-sortable message id (UUIDv7).
pub type MessageId = String;

pub fn new_message_id() -> MessageId {
    uuid::Uuid::now_v7().to_string()
}

/// A message that passed validation and is about to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    pub channel: Channel,
    pub from: String,
    pub to: String,
    pub body: String,
    pub attachments: Option<Vec<String>>,
    pub timestamp: Option<OffsetDateTime>,
    pub messaging_provider_id: Option<String>,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: MessageId,
    pub direction: Direction,
    /// The API's `type`.
    pub channel: Channel,
    pub from: String,
    pub to: String,
    pub body: String,
    pub attachments: Option<Vec<String>>,
    pub timestamp: OffsetDateTime,
    pub messaging_provider_id: Option<String>,
    pub conversation_id: String,
    pub status: Status,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub provider_message_id: Option<String>,
    pub next_attempt_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// Status changes, oldest first: accepted, each claim and each outcome.
    pub history: Vec<HistoryEntry>,
    /// Set on our automatic answer to an inbound keyword (STOP, START, HELP);
    /// the opt-out confirmation and the help text go even to a suppressed
    /// recipient.
    pub keyword_reply: Option<Keyword>,
    /// On an inbound email from SendGrid's Inbound Parse: whether SPF or DKIM
    /// vouched for its sender's domain. `None` elsewhere.
    pub sender_verified: Option<bool>,
}

impl Message {
    /// Builds the stored form of a validated message received at `now`.
    pub fn accept(new: NewMessage, direction: Direction, now: OffsetDateTime) -> Self {
        let conversation_id = ConversationKey::new(new.channel, &new.from, &new.to).id();
        let status = match direction {
            Direction::Outbound => Status::Queued,
            Direction::Inbound => Status::Received,
        };
        Self {
            id: new_message_id(),
            direction,
            channel: new.channel,
            from: new.from,
            to: new.to,
            body: new.body,
            attachments: new.attachments,
            timestamp: new.timestamp.unwrap_or(now),
            messaging_provider_id: new.messaging_provider_id,
            conversation_id,
            status,
            attempts: 0,
            last_error: None,
            provider_message_id: None,
            next_attempt_at: None,
            created_at: now,
            updated_at: now,
            history: vec![HistoryEntry {
                at: now,
                status,
                error: None,
            }],
            keyword_reply: None,
            sender_verified: None,
        }
    }

    /// Our automatic answer to the inbound `keyword` message: `text` back to its
    /// sender, from the number or address it wrote to, on the same channel
    /// family (an MMS keyword is answered by SMS).
    pub fn keyword_reply(
        inbound: &Message,
        keyword: Keyword,
        text: &str,
        now: OffsetDateTime,
    ) -> Self {
        let channel = if inbound.channel.is_phone() {
            Channel::Sms
        } else {
            inbound.channel
        };
        let new = NewMessage {
            channel,
            from: inbound.to.clone(),
            to: inbound.from.clone(),
            body: text.to_owned(),
            attachments: None,
            timestamp: None,
            messaging_provider_id: None,
        };
        Self {
            keyword_reply: Some(keyword),
            ..Self::accept(new, Direction::Outbound, now)
        }
    }

    /// Attachment URLs, empty when the message has none.
    pub fn attachment_urls(&self) -> &[String] {
        self.attachments.as_deref().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn new_sms() -> NewMessage {
        NewMessage {
            channel: Channel::Sms,
            from: "+18045551234".into(),
            to: "+12016661234".into(),
            body: "hi".into(),
            attachments: None,
            timestamp: None,
            messaging_provider_id: None,
        }
    }

    #[test]
    fn outbound_starts_queued_and_inbound_received() {
        let now = datetime!(2024-11-01 14:00 UTC);
        let out = Message::accept(new_sms(), Direction::Outbound, now);
        assert_eq!(out.status, Status::Queued);
        assert_eq!(
            out.timestamp, now,
            "timestamp defaults to the time received"
        );
        let inbound = Message::accept(new_sms(), Direction::Inbound, now);
        assert_eq!(inbound.status, Status::Received);
        assert_ne!(out.id, inbound.id);
    }

    #[test]
    fn phones_go_to_twilio_and_email_to_sendgrid() {
        assert_eq!(Channel::Sms.provider().as_str(), "twilio");
        assert_eq!(Channel::Mms.provider().as_str(), "twilio");
        assert_eq!(Channel::Email.provider().as_str(), "sendgrid");
    }

    #[test]
    fn ids_are_time_sortable() {
        let a = new_message_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_message_id();
        assert!(a < b);
    }
}
