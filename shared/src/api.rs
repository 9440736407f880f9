//! The message API: accept outbound, record inbound, read back. Each operation
//! is a plain async function over the ports, plus an HTTP handler that maps it
//! to an API Gateway response.

use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use tracing::{Instrument, error, info, info_span, warn};

use crate::domain::{Direction, Message, validate_inbound, validate_outbound};
use crate::http::{ApiError, json_object_body, json_response};
use crate::ports::{DeliveryQueue, InboundInsert, MessageStore};

/// Validates, stores (`queued`) and enqueues an outbound message. If the enqueue
/// fails the stored message is removed again and the caller gets 503: a message is
/// never acknowledged unless it is on its way.
pub async fn accept_outbound(
    store: &impl MessageStore,
    queue: &impl DeliveryQueue,
    payload: &Map<String, Value>,
) -> Result<Message, ApiError> {
    let new = validate_outbound(payload).map_err(ApiError::Validation)?;
    let message = Message::accept(new, Direction::Outbound, OffsetDateTime::now_utc());
    store.insert_outbound(&message).await?;
    if let Err(enqueue_error) = queue.enqueue(&message.id).await {
        error!(message_id = %message.id, error = %enqueue_error, "enqueue failed; removing the message");
        if let Err(undo_error) = store.remove_queued(&message.id).await {
            error!(message_id = %message.id, error = %undo_error, "could not remove a message that was never queued");
        }
        return Err(enqueue_error.into());
    }
    info!(message_id = %message.id, channel = message.channel.as_str(), "outbound message queued");
    Ok(message)
}

/// Validates and stores an inbound message, once per `messaging_provider_id`.
pub async fn accept_inbound(
    store: &impl MessageStore,
    payload: &Map<String, Value>,
) -> Result<InboundInsert, ApiError> {
    let new = validate_inbound(payload).map_err(ApiError::Validation)?;
    let message = Message::accept(new, Direction::Inbound, OffsetDateTime::now_utc());
    let insert = store.insert_inbound(&message).await?;
    match &insert {
        InboundInsert::Created(m) => info!(message_id = %m.id, "inbound message stored"),
        InboundInsert::Duplicate(m) => info!(message_id = %m.id, "inbound message already stored"),
    }
    Ok(insert)
}

/// Reads one message by id.
pub async fn find_message(store: &impl MessageStore, id: &str) -> Result<Message, ApiError> {
    let not_found = || ApiError::NotFound(format!("no message with id {id:?}"));
    if uuid::Uuid::parse_str(id).is_err() {
        return Err(not_found());
    }
    store.get(id).await?.ok_or_else(not_found)
}

/// `POST /messages/outbound` → 202 with the queued message and its `Location`.
pub async fn handle_outbound(
    store: &impl MessageStore,
    queue: &impl DeliveryQueue,
    request: Request,
) -> Response<Body> {
    let span = request_span(&request);
    async {
        let payload = json_object_body(&request)?;
        accept_outbound(store, queue, &payload).await
    }
    .instrument(span)
    .await
    .map_or_else(ApiError::into_response, |m| {
        message_response(StatusCode::ACCEPTED, &m)
    })
}

/// `POST /messages/inbound` → 201 with the stored message, or 200 with the message
/// already stored under the same `messaging_provider_id`.
pub async fn handle_inbound(store: &impl MessageStore, request: Request) -> Response<Body> {
    let span = request_span(&request);
    async {
        let payload = json_object_body(&request)?;
        accept_inbound(store, &payload).await
    }
    .instrument(span)
    .await
    .map_or_else(ApiError::into_response, |insert| match insert {
        InboundInsert::Created(m) => message_response(StatusCode::CREATED, &m),
        InboundInsert::Duplicate(m) => message_response(StatusCode::OK, &m),
    })
}

/// `GET /messages/{id}` → 200 with the message, 404 if unknown.
pub async fn handle_get_message(store: &impl MessageStore, request: Request) -> Response<Body> {
    let id = path_id(&request);
    find_message(store, &id)
        .instrument(request_span(&request))
        .await
        .map_or_else(ApiError::into_response, |m| {
            message_response(StatusCode::OK, &m)
        })
}

fn message_response(status: StatusCode, message: &Message) -> Response<Body> {
    let mut response = json_response(status, message);
    if status != StatusCode::OK {
        match HeaderValue::try_from(format!("/messages/{}", message.id)) {
            Ok(location) => {
                response.headers_mut().insert(header::LOCATION, location);
            }
            Err(e) => warn!(error = %e, "message id is not a valid header value"),
        }
    }
    response
}

/// The `{id}` path parameter, or the last path segment when the router passed none.
fn path_id(request: &Request) -> String {
    request
        .path_parameters_ref()
        .and_then(|params| params.first("id"))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            request
                .uri()
                .path()
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned()
        })
}

fn request_span(request: &Request) -> tracing::Span {
    let request_id = request
        .lambda_context_ref()
        .map(|c| c.request_id.clone())
        .unwrap_or_default();
    info_span!("request", method = %request.method(), path = request.uri().path(), request_id)
}
