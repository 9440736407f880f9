//! API keys end to end: every route but the webhooks takes one; missing, wrong,
//! unknown and revoked keys get 401, a key without the route's scope 403;
//! nothing is stored for a refused request; idempotency keys are per API key;
//! `ALLOWED_SENDERS` refuses other senders.

use std::time::Duration;

use e2e_tests::{Api, marker, new_key, phone, private_queue, store, stored_with_marker};
use serde_json::{Value, json};
use shared::adapters::dynamodb::DynamoDbStore;
use shared::adapters::sqs::SqsQueue;
use shared::domain::Scope;
use shared::domain::access::{Senders, generate_key, key_hash};
use shared::http::{self, Operation};
use shared::ports::{ApiKeyAdmin, ApiKeyStore};
use tower::ServiceExt;

fn sms(body: &str) -> Value {
    json!({"from": "+18045551234", "to": phone(), "type": "sms", "body": body})
}

/// A request for every route that takes a key, with a path that exists.
fn requests(api: &Api, body: &Value) -> Vec<(Operation, reqwest::RequestBuilder)> {
    let id = "01932c07-a0c4-7b6e-8000-000000000404";
    let conversation = "0123456789abcdef0123456789abcdef";
    http::routes::all()
        .filter(|(_, route)| route.scope.is_some())
        .map(|(op, route)| {
            let path = if route.path.starts_with("/messages/") {
                route.path.replace("{id}", id)
            } else {
                route.path.replace("{id}", conversation)
            }
            .replace("{channel}", "phone")
            .replace("{address}", "%2B19995550000");
            let request = match route.method {
                "GET" => api
                    .http()
                    .get(api.url(&path))
                    .query(&[("participant", "+18045551234")]),
                "DELETE" => api.http().delete(api.url(&path)),
                _ => api.http().post(api.url(&path)).json(body),
            };
            (op, request)
        })
        .collect()
}

fn assert_refused(op: Operation, answer: &e2e_tests::Answer, status: u16) {
    assert_refused_with(op, "", answer, status);
}

fn assert_refused_with(op: Operation, case: &str, answer: &e2e_tests::Answer, status: u16) {
    assert_eq!(answer.status, status, "{op:?} {case}: {}", answer.json);
    assert_eq!(
        answer.json["errors"][0]["field"], "Authorization",
        "{op:?} {case}"
    );
    if status == 401 {
        assert_eq!(
            answer.headers["www-authenticate"], "Bearer realm=\"messaging\"",
            "{op:?} {case}"
        );
    }
}

#[tokio::test]
async fn every_route_but_the_webhooks_refuses_missing_wrong_and_unknown_keys() {
    let marker = marker();
    let body = json!({"from": "+18045551234", "to": phone(), "type": "sms", "body": marker,
                      "messaging_provider_id": marker});
    let unknown = generate_key();
    let cases: [(Option<&str>, &str); 4] = [
        (None, "no key"),
        (Some(unknown.as_str()), "unknown key"),
        (Some("not-a-key"), "short garbage"),
        (Some(""), "empty bearer"),
    ];
    for (key, what) in cases {
        let api = Api::with_key(key);
        for (op, request) in requests(&api, &body) {
            let answer = api.send(request).await;
            assert_refused_with(op, what, &answer, 401);
        }
    }
    // A scheme other than Bearer.
    let api = Api::with_key(None);
    for (op, request) in requests(&api, &body) {
        let answer = api
            .send(request.header("authorization", "Basic dXNlcjpwYXNz"))
            .await;
        assert_refused_with(op, "Basic scheme", &answer, 401);
    }
    assert_eq!(stored_with_marker(&marker).await, 0, "nothing stored");
}

