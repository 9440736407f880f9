//! API keys: `APIKEY#<SHA-256 of the key>` items holding the key id, name,
//! scopes and timestamps, never the key.

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{DynamoDbStore, Item, rfc3339, s, string_attribute, unavailable};
use crate::domain::Scope;
use crate::domain::access::ApiKey;
use crate::ports::{ApiKeyAdmin, ApiKeyStore, StoreError};

const PREFIX: &str = "APIKEY#";

impl DynamoDbStore {
    pub fn api_key_key(hash: &str) -> AttributeValue {
        s(format!("{PREFIX}{hash}"))
    }
}

fn time_attribute(item: &Item, name: &str) -> Result<Option<OffsetDateTime>, StoreError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::S(text)) => OffsetDateTime::parse(text, &Rfc3339)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("{name}: {e}"))),
        Some(_) => Err(StoreError::Corrupt(format!("{name} is not a timestamp"))),
    }
}

fn to_api_key(item: &Item) -> Result<ApiKey, StoreError> {
    let scopes = match item.get("scopes") {
        Some(AttributeValue::L(list)) => list
            .iter()
            .filter_map(|v| v.as_s().ok())
            .filter_map(|name| Scope::parse(name))
            .collect(),
        _ => Vec::new(),
    };
    Ok(ApiKey {
        key_id: string_attribute(item, "key_id")?,
        name: string_attribute(item, "name")?,
        scopes,
        created_at: time_attribute(item, "created_at")?
            .ok_or_else(|| StoreError::Corrupt("API key without created_at".into()))?,
        last_used_at: time_attribute(item, "last_used_at")?,
        revoked_at: time_attribute(item, "revoked_at")?,
    })
}

fn is_condition_failure(e: &SdkError<UpdateItemError>) -> bool {
    matches!(
        e.as_service_error(),
        Some(UpdateItemError::ConditionalCheckFailedException(_))
    )
}

impl ApiKeyStore for DynamoDbStore {
    async fn api_key(&self, hash: &str) -> Result<Option<ApiKey>, StoreError> {
        self.get_item(Self::api_key_key(hash))
            .await?
            .map(|item| to_api_key(&item))
            .transpose()
    }

    async fn touch_api_key(&self, hash: &str, now: OffsetDateTime) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", Self::api_key_key(hash))
            .update_expression("SET last_used_at = :now")
            .condition_expression(
                "attribute_exists(pk) AND (attribute_not_exists(last_used_at) OR last_used_at < :minute_ago)",
            )
            .expression_attribute_values(":now", rfc3339(now))
            .expression_attribute_values(":minute_ago", rfc3339(now - time::Duration::MINUTE))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }
}

impl ApiKeyAdmin for DynamoDbStore {
    async fn create_api_key(&self, hash: &str, key: &ApiKey) -> Result<bool, StoreError> {
        let scopes = key.scopes.iter().map(|scope| s(scope.as_str())).collect();
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", Self::api_key_key(hash))
            .item("key_id", s(&key.key_id))
            .item("name", s(&key.name))
            .item("scopes", AttributeValue::L(scopes))
            .item("created_at", rfc3339(key.created_at))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn api_keys(&self) -> Result<Vec<(String, ApiKey)>, StoreError> {
        let mut keys = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("begins_with(pk, :prefix)")
                .expression_attribute_values(":prefix", s(PREFIX))
                .set_exclusive_start_key(start)
                .consistent_read(true)
                .send()
                .await
                .map_err(unavailable)?;
            for item in page.items.unwrap_or_default() {
                let hash = string_attribute(&item, "pk")?
                    .trim_start_matches(PREFIX)
                    .to_owned();
                keys.push((hash, to_api_key(&item)?));
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        keys.sort_by_key(|(_, key)| key.created_at);
        Ok(keys)
    }

    async fn revoke_api_key(&self, hash: &str, now: OffsetDateTime) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", Self::api_key_key(hash))
            .update_expression("SET revoked_at = if_not_exists(revoked_at, :now)")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":now", rfc3339(now))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }
}
