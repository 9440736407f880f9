//! The provider webhooks on the running local stack: signed Twilio and SendGrid
//! requests are taken, forged ones refused with nothing stored, and reports move
//! messages forward only, whatever order they arrive in.

use std::time::Duration;

use e2e_tests::{
    Api, RawAnswer, claim_for_delivery, email, phone, queued_message, sent_message,
    twilio_auth_token,
};
use serde_json::{Value, json};
use shared::adapters::twilio_webhook::EMPTY_TWIML;
use shared::domain::Channel;
use time::OffsetDateTime;

const OUR_NUMBER: &str = "+18045551234";

fn sid() -> String {
    format!("SM{}", uuid::Uuid::new_v4().simple())
}

fn assert_twiml(answer: &RawAnswer) {
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.headers["content-type"], "text/xml");
    assert_eq!(answer.text, EMPTY_TWIML);
}

/// The messages of `participant`'s only conversation (none: empty).
async fn thread_of(api: &Api, participant: &str) -> Vec<Value> {
    let list = api
        .send(
            api.http()
                .get(api.url("/conversations"))
                .query(&[("participant", participant)]),
        )
        .await;
    assert_eq!(list.status, 200, "{}", list.json);
    let conversations = list.json["conversations"].as_array().unwrap().clone();
    assert!(conversations.len() <= 1, "{}", list.json);
    let Some(conversation) = conversations.first() else {
        return Vec::new();
    };
    let id = conversation["id"].as_str().unwrap();
    let page = api.get(&format!("/conversations/{id}/messages")).await;
    assert_eq!(page.status, 200, "{}", page.json);
    page.json["messages"].as_array().unwrap().clone()
}

async fn message(api: &Api, id: &str) -> Value {
    let answer = api.get(&format!("/messages/{id}")).await;
    assert_eq!(answer.status, 200, "{}", answer.json);
    answer.json
}

#[tokio::test]
async fn a_signed_twilio_sms_is_stored_once_and_answered_with_empty_twiml() {
    let (api, token) = (Api::new(), twilio_auth_token().await);
    let (from, sid) = (phone(), sid());
    let params = [
        ("MessageSid", sid.as_str()),
        ("AccountSid", "ACtest"),
        ("From", from.as_str()),
        ("To", OUR_NUMBER),
        ("Body", "Hi from a phone"),
        ("NumMedia", "0"),
    ];
    assert_twiml(
        &api.post_twilio("/webhooks/twilio/messages", &params, Some(&token))
            .await,
    );
    // Twilio retries: the same MessageSid again is the same message.
    assert_twiml(
        &api.post_twilio("/webhooks/twilio/messages", &params, Some(&token))
            .await,
    );
    let thread = thread_of(&api, &from).await;
    assert_eq!(thread.len(), 1, "{thread:?}");
    let m = &thread[0];
    assert_eq!(m["direction"], "inbound");
    assert_eq!(m["type"], "sms");
    assert_eq!(m["from"], from.as_str());
    assert_eq!(m["to"], OUR_NUMBER);
    assert_eq!(m["body"], "Hi from a phone");
    assert_eq!(m["messaging_provider_id"], sid.as_str());
    assert_eq!(m["status"], "received");
}

/// An API caller who posts an inbound message under a Twilio sid first does
/// not turn Twilio's real message away, nor get it handed back.
#[tokio::test]
async fn an_api_inbound_id_does_not_block_the_twilio_message_with_that_sid() {
    let (api, token) = (Api::new(), twilio_auth_token().await);
    let sid = sid();
    let (squatter, sender) = (phone(), phone());
    let planted = api
        .post_json(
            "/messages/inbound",
            &json!({"from": squatter, "to": OUR_NUMBER, "type": "sms", "body": "planted",
                    "messaging_provider_id": sid, "attachments": null,
                    "timestamp": "2024-11-01T14:00:00Z"}),
        )
        .await;
    assert_eq!(planted.status, 201, "{}", planted.json);
    let params = [
        ("MessageSid", sid.as_str()),
        ("AccountSid", "ACtest"),
        ("From", sender.as_str()),
        ("To", OUR_NUMBER),
        ("Body", "the real one"),
        ("NumMedia", "0"),
    ];
    assert_twiml(
        &api.post_twilio("/webhooks/twilio/messages", &params, Some(&token))
            .await,
    );
    let thread = thread_of(&api, &sender).await;
    assert_eq!(thread.len(), 1, "Twilio's message is stored: {thread:?}");
    assert_eq!(thread[0]["body"], "the real one");
    assert_ne!(thread[0]["id"], planted.json["id"]);
    // And the other way round: the API's retry still finds the API's message.
    let retried = api
        .post_json(
            "/messages/inbound",
            &json!({"from": squatter, "to": OUR_NUMBER, "type": "sms", "body": "planted",
                    "messaging_provider_id": sid, "attachments": null,
                    "timestamp": "2024-11-01T14:00:00Z"}),
        )
        .await;
    assert_eq!(retried.status, 200, "{}", retried.json);
    assert_eq!(retried.json["id"], planted.json["id"]);
}

