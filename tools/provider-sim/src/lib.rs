//! Local stand-in for the Twilio Messages API and SendGrid v3 `mail/send`, with
//! switchable latency, random faults, scripted per-recipient failures and a
//! request log that tests can inspect. Accepted sends are followed by signed
//! callbacks, as the real providers make them: Twilio status callbacks to the
//! `StatusCallback` URL, SendGrid Event Webhook posts to `--sendgrid-events-url`.

mod callbacks;
mod providers;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Display;
use std::io::Write;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub use callbacks::{
    CallbackRecord, DEV_SENDGRID_PUBLIC_KEY, DEV_SENDGRID_SIGNING_KEY, UNDELIVERED_ERROR_CODE,
    parse_signing_key, sign_sendgrid_events,
};
pub use providers::Record;

pub const USAGE: &str = "\
provider-sim: local Twilio Messages / SendGrid mail/send stand-in
Flags (env var; default):
  --addr ADDR               (SIM_ADDR; 127.0.0.1:4010, port 0 = any free port)
  --latency-ms N            (SIM_LATENCY_MS; 0)
  --latency-jitter-ms N     (SIM_LATENCY_JITTER_MS; 0)
  --fail-rate F             (SIM_FAIL_RATE; 0)      fraction answered 500
  --throttle-rate F         (SIM_THROTTLE_RATE; 0)  fraction answered 429, Retry-After: 1
  --hang-rate F             (SIM_HANG_RATE; 0)      fraction delayed by hang-ms, then 500
  --hang-ms N               (SIM_HANG_MS; 120000)
  --twilio-account-sid SID  (TWILIO_ACCOUNT_SID; ACtest)
  --twilio-auth-token TOK   (TWILIO_AUTH_TOKEN; test-token)  also signs status callbacks
  --sendgrid-api-key KEY    (SENDGRID_API_KEY; SG.test-key)
  --callback-delay-ms N     (SIM_CALLBACK_DELAY_MS; 100)  before each status callback/event
  --callback-attempts N     (SIM_CALLBACK_ATTEMPTS; 6)  tries per callback answered 404/429/5xx or not at all
  --undelivered-ratio F     (SIM_UNDELIVERED_RATIO; 0)    fraction ending undelivered/bounce
  --sendgrid-events-url URL (SIM_SENDGRID_EVENTS_URL; none: no SendGrid events)
  --sendgrid-signing-key K  (SIM_SENDGRID_SIGNING_KEY; the development key)
                            P-256 key: base64 PKCS#8 DER, PEM or hex scalar
";

/// Latency and fault injection settings; changeable at runtime via `PUT /_sim/config`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    pub latency_ms: u64,
    pub latency_jitter_ms: u64,
    pub fail_rate: f64,
    pub throttle_rate: f64,
    pub hang_rate: f64,
    pub hang_ms: u64,
    /// Wait before each status callback (Twilio) or event post (SendGrid).
    pub callback_delay_ms: u64,
    /// Fraction of accepted messages that end `undelivered` (Twilio) or `bounce`
    /// (SendGrid) instead of `delivered`.
    pub undelivered_ratio: f64,
    /// Tries per callback: one answered 404, 429 or 5xx, or not at all, is sent
    /// again (SendGrid retries events; here Twilio's callbacks too, so that one
    /// overtaking the sender's own write of the message id is not lost).
    pub callback_attempts: u32,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            latency_jitter_ms: 0,
            fail_rate: 0.0,
            throttle_rate: 0.0,
            hang_rate: 0.0,
            hang_ms: 120_000,
            callback_delay_ms: 100,
            undelivered_ratio: 0.0,
            callback_attempts: 6,
        }
    }
}

impl Faults {
    fn validate(&self) -> Result<(), String> {
        let rates = [
            ("fail_rate", self.fail_rate),
            ("throttle_rate", self.throttle_rate),
            ("hang_rate", self.hang_rate),
            ("undelivered_ratio", self.undelivered_ratio),
        ];
        match rates.iter().find(|(_, r)| !(0.0..=1.0).contains(r)) {
            Some((name, rate)) => Err(format!("{name} must be within 0..=1, got {rate}")),
            None => Ok(()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    pub faults: Faults,
    pub twilio_account_sid: String,
    /// Also the key of the `X-Twilio-Signature` of status callbacks, as on Twilio.
    pub twilio_auth_token: String,
    pub sendgrid_api_key: String,
    /// Where SendGrid events are posted; `None` sends none.
    pub sendgrid_events_url: Option<String>,
    /// Signs the SendGrid events; [`DEV_SENDGRID_SIGNING_KEY`] unless set.
    pub sendgrid_signing_key: p256::ecdsa::SigningKey,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 4010)),
            faults: Faults::default(),
            twilio_account_sid: "ACtest".into(),
            twilio_auth_token: "test-token".into(),
            sendgrid_api_key: "SG.test-key".into(),
            sendgrid_events_url: None,
            sendgrid_signing_key: callbacks::dev_signing_key(),
        }
    }
}

