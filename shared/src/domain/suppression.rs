//! Opt-outs: the keywords recipients text us (STOP, START, HELP), the
//! suppression list they and the providers feed, and the rule deciding whether a
//! suppression stops a message.

use std::fmt;

use time::OffsetDateTime;

use super::validation::{is_e164, is_email};
use super::{Channel, FieldError};

/// What a suppression list is kept per: phone numbers (SMS and MMS alike) or
/// email addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SuppressionChannel {
    Email,
    Phone,
}

impl SuppressionChannel {
    pub const ALL: [Self; 2] = [Self::Email, Self::Phone];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Phone => "phone",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    pub const fn of(channel: Channel) -> Self {
        if channel.is_phone() {
            Self::Phone
        } else {
            Self::Email
        }
    }

    /// The channel an address belongs to: emails have an `@`.
    pub fn of_address(address: &str) -> Self {
        if address.contains('@') {
            Self::Email
        } else {
            Self::Phone
        }
    }

    /// The address in the form suppressions are kept under (E.164, or the email
    /// lower-cased), or why it is not an address of this channel.
    pub fn normalize(self, address: &str) -> Result<String, String> {
        let trimmed = address.trim();
        match self {
            Self::Phone if is_e164(trimmed) => Ok(trimmed.to_owned()),
            Self::Phone => {
                Err("must be a phone number in E.164 format (+ and 8 to 15 digits)".into())
            }
            Self::Email => {
                let lower = trimmed.to_lowercase();
                if is_email(&lower) {
                    Ok(lower)
                } else {
                    Err("must be an email address".into())
                }
            }
        }
    }
}

impl fmt::Display for SuppressionChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who put an address on the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuppressionSource {
    /// The recipient texted an opt-out keyword.
    Keyword,
    /// An operator, through `POST /suppressions`.
    Api,
    /// Twilio refused a send to an unsubscribed recipient (error 21610).
    Twilio,
    /// A SendGrid event: hard bounce, spam report, unsubscribe.
    SendGrid,
}

impl SuppressionSource {
    pub const ALL: [Self; 4] = [Self::Keyword, Self::Api, Self::Twilio, Self::SendGrid];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Keyword => "keyword",
            Self::Api => "api",
            Self::Twilio => "twilio",
            Self::SendGrid => "sendgrid",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// One entry of the suppression list: `address` gets nothing on `channel` from
/// `sender` (from any of our senders when `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppression {
    pub channel: SuppressionChannel,
    pub address: String,
    /// Our number a STOP was sent to; `None`: every sender.
    pub sender: Option<String>,
    pub reason: String,
    pub source: SuppressionSource,
    /// The message that caused it: the inbound STOP, or the send a provider refused.
    pub message_id: Option<String>,
    pub created_at: OffsetDateTime,
}

/// How far a phone opt-out reaches (`OPT_OUT_SCOPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OptOutScope {
    /// A STOP silences the number it was sent to, not our other numbers.
    #[default]
    Sender,
    /// A STOP silences all our numbers (one list, like AWS's default opt-out list).
    All,
}

impl OptOutScope {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sender" => Some(Self::Sender),
            "all" => Some(Self::All),
            _ => None,
        }
    }

    /// The `sender` a keyword from `address` to our number `to` is recorded under.
    pub fn entry_sender(self, to: &str) -> Option<String> {
        match self {
            Self::Sender => Some(to.to_owned()),
            Self::All => None,
        }
    }

    /// The entry among `entries` (one address's suppressions on `channel`) that
    /// stops a message from `from`, if any. Email suppressions and entries for
    /// every sender apply to all senders; a phone entry for one sender applies to
    /// that sender only, unless the scope is [`OptOutScope::All`].
    pub fn blocking<'a>(
        self,
        channel: SuppressionChannel,
        from: &str,
        entries: &'a [Suppression],
    ) -> Option<&'a Suppression> {
        entries.iter().find(|entry| {
            channel == SuppressionChannel::Email
                || self == Self::All
                || entry.sender.as_deref().is_none_or(|sender| sender == from)
        })
    }
}