#[tokio::test]
async fn a_key_without_the_routes_scope_gets_403_and_one_with_it_gets_through() {
    let reader = Api::with_key(Some(&new_key(&[Scope::MessagesRead]).await));
    let marker = marker();
    let refused = reader.post_json("/messages/outbound", &sms(&marker)).await;
    assert_refused(Operation::SendMessage, &refused, 403);
    assert!(
        refused.json["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("messages:send")
    );
    let inbound = json!({"from": phone(), "to": "+18045551234", "type": "sms", "body": marker,
                         "messaging_provider_id": marker});
    assert_refused(
        Operation::RecordInbound,
        &reader.post_json("/messages/inbound", &inbound).await,
        403,
    );
    assert_eq!(stored_with_marker(&marker).await, 0, "nothing stored");

    let sender = Api::with_key(Some(&new_key(&[Scope::MessagesSend]).await));
    let sent = sender.post_json("/messages/outbound", &sms(&marker)).await;
    assert_eq!(sent.status, 202, "{}", sent.json);
    let path = format!("/messages/{}", sent.json["id"].as_str().unwrap());
    assert_refused(Operation::GetMessage, &sender.get(&path).await, 403);
    assert_eq!(reader.get(&path).await.status, 200);
}

#[tokio::test]
async fn a_revoked_key_is_refused_within_the_cache_time_and_use_is_recorded() {
    let key = new_key(&[Scope::MessagesRead]).await;
    let api = Api::with_key(Some(&key));
    let path = "/messages/01932c07-a0c4-7b6e-8000-000000000404";
    assert_eq!(api.get(path).await.status, 404, "the key works");
    let stored = store()
        .await
        .api_key(&key_hash(&key))
        .await
        .unwrap()
        .unwrap();
    assert!(stored.last_used_at.is_some(), "last_used_at recorded");

    let store = store().await;
    assert!(
        store
            .revoke_api_key(&key_hash(&key), time::OffsetDateTime::now_utc())
            .await
            .unwrap()
    );
    // The test stack's functions cache keys for 2 seconds (API_KEY_CACHE_SECONDS).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let answer = api.get(path).await;
        if answer.status == 401 {
            assert_eq!(answer.json["errors"][0]["field"], "Authorization");
            break;
        }
        assert_eq!(answer.status, 404);
        assert!(
            tokio::time::Instant::now() < deadline,
            "still accepted after 15 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn idempotency_keys_are_per_api_key() {
    let (first, second) = (
        Api::with_key(Some(&new_key(&[Scope::MessagesSend]).await)),
        Api::with_key(Some(&new_key(&[Scope::MessagesSend]).await)),
    );
    let idempotency_key = uuid::Uuid::new_v4().to_string();
    let body = sms(&marker());
    let a = first.post_outbound_with_key(&idempotency_key, &body).await;
    let b = second.post_outbound_with_key(&idempotency_key, &body).await;
    assert_eq!((a.status, b.status), (202, 202), "{} {}", a.json, b.json);
    assert_ne!(a.json["id"], b.json["id"], "two API keys, two requests");
    assert!(b.headers.get("idempotent-replayed").is_none());
    let again = first.post_outbound_with_key(&idempotency_key, &body).await;
    assert_eq!(again.status, 202);
    assert_eq!(again.json["id"], a.json["id"], "the same API key replays");
    assert_eq!(again.headers["idempotent-replayed"], "true");
}

#[tokio::test]
async fn webhooks_take_no_api_key() {
    let api = Api::with_key(None);
    let answer = api
        .send_raw(
            api.http()
                .post(api.url("/webhooks/twilio/status"))
                .form(&[("MessageSid", "SM0"), ("MessageStatus", "delivered")]),
        )
        .await;
    assert_eq!(
        answer.status, 403,
        "refused for its signature, not a key: {}",
        answer.text
    );
    assert_eq!(answer.json()["errors"][0]["field"], "X-Twilio-Signature");
}

/// `ALLOWED_SENDERS` through the outbound function's router with the real
/// adapters (the shared test stack allows every sender).
#[tokio::test]
async fn senders_outside_allowed_senders_get_422_naming_from_and_nothing_is_stored() {
    let (client, url) = private_queue().await;
    let key = new_key(&[Scope::MessagesSend]).await;
    let store: DynamoDbStore = store().await;
    let startup = shared::startup::Startup::load().await.unwrap();
    let router = http::outbound_router(
        store,
        SqsQueue::new(client.clone(), &url),
        Senders::parse("+18045550000,@usehatchapp.com")
            .unwrap()
            .into(),
        startup.authenticator(),
    );
    let marker = marker();
    let post = |body: Value| {
        lambda_http::http::Request::post("/messages/outbound")
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.to_string()))
            .unwrap()
    };
    let response = router.clone().oneshot(post(sms(&marker))).await.unwrap();
    assert_eq!(response.status(), 422);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["errors"][0]["field"], "from", "{body}");
    assert_eq!(stored_with_marker(&marker).await, 0, "nothing stored");

    let allowed = json!({"from": "ops@UseHatchApp.com", "to": "someone@example.com",
                         "type": "email", "body": marker});
    let response = router.oneshot(post(allowed)).await.unwrap();
    assert_eq!(response.status(), 202);
    client.delete_queue().queue_url(&url).send().await.unwrap();
}
