//! Status moves as conditional writes. [`Transition`] is the table of allowed
//! moves; [`condition`] renders one into a DynamoDB condition expression, and
//! is the one place a status condition is written.

use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::types::builders::DeleteBuilder;
use time::OffsetDateTime;

use super::{epoch, s};
use crate::domain::{LeaseRule, Status, Transition};
use crate::ports::StoreError;

/// A condition expression with the names and values it refers to.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Condition {
    pub expression: String,
    pub names: Vec<(&'static str, &'static str)>,
    pub values: Vec<(String, AttributeValue)>,
}

impl Condition {
    /// The condition on an update.
    pub(super) fn on_update(self, mut update: UpdateItemFluentBuilder) -> UpdateItemFluentBuilder {
        update = update.condition_expression(self.expression);
        for (placeholder, name) in self.names {
            update = update.expression_attribute_names(placeholder, name);
        }
        for (placeholder, value) in self.values {
            update = update.expression_attribute_values(placeholder, value);
        }
        update
    }

    /// The condition on a delete (in a transaction).
    pub(super) fn on_delete(self, mut delete: DeleteBuilder) -> DeleteBuilder {
        delete = delete.condition_expression(self.expression);
        for (placeholder, name) in self.names {
            delete = delete.expression_attribute_names(placeholder, name);
        }
        for (placeholder, value) in self.values {
            delete = delete.expression_attribute_values(placeholder, value);
        }
        delete
    }
}

/// The status a transition writes; an error for one that removes the message.
pub(super) fn target(transition: Transition) -> Result<Status, StoreError> {
    transition.to().ok_or_else(|| {
        StoreError::Corrupt(format!(
            "{transition:?} removes the message, it sets no status"
        ))
    })
}

/// The condition under which `transition` applies: the message is in one of its
/// origin statuses, with the lease rule of that status holding. A lease the
/// caller must hold is `held_lease`; an expired lease is one whose
/// `lease_expires_at` (epoch seconds) is before `now`.
///
/// Its placeholders (`#status`, `:from_<status>`, `:held_lease`, `:lease_now`)
/// are its own: an update names its other values differently.
pub(super) fn condition(
    transition: Transition,
    held_lease: Option<&str>,
    now: OffsetDateTime,
) -> Result<Condition, StoreError> {
    let mut values = Vec::new();
    let mut clauses = Vec::new();
    for origin in transition.from() {
        let placeholder = format!(":from_{}", origin.status.as_str());
        let mut clause = format!("#status = {placeholder}");
        values.push((placeholder, s(origin.status.as_str())));
        match origin.lease {
            LeaseRule::Any => {}
            LeaseRule::Held => {
                let lease = held_lease.ok_or_else(|| {
                    StoreError::Corrupt(format!("{transition:?} needs the lease it is made under"))
                })?;
                clause.push_str(" AND lease_id = :held_lease");
                values.push((":held_lease".to_owned(), s(lease)));
            }
            LeaseRule::Expired => {
                clause.push_str(" AND lease_expires_at < :lease_now");
                values.push((":lease_now".to_owned(), epoch(now)));
            }
        }
        clauses.push(clause);
    }
    let expression = match clauses.as_slice() {
        [only] => only.clone(),
        _ => clauses
            .iter()
            .map(|clause| {
                if clause.contains(" AND ") {
                    format!("({clause})")
                } else {
                    clause.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" OR "),
    };
    Ok(Condition {
        expression,
        names: vec![("#status", "status")],
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2024-11-01 14:00 UTC);

    fn rendered(transition: Transition, lease: Option<&str>) -> (String, Vec<(String, String)>) {
        let condition = condition(transition, lease, NOW).unwrap();
        assert_eq!(condition.names, [("#status", "status")]);
        let values = condition
            .values
            .into_iter()
            .map(|(k, v)| match v {
                AttributeValue::S(v) | AttributeValue::N(v) => (k, v),
                other => panic!("{other:?}"),
            })
            .collect();
        (condition.expression, values)
    }

    fn pairs(values: &[(&str, &str)]) -> Vec<(String, String)> {
        values
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_claim_takes_a_queued_message_or_an_expired_lease() {
        let epoch = NOW.unix_timestamp().to_string();
        assert_eq!(
            rendered(Transition::Claim, None),
            (
                "#status = :from_queued OR (#status = :from_sending AND lease_expires_at < :lease_now)"
                    .to_owned(),
                pairs(&[
                    (":from_queued", "queued"),
                    (":from_sending", "sending"),
                    (":lease_now", &epoch),
                ])
            )
        );
    }

    #[test]
    fn outcomes_are_recorded_under_the_lease_held() {
        for t in [
            Transition::MarkSent,
            Transition::MarkFailed,
            Transition::Requeue,
        ] {
            assert_eq!(
                rendered(t, Some("lease-1")),
                (
                    "#status = :from_sending AND lease_id = :held_lease".to_owned(),
                    pairs(&[(":from_sending", "sending"), (":held_lease", "lease-1")])
                )
            );
            assert!(matches!(
                condition(t, None, NOW),
                Err(StoreError::Corrupt(_))
            ));
        }
    }

    #[test]
    fn withdrawing_needs_a_queued_message() {
        assert_eq!(
            rendered(Transition::Withdraw, None),
            (
                "#status = :from_queued".to_owned(),
                pairs(&[(":from_queued", "queued")])
            )
        );
        assert!(target(Transition::Withdraw).is_err());
    }

    #[test]
    fn reports_apply_to_sending_or_sent() {
        for t in [Transition::ReportDelivered, Transition::ReportFailed] {
            assert_eq!(
                rendered(t, None),
                (
                    "#status = :from_sending OR #status = :from_sent".to_owned(),
                    pairs(&[(":from_sending", "sending"), (":from_sent", "sent")])
                )
            );
        }
    }
}