/// What an inbound keyword asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyword {
    OptOut,
    OptIn,
    Help,
}

impl Keyword {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::OptOut => "opt_out",
            Self::OptIn => "opt_in",
            Self::Help => "help",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::OptOut, Self::OptIn, Self::Help]
            .into_iter()
            .find(|k| k.as_str() == s)
    }

    /// Whether a reply to this keyword may go to a suppressed recipient: only
    /// the opt-out confirmation.
    pub const fn reply_passes_suppression(self) -> bool {
        matches!(self, Self::OptOut)
    }
}

pub const DEFAULT_OPT_OUT_KEYWORDS: &[&str] = &[
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "OPTOUT",
    "OPT-OUT",
    "REVOKE",
];
pub const DEFAULT_OPT_IN_KEYWORDS: &[&str] = &["START", "UNSTOP", "YES"];
pub const DEFAULT_HELP_KEYWORDS: &[&str] = &["HELP", "INFO"];

pub const DEFAULT_OPT_OUT_REPLY: &str = "You have been unsubscribed and will receive no more \
     messages from this number. Reply START to resubscribe.";
pub const DEFAULT_HELP_REPLY: &str = "Reply STOP to unsubscribe, START to resubscribe.";

/// The keyword lists, upper-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keywords {
    opt_out: Vec<String>,
    opt_in: Vec<String>,
    help: Vec<String>,
}

impl Default for Keywords {
    fn default() -> Self {
        let own = |words: &[&str]| words.iter().map(|w| (*w).to_owned()).collect();
        Self {
            opt_out: own(DEFAULT_OPT_OUT_KEYWORDS),
            opt_in: own(DEFAULT_OPT_IN_KEYWORDS),
            help: own(DEFAULT_HELP_KEYWORDS),
        }
    }
}

impl Keywords {
    /// Lists from comma-separated text; `None` keeps a list's default. A word in
    /// two lists is refused.
    pub fn new(
        opt_out: Option<&str>,
        opt_in: Option<&str>,
        help: Option<&str>,
    ) -> Result<Self, String> {
        let defaults = Self::default();
        let list = |text: Option<&str>, default: Vec<String>| match text {
            None => default,
            Some(text) => text
                .split(',')
                .map(|w| w.trim().to_uppercase())
                .filter(|w| !w.is_empty())
                .collect(),
        };
        let keywords = Self {
            opt_out: list(opt_out, defaults.opt_out),
            opt_in: list(opt_in, defaults.opt_in),
            help: list(help, defaults.help),
        };
        for word in &keywords.opt_out {
            if keywords.opt_in.contains(word) || keywords.help.contains(word) {
                return Err(format!("{word} is in more than one keyword list"));
            }
        }
        if let Some(word) = keywords.opt_in.iter().find(|w| keywords.help.contains(w)) {
            return Err(format!("{word} is in more than one keyword list"));
        }
        Ok(keywords)
    }

    /// The keyword a message body is, if the whole body (trimmed, any case) is one.
    pub fn classify(&self, body: &str) -> Option<(Keyword, String)> {
        let word = body.trim().to_uppercase();
        [
            (Keyword::OptOut, &self.opt_out),
            (Keyword::OptIn, &self.opt_in),
            (Keyword::Help, &self.help),
        ]
        .into_iter()
        .find(|(_, words)| words.contains(&word))
        .map(|(keyword, _)| (keyword, word))
    }
}

/// What the compliance rules need at run time: keywords, replies and the scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptOutPolicy {
    pub keywords: Keywords,
    pub scope: OptOutScope,
    /// `OPT_OUT_REPLY`: the one confirmation of an opt-out.
    pub opt_out_reply: String,
    /// `OPT_IN_REPLY`: empty, no reply.
    pub opt_in_reply: String,
    /// `HELP_REPLY`.
    pub help_reply: String,
}

