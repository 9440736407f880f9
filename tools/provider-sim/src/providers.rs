//! The Twilio and SendGrid endpoints.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, Query, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Serialize;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::{Rfc2822, Rfc3339};

use crate::callbacks::{Callbacks, callback_url};
use crate::{AppState, Failure, InFlight};

/// One provider request that passed authentication, as shown by `GET /_sim/requests`.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub seq: u64,
    pub provider: &'static str,
    pub to: Option<String>,
    pub from: Option<String>,
    pub body: Option<String>,
    pub subject: Option<String>,
    pub media_urls: Vec<String>,
    pub message_id: Option<String>,
    /// The status actually answered.
    pub status: u16,
    pub provider_message_id: Option<String>,
    pub received_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub form: Option<Vec<(String, String)>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
    /// `authorization` and `content-type` as received.
    pub headers: Value,
}

impl Record {
    fn new(provider: &'static str, headers: &HeaderMap, received: OffsetDateTime) -> Self {
        let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
        let headers =
            json!({"authorization": header(AUTHORIZATION), "content-type": header(CONTENT_TYPE)});
        Self {
            seq: 0,
            provider,
            to: None,
            from: None,
            body: None,
            subject: None,
            media_urls: Vec::new(),
            message_id: None,
            status: 0,
            provider_message_id: None,
            received_at: received.format(&Rfc3339).unwrap_or_default(),
            form: None,
            json: None,
            headers,
        }
    }
}

fn twilio_error(status: StatusCode, code: u32, message: &str) -> Response {
    let more_info = format!("https://www.twilio.com/docs/errors/{code}");
    let body = json!({"code": code, "message": message, "more_info": more_info, "status": status.as_u16()});
    (status, Json(body)).into_response()
}

fn sendgrid_error(status: StatusCode, message: &str, field: Option<&str>) -> Response {
    let body = json!({"errors": [{"message": message, "field": field, "help": null}]});
    (status, Json(body)).into_response()
}

/// Answers a failure, with a provider-shaped body unless the rule supplied one;
/// also returns the extra delay (hangs).
fn failure_response(failure: Failure, error: fn(StatusCode) -> Response) -> (Response, Duration) {
    let mut response = match failure.body {
        Some(body) => (failure.status, Json(body)).into_response(),
        None => error(failure.status),
    };
    if let Some(value) = failure.retry_after {
        response.headers_mut().insert(RETRY_AFTER, value);
    }
    (response, failure.hang)
}

fn reason(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("Error")
}

/// The credentials following `scheme` in the Authorization header.
fn credentials<'h>(headers: &'h HeaderMap, scheme: &str) -> Option<&'h str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (given, rest) = value.split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

/// Waits out the delay, records the request (if any) and answers, then starts the
/// callbacks of an accepted send. Runs in its own task so a request whose client gave
/// up (e.g. on a hang) is still recorded, and followed up, when "answered".
async fn answer(
    state: &AppState,
    in_flight: InFlight,
    delay: Duration,
    record: Option<Record>,
    response: Response,
    callbacks: Option<Callbacks>,
) -> Response {
    let state = state.clone();
    let task = tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        if let Some(record) = record {
            state.record(record, response.status());
        }
        drop(in_flight);
        if let Some(callbacks) = callbacks.filter(|_| response.status().is_success()) {
            callbacks.spawn(state);
        }
        response
    });
    task.await.unwrap_or_else(|err| {
        tracing::error!(%err, "answer task failed");
        StatusCode::INTERNAL_SERVER_ERROR.into_response()
    })
}

/// `message_id` query parameter of a StatusCallback URL.
fn callback_message_id(callback: &str) -> Option<String> {
    let uri = Uri::try_from(callback).ok()?;
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(&uri).ok()?;
    pairs
        .into_iter()
        .find_map(|(k, v)| (k == "message_id").then_some(v))
}

