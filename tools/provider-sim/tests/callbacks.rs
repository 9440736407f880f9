//! The simulator's signed callbacks reach a receiver and pass the service's own
//! signature checks.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus, Uri};
use axum::routing::post;
use provider_sim::{AppState, Config, DEV_SENDGRID_PUBLIC_KEY, Faults, router};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use shared::adapters::sendgrid_webhook::{self, EventWebhookKey};
use shared::adapters::twilio_webhook;
use shared::domain::ReportedOutcome;
use time::OffsetDateTime;
use tokio::sync::mpsc;

const TWILIO: &str = "/2010-04-01/Accounts/ACtest/Messages.json";

/// One request the receiver got.
#[derive(Debug)]
struct Received {
    path_and_query: String,
    headers: HeaderMap,
    body: Bytes,
}

/// A tiny HTTP server recording every POST; answers 200 (or 500 on `/fail`).
async fn receiver() -> (String, mpsc::UnboundedReceiver<Received>) {
    let (tx, rx) = mpsc::unbounded_channel();
    async fn record(
        State(tx): State<mpsc::UnboundedSender<Received>>,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> AxumStatus {
        let path_and_query = uri
            .path_and_query()
            .map(ToString::to_string)
            .unwrap_or_default();
        let status = if path_and_query.starts_with("/fail") {
            AxumStatus::INTERNAL_SERVER_ERROR
        } else {
            AxumStatus::OK
        };
        let _ = tx.send(Received {
            path_and_query,
            headers,
            body,
        });
        status
    }
    let app = Router::new().route("/{*path}", post(record)).with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, rx)
}

async fn start_sim(config: Config) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let app = router(AppState::new(&config));
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Received>) -> Received {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a callback within 10 s")
        .expect("receiver running")
}

/// `GET /_sim/callbacks` once it lists `count` callbacks (each is recorded when its
/// answer came, a moment after the receiver saw it).
async fn callback_log(http: &Client, sim: &str, count: usize) -> Vec<Value> {
    let mut log = Vec::new();
    for _ in 0..200 {
        let answer: Value = http
            .get(format!("{sim}/_sim/callbacks"))
            .send()
            .await
            .expect("callbacks")
            .json()
            .await
            .expect("json");
        log = answer.as_array().cloned().unwrap_or_default();
        if log.len() >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(log.len(), count, "{log:?}");
    log
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn config(events_url: Option<String>) -> Config {
    Config {
        faults: Faults {
            callback_delay_ms: 20,
            callback_attempts: 1,
            ..Faults::default()
        },
        sendgrid_events_url: events_url,
        ..Config::default()
    }
}

async fn send_sms(http: &Client, sim: &str, to: &str, callback: &str) -> String {
    let form = [
        ("To", to),
        ("From", "+15550009999"),
        ("Body", "hi"),
        ("StatusCallback", callback),
    ];
    let resp = http
        .post(format!("{sim}{TWILIO}"))
        .basic_auth("ACtest", Some("test-token"))
        .form(&form)
        .send()
        .await
        .expect("twilio request");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let message: Value = resp.json().await.expect("json");
    message["sid"].as_str().expect("sid").to_owned()
}

/// Checks the Twilio callback's signature with the service's own check and returns
/// its parameters.
fn verified_twilio_params(base: &str, received: &Received) -> Vec<(String, String)> {
    let url = format!("{base}{}", received.path_and_query);
    let params = twilio_webhook::parse_form(&received.body);
    let signature = header(&received.headers, twilio_webhook::SIGNATURE_HEADER);
    assert!(
        twilio_webhook::verify_signature("test-token", &url, &params, signature),
        "bad signature on {url}: {params:?}"
    );
    assert!(!twilio_webhook::verify_signature(
        "other-token",
        &url,
        &params,
        signature
    ));
    assert_eq!(
        header(&received.headers, "content-type"),
        Some("application/x-www-form-urlencoded")
    );
    params
}

fn param<'p>(params: &'p [(String, String)], name: &str) -> Option<&'p str> {
    params
        .iter()
        .find_map(|(k, v)| (k == name).then_some(v.as_str()))
}

