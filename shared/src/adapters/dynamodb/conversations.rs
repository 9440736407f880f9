//! Conversation summaries and the conversation read paths.
//!
//! Items:
//! - `CONV#<id>`: the summary of a conversation (`id`, `channel`, `participants`,
//!   `message_count`, `last_message`, `last_message_at`, `created_at`), and
//!   `last_sort`, the `conversation_sort` of its last message;
//! - `CONVPART#<id>#<participant>`: the same summary once per participant, with
//!   `participant`, indexed by GSI `participant-conversations` (`participant`,
//!   `last_sort`) for "a participant's conversations, latest first".
//!
//! Each item is updated on its own with commutative writes: `ADD message_count`,
//! and the last message replaced only under the condition that it is older
//! (`last_sort < :sort`). Concurrent messages of one conversation never conflict,
//! and the summary converges on the latest message whatever order they arrive in.

use aws_sdk_dynamodb::types::AttributeValue;
use futures::future::try_join_all;

use super::item::{ConversationItem, LastMessageItem};
use super::{DynamoDbStore, Item, rfc3339, s, to_message, unavailable};
use crate::domain::conversation::{LastMessage, sort_key};
use crate::domain::{Conversation, ConversationKey, Message};
use crate::ports::{ConversationLog, ConversationReader, Page, Position, StoreError};

/// A GSI read path: its keys and its order.
struct IndexQuery {
    name: &'static str,
    hash: &'static str,
    sort: &'static str,
    forward: bool,
}

/// A conversation's messages, oldest first.
const MESSAGES: IndexQuery = IndexQuery {
    name: "conversation-messages",
    hash: "conversation_id",
    sort: "conversation_sort",
    forward: true,
};

/// A participant's conversations, latest activity first.
const PARTICIPANT_CONVERSATIONS: IndexQuery = IndexQuery {
    name: "participant-conversations",
    hash: "participant",
    sort: "last_sort",
    forward: false,
};

impl DynamoDbStore {
    pub fn conversation_key(id: &str) -> AttributeValue {
        s(format!("CONV#{id}"))
    }

    pub fn participant_key(id: &str, participant: &str) -> AttributeValue {
        s(format!("CONVPART#{id}#{participant}"))
    }

