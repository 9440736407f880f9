//! The secrets, read once at start-up, each function reading only its own:
//! - the provider credentials (delivery) from Secrets Manager
//!   (`PROVIDER_SECRET_ID`), SSM Parameter Store (`PROVIDER_PARAMETER_PATH`) or,
//!   for local development only, the environment;
//! - the webhooks' verification credentials from Secrets Manager
//!   (`WEBHOOK_SECRET_ID`), or locally the environment;
//! - the cursor key from Secrets Manager (`CURSOR_SECRET_ID`), or locally the
//!   environment or the development key.
//!
//! Errors name the secret, path or variable and the missing key, never a value;
//! `ProviderCredentials` has a redacting `Debug` and no `Display`.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_sdk_ssm::config::http::HttpResponse;
use aws_sdk_ssm::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ssm::types::{Parameter, ParameterType};
use serde_json::Value;

use crate::config::{
    Config, ConfigError, CredentialSource, CursorKeySource, DEVELOPMENT_CURSOR_KEY, require,
};

/// The keys of the Secrets Manager secret's JSON SecretString.
pub const SECRET_KEYS: [&str; 3] = [
    "twilio_account_sid",
    "twilio_auth_token",
    "sendgrid_api_key",
];

/// The parameters under `PROVIDER_PARAMETER_PATH`, and whether each must be a
/// SecureString.
pub const PARAMETERS: [(&str, bool); 3] = [
    ("twilio-account-sid", false),
    ("twilio-auth-token", true),
    ("sendgrid-api-key", true),
];

/// The secret's optional Twilio API key: an `SK…` sid and its secret, which
/// Twilio recommends for sending over the account's auth token (it can be
/// revoked on its own). With both keys the auth token may be left out.
pub const SECRET_API_KEY: [&str; 2] = ["twilio_api_key_sid", "twilio_api_key_secret"];

/// The provider credentials, resolved.
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderCredentials {
    pub twilio_account_sid: String,
    pub twilio_login: TwilioLogin,
    pub sendgrid_api_key: String,
}

/// What the delivery function calls Twilio's API as (HTTP Basic).
#[derive(Clone, PartialEq, Eq)]
pub enum TwilioLogin {
    /// The account SID and its auth token.
    AuthToken(String),
    /// An API key: its `SK…` sid and secret (the account SID stays in the URL).
    ApiKey { sid: String, secret: String },
}

impl TwilioLogin {
    /// HTTP Basic (user, password) for the account `account_sid`.
    pub fn basic_auth<'a>(&'a self, account_sid: &'a str) -> (&'a str, &'a str) {
        match self {
            Self::AuthToken(token) => (account_sid, token),
            Self::ApiKey { sid, secret } => (sid, secret),
        }
    }
}

// Secrets stay out of logs: the API key's sid (an identifier) is shown, no secret.
impl std::fmt::Debug for TwilioLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AuthToken(_) => f.write_str("AuthToken(<redacted>)"),
            Self::ApiKey { sid, .. } => f
                .debug_struct("ApiKey")
                .field("sid", sid)
                .field("secret", &"<redacted>")
                .finish(),
        }
    }
}

// Secrets stay out of logs: the SIDs (identifiers) are shown, the rest not.
impl std::fmt::Debug for ProviderCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderCredentials")
            .field("twilio_account_sid", &self.twilio_account_sid)
            .field("twilio_login", &self.twilio_login)
            .field("sendgrid_api_key", &"<redacted>")
            .finish()
    }
}

/// The keys of the webhooks' secret: the token Twilio signs webhooks with
/// (required) and the Inbound Parse `user:password` (optional: without it,
/// Inbound Parse posts are refused).
pub const WEBHOOK_SECRET_KEYS: [&str; 2] = ["twilio_auth_token", "sendgrid_inbound_basic_auth"];

/// What the webhooks verify their callers with, resolved.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookCredentials {
    pub twilio_auth_token: String,
    pub sendgrid_inbound_basic_auth: Option<String>,
}