/// (flag, env var) pairs understood by [`Config::parse`].
const SETTINGS: [(&str, &str); 15] = [
    ("addr", "SIM_ADDR"),
    ("latency-ms", "SIM_LATENCY_MS"),
    ("latency-jitter-ms", "SIM_LATENCY_JITTER_MS"),
    ("fail-rate", "SIM_FAIL_RATE"),
    ("throttle-rate", "SIM_THROTTLE_RATE"),
    ("hang-rate", "SIM_HANG_RATE"),
    ("hang-ms", "SIM_HANG_MS"),
    ("twilio-account-sid", "TWILIO_ACCOUNT_SID"),
    ("twilio-auth-token", "TWILIO_AUTH_TOKEN"),
    ("sendgrid-api-key", "SENDGRID_API_KEY"),
    ("callback-delay-ms", "SIM_CALLBACK_DELAY_MS"),
    ("callback-attempts", "SIM_CALLBACK_ATTEMPTS"),
    ("undelivered-ratio", "SIM_UNDELIVERED_RATIO"),
    ("sendgrid-events-url", "SIM_SENDGRID_EVENTS_URL"),
    ("sendgrid-signing-key", "SIM_SENDGRID_SIGNING_KEY"),
];

impl Config {
    /// Reads the process arguments and environment.
    pub fn from_env_and_args() -> anyhow::Result<Self> {
        Self::parse(std::env::args().skip(1), |var| std::env::var(var).ok())
    }

    /// Flags (`--name value` or `--name=value`) win over env vars, which win over defaults.
    pub fn parse(
        args: impl IntoIterator<Item = String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Self> {
        let mut values: HashMap<&str, String> = SETTINGS
            .iter()
            .filter_map(|(flag, var)| Some((*flag, env(var)?)))
            .collect();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let Some(flag) = arg.strip_prefix("--") else {
                bail!("unexpected argument {arg:?}\n{USAGE}");
            };
            let (name, value) = match flag.split_once('=') {
                Some((name, value)) => (name, value.to_owned()),
                None => (
                    flag,
                    args.next()
                        .with_context(|| format!("--{flag} needs a value"))?,
                ),
            };
            let Some((known, _)) = SETTINGS.iter().find(|(f, _)| *f == name) else {
                bail!("unknown flag --{name}\n{USAGE}");
            };
            values.insert(known, value);
        }
        fn get<T: FromStr<Err: Display>>(
            values: &mut HashMap<&str, String>,
            flag: &str,
            default: T,
        ) -> anyhow::Result<T> {
            values.remove(flag).map_or(Ok(default), |v| {
                v.trim()
                    .parse()
                    .map_err(|e| anyhow!("invalid --{flag} {v:?}: {e}"))
            })
        }
        let (d, v) = (Self::default(), &mut values);
        let config = Self {
            addr: get(v, "addr", d.addr)?,
            faults: Faults {
                latency_ms: get(v, "latency-ms", d.faults.latency_ms)?,
                latency_jitter_ms: get(v, "latency-jitter-ms", d.faults.latency_jitter_ms)?,
                fail_rate: get(v, "fail-rate", d.faults.fail_rate)?,
                throttle_rate: get(v, "throttle-rate", d.faults.throttle_rate)?,
                hang_rate: get(v, "hang-rate", d.faults.hang_rate)?,
                hang_ms: get(v, "hang-ms", d.faults.hang_ms)?,
                callback_delay_ms: get(v, "callback-delay-ms", d.faults.callback_delay_ms)?,
                undelivered_ratio: get(v, "undelivered-ratio", d.faults.undelivered_ratio)?,
                callback_attempts: get(v, "callback-attempts", d.faults.callback_attempts)?,
            },
            twilio_account_sid: get(v, "twilio-account-sid", d.twilio_account_sid)?,
            twilio_auth_token: get(v, "twilio-auth-token", d.twilio_auth_token)?,
            sendgrid_api_key: get(v, "sendgrid-api-key", d.sendgrid_api_key)?,
            sendgrid_events_url: match v.remove("sendgrid-events-url") {
                Some(url) if url.trim().is_empty() => None,
                Some(url) => Some(
                    callbacks::callback_url(url.trim())
                        .with_context(|| format!("invalid --sendgrid-events-url {url:?}"))?,
                ),
                None => d.sendgrid_events_url,
            },
            sendgrid_signing_key: match v.remove("sendgrid-signing-key") {
                Some(key) => parse_signing_key(&key).context("invalid --sendgrid-signing-key")?,
                None => d.sendgrid_signing_key,
            },
        };
        config.faults.validate().map_err(|e| anyhow!(e))?;
        Ok(config)
    }
}

