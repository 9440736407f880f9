//! Conversations: which thread a message belongs to, and what a thread shows.

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::{Channel, Direction, Message};

/// Characters of the body shown in a conversation's `last_message.preview`.
pub const PREVIEW_CHARS: usize = 100;

/// A conversation is the channel family (phone for sms/mms, email) plus the two
/// participants, normalized and order-independent: A→B and B→A share one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationKey {
    family: &'static str,
    participants: [String; 2],
}

impl ConversationKey {
    pub fn new(channel: Channel, from: &str, to: &str) -> Self {
        let family = if channel.is_phone() { "phone" } else { "email" };
        let normalize = |address: &str| {
            let trimmed = address.trim();
            if channel.is_phone() {
                trimmed.to_owned()
            } else {
                trimmed.to_lowercase()
            }
        };
        let mut participants = [normalize(from), normalize(to)];
        participants.sort();
        Self {
            family,
            participants,
        }
    }

    pub fn participants(&self) -> &[String; 2] {
        &self.participants
    }

    /// `phone` (sms and mms) or `email`.
    pub fn family(&self) -> &'static str {
        self.family
    }

    /// Stable, URL-safe identifier: 32 hex digits of the SHA-256 of
    /// `<family>:<first>:<second>` (addresses stay out of URLs and logs).
    pub fn id(&self) -> String {
        let digest = Sha256::digest(format!(
            "{}:{}:{}",
            self.family, self.participants[0], self.participants[1]
        ));
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Whether `id` has the shape of a conversation id (it may still be unknown).
pub fn is_conversation_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Normalizes an address the way conversation keys do: trimmed, email lower-cased.
pub fn normalize_participant(address: &str) -> String {
    let trimmed = address.trim();
    if trimmed.contains('@') {
        trimmed.to_lowercase()
    } else {
        trimmed.to_owned()
    }
}

/// The position of a message in its conversation: its timestamp in UTC with
/// nanoseconds, fixed width so that string order is time order, then its id.
pub fn sort_key(timestamp: OffsetDateTime, id: &str) -> String {
    let t = timestamp.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z#{id}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    )
}

/// Whether `key` has the shape [`sort_key`] produces (with a UUID message id).
pub fn is_sort_key(key: &str) -> bool {
    let Some((time, id)) = key.split_once('#') else {
        return false;
    };
    time.len() == 30
        && time.ends_with('Z')
        && OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339).is_ok()
        && uuid::Uuid::parse_str(id).is_ok()
}

/// The newest message of a conversation, as its summary shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct LastMessage {
    pub id: String,
    pub direction: Direction,
    pub channel: Channel,
    pub from: String,
    pub to: String,
    /// The first [`PREVIEW_CHARS`] characters of the body.
    pub preview: String,
    pub timestamp: OffsetDateTime,
}

impl LastMessage {
    pub fn of(message: &Message) -> Self {
        Self {
            id: message.id.clone(),
            direction: message.direction,
            channel: message.channel,
            from: message.from.clone(),
            to: message.to.clone(),
            preview: message.body.chars().take(PREVIEW_CHARS).collect(),
            timestamp: message.timestamp,
        }
    }
}

/// A conversation's summary (the API's view of it is `views::ConversationView`).
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub id: String,
    /// `phone` or `email`.
    pub channel: String,
    /// Both participants, normalized and sorted.
    pub participants: Vec<String>,
    pub message_count: u64,
    pub last_message: LastMessage,
    /// `last_message.preview`, also at the top level for list views.
    pub last_message_preview: String,
    pub last_message_at: OffsetDateTime,
    pub created_at: OffsetDateTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_order_independent() {
        let a = ConversationKey::new(Channel::Sms, "+18045551234", "+12016661234");
        let b = ConversationKey::new(Channel::Sms, "+12016661234", "+18045551234");
        assert_eq!(a, b);
        assert_eq!(a.participants(), &["+12016661234", "+18045551234"]);
        assert_eq!(a.family(), "phone");
        assert!(is_conversation_id(&a.id()), "{}", a.id());
    }

    #[test]
    fn sms_and_mms_share_a_conversation() {
        let sms = ConversationKey::new(Channel::Sms, "+18045551234", "+12016661234");
        let mms = ConversationKey::new(Channel::Mms, "+12016661234", "+18045551234");
        assert_eq!(sms.id(), mms.id());
    }

    #[test]
    fn email_addresses_are_lower_cased_and_trimmed() {
        let a = ConversationKey::new(Channel::Email, " User@Example.com", "b@x.io");
        let b = ConversationKey::new(Channel::Email, "b@x.io", "user@example.com ");
        assert_eq!(a.id(), b.id());
        assert_eq!(a.participants(), &["b@x.io", "user@example.com"]);
    }

    #[test]
    fn phone_and_email_threads_differ_and_ids_are_distinct() {
        let a = ConversationKey::new(Channel::Sms, "+18045551234", "+12016661234");
        let b = ConversationKey::new(Channel::Sms, "+18045551234", "+12016661235");
        assert_ne!(a.id(), b.id());
        assert!(!is_conversation_id("phone:+1:+2"));
        assert!(!is_conversation_id(&a.id().to_uppercase()));
    }

    #[test]
    fn sort_keys_order_by_time_then_id() {
        use time::macros::datetime;
        let early = sort_key(datetime!(2024-11-01 14:00:00.5 +02:00), "b");
        let late = sort_key(datetime!(2024-11-01 13:00:00 UTC), "a");
        assert_eq!(early, "2024-11-01T12:00:00.500000000Z#b");
        assert!(early < late);
        let same_time = sort_key(datetime!(2024-11-01 13:00:00 UTC), "b");
        assert!(late < same_time);
        let id = "0193a1b2-0000-7000-8000-000000000000";
        assert!(is_sort_key(&sort_key(
            datetime!(2024-11-01 13:00:00 UTC),
            id
        )));
        assert!(!is_sort_key("2024-11-01T13:00:00Z#x"));
        assert!(!is_sort_key("garbage"));
    }
}
