//! A real delivery's log output, captured: it carries the ids needed to follow a
//! message (Lambda request id, message, conversation and SQS message ids,
//! provider) and never a credential, an authorization header or a message body.

use std::io::Write;
use std::sync::{Arc, Mutex};

use aws_lambda_events::event::sqs::SqsEvent;
use base64::Engine;
use e2e_tests::{email, phone, store};
use serde_json::json;
use shared::domain::{Direction, Message, Status, validate_outbound};
use shared::ports::MessageStore;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

async fn stored(payload: serde_json::Value) -> Message {
    let new = validate_outbound(payload.as_object().unwrap()).unwrap();
    let message = Message::accept(new, Direction::Outbound, time::OffsetDateTime::now_utc());
    store().await.insert_outbound(&message, None).await.unwrap();
    message
}

fn record(queue_message_id: &str, message: &Message) -> serde_json::Value {
    json!({"messageId": queue_message_id, "receiptHandle": format!("rh-{queue_message_id}"),
           "body": json!({"id": message.id}).to_string(),
           "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
           "eventSource": "aws:sqs", "awsRegion": "us-east-1"})
}

#[tokio::test]
async fn delivery_logs_carry_ids_and_never_secrets_or_bodies() {
    let sms_body = format!("secret-sms-body-{}", uuid::Uuid::new_v4().simple());
    let email_body = format!("secret-email-body-{}", uuid::Uuid::new_v4().simple());
    let sms =
        stored(json!({"from": "+18045551234", "to": phone(), "type": "sms", "body": sms_body}))
            .await;
    let mail = stored(
        json!({"from": "ops@usehatchapp.com", "to": email(), "type": "email", "body": email_body}),
    )
    .await;

    let deliverer = e2e_tests::deliverer().await;
    let credentials = e2e_tests::provider_credentials().await;
    let event: SqsEvent = serde_json::from_value(
        json!({"Records": [record("sqs-sms-1", &sms), record("sqs-email-1", &mail)]}),
    )
    .unwrap();
    let mut context = lambda_runtime::Context::default();
    context.request_id = "req-logging-test-1".into();

    // Debug level: more than the functions log by default.
    let captured = Captured::default();
    let subscriber = shared::telemetry::json_subscriber(EnvFilter::new("debug"), captured.clone());
    let guard = tracing::subscriber::set_default(subscriber);
    let response = shared::sqs_trigger::handle_event(
        &deliverer,
        lambda_runtime::LambdaEvent::new(event, context),
    )
    .await;
    drop(guard);
    assert!(
        response.batch_item_failures.is_empty(),
        "both records delivered"
    );
    for m in [&sms, &mail] {
        assert_eq!(
            store().await.get(&m.id).await.unwrap().unwrap().status,
            Status::Sent
        );
    }

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    for line in logs.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
    }
    let (user, token) = credentials
        .twilio_login
        .basic_auth(&credentials.twilio_account_sid);
    let key = credentials.sendgrid_api_key.as_str();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"));
    for secret in [
        token,
        key,
        basic.as_str(),
        "Bearer ",
        "Basic ",
        sms_body.as_str(),
        email_body.as_str(),
    ] {
        assert!(!logs.contains(secret), "logs contain {secret:?}:\n{logs}");
    }
    for id in [
        "req-logging-test-1",
        sms.id.as_str(),
        mail.id.as_str(),
        sms.conversation_id.as_str(),
        mail.conversation_id.as_str(),
        "sqs-sms-1",
        "sqs-email-1",
        "\"provider\":\"twilio\"",
        "\"provider\":\"sendgrid\"",
    ] {
        assert!(logs.contains(id), "logs lack {id}:\n{logs}");
    }
}

/// API requests at every level, with a good key, an unknown one and one
/// without the scope: the logs name keys by id only, never the key.
#[tokio::test]
async fn api_keys_never_reach_the_logs() {
    use shared::domain::Scope;
    use shared::domain::access::{ApiKey, generate_key, key_hash, key_id};
    use shared::ports::ApiKeyAdmin;
    use tower::ServiceExt;

    let store = store().await;
    let good = generate_key();
    let record = ApiKey::new(
        &good,
        "logging test",
        &[Scope::MessagesSend],
        time::OffsetDateTime::now_utc(),
    );
    store
        .create_api_key(&key_hash(&good), &record)
        .await
        .unwrap();
    let unknown = generate_key();
    let startup = shared::startup::Startup::load().await.unwrap();
    let outbound = shared::http::outbound_router(
        startup.message_store(),
        e2e_tests::queue().await,
        Default::default(),
        startup.authenticator(),
    );
    let read = shared::http::read_router(
        startup.message_store(),
        startup.cursor_codec().await.expect("cursor key"),
        startup.authenticator(),
    );

    let captured = Captured::default();
    let subscriber = shared::telemetry::json_subscriber(EnvFilter::new("trace"), captured.clone());
    let guard = tracing::subscriber::set_default(subscriber);
    let body = json!({"from": "+18045551234", "to": phone(), "type": "sms", "body": "hi"});
    for key in [&good, &unknown] {
        let request = lambda_http::http::Request::post("/messages/outbound")
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.to_string()))
            .unwrap();
        outbound.clone().oneshot(request).await.unwrap();
        let request =
            lambda_http::http::Request::get("/messages/01932c07-a0c4-7b6e-8000-000000000404")
                .header("authorization", format!("Bearer {key}"))
                .body(axum::body::Body::empty())
                .unwrap();
        read.clone().oneshot(request).await.unwrap();
    }
    drop(guard);

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("request refused"),
        "the refusals are logged:\n{logs}"
    );
    assert!(
        logs.contains(&key_id(&good)),
        "the key id is logged:\n{logs}"
    );
    for secret in [
        good.as_str(),
        unknown.as_str(),
        &good[17..],
        &unknown[17..],
        "Bearer ",
    ] {
        assert!(!logs.contains(secret), "logs contain {secret:?}:\n{logs}");
    }
}
