//! Rotated credentials are not a reason to fail messages: the delivery function
//! and the webhooks read their secrets again (in the emulator's Secrets Manager)
//! when a provider, or a Twilio signature, refuses what they hold.
//!
//! Each test runs its own provider simulator and secrets, so rotating them does
//! not touch the rest of the suite.

use std::collections::HashMap;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use e2e_tests::{aws, email, keyword_replies, phone, private_queue, queued_message, store};
use serde_json::{Value, json};
use shared::adapters::providers::{Providers, http_client};
use shared::adapters::secrets::{CachedSecret, CredentialReader, SECRET_CACHE_TTL, WebhookReader};
use shared::adapters::sqs::SqsQueue;
use shared::config::Config;
use shared::delivery::Deliverer;
use shared::domain::{Channel, Message, Status};
use shared::http;
use shared::ports::MessageStore;
use shared::webhooks::Webhooks;
use tower::ServiceExt;

const OUR_NUMBER: &str = "+18045551234";
const ACCOUNT: &str = "ACrotation";

/// A provider simulator of the test's own, accepting `token` and `key`.
async fn simulator(token: &str, key: &str) -> String {
    let config = provider_sim::Config {
        twilio_account_sid: ACCOUNT.to_owned(),
        twilio_auth_token: token.to_owned(),
        sendgrid_api_key: key.to_owned(),
        ..provider_sim::Config::default()
    };
    let router = provider_sim::router(provider_sim::AppState::new(&config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

/// The provider rotates: from now on it accepts only these.
async fn rotate_at_provider(simulator: &str, token: &str, key: &str) {
    let answer = reqwest::Client::new()
        .put(format!("{simulator}/_sim/credentials"))
        .json(&json!({"twilio_auth_token": token, "sendgrid_api_key": key}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 204);
}

fn provider_secret(token: &str, key: &str) -> String {
    json!({"twilio_account_sid": ACCOUNT, "twilio_auth_token": token, "sendgrid_api_key": key})
        .to_string()
}

/// A new secret holding `value`; returns its name.
async fn create_secret(value: &str) -> String {
    e2e_tests::create_secret("messaging-test/rotation", value)
        .await
        .0
}

/// The operator rotates: the secret gets the new value.
async fn put_secret(name: &str, value: &str) {
    aws_sdk_secretsmanager::Client::new(&aws().await)
        .put_secret_value()
        .secret_id(name)
        .secret_string(value)
        .send()
        .await
        .expect("put secret value");
}

/// The stack's configuration with `overrides` (and no status callbacks: the
/// test's simulator must not call the stack's webhooks).
fn config(overrides: &[(&str, &str)]) -> Config {
    let mut vars: HashMap<String, String> = std::env::vars().collect();
    vars.remove("TWILIO_STATUS_CALLBACK_URL");
    vars.remove("PUBLIC_BASE_URL");
    for (name, value) in overrides {
        vars.insert((*name).to_owned(), (*value).to_owned());
    }
    Config::from_lookup(|name| vars.get(name).cloned()).expect("configuration")
}

/// Delivers `messages` as one SQS batch.
async fn deliver(
    deliverer: &Deliverer<shared::adapters::dynamodb::DynamoDbStore, SqsQueue, Providers>,
    messages: &[&Message],
) {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            json!({"messageId": format!("rot-{}", m.id), "receiptHandle": "rh",
                   "body": json!({"id": m.id}).to_string(),
                   "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
                   "eventSource": "aws:sqs", "awsRegion": "us-east-1"})
        })
        .collect();
    let event: SqsEvent = serde_json::from_value(json!({"Records": records})).unwrap();
    shared::sqs_trigger::handle_event(
        deliverer,
        lambda_runtime::LambdaEvent::new(event, lambda_runtime::Context::default()),
    )
    .await;
}

async fn stored(id: &str) -> Message {
    store().await.get(id).await.unwrap().expect("stored")
}

#[tokio::test]
async fn delivery_takes_up_rotated_provider_credentials_and_fails_nothing() {
    let simulator = simulator("token-A", "SG.A").await;
    let secret = create_secret(&provider_secret("token-A", "SG.A")).await;
    let (sqs, queue_url) = private_queue().await;
    let config = config(&[
        ("PROVIDER_SECRET_ID", &secret),
        ("TWILIO_API_URL", &simulator),
        ("SENDGRID_API_URL", &simulator),
        ("QUEUE_URL", &queue_url),
    ]);
    let aws = aws().await;
    let reader = CredentialReader::new(&config, &aws).unwrap();
    let credentials = reader.read(false).await.unwrap();
    let providers = Providers::reading(
        &config,
        reader,
        credentials,
        http_client(Duration::from_secs(5)).unwrap(),
    )
    .with_reload_after_refusal_every(Duration::ZERO);
    let deliverer = Deliverer::new(
        store().await,
        SqsQueue::new(sqs, &queue_url),
        providers,
        config.delivery.retry,
        config.delivery.lease,
    );

    let before = queued_message(Channel::Sms, OUR_NUMBER, &phone()).await;
    deliver(&deliverer, &[&before]).await;
    assert_eq!(stored(&before.id).await.status, Status::Sent);

    // Rotated at the providers and in the secret: the held credentials are
    // refused once, read again, and the same call goes through.
    rotate_at_provider(&simulator, "token-B", "SG.B").await;
    put_secret(&secret, &provider_secret("token-B", "SG.B")).await;
    let sms = queued_message(Channel::Sms, OUR_NUMBER, &phone()).await;
    let mail = queued_message(Channel::Email, "ops@usehatchapp.com", &email()).await;
    deliver(&deliverer, &[&sms, &mail]).await;
    for m in [&sms, &mail] {
        let m = stored(&m.id).await;
        assert_eq!(m.status, Status::Sent, "{m:?}");
        assert_eq!(
            m.attempts, 1,
            "one attempt: the refusal was retried within it"
        );
    }

    // Rotated at the provider only: refused, read again, the same: the message
    // waits for another attempt (not failed), with the provider's answer.
    rotate_at_provider(&simulator, "token-C", "SG.C").await;
    let waiting = queued_message(Channel::Sms, OUR_NUMBER, &phone()).await;
    deliver(&deliverer, &[&waiting]).await;
    let waiting = stored(&waiting.id).await;
    assert_eq!(waiting.status, Status::Queued, "{waiting:?}");
    let error = waiting.last_error.clone().unwrap_or_default();
    assert!(error.contains("401"), "{error}");
    assert!(!error.contains("token-"), "{error}");

    // The secret catches up: the next attempt goes through.
    put_secret(&secret, &provider_secret("token-C", "SG.C")).await;
    deliver(&deliverer, &[&waiting]).await;
    assert_eq!(stored(&waiting.id).await.status, Status::Sent);
}

#[tokio::test]
async fn the_webhooks_take_up_a_rotated_twilio_auth_token() {
    let webhook_secret = |token: &str| json!({"twilio_auth_token": token}).to_string();
    let secret = create_secret(&webhook_secret("token-A")).await;
    let config = config(&[("WEBHOOK_SECRET_ID", &secret)]);
    let aws = aws().await;
    let reader =
        WebhookReader::SecretsManager(CachedSecret::new(&aws, &secret, SECRET_CACHE_TTL).unwrap());
    let credentials = reader.read(false).await.unwrap();
    let webhooks = Webhooks::new(
        store().await,
        keyword_replies().await,
        &credentials,
        &config.webhooks,
    )
    .unwrap()
    .reading(reader)
    .with_reload_after_refusal_every(Duration::ZERO);
    let router = http::webhooks_router(webhooks);
    let post = |token: &str| {
        let params: Vec<(String, String)> = [
            ("MessageSid", format!("SM{}", uuid::Uuid::new_v4().simple())),
            ("AccountSid", ACCOUNT.to_owned()),
            ("From", phone()),
            ("To", OUR_NUMBER.to_owned()),
            ("Body", "hello after the rotation".to_owned()),
            ("NumMedia", "0".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v))
        .into();
        e2e_tests::signed_twilio_request(
            token,
            "https://hooks.example.test",
            "/webhooks/twilio/messages",
            &params,
        )
    };
    let status = |request: lambda_http::Request| {
        let router = router.clone();
        async move { router.oneshot(request).await.unwrap().status().as_u16() }
    };

    assert_eq!(status(post("token-A")).await, 200);
    // Twilio now signs with the new token, and the secret has it: taken up
    // before the signature would be refused.
    put_secret(&secret, &webhook_secret("token-B")).await;
    assert_eq!(status(post("token-B")).await, 200);
    assert_eq!(
        status(post("token-A")).await,
        403,
        "the old token no longer"
    );
    assert_eq!(status(post("forged")).await, 403);
}
