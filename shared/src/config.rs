//! Configuration, read once from the environment at cold start.

use std::time::Duration;

use crate::domain::RetryPolicy;

pub const DEFAULT_TWILIO_API_URL: &str = "https://api.twilio.com";
pub const DEFAULT_SENDGRID_API_URL: &str = "https://api.sendgrid.com";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("environment variable {0} is required but not set")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
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
    pub delivery: DeliveryConfig,
}

#[derive(Clone)]
pub struct TwilioConfig {
    /// `TWILIO_API_URL`, default the public Twilio API.
    pub api_url: String,
    /// `TWILIO_ACCOUNT_SID`
    pub account_sid: Option<String>,
    /// `TWILIO_AUTH_TOKEN`
    pub auth_token: Option<String>,
}

#[derive(Clone)]
pub struct SendGridConfig {
    /// `SENDGRID_API_URL`, default the public SendGrid API.
    pub api_url: String,
    /// `SENDGRID_API_KEY`
    pub api_key: Option<String>,
    /// `EMAIL_SUBJECT`: subject line of outbound email (the API has no subject field).
    pub subject: String,
}

// Secrets stay out of logs: Debug shows only whether they are set.
impl std::fmt::Debug for TwilioConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioConfig")
            .field("api_url", &self.api_url)
            .field("account_sid", &self.account_sid)
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl std::fmt::Debug for SendGridConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendGridConfig")
            .field("api_url", &self.api_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("subject", &self.subject)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// `RETRY_BASE_SECONDS` (default 5), `RETRY_MAX_SECONDS` (default 300),
    /// `MAX_RECEIVE_COUNT` (default 5, the queue's redrive `maxReceiveCount`).
    pub retry: RetryPolicy,
    /// `PROVIDER_TIMEOUT_SECONDS` (default 10): whole-request timeout for provider calls.
    pub provider_timeout: Duration,
    /// `LEASE_SECONDS` (default 60): how long a delivery attempt owns a message.
    pub lease: Duration,
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

        Ok(Self {
            table_name: get("TABLE_NAME").ok_or(ConfigError::Missing("TABLE_NAME"))?,
            queue_url: get("QUEUE_URL"),
            twilio: TwilioConfig {
                api_url: url("TWILIO_API_URL", DEFAULT_TWILIO_API_URL)?,
                account_sid: get("TWILIO_ACCOUNT_SID"),
                auth_token: get("TWILIO_AUTH_TOKEN"),
            },
            sendgrid: SendGridConfig {
                api_url: url("SENDGRID_API_URL", DEFAULT_SENDGRID_API_URL)?,
                api_key: get("SENDGRID_API_KEY"),
                subject: get("EMAIL_SUBJECT").unwrap_or_else(|| "New message".to_owned()),
            },
            delivery: DeliveryConfig {
                retry: RetryPolicy {
                    base: seconds("RETRY_BASE_SECONDS", 5)?,
                    cap: seconds("RETRY_MAX_SECONDS", 300)?,
                    max_receives,
                },
                provider_timeout: seconds("PROVIDER_TIMEOUT_SECONDS", 10)?,
                lease: seconds("LEASE_SECONDS", 60)?,
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

/// A required secret, with the variable's name in the error.
pub fn require<'a>(value: &'a Option<String>, name: &'static str) -> Result<&'a str, ConfigError> {
    value.as_deref().ok_or(ConfigError::Missing(name))
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
        ])
        .unwrap();
        assert_eq!(c.twilio.api_url, "http://127.0.0.1:4010");
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
    }
}
