//! The conversation use cases: a participant's threads, one thread, a thread's
//! messages; paginated with signed cursors.

use crate::api::{ReadError, Resource};
use crate::cursor::CursorCodec;
use crate::domain::conversation::{is_conversation_id, is_sort_key, normalize_participant};
use crate::domain::validation::{is_e164, is_email};
use crate::domain::{Conversation, Message};
use crate::ports::{ConversationReader, Page, Position};

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 200;

/// One page of a listing and the cursor of the next.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

fn bad(field: &str, message: impl Into<String>) -> ReadError {
    ReadError::bad_query(field, message)
}

/// `limit`: 1 to [`MAX_LIMIT`], default [`DEFAULT_LIMIT`].
pub fn parse_limit(value: Option<&str>) -> Result<usize, ReadError> {
    let Some(value) = value else {
        return Ok(DEFAULT_LIMIT);
    };
    value
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_LIMIT).contains(n))
        .ok_or_else(|| bad("limit", format!("must be an integer from 1 to {MAX_LIMIT}")))
}

/// `participant`: an E.164 number or an email address, normalized as
/// conversation keys are. A `+` sent unencoded in a query string arrives as a
/// space; a number that lost its `+` that way gets it back.
pub fn parse_participant(value: Option<&str>) -> Result<String, ReadError> {
    let raw = value.ok_or_else(|| bad("participant", "is required"))?;
    let mut participant = normalize_participant(raw);
    if raw.starts_with(' ') && participant.bytes().all(|b| b.is_ascii_digit()) {
        participant.insert(0, '+');
    }
    if is_e164(&participant) || is_email(&participant) {
        Ok(participant)
    } else {
        Err(bad(
            "participant",
            "must be an E.164 phone number or an email address",
        ))
    }
}

fn decode_cursor(
    cursors: &CursorCodec,
    scope: &str,
    cursor: Option<&str>,
    id_is_valid: impl Fn(&str) -> bool,
) -> Result<Option<Position>, ReadError> {
    let invalid = || bad("cursor", "is not a cursor this API issued for this query");
    cursor
        .map(|cursor| {
            let position = cursors.decode(scope, cursor).map_err(|_| invalid())?;
            if is_sort_key(&position.sort) && id_is_valid(&position.id) {
                Ok(position)
            } else {
                Err(invalid())
            }
        })
        .transpose()
}

fn listing<T>(cursors: &CursorCodec, scope: &str, page: Page<T>) -> Listing<T> {
    Listing {
        next_cursor: page.next.map(|p| cursors.encode(scope, &p)),
        items: page.items,
    }
}

/// A participant's conversations, most recent activity first.
pub async fn list_conversations(
    store: &impl ConversationReader,
    cursors: &CursorCodec,
    participant: Option<&str>,
    limit: Option<&str>,
    cursor: Option<&str>,
) -> Result<(String, usize, Listing<Conversation>), ReadError> {
    let participant = parse_participant(participant)?;
    let limit = parse_limit(limit)?;
    let scope = format!("participant:{participant}");
    let after = decode_cursor(cursors, &scope, cursor, is_conversation_id)?;
    let page = store
        .conversations_of(&participant, limit, after.as_ref())
        .await?;
    Ok((participant, limit, listing(cursors, &scope, page)))
}

fn unknown_conversation(id: &str) -> ReadError {
    ReadError::NotFound {
        what: Resource::Conversation,
        id: id.to_owned(),
    }
}

pub async fn find_conversation(
    store: &impl ConversationReader,
    id: &str,
) -> Result<Conversation, ReadError> {
    if !is_conversation_id(id) {
        return Err(unknown_conversation(id));
    }
    store
        .conversation(id)
        .await?
        .ok_or_else(|| unknown_conversation(id))
}

/// A conversation's messages in timestamp order, both directions.
pub async fn list_messages(
    store: &impl ConversationReader,
    cursors: &CursorCodec,
    id: &str,
    limit: Option<&str>,
    cursor: Option<&str>,
) -> Result<(usize, Listing<Message>), ReadError> {
    let limit = parse_limit(limit)?;
    let scope = format!("conversation:{id}");
    let after = decode_cursor(cursors, &scope, cursor, |id| {
        uuid::Uuid::parse_str(id).is_ok()
    })?;
    find_conversation(store, id).await?;
    let page = store
        .conversation_messages(id, limit, after.as_ref())
        .await?;
    Ok((limit, listing(cursors, &scope, page)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_to_50_and_stay_within_1_to_200() {
        assert_eq!(parse_limit(None).unwrap(), 50);
        assert_eq!(parse_limit(Some("200")).unwrap(), 200);
        assert_eq!(parse_limit(Some("1")).unwrap(), 1);
        for bad in ["0", "201", "-1", "ten", "", "1.5"] {
            let error = parse_limit(Some(bad)).unwrap_err();
            assert!(matches!(error, ReadError::BadQuery(_)), "{bad}");
        }
    }

    #[test]
    fn participants_are_normalized_and_checked() {
        assert_eq!(
            parse_participant(Some(" User@Example.COM ")).unwrap(),
            "user@example.com"
        );
        assert_eq!(
            parse_participant(Some("+18045551234")).unwrap(),
            "+18045551234"
        );
        // An unencoded `+` in the query string decodes to a space.
        assert_eq!(
            parse_participant(Some(" 18045551234")).unwrap(),
            "+18045551234"
        );
        for bad in [None, Some(""), Some("18045551234"), Some("not an address")] {
            let error = parse_participant(bad).unwrap_err();
            assert!(matches!(error, ReadError::BadQuery(_)), "{bad:?}");
        }
    }
}
