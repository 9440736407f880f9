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
//! delivery that held it crashed); the store enforces the lease expiry. An
//! outbound message still `queued` may be withdrawn (removed) when its enqueue
//! failed. [`Transition`] is the table of these moves.

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

/// What a transition asks of the delivery lease a message may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseRule {
    /// Nothing: the lease (if any) plays no part.
    Any,
    /// The caller's lease must be the one the message holds.
    Held,
    /// The message's lease must have expired (its delivery crashed): it may be
    /// taken over.
    Expired,
}

/// A status a transition may start from, and what it asks of the lease there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub status: Status,
    pub lease: LeaseRule,
}

/// The state changes a message may go through after it is stored: the one table
/// of allowed moves. Stores apply each one as a conditional write built from
/// [`Transition::from`] (statuses and lease rules) and [`Transition::to`], so a
/// stale or duplicate delivery or report cannot move a message backwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// `queued → sending`, or taking over a `sending` message whose lease expired.
    Claim,
    /// `sending → sent`, under the lease held.
    MarkSent,
    /// `sending → failed`, under the lease held.
    MarkFailed,
    /// `sending → queued` under the lease held, to be retried later.
    Requeue,
    /// `queued →` removed: undoing an accept whose enqueue failed.
    Withdraw,
    /// `sending | sent → delivered`: the provider reports delivery.
    ReportDelivered,
    /// `sending | sent → failed`: the provider reports it could not deliver.
    /// Reports only move forward: a delivered or failed message stays so, and a
    /// late `sent` after `delivered` changes nothing.
    ReportFailed,
}

impl Transition {
    pub const ALL: [Self; 7] = [
        Self::Claim,
        Self::MarkSent,
        Self::MarkFailed,
        Self::Requeue,
        Self::Withdraw,
        Self::ReportDelivered,
        Self::ReportFailed,
    ];

    /// The statuses the message may be in for the transition to apply, each with
    /// what it asks of the lease.
    pub const fn from(self) -> &'static [Origin] {
        use LeaseRule::{Any, Expired, Held};
        match self {
            Self::Claim => &[
                Origin {
                    status: Status::Queued,
                    lease: Any,
                },
                Origin {
                    status: Status::Sending,
                    lease: Expired,
                },
            ],
            Self::MarkSent | Self::MarkFailed | Self::Requeue => &[Origin {
                status: Status::Sending,
                lease: Held,
            }],
            Self::Withdraw => &[Origin {
                status: Status::Queued,
                lease: Any,
            }],
            Self::ReportDelivered | Self::ReportFailed => &[
                Origin {
                    status: Status::Sending,
                    lease: Any,
                },
                Origin {
                    status: Status::Sent,
                    lease: Any,
                },
            ],
        }
    }

    /// The status the message ends in; `None` if the transition removes it.
    pub const fn to(self) -> Option<Status> {
        match self {
            Self::Claim => Some(Status::Sending),
            Self::MarkSent => Some(Status::Sent),
            Self::MarkFailed | Self::ReportFailed => Some(Status::Failed),
            Self::Requeue => Some(Status::Queued),
            Self::Withdraw => None,
            Self::ReportDelivered => Some(Status::Delivered),
        }
    }

    /// Whether this transition may be applied to a message in `status` (lease
    /// rules aside: the store checks those).
    pub fn applies_to(self, status: Status) -> bool {
        self.from().iter().any(|origin| origin.status == status)
    }

    /// Whether the transition is made under a lease the caller holds.
    pub fn needs_held_lease(self) -> bool {
        self.from()
            .iter()
            .any(|origin| origin.lease == LeaseRule::Held)
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

    /// A transition, its origins (status and lease rule) and its target.
    type Row = (Transition, &'static [(Status, LeaseRule)], Option<Status>);

    /// The table of allowed moves, spelled out: from which statuses (with their
    /// lease rules) each transition starts, and where it ends.
    #[test]
    fn the_table_of_allowed_moves() {
        use LeaseRule::{Any, Expired, Held};
        use Status::*;
        let table: [Row; 7] = [
            (
                Transition::Claim,
                &[(Queued, Any), (Sending, Expired)],
                Some(Sending),
            ),
            (Transition::MarkSent, &[(Sending, Held)], Some(Sent)),
            (Transition::MarkFailed, &[(Sending, Held)], Some(Failed)),
            (Transition::Requeue, &[(Sending, Held)], Some(Queued)),
            (Transition::Withdraw, &[(Queued, Any)], None),
            (
                Transition::ReportDelivered,
                &[(Sending, Any), (Sent, Any)],
                Some(Delivered),
            ),
            (
                Transition::ReportFailed,
                &[(Sending, Any), (Sent, Any)],
                Some(Failed),
            ),
        ];
        assert_eq!(table.map(|(t, _, _)| t), Transition::ALL);
        for (transition, from, to) in table {
            let origins: Vec<(Status, LeaseRule)> = transition
                .from()
                .iter()
                .map(|o| (o.status, o.lease))
                .collect();
            assert_eq!(origins, from, "{transition:?} from");
            assert_eq!(transition.to(), to, "{transition:?} to");
            for status in ALL {
                assert_eq!(
                    transition.applies_to(status),
                    from.iter().any(|(s, _)| *s == status),
                    "{transition:?} from {status:?}"
                );
            }
            assert_eq!(
                transition.needs_held_lease(),
                from.iter().any(|(_, lease)| *lease == Held),
                "{transition:?}"
            );
        }
    }

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
            assert!(t.from().iter().all(|o| o.lease == LeaseRule::Any));
        }
    }

    #[test]
    fn final_statuses_accept_no_delivery_transition() {
        for status in ALL.into_iter().filter(|s| s.is_final()) {
            for t in [
                Transition::Claim,
                Transition::MarkSent,
                Transition::MarkFailed,
                Transition::Requeue,
                Transition::Withdraw,
            ] {
                assert!(!t.applies_to(status), "{t:?} must not apply to {status:?}");
            }
        }
    }

    #[test]
    fn claim_takes_over_only_an_expired_lease() {
        let sending = Transition::Claim
            .from()
            .iter()
            .find(|o| o.status == Status::Sending)
            .unwrap();
        assert_eq!(sending.lease, LeaseRule::Expired);
        assert!(!Transition::Claim.needs_held_lease());
    }

    #[test]
    fn outcomes_need_the_claims_lease() {
        for t in [
            Transition::MarkSent,
            Transition::MarkFailed,
            Transition::Requeue,
        ] {
            assert!(t.applies_to(Status::Sending));
            assert!(!t.applies_to(Status::Queued), "{t:?} from queued");
            assert!(t.needs_held_lease(), "{t:?}");
        }
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