#[tokio::test]
async fn twilio_mms_media_urls_become_attachments() {
    let (api, token) = (Api::new(), twilio_auth_token().await);
    let from = phone();
    let answer = api
        .post_twilio(
            "/webhooks/twilio/messages",
            &[
                ("MessageSid", &sid()),
                ("From", &from),
                ("To", OUR_NUMBER),
                ("Body", ""),
                ("NumMedia", "2"),
                ("MediaUrl0", "https://api.twilio.com/media/one.jpg"),
                ("MediaUrl1", "https://api.twilio.com/media/two.png"),
            ],
            Some(&token),
        )
        .await;
    assert_twiml(&answer);
    let thread = thread_of(&api, &from).await;
    assert_eq!(thread.len(), 1);
    assert_eq!(thread[0]["type"], "mms");
    assert_eq!(
        thread[0]["attachments"],
        json!([
            "https://api.twilio.com/media/one.jpg",
            "https://api.twilio.com/media/two.png"
        ])
    );
}

#[tokio::test]
async fn forged_twilio_webhooks_are_refused_and_store_nothing() {
    let (api, token) = (Api::new(), twilio_auth_token().await);
    let from = phone();
    let sid = sid();
    let params = [
        ("MessageSid", sid.as_str()),
        ("From", from.as_str()),
        ("To", OUR_NUMBER),
        ("Body", "forged"),
    ];
    let url = api.url("/webhooks/twilio/messages");
    let owned: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let sign = |token: &str, url: &str, params: &[(String, String)]| {
        shared::adapters::twilio_webhook::signature(token, url, params)
    };
    let mut tampered = owned.clone();
    tampered[3].1 = "tampered after signing".to_owned();
    let forgeries = [
        ("no signature", None),
        ("another token", Some(sign("not-the-token", &url, &owned))),
        (
            "another URL",
            Some(sign(
                &token,
                "https://example.com/webhooks/twilio/messages",
                &owned,
            )),
        ),
        ("garbage", Some("bm90IGEgc2lnbmF0dXJl".to_owned())),
    ];
    for (what, signature) in forgeries {
        let mut request = api.http().post(&url).form(&owned);
        if let Some(signature) = signature {
            request = request.header("X-Twilio-Signature", signature);
        }
        let answer = api.send_raw(request).await;
        assert_eq!(answer.status, 403, "{what}: {}", answer.text);
        assert!(
            !answer.text.contains("http"),
            "{what}: the 403 does not echo the URL it checked: {}",
            answer.text
        );
        assert_eq!(
            answer.json()["errors"][0]["field"],
            "X-Twilio-Signature",
            "{what}"
        );
    }
    // Signed, then a field changed.
    let answer = api
        .send_raw(
            api.http()
                .post(&url)
                .form(&tampered)
                .header("X-Twilio-Signature", sign(&token, &url, &owned)),
        )
        .await;
    assert_eq!(answer.status, 403, "{}", answer.text);
    // A forged status callback moves nothing either.
    let sent = sent_message(Channel::Sms, OUR_NUMBER, &phone(), &self::sid()).await;
    let pid = sent.id.clone();
    let answer = api
        .post_twilio(
            "/webhooks/twilio/status",
            &[("MessageSid", &pid), ("MessageStatus", "delivered")],
            Some("not-the-token"),
        )
        .await;
    assert_eq!(answer.status, 403, "{}", answer.text);
    assert_eq!(message(&api, &sent.id).await["status"], "sent");
    assert!(thread_of(&api, &from).await.is_empty(), "nothing stored");
}

async fn post_status(api: &Api, token: &str, sid: &str, status: &str) -> RawAnswer {
    let mut params = vec![
        ("MessageSid", sid),
        ("SmsSid", sid),
        ("AccountSid", "ACtest"),
        ("MessageStatus", status),
    ];
    if status == "undelivered" {
        params.push(("ErrorCode", "30003"));
    }
    api.post_twilio("/webhooks/twilio/status", &params, Some(token))
        .await
}

