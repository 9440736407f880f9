use std::time::Duration;

use provider_sim::{AppState, Config, router};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

const TWILIO: &str = "/2010-04-01/Accounts/ACtest/Messages.json";

struct Sim {
    base: String,
    http: Client,
}

impl Sim {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let app = router(AppState::new(&Config::default()));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            base,
            http: Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn twilio(&self, form: &[(&str, &str)]) -> reqwest::Response {
        let req = self
            .http
            .post(self.url(TWILIO))
            .basic_auth("ACtest", Some("test-token"));
        req.form(form).send().await.expect("twilio request")
    }

    async fn sendgrid(&self, body: &Value) -> reqwest::Response {
        let req = self
            .http
            .post(self.url("/v3/mail/send"))
            .bearer_auth("SG.test-key");
        req.json(body).send().await.expect("sendgrid request")
    }

    async fn get_json(&self, path: &str) -> Value {
        let resp = self.http.get(self.url(path)).send().await.expect("get");
        resp.json().await.expect("json")
    }

    async fn rule(&self, rule: Value) -> reqwest::Response {
        let resp = self
            .http
            .post(self.url("/_sim/rules"))
            .json(&rule)
            .send()
            .await;
        resp.expect("rule request")
    }
}

fn mail(to: &str) -> Value {
    json!({
        "personalizations": [{"to": [{"email": to}]}],
        "from": {"email": "noreply@example.com"},
        "subject": "Hi",
        "content": [{"type": "text/plain", "value": "Hello there"}],
        "custom_args": {"message_id": "msg-42"},
    })
}

#[tokio::test]
async fn rejects_bad_credentials() {
    let sim = Sim::start().await;
    let form = [
        ("To", "+15550000001"),
        ("From", "+15550009999"),
        ("Body", "x"),
    ];
    let wrong_token = sim
        .http
        .post(sim.url(TWILIO))
        .basic_auth("ACtest", Some("nope"));
    let resp = wrong_token.form(&form).send().await.expect("send");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["code"], 20003);
    assert_eq!(body["message"], "Authenticate");
    assert_eq!(body["status"], 401);

    let other_account = sim.url("/2010-04-01/Accounts/ACother/Messages.json");
    let req = sim
        .http
        .post(other_account)
        .basic_auth("ACother", Some("test-token"));
    let resp = req.form(&form).send().await.expect("send");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let req = sim
        .http
        .post(sim.url("/v3/mail/send"))
        .bearer_auth("SG.wrong");
    let resp = req.json(&mail("a@example.com")).send().await.expect("send");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.expect("json");
    let expected = "The provided authorization grant is invalid, expired, or revoked";
    assert_eq!(body["errors"][0]["message"], expected);
    assert_eq!(body["errors"][0]["field"], Value::Null);

    assert_eq!(sim.get_json("/_sim/requests").await, json!([]));
}

#[tokio::test]
async fn twilio_success_is_recorded_with_media() {
    let sim = Sim::start().await;
    let callback = "https://api.example.com/delivery?message_id=abc-123&x=1";
    let resp = sim
        .twilio(&[
            ("To", "+15550000002"),
            ("From", "+15550009999"),
            ("MediaUrl", "https://example.com/a.png"),
            ("MediaUrl", "https://example.com/b.png"),
            ("StatusCallback", callback),
        ])
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let msg: Value = resp.json().await.expect("json");
    let sid = msg["sid"].as_str().expect("sid");
    assert!(sid.starts_with("SM") && sid.len() == 34, "{sid}");
    assert!(
        sid[2..]
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    );
    assert_eq!(msg["status"], "queued");
    assert_eq!(msg["num_media"], "2");
    assert_eq!(msg["to"], "+15550000002");
    assert_eq!(
        msg["uri"],
        format!("/2010-04-01/Accounts/ACtest/Messages/{sid}.json")
    );
    assert!(
        msg["date_created"]
            .as_str()
            .expect("date")
            .ends_with(" +0000")
    );

    // An unencoded `+` in the filter decodes to a space; the sim accepts it.
    let records = sim
        .get_json("/_sim/requests?to=+15550000002&provider=twilio")
        .await;
    let record = &records[0];
    assert_eq!(records.as_array().map(Vec::len), Some(1));
    assert_eq!(record["status"], 201);
    assert_eq!(record["provider_message_id"], sid);
    assert_eq!(record["message_id"], "abc-123");
    assert_eq!(
        record["media_urls"],
        json!(["https://example.com/a.png", "https://example.com/b.png"])
    );
    assert_eq!(
        record["form"][2],
        json!(["MediaUrl", "https://example.com/a.png"])
    );
    assert!(
        record["headers"]["authorization"]
            .as_str()
            .is_some_and(|a| a.starts_with("Basic "))
    );
    assert_eq!(
        sim.get_json("/_sim/requests?provider=sendgrid").await,
        json!([])
    );
}