    /// Updates one summary item: counts the message and, if it is the latest,
    /// makes it the last message.
    async fn update_summary(
        &self,
        pk: AttributeValue,
        participant: Option<&str>,
        summary: &SummaryValues,
    ) -> Result<(), StoreError> {
        for latest in [true, false] {
            let mut set = vec![
                "#id = :id",
                "#channel = :channel",
                "#participants = :participants",
                "#created = if_not_exists(#created, :now)",
            ];
            if participant.is_some() {
                set.push("#participant = :participant");
            }
            if latest {
                set.extend([
                    "#last = :last",
                    "#preview = :preview",
                    "#last_at = :last_at",
                    "#sort = :sort",
                ]);
            }
            let mut update = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", pk.clone())
                .update_expression(format!("SET {} ADD #count :one", set.join(", ")))
                .expression_attribute_names("#id", "id")
                .expression_attribute_names("#channel", "channel")
                .expression_attribute_names("#participants", "participants")
                .expression_attribute_names("#created", "created_at")
                .expression_attribute_names("#count", "message_count")
                .expression_attribute_values(":id", s(&summary.id))
                .expression_attribute_values(":channel", s(summary.channel))
                .expression_attribute_values(":participants", summary.participants.clone())
                .expression_attribute_values(":now", summary.now.clone())
                .expression_attribute_values(":one", AttributeValue::N("1".into()));
            if let Some(participant) = participant {
                update = update
                    .expression_attribute_names("#participant", "participant")
                    .expression_attribute_values(":participant", s(participant));
            }
            if latest {
                update = update
                    .expression_attribute_names("#last", "last_message")
                    .expression_attribute_names("#preview", "last_message_preview")
                    .expression_attribute_values(":preview", s(&summary.preview))
                    .expression_attribute_names("#last_at", "last_message_at")
                    .expression_attribute_names("#sort", "last_sort")
                    .expression_attribute_values(":last", summary.last.clone())
                    .expression_attribute_values(":last_at", summary.last_at.clone())
                    .expression_attribute_values(":sort", s(&summary.sort))
                    .condition_expression("attribute_not_exists(#sort) OR #sort < :sort");
            }
            match update.send().await.map_err(|e| e.into_service_error()) {
                Ok(_) => return Ok(()),
                // A later message is already the last one: only count this one.
                Err(e) if latest && e.is_conditional_check_failed_exception() => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        Ok(())
    }

    /// One page of `index` under the hash key `hash`, `limit` items read with
    /// `parse`; the next page starts after the last item's sort key and `id_of` it.
    /// DynamoDB stops a query at 1 MB of items (a thread of large emails) and
    /// says where with `LastEvaluatedKey`: the query goes on from there until the
    /// page is full or the index has no more.
    async fn query_page<T>(
        &self,
        index: &IndexQuery,
        hash: &str,
        limit: usize,
        start: Option<Item>,
        parse: fn(Item) -> Result<T, StoreError>,
        id_of: fn(&T) -> &str,
    ) -> Result<Page<T>, StoreError> {
        let sort_attribute = index.sort;
        let mut items: Vec<Item> = Vec::new();
        let mut start = start;
        // One more than asked: tells whether there is a next page.
        while items.len() <= limit {
            let wanted = limit + 1 - items.len();
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index.name)
                .key_condition_expression("#hash = :hash")
                .expression_attribute_names("#hash", index.hash)
                .expression_attribute_values(":hash", s(hash))
                .scan_index_forward(index.forward)
                .limit(i32::try_from(wanted).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(unavailable)?;
            items.extend(output.items.unwrap_or_default());
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        let more = items.len() > limit;
        items.truncate(limit);
        let next_sort = match items.last() {
            Some(last) if more => match last.get(sort_attribute) {
                Some(AttributeValue::S(sort)) => Some(sort.clone()),
                _ => {
                    return Err(StoreError::Corrupt(format!(
                        "indexed item without {sort_attribute}"
                    )));
                }
            },
            _ => None,
        };
        let items = items
            .into_iter()
            .map(parse)
            .collect::<Result<Vec<_>, _>>()?;
        let next = next_sort.and_then(|sort| {
            items.last().map(|item| Position {
                sort,
                id: id_of(item).to_owned(),
            })
        });
        Ok(Page { items, next })
    }
}

/// The attribute values every summary item of one message's conversation gets.
struct SummaryValues {
    id: String,
    channel: &'static str,
    participants: AttributeValue,
    now: AttributeValue,
    last: AttributeValue,
    preview: String,
    last_at: AttributeValue,
    sort: String,
}

fn to_conversation(item: Item) -> Result<Conversation, StoreError> {
    serde_dynamo::from_item::<_, ConversationItem>(item)
        .map(Conversation::from)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl ConversationLog for DynamoDbStore {
    async fn record_in_conversation(&self, message: &Message) -> Result<(), StoreError> {
        let key = ConversationKey::new(message.channel, &message.from, &message.to);
        let last_message = LastMessage::of(message);
        let preview = last_message.preview.clone();
        let last = serde_dynamo::to_attribute_value(LastMessageItem::from(&last_message))
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let summary = SummaryValues {
            id: message.conversation_id.clone(),
            channel: key.family(),
            participants: AttributeValue::L(key.participants().iter().map(s).collect()),
            now: rfc3339(message.created_at),
            last,
            preview,
            last_at: rfc3339(message.timestamp),
            sort: sort_key(message.timestamp, &message.id),
        };
        let [first, second] = key.participants();
        let mut updates = vec![
            self.update_summary(Self::conversation_key(&summary.id), None, &summary),
            self.update_summary(
                Self::participant_key(&summary.id, first),
                Some(first),
                &summary,
            ),
        ];
        // Someone writing to themselves has one participant item, not two.
        if second != first {
            updates.push(self.update_summary(
                Self::participant_key(&summary.id, second),
                Some(second),
                &summary,
            ));
        }
        try_join_all(updates).await?;
        Ok(())
    }
}

impl ConversationReader for DynamoDbStore {
    async fn conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
        self.get_item(Self::conversation_key(id))
            .await?
            .map(to_conversation)
            .transpose()
    }

    async fn conversations_of(
        &self,
        participant: &str,
        limit: usize,
        after: Option<&Position>,
    ) -> Result<Page<Conversation>, StoreError> {
        let start = after.map(|position| {
            Item::from([
                ("participant".to_owned(), s(participant)),
                ("last_sort".to_owned(), s(&position.sort)),
                (
                    "pk".to_owned(),
                    Self::participant_key(&position.id, participant),
                ),
            ])
        });
        self.query_page(
            &PARTICIPANT_CONVERSATIONS,
            participant,
            limit,
            start,
            to_conversation,
            |c| &c.id,
        )
        .await
    }

    async fn conversation_messages(
        &self,
        conversation_id: &str,
        limit: usize,
        after: Option<&Position>,
    ) -> Result<Page<Message>, StoreError> {
        let start = after.map(|position| {
            Item::from([
                ("conversation_id".to_owned(), s(conversation_id)),
                ("conversation_sort".to_owned(), s(&position.sort)),
                ("pk".to_owned(), Self::message_key(&position.id)),
            ])
        });
        self.query_page(&MESSAGES, conversation_id, limit, start, to_message, |m| {
            &m.id
        })
        .await
    }
}
