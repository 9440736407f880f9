//! Provider reports applied to messages, and provider event ids already handled.

use time::OffsetDateTime;

use super::condition::{condition, target};
use super::{
    APPEND_HISTORY, DynamoDbStore, epoch, history_entry, rfc3339, s, string_attribute, to_message,
    unavailable,
};
use crate::domain::{ProviderKind, Transition};
use crate::ports::{ReportApplied, ReportStore, StoreError};

/// How long a handled event id is remembered (SendGrid retries for up to 72 hours).
const EVENT_RETENTION: time::Duration = time::Duration::days(7);

impl DynamoDbStore {
    fn event_key(
        provider: ProviderKind,
        event_id: &str,
    ) -> aws_sdk_dynamodb::types::AttributeValue {
        s(format!("EVENT#{}#{event_id}", provider.as_str()))
    }
}

impl ReportStore for DynamoDbStore {
    async fn find_by_provider_id(
        &self,
        provider: ProviderKind,
        provider_message_id: &str,
    ) -> Result<Option<String>, StoreError> {
        self.get_item(Self::provider_key(provider, provider_message_id))
            .await?
            .map(|item| string_attribute(&item, "message_id"))
            .transpose()
    }

    async fn apply_report(
        &self,
        message_id: &str,
        transition: Transition,
        detail: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<ReportApplied, StoreError> {
        let to = target(transition)?;
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", Self::message_key(message_id))
            .update_expression(format!(
                "SET #status = :to, updated_at = :now{}, {APPEND_HISTORY}",
                if detail.is_some() {
                    ", last_error = :detail"
                } else {
                    ""
                }
            ))
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":to", s(to.as_str()))
            .expression_attribute_values(":now", rfc3339(now))
            .expression_attribute_values(":history", history_entry(now, to, detail))
            .expression_attribute_values(
                ":no_history",
                aws_sdk_dynamodb::types::AttributeValue::L(Vec::new()),
            )
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew);
        if let Some(detail) = detail {
            update = update.expression_attribute_values(":detail", s(detail));
        }
        let update = condition(transition, None, now)?.on_update(update);
        match update.send().await.map_err(|e| e.into_service_error()) {
            Ok(output) => {
                let item = output
                    .attributes
                    .ok_or_else(|| StoreError::Corrupt("update returned no item".into()))?;
                Ok(ReportApplied::Applied(to_message(item)?))
            }
            Err(e) if e.is_conditional_check_failed_exception() => {
                match self.get_item(Self::message_key(message_id)).await? {
                    Some(item) => Ok(ReportApplied::Ignored(to_message(item)?)),
                    None => Ok(ReportApplied::NotFound),
                }
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn event_seen(&self, provider: ProviderKind, event_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .get_item(Self::event_key(provider, event_id))
            .await?
            .is_some())
    }

    async fn remember_event(
        &self,
        provider: ProviderKind,
        event_id: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", Self::event_key(provider, event_id))
            .item("expires_at", epoch(now + EVENT_RETENTION))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
