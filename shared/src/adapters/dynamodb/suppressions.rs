//! The suppression list: one `SUPPRESSION#<channel>#<address>` item per
//! address, holding each of its entries as an attribute `S#<sender>` (`S#*`:
//! every sender). Checking a recipient on the send path is one GetItem.
//!
//! The item also carries `suppression_channel` and `suppressed_address`, indexed
//! by GSI `suppression-list` (the whole list, by channel and address), and
//! `entry_count`, so the item is deleted with its last entry.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{DynamoDbStore, Item, s, string_attribute, unavailable};
use crate::domain::{Suppression, SuppressionChannel, SuppressionSource};
use crate::ports::{Lift, Page, Position, StoreError, Suppressed, SuppressionList};

const INDEX: &str = "suppression-list";
const CHANNEL: &str = "suppression_channel";
const ADDRESS: &str = "suppressed_address";
const COUNT: &str = "entry_count";
const ENTRY_PREFIX: &str = "S#";
/// The sender key of an entry for every sender; sorts before any `+` number.
const EVERY_SENDER: &str = "*";

/// One `S#<sender>` attribute.
#[derive(Debug, Serialize, Deserialize)]
struct EntryItem {
    sender: Option<String>,
    reason: String,
    source: String,
    #[serde(default)]
    message_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

impl DynamoDbStore {
    pub fn suppression_key(channel: SuppressionChannel, address: &str) -> AttributeValue {
        s(format!("SUPPRESSION#{channel}#{address}"))
    }
}

fn sender_key(sender: Option<&str>) -> &str {
    sender.unwrap_or(EVERY_SENDER)
}

fn entry_attribute(sender: Option<&str>) -> String {
    format!("{ENTRY_PREFIX}{}", sender_key(sender))
}

fn number(n: i64) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

/// The entries of one item, by sender key (every-sender first).
fn entries(item: &Item) -> Result<Vec<Suppression>, StoreError> {
    let channel = string_attribute(item, CHANNEL)?;
    let channel = SuppressionChannel::parse(&channel)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown suppression channel {channel:?}")))?;
    let address = string_attribute(item, ADDRESS)?;
    let by_sender: BTreeMap<&str, &AttributeValue> = item
        .iter()
        .filter_map(|(name, value)| Some((name.strip_prefix(ENTRY_PREFIX)?, value)))
        .collect();
    by_sender
        .into_values()
        .map(|value| {
            let entry: EntryItem = serde_dynamo::from_attribute_value(value.clone())
                .map_err(|e| StoreError::Corrupt(format!("suppression entry: {e}")))?;
            Ok(Suppression {
                channel,
                address: address.clone(),
                sender: entry.sender,
                reason: entry.reason,
                source: SuppressionSource::parse(&entry.source).ok_or_else(|| {
                    StoreError::Corrupt(format!("unknown suppression source {:?}", entry.source))
                })?,
                message_id: entry.message_id,
                created_at: entry.created_at,
            })
        })
        .collect()
}

/// Where a listing position points: a channel, an address and a sender key.
fn split_position(position: &Position) -> Option<(SuppressionChannel, &str, &str)> {
    let (channel, address) = position.sort.split_once('|')?;
    Some((SuppressionChannel::parse(channel)?, address, &position.id))
}

impl SuppressionList for DynamoDbStore {
    async fn suppressions_of(
        &self,
        channel: SuppressionChannel,
        address: &str,
    ) -> Result<Vec<Suppression>, StoreError> {
        match self
            .get_item(Self::suppression_key(channel, address))
            .await?
        {
            Some(item) => entries(&item),
            None => Ok(Vec::new()),
        }
    }

