//! Support for the integration and end-to-end suites in `tests/`: the running
//! local stack's coordinates (from the environment `cargo xtask test` sets), and
//! clients for the API, the provider simulator, DynamoDB and SQS.

use std::time::Duration;

use serde_json::Value;
use shared::adapters::dynamodb::DynamoDbStore;
use shared::adapters::providers::Providers;
use shared::adapters::secrets::{ProviderCredentials, load_provider_credentials};
use shared::adapters::sqs::SqsQueue;
use shared::adapters::{sendgrid_webhook, twilio_webhook};
use shared::config::Config;
use shared::delivery::Deliverer;
use shared::domain::{Channel, Direction, Message, NewMessage, ProviderKind};
use shared::startup::Startup;
use time::OffsetDateTime;

/// A variable `cargo xtask test` sets; these suites need the local stack.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: these tests run against the local stack; use `cargo xtask test`")
    })
}

pub async fn aws() -> aws_config::SdkConfig {
    shared::adapters::aws_config().await
}

pub async fn store() -> DynamoDbStore {
    DynamoDbStore::new(
        aws_sdk_dynamodb::Client::new(&aws().await),
        env("TABLE_NAME"),
    )
}

pub async fn queue() -> SqsQueue {
    SqsQueue::new(aws_sdk_sqs::Client::new(&aws().await), env("QUEUE_URL"))
}

/// A new API key with `scopes`, stored as `cargo xtask keys create` stores it.
pub async fn new_key(scopes: &[shared::domain::Scope]) -> String {
    use shared::ports::ApiKeyAdmin as _;
    let key = shared::domain::access::generate_key();
    let record =
        shared::domain::access::ApiKey::new(&key, "test key", scopes, OffsetDateTime::now_utc());
    assert!(
        store()
            .await
            .create_api_key(&shared::domain::access::key_hash(&key), &record)
            .await
            .unwrap(),
        "a fresh key is new"
    );
    key
}

/// Inbound keyword handling with the default policy, replies on the stack's queue.
pub async fn keyword_replies() -> shared::compliance::KeywordReplies<SqsQueue> {
    shared::compliance::KeywordReplies {
        queue: queue().await,
        policy: shared::domain::OptOutPolicy::default(),
    }
}

/// The delivery logic exactly as the delivery function builds it from the
/// stack's environment.
pub async fn deliverer() -> Deliverer<DynamoDbStore, SqsQueue, Providers> {
    let startup = Startup::load()
        .await
        .expect("configuration from the stack's environment");
    startup.deliverer().await.expect("delivery set-up")
}

/// Creates a secret named `<prefix>-<unique>` in the emulator holding `value`;
/// returns its name and ARN.
pub async fn create_secret(prefix: &str, value: &str) -> (String, String) {
    let name = format!("{prefix}-{}", uuid::Uuid::new_v4().simple());
    let created = aws_sdk_secretsmanager::Client::new(&aws().await)
        .create_secret()
        .name(&name)
        .secret_string(value)
        .send()
        .await
        .expect("create secret");
    let arn = created.arn().expect("secret ARN").to_owned();
    (name, arn)
}

/// The provider credentials the delivery function loads.
pub async fn provider_credentials() -> ProviderCredentials {
    let config = Config::from_env().expect("configuration from the stack's environment");
    load_provider_credentials(&config, &aws().await)
        .await
        .expect("provider credentials")
        .1
}

/// A queue of the test's own. The stack's queue has a consumer (the bridge, as the
/// event source mapping on AWS) that would take the test's messages; SQS hands a
/// new message to a waiting long poll at once.
pub async fn private_queue() -> (aws_sdk_sqs::Client, String) {
    let client = aws_sdk_sqs::Client::new(&aws().await);
    let url = client
        .create_queue()
        .queue_name(format!("it-{}", uuid::Uuid::new_v4().simple()))
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue URL");
    (client, url)
}

/// A random North American number in E.164, so concurrent tests never share a recipient.
pub fn phone() -> String {
    format!("+1555{:07}", rand_u32() % 10_000_000)
}

pub fn email() -> String {
    format!("contact-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// A marker to find what a test stored (or make sure it stored nothing).
pub fn marker() -> String {
    format!("marker-{}", uuid::Uuid::new_v4().simple())
}

fn rand_u32() -> u32 {
    let bytes = *uuid::Uuid::new_v4().as_bytes();
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// Message items whose body contains `marker` (a test-only scan).
pub async fn stored_with_marker(marker: &str) -> usize {
    let client = aws_sdk_dynamodb::Client::new(&aws().await);
    let mut count = 0;
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(env("TABLE_NAME"))
            .filter_expression("contains(body, :m)")
            .expression_attribute_values(
                ":m",
                aws_sdk_dynamodb::types::AttributeValue::S(marker.to_owned()),
            )
            .set_exclusive_start_key(start)
            .consistent_read(true)
            .send()
            .await
            .expect("scan");
        count += page.items.unwrap_or_default().len();
        start = page.last_evaluated_key;
        if start.is_none() {
            return count;
        }
    }
}

pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub json: Value,
}

/// An answer whose body is not (necessarily) JSON, e.g. TwiML.
pub struct RawAnswer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl RawAnswer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|_| panic!("answered {} with non-JSON: {}", self.status, self.text))
    }
}

