//! Conversation keys: which thread a message belongs to.

use super::Channel;

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

    /// Stable identifier: `<family>:<first>:<second>`.
    pub fn id(&self) -> String {
        format!(
            "{}:{}:{}",
            self.family, self.participants[0], self.participants[1]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_order_independent() {
        let a = ConversationKey::new(Channel::Sms, "+18045551234", "+12016661234");
        let b = ConversationKey::new(Channel::Sms, "+12016661234", "+18045551234");
        assert_eq!(a, b);
        assert_eq!(a.id(), "phone:+12016661234:+18045551234");
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
        assert_eq!(a.id(), "email:b@x.io:user@example.com");
    }
}