    async fn suppress(&self, entry: &Suppression) -> Result<Suppressed, StoreError> {
        let value = serde_dynamo::to_attribute_value(EntryItem {
            sender: entry.sender.clone(),
            reason: entry.reason.clone(),
            source: entry.source.as_str().to_owned(),
            message_id: entry.message_id.clone(),
            created_at: entry.created_at,
        })
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", Self::suppression_key(entry.channel, &entry.address))
            .update_expression(
                "SET #entry = :entry, #channel = :channel, #address = :address ADD #count :one",
            )
            .condition_expression("attribute_not_exists(#entry)")
            .expression_attribute_names("#entry", entry_attribute(entry.sender.as_deref()))
            .expression_attribute_names("#channel", CHANNEL)
            .expression_attribute_names("#address", ADDRESS)
            .expression_attribute_names("#count", COUNT)
            .expression_attribute_values(":entry", value)
            .expression_attribute_values(":channel", s(entry.channel.as_str()))
            .expression_attribute_values(":address", s(&entry.address))
            .expression_attribute_values(":one", number(1))
            .send()
            .await
            .map_err(|e| e.into_service_error());
        match result {
            Ok(_) => Ok(Suppressed::Added(entry.clone())),
            Err(e) if e.is_conditional_check_failed_exception() => self
                .suppressions_of(entry.channel, &entry.address)
                .await?
                .into_iter()
                .find(|existing| existing.sender == entry.sender)
                .map(Suppressed::Existing)
                .ok_or_else(|| {
                    StoreError::Conflict("a suppression entry came and went while adding it".into())
                }),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn lift(
        &self,
        channel: SuppressionChannel,
        address: &str,
        which: &Lift,
    ) -> Result<Vec<Suppression>, StoreError> {
        let key = Self::suppression_key(channel, address);
        let sender = match which {
            Lift::All => {
                let old = self
                    .client
                    .delete_item()
                    .table_name(&self.table)
                    .key("pk", key)
                    .return_values(ReturnValue::AllOld)
                    .send()
                    .await
                    .map_err(unavailable)?
                    .attributes;
                return old.map_or(Ok(Vec::new()), |item| entries(&item));
            }
            Lift::Sender(sender) => sender.as_deref(),
        };
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", key.clone())
            .update_expression("REMOVE #entry ADD #count :minus_one")
            .condition_expression("attribute_exists(#entry)")
            .expression_attribute_names("#entry", entry_attribute(sender))
            .expression_attribute_names("#count", COUNT)
            .expression_attribute_values(":minus_one", number(-1))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| e.into_service_error());
        let old = match result {
            Ok(output) => output.attributes.unwrap_or_default(),
            Err(e) if e.is_conditional_check_failed_exception() => return Ok(Vec::new()),
            Err(e) => return Err(unavailable(e)),
        };
        let old_entries = entries(&old)?;
        if old_entries.len() <= 1 {
            // That was the last entry: drop the item unless one was added meanwhile.
            let deleted = self
                .client
                .delete_item()
                .table_name(&self.table)
                .key("pk", key)
                .condition_expression("#count <= :zero")
                .expression_attribute_names("#count", COUNT)
                .expression_attribute_values(":zero", number(0))
                .send()
                .await
                .map_err(|e| e.into_service_error());
            match deleted {
                Ok(_) => {}
                Err(e) if e.is_conditional_check_failed_exception() => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        Ok(old_entries
            .into_iter()
            .filter(|entry| entry.sender.as_deref() == sender)
            .collect())
    }

    async fn suppression_page(
        &self,
        channel: Option<SuppressionChannel>,
        limit: usize,
        after: Option<&Position>,
    ) -> Result<Page<Suppression>, StoreError> {
        let start = after.and_then(split_position);
        let channels = match channel {
            Some(channel) => vec![channel],
            None => SuppressionChannel::ALL.to_vec(),
        };
        let mut found: Vec<Suppression> = Vec::new();
        'channels: for channel in channels {
            let from = match start {
                Some((at, _, _)) if at > channel => continue,
                Some((at, address, _)) if at == channel => Some(address),
                _ => None,
            };
            let mut exclusive_start = None;
            loop {
                let mut query = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .index_name(INDEX)
                    .expression_attribute_names("#channel", CHANNEL)
                    .expression_attribute_values(":channel", s(channel.as_str()))
                    .limit(i32::try_from(limit + 1).unwrap_or(i32::MAX))
                    .set_exclusive_start_key(exclusive_start.take());
                query = match from {
                    Some(address) => query
                        .key_condition_expression("#channel = :channel AND #address >= :from")
                        .expression_attribute_names("#address", ADDRESS)
                        .expression_attribute_values(":from", s(address)),
                    None => query.key_condition_expression("#channel = :channel"),
                };
                let output = query.send().await.map_err(unavailable)?;
                for item in output.items.unwrap_or_default() {
                    for entry in entries(&item)? {
                        let seen = start.is_some_and(|(at, address, sender)| {
                            at == channel
                                && entry.address == address
                                && sender_key(entry.sender.as_deref()) <= sender
                        });
                        if !seen {
                            found.push(entry);
                        }
                    }
                    if found.len() > limit {
                        break 'channels;
                    }
                }
                match output.last_evaluated_key {
                    Some(key) if !key.is_empty() => exclusive_start = Some(key),
                    _ => break,
                }
            }
        }
        let more = found.len() > limit;
        found.truncate(limit);
        let next = found.last().filter(|_| more).map(|last| Position {
            sort: format!("{}|{}", last.channel, last.address),
            id: sender_key(last.sender.as_deref()).to_owned(),
        });
        Ok(Page { items: found, next })
    }
}
