//! Routing a message to its provider, and what every provider call shares: one
//! HTTP client and one way to classify failures.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use super::sendgrid::SendGrid;
use super::twilio::Twilio;
use crate::config::{Config, ConfigError, require};
use crate::domain::{Channel, Message};
use crate::ports::{Accepted, Provider, ProviderError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The HTTP client shared by the provider adapters; build it once at cold start.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("messaging-delivery/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// SMS and MMS go to Twilio, email to SendGrid.
#[derive(Clone, Debug)]
pub struct Providers {
    pub twilio: Twilio,
    pub sendgrid: SendGrid,
}

impl Providers {
    /// Both providers from the configuration; fails if a credential is missing.
    pub fn from_config(config: &Config, client: reqwest::Client) -> Result<Self, ConfigError> {
        Ok(Self {
            twilio: Twilio::new(
                client.clone(),
                &config.twilio.api_url,
                require(&config.twilio.account_sid, "TWILIO_ACCOUNT_SID")?,
                require(&config.twilio.auth_token, "TWILIO_AUTH_TOKEN")?,
            ),
            sendgrid: SendGrid::new(
                client,
                &config.sendgrid.api_url,
                require(&config.sendgrid.api_key, "SENDGRID_API_KEY")?,
                &config.sendgrid.subject,
            ),
        })
    }
}

impl Provider for Providers {
    async fn send(&self, message: &Message) -> Result<Accepted, ProviderError> {
        match message.channel {
            Channel::Sms | Channel::Mms => self.twilio.send(message).await,
            Channel::Email => self.sendgrid.send(message).await,
        }
    }
}

/// A non-2xx answer: throttling, request timeouts and server errors are worth
/// retrying; any other client error will fail the same way again.
pub fn classify_status(
    provider: &str,
    status: StatusCode,
    headers: &HeaderMap,
    detail: &str,
) -> ProviderError {
    let reason = format!("{provider} answered {}: {detail}", status.as_u16());
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        ProviderError::Retryable {
            reason,
            retry_after: retry_after(headers, SystemTime::now()),
        }
    } else {
        ProviderError::Rejected { reason }
    }
}

/// No answer at all (timeout, connection refused or reset): retry.
pub fn classify_transport(provider: &str, error: &reqwest::Error) -> ProviderError {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    ProviderError::Retryable {
        reason: format!("{provider} {kind}: {error}"),
        retry_after: None,
    }
}

/// `Retry-After` as delay-seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// Provider error bodies can be long; keep the part worth recording.
pub fn truncate(text: &str, max_chars: usize) -> String {
    let mut out: String = text.chars().take(max_chars).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(retry: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = retry {
            h.insert(RETRY_AFTER, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn throttling_and_server_errors_are_retried() {
        for code in [429, 408, 500, 502, 503, 504] {
            let status = StatusCode::from_u16(code).unwrap();
            assert!(
                matches!(
                    classify_status("twilio", status, &headers(None), "x"),
                    ProviderError::Retryable { .. }
                ),
                "{code}"
            );
        }
    }

    #[test]
    fn other_client_errors_are_final() {
        for code in [400, 401, 403, 404, 413, 422] {
            let status = StatusCode::from_u16(code).unwrap();
            let err = classify_status("sendgrid", status, &headers(None), "bad address");
            assert_eq!(
                err,
                ProviderError::Rejected {
                    reason: format!("sendgrid answered {code}: bad address")
                }
            );
        }
    }

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            retry_after(&headers(Some("7")), now),
            Some(Duration::from_secs(7))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            retry_after(&headers(Some(&date)), now),
            Some(Duration::from_secs(30))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(
            retry_after(&headers(Some(&past)), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&headers(Some("soon")), now), None);
        assert_eq!(retry_after(&headers(None), now), None);
        let err = classify_status(
            "twilio",
            StatusCode::TOO_MANY_REQUESTS,
            &headers(Some("2")),
            "slow down",
        );
        assert_eq!(
            err,
            ProviderError::Retryable {
                reason: "twilio answered 429: slow down".into(),
                retry_after: Some(Duration::from_secs(2))
            }
        );
    }

    #[test]
    fn truncates_on_character_boundaries() {
        assert_eq!(truncate("héllo", 2), "hé…");
        assert_eq!(truncate("hi", 5), "hi");
    }
}
