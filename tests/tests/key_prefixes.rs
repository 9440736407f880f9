//! The template limits each function's item actions to key prefixes
//! (`dynamodb:LeadingKeys`), which the emulator does not enforce. Here each
//! function's code runs its main paths on the emulator through a DynamoDB client
//! that records every item action and the key prefix it touches; each recorded
//! pair must be one the function's policy in template.yaml allows, or the
//! function would be refused on AWS.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use axum::Router;
use e2e_tests::{aws, email, env, keyword_replies, new_key, phone, queue, twilio_auth_token};
use serde_json::{Value, json};
use shared::access::Authenticator;
use shared::adapters::dynamodb::DynamoDbStore;
use shared::api::SendRules;
use shared::cursor::CursorCodec;
use shared::domain::{Channel, Scope};
use shared::http;
use shared::ports::MessageStore;
use shared::startup::Startup;
use tower::ServiceExt;

const OUR_NUMBER: &str = "+18045551234";

/// (action, key prefix) pairs, e.g. ("dynamodb:PutItem", "MSG#*").
type Touched = BTreeSet<(String, String)>;

/// Records the item actions a client sends, from the requests themselves.
#[derive(Clone, Debug, Default)]
struct Recorder(Arc<Mutex<Touched>>);

impl Recorder {
    fn taken(&self) -> Touched {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

fn prefix(key: &Value) -> String {
    let pk = key["pk"]["S"].as_str().unwrap_or("?");
    match pk.split_once('#') {
        Some((kind, _)) => format!("{kind}#*"),
        None => pk.to_owned(),
    }
}

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "KeyPrefixRecorder"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        let target = request.headers().get("x-amz-target").unwrap_or_default();
        let operation = target.rsplit('.').next().unwrap_or_default().to_owned();
        let body: Value =
            serde_json::from_slice(request.body().bytes().unwrap_or_default()).unwrap_or_default();
        let mut touched = self.0.lock().unwrap();
        let mut add = |action: &str, key: &Value| {
            touched.insert((format!("dynamodb:{action}"), prefix(key)));
        };
        match operation.as_str() {
            "GetItem" | "DeleteItem" | "UpdateItem" => add(&operation, &body["Key"]),
            "PutItem" => add("PutItem", &body["Item"]),
            "TransactWriteItems" => {
                for item in body["TransactItems"].as_array().into_iter().flatten() {
                    if !item["Put"].is_null() {
                        add("PutItem", &item["Put"]["Item"]);
                    }
                    if !item["Delete"].is_null() {
                        add("DeleteItem", &item["Delete"]["Key"]);
                    }
                    if !item["Update"].is_null() {
                        add("UpdateItem", &item["Update"]["Key"]);
                    }
                    if !item["ConditionCheck"].is_null() {
                        add("ConditionCheckItem", &item["ConditionCheck"]["Key"]);
                    }
                }
            }
            // Index queries: their keys are not the table's (no LeadingKeys).
            "Query" => {}
            other => add(other, &json!({"pk": {"S": "?"}})),
        }
        Ok(())
    }
}

/// The stack's table through a client that records what it touches.
async fn recording_store() -> (DynamoDbStore, Recorder) {
    let recorder = Recorder::default();
    let config = aws_sdk_dynamodb::config::Builder::from(&aws().await)
        .interceptor(recorder.clone())
        .build();
    let store = DynamoDbStore::new(
        aws_sdk_dynamodb::Client::from_conf(config),
        env("TABLE_NAME"),
    );
    (store, recorder)
}

