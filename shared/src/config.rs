//! Configuration, read once from the environment at cold start.

use std::time::Duration;

use crate::domain::access::Senders;
use crate::domain::suppression::{DEFAULT_HELP_REPLY, DEFAULT_OPT_OUT_REPLY};
use crate::domain::{Keywords, OptOutPolicy, OptOutScope, RetryPolicy};

pub const DEFAULT_TWILIO_API_URL: &str = "https://api.twilio.com";
pub const DEFAULT_SENDGRID_API_URL: &str = "https://api.sendgrid.com";

/// Environment variables naming where the provider credentials are stored.
pub const PROVIDER_SECRET_ID: &str = "PROVIDER_SECRET_ID";
pub const PROVIDER_PARAMETER_PATH: &str = "PROVIDER_PARAMETER_PATH";
/// The webhooks' secret: what they verify callers with.
pub const WEBHOOK_SECRET_ID: &str = "WEBHOOK_SECRET_ID";
/// The secret pagination cursors are signed with.
pub const CURSOR_SECRET_ID: &str = "CURSOR_SECRET_ID";
/// The provider credentials as environment variables: local development only.
pub const ENV_CREDENTIALS: [&str; 3] = [
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "SENDGRID_API_KEY",
];

/// A configuration error. Credential errors name the secret, parameter or variable
/// and the missing key; they never contain a credential's value.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("environment variable {0} is required but not set")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("environment variables {first} and {second} are both set; set only one of them")]
    Conflict {
        first: &'static str,
        second: &'static str,
    },
    #[error(
        "no provider credentials: set PROVIDER_SECRET_ID (a Secrets Manager secret) or \
         PROVIDER_PARAMETER_PATH (an SSM Parameter Store path); TWILIO_ACCOUNT_SID, \
         TWILIO_AUTH_TOKEN and SENDGRID_API_KEY are for local development only"
    )]
    NoCredentials,
    /// `location` is e.g. `Secrets Manager secret "messaging/providers"`.
    #[error("credentials: {location} has no {key:?}")]
    MissingCredential { location: String, key: &'static str },
    #[error("credentials: {location}: {reason}")]
    InvalidCredential { location: String, reason: String },
    #[error("credentials: reading {location} failed: {reason}")]
    CredentialsUnavailable { location: String, reason: String },
    #[error(
        "no cursor key on Lambda: set CURSOR_SECRET_ID (a Secrets Manager secret; the \
         template creates one); the development key would let anyone forge cursors"
    )]
    NoCursorKey,
}

/// Everything the functions read from their environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `TABLE_NAME`: the DynamoDB table holding messages.
    pub table_name: String,
    /// `QUEUE_URL`: the SQS queue of messages awaiting delivery.
    pub queue_url: Option<String>,
    pub twilio: TwilioConfig,
    pub sendgrid: SendGridConfig,
    /// Where the delivery function reads the provider credentials from, once at
    /// start-up (`adapters::secrets::load_provider_credentials`).
    pub credentials: CredentialSource,
    /// A warning to log once when the credentials are loaded: environment
    /// credentials on what looks like real Lambda, or environment credentials
    /// ignored because a store is configured. Names variables only, never values.
    pub credential_warning: Option<String>,
    pub delivery: DeliveryConfig,
    pub webhooks: WebhookConfig,
    /// Where the key pagination cursors are signed with comes from. Every
    /// instance of the functions that page must share it.
    pub cursor_key: CursorKeySource,
    pub access: AccessConfig,
    /// Opt-outs: `OPT_OUT_SCOPE` (`sender`, default, or `all`), the keyword
    /// lists `OPT_OUT_KEYWORDS`, `OPT_IN_KEYWORDS`, `HELP_KEYWORDS`
    /// (comma-separated; each replaces its default list) and the replies
    /// `OPT_OUT_REPLY`, `OPT_IN_REPLY` (none by default), `HELP_REPLY`.
    pub compliance: OptOutPolicy,
}

/// API keys and senders.
#[derive(Debug, Clone)]
pub struct AccessConfig {
    /// `API_KEY_CACHE_SECONDS` (default 30): how long a function trusts a key
    /// it has read; a revoked key is refused within this time.
    pub key_cache: Duration,
    /// `ALLOWED_SENDERS`: the `from` numbers, addresses and `@domain`s outbound
    /// messages may use; empty allows any (local development).
    pub allowed_senders: Senders,
}

