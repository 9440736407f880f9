//! Handler tests driven by the Lambda event fixtures in `events/` — the same files
//! `sam local invoke -e` and `cargo lambda invoke --data-file` take — run through
//! the functions' handlers with the real adapters against the local stack.

use aws_lambda_events::event::sqs::SqsEvent;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use e2e_tests::{env, keyword_replies, private_queue, queue, store};
use lambda_http::http::Response;
use serde_json::Value;
use shared::access::Authenticator;
use shared::adapters::dynamodb::DynamoDbStore;
use shared::adapters::sqs::{SqsQueue, decode_body};
use shared::adapters::twilio_webhook::{self, EMPTY_TWIML};
use shared::api::SendRules;
use shared::domain::{Channel, ConversationKey, Direction, Message, Status, validate_outbound};
use shared::ports::{ConversationReader, MessageStore};
use shared::sqs_trigger::{batch_response, delivery_records};
use shared::startup::Startup;
use shared::webhooks::Webhooks;
use shared::{conversations, http};
use tower::ServiceExt;

fn fixture(name: &str) -> String {
    let path = format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn http_event(name: &str) -> lambda_http::Request {
    lambda_http::request::from_str(&fixture(name))
        .unwrap_or_else(|e| panic!("{name} is not an API Gateway event: {e}"))
}

/// Sends a fixture through a function's router, as `lambda_http::run` does.
async fn invoke(router: &Router, request: lambda_http::Request) -> Response<Bytes> {
    let response = router.clone().oneshot(request).await.expect("infallible");
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .expect("response body");
    Response::from_parts(parts, bytes)
}

/// API keys as the functions check them (the fixtures carry the local stacks'
/// fixture key).
async fn keys() -> Arc<Authenticator<DynamoDbStore>> {
    startup().await.authenticator()
}

/// The outbound function's router as its `main` builds it (any sender allowed,
/// as on the local stacks), over `queue`.
async fn outbound(store: DynamoDbStore, queue: SqsQueue) -> Router {
    http::outbound_router(store, queue, SendRules::default(), keys().await)
}

fn json(response: &Response<Bytes>) -> Value {
    serde_json::from_slice(response.body().as_ref()).expect("JSON body")
}

fn error_fields(body: &Value) -> Vec<&str> {
    body["errors"]
        .as_array()
        .expect("errors list")
        .iter()
        .map(|e| e["field"].as_str().unwrap_or("-"))
        .collect()
}

#[tokio::test]
async fn outbound_fixtures_are_queued() {
    let store = store().await;
    let (client, url) = private_queue().await;
    let router = outbound(store.clone(), SqsQueue::new(client.clone(), &url)).await;
    let mut ids = Vec::new();
    for (name, channel) in [
        ("outbound-sms.json", "sms"),
        ("outbound-mms.json", "mms"),
        ("outbound-email.json", "email"),
    ] {
        let response = invoke(&router, http_event(name)).await;
        let body = json(&response);
        assert_eq!(response.status(), 202, "{name}: {body}");
        assert_eq!(body["status"], "queued");
        assert_eq!(body["direction"], "outbound");
        assert_eq!(body["type"], channel);
        assert_eq!(body["timestamp"], "2024-11-01T14:00:00Z");
        let id = body["id"].as_str().expect("id");
        assert_eq!(
            response.headers()["location"],
            format!("/messages/{id}").as_str()
        );
        let stored = store.get(id).await.unwrap().expect("stored");
        assert_eq!(stored.status, Status::Queued, "{name}");
        ids.push(id.to_owned());
    }
    // And the queue carries exactly those ids.
    let mut queued = Vec::new();
    for _ in 0..5 {
        let received = client
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        for message in received.messages.unwrap_or_default() {
            queued.push(decode_body(message.body().unwrap_or_default()).expect("queued body"));
        }
        if queued.len() >= ids.len() {
            break;
        }
    }
    queued.sort();
    ids.sort();
    assert_eq!(queued, ids);
    client.delete_queue().queue_url(&url).send().await.unwrap();
}

#[tokio::test]
async fn outbound_bad_fixtures_get_4xx() {
    let router = outbound(store().await, queue().await).await;
    let response = invoke(&router, http_event("outbound-invalid.json")).await;
    assert_eq!(response.status(), 422);
    assert_eq!(
        error_fields(&json(&response)),
        vec!["from", "attachments", "body"]
    );

    let response = invoke(&router, http_event("outbound-malformed-json.json")).await;
    assert_eq!(response.status(), 400);
    assert_eq!(error_fields(&json(&response)), vec!["body"]);

    let response = invoke(&router, http_event("outbound-wrong-content-type.json")).await;
    assert_eq!(response.status(), 415);
    assert_eq!(error_fields(&json(&response)), vec!["content-type"]);
}

#[tokio::test]
async fn an_outbound_fixture_without_an_api_key_is_refused_and_nothing_is_stored() {
    let (client, url) = private_queue().await;
    let router = outbound(store().await, SqsQueue::new(client.clone(), &url)).await;
    let response = invoke(&router, http_event("outbound-no-api-key.json")).await;
    assert_eq!(response.status(), 401, "{}", json(&response));
    assert_eq!(error_fields(&json(&response)), vec!["Authorization"]);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"messaging\""
    );
    let received = client
        .receive_message()
        .queue_url(&url)
        .wait_time_seconds(1)
        .send()
        .await
        .expect("receive");
    assert!(
        received.messages.unwrap_or_default().is_empty(),
        "nothing queued"
    );
    client.delete_queue().queue_url(&url).send().await.unwrap();
}