/// A non-success answer: from a scripted rule or a random fault.
#[derive(Clone)]
struct Failure {
    status: StatusCode,
    retry_after: Option<HeaderValue>,
    /// Answered as is; `None` means a provider-shaped error body.
    body: Option<Value>,
    /// Extra delay before answering (hangs).
    hang: Duration,
}

impl Failure {
    fn new(status: StatusCode) -> Self {
        Self {
            status,
            retry_after: None,
            body: None,
            hang: Duration::ZERO,
        }
    }
}

#[derive(Default)]
struct Log {
    next_seq: u64,
    records: Vec<Record>,
}

struct Inner {
    config: Config,
    faults: Mutex<Faults>,
    /// The credentials accepted now: the configured ones until rotated with
    /// `PUT /_sim/credentials`.
    secrets: Mutex<Secrets>,
    /// Pending scripted failures per recipient, one entry per request to fail.
    rules: Mutex<HashMap<String, VecDeque<Failure>>>,
    log: Mutex<Log>,
    in_flight: AtomicU64,
    /// Callbacks made, for `GET /_sim/callbacks`.
    callbacks: Mutex<callbacks::CallbackLog>,
    /// One client for every callback.
    http: reqwest::Client,
}

/// The provider credentials the simulator accepts; a rotation replaces them, as
/// rotating an auth token or an API key at the provider does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secrets {
    pub twilio_auth_token: String,
    pub sendgrid_api_key: String,
}

/// How long a callback receiver may take to answer.
const CALLBACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Shared simulator state (cheap to clone).
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// Locks a mutex, ignoring poisoning: every critical section leaves the data consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counts a provider request as in flight until dropped.
struct InFlight(AppState);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AppState {
    pub fn new(config: &Config) -> Self {
        Self(Arc::new(Inner {
            faults: Mutex::new(config.faults),
            secrets: Mutex::new(Secrets {
                twilio_auth_token: config.twilio_auth_token.clone(),
                sendgrid_api_key: config.sendgrid_api_key.clone(),
            }),
            config: config.clone(),
            rules: Mutex::default(),
            log: Mutex::default(),
            in_flight: AtomicU64::new(0),
            callbacks: Mutex::default(),
            http: reqwest::Client::builder()
                .timeout(CALLBACK_TIMEOUT)
                .build()
                .unwrap_or_default(),
        }))
    }

    fn config(&self) -> &Config {
        &self.0.config
    }

    /// The credentials accepted now (and the token callbacks are signed with).
    fn secrets(&self) -> Secrets {
        lock(&self.0.secrets).clone()
    }

    fn http(&self) -> &reqwest::Client {
        &self.0.http
    }

    fn faults(&self) -> Faults {
        *lock(&self.0.faults)
    }