/// Claims a `queued` message as a delivery does; returns the lease it holds.
pub async fn claim_for_delivery(id: &str) -> shared::ports::Lease {
    use shared::ports::{Claim, DeliveryStore, Lease};
    let now = OffsetDateTime::now_utc();
    let lease = Lease {
        id: uuid::Uuid::new_v4().to_string(),
        expires_at: now + time::Duration::minutes(1),
    };
    let Claim::Claimed(_) = store().await.claim(id, &lease, now).await.expect("claim") else {
        panic!("could not claim {id}");
    };
    lease
}

/// Moves a `queued` message to `sent` as a delivery does (claim, then complete
/// with the provider's id, which is indexed for status callbacks).
pub async fn mark_sent(id: &str, provider: ProviderKind, provider_message_id: &str) {
    use shared::ports::{Completion, DeliveryStore};
    let lease = claim_for_delivery(id).await;
    store()
        .await
        .complete(
            id,
            &lease.id,
            &Completion::Sent {
                provider,
                provider_message_id: Some(provider_message_id.to_owned()),
            },
            OffsetDateTime::now_utc(),
        )
        .await
        .expect("complete");
}

/// The Twilio auth token the stack's webhooks check signatures with (the one
/// they load from their secret).
pub async fn twilio_auth_token() -> String {
    let config = Config::from_env().expect("configuration from the stack's environment");
    shared::adapters::secrets::load_webhook_credentials(&config, &aws().await)
        .await
        .expect("webhook credentials")
        .1
        .twilio_auth_token
}

/// An outbound message stored `queued` through the store itself (no queue message,
/// so no delivery picks it up).
pub async fn queued_message(channel: Channel, from: &str, to: &str) -> Message {
    use shared::ports::MessageStore;
    let message = Message::accept(
        NewMessage {
            channel,
            from: from.to_owned(),
            to: to.to_owned(),
            body: "sent by the test".to_owned(),
            attachments: None,
            timestamp: None,
            messaging_provider_id: None,
        },
        Direction::Outbound,
        OffsetDateTime::now_utc(),
    );
    store()
        .await
        .insert_outbound(&message, None)
        .await
        .expect("insert");
    message
}

/// A message stored as the delivery function leaves it once the provider
/// accepted it under `provider_message_id`: `sent`, with the provider's id
/// indexed for status callbacks. Written through the store itself, so that no
/// simulator callback races the test's own.
pub async fn sent_message(
    channel: Channel,
    from: &str,
    to: &str,
    provider_message_id: &str,
) -> Message {
    let message = queued_message(channel, from, to).await;
    mark_sent(&message.id, channel.provider(), provider_message_id).await;
    message
}

impl Api {
    /// The API with the stack's key (`MESSAGING_API_KEY`, every scope) on every request.
    pub fn new() -> Self {
        Self::with_key(Some(&env("MESSAGING_API_KEY")))
    }