impl std::fmt::Debug for WebhookCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookCredentials")
            .field("twilio_auth_token", &"<redacted>")
            .field(
                "sendgrid_inbound_basic_auth",
                &self
                    .sendgrid_inbound_basic_auth
                    .as_ref()
                    .map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The reader of the webhooks' credentials (the secret `WEBHOOK_SECRET_ID`, else,
/// in local development, `TWILIO_AUTH_TOKEN` and `SENDGRID_INBOUND_BASIC_AUTH`) and
/// what it reads at start-up.
pub async fn load_webhook_credentials(
    config: &Config,
    aws: &SdkConfig,
) -> Result<(WebhookReader, WebhookCredentials), ConfigError> {
    let webhooks = &config.webhooks;
    let result = match WebhookReader::new(config, aws) {
        Ok(reader) => reader.read(false).await.map(|read| (reader, read)),
        Err(e) => Err(e),
    };
    match (&result, &webhooks.secret_id) {
        (Ok(_), Some(id)) => tracing::info!(secret = %id, "webhook credentials loaded"),
        (Ok(_), None) => tracing::info!("webhook credentials from environment variables"),
        (Err(error), _) => tracing::error!(%error, "webhook credentials could not be loaded"),
    }
    result
}

/// The webhooks' secret's JSON (see [`WEBHOOK_SECRET_KEYS`]).
pub fn parse_webhook_secret(location: &str, text: &str) -> Result<WebhookCredentials, ConfigError> {
    let map = json_object(location, text, &WEBHOOK_SECRET_KEYS)?;
    let [token, basic_auth] = WEBHOOK_SECRET_KEYS;
    let sendgrid_inbound_basic_auth = match map.get(basic_auth) {
        None | Some(Value::Null) => None,
        Some(_) => Some(string_field(location, &map, basic_auth)?),
    };
    if sendgrid_inbound_basic_auth
        .as_deref()
        .is_some_and(|v| !v.contains(':'))
    {
        return Err(ConfigError::InvalidCredential {
            location: location.to_owned(),
            reason: format!("key {basic_auth:?} is not of the form user:password"),
        });
    }
    Ok(WebhookCredentials {
        twilio_auth_token: string_field(location, &map, token)?,
        sendgrid_inbound_basic_auth,
    })
}

/// The key pagination cursors are signed with: the secret `CURSOR_SECRET_ID`'s
/// SecretString, `CURSOR_SECRET`, or off Lambda the development key. On Lambda
/// with neither, an error: the function must not start.
pub async fn load_cursor_key(config: &Config, aws: &SdkConfig) -> Result<Vec<u8>, ConfigError> {
    match &config.cursor_key {
        CursorKeySource::SecretsManager { secret_id } => {
            let client = aws_sdk_secretsmanager::Client::new(aws);
            let (location, text) = secret_string(&client, secret_id, &[]).await?;
            if text.trim().len() < 32 {
                return Err(ConfigError::InvalidCredential {
                    location,
                    reason: "the key is shorter than 32 characters".to_owned(),
                });
            }
            tracing::info!(secret = %secret_id, "cursor key loaded");
            Ok(text.trim().as_bytes().to_vec())
        }
        CursorKeySource::Environment(key) => Ok(key.as_bytes().to_vec()),
        CursorKeySource::Development => Ok(DEVELOPMENT_CURSOR_KEY.to_vec()),
        CursorKeySource::Missing => {
            tracing::error!("{}", ConfigError::NoCursorKey);
            Err(ConfigError::NoCursorKey)
        }
    }
}

/// How long a secret read through the cache is trusted before the next use
/// reads it again: a rotated secret reaches a running function within this time
/// even if nothing was refused.
pub const SECRET_CACHE_TTL: Duration = Duration::from_secs(300);

/// How often, at most, credentials a provider refused are read again (per
/// function instance): a refusal storm must not become a Secrets Manager storm.
pub const RELOAD_AFTER_REFUSAL_EVERY: Duration = Duration::from_secs(60);

/// A Secrets Manager secret read through AWS's caching client
/// (`aws_secretsmanager_caching`): from memory within [`SECRET_CACHE_TTL`],
/// from Secrets Manager after it or when a refresh is asked for.
#[derive(Clone)]
pub struct CachedSecret {
    cache: Arc<aws_secretsmanager_caching::SecretsManagerCachingClient>,
    client: aws_sdk_secretsmanager::Client,
    secret_id: String,
}

impl std::fmt::Debug for CachedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedSecret")
            .field("secret_id", &self.secret_id)
            .finish_non_exhaustive()
    }
}