    fn track(&self) -> InFlight {
        self.0.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Fixed latency plus uniform jitter.
    fn latency(&self) -> Duration {
        let faults = *lock(&self.0.faults);
        let jitter = rand::rng().random_range(0..=faults.latency_jitter_ms);
        Duration::from_millis(faults.latency_ms.saturating_add(jitter))
    }

    /// Scripted rules for `recipient` first, then the random fault rates.
    fn failure(&self, recipient: &str) -> Option<Failure> {
        if let Some(scripted) = lock(&self.0.rules)
            .get_mut(recipient)
            .and_then(VecDeque::pop_front)
        {
            return Some(scripted);
        }
        let faults = *lock(&self.0.faults);
        let roll: f64 = rand::rng().random();
        if roll < faults.hang_rate {
            let hang = Duration::from_millis(faults.hang_ms);
            Some(Failure {
                hang,
                ..Failure::new(StatusCode::INTERNAL_SERVER_ERROR)
            })
        } else if roll < faults.hang_rate + faults.throttle_rate {
            let retry_after = Some(HeaderValue::from_static("1"));
            Some(Failure {
                retry_after,
                ..Failure::new(StatusCode::TOO_MANY_REQUESTS)
            })
        } else if roll < faults.hang_rate + faults.throttle_rate + faults.fail_rate {
            Some(Failure::new(StatusCode::INTERNAL_SERVER_ERROR))
        } else {
            None
        }
    }

    fn record(&self, mut record: Record, status: StatusCode) {
        record.status = status.as_u16();
        tracing::info!(provider = record.provider, to = ?record.to, status = record.status, "answered");
        let mut log = lock(&self.0.log);
        log.next_seq += 1;
        record.seq = log.next_seq;
        log.records.push(record);
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/2010-04-01/Accounts/{account_sid}/Messages.json",
            post(providers::twilio_send),
        )
        .route("/v3/mail/send", post(providers::sendgrid_send))
        .route(
            "/_sim/health",
            get(|| async { Json(json!({"status": "ok"})) }),
        )
        .route("/_sim/config", get(get_config).put(put_config))
        .route("/_sim/credentials", axum::routing::put(put_credentials))
        .route("/_sim/rules", post(add_rule).delete(clear_rules))
        .route("/_sim/requests", get(list_requests).delete(clear_requests))
        .route("/_sim/stats", get(stats))
        .route(
            "/_sim/callbacks",
            get(list_callbacks).delete(clear_callbacks),
        )
        .with_state(state)
}

/// Binds, prints the `provider-sim listening on ...` line to stdout and serves forever.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("binding {}", config.addr))?;
    let addr = listener.local_addr()?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "provider-sim listening on http://{addr}")?;
        stdout.flush()?;
    }
    tracing::info!(%addr, faults = ?config.faults, "provider-sim ready");
    axum::serve(listener, router(AppState::new(&config))).await?;
    Ok(())
}