#[tokio::test]
async fn twilio_status_callbacks_only_move_a_message_forward() {
    let (api, token) = (Api::new(), twilio_auth_token().await);

    // delivered, then a late "sent" and a contradicting "undelivered": delivered.
    let sid_a = sid();
    let a = sent_message(Channel::Sms, OUR_NUMBER, &phone(), &sid_a).await;
    for status in ["delivered", "sent", "queued", "undelivered"] {
        assert_twiml(&post_status(&api, &token, &sid_a, status).await);
    }
    let a = message(&api, &a.id).await;
    assert_eq!(a["status"], "delivered", "{a}");
    assert_eq!(
        history_statuses(&a),
        ["queued", "sending", "sent", "delivered"],
        "{a}"
    );

    // undelivered first, then a late "delivered": failed, with Twilio's error code.
    let sid_b = sid();
    let b = sent_message(Channel::Mms, OUR_NUMBER, &phone(), &sid_b).await;
    for status in ["undelivered", "delivered"] {
        assert_twiml(&post_status(&api, &token, &sid_b, status).await);
    }
    let b = message(&api, &b.id).await;
    assert_eq!(b["status"], "failed", "{b}");
    assert!(b["last_error"].as_str().unwrap().contains("30003"), "{b}");

    // A callback about a message we never sent.
    let answer = post_status(&api, &token, &sid(), "delivered").await;
    assert_eq!(answer.status, 404, "{}", answer.text);
    assert_eq!(answer.json()["errors"][0]["field"], "MessageSid");
}