#[tokio::test]
async fn inbound_fixture_is_stored_once() {
    let router = http::inbound_router(store().await, keyword_replies().await, keys().await);
    let first = invoke(&router, http_event("inbound-sms.json")).await;
    // The fixture's provider id may already be stored by an earlier run on the same table.
    assert!(
        matches!(first.status().as_u16(), 200 | 201),
        "{}",
        json(&first)
    );
    let first = json(&first);
    assert_eq!(first["status"], "received");
    assert_eq!(first["direction"], "inbound");
    assert_eq!(first["messaging_provider_id"], "fixture-abc123");

    let again = invoke(&router, http_event("inbound-sms.json")).await;
    assert_eq!(again.status(), 200);
    assert_eq!(
        json(&again)["id"],
        first["id"],
        "a repeated provider id returns the first message"
    );

    let response = invoke(&router, http_event("inbound-missing-provider-id.json")).await;
    assert_eq!(response.status(), 422);
    assert_eq!(
        error_fields(&json(&response)),
        vec!["messaging_provider_id"]
    );
}

#[tokio::test]
async fn read_fixture_for_an_unknown_id_is_404() {
    let startup = startup().await;
    let router = http::read_router(
        startup.message_store(),
        startup.cursor_codec().await.expect("cursor key"),
        startup.authenticator(),
    );
    let response = invoke(&router, http_event("get-message-unknown.json")).await;
    assert_eq!(response.status(), 404);
    assert_eq!(error_fields(&json(&response)), vec!["id"]);
}

/// Stores a queued message under a fixed id (overwriting an earlier run's).
async fn seed(id: &str, payload: Value) {
    let new = validate_outbound(payload.as_object().unwrap()).expect("valid seed");
    let mut message = Message::accept(new, Direction::Outbound, time::OffsetDateTime::now_utc());
    message.id = id.to_owned();
    let item = DynamoDbStore::message_item(&message).expect("item");
    aws_sdk_dynamodb::Client::new(&e2e_tests::aws().await)
        .put_item()
        .table_name(env("TABLE_NAME"))
        .set_item(Some(item))
        .send()
        .await
        .expect("seed put");
}