impl Default for OptOutPolicy {
    fn default() -> Self {
        Self {
            keywords: Keywords::default(),
            scope: OptOutScope::default(),
            opt_out_reply: DEFAULT_OPT_OUT_REPLY.to_owned(),
            opt_in_reply: String::new(),
            help_reply: DEFAULT_HELP_REPLY.to_owned(),
        }
    }
}

impl OptOutPolicy {
    /// The reply a keyword gets; `None` when its text is empty.
    pub fn reply(&self, keyword: Keyword) -> Option<&str> {
        let text = match keyword {
            Keyword::OptOut => &self.opt_out_reply,
            Keyword::OptIn => &self.opt_in_reply,
            Keyword::Help => &self.help_reply,
        };
        Some(text.as_str()).filter(|t| !t.trim().is_empty())
    }
}

/// Longest `reason` an operator may give.
pub const MAX_REASON_CHARS: usize = 500;

/// The reason a message to a suppressed recipient fails with.
pub fn opted_out_reason(entry: &Suppression) -> String {
    format!("the recipient has opted out ({})", entry.reason)
}

/// Validates an operator's sender: E.164, phone suppressions only.
pub fn validate_sender(
    channel: SuppressionChannel,
    sender: Option<&str>,
) -> Result<Option<String>, FieldError> {
    match (channel, sender.map(str::trim)) {
        (_, None) => Ok(None),
        (SuppressionChannel::Email, Some(_)) => Err(FieldError::new(
            "sender",
            "applies to phone suppressions only; an email suppression covers every sender",
        )),
        (SuppressionChannel::Phone, Some(s)) if is_e164(s) => Ok(Some(s.to_owned())),
        (SuppressionChannel::Phone, Some(_)) => Err(FieldError::new(
            "sender",
            "must be one of our phone numbers in E.164 format",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn entry(channel: SuppressionChannel, sender: Option<&str>) -> Suppression {
        Suppression {
            channel,
            address: "+12016661234".into(),
            sender: sender.map(str::to_owned),
            reason: "opt-out keyword STOP".into(),
            source: SuppressionSource::Keyword,
            message_id: None,
            created_at: datetime!(2026-12-01 10:00 UTC),
        }
    }

    #[test]
    fn a_keyword_is_the_whole_trimmed_body_in_any_case() {
        let k = Keywords::default();
        for body in ["STOP", "stop", "  Stop\n", "\tsToP "] {
            assert_eq!(
                k.classify(body),
                Some((Keyword::OptOut, "STOP".into())),
                "{body:?}"
            );
        }
        for (body, keyword) in [
            ("opt-out", Keyword::OptOut),
            ("Unsubscribe", Keyword::OptOut),
            ("revoke", Keyword::OptOut),
            ("start", Keyword::OptIn),
            ("UNSTOP", Keyword::OptIn),
            ("yes", Keyword::OptIn),
            ("help", Keyword::Help),
            (" Info ", Keyword::Help),
        ] {
            assert_eq!(k.classify(body).map(|(k, _)| k), Some(keyword), "{body:?}");
        }
    }

    #[test]
    fn a_keyword_inside_a_sentence_is_not_one() {
        let k = Keywords::default();
        for body in [
            "STOP please",
            "please stop",
            "don't stop",
            "STOP!",
            "ST OP",
            "",
            "  ",
            "helpful",
        ] {
            assert_eq!(k.classify(body), None, "{body:?}");
        }
    }

    #[test]
    fn keyword_lists_are_configurable_and_must_not_overlap() {
        let k = Keywords::new(Some("halt, Arret"), None, Some("aide")).unwrap();
        assert_eq!(k.classify("arret").map(|(k, _)| k), Some(Keyword::OptOut));
        assert_eq!(
            k.classify("STOP"),
            None,
            "a configured list replaces the default"
        );
        assert_eq!(k.classify("start").map(|(k, _)| k), Some(Keyword::OptIn));
        assert_eq!(k.classify("AIDE").map(|(k, _)| k), Some(Keyword::Help));
        assert!(Keywords::new(Some("STOP,HELP"), None, None).is_err());
        assert!(Keywords::new(None, Some("YES,INFO"), None).is_err());
    }

    #[test]
    fn a_phone_opt_out_silences_only_the_number_it_was_sent_to() {
        let ours = "+18045551234";
        let other = "+18045550000";
        let entries = [entry(SuppressionChannel::Phone, Some(ours))];
        let scope = OptOutScope::Sender;
        assert!(
            scope
                .blocking(SuppressionChannel::Phone, ours, &entries)
                .is_some()
        );
        assert!(
            scope
                .blocking(SuppressionChannel::Phone, other, &entries)
                .is_none()
        );
        assert!(
            OptOutScope::All
                .blocking(SuppressionChannel::Phone, other, &entries)
                .is_some(),
            "OPT_OUT_SCOPE=all: one list for all our numbers"
        );
        let everyone = [entry(SuppressionChannel::Phone, None)];
        assert!(
            scope
                .blocking(SuppressionChannel::Phone, other, &everyone)
                .is_some()
        );
        assert!(
            scope
                .blocking(SuppressionChannel::Phone, ours, &[])
                .is_none()
        );
    }

    #[test]
    fn an_email_suppression_applies_to_every_sender() {
        let entries = [entry(SuppressionChannel::Email, Some("news@example.com"))];
        assert!(
            OptOutScope::Sender
                .blocking(SuppressionChannel::Email, "billing@example.com", &entries)
                .is_some()
        );
    }

    #[test]
    fn addresses_are_normalized_per_channel() {
        let phone = SuppressionChannel::Phone;
        let email = SuppressionChannel::Email;
        assert_eq!(phone.normalize(" +12016661234 ").unwrap(), "+12016661234");
        assert!(phone.normalize("12016661234").is_err());
        assert!(phone.normalize("a@b.com").is_err());
        assert_eq!(
            email.normalize("Jane@Example.COM").unwrap(),
            "jane@example.com"
        );
        assert!(email.normalize("+12016661234").is_err());
        assert_eq!(SuppressionChannel::of_address("x@y.io"), email);
        assert_eq!(SuppressionChannel::of_address("+1201"), phone);
        assert_eq!(SuppressionChannel::of(Channel::Mms), phone);
    }

    #[test]
    fn senders_are_for_phone_suppressions_only() {
        assert_eq!(
            validate_sender(SuppressionChannel::Phone, Some("+18045551234")).unwrap(),
            Some("+18045551234".into())
        );
        assert_eq!(
            validate_sender(SuppressionChannel::Email, None).unwrap(),
            None
        );
        assert_eq!(
            validate_sender(SuppressionChannel::Email, Some("+18045551234"))
                .unwrap_err()
                .field,
            "sender"
        );
        assert!(validate_sender(SuppressionChannel::Phone, Some("ours")).is_err());
    }

    #[test]
    fn replies_are_skipped_when_empty() {
        let policy = OptOutPolicy::default();
        assert!(policy.reply(Keyword::OptOut).is_some());
        assert!(policy.reply(Keyword::Help).is_some());
        assert_eq!(policy.reply(Keyword::OptIn), None);
        assert!(Keyword::OptOut.reply_passes_suppression());
        assert!(!Keyword::OptIn.reply_passes_suppression());
        assert!(!Keyword::Help.reply_passes_suppression());
        assert_eq!(OptOutScope::parse(" ALL "), Some(OptOutScope::All));
        assert_eq!(OptOutScope::parse("everyone"), None);
    }
}