/// The provider's callback can come as soon as it has answered, before the delivery
/// function has recorded `sent`: the provider id is stored first, so the callback
/// finds the message (still `sending`) and moves it on, and the late `sent` write
/// yields instead of moving it back.
#[tokio::test]
async fn a_status_callback_that_overtakes_the_sent_write_is_applied() {
    use shared::ports::{Completion, DeliveryStore, StoreError};

    let (api, token) = (Api::new(), twilio_auth_token().await);
    let store = e2e_tests::store().await;
    let queued = queued_message(Channel::Sms, OUR_NUMBER, &phone()).await;
    let lease = claim_for_delivery(&queued.id).await;
    let now = OffsetDateTime::now_utc();
    let provider_sid = sid();
    let sent = Completion::Sent {
        provider: shared::domain::ProviderKind::Twilio,
        provider_message_id: Some(provider_sid.clone()),
    };
    // Before any `sent` write the provider's id is unknown: the callback finds nothing.
    assert_eq!(
        post_status(&api, &token, &provider_sid, "delivered")
            .await
            .status,
        404
    );
    // A `sent` write that fails its condition (another lease) still leaves the
    // provider's id behind, as the first half of the real holder's write does.
    let stranger = uuid::Uuid::new_v4().to_string();
    assert!(matches!(
        store.complete(&queued.id, &stranger, &sent, now).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(message(&api, &queued.id).await["status"], "sending");

    assert_twiml(&post_status(&api, &token, &provider_sid, "delivered").await);
    assert_eq!(message(&api, &queued.id).await["status"], "delivered");
    // The holder's `sent` write comes late: it yields (the delivery function then
    // acknowledges the record) and the message stays delivered.
    assert!(matches!(
        store.complete(&queued.id, &lease.id, &sent, now).await,
        Err(StoreError::Conflict(_))
    ));
    let stored = message(&api, &queued.id).await;
    assert_eq!(stored["status"], "delivered", "{stored}");
    assert_eq!(
        history_statuses(&stored),
        ["queued", "sending", "delivered"],
        "{stored}"
    );
}

/// The statuses of a message's `history`, oldest first.
fn history_statuses(message: &Value) -> Vec<&str> {
    message["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect()
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn sendgrid_event(message_id: &str, event: &str, event_id: &str) -> Value {
    json!({
        "email": "contact@example.com",
        "timestamp": now(),
        "event": event,
        "sg_event_id": event_id,
        "sg_message_id": "not-used.filter0001",
        "message_id": message_id,
    })
}

#[tokio::test]
async fn signed_sendgrid_events_apply_once_and_forward_only() {
    let api = Api::new();
    let m = sent_message(
        Channel::Email,
        "user@usehatchapp.com",
        &email(),
        "sg-x-message-id",
    )
    .await;
    let ids: Vec<String> = (0..3).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let events = json!([
        sendgrid_event(&m.id, "processed", &ids[0]),
        sendgrid_event(&m.id, "delivered", &ids[1]),
    ]);
    let answer = api.post_sendgrid_events(&events, now()).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(
        answer.json(),
        json!({"applied": 1, "ignored": 1, "duplicates": 0})
    );
    // SendGrid redelivers a batch it did not see acknowledged.
    let again = api.post_sendgrid_events(&events, now()).await;
    assert_eq!(
        again.json(),
        json!({"applied": 0, "ignored": 0, "duplicates": 2})
    );
    // A bounce after delivered changes nothing.
    let bounce = json!([sendgrid_event(&m.id, "bounce", &ids[2])]);
    let answer = api.post_sendgrid_events(&bounce, now()).await;
    assert_eq!(
        answer.json(),
        json!({"applied": 0, "ignored": 1, "duplicates": 0})
    );
    let stored = message(&api, &m.id).await;
    assert_eq!(stored["status"], "delivered", "{stored}");
}

#[tokio::test]
async fn sendgrid_events_found_by_sg_message_id_when_custom_args_are_missing() {
    let api = Api::new();
    let m = sent_message(
        Channel::Email,
        "user@usehatchapp.com",
        &email(),
        "x-msg-dropped",
    )
    .await;
    let events = json!([{
        "email": "contact@example.com",
        "timestamp": now(),
        "event": "dropped",
        "reason": "Bounced Address",
        "sg_event_id": uuid::Uuid::new_v4().to_string(),
        "sg_message_id": "x-msg-dropped.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",
    }]);
    let answer = api.post_sendgrid_events(&events, now()).await;
    assert_eq!(
        answer.json(),
        json!({"applied": 1, "ignored": 0, "duplicates": 0})
    );
    let stored = message(&api, &m.id).await;
    assert_eq!(stored["status"], "failed", "{stored}");
    assert!(
        stored["last_error"]
            .as_str()
            .unwrap()
            .contains("Bounced Address"),
        "{stored}"
    );
}

#[tokio::test]
async fn unsigned_forged_or_stale_sendgrid_events_are_refused() {
    let api = Api::new();
    let m = sent_message(
        Channel::Email,
        "user@usehatchapp.com",
        &email(),
        "x-msg-forged",
    )
    .await;
    let events = json!([sendgrid_event(
        &m.id,
        "delivered",
        &uuid::Uuid::new_v4().to_string()
    )]);
    let body = serde_json::to_vec(&events).unwrap();

    let unsigned = api
        .send_raw(
            api.http()
                .post(api.url("/webhooks/sendgrid/events"))
                .header("content-type", "application/json")
                .body(body.clone()),
        )
        .await;
    assert_eq!(unsigned.status, 403, "{}", unsigned.text);

    // A valid signature over another body.
    let signed = api.post_sendgrid_events(&json!([]), now()).await;
    assert_eq!(signed.status, 200, "{}", signed.text);
    let key = provider_sim::parse_signing_key(provider_sim::DEV_SENDGRID_SIGNING_KEY).unwrap();
    let timestamp = now().to_string();
    let other_signature = provider_sim::sign_sendgrid_events(&key, &timestamp, b"[]");
    let forged = api
        .send_raw(
            api.http()
                .post(api.url("/webhooks/sendgrid/events"))
                .header("content-type", "application/json")
                .header("X-Twilio-Email-Event-Webhook-Signature", other_signature)
                .header("X-Twilio-Email-Event-Webhook-Timestamp", &timestamp)
                .body(body),
        )
        .await;
    assert_eq!(forged.status, 403, "{}", forged.text);

    // Correctly signed, but an hour old: a replay.
    let stale = api.post_sendgrid_events(&events, now() - 3600).await;
    assert_eq!(stale.status, 403, "{}", stale.text);

    assert_eq!(message(&api, &m.id).await["status"], "sent");
}

fn inbound_parse_form(from: &str, message_id: &str) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new()
        .text("from", format!("Jane Doe <{from}>"))
        .text("to", "user@usehatchapp.com")
        .text("subject", "Re: hello")
        .text("text", "Thanks, got it.")
        .text("html", "<p>Thanks, got it.</p>")
        .text(
            "headers",
            format!("Message-ID: <{message_id}@mail.example.com>\nSubject: Re: hello\n"),
        )
        .text("attachments", "0")
}

#[tokio::test]
async fn sendgrid_inbound_parse_needs_its_credentials_and_stores_once() {
    let api = Api::new();
    let from = email();
    let message_id = uuid::Uuid::new_v4().simple().to_string();
    let credentials = e2e_tests::env("SENDGRID_INBOUND_BASIC_AUTH");
    let (user, password) = credentials.split_once(':').unwrap();
    let url = api.url("/webhooks/sendgrid/inbound");

    for (what, auth) in [("none", None), ("wrong password", Some((user, "wrong")))] {
        let mut request = api
            .http()
            .post(&url)
            .multipart(inbound_parse_form(&from, &message_id));
        if let Some((u, p)) = auth {
            request = request.basic_auth(u, Some(p));
        }
        let answer = api.send_raw(request).await;
        assert_eq!(answer.status, 401, "{what}: {}", answer.text);
        assert!(
            answer.headers["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Basic"),
            "{what}"
        );
    }
    assert!(thread_of(&api, &from).await.is_empty(), "nothing stored");

    let post = || {
        api.send_raw(
            api.http()
                .post(&url)
                .basic_auth(user, Some(password))
                .multipart(inbound_parse_form(&from, &message_id)),
        )
    };
    let first = post().await;
    assert_eq!(first.status, 201, "{}", first.text);
    let stored = first.json();
    assert_eq!(stored["type"], "email");
    assert_eq!(stored["direction"], "inbound");
    assert_eq!(stored["from"], from.as_str());
    assert_eq!(stored["to"], "user@usehatchapp.com");
    assert_eq!(stored["body"], "Thanks, got it.");
    assert_eq!(
        stored["sender_verified"], false,
        "the post carried no SPF or DKIM pass: recorded, and stored (INBOUND_EMAIL_REQUIRE_AUTH is off)"
    );
    let second = post().await;
    assert_eq!(second.status, 200, "{}", second.text);
    assert_eq!(second.json()["id"], stored["id"]);
    assert_eq!(thread_of(&api, &from).await.len(), 1);
}

/// The simulator reports like the real providers: a queued SMS and a queued
/// email both end `delivered` through the signed webhooks, with nothing but the
/// stack running.
#[tokio::test]
async fn the_simulators_callbacks_bring_messages_to_delivered() {
    let api = Api::new();
    let mut ids = Vec::new();
    for payload in [
        json!({"from": OUR_NUMBER, "to": phone(), "type": "sms", "body": "report back"}),
        json!({"from": "user@usehatchapp.com", "to": email(), "type": "email", "body": "report back"}),
    ] {
        let answer = api.post_json("/messages/outbound", &payload).await;
        assert_eq!(answer.status, 202, "{}", answer.json);
        ids.push(answer.json["id"].as_str().unwrap().to_owned());
    }
    for id in ids {
        let m = api
            .wait_for(&id, Duration::from_secs(60), |m| {
                matches!(m["status"].as_str(), Some("delivered" | "failed"))
            })
            .await;
        assert_eq!(m["status"], "delivered", "{m}");
    }
}

/// SendGrid posts batches of up to 768 KB: a full one is taken (not 413) and
/// answered, its events handled concurrently. The time it takes is printed.
#[tokio::test]
async fn a_full_size_sendgrid_event_batch_is_taken() {
    let api = Api::new();
    let m = sent_message(
        Channel::Email,
        "news@usehatchapp.com",
        &email(),
        "sg-full-batch",
    )
    .await;
    let mut events = Vec::new();
    let mut size = 2;
    while size < 760 * 1024 {
        let mut event = sendgrid_event(&m.id, "processed", &uuid::Uuid::new_v4().to_string());
        event["category"] = json!(["newsletter", "december"]);
        event["useragent"] = json!("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36");
        size += event.to_string().len() + 1;
        events.push(event);
    }
    events.push(sendgrid_event(
        &m.id,
        "delivered",
        &uuid::Uuid::new_v4().to_string(),
    ));
    let count = events.len();
    let started = std::time::Instant::now();
    let answer = api.post_sendgrid_events(&json!(events), now()).await;
    let elapsed = started.elapsed();
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(
        answer.json(),
        json!({"applied": 1, "ignored": count - 1, "duplicates": 0})
    );
    eprintln!(
        "a {} KB batch of {count} events answered in {:.2} s",
        size / 1024,
        elapsed.as_secs_f64()
    );
    assert_eq!(message(&api, &m.id).await["status"], "delivered");
}
