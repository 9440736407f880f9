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

use serde::Serialize;
use time::OffsetDateTime;
use tracing::{info, warn};

use crate::adapters::secrets::{
    RELOAD_AFTER_REFUSAL_EVERY, ReloadGate, WebhookCredentials, WebhookReader,
};
use crate::adapters::sendgrid_webhook::{self, EventWebhookKey};
use crate::adapters::twilio_webhook;
use crate::api::{AcceptError, store_inbound};
use crate::compliance::{self, KeywordReplies};
use crate::config::WebhookConfig;
use crate::domain::{
    Direction, FieldError, InboundSource, Message, ProviderKind, ReportedOutcome, StatusReport,
    Suppression, SuppressionChannel, SuppressionSource,
};
use crate::metrics::{self, Metric, dimension, name};
use crate::ports::{
    ConversationLog, DeliveryQueue, InboundInsert, MessageStore, ReportApplied, ReportStore,
    StoreError, SuppressionList,
};

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

/// How many events of one batch are handled at a time.
const EVENT_CONCURRENCY: usize = 32;

/// What became of one event.
enum Handled {
    Applied,
    Ignored,
    Duplicate,
}

/// Why a webhook post was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// Verified, but its fields are not a message or a report.
    #[error("the webhook payload is invalid")]
    Invalid(Vec<FieldError>),
    /// Verified, but not parseable at all.
    #[error("{}", .0.message)]
    Malformed(FieldError),
    /// Missing, wrong or stale signature (`header` names the signature header).
    #[error("{message}")]
    SignatureRejected {
        header: &'static str,
        message: String,
    },
    /// Missing or wrong HTTP Basic credentials (Inbound Parse).
    #[error("valid credentials are required")]
    Unauthenticated { realm: &'static str },
    /// A status callback about a message we never sent.
    #[error("no message was sent as {sid:?}")]
    UnknownMessage { sid: String },
    #[error("{0}")]
    Unavailable(String),
}

