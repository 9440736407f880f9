//! The read function's router: `GET /messages/{id}` and the conversation
//! routes, paginated with signed cursors.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Serialize;

use crate::access::Authenticator;
use crate::conversations::{self as use_case, Listing};
use crate::cursor::CursorCodec;
use crate::ports::{ApiKeyStore, ConversationReader, MessageStore};
use crate::views::{ConversationView, MessageView};

use super::{ApiError, Function, Operation, QueryParams, Routes, json_response, messages};

struct Read<S> {
    store: S,
    cursors: CursorCodec,
}

type Params = QueryParams;

/// The read function's router.
pub fn read_router<S, K>(store: S, cursors: CursorCodec, keys: Arc<Authenticator<K>>) -> Router
where
    S: MessageStore + ConversationReader + 'static,
    K: ApiKeyStore + 'static,
{
    Routes::new(Function::Read)
        .with_keys(keys)
        .serve(
            Operation::GetMessage,
            |State(app): State<Arc<Read<S>>>, id: Path<String>| async move {
                messages::get_message(&app.store, id).await
            },
        )
        .serve(Operation::ListConversations, list_conversations::<S>)
        .serve(Operation::GetConversation, get_conversation::<S>)
        .serve(
            Operation::ListConversationMessages,
            list_conversation_messages::<S>,
        )
        .finish(Arc::new(Read { store, cursors }))
}

#[derive(Serialize)]
struct ConversationsBody<'a> {
    conversations: Vec<ConversationView>,
    next_cursor: Option<&'a str>,
}

#[derive(Serialize)]
struct MessagesBody<'a> {
    conversation_id: &'a str,
    messages: Vec<MessageView>,
    next_cursor: Option<&'a str>,
}

fn param<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params.first(name)
}

/// `GET /conversations?participant=&limit=&cursor=`: latest activity first.
async fn list_conversations<S: ConversationReader>(
    State(app): State<Arc<Read<S>>>,
    params: Params,
) -> Result<Response, ApiError> {
    let (participant, limit, page) = use_case::list_conversations(
        &app.store,
        &app.cursors,
        param(&params, "participant"),
        param(&params, "limit"),
        param(&params, "cursor"),
    )
    .await?;
    let mut response = json_response(
        StatusCode::OK,
        &ConversationsBody {
            conversations: page.items.iter().map(ConversationView::from).collect(),
            next_cursor: page.next_cursor.as_deref(),
        },
    );
    link_next(
        &mut response,
        "/conversations",
        &[("participant", &participant)],
        limit,
        &page,
    );
    Ok(response)
}

/// `GET /conversations/{id}`.
async fn get_conversation<S: ConversationReader>(
    State(app): State<Arc<Read<S>>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let conversation = use_case::find_conversation(&app.store, &id).await?;
    Ok(json_response(
        StatusCode::OK,
        &ConversationView::from(&conversation),
    ))
}

/// `GET /conversations/{id}/messages`: timestamp order, both directions.
async fn list_conversation_messages<S: ConversationReader>(
    State(app): State<Arc<Read<S>>>,
    Path(id): Path<String>,
    params: Params,
) -> Result<Response, ApiError> {
    let (limit, page) = use_case::list_messages(
        &app.store,
        &app.cursors,
        &id,
        param(&params, "limit"),
        param(&params, "cursor"),
    )
    .await?;
    let mut response = json_response(
        StatusCode::OK,
        &MessagesBody {
            conversation_id: &id,
            messages: page.items.iter().map(MessageView::from).collect(),
            next_cursor: page.next_cursor.as_deref(),
        },
    );
    link_next(
        &mut response,
        &format!("/conversations/{id}/messages"),
        &[],
        limit,
        &page,
    );
    Ok(response)
}

/// `Link: <path?query&limit=…&cursor=…>; rel="next"` (RFC 8288), relative to
/// the API, when there is a next page.
fn link_next<T>(
    response: &mut Response,
    path: &str,
    query: &[(&str, &str)],
    limit: usize,
    page: &Listing<T>,
) {
    let Some(next) = &page.next_cursor else {
        return;
    };
    let limit = limit.to_string();
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(query)
        .extend_pairs([("limit", limit.as_str()), ("cursor", next.as_str())])
        .finish();
    if let Ok(value) = HeaderValue::try_from(format!("<{path}?{query}>; rel=\"next\"")) {
        response.headers_mut().insert(header::LINK, value);
    }
}
