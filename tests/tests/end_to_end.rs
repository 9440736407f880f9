//! End to end over HTTP on the running local stack: API → DynamoDB + SQS →
//! bridge → delivery function → provider simulator, and back through the API.

use std::time::Duration;

use e2e_tests::{Api, Simulator, email, marker, phone, stored_with_marker};
use serde_json::{Value, json};

const SETTLE: Duration = Duration::from_secs(60);

/// Sent, or further: the simulator reports delivery (status callbacks, events)
/// shortly after it accepts a message.
fn settled(m: &Value) -> bool {
    matches!(m["status"].as_str(), Some("sent" | "delivered" | "failed"))
}

fn assert_sent(message: &Value) {
    assert!(
        matches!(message["status"].as_str(), Some("sent" | "delivered")),
        "{message}"
    );
}

/// The history's statuses up to and including `sent`, with whether each has an error.
fn history_until_sent(message: &Value) -> Vec<(&str, bool)> {
    let mut history = Vec::new();
    for h in message["history"].as_array().expect("history") {
        let status = h["status"].as_str().unwrap();
        history.push((status, h["error"].is_string()));
        if status == "sent" {
            break;
        }
    }
    history
}

async fn post_outbound(api: &Api, payload: Value) -> String {
    let answer = api.post_json("/messages/outbound", &payload).await;
    assert_eq!(answer.status, 202, "{}", answer.json);
    assert_eq!(answer.json["status"], "queued");
    assert_eq!(answer.json["direction"], "outbound");
    for field in ["from", "to", "type", "body", "attachments"] {
        assert_eq!(
            answer.json[field], payload[field],
            "{field} echoes the request"
        );
    }
    let id = answer.json["id"].as_str().expect("id").to_owned();
    assert_eq!(
        answer.headers["location"],
        format!("/messages/{id}").as_str()
    );
    assert!(answer.json["created_at"].is_string());
    id
}

#[tokio::test]
async fn sms_is_delivered_in_twilio_format() {
    let (api, sim) = (Api::new(), Simulator::new());
    let to = phone();
    let id = post_outbound(
        &api,
        json!({"from": "+18045551234", "to": to, "type": "sms", "body": "Hello & welcome",
               "attachments": null, "timestamp": "2024-11-01T14:00:00Z"}),
    )
    .await;
    let message = api.wait_for(&id, SETTLE, settled).await;
    assert_sent(&message);
    assert_eq!(message["attempts"], 1);
    let requests = sim.requests_to(&to).await;
    assert_eq!(requests.len(), 1, "{requests:?}");
    let request = &requests[0];
    assert_eq!(request["provider"], "twilio");
    assert_eq!(request["from"], "+18045551234");
    assert_eq!(request["body"], "Hello & welcome");
    assert_eq!(request["status"], 201);
    assert_eq!(
        message["provider_message_id"],
        request["provider_message_id"]
    );
    assert!(
        message["provider_message_id"]
            .as_str()
            .unwrap()
            .starts_with("SM")
    );
}

#[tokio::test]
async fn mms_sends_each_attachment_as_media_url() {
    let (api, sim) = (Api::new(), Simulator::new());
    let to = phone();
    let media = ["https://example.com/a.png", "https://example.com/b.gif"];
    let id = post_outbound(
        &api,
        json!({"from": "+18045551234", "to": to, "type": "mms", "body": "pictures", "attachments": media}),
    )
    .await;
    assert_sent(&api.wait_for(&id, SETTLE, settled).await);
    let requests = sim.requests_to(&to).await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["media_urls"], json!(media));
    let form: Vec<(String, String)> = serde_json::from_value(requests[0]["form"].clone()).unwrap();
    let media_fields: Vec<&str> = form
        .iter()
        .filter(|(k, _)| k == "MediaUrl")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(media_fields, media);
}