fn bad_request(message: impl Display) -> Response {
    let body = json!({"error": message.to_string()});
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

async fn get_config(State(state): State<AppState>) -> Json<Faults> {
    Json(*lock(&state.0.faults))
}

/// Merges any subset of the [`Faults`] fields into the current settings.
async fn put_config(
    State(state): State<AppState>,
    Json(patch): Json<Map<String, Value>>,
) -> Result<Json<Faults>, Response> {
    let mut faults = lock(&state.0.faults);
    let mut merged = serde_json::to_value(*faults).map_err(bad_request)?;
    if let Value::Object(fields) = &mut merged {
        fields.extend(patch);
    }
    let next: Faults = serde_json::from_value(merged).map_err(bad_request)?;
    next.validate().map_err(bad_request)?;
    *faults = next;
    tracing::info!(faults = ?next, "config changed");
    Ok(Json(next))
}

/// `PUT /_sim/credentials` `{"twilio_auth_token": …, "sendgrid_api_key": …}`:
/// from now on only these are accepted (either may be left out).
async fn put_credentials(
    State(state): State<AppState>,
    Json(patch): Json<Map<String, Value>>,
) -> Result<StatusCode, Response> {
    let mut secrets = lock(&state.0.secrets);
    let mut merged = serde_json::to_value(&*secrets).map_err(bad_request)?;
    if let Value::Object(fields) = &mut merged {
        fields.extend(patch);
    }
    *secrets = serde_json::from_value(merged).map_err(bad_request)?;
    tracing::info!("credentials rotated");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    to: String,
    status: u16,
    times: Option<u32>,
    retry_after: Option<String>,
    body: Option<Value>,
}

const MAX_RULE_TIMES: u32 = 10_000;

async fn add_rule(State(state): State<AppState>, Json(spec): Json<RuleSpec>) -> Response {
    let status = match StatusCode::from_u16(spec.status) {
        Ok(status) if (300..=599).contains(&spec.status) => status,
        _ => return bad_request("status must be a non-2xx HTTP status within 300..=599"),
    };
    let times = spec.times.unwrap_or(1);
    if !(1..=MAX_RULE_TIMES).contains(&times) {
        return bad_request(format!("times must be within 1..={MAX_RULE_TIMES}"));
    }
    let Ok(retry_after) = spec.retry_after.map(HeaderValue::try_from).transpose() else {
        return bad_request("retry_after is not a valid header value");
    };
    let failure = Failure {
        retry_after,
        body: spec.body,
        ..Failure::new(status)
    };
    let queued = {
        let mut rules = lock(&state.0.rules);
        let queue = rules.entry(spec.to.clone()).or_default();
        queue.extend(std::iter::repeat_n(failure, times as usize));
        queue.len()
    };
    let body = json!({"to": spec.to, "status": spec.status, "times": times, "queued": queued});
    (StatusCode::CREATED, Json(body)).into_response()
}

async fn clear_rules(State(state): State<AppState>) -> StatusCode {
    lock(&state.0.rules).clear();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct RequestFilter {
    to: Option<String>,
    provider: Option<String>,
}

async fn list_requests(
    State(state): State<AppState>,
    Query(filter): Query<RequestFilter>,
) -> Json<Vec<Record>> {
    // An unencoded `+` in `?to=+1555...` arrives as a space; accept that too.
    let to = filter.to.map(|to| to.replace(' ', "+"));
    let log = lock(&state.0.log);
    let matching = log.records.iter().filter(|r| {
        to.as_ref().is_none_or(|to| r.to.as_ref() == Some(to))
            && filter.provider.as_ref().is_none_or(|p| r.provider == p)
    });
    Json(matching.cloned().collect())
}

async fn clear_requests(State(state): State<AppState>) -> StatusCode {
    lock(&state.0.log).records.clear();
    StatusCode::NO_CONTENT
}

async fn list_callbacks(State(state): State<AppState>) -> Json<Vec<CallbackRecord>> {
    Json(lock(&state.0.callbacks).records.clone())
}

async fn clear_callbacks(State(state): State<AppState>) -> StatusCode {
    lock(&state.0.callbacks).records.clear();
    StatusCode::NO_CONTENT
}

async fn stats(State(state): State<AppState>) -> Json<Value> {
    let log = lock(&state.0.log);
    let mut by_status = BTreeMap::<String, u64>::new();
    for record in &log.records {
        *by_status.entry(record.status.to_string()).or_default() += 1;
    }
    let in_flight = state.0.in_flight.load(Ordering::Relaxed);
    Json(json!({"total": log.records.len(), "by_status": by_status, "in_flight": in_flight}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Config> {
        let env: HashMap<&str, &str> = env.iter().copied().collect();
        let args = args.iter().map(|a| a.to_string());
        Config::parse(args, |k| env.get(k).map(|v| v.to_string()))
    }

    #[test]
    fn config_defaults_env_and_flags() -> anyhow::Result<()> {
        let c = parse(&[], &[])?;
        assert_eq!(c.addr.to_string(), "127.0.0.1:4010");
        assert_eq!(
            (c.faults, c.twilio_account_sid.as_str()),
            (Faults::default(), "ACtest")
        );

        let env = [
            ("SIM_FAIL_RATE", "0.25"),
            ("SIM_ADDR", "0.0.0.0:9"),
            ("SENDGRID_API_KEY", "k"),
        ];
        let c = parse(&["--addr", "127.0.0.1:0", "--hang-ms=5"], &env)?;
        assert_eq!(c.addr.to_string(), "127.0.0.1:0");
        assert_eq!((c.faults.fail_rate, c.faults.hang_ms), (0.25, 5));
        assert_eq!(c.sendgrid_api_key, "k");
        Ok(())
    }

    #[test]
    fn callback_settings() -> anyhow::Result<()> {
        let c = parse(&[], &[])?;
        assert_eq!(
            (c.faults.callback_delay_ms, c.faults.undelivered_ratio),
            (100, 0.0)
        );
        assert_eq!(c.sendgrid_events_url, None);
        let dev = parse_signing_key(DEV_SENDGRID_SIGNING_KEY)?;
        assert_eq!(c.sendgrid_signing_key, dev);

        let env = [
            (
                "SIM_SENDGRID_EVENTS_URL",
                "http://127.0.0.1:9000/webhooks/sendgrid/events",
            ),
            ("SIM_UNDELIVERED_RATIO", "0.5"),
        ];
        let hex: String = dev.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
        let args = ["--callback-delay-ms=7", "--sendgrid-signing-key", &hex];
        let c = parse(&args, &env)?;
        assert_eq!(
            c.sendgrid_events_url.as_deref(),
            Some("http://127.0.0.1:9000/webhooks/sendgrid/events")
        );
        assert_eq!(
            (c.faults.callback_delay_ms, c.faults.undelivered_ratio),
            (7, 0.5)
        );
        assert_eq!(c.sendgrid_signing_key, dev);
        assert_eq!(
            parse(&["--sendgrid-events-url="], &env)?.sendgrid_events_url,
            None
        );
        Ok(())
    }

    #[test]
    fn config_rejects_bad_input() {
        for args in [
            &["--fail-rate", "1.5"][..],
            &["--latency-ms", "soon"],
            &["--nope=1"],
            &["--addr"],
            &["--undelivered-ratio", "-0.1"],
            &["--sendgrid-events-url", "not a url"],
            &["--sendgrid-events-url", "ftp://example.com/x"],
            &["--sendgrid-signing-key", "nope"],
        ] {
            assert!(parse(args, &[]).is_err(), "{args:?}");
        }
    }
}