impl From<StoreError> for WebhookError {
    fn from(e: StoreError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

impl From<AcceptError> for WebhookError {
    fn from(e: AcceptError) -> Self {
        match e {
            AcceptError::Invalid(fields) => Self::Invalid(fields),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

/// A Twilio post as the edge received it: the URLs it may have been signed
/// for, the `X-Twilio-Signature` header and the form body.
pub struct TwilioPost<'a> {
    pub urls: Vec<String>,
    pub signature: Option<&'a str>,
    pub form: &'a [u8],
}

/// Where a request came in, for rebuilding the URL Twilio signed.
pub struct RequestOrigin<'a> {
    /// `X-Forwarded-Proto`, else the URI's scheme.
    pub scheme: Option<&'a str>,
    /// `Host`, else the URI's authority.
    pub host: Option<&'a str>,
    pub path_and_query: &'a str,
}

/// Proof that an Inbound Parse post carried the configured credentials: only
/// [`Webhooks::check_inbound_credentials`] makes one, and
/// [`Webhooks::sendgrid_inbound`] takes one, so the check happens exactly once.
pub struct InboundParseCaller(());

/// What became of an Inbound Parse post.
#[derive(Debug)]
pub enum InboundMailOutcome {
    Stored(Box<InboundInsert>),
    /// Neither SPF nor DKIM vouched for the sender, and
    /// `INBOUND_EMAIL_REQUIRE_AUTH` is on: nothing stored.
    Unverified,
}

/// Inbound Parse's basic-auth realm.
pub const INBOUND_PARSE_REALM: &str = "sendgrid-inbound-parse";

/// The webhooks with their secrets, built once at cold start.
pub struct Webhooks<S, Q> {
    store: S,
    /// Inbound keywords (STOP, START, HELP) and the queue their replies go on.
    keywords: KeywordReplies<Q>,
    /// The token Twilio signs with: read again (see [`Self::reading`]) before a
    /// signature is refused, so a rotated token is taken up.
    twilio_auth_token: tokio::sync::RwLock<String>,
    reader: Option<WebhookReader>,
    gate: ReloadGate,
    public_base_url: Option<String>,
    local_runtime: bool,
    sendgrid_key: Option<EventWebhookKey>,
    sendgrid_max_age: Duration,
    inbound_basic_auth: Option<String>,
    inbound_email_require_auth: bool,
}

fn rejected(provider: ProviderKind, error: WebhookError) -> WebhookError {
    warn!(provider = provider.as_str(), error = %error, "webhook refused");
    metrics::emit(
        &[Metric::count(name::WEBHOOK_REJECTED, 1)],
        &[(dimension::PROVIDER, provider.as_str())],
    );
    error
}

impl<S, Q> Webhooks<S, Q>
where
    S: MessageStore + ConversationLog + ReportStore + SuppressionList,
    Q: DeliveryQueue,
{
    /// `SENDGRID_WEBHOOK_PUBLIC_KEY` must parse if it is set.
    pub fn new(
        store: S,
        keywords: KeywordReplies<Q>,
        credentials: &WebhookCredentials,
        config: &WebhookConfig,
    ) -> Result<Self, String> {
        let sendgrid_key = config
            .sendgrid_public_key
            .as_deref()
            .map(EventWebhookKey::parse)
            .transpose()
            .map_err(|e| format!("SENDGRID_WEBHOOK_PUBLIC_KEY: {e}"))?;
        Ok(Self {
            store,
            keywords,
            twilio_auth_token: tokio::sync::RwLock::new(credentials.twilio_auth_token.clone()),
            reader: None,
            gate: ReloadGate::new(RELOAD_AFTER_REFUSAL_EVERY),
            public_base_url: config.public_base_url.clone(),
            local_runtime: config.local_runtime,
            sendgrid_key,
            sendgrid_max_age: config.sendgrid_max_age,
            inbound_basic_auth: credentials.sendgrid_inbound_basic_auth.clone(),
            inbound_email_require_auth: config.inbound_email_require_auth,
        })
    }

    /// The URLs Twilio may have signed: `PUBLIC_BASE_URL` + path + query; else
    /// the URL rebuilt from the request's host and scheme (for a rebuilt URL,
    /// port spellings are tried too: [`twilio_webhook::verify_signature`]).
    /// Off Lambda only, also with the other of http/https ([`crate::local`]).
    pub fn twilio_urls(&self, origin: &RequestOrigin<'_>) -> Vec<String> {
        let path_and_query = origin.path_and_query;
        if let Some(base) = &self.public_base_url {
            return vec![format!("{base}{path_and_query}")];
        }
        let scheme = origin.scheme.unwrap_or("https");
        let host = origin.host.unwrap_or_default();
        crate::local::signature_schemes(scheme, self.local_runtime)
            .into_iter()
            .map(|scheme| format!("{scheme}://{host}{path_and_query}"))
            .collect()
    }

    /// Reads the Twilio auth token again from `reader` before a signature is
    /// refused: from the cache (a rotation within its TTL), then from Secrets
    /// Manager itself at most once per [`RELOAD_AFTER_REFUSAL_EVERY`].
    pub fn reading(mut self, reader: WebhookReader) -> Self {
        self.reader = Some(reader);
        self
    }

    /// Reads again every refresh at most once per `every` (tests).
    pub fn with_reload_after_refusal_every(mut self, every: Duration) -> Self {
        self.gate = ReloadGate::new(every);
        self
    }

    fn signature_matches(
        &self,
        token: &str,
        post: &TwilioPost<'_>,
        params: &[(String, String)],
    ) -> bool {
        // A configured public URL is the one Twilio was given: it alone is
        // checked. A URL rebuilt from the request may differ in its port.
        let check = if self.public_base_url.is_some() {
            twilio_webhook::verify_signature_exact
        } else {
            twilio_webhook::verify_signature
        };
        post.urls
            .iter()
            .any(|url| check(token, url, params, post.signature))
    }

    /// A Twilio auth token other than `used`, read again: from the cache, then
    /// (if the gate allows) from the store itself. `None` if nothing changed.
    async fn token_after_refusal(&self, used: &str) -> Option<String> {
        let reader = self.reader.as_ref()?;
        for refresh in [false, true] {
            if refresh && !self.gate.try_take() {
                break;
            }
            match reader.read(refresh).await {
                Ok(credentials) if credentials.twilio_auth_token != used => {
                    info!("the Twilio auth token changed; checking signatures with the new one");
                    let token = credentials.twilio_auth_token;
                    *self.twilio_auth_token.write().await = token.clone();
                    return Some(token);
                }
                Ok(_) => {}
                Err(error) => warn!(%error, "the webhooks' secret could not be read again"),
            }
        }
        None
    }

    /// Verifies `X-Twilio-Signature` and returns the form parameters.
    async fn verified_twilio_form(
        &self,
        post: &TwilioPost<'_>,
    ) -> Result<Vec<(String, String)>, WebhookError> {
        let params = twilio_webhook::parse_form(post.form);
        let token = self.twilio_auth_token.read().await.clone();
        let mut verified = self.signature_matches(&token, post, &params);
        if !verified
            && post.signature.is_some()
            && let Some(fresh) = self.token_after_refusal(&token).await
        {
            verified = self.signature_matches(&fresh, post, &params);
        }
        if verified {
            Ok(params)
        } else {
            Err(rejected(
                ProviderKind::Twilio,
                WebhookError::SignatureRejected {
                    header: "X-Twilio-Signature",
                    // The URL checked is not echoed: it tells a caller how this
                    // service sees itself (hosts, stages) and helps no legitimate one.
                    message: match post.signature {
                        Some(_) => "the request signature does not match".to_owned(),
                        None => "the request is not signed".to_owned(),
                    },
                },
            ))
        }
    }

    /// `POST /webhooks/twilio/messages`: an inbound SMS/MMS, stored once per `MessageSid`.
    pub async fn twilio_message(
        &self,
        post: TwilioPost<'_>,
    ) -> Result<InboundInsert, WebhookError> {
        let params = self.verified_twilio_form(&post).await?;
        let new = twilio_webhook::inbound_message(&params).map_err(WebhookError::Invalid)?;
        let message = Message::accept(new, Direction::Inbound, OffsetDateTime::now_utc());
        Ok(store_inbound(&self.store, &self.keywords, InboundSource::Twilio, message).await?)
    }

    /// `POST /webhooks/twilio/status`: moves a sent message on.
    pub async fn twilio_status(&self, post: TwilioPost<'_>) -> Result<(), WebhookError> {
        let params = self.verified_twilio_form(&post).await?;
        let report = twilio_webhook::status_report(&params).map_err(WebhookError::Invalid)?;
        let sid = report.provider_message_id.clone().unwrap_or_default();
        let Some(message_id) = self
            .store
            .find_by_provider_id(ProviderKind::Twilio, &sid)
            .await?
        else {
            return Err(WebhookError::UnknownMessage { sid });
        };
        self.apply(&message_id, &report).await?;
        Ok(())
    }

    /// Inbound Parse's HTTP Basic credentials (`Authorization` header value).
    pub fn check_inbound_credentials(
        &self,
        authorization: Option<&str>,
    ) -> Result<InboundParseCaller, WebhookError> {
        let authorized = self
            .inbound_basic_auth
            .as_deref()
            .is_some_and(|expected| sendgrid_webhook::basic_auth_matches(authorization, expected));
        if authorized {
            Ok(InboundParseCaller(()))
        } else {
            Err(rejected(
                ProviderKind::SendGrid,
                WebhookError::Unauthenticated {
                    realm: INBOUND_PARSE_REALM,
                },
            ))
        }
    }

    /// `POST /webhooks/sendgrid/inbound`: an Inbound Parse post (multipart), behind
    /// HTTP Basic credentials.
    pub async fn sendgrid_inbound(
        &self,
        _caller: InboundParseCaller,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<InboundMailOutcome, WebhookError> {
        let mail = sendgrid_webhook::parse_inbound(content_type, body)
            .await
            .map_err(WebhookError::Invalid)?;
        if self.inbound_email_require_auth && !mail.sender_verified {
            // Answered 200 all the same: SendGrid would only post it again.
            info!(
                from_domain = mail.message.from.rsplit('@').next().unwrap_or_default(),
                "inbound email whose sender neither SPF nor DKIM vouched for; not stored"
            );
            metrics::emit(&[Metric::count(name::INBOUND_EMAIL_UNVERIFIED, 1)], &[]);
            return Ok(InboundMailOutcome::Unverified);
        }
        let mut message =
            Message::accept(mail.message, Direction::Inbound, OffsetDateTime::now_utc());
        message.sender_verified = Some(mail.sender_verified);
        Ok(InboundMailOutcome::Stored(Box::new(
            store_inbound(
                &self.store,
                &self.keywords,
                InboundSource::SendGrid,
                message,
            )
            .await?,
        )))
    }

    /// `POST /webhooks/sendgrid/events`: a signed Event Webhook batch.
    pub async fn sendgrid_events(
        &self,
        signature: Option<&str>,
        timestamp: Option<&str>,
        body: &[u8],
    ) -> Result<EventsOutcome, WebhookError> {
        let forbidden = |message: String| {
            rejected(
                ProviderKind::SendGrid,
                WebhookError::SignatureRejected {
                    header: sendgrid_webhook::SIGNATURE_HEADER,
                    message,
                },
            )
        };
        let Some(key) = &self.sendgrid_key else {
            return Err(forbidden(
                "signed event webhooks are not configured (SENDGRID_WEBHOOK_PUBLIC_KEY)".into(),
            ));
        };
        sendgrid_webhook::verify_event_signature(
            key,
            signature,
            timestamp,
            body,
            OffsetDateTime::now_utc(),
            self.sendgrid_max_age,
        )
        .map_err(|e| forbidden(e.to_string()))?;
        let reports = sendgrid_webhook::parse_events(body).map_err(WebhookError::Malformed)?;
        // The events of a batch are independent (reports only move a message
        // forward, whatever their order): handled concurrently, a bounded number
        // at a time, so a full batch is answered well within the timeout.
        let mut outcome = EventsOutcome::default();
        let mut handled = Vec::with_capacity(reports.len());
        for chunk in reports.chunks(EVENT_CONCURRENCY) {
            let events: Vec<_> = chunk.iter().map(|report| self.event(report)).collect();
            handled.extend(futures::future::try_join_all(events).await?);
        }
        for h in handled {
            match h {
                Handled::Applied => outcome.applied += 1,
                Handled::Ignored => outcome.ignored += 1,
                Handled::Duplicate => outcome.duplicates += 1,
            }
        }
        info!(events = reports.len(), ?outcome, "sendgrid events handled");
        Ok(outcome)
    }

    /// One event of a batch: applied to its message, its recipient suppressed if
    /// it says so, and remembered.
    async fn event(&self, report: &StatusReport) -> Result<Handled, WebhookError> {
        if let Some(event_id) = &report.event_id
            && self
                .store
                .event_seen(ProviderKind::SendGrid, event_id)
                .await?
        {
            return Ok(Handled::Duplicate);
        }
        let message_id = self.message_of(report).await?;
        let applied = match &message_id {
            Some(message_id) => self.apply(message_id, report).await?,
            None => false,
        };
        if let Some(signal) = &report.opt_out
            && let Ok(address) = SuppressionChannel::Email.normalize(&signal.address)
        {
            compliance::suppress(
                &self.store,
                Suppression {
                    channel: SuppressionChannel::Email,
                    address,
                    sender: None,
                    reason: signal.reason.clone(),
                    source: SuppressionSource::SendGrid,
                    message_id,
                    created_at: OffsetDateTime::now_utc(),
                },
            )
            .await?;
        }
        // Remembered only once handled: a batch that failed half-way is
        // redelivered by SendGrid and its handled events are then no-ops.
        if let Some(event_id) = &report.event_id {
            self.store
                .remember_event(ProviderKind::SendGrid, event_id, OffsetDateTime::now_utc())
                .await?;
        }
        Ok(if applied {
            Handled::Applied
        } else {
            Handled::Ignored
        })
    }

    /// Our id of the message a report is about: echoed back by the provider
    /// (SendGrid `custom_args`), else looked up by the provider's id.
    async fn message_of(&self, report: &StatusReport) -> Result<Option<String>, WebhookError> {
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
    async fn apply(&self, message_id: &str, report: &StatusReport) -> Result<bool, WebhookError> {
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
