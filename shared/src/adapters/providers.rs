//! Routing a message to its provider, and what every provider call shares: one
//! HTTP client and one way to classify failures.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use super::secrets::ProviderCredentials;
use super::sendgrid::SendGrid;
use super::twilio::Twilio;
use crate::config::Config;
use crate::domain::{Message, ProviderKind};
use crate::ports::{Accepted, Provider, ProviderError, RetryReason};

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
    /// Both providers from the configuration and the credentials resolved once at
    /// start-up (`secrets::load_provider_credentials`).
    pub fn from_config(
        config: &Config,
        credentials: &ProviderCredentials,
        client: reqwest::Client,
    ) -> Self {
        Self {
            twilio: Twilio::new(
                client.clone(),
                &config.twilio.api_url,
                &credentials.twilio_account_sid,
                &credentials.twilio_auth_token,
            )
            .with_status_callback(config.twilio.status_callback_url.clone()),
            sendgrid: SendGrid::new(
                client,
                &config.sendgrid.api_url,
                &credentials.sendgrid_api_key,
                &config.sendgrid.subject,
            ),
        }
    }
}

impl Provider for Providers {
    async fn send(&self, message: &Message) -> Result<Accepted, ProviderError> {
        match message.channel.provider() {
            ProviderKind::Twilio => self.twilio.send(message).await,
            ProviderKind::SendGrid => self.sendgrid.send(message).await,
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
    let kind = if status == StatusCode::TOO_MANY_REQUESTS {
        RetryReason::Throttled
    } else if status == StatusCode::REQUEST_TIMEOUT || status.is_server_error() {
        RetryReason::ServerError
    } else {
        return ProviderError::Rejected { reason };
    };
    ProviderError::Retryable {
        reason,
        kind,
        retry_after: retry_after(headers, SystemTime::now()),
    }
}

/// No answer at all (timeout, connection refused or reset): retry.
pub fn classify_transport(provider: &str, error: &reqwest::Error) -> ProviderError {
    let (what, kind) = if error.is_timeout() {
        ("timed out", RetryReason::Timeout)
    } else if error.is_connect() {
        ("connection failed", RetryReason::Connection)
    } else {
        ("request failed", RetryReason::Connection)
    };
    ProviderError::Retryable {
        reason: format!("{provider} {what}: {error}"),
        kind,
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
        for (code, expected) in [
            (429, RetryReason::Throttled),
            (408, RetryReason::ServerError),
            (500, RetryReason::ServerError),
            (502, RetryReason::ServerError),
            (503, RetryReason::ServerError),
            (504, RetryReason::ServerError),
        ] {
            let status = StatusCode::from_u16(code).unwrap();
            match classify_status("twilio", status, &headers(None), "x") {
                ProviderError::Retryable { kind, .. } => assert_eq!(kind, expected, "{code}"),
                other => panic!("{code}: expected Retryable, got {other:?}"),
            }
        }
    }

    /// A real transport error from a client with the given timeout.
    async fn transport_error(url: &str, timeout: Duration) -> reqwest::Error {
        http_client(timeout)
            .unwrap()
            .get(url)
            .send()
            .await
            .expect_err("the request must fail")
    }

    #[tokio::test]
    async fn refused_connections_are_retried_as_connection_failures() {
        // A port that was just free: nothing listens there any more.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let error =
            transport_error(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(5)).await;
        match classify_transport("twilio", &error) {
            ProviderError::Retryable {
                reason,
                kind,
                retry_after,
            } => {
                assert_eq!(kind, RetryReason::Connection, "{reason}");
                assert!(reason.starts_with("twilio connection failed: "), "{reason}");
                assert_eq!(retry_after, None);
            }
            other => panic!("expected Retryable, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn unanswered_requests_are_retried_as_timeouts() {
        // Accepts the connection and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let hold = tokio::spawn(async move {
            let (_socket, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        let error = transport_error(&url, Duration::from_millis(200)).await;
        hold.abort();
        match classify_transport("sendgrid", &error) {
            ProviderError::Retryable {
                reason,
                kind,
                retry_after,
            } => {
                assert_eq!(kind, RetryReason::Timeout, "{reason}");
                assert!(reason.starts_with("sendgrid timed out: "), "{reason}");
                assert_eq!(retry_after, None);
            }
            other => panic!("expected Retryable, got {other:?}"),
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
                kind: RetryReason::Throttled,
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
