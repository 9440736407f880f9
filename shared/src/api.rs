//! The message API: accept outbound, record inbound, read back. Each operation
//! is a plain async function over the ports, plus an HTTP handler that maps it
//! to an API Gateway response.

use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use tracing::{Instrument, error, info, info_span, warn};

use crate::domain::idempotency::{self, IdempotencyKey, fingerprint};
use crate::domain::{Direction, FieldError, Message, validate_inbound, validate_outbound};
use crate::http::{ApiError, json_object_body, json_response, raw_json_response};
use crate::ports::{DeliveryQueue, IdempotencyRecord, InboundInsert, MessageStore, OutboundInsert};

/// The answer to an accepted outbound request.
#[derive(Debug, Clone, PartialEq)]
pub enum OutboundAccepted {
    /// Stored and queued now.
    Queued(Box<Message>),
    /// A repeat of an earlier request with the same idempotency key and body: the
    /// first answer's body, nothing new stored or queued.
    Replayed {
        message_id: String,
        response: String,
    },
}

/// Validates, stores (`queued`) and enqueues an outbound message. If the enqueue
/// fails the stored message is removed again and the caller gets 503: a message is
/// never acknowledged unless it is on its way. With an idempotency key, a repeat of
/// the same body gets the first answer and a different body a 409.
pub async fn accept_outbound(
    store: &impl MessageStore,
    queue: &impl DeliveryQueue,
    payload: &Map<String, Value>,
    key: Option<&IdempotencyKey>,
) -> Result<OutboundAccepted, ApiError> {
    let new = validate_outbound(payload).map_err(ApiError::Validation)?;
    let now = OffsetDateTime::now_utc();
    let message = Message::accept(new, Direction::Outbound, now);
    let record = key.map(|key| IdempotencyRecord {
        key: key.as_str().to_owned(),
        fingerprint: fingerprint(payload),
        message_id: message.id.clone(),
        response: serde_json::to_string(&message).unwrap_or_default(),
        expires_at: now + idempotency::RETENTION,
    });
    if let OutboundInsert::KeyUsed(first) = store.insert_outbound(&message, record.as_ref()).await?
    {
        if record.is_some_and(|r| r.fingerprint == first.fingerprint) {
            info!(message_id = %first.message_id, "idempotent repeat; replaying the first answer");
            return Ok(OutboundAccepted::Replayed {
                message_id: first.message_id,
                response: first.response,
            });
        }
        return Err(ApiError::Conflict(
            "this Idempotency-Key was already used with a different request body".to_owned(),
        ));
    }
    if let Err(enqueue_error) = queue.enqueue(&message.id, std::time::Duration::ZERO).await {
        error!(message_id = %message.id, error = %enqueue_error, "enqueue failed; removing the message");
        if let Err(undo_error) = store
            .remove_queued(&message.id, key.map(IdempotencyKey::as_str))
            .await
        {
            error!(message_id = %message.id, error = %undo_error, "could not remove a message that was never queued");
        }
        return Err(enqueue_error.into());
    }
    info!(message_id = %message.id, channel = message.channel.as_str(), "outbound message queued");
    Ok(OutboundAccepted::Queued(Box::new(message)))
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
        let key = request
            .headers()
            .get(idempotency::HEADER)
            .map(|value| {
                IdempotencyKey::parse(value.to_str().unwrap_or_default()).map_err(
                    |e: FieldError| ApiError::BadRequest {
                        field: Some(e.field),
                        message: e.message,
                    },
                )
            })
            .transpose()?;
        let payload = json_object_body(&request)?;
        accept_outbound(store, queue, &payload, key.as_ref()).await
    }
    .instrument(span)
    .await
    .map_or_else(ApiError::into_response, |accepted| match accepted {
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
        set_location(&mut response, &message.id);
    }
    response
}

fn set_location(response: &mut Response<Body>, message_id: &str) {
    match HeaderValue::try_from(format!("/messages/{message_id}")) {
        Ok(location) => {
            response.headers_mut().insert(header::LOCATION, location);
        }
        Err(e) => warn!(error = %e, "message id is not a valid header value"),
    }
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
