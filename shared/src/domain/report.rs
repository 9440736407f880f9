//! What providers tell us about messages after we handed them over: status
//! callbacks (Twilio) and events (SendGrid), reduced to what moves a message.

use super::{ProviderKind, Transition};

/// The outcome a provider reports. Only `Delivered` and `Failed` change a
/// message; the others (queued, sent, processed, deferred, ...) are progress
/// we already know about from the provider's answer to our request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportedOutcome {
    /// Still on its way (Twilio `accepted`/`queued`/`sending`/`sent`, SendGrid
    /// `processed`/`deferred`): nothing to record.
    InProgress,
    /// Reached the recipient (Twilio `delivered`, SendGrid `delivered`).
    Delivered,
    /// Will not reach the recipient (Twilio `undelivered`/`failed`, SendGrid
    /// `bounce`/`dropped`).
    Failed,
}

impl ReportedOutcome {
    /// The transition this outcome asks for, if any.
    pub const fn transition(self) -> Option<Transition> {
        match self {
            Self::InProgress => None,
            Self::Delivered => Some(Transition::ReportDelivered),
            Self::Failed => Some(Transition::ReportFailed),
        }
    }
}

/// One provider report about one message we sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    pub provider: ProviderKind,
    /// The provider's id of the message (Twilio `MessageSid`; SendGrid's
    /// `sg_message_id` cut at its first `.`, which is the `X-Message-Id` we got).
    pub provider_message_id: Option<String>,
    /// Our message id, when the provider echoes it (SendGrid `custom_args`).
    pub message_id: Option<String>,
    pub outcome: ReportedOutcome,
    /// The provider's status or event name as sent (`delivered`, `bounce`, ...).
    pub provider_status: String,
    /// Why it failed, when the provider says (Twilio `ErrorCode`, SendGrid `reason`).
    pub detail: Option<String>,
    /// Unique id of this report, when the provider gives one (SendGrid
    /// `sg_event_id`), used to ignore redelivered events.
    pub event_id: Option<String>,
    /// The recipient told the provider they want no more messages, or cannot
    /// receive any (SendGrid hard bounce, spam report, unsubscribe).
    pub opt_out: Option<OptOutSignal>,
}

/// An address a provider says must not be written to again, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptOutSignal {
    /// As the provider gave it; normalized when it is put on the list.
    pub address: String,
    pub reason: String,
}