#[tokio::test]
async fn delivery_fixture_reports_exactly_the_bad_records() {
    let sms_to = e2e_tests::phone();
    let email_to = e2e_tests::email();
    seed(
        "01932c07-a0c4-7b6e-8000-0000000000a1",
        serde_json::json!({"from": "+18045551234", "to": sms_to, "type": "sms", "body": "fixture sms"}),
    )
    .await;
    seed(
        "01932c07-a0c4-7b6e-8000-0000000000a2",
        serde_json::json!({"from": "user@usehatchapp.com", "to": email_to, "type": "email", "body": "fixture email"}),
    )
    .await;

    let deliverer = e2e_tests::deliverer().await;
    let event: SqsEvent =
        serde_json::from_str(&fixture("sqs-delivery-batch.json")).expect("SQS event");
    let failed = deliverer
        .deliver_batch(&delivery_records(&event), None)
        .await;
    let response = serde_json::to_value(batch_response(failed)).unwrap();
    assert_eq!(
        response,
        serde_json::json!({"batchItemFailures": [
            {"itemIdentifier": "6f1c7a52-0002-4a8b-9c1e-000000000002"},
            {"itemIdentifier": "6f1c7a52-0003-4a8b-9c1e-000000000003"},
        ]})
    );
    let store = store().await;
    for id in [
        "01932c07-a0c4-7b6e-8000-0000000000a1",
        "01932c07-a0c4-7b6e-8000-0000000000a2",
    ] {
        let message = store.get(id).await.unwrap().unwrap();
        // The simulator reports delivery like the providers do, so the message may
        // already have moved on from `sent` to `delivered`.
        assert!(
            matches!(message.status, Status::Sent | Status::Delivered),
            "{id}: {message:?}"
        );
        assert!(
            message.history.iter().any(|h| h.status == Status::Sent),
            "{id}: {message:?}"
        );
        assert!(message.provider_message_id.is_some());
    }
    let sim = e2e_tests::Simulator::new();
    assert_eq!(sim.requests_to(&sms_to).await.len(), 1);
    assert_eq!(sim.requests_to(&email_to).await.len(), 1);
}

/// The functions' start-up, from the stack's environment, as their mains do it.
async fn startup() -> Startup {
    Startup::load()
        .await
        .expect("configuration from the stack's environment")
}

/// The webhooks as the webhooks function builds them (Twilio auth token from the
/// provider secret, SendGrid key and Inbound Parse credentials from the environment).
async fn webhooks() -> Router {
    let webhooks: Webhooks<DynamoDbStore, SqsQueue> =
        startup().await.webhooks().await.expect("webhooks set-up");
    http::webhooks_router(webhooks)
}

fn header<'a>(response: &'a Response<Bytes>, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .expect("a text header")
}

fn assert_twiml(name: &str, response: &Response<Bytes>) {
    let text = std::str::from_utf8(response.body().as_ref()).expect("text body");
    assert_eq!(response.status(), 200, "{name}: {text}");
    assert_eq!(header(response, "content-type"), "text/xml", "{name}");
    assert_eq!(text, EMPTY_TWIML, "{name}");
}

/// Every message of a conversation, all pages.
async fn thread(store: &DynamoDbStore, conversation_id: &str) -> Vec<Message> {
    let (mut messages, mut after) = (Vec::new(), None);
    loop {
        let page = store
            .conversation_messages(conversation_id, conversations::MAX_LIMIT, after.as_ref())
            .await
            .expect("conversation messages");
        messages.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => return messages,
        }
    }
}

#[tokio::test]
async fn twilio_inbound_fixture_is_stored_once_and_answered_with_twiml() {
    const SID: &str = "SMa1b2c3d4e5f60718293a4b5c6d7e8f90";
    let event = http_event("twilio-inbound-sms.json");
    // The fixture carries the signature Twilio sends for it with the stack's auth
    // token, over the URL it was posted to.
    let params = twilio_webhook::parse_form(event.body().as_ref());
    let url = "https://abc123.execute-api.us-east-1.amazonaws.com/webhooks/twilio/messages";
    assert_eq!(
        event.headers()[twilio_webhook::SIGNATURE_HEADER],
        twilio_webhook::signature(&e2e_tests::twilio_auth_token().await, url, &params).as_str()
    );

    let webhooks = webhooks().await;
    let first = invoke(&webhooks, event).await;
    assert_twiml("first post", &first);
    // Twilio retries a webhook it got no answer to: the same MessageSid again.
    let again = invoke(&webhooks, http_event("twilio-inbound-sms.json")).await;
    assert_twiml("second post", &again);

    let store = store().await;
    let conversation = ConversationKey::new(Channel::Sms, "+12016661234", "+18045551234").id();
    let stored: Vec<Message> = thread(&store, &conversation)
        .await
        .into_iter()
        .filter(|m| m.messaging_provider_id.as_deref() == Some(SID))
        .collect();
    assert_eq!(stored.len(), 1, "one message per MessageSid: {stored:?}");
    let message = &stored[0];
    assert_eq!(message.direction, Direction::Inbound);
    assert_eq!(message.status, Status::Received);
    assert_eq!(message.channel, Channel::Sms);
    assert_eq!(message.from, "+12016661234");
    assert_eq!(message.to, "+18045551234");
    assert_eq!(message.body, "Yes, Friday at 3pm works for me!");
    assert_eq!(message.attachments, None);
}

