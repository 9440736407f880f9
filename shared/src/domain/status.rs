//! The life cycle of a message and its legal transitions.
//!
//! ```text
//! outbound:  queued ──claim──► sending ──► sent
//!              ▲                  │   └──► failed
//!              └──── requeue ─────┘   (retryable provider error)
//! reports:   sending | sent ──► delivered | failed   (provider callbacks)
//! inbound:   received
//! ```
//! A claim may also take over a `sending` message whose lease has expired (the
//! delivery that held it crashed); the store enforces the lease expiry.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Accepted and waiting on the delivery queue.
    Queued,
    /// Claimed by a delivery attempt that holds a lease.
    Sending,
    /// Accepted by the provider.
    Sent,
    /// The provider reports it reached the recipient.
    Delivered,
    /// Will never be sent: rejected by the provider or out of retries.
    Failed,
    /// Received from a provider (inbound).
    Received,
}

impl Status {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Received => "received",
        }
    }

    /// A final status never changes again; redelivering such a message is a no-op.
    pub const fn is_final(self) -> bool {
        matches!(
            self,
            Self::Sent | Self::Delivered | Self::Failed | Self::Received
        )
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Queued,
            Self::Sending,
            Self::Sent,
            Self::Delivered,
            Self::Failed,
            Self::Received,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
    }
}

/// The state changes a delivery may make. Stores apply each one as a conditional
/// write on [`Transition::from`], so a stale or duplicate delivery cannot move a
/// message backwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// `queued → sending` (or taking over an expired `sending` lease).
    Claim,
    /// `sending → sent`.
    MarkSent,
    /// `sending → failed`.
    MarkFailed,
    /// `sending → queued`, to be retried later.
    Requeue,
    /// `sending | sent → delivered`: the provider reports delivery.
    ReportDelivered,
    /// `sending | sent → failed`: the provider reports it could not deliver.
    /// Reports only move forward: a delivered or failed message stays so, and a
    /// late `sent` after `delivered` changes nothing.
    ReportFailed,
}

impl Transition {
    /// Statuses the message may be in for the transition to apply.
    pub const fn from(self) -> &'static [Status] {
        match self {
            Self::Claim => &[Status::Queued, Status::Sending],
            Self::MarkSent | Self::MarkFailed | Self::Requeue => &[Status::Sending],
            Self::ReportDelivered | Self::ReportFailed => &[Status::Sending, Status::Sent],
        }
    }

    pub const fn to(self) -> Status {
        match self {
            Self::Claim => Status::Sending,
            Self::MarkSent => Status::Sent,
            Self::MarkFailed => Status::Failed,
            Self::Requeue => Status::Queued,
            Self::ReportDelivered => Status::Delivered,
            Self::ReportFailed => Status::Failed,
        }
    }

    /// Whether this transition may be applied to a message in `status`.
    pub fn applies_to(self, status: Status) -> bool {
        self.from().contains(&status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Status; 6] = [
        Status::Queued,
        Status::Sending,
        Status::Sent,
        Status::Delivered,
        Status::Failed,
        Status::Received,
    ];

    #[test]
    fn reports_only_move_forward() {
        for t in [Transition::ReportDelivered, Transition::ReportFailed] {
            assert!(t.applies_to(Status::Sending));
            assert!(t.applies_to(Status::Sent));
            for settled in [
                Status::Delivered,
                Status::Failed,
                Status::Received,
                Status::Queued,
            ] {
                assert!(!t.applies_to(settled), "{t:?} from {settled:?}");
            }
        }
        assert_eq!(Transition::ReportDelivered.to(), Status::Delivered);
        assert_eq!(Transition::ReportFailed.to(), Status::Failed);
    }

    #[test]
    fn final_statuses_accept_no_delivery_transition() {
        for status in ALL.into_iter().filter(|s| s.is_final()) {
            for t in [
                Transition::Claim,
                Transition::MarkSent,
                Transition::MarkFailed,
                Transition::Requeue,
            ] {
                assert!(!t.applies_to(status), "{t:?} must not apply to {status:?}");
            }
        }
    }

    #[test]
    fn claim_starts_from_queued_or_an_expired_lease() {
        assert!(Transition::Claim.applies_to(Status::Queued));
        assert!(Transition::Claim.applies_to(Status::Sending));
        assert_eq!(Transition::Claim.to(), Status::Sending);
    }

    #[test]
    fn outcomes_need_a_claim_first() {
        for t in [
            Transition::MarkSent,
            Transition::MarkFailed,
            Transition::Requeue,
        ] {
            assert!(t.applies_to(Status::Sending));
            assert!(!t.applies_to(Status::Queued), "{t:?} from queued");
        }
        assert_eq!(Transition::MarkSent.to(), Status::Sent);
        assert_eq!(Transition::MarkFailed.to(), Status::Failed);
        assert_eq!(Transition::Requeue.to(), Status::Queued);
    }

    #[test]
    fn status_names_round_trip() {
        for status in ALL {
            assert_eq!(Status::parse(status.as_str()), Some(status));
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
        }
        assert_eq!(Status::parse("undelivered"), None);
    }
}