impl CachedSecret {
    pub fn new(aws: &SdkConfig, secret_id: &str, ttl: Duration) -> Result<Self, ConfigError> {
        let location = || format!("Secrets Manager secret {secret_id:?}");
        let client = aws_sdk_secretsmanager::Client::new(aws);
        let cache = aws_secretsmanager_caching::SecretsManagerCachingClient::new(
            client.clone(),
            NonZeroUsize::MIN,
            ttl,
            // A refresh that fails keeps the value held: a Secrets Manager
            // outage must not take working credentials away.
            true,
        )
        .map_err(|e| ConfigError::CredentialsUnavailable {
            location: location(),
            reason: format!("the secret cache could not be set up: {e}"),
        })?;
        Ok(Self {
            cache: Arc::new(cache),
            client,
            secret_id: secret_id.to_owned(),
        })
    }

    /// The SecretString (with the secret's description for errors); `refresh`
    /// reads Secrets Manager now. `keys` are named if it holds no string.
    pub async fn text(
        &self,
        refresh: bool,
        keys: &[&str],
    ) -> Result<(String, String), ConfigError> {
        // The cache's error is dropped here (it is not Send, and terse): a
        // failure is read again directly for the precise one (not found, access
        // denied, …), which names what to fix.
        let cached = self
            .cache
            .get_secret_value(&self.secret_id, None, None, refresh)
            .await
            .ok()
            .and_then(|output| output.secret_string);
        match cached {
            Some(text) => Ok((format!("Secrets Manager secret {:?}", self.secret_id), text)),
            None => secret_string(&self.client, &self.secret_id, keys).await,
        }
    }
}

/// Allows one reload per interval: the first caller after it gets `true`.
#[derive(Debug)]
pub struct ReloadGate {
    every: Duration,
    last: Mutex<Option<Instant>>,
}

impl ReloadGate {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: Mutex::new(None),
        }
    }

    pub fn try_take(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|at| at.elapsed() < self.every) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }
}

/// Where the delivery function reads its provider credentials, at start-up and
/// again when a provider refuses them.
#[derive(Debug, Clone)]
pub enum CredentialReader {
    /// Through the cache: every send may read it (memory within the TTL).
    SecretsManager(CachedSecret),
    /// Read only at start-up and after a refusal.
    ParameterStore {
        client: aws_sdk_ssm::Client,
        path: String,
    },
    /// Fixed values (environment variables, local development; tests).
    Fixed(ProviderCredentials),
}

impl CredentialReader {
    /// The reader for `config`'s credential source.
    pub fn new(config: &Config, aws: &SdkConfig) -> Result<Self, ConfigError> {
        Ok(match &config.credentials {
            CredentialSource::SecretsManager { secret_id } => {
                Self::SecretsManager(CachedSecret::new(aws, secret_id, SECRET_CACHE_TTL)?)
            }
            CredentialSource::ParameterStore { path } => Self::ParameterStore {
                client: aws_sdk_ssm::Client::new(aws),
                path: path.clone(),
            },
            source @ CredentialSource::Environment { .. } => Self::Fixed(from_environment(source)?),
        })
    }

    /// The credentials; `refresh` reads their store now, past any cache.
    pub async fn read(&self, refresh: bool) -> Result<ProviderCredentials, ConfigError> {
        match self {
            Self::SecretsManager(secret) => {
                let (location, text) = secret.text(refresh, &SECRET_KEYS).await?;
                parse_secret(&location, &text)
            }
            Self::ParameterStore { client, path } => from_parameter_path(client, path).await,
            Self::Fixed(credentials) => Ok(credentials.clone()),
        }
    }

    /// Whether a read without refresh is served from memory, so that every
    /// provider call may make one (and so pick up a rotation within the TTL).
    pub fn is_cached(&self) -> bool {
        matches!(self, Self::SecretsManager(_))
    }
}

/// Where the webhooks read their credentials, at start-up and again before
/// they refuse a Twilio signature.
#[derive(Debug, Clone)]
pub enum WebhookReader {
    SecretsManager(CachedSecret),
    Fixed(WebhookCredentials),
}

impl WebhookReader {
    pub fn new(config: &Config, aws: &SdkConfig) -> Result<Self, ConfigError> {
        let webhooks = &config.webhooks;
        Ok(match &webhooks.secret_id {
            Some(secret_id) => {
                Self::SecretsManager(CachedSecret::new(aws, secret_id, SECRET_CACHE_TTL)?)
            }
            None => Self::Fixed(WebhookCredentials {
                twilio_auth_token: require(&webhooks.twilio_auth_token, "TWILIO_AUTH_TOKEN")?
                    .to_owned(),
                sendgrid_inbound_basic_auth: webhooks.sendgrid_inbound_basic_auth.clone(),
            }),
        })
    }