/// Stores a `sent` message under a fixed id, with the provider's id indexed for
/// reports, as the delivery function leaves it (overwriting an earlier run's).
async fn seed_sent(id: &str, payload: Value, provider_message_id: &str) {
    let channel = shared::domain::Channel::parse(payload["type"].as_str().unwrap()).unwrap();
    seed(id, payload).await;
    e2e_tests::mark_sent(id, channel.provider(), provider_message_id).await;
}

#[tokio::test]
async fn forged_and_unsigned_webhook_fixtures_are_refused_and_change_nothing() {
    // The messages the refused reports are about, sent and waiting for them.
    const TWILIO_MESSAGE: &str = "01932c07-a0c4-7b6e-8000-0000000000e2";
    const SENDGRID_MESSAGE: &str = "01932c07-a0c4-7b6e-8000-0000000000e1";
    seed_sent(
        TWILIO_MESSAGE,
        serde_json::json!({"from": "+18045551234", "to": "+12016661234", "type": "sms", "body": "fixture sms"}),
        "SM0f1e2d3c4b5a69788796a5b4c3d2e1f0",
    )
    .await;
    seed_sent(
        SENDGRID_MESSAGE,
        serde_json::json!({"from": "user@usehatchapp.com", "to": "contact@example.com", "type": "email", "body": "fixture email"}),
        "Qz9mKtXnRjWb3c2dLp0aHg",
    )
    .await;
    let webhooks = webhooks().await;

    // A status callback signed with another token.
    let response = invoke(&webhooks, http_event("twilio-status-forged.json")).await;
    assert_eq!(response.status(), 403, "{}", json(&response));
    assert_eq!(error_fields(&json(&response)), vec!["X-Twilio-Signature"]);

    // An Event Webhook post without its signature headers.
    let response = invoke(&webhooks, http_event("sendgrid-events-unsigned.json")).await;
    assert_eq!(response.status(), 403, "{}", json(&response));
    assert_eq!(
        error_fields(&json(&response)),
        vec!["x-twilio-email-event-webhook-signature"]
    );

    let store = store().await;
    for id in [TWILIO_MESSAGE, SENDGRID_MESSAGE] {
        let message = store.get(id).await.unwrap().expect("seeded");
        assert_eq!(message.status, Status::Sent, "{id}: {message:?}");
    }

    // An Inbound Parse post without the Basic credentials: challenged, not stored.
    let response = invoke(&webhooks, http_event("sendgrid-inbound-unauthorized.json")).await;
    assert_eq!(response.status(), 401, "{}", json(&response));
    assert_eq!(error_fields(&json(&response)), vec!["authorization"]);
    assert_eq!(
        header(&response, "www-authenticate"),
        r#"Basic realm="sendgrid-inbound-parse""#
    );
    let conversation =
        ConversationKey::new(Channel::Email, "jane@example.com", "user@usehatchapp.com").id();
    let stored = thread(&store, &conversation).await;
    assert!(
        stored
            .iter()
            .all(|m| !m.body.contains("Friday works for me.")),
        "{stored:?}"
    );
}