/// What the template allows `function`: (action, prefix) from every statement
/// with a `dynamodb:LeadingKeys` condition.
fn allowed(function: &str) -> Touched {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
    let template: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let statements = &template["Resources"][function]["Properties"]["Policies"][0]["Statement"];
    let mut allowed = Touched::new();
    for statement in statements.as_sequence().unwrap() {
        let keys = &statement["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"];
        let Some(keys) = keys.as_sequence() else {
            continue;
        };
        let actions = match &statement["Action"] {
            serde_norway::Value::Sequence(list) => list.clone(),
            single => vec![single.clone()],
        };
        for action in &actions {
            for key in keys {
                allowed.insert((
                    action.as_str().unwrap().to_owned(),
                    key.as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    allowed
}

/// Every action `function`'s code took must be allowed, and the run must have
/// taken some (a scenario that touches nothing proves nothing).
fn assert_allowed(function: &str, touched: &Touched) {
    assert!(
        !touched.is_empty(),
        "{function}: the scenario touched no item"
    );
    let allowed = allowed(function);
    let refused: Vec<_> = touched.difference(&allowed).collect();
    assert!(
        refused.is_empty(),
        "{function}'s policy in template.yaml would refuse {refused:?} (it allows {allowed:?})"
    );
}

fn request(method: &str, path: &str, key: &str, body: Option<Value>) -> lambda_http::Request {
    let mut builder = lambda_http::http::Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {key}"));
    if body.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    builder
        .body(body.map_or(lambda_http::Body::Empty, |b| {
            lambda_http::Body::from(b.to_string())
        }))
        .unwrap()
}

async fn call(router: &Router, request: lambda_http::Request) -> (u16, Value) {
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn keys_of(store: &DynamoDbStore) -> Arc<Authenticator<DynamoDbStore>> {
    Arc::new(Authenticator::new(store.clone(), Duration::ZERO))
}

async fn startup() -> Startup {
    Startup::load().await.expect("the stack's configuration")
}

#[tokio::test]
async fn the_api_functions_touch_only_the_keys_their_policies_allow() {
    let key = new_key(&[
        Scope::MessagesSend,
        Scope::MessagesInbound,
        Scope::MessagesRead,
        Scope::SuppressionsWrite,
    ])
    .await;
    let (sender, opted_out) = (phone(), phone());

    // Inbound: a message, its repeat, then STOP, HELP and START (suppression
    // entries, keyword replies with their idempotency records).
    let (store, recorder) = recording_store().await;
    let inbound = http::inbound_router(store.clone(), keyword_replies().await, keys_of(&store));
    for (n, body) in ["hello", "hello", "STOP", "HELP", "START", "STOP"]
        .iter()
        .enumerate()
    {
        let id = if n == 1 {
            "0".to_owned()
        } else {
            n.to_string()
        };
        let (status, answer) = call(
            &inbound,
            request(
                "POST",
                "/messages/inbound",
                &key,
                Some(
                    json!({"from": opted_out, "to": OUR_NUMBER, "type": "sms", "body": body,
                            "attachments": null, "timestamp": "2024-11-01T14:00:00Z",
                            "messaging_provider_id": format!("kp-{opted_out}-{id}")}),
                ),
            ),
        )
        .await;
        assert!(status == 201 || status == 200, "{body}: {status} {answer}");
    }
    assert_allowed("InboundFunction", &recorder.taken());

    // Outbound: a send with an idempotency key, its replay, and one to the number
    // that opted out.
    let (store, recorder) = recording_store().await;
    let outbound = http::outbound_router(
        store.clone(),
        queue().await,
        SendRules::default(),
        keys_of(&store),
    );
    let idempotency = uuid::Uuid::new_v4().to_string();
    let mut sent = String::new();
    for to in [&sender, &sender, &opted_out] {
        let mut req = request(
            "POST",
            "/messages/outbound",
            &key,
            Some(
                json!({"from": OUR_NUMBER, "to": to, "type": "sms", "body": "hi",
                        "attachments": null, "timestamp": "2024-11-01T14:00:00Z"}),
            ),
        );
        if to == &sender {
            req.headers_mut()
                .insert("idempotency-key", idempotency.parse().unwrap());
        }
        let (status, answer) = call(&outbound, req).await;
        if to == &sender {
            assert!(status == 202 || status == 200, "{status} {answer}");
            sent = answer["id"].as_str().unwrap().to_owned();
        } else {
            assert_eq!(status, 422, "{answer}");
        }
    }
    assert_allowed("OutboundFunction", &recorder.taken());

    // Read: the message, the participant's conversations, one conversation and
    // its messages.
    let (store, recorder) = recording_store().await;
    let read = http::read_router(
        store.clone(),
        CursorCodec::new(b"key-prefixes-test-cursor-key"),
        keys_of(&store),
    );
    let (status, message) = call(
        &read,
        request("GET", &format!("/messages/{sent}"), &key, None),
    )
    .await;
    assert_eq!(status, 200, "{message}");
    let conversation = message["conversation_id"].as_str().unwrap().to_owned();
    for path in [
        format!("/conversations?participant={}", sender.replace('+', "%2B")),
        format!("/conversations/{conversation}"),
        format!("/conversations/{conversation}/messages?limit=1"),
    ] {
        let (status, answer) = call(&read, request("GET", &path, &key, None)).await;
        assert_eq!(status, 200, "{path}: {answer}");
    }
    assert_allowed("ReadFunction", &recorder.taken());

    // Suppressions: add, read one, list, lift.
    let (store, recorder) = recording_store().await;
    let suppressions = http::suppressions_router(
        store.clone(),
        CursorCodec::new(b"key-prefixes-test-cursor-key"),
        keys_of(&store),
    );
    let address = phone();
    let encoded = address.replace('+', "%2B");
    for (method, path, body, expected) in [
        (
            "POST",
            "/suppressions".to_owned(),
            Some(json!({"channel": "phone", "address": address})),
            201,
        ),
        (
            "GET",
            format!("/suppressions?channel=phone&address={encoded}"),
            None,
            200,
        ),
        (
            "GET",
            "/suppressions?channel=phone&limit=2".to_owned(),
            None,
            200,
        ),
        (
            "DELETE",
            format!("/suppressions/phone/{encoded}"),
            None,
            204,
        ),
    ] {
        let (status, answer) = call(&suppressions, request(method, &path, &key, body)).await;
        assert_eq!(status, expected, "{method} {path}: {answer}");
    }
    assert_allowed("SuppressionsFunction", &recorder.taken());
}

#[tokio::test]
async fn the_webhooks_and_delivery_touch_only_the_keys_their_policies_allow() {
    let startup = startup().await;

    // Delivery: an SMS (provider id written) and an email.
    let (store, recorder) = recording_store().await;
    let deliverer = shared::delivery::Deliverer::new(
        store.clone(),
        startup.delivery_queue().unwrap(),
        shared::adapters::providers::Providers::from_config(
            &startup.config,
            &e2e_tests::provider_credentials().await,
            shared::adapters::providers::http_client(Duration::from_secs(5)).unwrap(),
        ),
        startup.config.delivery.retry,
        startup.config.delivery.lease,
    );
    let mut records = Vec::new();
    for (channel, to) in [(Channel::Sms, phone()), (Channel::Email, email())] {
        let from = if channel == Channel::Email {
            "ops@usehatchapp.com"
        } else {
            OUR_NUMBER
        };
        let message = e2e_tests::queued_message(channel, from, &to).await;
        records.push(json!({"messageId": format!("kp-{}", message.id),
            "receiptHandle": "rh", "body": json!({"id": message.id}).to_string(),
            "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
            "eventSource": "aws:sqs", "awsRegion": "us-east-1"}));
    }
    let event: SqsEvent = serde_json::from_value(json!({"Records": records})).unwrap();
    let response = shared::sqs_trigger::handle_event(
        &deliverer,
        lambda_runtime::LambdaEvent::new(event, lambda_runtime::Context::default()),
    )
    .await;
    assert!(response.batch_item_failures.is_empty(), "both delivered");
    assert_allowed("DeliveryFunction", &recorder.taken());

    // Webhooks: a Twilio STOP and its repeat, a status callback for a sent SMS.
    let (store, recorder) = recording_store().await;
    let (_, credentials) =
        shared::adapters::secrets::load_webhook_credentials(&startup.config, &aws().await)
            .await
            .unwrap();
    let webhooks = shared::webhooks::Webhooks::new(
        store.clone(),
        keyword_replies().await,
        &credentials,
        &startup.config.webhooks,
    )
    .unwrap();
    let router = http::webhooks_router(webhooks);
    let token = twilio_auth_token().await;
    let base = startup
        .config
        .webhooks
        .public_base_url
        .clone()
        .unwrap_or_else(|| "https://hooks.example.test".to_owned());
    let signed = |path: &str, params: Vec<(String, String)>| {
        e2e_tests::signed_twilio_request(&token, &base, path, &params)
    };
    let from = phone();
    let sid = format!("SM{}", uuid::Uuid::new_v4().simple());
    let inbound = vec![
        ("MessageSid".to_owned(), sid.clone()),
        ("AccountSid".to_owned(), "ACtest".to_owned()),
        ("From".to_owned(), from.clone()),
        ("To".to_owned(), OUR_NUMBER.to_owned()),
        ("Body".to_owned(), "STOP".to_owned()),
        ("NumMedia".to_owned(), "0".to_owned()),
    ];
    for _ in 0..2 {
        let (status, answer) = call(
            &router,
            signed("/webhooks/twilio/messages", inbound.clone()),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
    }
    let provider_sid = format!("SM{}", uuid::Uuid::new_v4().simple());
    let message = e2e_tests::sent_message(Channel::Sms, OUR_NUMBER, &phone(), &provider_sid).await;
    let status_params = vec![
        ("MessageSid".to_owned(), provider_sid.clone()),
        ("MessageStatus".to_owned(), "delivered".to_owned()),
        ("AccountSid".to_owned(), "ACtest".to_owned()),
    ];
    let (status, answer) = call(&router, signed("/webhooks/twilio/status", status_params)).await;
    assert!(status == 200 || status == 204, "{status} {answer}");
    assert_eq!(
        store
            .get(&message.id)
            .await
            .unwrap()
            .unwrap()
            .status
            .as_str(),
        "delivered"
    );

    // SendGrid: a signed event batch about a sent email (applied, remembered,
    // and the bounce suppresses the address).
    let mail =
        e2e_tests::sent_message(Channel::Email, "ops@usehatchapp.com", &email(), "kp-sg-1").await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let events = json!([{"email": mail.to, "timestamp": now, "event": "bounce",
        "sg_event_id": uuid::Uuid::new_v4().to_string(),
        "sg_message_id": "kp-sg-1.filter0001", "message_id": mail.id}]);
    let body = serde_json::to_vec(&events).unwrap();
    let signing = provider_sim::parse_signing_key(provider_sim::DEV_SENDGRID_SIGNING_KEY).unwrap();
    let timestamp = now.to_string();
    let signature = provider_sim::sign_sendgrid_events(&signing, &timestamp, &body);
    let request = lambda_http::http::Request::builder()
        .method("POST")
        .uri("/webhooks/sendgrid/events")
        .header("content-type", "application/json")
        .header(
            shared::adapters::sendgrid_webhook::SIGNATURE_HEADER,
            signature,
        )
        .header(
            shared::adapters::sendgrid_webhook::TIMESTAMP_HEADER,
            timestamp,
        )
        .body(lambda_http::Body::from(body))
        .unwrap();
    let (status, answer) = call(&router, request).await;
    assert!(status == 200 || status == 204, "{status} {answer}");
    assert_allowed("WebhooksFunction", &recorder.taken());
}
