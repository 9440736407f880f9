//! `POST /messages/outbound`, `POST /messages/inbound`, `GET /messages/{id}`.

use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use tracing::warn;

use crate::access::{Authenticator, Caller};
use crate::api::{self, OutboundAccepted, SendRules};
use crate::compliance::KeywordReplies;
use crate::domain::{IdempotencyKey, Message};
use crate::ports::{
    ApiKeyStore, ConversationLog, DeliveryQueue, InboundInsert, MessageStore, SuppressionList,
};
use crate::views::MessageView;

use super::{
    ApiError, Function, IDEMPOTENCY_KEY, JsonObject, Operation, Routes, header_str, json_response,
    raw_json_response,
};

struct Outbound<S, Q> {
    store: S,
    queue: Q,
    rules: SendRules,
}

struct Inbound<S, Q> {
    store: S,
    keywords: KeywordReplies<Q>,
}

/// The outbound function's router: `POST /messages/outbound`.
pub fn outbound_router<S, Q, K>(
    store: S,
    queue: Q,
    rules: SendRules,
    keys: Arc<Authenticator<K>>,
) -> Router
where
    S: MessageStore + ConversationLog + SuppressionList + 'static,
    Q: DeliveryQueue + 'static,
    K: ApiKeyStore + 'static,
{
    Routes::new(Function::Outbound)
        .with_keys(keys)
        .serve(Operation::SendMessage, send_message::<S, Q>)
        .finish(Arc::new(Outbound {
            store,
            queue,
            rules,
        }))
}

/// The inbound function's router: `POST /messages/inbound`. Inbound keywords
/// (STOP, START, HELP) are answered through `keywords`.
pub fn inbound_router<S, Q, K>(
    store: S,
    keywords: KeywordReplies<Q>,
    keys: Arc<Authenticator<K>>,
) -> Router
where
    S: MessageStore + ConversationLog + SuppressionList + 'static,
    Q: DeliveryQueue + 'static,
    K: ApiKeyStore + 'static,
{
    Routes::new(Function::Inbound)
        .with_keys(keys)
        .serve(Operation::RecordInbound, record_inbound::<S, Q>)
        .finish(Arc::new(Inbound { store, keywords }))
}

/// 202 with the queued message and its `Location`; a replay of an idempotent
/// request (same key from the same API key) gets the first answer again,
/// marked `Idempotent-Replayed: true`.
async fn send_message<S, Q>(
    State(app): State<Arc<Outbound<S, Q>>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    JsonObject(payload): JsonObject,
) -> Result<Response, ApiError>
where
    S: MessageStore + ConversationLog + SuppressionList,
    Q: DeliveryQueue,
{
    let key = header_str(&headers, IDEMPOTENCY_KEY)
        .map(|value| {
            IdempotencyKey::parse(value)
                .map(|key| key.for_caller(&caller.key_id))
                .map_err(|e| ApiError::bad_request(IDEMPOTENCY_KEY, e.to_string()))
        })
        .transpose()?;
    Ok(
        match api::accept_outbound(&app.store, &app.queue, &app.rules, &payload, key.as_ref())
            .await?
        {
            OutboundAccepted::Queued(m) => message_response(StatusCode::ACCEPTED, &m),
            OutboundAccepted::Replayed {
                message_id,
                response,
            } => {
                let mut replay = raw_json_response(StatusCode::ACCEPTED, response);
                set_location(&mut replay, &message_id);
                replay
                    .headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                replay
            }
        },
    )
}

/// 201 with the stored message, or 200 with the message already stored under
/// the same `messaging_provider_id`.
async fn record_inbound<S, Q>(
    State(app): State<Arc<Inbound<S, Q>>>,
    JsonObject(payload): JsonObject,
) -> Result<Response, ApiError>
where
    S: MessageStore + ConversationLog + SuppressionList,
    Q: DeliveryQueue,
{
    Ok(inserted_response(
        api::accept_inbound(&app.store, &app.keywords, &payload).await?,
    ))
}

/// `GET /messages/{id}`: 200 with the message, 404 if unknown.
pub(super) async fn get_message<S: MessageStore>(
    store: &S,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let message = api::find_message(store, &id).await?;
    Ok(message_response(StatusCode::OK, &message))
}

/// 201 with a newly stored inbound message, 200 with the one stored before.
pub(super) fn inserted_response(insert: InboundInsert) -> Response {
    match insert {
        InboundInsert::Created(m) => message_response(StatusCode::CREATED, &m),
        InboundInsert::Duplicate(m) => message_response(StatusCode::OK, &m),
    }
}

fn message_response(status: StatusCode, message: &Message) -> Response {
    let mut response = json_response(status, &MessageView::from(message));
    if status != StatusCode::OK {
        set_location(&mut response, &message.id);
    }
    response
}

fn set_location(response: &mut Response, message_id: &str) {
    match HeaderValue::try_from(format!("/messages/{message_id}")) {
        Ok(location) => {
            response.headers_mut().insert(header::LOCATION, location);
        }
        Err(e) => warn!(error = %e, "message id is not a valid header value"),
    }
}