#[tokio::test]
async fn conversation_fixtures_get_4xx() {
    let startup = startup().await;
    let router = http::read_router(
        startup.message_store(),
        startup.cursor_codec().await.expect("cursor key"),
        startup.authenticator(),
    );

    let response = invoke(&router, http_event("list-conversations-bad-limit.json")).await;
    assert_eq!(response.status(), 400, "{}", json(&response));
    assert_eq!(error_fields(&json(&response)), vec!["limit"]);

    let response = invoke(&router, http_event("get-conversation-unknown.json")).await;
    assert_eq!(response.status(), 404, "{}", json(&response));
    assert_eq!(error_fields(&json(&response)), vec!["id"]);
}

#[tokio::test]
async fn suppression_fixtures_get_4xx() {
    let startup = startup().await;
    let router = http::suppressions_router(
        startup.message_store(),
        startup.cursor_codec().await.expect("cursor key"),
        startup.authenticator(),
    );

    let response = invoke(&router, http_event("list-suppressions-bad-channel.json")).await;
    assert_eq!(response.status(), 400, "{}", json(&response));
    assert_eq!(error_fields(&json(&response)), vec!["channel"]);

    let response = invoke(&router, http_event("remove-suppression-unknown.json")).await;
    assert_eq!(response.status(), 404, "{}", json(&response));
    assert_eq!(error_fields(&json(&response)), vec!["address"]);
}

/// An Inbound Parse post from `from`, with SendGrid's `SPF` and `dkim` verdicts.
fn inbound_parse(from: &str, body: &str, spf: &str, dkim: &str) -> lambda_http::Request {
    let boundary = "xYzZY";
    let parts = [
        ("from", format!("Someone <{from}>")),
        ("to", "support@usehatchapp.com".to_owned()),
        ("subject", "Invoice".to_owned()),
        ("text", body.to_owned()),
        (
            "headers",
            format!("Message-ID: <{}@mail.example.com>\n", uuid::Uuid::new_v4()),
        ),
        ("SPF", spf.to_owned()),
        ("dkim", dkim.to_owned()),
        (
            "envelope",
            format!(r#"{{"to":["support@usehatchapp.com"],"from":"{from}"}}"#),
        ),
    ];
    let mut multipart = String::new();
    for (name, value) in parts {
        multipart.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    multipart.push_str(&format!("--{boundary}--\r\n"));
    let credentials = e2e_tests::env("SENDGRID_INBOUND_BASIC_AUTH");
    let basic = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, credentials);
    lambda_http::http::Request::builder()
        .method("POST")
        .uri("https://abc123.execute-api.us-east-1.amazonaws.com/webhooks/sendgrid/inbound")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .header("authorization", format!("Basic {basic}"))
        .body(lambda_http::Body::Binary(multipart.into_bytes()))
        .unwrap()
}

/// `INBOUND_EMAIL_REQUIRE_AUTH`: a mail neither SPF nor DKIM vouched for is
/// answered 200 (SendGrid must not post it again) and stored nowhere; one that
/// DKIM vouched for is stored, marked `sender_verified`.
#[tokio::test]
async fn with_inbound_email_auth_required_a_forged_sender_is_not_stored() {
    let mut startup = startup().await;
    startup.config.webhooks.inbound_email_require_auth = true;
    let router = http::webhooks_router(startup.webhooks().await.expect("webhooks set-up"));
    let forged = e2e_tests::marker();
    let response = invoke(
        &router,
        inbound_parse(
            "ceo@bank.example",
            &forged,
            "fail",
            "{@bank.example : fail}",
        ),
    )
    .await;
    assert_eq!(response.status(), 200, "{}", json(&response));
    assert_eq!(json(&response)["stored"], false);
    assert_eq!(
        e2e_tests::stored_with_marker(&forged).await,
        0,
        "stored nowhere"
    );

    let genuine = e2e_tests::marker();
    let response = invoke(
        &router,
        inbound_parse(
            "ceo@bank.example",
            &genuine,
            "softfail",
            "{@bank.example : pass}",
        ),
    )
    .await;
    assert_eq!(response.status(), 201, "{}", json(&response));
    assert_eq!(json(&response)["sender_verified"], true);
}