#[tokio::test]
async fn email_is_delivered_in_sendgrid_format() {
    let (api, sim) = (Api::new(), Simulator::new());
    let to = email();
    // The original README's example, to a fresh recipient.
    let id = post_outbound(
        &api,
        json!({"from": "user@usehatchapp.com", "to": to, "type": "email", "body": "Hello world!",
               "attachments": [], "timestamp": "2024-11-01T14:00:00Z"}),
    )
    .await;
    let message = api.wait_for(&id, SETTLE, settled).await;
    assert_sent(&message);
    let requests = sim.requests_to(&to).await;
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request["provider"], "sendgrid");
    assert_eq!(request["status"], 202);
    assert_eq!(request["json"]["from"]["email"], "user@usehatchapp.com");
    assert_eq!(
        request["json"]["personalizations"][0]["to"][0]["email"],
        to.as_str()
    );
    assert_eq!(request["json"]["content"][0]["value"], "Hello world!");
    assert_eq!(request["message_id"], id.as_str());
    assert_eq!(
        message["provider_message_id"],
        request["provider_message_id"]
    );
}

#[tokio::test]
async fn trailing_slash_routes_work() {
    let api = Api::new();
    let answer = api
        .post_json(
            "/messages/outbound/",
            &json!({"from": "+18045551234", "to": phone(), "type": "sms", "body": "slash"}),
        )
        .await;
    assert_eq!(answer.status, 202, "{}", answer.json);
    let id = answer.json["id"].as_str().unwrap();
    assert_eq!(api.get(&format!("/messages/{id}/")).await.status, 200);
    let answer = api
        .post_json(
            "/messages/inbound/",
            &json!({"from": "+18045551234", "to": "+12016661234", "type": "sms", "body": "slash",
                    "messaging_provider_id": uuid::Uuid::new_v4().to_string()}),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.json);
}

#[tokio::test]
async fn a_provider_500_is_retried_until_sent() {
    let (api, sim) = (Api::new(), Simulator::new());
    let to = phone();
    sim.fail_next(&to, 500, 1, None).await;
    let id = post_outbound(
        &api,
        json!({"from": "+18045551234", "to": to, "type": "sms", "body": "retry me"}),
    )
    .await;
    let message = api.wait_for(&id, SETTLE, settled).await;
    assert_sent(&message);
    assert_eq!(message["attempts"], 2);
    assert!(
        message["last_error"].as_str().unwrap().contains("500"),
        "{message}"
    );
    let statuses: Vec<u64> = sim
        .requests_to(&to)
        .await
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![500, 201]);
    assert_eq!(
        history_until_sent(&message),
        vec![
            ("queued", false),
            ("sending", false),
            ("queued", true),
            ("sending", false),
            ("sent", false)
        ],
        "{message}"
    );
}

#[tokio::test]
async fn a_provider_429_with_retry_after_is_retried() {
    let (api, sim) = (Api::new(), Simulator::new());
    let to = email();
    sim.fail_next(&to, 429, 1, Some("1")).await;
    let id = post_outbound(
        &api,
        json!({"from": "user@usehatchapp.com", "to": to, "type": "email", "body": "throttled"}),
    )
    .await;
    let message = api.wait_for(&id, SETTLE, settled).await;
    assert_sent(&message);
    let statuses: Vec<u64> = sim
        .requests_to(&to)
        .await
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![429, 202]);
}

#[tokio::test]
async fn a_provider_400_fails_without_retry() {
    let (api, sim) = (Api::new(), Simulator::new());
    let to = phone();
    sim.fail_next(&to, 400, 1, None).await;
    let id = post_outbound(
        &api,
        json!({"from": "+18045551234", "to": to, "type": "sms", "body": "rejected"}),
    )
    .await;
    let message = api.wait_for(&id, SETTLE, settled).await;
    assert_eq!(message["status"], "failed", "{message}");
    assert!(
        message["last_error"].as_str().unwrap().contains("400"),
        "{message}"
    );
    // Give a wrongful retry time to happen (retries here come after ≤ 2 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        sim.requests_to(&to).await.len(),
        1,
        "a rejected message is not sent again"
    );
    assert_eq!(
        api.get(&format!("/messages/{id}")).await.json["attempts"],
        1
    );
}

