//! The provider webhooks: inbound messages and delivery reports from Twilio
//! and SendGrid, each verified before anything is read from it.
//!
//! - `POST /webhooks/twilio/messages`: an inbound SMS/MMS, stored once per `MessageSid`;
//! - `POST /webhooks/twilio/status`: a status callback moving a sent message to
//!   `delivered` or `failed`;
//! - `POST /webhooks/sendgrid/inbound`: an inbound email (Inbound Parse), behind
//!   HTTP Basic credentials (Inbound Parse signs nothing);
//! - `POST /webhooks/sendgrid/events`: Event Webhook batches, deduplicated on
//!   `sg_event_id`.
//!
//! Reports only ever move a message forward (see [`Transition::ReportDelivered`]):
//! callbacks arriving late or out of order change nothing.

use std::time::Duration;

use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use time::OffsetDateTime;
use tracing::{Instrument, info, warn};

use crate::adapters::sendgrid_webhook::{self, EventWebhookKey};
use crate::adapters::twilio_webhook;
use crate::api::{message_response, request_span, store_inbound};
use crate::config::WebhookConfig;
use crate::domain::{FieldError, ProviderKind, ReportedOutcome, StatusReport};
use crate::http::{ApiError, json_response, media_type_essence};
use crate::metrics::{self, Metric, dimension, name};
use crate::ports::{ConversationLog, InboundInsert, MessageStore, ReportApplied, ReportStore};

/// What a SendGrid event batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EventsOutcome {
    /// Events that moved a message to `delivered` or `failed`.
    pub applied: usize,
    /// Progress events, events about unknown messages, and reports a message is
    /// already past.
    pub ignored: usize,
    /// Events handled before (same `sg_event_id`).
    pub duplicates: usize,
}

/// The webhooks with their secrets, built once at cold start.
pub struct Webhooks<S> {
    store: S,
    twilio_auth_token: String,
    public_base_url: Option<String>,
    sendgrid_key: Option<EventWebhookKey>,
    sendgrid_max_age: Duration,
    inbound_basic_auth: Option<String>,
}

fn rejected(provider: ProviderKind, error: ApiError) -> ApiError {
    warn!(provider = provider.as_str(), error = %error, "webhook refused");
    metrics::emit(
        &[Metric::count(name::WEBHOOK_REJECTED, 1)],
        &[(dimension::PROVIDER, provider.as_str())],
    );
    error
}

fn invalid(errors: Vec<FieldError>) -> ApiError {
    ApiError::Validation(errors)
}

fn twiml() -> Response<Body> {
    let mut response = Response::new(Body::Text(twilio_webhook::EMPTY_TWIML.to_owned()));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    response
}

fn require_media_type(request: &Request, expected: &'static str) -> Result<(), ApiError> {
    let declared =
        media_type_essence(header_str(request, header::CONTENT_TYPE.as_str()).unwrap_or_default());
    if declared == expected {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType { declared, expected })
    }
}

fn header_str<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request.headers().get(name).and_then(|v| v.to_str().ok())
}

fn body_bytes(request: &Request) -> Result<&[u8], ApiError> {
    let bytes: &[u8] = request.body().as_ref();
    if bytes.len() > crate::http::MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge);
    }
    Ok(bytes)
}

