//! Routing a message to its provider, and what every provider call shares: one
//! HTTP client and one way to classify failures.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use tracing::{info, warn};

use super::secrets::{
    CredentialReader, ProviderCredentials, RELOAD_AFTER_REFUSAL_EVERY, ReloadGate,
};
use super::sendgrid::SendGrid;
use super::twilio::Twilio;
use crate::config::Config;
use crate::domain::{Message, ProviderKind};
use crate::ports::{Accepted, Provider, ProviderError, RetryReason};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The HTTP client shared by the provider adapters; build it once at cold start.
/// The providers' HTTP client. It follows no redirect: a provider API answers
/// where it is asked, and a redirect would carry our credentials elsewhere.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("messaging-delivery/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// SMS and MMS go to Twilio, email to SendGrid, with the credentials held now.
/// A 401/403 reads the credentials again (at most once per
/// [`RELOAD_AFTER_REFUSAL_EVERY`]) and, if they changed, the call is made again
/// with them; from Secrets Manager, every call also picks up a rotation within
/// the cache's TTL.
pub struct Providers {
    settings: Settings,
    client: reqwest::Client,
    reader: CredentialReader,
    current: tokio::sync::RwLock<Arc<Clients>>,
    gate: ReloadGate,
}

/// What the provider clients are built from besides the credentials.
#[derive(Debug, Clone)]
struct Settings {
    twilio_api_url: String,
    status_callback_url: Option<String>,
    sendgrid_api_url: String,
    subject: String,
}

/// Both providers' clients for one set of credentials.
#[derive(Debug)]
struct Clients {
    credentials: ProviderCredentials,
    twilio: Twilio,
    sendgrid: SendGrid,
}

impl Clients {
    fn new(
        settings: &Settings,
        client: &reqwest::Client,
        credentials: ProviderCredentials,
    ) -> Self {
        Self {
            twilio: Twilio::new(
                client.clone(),
                &settings.twilio_api_url,
                &credentials.twilio_account_sid,
                credentials
                    .twilio_login
                    .basic_auth(&credentials.twilio_account_sid),
            )
            .with_status_callback(settings.status_callback_url.clone()),
            sendgrid: SendGrid::new(
                client.clone(),
                &settings.sendgrid_api_url,
                &credentials.sendgrid_api_key,
                &settings.subject,
            ),
            credentials,
        }
    }

    async fn send(&self, message: &Message) -> Result<Accepted, ProviderError> {
        match message.channel.provider() {
            ProviderKind::Twilio => self.twilio.send(message).await,
            ProviderKind::SendGrid => self.sendgrid.send(message).await,
        }
    }
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Providers")
            .field("settings", &self.settings)
            .field("reader", &self.reader)
            .finish_non_exhaustive()
    }
}

impl Providers {
    /// Both providers with fixed credentials (read once at start-up, never again).
    pub fn from_config(
        config: &Config,
        credentials: &ProviderCredentials,
        client: reqwest::Client,
    ) -> Self {
        Self::reading(
            config,
            CredentialReader::Fixed(credentials.clone()),
            credentials.clone(),
            client,
        )
    }

    /// Both providers with `credentials` (as `reader` gave them at start-up),
    /// read again from `reader` as described on [`Providers`].
    pub fn reading(
        config: &Config,
        reader: CredentialReader,
        credentials: ProviderCredentials,
        client: reqwest::Client,
    ) -> Self {
        let settings = Settings {
            twilio_api_url: config.twilio.api_url.clone(),
            status_callback_url: config.twilio.status_callback_url.clone(),
            sendgrid_api_url: config.sendgrid.api_url.clone(),
            subject: config.sendgrid.subject.clone(),
        };
        let clients = Clients::new(&settings, &client, credentials);
        Self {
            settings,
            client,
            reader,
            current: tokio::sync::RwLock::new(Arc::new(clients)),
            gate: ReloadGate::new(RELOAD_AFTER_REFUSAL_EVERY),
        }
    }

    /// Reads the credentials again after a refusal at most once per `every`
    /// (default [`RELOAD_AFTER_REFUSAL_EVERY`]).
    pub fn with_reload_after_refusal_every(mut self, every: Duration) -> Self {
        self.gate = ReloadGate::new(every);
        self
    }

    /// The clients to call with: the held ones, or new ones if the cached
    /// secret changed.
    async fn clients(&self) -> Arc<Clients> {
        let held = self.current.read().await.clone();
        if !self.reader.is_cached() {
            return held;
        }
        match self.reader.read(false).await {
            Ok(credentials) if credentials != held.credentials => {
                self.replace(&held, credentials).await
            }
            Ok(_) => held,
            Err(error) => {
                warn!(%error, "provider credentials could not be read again; using the ones held");
                held
            }
        }
    }