    pub async fn read(&self, refresh: bool) -> Result<WebhookCredentials, ConfigError> {
        match self {
            Self::SecretsManager(secret) => {
                let (location, text) = secret.text(refresh, &WEBHOOK_SECRET_KEYS).await?;
                parse_webhook_secret(&location, &text)
            }
            Self::Fixed(credentials) => Ok(credentials.clone()),
        }
    }
}

/// The reader of the provider credentials `config` names, and the credentials it
/// reads at start-up (its cache then serves the first sends: one read, not two).
/// Logs the configuration's credential warning, if any, and where the credentials
/// came from (never their values).
pub async fn load_provider_credentials(
    config: &Config,
    aws: &SdkConfig,
) -> Result<(CredentialReader, ProviderCredentials), ConfigError> {
    if let Some(warning) = &config.credential_warning {
        tracing::warn!("{warning}");
    }
    let result = match CredentialReader::new(config, aws) {
        Ok(reader) => reader.read(false).await.map(|read| (reader, read)),
        Err(e) => Err(e),
    };
    let source = describe(&config.credentials);
    match &result {
        Ok(_) => tracing::info!(%source, "provider credentials loaded"),
        // The start-up fails with this error; log its text (the caller may print only Debug).
        Err(error) => tracing::error!(%source, %error, "provider credentials could not be loaded"),
    }
    result
}

/// Where the credentials come from, for logs and errors.
fn describe(source: &CredentialSource) -> String {
    match source {
        CredentialSource::SecretsManager { secret_id } => {
            format!("Secrets Manager secret {secret_id:?}")
        }
        CredentialSource::ParameterStore { path } => format!("SSM parameter path {path:?}"),
        CredentialSource::Environment { .. } => "environment variables".to_owned(),
    }
}

/// A secret's SecretString, with the secret's description for errors.
/// `keys` (if any) are named when the secret holds no string.
async fn secret_string(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
    keys: &[&str],
) -> Result<(String, String), ConfigError> {
    use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError as E;
    let location = format!("Secrets Manager secret {secret_id:?}");
    let output = client
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|e| {
            let reason = match e.as_service_error() {
                Some(E::ResourceNotFoundException(_)) => {
                    "it does not exist (create it with `aws secretsmanager create-secret`, \
                     see the README's Deploying section)"
                        .to_owned()
                }
                Some(E::DecryptionFailure(_)) => format!(
                    "{} (the function needs kms:Decrypt on the secret's customer managed key)",
                    sdk_reason(&e)
                ),
                _ => with_permission_hint(&e, "secretsmanager:GetSecretValue on the secret"),
            };
            ConfigError::CredentialsUnavailable {
                location: location.clone(),
                reason,
            }
        })?;
    match output.secret_string() {
        Some(text) => Ok((location, text.to_owned())),
        None => Err(ConfigError::InvalidCredential {
            location,
            reason: if keys.is_empty() {
                "it has no SecretString (a binary secret?)".to_owned()
            } else {
                format!(
                    "it has no SecretString (a binary secret?); store a JSON object with the keys {}",
                    keys.join(", ")
                )
            },
        }),
    }
}

/// The secret's JSON. Error texts name keys and JSON types only: no part of the
/// secret is ever quoted (serde's own messages can quote values, so they are not used).
pub fn parse_secret(location: &str, text: &str) -> Result<ProviderCredentials, ConfigError> {
    let map = json_object(location, text, &SECRET_KEYS)?;
    let [sid, token, key] = SECRET_KEYS;
    let [key_sid, key_secret] = SECRET_API_KEY;
    let present = |k: &str| !matches!(map.get(k), None | Some(Value::Null));
    let twilio_login = if present(key_sid) || present(key_secret) {
        let api_key_sid = string_field(location, &map, key_sid)?;
        if !api_key_sid.starts_with("SK") {
            return Err(ConfigError::InvalidCredential {
                location: location.to_owned(),
                reason: format!("key {key_sid:?} is not an API key sid (SK…)"),
            });
        }
        TwilioLogin::ApiKey {
            sid: api_key_sid,
            secret: string_field(location, &map, key_secret)?,
        }
    } else {
        TwilioLogin::AuthToken(string_field(location, &map, token)?)
    };
    Ok(ProviderCredentials {
        twilio_account_sid: string_field(location, &map, sid)?,
        twilio_login,
        sendgrid_api_key: string_field(location, &map, key)?,
    })
}