#[tokio::test]
async fn twilio_status_callbacks_are_signed() {
    let (base, mut rx) = receiver().await;
    let sim = start_sim(config(None)).await;
    let http = Client::new();
    let callback = format!("{base}/twilio/status?message_id=m-1&x=a%20b");
    let sid = send_sms(&http, &sim, "+15550000001", &callback).await;

    let mut reports = Vec::new();
    for expected in ["sent", "delivered"] {
        let received = next(&mut rx).await;
        assert_eq!(
            received.path_and_query,
            "/twilio/status?message_id=m-1&x=a%20b"
        );
        let params = verified_twilio_params(&base, &received);
        for (name, value) in [
            ("MessageSid", sid.as_str()),
            ("SmsSid", &sid),
            ("AccountSid", "ACtest"),
            ("From", "+15550009999"),
            ("To", "+15550000001"),
            ("MessageStatus", expected),
            ("SmsStatus", expected),
            ("ApiVersion", "2010-04-01"),
        ] {
            assert_eq!(param(&params, name), Some(value), "{name}");
        }
        assert_eq!(param(&params, "ErrorCode"), None);
        reports.push(twilio_webhook::status_report(&params).expect("status report"));
    }
    let outcomes: Vec<_> = reports.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        [ReportedOutcome::InProgress, ReportedOutcome::Delivered]
    );
    assert_eq!(
        reports[1].provider_message_id.as_deref(),
        Some(sid.as_str())
    );

    // All undelivered from now on, set at run time.
    let resp = http
        .put(format!("{sim}/_sim/config"))
        .json(&json!({"undelivered_ratio": 1.0, "callback_delay_ms": 5}))
        .send()
        .await
        .expect("config");
    assert_eq!(resp.status(), StatusCode::OK);
    let config: Value = resp.json().await.expect("json");
    assert_eq!(
        (&config["undelivered_ratio"], &config["callback_delay_ms"]),
        (&json!(1.0), &json!(5))
    );
    let sid = send_sms(&http, &sim, "+15550000002", &callback).await;
    assert_eq!(
        param(
            &verified_twilio_params(&base, &next(&mut rx).await),
            "MessageStatus"
        ),
        Some("sent")
    );
    let params = verified_twilio_params(&base, &next(&mut rx).await);
    assert_eq!(param(&params, "MessageStatus"), Some("undelivered"));
    assert_eq!(param(&params, "ErrorCode"), Some("30003"));
    let report = twilio_webhook::status_report(&params).expect("status report");
    assert_eq!(report.outcome, ReportedOutcome::Failed);
    assert_eq!(report.provider_message_id.as_deref(), Some(sid.as_str()));
    assert_eq!(
        report.detail.as_deref(),
        Some("undelivered (ErrorCode 30003)")
    );

    let log = callback_log(&http, &sim, 4).await;
    assert!(log.iter().all(|r| r["kind"] == "twilio_status"
        && r["status"] == 200
        && r["url"] == callback.as_str()));
    assert_eq!(log[3]["statuses"], json!(["undelivered"]));
    assert_eq!(log[3]["provider_message_id"], sid);
}

#[tokio::test]
async fn sendgrid_events_are_signed() {
    let (base, mut rx) = receiver().await;
    let events_url = format!("{base}/sendgrid/events");
    let sim = start_sim(config(Some(events_url.clone()))).await;
    let http = Client::new();
    let mail = json!({
        "personalizations": [{"to": [{"email": "ann@example.com"}],
                              "custom_args": {"tenant": "t-1"}}],
        "from": {"email": "noreply@example.com"},
        "subject": "Hi",
        "content": [{"type": "text/plain", "value": "Hello there"}],
        "custom_args": {"message_id": "msg-42"},
    });
    let resp = http
        .post(format!("{sim}/v3/mail/send"))
        .bearer_auth("SG.test-key")
        .json(&mail)
        .send()
        .await
        .expect("sendgrid request");
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let x_message_id = resp.headers()["x-message-id"]
        .to_str()
        .expect("ascii")
        .to_owned();

    let key = EventWebhookKey::parse(DEV_SENDGRID_PUBLIC_KEY).expect("dev key");
    let mut event_ids = Vec::new();
    for expected in ["processed", "delivered"] {
        let received = next(&mut rx).await;
        assert_eq!(received.path_and_query, "/sendgrid/events");
        assert_eq!(
            header(&received.headers, "content-type"),
            Some("application/json")
        );
        let verified = sendgrid_webhook::verify_event_signature(
            &key,
            header(&received.headers, sendgrid_webhook::SIGNATURE_HEADER),
            header(&received.headers, sendgrid_webhook::TIMESTAMP_HEADER),
            &received.body,
            OffsetDateTime::now_utc(),
            Duration::from_secs(300),
        );
        assert_eq!(verified, Ok(()));
        let events: Value = serde_json::from_slice(&received.body).expect("json");
        let event = &events[0];
        assert_eq!(event["event"], expected);
        assert_eq!(event["email"], "ann@example.com");
        assert_eq!(event["tenant"], "t-1");
        assert_eq!(
            event["sg_message_id"],
            format!("{x_message_id}.filter0001.1.0")
        );
        assert!(event["timestamp"].as_i64().is_some());

        let reports = sendgrid_webhook::parse_events(&received.body).expect("events");
        assert_eq!(reports.len(), 1);
        let report = &reports[0];
        assert_eq!(report.provider_status, expected);
        assert_eq!(report.message_id.as_deref(), Some("msg-42"));
        assert_eq!(
            report.provider_message_id.as_deref(),
            Some(x_message_id.as_str())
        );
        event_ids.push(report.event_id.clone().expect("sg_event_id"));
    }
    assert_ne!(event_ids[0], event_ids[1]);

    // Bounces, at run time; a receiver refusing is recorded, and nothing is retried.
    http.put(format!("{sim}/_sim/config"))
        .json(&json!({"undelivered_ratio": 1.0}))
        .send()
        .await
        .expect("config");
    let resp = http
        .post(format!("{sim}/v3/mail/send"))
        .bearer_auth("SG.test-key")
        .json(&mail)
        .send()
        .await
        .expect("sendgrid request");
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    next(&mut rx).await;
    let bounce = next(&mut rx).await;
    let reports = sendgrid_webhook::parse_events(&bounce.body).expect("events");
    assert_eq!(reports[0].outcome, ReportedOutcome::Failed);
    assert_eq!(reports[0].provider_status, "bounce");
}