impl<S> Webhooks<S>
where
    S: MessageStore + ConversationLog + ReportStore,
{
    /// `SENDGRID_WEBHOOK_PUBLIC_KEY` must parse if it is set.
    pub fn new(store: S, twilio_auth_token: &str, config: &WebhookConfig) -> Result<Self, String> {
        let sendgrid_key = config
            .sendgrid_public_key
            .as_deref()
            .map(EventWebhookKey::parse)
            .transpose()
            .map_err(|e| format!("SENDGRID_WEBHOOK_PUBLIC_KEY: {e}"))?;
        Ok(Self {
            store,
            twilio_auth_token: twilio_auth_token.to_owned(),
            public_base_url: config.public_base_url.clone(),
            sendgrid_key,
            sendgrid_max_age: config.sendgrid_max_age,
            inbound_basic_auth: config.sendgrid_inbound_basic_auth.clone(),
        })
    }

    /// Routes a webhook request by path (with or without a trailing slash).
    pub async fn handle(&self, request: Request) -> Response<Body> {
        let span = request_span(&request);
        let path = request.uri().path().trim_end_matches('/').to_owned();
        async {
            match path.as_str() {
                "/webhooks/twilio/messages" => self.twilio_message(&request).await,
                "/webhooks/twilio/status" => self.twilio_status(&request).await,
                "/webhooks/sendgrid/inbound" => self.sendgrid_inbound(&request).await,
                "/webhooks/sendgrid/events" => self
                    .sendgrid_events(&request)
                    .await
                    .map(|outcome| json_response(StatusCode::OK, &outcome)),
                _ => Err(ApiError::NotFound {
                    field: "path",
                    message: format!("no webhook at {path}"),
                }),
            }
        }
        .instrument(span)
        .await
        .unwrap_or_else(ApiError::into_response)
    }

    /// The URLs Twilio may have signed: `PUBLIC_BASE_URL` + path + query; else
    /// the URL rebuilt from the request's `Host` and `X-Forwarded-Proto`, and the
    /// same with the other of http/https (a local runtime such as `cargo lambda
    /// watch` reports https for plain-http requests). Port spellings are tried by
    /// [`twilio_webhook::verify_signature`].
    fn twilio_urls(&self, request: &Request) -> Vec<String> {
        let uri = request.uri();
        let path_and_query = uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned());
        let mut urls = Vec::new();
        if let Some(base) = &self.public_base_url {
            urls.push(format!("{base}{path_and_query}"));
        } else {
            let scheme = header_str(request, "x-forwarded-proto")
                .and_then(|v| v.split(',').next())
                .map(str::trim)
                .or(uri.scheme_str())
                .unwrap_or("https");
            let host = header_str(request, "host")
                .or(uri.authority().map(|a| a.as_str()))
                .unwrap_or_default();
            let other = if scheme == "http" { "https" } else { "http" };
            urls.push(format!("{scheme}://{host}{path_and_query}"));
            urls.push(format!("{other}://{host}{path_and_query}"));
        }
        urls
    }

    /// Verifies `X-Twilio-Signature` and returns the form parameters.
    fn verified_twilio_form(&self, request: &Request) -> Result<Vec<(String, String)>, ApiError> {
        require_media_type(request, "application/x-www-form-urlencoded")?;
        let params = twilio_webhook::parse_form(body_bytes(request)?);
        let signature = header_str(request, twilio_webhook::SIGNATURE_HEADER);
        let urls = self.twilio_urls(request);
        let verified = urls.iter().any(|url| {
            twilio_webhook::verify_signature(&self.twilio_auth_token, url, &params, signature)
        });
        if verified {
            Ok(params)
        } else {
            Err(rejected(
                ProviderKind::Twilio,
                ApiError::Forbidden {
                    field: "X-Twilio-Signature",
                    message: if signature.is_some() {
                        format!("the request signature does not match {}", urls[0])
                    } else {
                        "the request is not signed".to_owned()
                    },
                },
            ))
        }
    }

    async fn twilio_message(&self, request: &Request) -> Result<Response<Body>, ApiError> {
        let params = self.verified_twilio_form(request)?;
        let new = twilio_webhook::inbound_message(&params).map_err(invalid)?;
        store_inbound(&self.store, new).await?;
        Ok(twiml())
    }

    async fn twilio_status(&self, request: &Request) -> Result<Response<Body>, ApiError> {
        let params = self.verified_twilio_form(request)?;
        let report = twilio_webhook::status_report(&params).map_err(invalid)?;
        let sid = report.provider_message_id.clone().unwrap_or_default();
        let Some(message_id) = self
            .store
            .find_by_provider_id(ProviderKind::Twilio, &sid)
            .await?
        else {
            return Err(ApiError::NotFound {
                field: "MessageSid",
                message: format!("no message was sent as {sid:?}"),
            });
        };
        self.apply(&message_id, &report).await?;
        Ok(twiml())
    }

    async fn sendgrid_inbound(&self, request: &Request) -> Result<Response<Body>, ApiError> {
        let authorized = self.inbound_basic_auth.as_deref().is_some_and(|expected| {
            sendgrid_webhook::basic_auth_matches(
                header_str(request, header::AUTHORIZATION.as_str()),
                expected,
            )
        });
        if !authorized {
            return Err(rejected(
                ProviderKind::SendGrid,
                ApiError::Unauthorized {
                    realm: "sendgrid-inbound-parse",
                },
            ));
        }
        require_media_type(request, "multipart/form-data")?;
        let content_type = header_str(request, header::CONTENT_TYPE.as_str()).unwrap_or_default();
        let new = sendgrid_webhook::parse_inbound(content_type, body_bytes(request)?.to_vec())
            .await
            .map_err(invalid)?;
        Ok(match store_inbound(&self.store, new).await? {
            InboundInsert::Created(m) => message_response(StatusCode::CREATED, &m),
            InboundInsert::Duplicate(m) => message_response(StatusCode::OK, &m),
        })
    }

    async fn sendgrid_events(&self, request: &Request) -> Result<EventsOutcome, ApiError> {
        let forbidden = |message: String| {
            rejected(
                ProviderKind::SendGrid,
                ApiError::Forbidden {
                    field: sendgrid_webhook::SIGNATURE_HEADER,
                    message,
                },
            )
        };
        let Some(key) = &self.sendgrid_key else {
            return Err(forbidden(
                "signed event webhooks are not configured (SENDGRID_WEBHOOK_PUBLIC_KEY)".into(),
            ));
        };
        let body = body_bytes(request)?;
        sendgrid_webhook::verify_event_signature(
            key,
            header_str(request, sendgrid_webhook::SIGNATURE_HEADER),
            header_str(request, sendgrid_webhook::TIMESTAMP_HEADER),
            body,
            OffsetDateTime::now_utc(),
            self.sendgrid_max_age,
        )
        .map_err(|e| forbidden(e.to_string()))?;
        let reports = sendgrid_webhook::parse_events(body).map_err(|e| ApiError::BadRequest {
            field: Some(e.field),
            message: e.message,
        })?;
        let mut outcome = EventsOutcome::default();
        for report in &reports {
            if let Some(event_id) = &report.event_id
                && self
                    .store
                    .event_seen(ProviderKind::SendGrid, event_id)
                    .await?
            {
                outcome.duplicates += 1;
                continue;
            }
            let applied = match self.message_of(report).await? {
                Some(message_id) => self.apply(&message_id, report).await?,
                None => false,
            };
            if applied {
                outcome.applied += 1;
            } else {
                outcome.ignored += 1;
            }
            // Remembered only once handled: a batch that failed half-way is
            // redelivered by SendGrid and its handled events are then no-ops.
            if let Some(event_id) = &report.event_id {
                self.store
                    .remember_event(ProviderKind::SendGrid, event_id, OffsetDateTime::now_utc())
                    .await?;
            }
        }
        info!(events = reports.len(), ?outcome, "sendgrid events handled");
        Ok(outcome)
    }

    /// Our id of the message a report is about: echoed back by the provider
    /// (SendGrid `custom_args`), else looked up by the provider's id.
    async fn message_of(&self, report: &StatusReport) -> Result<Option<String>, ApiError> {
        if let Some(id) = &report.message_id
            && uuid::Uuid::parse_str(id).is_ok()
        {
            return Ok(Some(id.clone()));
        }
        match &report.provider_message_id {
            Some(pid) => Ok(self.store.find_by_provider_id(report.provider, pid).await?),
            None => Ok(None),
        }
    }

    /// Applies a report's outcome; `true` if it moved the message.
    async fn apply(&self, message_id: &str, report: &StatusReport) -> Result<bool, ApiError> {
        let Some(transition) = report.outcome.transition() else {
            return Ok(false);
        };
        let detail = match report.outcome {
            ReportedOutcome::Failed => Some(report.detail.clone().unwrap_or_else(|| {
                format!(
                    "{} reported {}",
                    report.provider.as_str(),
                    report.provider_status
                )
            })),
            _ => None,
        };
        let result = self
            .store
            .apply_report(
                message_id,
                transition,
                detail.as_deref(),
                OffsetDateTime::now_utc(),
            )
            .await?;
        Ok(match result {
            ReportApplied::Applied(message) => {
                info!(
                    message_id,
                    provider = report.provider.as_str(),
                    status = message.status.as_str(),
                    "provider report applied"
                );
                metrics::emit(
                    &[Metric::count(name::REPORTS_APPLIED, 1)],
                    &[(dimension::PROVIDER, report.provider.as_str())],
                );
                true
            }
            ReportApplied::Ignored(message) => {
                info!(
                    message_id,
                    reported = %report.provider_status,
                    status = message.status.as_str(),
                    "provider report ignored: the message is already past it"
                );
                false
            }
            ReportApplied::NotFound => false,
        })
    }
}