pub(crate) async fn twilio_send(
    State(state): State<AppState>,
    Path(account_sid): Path<String>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Response {
    let (in_flight, received, delay) = (state.track(), OffsetDateTime::now_utc(), state.latency());
    let config = state.config();
    let secret = format!(
        "{}:{}",
        config.twilio_account_sid,
        state.secrets().twilio_auth_token
    );
    let expected = STANDARD.encode(secret);
    if account_sid != config.twilio_account_sid || credentials(&headers, "Basic") != Some(&expected)
    {
        let response = twilio_error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
        return answer(&state, in_flight, delay, None, response, None).await;
    }

    let pairs = form.map(|Form(pairs)| pairs).unwrap_or_default();
    let values = |name: &'static str| {
        pairs
            .iter()
            .filter(move |(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    let (to, from, body) = (
        values("To").next(),
        values("From").next(),
        values("Body").next(),
    );
    let media_urls: Vec<String> = values("MediaUrl").collect();
    let status_callback = values("StatusCallback").next();
    let mut record = Record {
        to: to.clone(),
        from: from.clone(),
        body: body.clone(),
        media_urls: media_urls.clone(),
        message_id: status_callback.as_deref().and_then(callback_message_id),
        form: Some(pairs.clone()),
        ..Record::new("twilio", &headers, received)
    };

    let invalid = |code, message| {
        let response = twilio_error(StatusCode::BAD_REQUEST, code, message);
        (response, Duration::ZERO)
    };
    let mut callbacks = None;
    let (response, hang) = match (to, from) {
        (None, _) => invalid(21604, "A 'To' phone number is required."),
        (_, None) => invalid(21603, "A 'From' phone number is required."),
        _ if body.is_none() && media_urls.is_empty() => invalid(21602, "Message body is required."),
        (Some(to), Some(from)) => match state.failure(&to) {
            Some(failure) => failure_response(failure, |s| {
                twilio_error(s, 20_000 + u32::from(s.as_u16()), reason(s))
            }),
            None => {
                let sid = format!("SM{}", uuid::Uuid::new_v4().simple());
                let date = received.format(&Rfc2822).unwrap_or_default();
                let message = json!({
                    "sid": sid,
                    "account_sid": account_sid,
                    "to": to,
                    "from": from,
                    "body": body.unwrap_or_default(),
                    "status": "queued",
                    "num_media": media_urls.len().to_string(),
                    "num_segments": "1",
                    "direction": "outbound-api",
                    "api_version": "2010-04-01",
                    "date_created": date,
                    "date_updated": date,
                    "date_sent": null,
                    "price": null,
                    "uri": format!("/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json"),
                    "error_code": null,
                    "error_message": null,
                });
                if let Some(url) = status_callback.as_deref().and_then(callback_url) {
                    let faults = state.faults();
                    callbacks = Some(Callbacks::Twilio {
                        url,
                        sid: sid.clone(),
                        account_sid: account_sid.clone(),
                        from,
                        to,
                        undelivered: rand::random::<f64>() < faults.undelivered_ratio,
                        delay: Duration::from_millis(faults.callback_delay_ms),
                    });
                }
                record.provider_message_id = Some(sid);
                (
                    (StatusCode::CREATED, Json(message)).into_response(),
                    Duration::ZERO,
                )
            }
        },
    };
    answer(
        &state,
        in_flight,
        delay + hang,
        Some(record),
        response,
        callbacks,
    )
    .await
}

/// Non-empty text (or any non-null value) at a JSON pointer.
fn present<'v>(mail: Option<&'v Value>, pointer: &str) -> Option<&'v Value> {
    let value = mail?.pointer(pointer)?;
    (!value.is_null() && value.as_str() != Some("")).then_some(value)
}

fn text(mail: Option<&Value>, pointers: &[&str]) -> Option<String> {
    let found = pointers.iter().find_map(|p| present(mail, p)?.as_str());
    found.map(str::to_owned)
}

/// SendGrid's required fields in check order: (JSON pointers, error field, message).
const REQUIRED: [(&[&str], &str, &str); 5] = [
    (
        &["/personalizations/0"],
        "personalizations",
        "The personalizations field is required and must have at least one personalization.",
    ),
    (
        &["/personalizations/0/to/0/email"],
        "personalizations.0.to",
        "The to array is required for all personalization objects, and must have at least one email object with a valid email address.",
    ),
    (
        &["/from/email"],
        "from.email",
        "The from object must be provided for every email send. It is an object that requires the email parameter, but may also contain a name parameter.",
    ),
    (
        &["/subject", "/personalizations/0/subject"],
        "subject",
        "The subject is required. You can get around this requirement if you use a template with a subject defined or if every personalization has a subject defined.",
    ),
    (
        &["/content/0/value"],
        "content",
        "Unless a valid template_id is provided, the content parameter is required. There must be at least one defined content block.",
    ),
];

pub(crate) async fn sendgrid_send(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (in_flight, received, delay) = (state.track(), OffsetDateTime::now_utc(), state.latency());
    if credentials(&headers, "Bearer") != Some(state.secrets().sendgrid_api_key.as_str()) {
        let message = "The provided authorization grant is invalid, expired, or revoked";
        let response = sendgrid_error(StatusCode::UNAUTHORIZED, message, None);
        return answer(&state, in_flight, delay, None, response, None).await;
    }

    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let mail = parsed.as_ref();
    let mut record = Record {
        to: text(mail, &["/personalizations/0/to/0/email"]),
        from: text(mail, &["/from/email"]),
        body: text(mail, &["/content/0/value"]),
        subject: text(mail, &["/subject", "/personalizations/0/subject"]),
        message_id: text(
            mail,
            &[
                "/custom_args/message_id",
                "/personalizations/0/custom_args/message_id",
            ],
        ),
        json: Some(parsed.clone().unwrap_or_default()),
        ..Record::new("sendgrid", &headers, received)
    };

    let missing = REQUIRED.iter().find(|(pointers, ..)| {
        pointers
            .iter()
            .all(|pointer| present(mail, pointer).is_none())
    });
    let invalid = match (mail, missing) {
        (None, _) => Some(("The request body must be valid JSON.", None)),
        (Some(_), missing) => missing.map(|(_, field, message)| (*message, Some(*field))),
    };
    let mut callbacks = None;
    let (response, hang) = if let Some((message, field)) = invalid {
        (
            sendgrid_error(StatusCode::BAD_REQUEST, message, field),
            Duration::ZERO,
        )
    } else if let Some(failure) = record.to.as_deref().and_then(|to| state.failure(to)) {
        failure_response(failure, |s| sendgrid_error(s, reason(s), None))
    } else {
        // 16 random bytes: 22 URL-safe characters, the shape of SendGrid's X-Message-Id.
        let id = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>());
        let mut response = StatusCode::ACCEPTED.into_response();
        if let Ok(value) = HeaderValue::try_from(id.as_str()) {
            response.headers_mut().insert("x-message-id", value);
        }
        let events_url = state.config().sendgrid_events_url.clone();
        if let (Some(url), Some(email)) = (events_url, record.to.clone()) {
            let faults = state.faults();
            callbacks = Some(Callbacks::SendGrid {
                url,
                message_id: id.clone(),
                email,
                custom_args: custom_args(mail),
                bounce: rand::random::<f64>() < faults.undelivered_ratio,
                delay: Duration::from_millis(faults.callback_delay_ms),
            });
        }
        record.provider_message_id = Some(id);
        (response, Duration::ZERO)
    };
    answer(
        &state,
        in_flight,
        delay + hang,
        Some(record),
        response,
        callbacks,
    )
    .await
}

/// The mail's `custom_args`, the first personalization's overriding the top level's.
fn custom_args(mail: Option<&Value>) -> Map<String, Value> {
    let object = |pointer: &str| {
        mail.and_then(|m| m.pointer(pointer))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    let mut args = object("/custom_args");
    args.extend(object("/personalizations/0/custom_args"));
    args
}