#[tokio::test]
async fn failed_callbacks_are_recorded_and_do_not_disturb_sends() {
    let (base, mut rx) = receiver().await;
    // Nothing listens on port 9 of localhost.
    let sim = start_sim(config(Some("http://127.0.0.1:9/events".into()))).await;
    let http = Client::new();

    // The receiver answers 500; no StatusCallback, no callback.
    send_sms(&http, &sim, "+15550000003", &format!("{base}/fail")).await;
    let resp = http
        .post(format!("{sim}{TWILIO}"))
        .basic_auth("ACtest", Some("test-token"))
        .form(&[
            ("To", "+15550000004"),
            ("From", "+15550009999"),
            ("Body", "x"),
        ])
        .send()
        .await
        .expect("twilio request");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let mail = json!({
        "personalizations": [{"to": [{"email": "bob@example.com"}]}],
        "from": {"email": "noreply@example.com"},
        "subject": "Hi",
        "content": [{"type": "text/plain", "value": "Hello"}],
    });
    let resp = http
        .post(format!("{sim}/v3/mail/send"))
        .bearer_auth("SG.test-key")
        .json(&mail)
        .send()
        .await
        .expect("sendgrid request");
    assert_eq!(resp.status(), StatusCode::ACCEPTED);

    for _ in 0..2 {
        assert!(next(&mut rx).await.path_and_query.starts_with("/fail"));
    }
    // Two Twilio callbacks answered 500, two SendGrid posts with no answer.
    let log = callback_log(&http, &sim, 4).await;
    let twilio: Vec<_> = log
        .iter()
        .filter(|r| r["kind"] == "twilio_status")
        .collect();
    assert!(twilio.iter().all(|r| r["status"] == 500));
    let sendgrid: Vec<_> = log
        .iter()
        .filter(|r| r["kind"] == "sendgrid_events")
        .collect();
    assert_eq!(sendgrid.len(), 2);
    assert!(
        sendgrid
            .iter()
            .all(|r| r["status"].is_null() && r["error"].is_string())
    );
    assert!(rx.try_recv().is_err(), "no callback without StatusCallback");

    let resp = http
        .delete(format!("{sim}/_sim/callbacks"))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn refused_callbacks_are_tried_again_up_to_the_configured_attempts() {
    let (base, mut rx) = receiver().await;
    let mut config = config(None);
    config.faults.callback_attempts = 3;
    let sim = start_sim(config).await;
    let http = Client::new();

    send_sms(&http, &sim, "+15550000005", &format!("{base}/fail")).await;

    // `sent` and `delivered`, each answered 500 three times.
    for _ in 0..6 {
        assert!(next(&mut rx).await.path_and_query.starts_with("/fail"));
    }
    let log = callback_log(&http, &sim, 2).await;
    assert!(log.iter().all(|r| r["status"] == 500), "{log:?}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(rx.try_recv().is_err(), "no fourth attempt");
}
