//! The webhooks function's router: the provider posts, each verified by the
//! use case in [`crate::webhooks`] before anything is read from it.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::adapters::{sendgrid_webhook, twilio_webhook};
use crate::ports::{ConversationLog, DeliveryQueue, MessageStore, ReportStore, SuppressionList};
use crate::webhooks::{InboundMailOutcome, RequestOrigin, TwilioPost, Webhooks};

use super::{
    ApiError, Function, LimitedBody, Operation, Routes, header_str, json_response,
    media_type_essence, messages::inserted_response,
};

/// The webhooks function's router.
pub fn webhooks_router<S, Q>(webhooks: Webhooks<S, Q>) -> Router
where
    S: MessageStore + ConversationLog + ReportStore + SuppressionList + 'static,
    Q: DeliveryQueue + 'static,
{
    Routes::new(Function::Webhooks)
        .serve(Operation::TwilioMessage, twilio_message::<S, Q>)
        .serve(Operation::TwilioStatus, twilio_status::<S, Q>)
        .serve(Operation::SendGridInbound, sendgrid_inbound::<S, Q>)
        .serve(Operation::SendGridEvents, sendgrid_events::<S, Q>)
        .finish(Arc::new(webhooks))
}

type App<S, Q> = State<Arc<Webhooks<S, Q>>>;

fn require_media_type(headers: &HeaderMap, expected: &'static str) -> Result<(), ApiError> {
    let declared =
        media_type_essence(header_str(headers, header::CONTENT_TYPE.as_str()).unwrap_or_default());
    if declared == expected {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType { declared, expected })
    }
}

/// An empty TwiML answer: Twilio sends no reply.
fn twiml() -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"))],
        twilio_webhook::EMPTY_TWIML,
    )
        .into_response()
}

fn twilio_post<'a, S, Q>(
    webhooks: &Webhooks<S, Q>,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    body: &'a [u8],
) -> Result<TwilioPost<'a>, ApiError>
where
    S: MessageStore + ConversationLog + ReportStore + SuppressionList,
    Q: DeliveryQueue,
{
    require_media_type(headers, "application/x-www-form-urlencoded")?;
    let origin = RequestOrigin {
        scheme: header_str(headers, "x-forwarded-proto")
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .or(uri.scheme_str()),
        host: header_str(headers, "host").or(uri.authority().map(|a| a.as_str())),
        path_and_query: uri
            .path_and_query()
            .map_or_else(|| uri.path(), |pq| pq.as_str()),
    };
    Ok(TwilioPost {
        urls: webhooks.twilio_urls(&origin),
        signature: header_str(headers, twilio_webhook::SIGNATURE_HEADER),
        form: body,
    })
}

/// `POST /webhooks/twilio/messages`: an inbound SMS/MMS → empty TwiML.
async fn twilio_message<S, Q>(
    State(webhooks): App<S, Q>,
    uri: Uri,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError>
where
    S: MessageStore + ConversationLog + ReportStore + SuppressionList,
    Q: DeliveryQueue,
{
    let post = twilio_post(&webhooks, &uri, &headers, &body)?;
    webhooks.twilio_message(post).await?;
    Ok(twiml())
}

/// `POST /webhooks/twilio/status`: a status callback → empty TwiML.
async fn twilio_status<S, Q>(
    State(webhooks): App<S, Q>,
    uri: Uri,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError>
where
    S: MessageStore + ConversationLog + ReportStore + SuppressionList,
    Q: DeliveryQueue,
{
    let post = twilio_post(&webhooks, &uri, &headers, &body)?;
    webhooks.twilio_status(post).await?;
    Ok(twiml())
}

/// `POST /webhooks/sendgrid/inbound`: 201 with the stored email, 200 if stored before.
async fn sendgrid_inbound<S, Q>(
    State(webhooks): App<S, Q>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError>
where
    S: MessageStore + ConversationLog + ReportStore + SuppressionList,
    Q: DeliveryQueue,
{
    // Credentials first: an unauthenticated caller learns nothing about the body.
    let caller =
        webhooks.check_inbound_credentials(header_str(&headers, header::AUTHORIZATION.as_str()))?;
    require_media_type(&headers, "multipart/form-data")?;
    let content_type = header_str(&headers, header::CONTENT_TYPE.as_str()).unwrap_or_default();
    Ok(
        match webhooks
            .sendgrid_inbound(caller, content_type, body.to_vec())
            .await?
        {
            InboundMailOutcome::Stored(insert) => inserted_response(*insert),
            InboundMailOutcome::Unverified => json_response(
                StatusCode::OK,
                &serde_json::json!({
                    "stored": false,
                    "reason": "neither SPF nor DKIM vouched for the sender (INBOUND_EMAIL_REQUIRE_AUTH)"
                }),
            ),
        },
    )
}

/// `POST /webhooks/sendgrid/events`: 200 with what the batch did.
async fn sendgrid_events<S, Q>(
    State(webhooks): App<S, Q>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError>
where
    S: MessageStore + ConversationLog + ReportStore + SuppressionList,
    Q: DeliveryQueue,
{
    let outcome = webhooks
        .sendgrid_events(
            header_str(&headers, sendgrid_webhook::SIGNATURE_HEADER),
            header_str(&headers, sendgrid_webhook::TIMESTAMP_HEADER),
            &body,
        )
        .await?;
    Ok(json_response(StatusCode::OK, &outcome))
}