    /// After `used` was refused: other clients if the credentials changed since
    /// (read now, unless that was done within the gate's interval).
    async fn after_refusal(&self, used: &Arc<Clients>) -> Option<Arc<Clients>> {
        let held = self.current.read().await.clone();
        if !Arc::ptr_eq(&held, used) {
            return Some(held);
        }
        if !self.gate.try_take() {
            return None;
        }
        match self.reader.read(true).await {
            Ok(credentials) if credentials != used.credentials => {
                Some(self.replace(used, credentials).await)
            }
            Ok(_) => {
                warn!("a provider refused our credentials and their store holds the same ones");
                None
            }
            Err(error) => {
                warn!(%error, "provider credentials could not be read again after a refusal");
                None
            }
        }
    }

    async fn replace(&self, old: &Arc<Clients>, credentials: ProviderCredentials) -> Arc<Clients> {
        let mut slot = self.current.write().await;
        if Arc::ptr_eq(&slot, old) {
            *slot = Arc::new(Clients::new(&self.settings, &self.client, credentials));
            info!("provider credentials changed; calling with the new ones");
        }
        slot.clone()
    }
}

/// 401 or 403: the credentials were refused.
fn refused(result: &Result<Accepted, ProviderError>) -> bool {
    matches!(
        result,
        Err(ProviderError::Retryable {
            kind: RetryReason::Credentials,
            ..
        })
    )
}

impl Provider for Providers {
    async fn send(&self, message: &Message) -> Result<Accepted, ProviderError> {
        let clients = self.clients().await;
        let result = clients.send(message).await;
        if !refused(&result) {
            return result;
        }
        match self.after_refusal(&clients).await {
            Some(fresh) => fresh.send(message).await,
            None => result,
        }
    }
}

/// A non-2xx answer: refused credentials, throttling, request timeouts and
/// server errors are worth retrying; any other client error will fail the same
/// way again.
pub fn classify_status(
    provider: &str,
    status: StatusCode,
    headers: &HeaderMap,
    detail: &str,
) -> ProviderError {
    let reason = format!("{provider} answered {}: {detail}", status.as_u16());
    let kind = if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        // Rotated or revoked credentials: read again and retried, never final.
        RetryReason::Credentials
    } else if status == StatusCode::TOO_MANY_REQUESTS {
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
        reason: redact_urls(&format!("{provider} {what}: {error}")),
        kind,
        retry_after: None,
    }
}

/// `text` with every URL cut to its scheme and host: a transport error names
/// the request URL, and Twilio's holds the Account SID; errors are stored (and
/// answered by the API as `last_error`) and logged.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = ["https://", "http://"]
        .iter()
        .filter_map(|scheme| rest.find(scheme).map(|i| (i, scheme.len())))
        .min()
    {
        let (at, scheme_len) = start;
        out.push_str(&rest[..at]);
        let url = &rest[at..];
        let end = url
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>'))
            .unwrap_or(url.len());
        let host_end = url[scheme_len..end]
            .find('/')
            .map_or(end, |i| scheme_len + i);
        out.push_str(&url[..host_end]);
        if host_end < end {
            out.push_str("/…");
        }
        rest = &url[end..];
    }
    out.push_str(rest);
    out
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

    #[test]
    fn urls_in_errors_keep_only_their_host() {
        assert_eq!(
            redact_urls(
                "twilio connection failed: error sending request for url \
                 (https://api.twilio.com/2010-04-01/Accounts/ACsecret/Messages.json)"
            ),
            "twilio connection failed: error sending request for url (https://api.twilio.com/…)"
        );
        assert_eq!(redact_urls("no url here"), "no url here");
        assert_eq!(
            redact_urls("http://127.0.0.1:4010 and http://x.io/a/b c"),
            "http://127.0.0.1:4010 and http://x.io/… c"
        );
    }

    #[tokio::test]
    async fn a_transport_error_does_not_carry_the_account_sid() {
        // Nothing listens on port 9 of the loopback address.
        let client = http_client(Duration::from_secs(2)).unwrap();
        let error = client
            .post("http://127.0.0.1:9/2010-04-01/Accounts/ACsecret123/Messages.json")
            .send()
            .await
            .unwrap_err();
        assert!(error.to_string().contains("ACsecret123"), "{error}");
        let ProviderError::Retryable { reason, .. } = classify_transport("twilio", &error) else {
            panic!("not retryable");
        };
        assert!(!reason.contains("ACsecret123"), "{reason}");
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        // A server that redirects every request elsewhere.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:9/steal\r\n\
                          Content-Length: 0\r\nConnection: close\r\n\r\n",
                    )
                    .await;
            }
        });
        let client = http_client(Duration::from_secs(2)).unwrap();
        let response = client
            .post(format!("http://{addr}/v3/mail/send"))
            .send()
            .await
            .expect("the redirect itself is the answer");
        assert_eq!(response.status(), 307);
    }

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
    fn refused_credentials_are_retried() {
        for code in [401, 403] {
            let status = StatusCode::from_u16(code).unwrap();
            let err = classify_status("twilio", status, &headers(None), "Authenticate");
            assert!(
                matches!(
                    &err,
                    ProviderError::Retryable {
                        kind: RetryReason::Credentials,
                        ..
                    }
                ),
                "{code}: {err:?}"
            );
        }
    }

    #[test]
    fn other_client_errors_are_final() {
        for code in [400, 404, 413, 422] {
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