#[tokio::test]
async fn sendgrid_success_is_recorded() {
    let sim = Sim::start().await;
    let resp = sim.sendgrid(&mail("ann@example.com")).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let id = resp.headers()["x-message-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(id.len(), 22);
    assert!(
        id.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    );
    assert!(resp.bytes().await.expect("body").is_empty());

    let records = sim.get_json("/_sim/requests?to=ann@example.com").await;
    let record = &records[0];
    assert_eq!(record["provider"], "sendgrid");
    assert_eq!(record["status"], 202);
    assert_eq!(record["provider_message_id"], id);
    assert_eq!(record["message_id"], "msg-42");
    assert_eq!(
        (record["subject"].as_str(), record["body"].as_str()),
        (Some("Hi"), Some("Hello there"))
    );
    assert_eq!(record["json"]["from"]["email"], "noreply@example.com");
}

#[tokio::test]
async fn validation_errors() {
    let sim = Sim::start().await;
    let cases: [(&[(&str, &str)], u32); 3] = [
        (&[("From", "+15550009999"), ("Body", "x")], 21604),
        (&[("To", "+15550000003"), ("Body", "x")], 21603),
        (&[("To", "+15550000003"), ("From", "+15550009999")], 21602),
    ];
    for (form, code) in cases {
        let resp = sim.twilio(form).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["code"], code);
        assert_eq!(
            body["more_info"],
            format!("https://www.twilio.com/docs/errors/{code}")
        );
    }

    let broken = [
        ("/personalizations/0/to", "personalizations.0.to"),
        ("/from", "from.email"),
        ("/subject", "subject"),
        ("/content", "content"),
    ];
    for (pointer, field) in broken {
        let mut body = mail("bob@example.com");
        *body.pointer_mut(pointer).expect("pointer") = Value::Null;
        let resp = sim.sendgrid(&body).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let err: Value = resp.json().await.expect("json");
        assert_eq!(err["errors"][0]["field"], field);
    }
    let stats = sim.get_json("/_sim/stats").await;
    assert_eq!(stats["by_status"]["400"], 7);
}

#[tokio::test]
async fn rules_fail_in_order_then_succeed() {
    let sim = Sim::start().await;
    let to = "+15550000004";
    let resp = sim.rule(json!({"to": to, "status": 500, "times": 2})).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let form = [("To", to), ("From", "+15550009999"), ("Body", "x")];
    for _ in 0..2 {
        let resp = sim.twilio(&form).await;
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["code"], 20500);
    }
    assert_eq!(sim.twilio(&form).await.status(), StatusCode::CREATED);
    // Another recipient is unaffected by the rule.
    let other = [
        ("To", "+15550000005"),
        ("From", "+15550009999"),
        ("Body", "x"),
    ];
    assert_eq!(sim.twilio(&other).await.status(), StatusCode::CREATED);

    let stats = sim.get_json("/_sim/stats").await;
    assert_eq!(
        stats,
        json!({"total": 4, "by_status": {"500": 2, "201": 2}, "in_flight": 0})
    );
    let statuses: Vec<Value> = sim
        .get_json(&format!("/_sim/requests?to={}", to.replace('+', "%2B")))
        .await
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["status"].clone())
        .collect();
    assert_eq!(statuses, [json!(500), json!(500), json!(201)]);
}

#[tokio::test]
async fn throttle_rule_sends_retry_after_and_custom_body() {
    let sim = Sim::start().await;
    let custom = json!({"errors": [{"message": "slow down", "field": null, "help": null}]});
    let rule = json!({"to": "cat@example.com", "status": 429, "retry_after": "2", "body": custom});
    assert_eq!(sim.rule(rule).await.status(), StatusCode::CREATED);
    // A request failing validation does not use up the rule.
    let mut invalid = mail("cat@example.com");
    invalid["subject"] = Value::Null;
    assert_eq!(
        sim.sendgrid(&invalid).await.status(),
        StatusCode::BAD_REQUEST
    );
    let resp = sim.sendgrid(&mail("cat@example.com")).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "2");
    assert_eq!(resp.json::<Value>().await.expect("json"), custom);
    assert_eq!(
        sim.sendgrid(&mail("cat@example.com")).await.status(),
        StatusCode::ACCEPTED
    );

    let bad = sim
        .rule(json!({"to": "cat@example.com", "status": 204}))
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn runtime_config_throttles_and_hangs() {
    let sim = Sim::start().await;
    let put = |body: Value| sim.http.put(sim.url("/_sim/config")).json(&body).send();
    let resp = put(json!({"throttle_rate": 1.0})).await.expect("put");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(sim.get_json("/_sim/config").await["throttle_rate"], 1.0);
    let resp = sim.sendgrid(&mail("dan@example.com")).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(
        put(json!({"fail_rate": 2.0})).await.expect("put").status(),
        StatusCode::BAD_REQUEST
    );

    put(json!({"throttle_rate": 0.0, "hang_rate": 1.0, "hang_ms": 300}))
        .await
        .expect("put");
    let req = sim
        .http
        .post(sim.url("/v3/mail/send"))
        .bearer_auth("SG.test-key");
    let err = req
        .json(&mail("eve@example.com"))
        .timeout(Duration::from_millis(100))
        .send()
        .await;
    assert!(err.is_err_and(|e| e.is_timeout()));
    assert_eq!(sim.get_json("/_sim/stats").await["in_flight"], 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let records = sim.get_json("/_sim/requests?to=eve@example.com").await;
    assert_eq!(records[0]["status"], 500);
    assert_eq!(sim.get_json("/_sim/stats").await["in_flight"], 0);

    let resp = sim
        .http
        .delete(sim.url("/_sim/requests"))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(sim.get_json("/_sim/stats").await["total"], 0);
}