/// The key cursors are signed with when `CURSOR_SECRET` is unset (local stacks).
pub const DEVELOPMENT_CURSOR_KEY: &[u8] = b"messaging-local-development-cursor-key";

/// Where the cursor key comes from.
#[derive(Clone, PartialEq)]
pub enum CursorKeySource {
    /// `CURSOR_SECRET_ID`: a Secrets Manager secret (name or ARN) whose
    /// SecretString is the key, read once at start-up. What the template sets.
    SecretsManager { secret_id: String },
    /// `CURSOR_SECRET`: the key itself (local stacks; on Lambda it would be
    /// readable by anyone allowed `lambda:GetFunctionConfiguration`).
    Environment(String),
    /// Neither set, off Lambda: the development key.
    Development,
    /// Neither set on Lambda: the function refuses to start.
    Missing,
}

// The key stays out of logs.
impl std::fmt::Debug for CursorKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SecretsManager { secret_id } => f
                .debug_struct("SecretsManager")
                .field("secret_id", secret_id)
                .finish(),
            Self::Environment(_) => f.write_str("Environment(<redacted>)"),
            Self::Development => f.write_str("Development"),
            Self::Missing => f.write_str("Missing"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TwilioConfig {
    /// `TWILIO_API_URL`, default the public Twilio API.
    pub api_url: String,
    /// `TWILIO_STATUS_CALLBACK_URL`: sent as `StatusCallback` with every message,
    /// so Twilio reports delivery. Default `PUBLIC_BASE_URL` +
    /// `/webhooks/twilio/status`; none when neither is set.
    pub status_callback_url: Option<String>,
}

/// The provider webhooks' settings.
#[derive(Clone)]
pub struct WebhookConfig {
    /// `PUBLIC_BASE_URL`: the scheme and host (and stage path, if any) the
    /// providers call, e.g. `https://api.example.com`. Twilio signs the URL it
    /// was configured with, which API Gateway may rewrite before the function
    /// sees it; unset, the URL is rebuilt from the request's `Host` and
    /// `X-Forwarded-Proto` headers.
    pub public_base_url: Option<String>,
    /// `SENDGRID_WEBHOOK_PUBLIC_KEY`: the Event Webhook's verification key, as
    /// SendGrid shows it (base64 DER). Unset, every event post is refused.
    pub sendgrid_public_key: Option<String>,
    /// `SENDGRID_WEBHOOK_MAX_AGE_SECONDS` (default 300): older signed event posts
    /// are refused as replays.
    pub sendgrid_max_age: Duration,
    /// `WEBHOOK_SECRET_ID`: a Secrets Manager secret (name or ARN) whose
    /// SecretString is `{"twilio_auth_token", "sendgrid_inbound_basic_auth"}`:
    /// what the webhooks verify callers with, and nothing that sends. Unset (local
    /// development), `TWILIO_AUTH_TOKEN` and `SENDGRID_INBOUND_BASIC_AUTH` below.
    pub secret_id: Option<String>,
    /// `TWILIO_AUTH_TOKEN` (local development only): the token Twilio signs with.
    pub twilio_auth_token: Option<String>,
    /// `SENDGRID_INBOUND_BASIC_AUTH` (local development only): `user:password`
    /// SendGrid's Inbound Parse must send (its URL is configured as
    /// `https://user:password@host/...`). Unset, every inbound parse post is refused.
    pub sendgrid_inbound_basic_auth: Option<String>,
    /// Off real Lambda (`cargo lambda watch`, `sam local`, tests): a local runtime
    /// may report https for a plain-http request, so a Twilio signature is also
    /// checked against the URL's other scheme. Never on Lambda.
    pub local_runtime: bool,
    /// `INBOUND_EMAIL_REQUIRE_AUTH` (default off): an inbound email whose sender
    /// neither SPF nor DKIM vouched for is answered 200 and not stored, so a
    /// forged From cannot land in a customer's thread.
    pub inbound_email_require_auth: bool,
}

// The inbound parse password stays out of logs.
impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("public_base_url", &self.public_base_url)
            .field("local_runtime", &self.local_runtime)
            .field("secret_id", &self.secret_id)
            .field(
                "twilio_auth_token",
                &self.twilio_auth_token.as_ref().map(|_| "<redacted>"),
            )
            .field("sendgrid_public_key", &self.sendgrid_public_key)
            .field("sendgrid_max_age", &self.sendgrid_max_age)
            .field(
                "sendgrid_inbound_basic_auth",
                &self
                    .sendgrid_inbound_basic_auth
                    .as_ref()
                    .map(|_| "<redacted>"),
            )
            .field(
                "inbound_email_require_auth",
                &self.inbound_email_require_auth,
            )
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct SendGridConfig {
    /// `SENDGRID_API_URL`, default the public SendGrid API.
    pub api_url: String,
    /// `EMAIL_SUBJECT`: subject line of outbound email (the API has no subject field).
    pub subject: String,
}

/// Where the provider credentials come from.
#[derive(Clone, PartialEq)]
pub enum CredentialSource {
    /// `PROVIDER_SECRET_ID`: a Secrets Manager secret (name or ARN) whose
    /// SecretString is `{"twilio_account_sid", "twilio_auth_token", "sendgrid_api_key"}`.
    SecretsManager { secret_id: String },
    /// `PROVIDER_PARAMETER_PATH`: an SSM Parameter Store path (e.g.
    /// `/messaging/providers`) holding `twilio-account-sid`, and `twilio-auth-token`
    /// and `sendgrid-api-key` as SecureStrings.
    ParameterStore { path: String },
    /// Neither set: `TWILIO_ACCOUNT_SID`, `TWILIO_AUTH_TOKEN`, `SENDGRID_API_KEY`
    /// from the environment (local development only).
    Environment {
        twilio_account_sid: Option<String>,
        twilio_auth_token: Option<String>,
        sendgrid_api_key: Option<String>,
    },
}

// Secrets stay out of logs: Debug shows only whether they are set.
impl std::fmt::Debug for CredentialSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SecretsManager { secret_id } => f
                .debug_struct("SecretsManager")
                .field("secret_id", secret_id)
                .finish(),
            Self::ParameterStore { path } => f
                .debug_struct("ParameterStore")
                .field("path", path)
                .finish(),
            Self::Environment {
                twilio_account_sid,
                twilio_auth_token,
                sendgrid_api_key,
            } => f
                .debug_struct("Environment")
                .field("twilio_account_sid", twilio_account_sid)
                .field(
                    "twilio_auth_token",
                    &twilio_auth_token.as_ref().map(|_| "<redacted>"),
                )
                .field(
                    "sendgrid_api_key",
                    &sendgrid_api_key.as_ref().map(|_| "<redacted>"),
                )
                .finish(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// `RETRY_BASE_SECONDS` (default 5), `RETRY_MAX_SECONDS` (default 300),
    /// `MAX_RECEIVE_COUNT` (default 5, the queue's redrive `maxReceiveCount`),
    /// `MAX_DELIVERY_AGE_SECONDS` (default 36,000: 10 hours).
    pub retry: RetryPolicy,
    /// `PROVIDER_TIMEOUT_SECONDS` (default 10): whole-request timeout for provider calls.
    pub provider_timeout: Duration,
    /// `LEASE_SECONDS` (default 60): how long a delivery attempt owns a message.
    pub lease: Duration,
    /// `BREAKER_THRESHOLD` (default 5; 0 turns the breaker off): retryable
    /// failures in a row that pause calls to a provider.
    pub breaker_threshold: u32,
    /// `BREAKER_COOLDOWN_SECONDS` (default 30): how long calls pause before one
    /// probes the provider.
    pub breaker_cooldown: Duration,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let seconds = |name: &'static str, default: u64| -> Result<Duration, ConfigError> {
            get(name).map_or(Ok(Duration::from_secs(default)), |v| {
                v.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .map(Duration::from_secs_f64)
                    .ok_or(ConfigError::Invalid {
                        name,
                        reason: format!("expected a number of seconds, got {v:?}"),
                    })
            })
        };
        let max_receives =
            match get("MAX_RECEIVE_COUNT") {
                None => 5,
                Some(v) => v.trim().parse::<u32>().ok().filter(|n| *n >= 1).ok_or(
                    ConfigError::Invalid {
                        name: "MAX_RECEIVE_COUNT",
                        reason: format!("expected a positive integer, got {v:?}"),
                    },
                )?,
            };
        let url = |name: &'static str, default: &str| -> Result<String, ConfigError> {
            let value = get(name).unwrap_or_else(|| default.to_owned());
            url::Url::parse(&value).map_err(|e| ConfigError::Invalid {
                name,
                reason: format!("{value:?} is not a URL: {e}"),
            })?;
            Ok(value.trim_end_matches('/').to_owned())
        };
        // The provider APIs get credentials with every call: https, except for
        // a local stand-in (a loopback or private address).
        let provider_url = |name: &'static str, default: &str| -> Result<String, ConfigError> {
            let value = url(name, default)?;
            let parsed = url::Url::parse(&value).map_err(|e| ConfigError::Invalid {
                name,
                reason: e.to_string(),
            })?;
            if parsed.scheme() == "https" || is_local_host(parsed.host()) {
                Ok(value)
            } else {
                Err(ConfigError::Invalid {
                    name,
                    reason: format!(
                        "{value:?}: provider APIs are called over https only (plain http only \
                         for a local simulator on a loopback or private address)"
                    ),
                })
            }
        };

        let (credentials, credential_warning) = credential_source(&get)?;
        let optional_url = |name: &'static str| -> Result<Option<String>, ConfigError> {
            get(name).map(|_| url(name, "")).transpose()
        };
        let public_base_url = optional_url("PUBLIC_BASE_URL")?;
        let status_callback_url = optional_url("TWILIO_STATUS_CALLBACK_URL")?.or_else(|| {
            public_base_url
                .as_ref()
                .map(|base| format!("{base}/webhooks/twilio/status"))
        });

        Ok(Self {
            table_name: get("TABLE_NAME").ok_or(ConfigError::Missing("TABLE_NAME"))?,
            queue_url: get("QUEUE_URL"),
            twilio: TwilioConfig {
                api_url: provider_url("TWILIO_API_URL", DEFAULT_TWILIO_API_URL)?,
                status_callback_url,
            },
            sendgrid: SendGridConfig {
                api_url: provider_url("SENDGRID_API_URL", DEFAULT_SENDGRID_API_URL)?,
                subject: get("EMAIL_SUBJECT").unwrap_or_else(|| "New message".to_owned()),
            },
            credentials,
            credential_warning,
            delivery: DeliveryConfig {
                retry: RetryPolicy {
                    base: seconds("RETRY_BASE_SECONDS", 5)?,
                    cap: seconds("RETRY_MAX_SECONDS", 300)?,
                    max_receives,
                    max_age: seconds("MAX_DELIVERY_AGE_SECONDS", 36_000)?,
                },
                provider_timeout: seconds("PROVIDER_TIMEOUT_SECONDS", 10)?,
                lease: seconds("LEASE_SECONDS", 60)?,
                breaker_threshold: match get("BREAKER_THRESHOLD") {
                    None => 5,
                    Some(v) => v.trim().parse::<u32>().map_err(|_| ConfigError::Invalid {
                        name: "BREAKER_THRESHOLD",
                        reason: format!("expected a whole number, got {v:?}"),
                    })?,
                },
                breaker_cooldown: seconds("BREAKER_COOLDOWN_SECONDS", 30)?,
            },
            webhooks: WebhookConfig {
                public_base_url,
                secret_id: get(WEBHOOK_SECRET_ID).map(|id| id.trim().to_owned()),
                local_runtime: !on_lambda(&get),
                twilio_auth_token: get("TWILIO_AUTH_TOKEN"),
                sendgrid_public_key: get("SENDGRID_WEBHOOK_PUBLIC_KEY"),
                sendgrid_max_age: seconds("SENDGRID_WEBHOOK_MAX_AGE_SECONDS", 300)?,
                sendgrid_inbound_basic_auth: get("SENDGRID_INBOUND_BASIC_AUTH"),
                inbound_email_require_auth: match get("INBOUND_EMAIL_REQUIRE_AUTH")
                    .map(|v| v.trim().to_ascii_lowercase())
                    .as_deref()
                {
                    None | Some("false" | "0" | "no" | "off") => false,
                    Some("true" | "1" | "yes" | "on") => true,
                    Some(other) => {
                        return Err(ConfigError::Invalid {
                            name: "INBOUND_EMAIL_REQUIRE_AUTH",
                            reason: format!("expected true or false, got {other:?}"),
                        });
                    }
                },
            },
            cursor_key: match (get(CURSOR_SECRET_ID), get("CURSOR_SECRET")) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::Conflict {
                        first: CURSOR_SECRET_ID,
                        second: "CURSOR_SECRET",
                    });
                }
                (Some(id), None) => CursorKeySource::SecretsManager {
                    secret_id: id.trim().to_owned(),
                },
                (None, Some(key)) => CursorKeySource::Environment(key),
                (None, None) if on_lambda(&get) => CursorKeySource::Missing,
                (None, None) => CursorKeySource::Development,
            },
            access: AccessConfig {
                key_cache: seconds("API_KEY_CACHE_SECONDS", 30)?,
                allowed_senders: Senders::parse(&get("ALLOWED_SENDERS").unwrap_or_default())
                    .map_err(|reason| ConfigError::Invalid {
                        name: "ALLOWED_SENDERS",
                        reason,
                    })?,
            },
            compliance: OptOutPolicy {
                keywords: Keywords::new(
                    get("OPT_OUT_KEYWORDS").as_deref(),
                    get("OPT_IN_KEYWORDS").as_deref(),
                    get("HELP_KEYWORDS").as_deref(),
                )
                .map_err(|reason| ConfigError::Invalid {
                    name: "OPT_OUT_KEYWORDS",
                    reason,
                })?,
                scope: match get("OPT_OUT_SCOPE") {
                    None => OptOutScope::default(),
                    Some(v) => OptOutScope::parse(&v).ok_or(ConfigError::Invalid {
                        name: "OPT_OUT_SCOPE",
                        reason: format!("expected sender or all, got {v:?}"),
                    })?,
                },
                opt_out_reply: get("OPT_OUT_REPLY")
                    .unwrap_or_else(|| DEFAULT_OPT_OUT_REPLY.to_owned()),
                opt_in_reply: get("OPT_IN_REPLY").unwrap_or_default(),
                help_reply: get("HELP_REPLY").unwrap_or_else(|| DEFAULT_HELP_REPLY.to_owned()),
            },
        })
    }

    /// The queue URL, required by the functions that enqueue or reschedule.
    pub fn require_queue_url(&self) -> Result<&str, ConfigError> {
        self.queue_url
            .as_deref()
            .ok_or(ConfigError::Missing("QUEUE_URL"))
    }
}