#[tokio::test]
async fn inbound_is_stored_once_per_provider_id() {
    let api = Api::new();
    let provider_id = format!("SM{}", uuid::Uuid::new_v4().simple());
    let payload = json!({"from": "+18045551234", "to": "+12016661234", "type": "sms",
                         "messaging_provider_id": provider_id, "body": "Incoming message",
                         "attachments": null, "timestamp": "2024-11-01T14:00:00Z"});
    let first = api.post_json("/messages/inbound", &payload).await;
    assert_eq!(first.status, 201, "{}", first.json);
    assert_eq!(first.json["status"], "received");
    assert_eq!(first.json["direction"], "inbound");
    assert_eq!(first.json["messaging_provider_id"], provider_id.as_str());
    let again = api.post_json("/messages/inbound", &payload).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json["id"], first.json["id"]);
    let id = first.json["id"].as_str().unwrap();
    let read = api.get(&format!("/messages/{id}")).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.json, first.json);
}

#[tokio::test]
async fn concurrent_inbound_posts_over_http_create_one_message() {
    let api = Api::new();
    let payload = json!({"from": "+18045551234", "to": "+12016661234", "type": "sms", "body": "race",
                         "messaging_provider_id": uuid::Uuid::new_v4().to_string()});
    let answers =
        futures::future::join_all((0..8).map(|_| api.post_json("/messages/inbound", &payload)))
            .await;
    let created = answers.iter().filter(|a| a.status == 201).count();
    assert_eq!(
        created,
        1,
        "statuses: {:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    assert!(answers.iter().all(|a| matches!(a.status, 200 | 201)));
    assert!(
        answers
            .iter()
            .all(|a| a.json["id"] == answers[0].json["id"])
    );
}

#[tokio::test]
async fn unknown_ids_are_404() {
    let api = Api::new();
    for id in ["01932c07-a0c4-7b6e-8000-000000000404", "not-an-id"] {
        let answer = api.get(&format!("/messages/{id}")).await;
        assert_eq!(answer.status, 404, "{id}");
        assert!(answer.json["errors"][0]["message"].is_string());
    }
}

/// Every kind of bad input gets its 4xx with the `errors` shape, and nothing is stored.
#[tokio::test]
async fn bad_input_is_rejected_and_nothing_is_stored() {
    let api = Api::new();
    let m = marker();
    let sms = |extra: Value| {
        let mut base =
            json!({"from": "+18045551234", "to": "+12016661234", "type": "sms", "body": m});
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/messages/outbound", sms(json!({"type": "fax"})), "type"),
        ("/messages/outbound", sms(json!({"to": "12345"})), "to"),
        ("/messages/outbound", sms(json!({"from": null})), "from"),
        ("/messages/outbound", sms(json!({"body": 42})), "body"),
        (
            "/messages/outbound",
            sms(json!({"attachments": ["https://example.com/a.png"]})),
            "attachments",
        ),
        (
            "/messages/outbound",
            sms(json!({"type": "mms", "attachments": []})),
            "attachments",
        ),
        (
            "/messages/outbound",
            sms(json!({"attachments": "https://example.com/a.png"})),
            "attachments",
        ),
        (
            "/messages/outbound",
            sms(json!({"timestamp": "yesterday"})),
            "timestamp",
        ),
        (
            "/messages/outbound",
            sms(json!({"body": format!("{m}{}", "x".repeat(1600))})),
            "body",
        ),
        (
            "/messages/outbound",
            sms(json!({"type": "email", "to": "not-an-address"})),
            "to",
        ),
        ("/messages/inbound", sms(json!({})), "messaging_provider_id"),
    ];
    for (path, payload, field) in cases {
        let answer = api.post_json(path, &payload).await;
        assert_eq!(answer.status, 422, "{path} {payload}: {}", answer.json);
        let fields: Vec<&str> = answer.json["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(
            fields.contains(&field),
            "{payload} should name {field}: {fields:?}"
        );
    }

    let url = format!("{}/messages/outbound", api.base);
    let raw = |body: String, content_type: &str| {
        api.http
            .post(&url)
            .header("content-type", content_type)
            .body(body)
    };
    let malformed = api
        .send(raw(format!("{{\"body\": \"{m}\""), "application/json"))
        .await;
    assert_eq!(malformed.status, 400, "{}", malformed.json);
    let wrong_type = api
        .send(raw(sms(json!({})).to_string(), "text/plain"))
        .await;
    assert_eq!(wrong_type.status, 415, "{}", wrong_type.json);
    let big = sms(
        json!({"type": "email", "to": "a@example.com", "body": format!("{m}{}", "x".repeat(300 * 1024))}),
    );
    let too_large = api.send(raw(big.to_string(), "application/json")).await;
    assert_eq!(too_large.status, 413, "{}", too_large.json);
    for answer in [&malformed, &wrong_type, &too_large] {
        assert!(
            answer.json["errors"][0]["message"].is_string(),
            "{}",
            answer.json
        );
    }
    assert_eq!(
        stored_with_marker(&m).await,
        0,
        "bad input must never be stored"
    );
}

#[tokio::test]
async fn idempotency_key_replays_the_first_answer() {
    let (api, sim) = (Api::new(), Simulator::new());
    let to = phone();
    let key = format!("order-{}", uuid::Uuid::new_v4());
    let payload = json!({"from": "+18045551234", "to": to, "type": "sms", "body": "exactly once"});
    let first = api.post_outbound_with_key(&key, &payload).await;
    assert_eq!(first.status, 202, "{}", first.json);
    let id = first.json["id"].as_str().unwrap().to_owned();
    api.wait_for(&id, SETTLE, settled).await;

    let again = api.post_outbound_with_key(&key, &payload).await;
    assert_eq!(again.status, 202);
    assert_eq!(again.json, first.json, "the first answer, verbatim");
    assert_eq!(
        again.headers["location"],
        format!("/messages/{id}").as_str()
    );
    assert_eq!(again.headers["idempotent-replayed"], "true");

    let changed = json!({"from": "+18045551234", "to": to, "type": "sms", "body": "changed"});
    let conflict = api.post_outbound_with_key(&key, &changed).await;
    assert_eq!(conflict.status, 409, "{}", conflict.json);
    assert_eq!(conflict.json["errors"][0]["field"], "Idempotency-Key");

    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sim.requests_to(&to).await.len(), 1, "sent once");
}