    /// The API with another key, or none.
    pub fn with_key(key: Option<&str>) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = key {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {key}").parse().expect("a header value"),
            );
        }
        Self {
            base: env("MESSAGING_API_URL"),
            http: reqwest::Client::builder()
                .default_headers(headers)
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
        }
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Answer {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    /// `POST /messages/outbound` with an `Idempotency-Key` header.
    pub async fn post_outbound_with_key(&self, key: &str, body: &Value) -> Answer {
        self.send(
            self.http
                .post(format!("{}/messages/outbound", self.base))
                .header("Idempotency-Key", key)
                .json(body),
        )
        .await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub async fn send_raw(&self, request: reqwest::RequestBuilder) -> RawAnswer {
        let response = request.send().await.expect("API request");
        RawAnswer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            text: response.text().await.expect("API body"),
        }
    }

    /// Posts a Twilio webhook form to `path`, signed with `token` (unsigned with
    /// `None`) for the URL it is posted to, as Twilio signs it.
    pub async fn post_twilio(
        &self,
        path: &str,
        params: &[(&str, &str)],
        token: Option<&str>,
    ) -> RawAnswer {
        let url = self.url(path);
        let owned: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut request = self.http.post(&url).form(&owned);
        if let Some(token) = token {
            request = request.header(
                twilio_webhook::SIGNATURE_HEADER,
                twilio_webhook::signature(token, &url, &owned),
            );
        }
        self.send_raw(request).await
    }

    /// Posts SendGrid Event Webhook events signed with the development key the
    /// stack's simulator signs with, as of `timestamp` (unix seconds).
    pub async fn post_sendgrid_events(&self, events: &Value, timestamp: i64) -> RawAnswer {
        let body = serde_json::to_vec(events).expect("events JSON");
        let key = provider_sim::parse_signing_key(provider_sim::DEV_SENDGRID_SIGNING_KEY)
            .expect("development key");
        let timestamp = timestamp.to_string();
        let signature = provider_sim::sign_sendgrid_events(&key, &timestamp, &body);
        self.send_raw(
            self.http
                .post(self.url("/webhooks/sendgrid/events"))
                .header("content-type", "application/json")
                .header(sendgrid_webhook::SIGNATURE_HEADER, signature)
                .header(sendgrid_webhook::TIMESTAMP_HEADER, timestamp)
                .body(body),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("API request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("API body");
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("API answered {status} with non-JSON: {text}"));
        Answer {
            status,
            headers,
            json,
        }
    }

    /// Polls `GET /messages/{id}` until `done` holds (or panics after `timeout`).
    pub async fn wait_for(
        &self,
        id: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let answer = self.get(&format!("/messages/{id}")).await;
            assert_eq!(answer.status, 200, "GET /messages/{id}: {}", answer.json);
            if done(&answer.json) {
                return answer.json;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "message {id} did not settle within {timeout:?}: {}",
                    answer.json
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Default for Api {
    fn default() -> Self {
        Self::new()
    }
}

/// The provider simulator's control API.
pub struct Simulator {
    base: String,
    http: reqwest::Client,
}

impl Simulator {
    pub fn new() -> Self {
        Self {
            base: env("PROVIDER_SIM_URL"),
            http: reqwest::Client::new(),
        }
    }

    /// Requests the simulator received for `to`, in arrival order.
    pub async fn requests_to(&self, to: &str) -> Vec<Value> {
        let response = self
            .http
            .get(format!("{}/_sim/requests", self.base))
            .query(&[("to", to)])
            .send()
            .await
            .expect("simulator");
        let mut list: Vec<Value> = response.json().await.expect("simulator JSON");
        list.sort_by_key(|r| r["seq"].as_u64());
        list
    }

    /// Every request the simulator received, in arrival order.
    pub async fn requests(&self) -> Vec<Value> {
        let response = self
            .http
            .get(format!("{}/_sim/requests", self.base))
            .send()
            .await
            .expect("simulator");
        let mut list: Vec<Value> = response.json().await.expect("simulator JSON");
        list.sort_by_key(|r| r["seq"].as_u64());
        list
    }

    /// Counters, among them `in_flight`: requests not answered yet.
    pub async fn stats(&self) -> Value {
        let response = self
            .http
            .get(format!("{}/_sim/stats", self.base))
            .send()
            .await
            .expect("simulator");
        response.json().await.expect("simulator JSON")
    }

    /// Changes latency and random fault settings (any subset of them).
    pub async fn configure(&self, faults: Value) {
        let response = self
            .http
            .put(format!("{}/_sim/config", self.base))
            .json(&faults)
            .send()
            .await
            .expect("simulator");
        assert!(
            response.status().is_success(),
            "simulator config refused: {}",
            response.text().await.unwrap_or_default()
        );
    }

    /// The next `times` requests to `to` are answered with `status`.
    pub async fn fail_next(&self, to: &str, status: u16, times: u32, retry_after: Option<&str>) {
        let mut rule = serde_json::json!({"to": to, "status": status, "times": times});
        if let Some(ra) = retry_after {
            rule["retry_after"] = ra.into();
        }
        self.add_rule(rule).await;
    }

    /// A scripted failure (`{"to", "status", "times"?, "retry_after"?, "body"?}`).
    pub async fn add_rule(&self, rule: Value) {
        let response = self
            .http
            .post(format!("{}/_sim/rules", self.base))
            .json(&rule)
            .send()
            .await
            .expect("simulator");
        assert_eq!(response.status(), 201, "simulator rule refused");
    }
}

impl Default for Simulator {
    fn default() -> Self {
        Self::new()
    }
}

/// A Twilio webhook post for a function's router, signed with `token` for
/// `base` + `path` (`base` as the router rebuilds it from `Host` and
/// `X-Forwarded-Proto`, or the configured `PUBLIC_BASE_URL`).
pub fn signed_twilio_request(
    token: &str,
    base: &str,
    path: &str,
    params: &[(String, String)],
) -> lambda_http::Request {
    let url = format!("{base}{path}");
    let signature = twilio_webhook::signature(token, &url, params);
    let host = url.split('/').nth(2).expect("a host").to_owned();
    let form = reqwest::Url::parse_with_params("http://form/", params)
        .expect("form")
        .query()
        .unwrap_or_default()
        .to_owned();
    lambda_http::http::Request::builder()
        .method("POST")
        .uri(path)
        .header("host", host)
        .header("x-forwarded-proto", "https")
        .header("content-type", "application/x-www-form-urlencoded")
        .header(twilio_webhook::SIGNATURE_HEADER, signature)
        .body(lambda_http::Body::from(form))
        .expect("request")
}