/// Real Lambda, not a local runtime pointed at an emulator (`cargo lambda
/// watch`, `sam local`, the emulator's own functions all set `AWS_ENDPOINT_URL`).
fn on_lambda(get: &impl Fn(&str) -> Option<String>) -> bool {
    get("AWS_LAMBDA_FUNCTION_NAME").is_some() && get("AWS_ENDPOINT_URL").is_none()
}

/// A loopback or private address, or `localhost`: where a local simulator runs.
fn is_local_host(host: Option<url::Host<&str>>) -> bool {
    match host {
        Some(url::Host::Domain(name)) => name == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback() || ip.is_private(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// A required secret, with the variable's name in the error.
pub fn require<'a>(value: &'a Option<String>, name: &'static str) -> Result<&'a str, ConfigError> {
    value.as_deref().ok_or(ConfigError::Missing(name))
}

/// `PROVIDER_SECRET_ID` or `PROVIDER_PARAMETER_PATH` (not both), else the
/// environment variables; with the warning to log when the credentials are loaded.
fn credential_source(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<(CredentialSource, Option<String>), ConfigError> {
    let env_set: Vec<&str> = ENV_CREDENTIALS
        .into_iter()
        .filter(|name| get(name).is_some())
        .collect();
    let (source, store_var) = match (get(PROVIDER_SECRET_ID), get(PROVIDER_PARAMETER_PATH)) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::Conflict {
                first: PROVIDER_SECRET_ID,
                second: PROVIDER_PARAMETER_PATH,
            });
        }
        (Some(secret_id), None) => (
            CredentialSource::SecretsManager {
                secret_id: secret_id.trim().to_owned(),
            },
            PROVIDER_SECRET_ID,
        ),
        (None, Some(path)) => {
            let path = path.trim().to_owned();
            if !path.starts_with('/') {
                return Err(ConfigError::Invalid {
                    name: PROVIDER_PARAMETER_PATH,
                    reason: format!(
                        "expected an SSM parameter path starting with '/', got {path:?}"
                    ),
                });
            }
            (
                CredentialSource::ParameterStore { path },
                PROVIDER_PARAMETER_PATH,
            )
        }
        (None, None) => {
            let warning = on_lambda(get).then(|| {
                format!(
                    "provider credentials come from environment variables ({}), which is \
                     meant for local development only; store them in Secrets Manager \
                     ({PROVIDER_SECRET_ID}) or SSM Parameter Store ({PROVIDER_PARAMETER_PATH})",
                    ENV_CREDENTIALS.join(", ")
                )
            });
            let source = CredentialSource::Environment {
                twilio_account_sid: get("TWILIO_ACCOUNT_SID"),
                twilio_auth_token: get("TWILIO_AUTH_TOKEN"),
                sendgrid_api_key: get("SENDGRID_API_KEY"),
            };
            return Ok((source, warning));
        }
    };
    let warning = (!env_set.is_empty()).then(|| {
        format!(
            "{store_var} is set: ignoring {} from the environment",
            env_set.join(", ")
        )
    });
    Ok((source, warning))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn table_name_is_required() {
        assert_eq!(config(&[]).unwrap_err(), ConfigError::Missing("TABLE_NAME"));
        assert!(config(&[("TABLE_NAME", " ")]).is_err());
    }

    #[test]
    fn defaults_point_at_the_real_providers() {
        let c = config(&[("TABLE_NAME", "messages")]).unwrap();
        assert_eq!(c.twilio.api_url, DEFAULT_TWILIO_API_URL);
        assert_eq!(c.sendgrid.api_url, DEFAULT_SENDGRID_API_URL);
        assert_eq!(c.delivery.retry.max_receives, 5);
        assert_eq!(c.delivery.retry.base, Duration::from_secs(5));
        assert_eq!(c.delivery.retry.max_age, Duration::from_secs(36_000));
        assert_eq!(c.delivery.breaker_threshold, 5);
        assert_eq!(c.delivery.breaker_cooldown, Duration::from_secs(30));
        assert_eq!(
            c.require_queue_url().unwrap_err(),
            ConfigError::Missing("QUEUE_URL")
        );
    }

    #[test]
    fn values_are_parsed_and_checked() {
        let c = config(&[
            ("TABLE_NAME", "messages"),
            ("QUEUE_URL", "http://127.0.0.1:4566/000000000000/messages"),
            ("TWILIO_API_URL", "http://127.0.0.1:4010/"),
            ("RETRY_BASE_SECONDS", "0.5"),
            ("MAX_RECEIVE_COUNT", "3"),
            ("MAX_DELIVERY_AGE_SECONDS", "120"),
        ])
        .unwrap();
        assert_eq!(c.delivery.retry.max_age, Duration::from_secs(120));
        assert_eq!(c.twilio.api_url, "http://127.0.0.1:4010");
        for (url, ok) in [
            ("http://api.twilio.com", false),
            ("http://203.0.113.7:4010", false),
            ("https://api.twilio.com", true),
            ("http://localhost:4010", true),
            ("http://172.17.0.1:4010", true),
        ] {
            let result = config(&[("TABLE_NAME", "t"), ("TWILIO_API_URL", url)]);
            assert_eq!(result.is_ok(), ok, "{url}: {result:?}");
        }
        assert_eq!(c.delivery.retry.base, Duration::from_millis(500));
        assert_eq!(c.delivery.retry.max_receives, 3);
        assert!(c.require_queue_url().is_ok());

        let err = config(&[("TABLE_NAME", "t"), ("RETRY_BASE_SECONDS", "soon")]).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Invalid {
                name: "RETRY_BASE_SECONDS",
                ..
            }
        ));
        let err = config(&[("TABLE_NAME", "t"), ("SENDGRID_API_URL", "not a url")]).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Invalid {
                name: "SENDGRID_API_URL",
                ..
            }
        ));
        let err = config(&[("TABLE_NAME", "t"), ("MAX_RECEIVE_COUNT", "0")]).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Invalid {
                name: "MAX_RECEIVE_COUNT",
                ..
            }
        ));
    }

    #[test]
    fn secrets_are_not_debug_printed() {
        let c = config(&[
            ("TABLE_NAME", "t"),
            ("TWILIO_AUTH_TOKEN", "s3cret-token"),
            ("SENDGRID_API_KEY", "SG.s3cret"),
        ])
        .unwrap();
        let printed = format!("{c:?}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");
    }

    #[test]
    fn on_lambda_the_cursor_key_must_come_from_a_secret() {
        let key = |vars: &[(&'static str, &'static str)]| config(&with(vars)).map(|c| c.cursor_key);
        // Real Lambda without a key: the functions that page refuse to start.
        assert_eq!(
            key(&[("AWS_LAMBDA_FUNCTION_NAME", "read")]).unwrap(),
            CursorKeySource::Missing
        );
        // A local runtime pointed at an emulator, or no Lambda at all: the development key.
        assert_eq!(
            key(&[
                ("AWS_LAMBDA_FUNCTION_NAME", "read"),
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
            ])
            .unwrap(),
            CursorKeySource::Development
        );
        assert_eq!(key(&[]).unwrap(), CursorKeySource::Development);
        assert_eq!(
            key(&[
                ("AWS_LAMBDA_FUNCTION_NAME", "read"),
                (
                    "CURSOR_SECRET_ID",
                    "arn:aws:secretsmanager:us-east-1:1:secret:c-AbCdEf"
                )
            ])
            .unwrap(),
            CursorKeySource::SecretsManager {
                secret_id: "arn:aws:secretsmanager:us-east-1:1:secret:c-AbCdEf".into()
            }
        );
        assert_eq!(
            key(&[("CURSOR_SECRET", "k")]).unwrap(),
            CursorKeySource::Environment("k".into())
        );
        assert!(matches!(
            key(&[("CURSOR_SECRET", "k"), ("CURSOR_SECRET_ID", "c")]),
            Err(ConfigError::Conflict { .. })
        ));
        let printed = format!("{:?}", key(&[("CURSOR_SECRET", "s3cret")]).unwrap());
        assert!(!printed.contains("s3cret"), "{printed}");
    }

    #[test]
    fn only_a_local_runtime_checks_twilio_signatures_against_both_schemes() {
        let local = |vars: &[(&'static str, &'static str)]| {
            config(&with(vars)).unwrap().webhooks.local_runtime
        };
        assert!(!local(&[("AWS_LAMBDA_FUNCTION_NAME", "webhooks")]));
        assert!(local(&[
            ("AWS_LAMBDA_FUNCTION_NAME", "webhooks"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
        ]));
        assert!(local(&[]));
    }

    const ENV_CREDS: [(&str, &str); 3] = [
        ("TWILIO_ACCOUNT_SID", "ACenv"),
        ("TWILIO_AUTH_TOKEN", "s3cret-token"),
        ("SENDGRID_API_KEY", "SG.s3cret"),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut vars = vec![("TABLE_NAME", "t")];
        vars.extend_from_slice(extra);
        vars
    }

    #[test]
    fn a_secret_id_takes_precedence_over_environment_credentials() {
        let mut vars = with(&ENV_CREDS);
        vars.push((PROVIDER_SECRET_ID, " messaging/providers "));
        let c = config(&vars).unwrap();
        assert_eq!(
            c.credentials,
            CredentialSource::SecretsManager {
                secret_id: "messaging/providers".into()
            }
        );
        let warning = c
            .credential_warning
            .expect("ignored variables are reported");
        assert!(warning.contains("PROVIDER_SECRET_ID is set"), "{warning}");
        assert!(warning.contains("TWILIO_AUTH_TOKEN"), "{warning}");
        assert!(!warning.contains("s3cret"), "{warning}");
    }

    #[test]
    fn a_parameter_path_takes_precedence_over_environment_credentials() {
        let c = config(&with(&[(PROVIDER_PARAMETER_PATH, "/messaging/providers/")])).unwrap();
        assert_eq!(
            c.credentials,
            CredentialSource::ParameterStore {
                path: "/messaging/providers/".into()
            }
        );
        assert_eq!(c.credential_warning, None);

        let mut vars = with(&ENV_CREDS[2..]);
        vars.push((PROVIDER_PARAMETER_PATH, "/p"));
        let warning = config(&vars).unwrap().credential_warning.unwrap();
        assert_eq!(
            warning,
            "PROVIDER_PARAMETER_PATH is set: ignoring SENDGRID_API_KEY from the environment"
        );
    }

    #[test]
    fn a_secret_id_and_a_parameter_path_conflict() {
        let err = config(&with(&[
            (PROVIDER_SECRET_ID, "messaging/providers"),
            (PROVIDER_PARAMETER_PATH, "/messaging/providers"),
        ]))
        .unwrap_err();
        assert_eq!(
            err,
            ConfigError::Conflict {
                first: PROVIDER_SECRET_ID,
                second: PROVIDER_PARAMETER_PATH
            }
        );
        let text = err.to_string();
        assert!(
            text.contains("PROVIDER_SECRET_ID") && text.contains("PROVIDER_PARAMETER_PATH"),
            "{text}"
        );
        // Blank counts as unset, as for every other variable.
        assert!(
            config(&with(&[
                (PROVIDER_SECRET_ID, "messaging/providers"),
                (PROVIDER_PARAMETER_PATH, " "),
            ]))
            .is_ok()
        );
    }

    #[test]
    fn a_parameter_path_must_be_a_path() {
        let err = config(&with(&[(PROVIDER_PARAMETER_PATH, "messaging/providers")])).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    name: PROVIDER_PARAMETER_PATH,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn environment_credentials_are_the_local_fallback() {
        let c = config(&with(&ENV_CREDS)).unwrap();
        assert_eq!(
            c.credentials,
            CredentialSource::Environment {
                twilio_account_sid: Some("ACenv".into()),
                twilio_auth_token: Some("s3cret-token".into()),
                sendgrid_api_key: Some("SG.s3cret".into()),
            }
        );
        assert_eq!(c.credential_warning, None, "no warning off Lambda");

        // Under a local Lambda runtime pointed at the emulator: still no warning.
        let mut vars = with(&ENV_CREDS);
        vars.extend([
            ("AWS_LAMBDA_FUNCTION_NAME", "delivery"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"),
        ]);
        assert_eq!(config(&vars).unwrap().credential_warning, None);

        // On what looks like real Lambda: a warning naming the variables, not values.
        let mut vars = with(&ENV_CREDS);
        vars.push(("AWS_LAMBDA_FUNCTION_NAME", "messaging-DeliveryFunction-abc"));
        let warning = config(&vars).unwrap().credential_warning.unwrap();
        assert!(warning.contains("local development only"), "{warning}");
        assert!(warning.contains("PROVIDER_SECRET_ID"), "{warning}");
        assert!(
            !warning.contains("s3cret") && !warning.contains("ACenv"),
            "{warning}"
        );
    }

    #[test]
    fn no_credentials_is_not_an_error_for_functions_that_do_not_deliver() {
        let c = config(&with(&[])).unwrap();
        assert_eq!(
            c.credentials,
            CredentialSource::Environment {
                twilio_account_sid: None,
                twilio_auth_token: None,
                sendgrid_api_key: None,
            }
        );
    }

    #[test]
    fn credential_sources_are_debug_printed_without_values() {
        let source = CredentialSource::Environment {
            twilio_account_sid: Some("ACenv".into()),
            twilio_auth_token: Some("s3cret-token".into()),
            sendgrid_api_key: None,
        };
        let printed = format!("{source:?}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("sendgrid_api_key: None"), "{printed}");
        let printed = format!(
            "{:?}",
            CredentialSource::SecretsManager {
                secret_id: "messaging/providers".into()
            }
        );
        assert!(printed.contains("messaging/providers"), "{printed}");
    }
}