#[tokio::test]
async fn fifty_concurrent_posts_with_one_key_make_one_message() {
    let (api, sim) = (Api::new(), Simulator::new());
    let to = phone();
    let key = format!("burst-{}", uuid::Uuid::new_v4());
    let payload = json!({"from": "+18045551234", "to": to, "type": "sms", "body": "burst"});
    let answers =
        futures::future::join_all((0..50).map(|_| api.post_outbound_with_key(&key, &payload)))
            .await;
    assert!(
        answers.iter().all(|a| a.status == 202),
        "{:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    let id = answers[0].json["id"].as_str().unwrap().to_owned();
    assert!(
        answers.iter().all(|a| a.json["id"] == id.as_str()),
        "one message id for all"
    );
    api.wait_for(&id, SETTLE, settled).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sim.requests_to(&to).await.len(), 1, "delivered once");
}

#[tokio::test]
async fn a_malformed_idempotency_key_is_400() {
    let api = Api::new();
    let body = json!({"from": "+18045551234", "to": phone(), "type": "sms", "body": "x"});
    let answer = api.post_outbound_with_key(&"k".repeat(300), &body).await;
    assert_eq!(answer.status, 400, "{}", answer.json);
    assert_eq!(answer.json["errors"][0]["field"], "Idempotency-Key");
}