/// A secret's SecretString as a JSON object; errors name the expected `keys`.
fn json_object(
    location: &str,
    text: &str,
    keys: &[&str],
) -> Result<serde_json::Map<String, Value>, ConfigError> {
    let invalid = |reason: String| ConfigError::InvalidCredential {
        location: location.to_owned(),
        reason,
    };
    let value: Value = serde_json::from_str(text).map_err(|e| {
        invalid(format!(
            "SecretString is not valid JSON (line {}, column {}); expected an object with the \
             keys {}",
            e.line(),
            e.column(),
            keys.join(", ")
        ))
    })?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(invalid(format!(
            "SecretString is a JSON {}, expected an object with the keys {}",
            json_kind(&other),
            keys.join(", ")
        ))),
    }
}

/// The non-empty string under `key` (trimmed).
fn string_field(
    location: &str,
    map: &serde_json::Map<String, Value>,
    key: &'static str,
) -> Result<String, ConfigError> {
    let invalid = |reason: String| ConfigError::InvalidCredential {
        location: location.to_owned(),
        reason,
    };
    match map.get(key) {
        None | Some(Value::Null) => Err(ConfigError::MissingCredential {
            location: location.to_owned(),
            key,
        }),
        Some(Value::String(s)) if s.trim().is_empty() => {
            Err(invalid(format!("key {key:?} is empty")))
        }
        Some(Value::String(s)) => Ok(s.trim().to_owned()),
        Some(other) => Err(invalid(format!(
            "key {key:?} is a JSON {}, expected a string",
            json_kind(other)
        ))),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The parameters directly under an SSM path (`/messaging/providers` or
/// `/messaging/providers/`), decrypted: one GetParametersByPath (paginated).
pub async fn from_parameter_path(
    client: &aws_sdk_ssm::Client,
    path: &str,
) -> Result<ProviderCredentials, ConfigError> {
    let location = format!("SSM parameter path {path:?}");
    let base = path.trim_end_matches('/');
    let mut found = Vec::new();
    let mut pages = client
        .get_parameters_by_path()
        .path(if base.is_empty() { "/" } else { base })
        .recursive(false)
        .with_decryption(true)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| ConfigError::CredentialsUnavailable {
            location: location.clone(),
            reason: with_permission_hint(
                &e,
                "ssm:GetParametersByPath on the path, and kms:Decrypt on a customer managed key",
            ),
        })?;
        found.extend(page.parameters.unwrap_or_default());
    }
    parameters_to_credentials(&location, base, found)
}

/// The three parameters among those found under `base` (the path without a
/// trailing slash).
pub fn parameters_to_credentials(
    location: &str,
    base: &str,
    parameters: Vec<Parameter>,
) -> Result<ProviderCredentials, ConfigError> {
    let by_name: HashMap<String, Parameter> = parameters
        .into_iter()
        .filter_map(|p| Some((p.name.clone()?, p)))
        .collect();
    let field = |(leaf, secure): (&'static str, bool)| -> Result<String, ConfigError> {
        let name = format!("{base}/{leaf}");
        let parameter = by_name
            .get(&name)
            .ok_or_else(|| ConfigError::MissingCredential {
                location: location.to_owned(),
                key: leaf,
            })?;
        let invalid = |reason: String| ConfigError::InvalidCredential {
            location: format!("SSM parameter {name:?}"),
            reason,
        };
        if secure && parameter.r#type() != Some(&ParameterType::SecureString) {
            return Err(invalid(format!(
                "it is a {}, expected a SecureString (it holds a secret)",
                parameter
                    .r#type()
                    .map_or("parameter of unknown type", |t| t.as_str())
            )));
        }
        match parameter.value() {
            Some(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
            _ => Err(invalid("it is empty".to_owned())),
        }
    };
    let [sid, token, key] = PARAMETERS;
    Ok(ProviderCredentials {
        twilio_account_sid: field(sid)?,
        twilio_login: TwilioLogin::AuthToken(field(token)?),
        sendgrid_api_key: field(key)?,
    })
}

/// `TWILIO_ACCOUNT_SID`, `TWILIO_AUTH_TOKEN`, `SENDGRID_API_KEY` (local development).
pub fn from_environment(source: &CredentialSource) -> Result<ProviderCredentials, ConfigError> {
    let CredentialSource::Environment {
        twilio_account_sid,
        twilio_auth_token,
        sendgrid_api_key,
    } = source
    else {
        unreachable!("from_environment is only called for CredentialSource::Environment");
    };
    if twilio_account_sid.is_none() && twilio_auth_token.is_none() && sendgrid_api_key.is_none() {
        return Err(ConfigError::NoCredentials);
    }
    Ok(ProviderCredentials {
        twilio_account_sid: require(twilio_account_sid, "TWILIO_ACCOUNT_SID")?.to_owned(),
        twilio_login: TwilioLogin::AuthToken(
            require(twilio_auth_token, "TWILIO_AUTH_TOKEN")?.to_owned(),
        ),
        sendgrid_api_key: require(sendgrid_api_key, "SENDGRID_API_KEY")?.to_owned(),
    })
}

/// An SDK error as "Code: message", or what is known without an answer (e.g. a
/// connection failure). `DisplayErrorContext` is not used on answers: it prints
/// the raw response, and an unreadable *successful* answer carries the secret.
fn sdk_reason<E>(error: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match error {
        SdkError::ServiceError(service) => match (error.code(), error.message()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.to_owned(),
            _ => {
                // An error answer without an error code (e.g. from a proxy or an
                // emulator): its body, which holds no secret on a failure.
                let raw = service.raw();
                let body = raw
                    .body()
                    .bytes()
                    .map(|b| {
                        String::from_utf8_lossy(b)
                            .chars()
                            .take(200)
                            .collect::<String>()
                    })
                    .unwrap_or_default();
                format!("HTTP {} {}", raw.status().as_u16(), body.trim())
            }
        },
        SdkError::ResponseError(response) => format!(
            "unreadable answer (HTTP {})",
            response.raw().status().as_u16()
        ),
        other => DisplayErrorContext(other).to_string(),
    }
}

/// `sdk_reason`, plus which permission is missing when access was denied.
fn with_permission_hint<E>(error: &SdkError<E, HttpResponse>, permission: &str) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let reason = sdk_reason(error);
    match error.code() {
        Some(code) if code.contains("AccessDenied") => {
            format!("{reason} (the function needs {permission})")
        }
        _ => reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCATION: &str = "Secrets Manager secret \"messaging/providers\"";

    fn secret(json: &str) -> Result<ProviderCredentials, ConfigError> {
        parse_secret(LOCATION, json)
    }

    #[test]
    fn a_secret_holds_the_three_keys() {
        let c = secret(
            r#"{"twilio_account_sid": "ACx", "twilio_auth_token": " tok3n\n",
                "sendgrid_api_key": "SG.k3y", "note": "extra keys are ignored"}"#,
        )
        .unwrap();
        assert_eq!(
            c,
            ProviderCredentials {
                twilio_account_sid: "ACx".into(),
                twilio_login: TwilioLogin::AuthToken("tok3n".into()),
                sendgrid_api_key: "SG.k3y".into(),
            }
        );
    }

    #[test]
    fn an_api_key_replaces_the_auth_token_for_sending() {
        let c = secret(
            r#"{"twilio_account_sid": "ACx", "twilio_api_key_sid": "SKk3y",
                "twilio_api_key_secret": "s3cret", "sendgrid_api_key": "SG.k3y"}"#,
        )
        .unwrap();
        assert_eq!(
            c.twilio_login,
            TwilioLogin::ApiKey {
                sid: "SKk3y".into(),
                secret: "s3cret".into()
            }
        );
        assert_eq!(c.twilio_login.basic_auth("ACx"), ("SKk3y", "s3cret"));
        let printed = format!("{c:?}");
        assert!(
            printed.contains("SKk3y") && !printed.contains("s3cret"),
            "{printed}"
        );
        // Half a key is an error naming the missing half, not a fall-back to the token.
        assert_eq!(
            secret(
                r#"{"twilio_account_sid": "ACx", "twilio_auth_token": "t",
                    "twilio_api_key_sid": "SKk3y", "sendgrid_api_key": "SG.k3y"}"#
            ),
            Err(ConfigError::MissingCredential {
                location: LOCATION.into(),
                key: "twilio_api_key_secret"
            })
        );
        let error = secret(
            r#"{"twilio_account_sid": "ACx", "twilio_api_key_sid": "ACnot-a-key",
                "twilio_api_key_secret": "s3cret", "sendgrid_api_key": "SG.k3y"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("SK") && !error.contains("s3cret"), "{error}");
    }

    #[test]
    fn the_webhooks_secret_holds_what_they_verify_with_and_nothing_that_sends() {
        let c = parse_webhook_secret(
            LOCATION,
            r#"{"twilio_auth_token": "tok3n", "sendgrid_inbound_basic_auth": "user:pa55"}"#,
        )
        .unwrap();
        assert_eq!(c.twilio_auth_token, "tok3n");
        assert_eq!(c.sendgrid_inbound_basic_auth.as_deref(), Some("user:pa55"));
        let printed = format!("{c:?}");
        assert!(
            !printed.contains("tok3n") && !printed.contains("pa55"),
            "{printed}"
        );
        // Without Inbound Parse credentials, Inbound Parse is refused (not an error).
        let c = parse_webhook_secret(LOCATION, r#"{"twilio_auth_token": "tok3n"}"#).unwrap();
        assert_eq!(c.sendgrid_inbound_basic_auth, None);
        assert_eq!(
            parse_webhook_secret(LOCATION, r#"{"sendgrid_inbound_basic_auth": "u:p"}"#),
            Err(ConfigError::MissingCredential {
                location: LOCATION.into(),
                key: "twilio_auth_token"
            })
        );
        let error = parse_webhook_secret(
            LOCATION,
            r#"{"twilio_auth_token": "t", "sendgrid_inbound_basic_auth": "no-colon-s3cret"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("user:password") && !error.contains("s3cret"),
            "{error}"
        );
    }

    #[test]
    fn a_missing_key_is_named_with_the_secret() {
        for (json, key) in [
            (
                r#"{"twilio_account_sid": "ACx", "sendgrid_api_key": "SG.s3cret"}"#,
                "twilio_auth_token",
            ),
            (
                r#"{"twilio_account_sid": "ACx", "twilio_auth_token": "s3cret", "sendgrid_api_key": null}"#,
                "sendgrid_api_key",
            ),
        ] {
            let err = secret(json).unwrap_err();
            assert_eq!(
                err,
                ConfigError::MissingCredential {
                    location: LOCATION.into(),
                    key
                }
            );
            let text = err.to_string();
            assert!(
                text.contains("messaging/providers") && text.contains(key),
                "{text}"
            );
            assert!(!text.contains("s3cret"), "{text}");
        }
    }

    #[test]
    fn malformed_secrets_are_reported_without_their_contents() {
        for (json, fragment) in [
            ("s3cret-not-json", "not valid JSON"),
            (r#"{"twilio_account_sid": "s3cret"#, "not valid JSON"),
            (r#""s3cret""#, "is a JSON string, expected an object"),
            (r#"["s3cret"]"#, "is a JSON array, expected an object"),
            (
                r#"{"twilio_account_sid": "ACx", "twilio_auth_token": 12345, "sendgrid_api_key": "SG.s3cret"}"#,
                r#"key "twilio_auth_token" is a JSON number, expected a string"#,
            ),
            (
                r#"{"twilio_account_sid": "ACx", "twilio_auth_token": ["s3cret"], "sendgrid_api_key": "x"}"#,
                r#"key "twilio_auth_token" is a JSON array"#,
            ),
            (
                r#"{"twilio_account_sid": " ", "twilio_auth_token": "s3cret", "sendgrid_api_key": "x"}"#,
                r#"key "twilio_account_sid" is empty"#,
            ),
        ] {
            let err = secret(json).unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(err, ConfigError::InvalidCredential { .. }),
                "{json}: {err:?}"
            );
            assert!(text.contains(fragment), "{json}: {text}");
            assert!(text.contains("messaging/providers"), "{text}");
            assert!(
                !text.contains("s3cret") && !text.contains("12345"),
                "{text}"
            );
        }
    }

    fn parameter(name: &str, kind: ParameterType, value: &str) -> Parameter {
        Parameter::builder()
            .name(name)
            .r#type(kind)
            .value(value)
            .build()
    }

    #[test]
    fn parameters_are_read_under_the_path() {
        let location = "SSM parameter path \"/messaging/providers/\"";
        let c = parameters_to_credentials(
            location,
            "/messaging/providers",
            vec![
                parameter(
                    "/messaging/providers/twilio-account-sid",
                    ParameterType::String,
                    "ACx",
                ),
                parameter(
                    "/messaging/providers/twilio-auth-token",
                    ParameterType::SecureString,
                    "tok3n",
                ),
                parameter(
                    "/messaging/providers/sendgrid-api-key",
                    ParameterType::SecureString,
                    "SG.k3y",
                ),
                parameter("/messaging/providers/unrelated", ParameterType::String, "x"),
            ],
        )
        .unwrap();
        assert_eq!(c.twilio_account_sid, "ACx");
        assert_eq!(c.twilio_login, TwilioLogin::AuthToken("tok3n".into()));
        assert_eq!(c.sendgrid_api_key, "SG.k3y");
    }

    #[test]
    fn a_missing_or_plain_text_secret_parameter_is_named() {
        let location = "SSM parameter path \"/p\"";
        let sid = parameter("/p/twilio-account-sid", ParameterType::String, "ACx");
        let err = parameters_to_credentials(location, "/p", vec![sid.clone()]).unwrap_err();
        assert_eq!(
            err,
            ConfigError::MissingCredential {
                location: location.into(),
                key: "twilio-auth-token"
            }
        );

        let plain = parameter("/p/twilio-auth-token", ParameterType::String, "s3cret");
        let key = parameter("/p/sendgrid-api-key", ParameterType::SecureString, "SG.k");
        let err = parameters_to_credentials(location, "/p", vec![sid.clone(), plain, key.clone()])
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("\"/p/twilio-auth-token\"") && text.contains("expected a SecureString"),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");

        let empty = parameter("/p/twilio-auth-token", ParameterType::SecureString, " ");
        let err = parameters_to_credentials(location, "/p", vec![sid, empty, key]).unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
    }

    fn environment(
        sid: Option<&str>,
        token: Option<&str>,
        key: Option<&str>,
    ) -> Result<ProviderCredentials, ConfigError> {
        from_environment(&CredentialSource::Environment {
            twilio_account_sid: sid.map(Into::into),
            twilio_auth_token: token.map(Into::into),
            sendgrid_api_key: key.map(Into::into),
        })
    }

    #[test]
    fn environment_credentials_must_be_complete() {
        assert_eq!(
            environment(None, None, None).unwrap_err(),
            ConfigError::NoCredentials
        );
        let text = ConfigError::NoCredentials.to_string();
        assert!(
            text.contains("PROVIDER_SECRET_ID") && text.contains("PROVIDER_PARAMETER_PATH"),
            "{text}"
        );
        assert_eq!(
            environment(Some("ACx"), None, Some("SG.k")).unwrap_err(),
            ConfigError::Missing("TWILIO_AUTH_TOKEN")
        );
        assert_eq!(
            environment(Some("ACx"), Some("t"), Some("SG.k")).unwrap(),
            ProviderCredentials {
                twilio_account_sid: "ACx".into(),
                twilio_login: TwilioLogin::AuthToken("t".into()),
                sendgrid_api_key: "SG.k".into(),
            }
        );
    }

    #[test]
    fn sdk_errors_never_quote_a_successful_answer() {
        use aws_sdk_ssm::operation::get_parameters_by_path::GetParametersByPathError;
        let answer = r#"{"Parameters": [{"Name": "/p/twilio-auth-token", "Value": "s3cret""#;
        let error = SdkError::<GetParametersByPathError, _>::response_error(
            "unexpected end of input",
            HttpResponse::new(200.try_into().unwrap(), answer.into()),
        );
        assert!(
            format!("{}", DisplayErrorContext(&error)).contains("s3cret"),
            "the SDK's own text quotes the answer"
        );
        let reason = sdk_reason(&error);
        assert_eq!(reason, "unreadable answer (HTTP 200)");

        let error = SdkError::<GetParametersByPathError, _>::service_error(
            GetParametersByPathError::unhandled("no code"),
            HttpResponse::new(
                400.try_into().unwrap(),
                r#"{"error": "Unsupported service: ssm"}"#.into(),
            ),
        );
        let reason = with_permission_hint(&error, "ssm:GetParametersByPath");
        assert!(
            reason.contains("HTTP 400") && reason.contains("Unsupported service: ssm"),
            "{reason}"
        );
    }

    #[test]
    fn credentials_are_debug_printed_without_secrets() {
        let c = ProviderCredentials {
            twilio_account_sid: "ACx".into(),
            twilio_login: TwilioLogin::AuthToken("s3cret-token".into()),
            sendgrid_api_key: "SG.s3cret".into(),
        };
        let printed = format!("{c:?} {c:#?}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("ACx"), "{printed}");
    }
}
