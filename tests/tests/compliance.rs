//! Opt-outs on the running local stack: STOP, START and HELP from both inbound
//! paths, the 422 on a suppressed recipient (per sender, or for all senders),
//! a queued message failing with the opt-out reason, the provider signals
//! (Twilio 21610, SendGrid events) and the `/suppressions` routes with their
//! scopes.

use std::time::Duration;

use e2e_tests::{Api, Simulator, email, new_key, phone, queue, store, twilio_auth_token};
use serde_json::{Value, json};
use shared::api::{AcceptError, SendRules, accept_outbound};
use shared::domain::suppression::{DEFAULT_HELP_REPLY, DEFAULT_OPT_OUT_REPLY};
use shared::domain::{OptOutScope, Scope, Suppression, SuppressionChannel, SuppressionSource};
use shared::ports::{Lift, SuppressionList};
use time::OffsetDateTime;

/// The number our tests' recipients write to, and another of ours.
const OUR_NUMBER: &str = "+18045551234";
const OTHER_NUMBER: &str = "+18045550000";
const SETTLE: Duration = Duration::from_secs(60);

fn sid() -> String {
    format!("SM{}", uuid::Uuid::new_v4().simple())
}

fn sms(from: &str, to: &str, kind: &str, body: &str) -> Value {
    let mut message = json!({"from": from, "to": to, "type": kind, "body": body});
    if kind == "mms" {
        message["attachments"] = json!(["https://example.com/a.png"]);
    }
    message
}

/// A STOP, START or HELP (or any text) from `from` to `to` through Twilio's webhook.
async fn text_via_twilio(api: &Api, from: &str, to: &str, body: &str, message_sid: &str) {
    let token = twilio_auth_token().await;
    let params = [
        ("MessageSid", message_sid),
        ("AccountSid", "ACtest"),
        ("From", from),
        ("To", to),
        ("Body", body),
        ("NumMedia", "0"),
    ];
    let answer = api
        .post_twilio("/webhooks/twilio/messages", &params, Some(&token))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
}

/// The same through `POST /messages/inbound`.
async fn text_via_api(api: &Api, from: &str, to: &str, body: &str) {
    let inbound = json!({"from": from, "to": to, "type": "sms", "body": body,
                         "messaging_provider_id": sid()});
    let answer = api.post_json("/messages/inbound", &inbound).await;
    assert_eq!(answer.status, 201, "{}", answer.json);
}

/// Our messages to `recipient` from `sender`, as the conversation API lists them.
async fn outbound_to(api: &Api, recipient: &str, sender: &str) -> Vec<Value> {
    let list = api
        .send(
            api.http()
                .get(api.url("/conversations"))
                .query(&[("participant", recipient)]),
        )
        .await;
    assert_eq!(list.status, 200, "{}", list.json);
    let mut found = Vec::new();
    for conversation in list.json["conversations"].as_array().unwrap() {
        let id = conversation["id"].as_str().unwrap();
        let page = api.get(&format!("/conversations/{id}/messages")).await;
        assert_eq!(page.status, 200, "{}", page.json);
        found.extend(
            page.json["messages"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["direction"] == "outbound" && m["from"] == sender)
                .cloned(),
        );
    }
    found
}

async fn suppressions_of(api: &Api, address: &str) -> Vec<Value> {
    let answer = api
        .send(
            api.http()
                .get(api.url("/suppressions"))
                .query(&[("address", address)]),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.json);
    answer.json["suppressions"].as_array().unwrap().clone()
}

fn assert_opted_out(answer: &e2e_tests::Answer) {
    assert_eq!(answer.status, 422, "{}", answer.json);
    assert_eq!(answer.json["errors"][0]["field"], "to", "{}", answer.json);
    assert_eq!(
        answer.json["errors"][0]["message"], "the recipient has opted out",
        "{}",
        answer.json
    );
}

/// Waits until the simulator has answered `count` requests from `from` to `to` with 2xx.
async fn delivered(from: &str, to: &str, count: usize) -> Vec<Value> {
    let sim = Simulator::new();
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let sent: Vec<Value> = sim
            .requests_to(to)
            .await
            .into_iter()
            .filter(|r| r["from"] == from && r["status"].as_u64().is_some_and(|s| s < 300))
            .collect();
        if sent.len() >= count || tokio::time::Instant::now() > deadline {
            return sent;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn stop_via_twilio_silences_that_number_only_and_is_confirmed_exactly_once() {
    let api = Api::new();
    let recipient = phone();
    let stop = sid();
    text_via_twilio(&api, &recipient, OUR_NUMBER, " Stop ", &stop).await;
    // Twilio retries the same post; then the recipient sends STOP again.
    text_via_twilio(&api, &recipient, OUR_NUMBER, " Stop ", &stop).await;
    text_via_twilio(&api, &recipient, OUR_NUMBER, "STOP", &sid()).await;
    // Only the confirmation goes to a number that opted out: HELP is not answered.
    text_via_twilio(&api, &recipient, OUR_NUMBER, "help", &sid()).await;

    let entries = suppressions_of(&api, &recipient).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["channel"], "phone");
    assert_eq!(entries[0]["address"], recipient.as_str());
    assert_eq!(entries[0]["sender"], OUR_NUMBER);
    assert_eq!(entries[0]["source"], "keyword");
    assert_eq!(entries[0]["reason"], "opt-out keyword STOP");
    assert!(entries[0]["message_id"].is_string(), "{entries:?}");

    for kind in ["sms", "mms"] {
        let refused = api
            .post_json(
                "/messages/outbound",
                &sms(OUR_NUMBER, &recipient, kind, "more news"),
            )
            .await;
        assert_opted_out(&refused);
    }
    let other = api
        .post_json(
            "/messages/outbound",
            &sms(OTHER_NUMBER, &recipient, "sms", "from our other number"),
        )
        .await;
    assert_eq!(
        other.status, 202,
        "another of our numbers still sends: {}",
        other.json
    );

    let replies = outbound_to(&api, &recipient, OUR_NUMBER).await;
    assert_eq!(replies.len(), 1, "exactly one confirmation: {replies:?}");
    assert_eq!(replies[0]["body"], DEFAULT_OPT_OUT_REPLY);
    let sent = delivered(OUR_NUMBER, &recipient, 1).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["body"], DEFAULT_OPT_OUT_REPLY);
    assert_eq!(delivered(OTHER_NUMBER, &recipient, 1).await.len(), 1);
}

#[tokio::test]
async fn stop_via_the_inbound_api_then_start_restores_sending() {
    let api = Api::new();
    let recipient = phone();
    text_via_api(&api, &recipient, OUR_NUMBER, "unsubscribe").await;
    assert_opted_out(
        &api.post_json(
            "/messages/outbound",
            &sms(OUR_NUMBER, &recipient, "sms", "hi"),
        )
        .await,
    );
    assert_eq!(suppressions_of(&api, &recipient).await.len(), 1);

    text_via_api(&api, &recipient, OUR_NUMBER, "start").await;
    assert!(suppressions_of(&api, &recipient).await.is_empty());
    let accepted = api
        .post_json(
            "/messages/outbound",
            &sms(OUR_NUMBER, &recipient, "sms", "welcome back"),
        )
        .await;
    assert_eq!(accepted.status, 202, "{}", accepted.json);
    let id = accepted.json["id"].as_str().unwrap();
    // Sent, or already further: the simulator reports delivery within moments,
    // so `sent` alone can pass between two polls.
    api.wait_for(id, SETTLE, |m| {
        matches!(m["status"].as_str(), Some("sent" | "delivered"))
    })
    .await;
}

#[tokio::test]
async fn help_is_answered_and_stop_inside_a_sentence_is_only_a_message() {
    let api = Api::new();
    let recipient = phone();
    text_via_api(&api, &recipient, OUR_NUMBER, " help").await;
    text_via_api(&api, &recipient, OUR_NUMBER, "please stop calling me Bob").await;
    assert!(suppressions_of(&api, &recipient).await.is_empty());
    let replies = outbound_to(&api, &recipient, OUR_NUMBER).await;
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0]["body"], DEFAULT_HELP_REPLY);
    let sent = delivered(OUR_NUMBER, &recipient, 1).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    let accepted = api
        .post_json(
            "/messages/outbound",
            &sms(OUR_NUMBER, &recipient, "sms", "hi"),
        )
        .await;
    assert_eq!(accepted.status, 202, "{}", accepted.json);
}

#[tokio::test]
async fn a_message_queued_before_stop_fails_with_the_opt_out_reason_unsent() {
    let api = Api::new();
    let sim = Simulator::new();
    let recipient = phone();
    // The provider holds the first attempt back, and asks for 8 s before the next.
    sim.fail_next(&recipient, 503, 1, Some("8")).await;
    let body = format!("queued before the STOP {}", uuid::Uuid::new_v4());
    let accepted = api
        .post_json(
            "/messages/outbound",
            &sms(OUR_NUMBER, &recipient, "sms", &body),
        )
        .await;
    assert_eq!(accepted.status, 202, "{}", accepted.json);
    let id = accepted.json["id"].as_str().unwrap().to_owned();
    api.wait_for(&id, SETTLE, |m| {
        m["attempts"].as_u64() >= Some(1) && m["status"] == "queued"
    })
    .await;

    text_via_twilio(&api, &recipient, OUR_NUMBER, "STOP", &sid()).await;

    let settled = api.wait_for(&id, SETTLE, |m| m["status"] == "failed").await;
    assert!(
        settled["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("the recipient has opted out")),
        "{settled}"
    );
    // The confirmation goes out; the held-back message never reaches the provider again.
    let sent = delivered(OUR_NUMBER, &recipient, 1).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["body"], DEFAULT_OPT_OUT_REPLY);
    let attempts: Vec<_> = sim
        .requests_to(&recipient)
        .await
        .into_iter()
        .filter(|r| r["body"] == body.as_str())
        .map(|r| r["status"].clone())
        .collect();
    assert_eq!(attempts, [json!(503)], "only the held-back attempt");
}

#[tokio::test]
async fn twilio_21610_fails_the_message_and_suppresses_the_recipient() {
    let api = Api::new();
    let recipient = phone();
    Simulator::new()
        .add_rule(json!({"to": recipient, "status": 400, "body": {
            "code": 21610, "status": 400,
            "message": "Attempt to send to unsubscribed recipient",
            "more_info": "https://www.twilio.com/docs/errors/21610"}}))
        .await;
    let accepted = api
        .post_json(
            "/messages/outbound",
            &sms(OUR_NUMBER, &recipient, "sms", "hello"),
        )
        .await;
    assert_eq!(accepted.status, 202, "{}", accepted.json);
    let id = accepted.json["id"].as_str().unwrap();
    let failed = api.wait_for(id, SETTLE, |m| m["status"] == "failed").await;
    assert!(
        failed["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("the recipient has opted out") && e.contains("21610")),
        "{failed}"
    );
    let entries = suppressions_of(&api, &recipient).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["source"], "twilio");
    assert_eq!(entries[0]["sender"], OUR_NUMBER);
    assert_eq!(entries[0]["message_id"], id);
    assert_opted_out(
        &api.post_json(
            "/messages/outbound",
            &sms(OUR_NUMBER, &recipient, "sms", "again"),
        )
        .await,
    );
}

#[tokio::test]
async fn sendgrid_bounces_spam_reports_and_unsubscribes_suppress_the_address() {
    let api = Api::new();
    let addresses: Vec<String> = (0..6).map(|_| email()).collect();
    let event = |i: usize, fields: Value| {
        let mut event = json!({"email": addresses[i], "timestamp": 1_700_000_000,
                               "sg_event_id": uuid::Uuid::new_v4().to_string(),
                               "sg_message_id": format!("unknown-{i}.filter")});
        event
            .as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        event
    };
    let events = json!([
        event(
            0,
            json!({"event": "bounce", "type": "bounce", "reason": "550 5.1.1 no such user"})
        ),
        event(1, json!({"event": "spamreport"})),
        event(2, json!({"event": "unsubscribe"})),
        event(3, json!({"event": "group_unsubscribe", "asm_group_id": 42})),
        event(4, json!({"event": "dropped", "reason": "Bounced Address"})),
        // A temporary refusal: not a reason to stop mailing.
        event(
            5,
            json!({"event": "bounce", "type": "blocked", "reason": "421 try again later"})
        ),
    ]);
    let answer = api
        .post_sendgrid_events(&events, OffsetDateTime::now_utc().unix_timestamp())
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);

    for address in &addresses[..5] {
        let entries = suppressions_of(&api, &address.to_uppercase()).await;
        assert_eq!(entries.len(), 1, "{address}: {entries:?}");
        assert_eq!(entries[0]["channel"], "email");
        assert_eq!(entries[0]["source"], "sendgrid");
        assert_eq!(entries[0]["sender"], Value::Null);
    }
    assert!(suppressions_of(&api, &addresses[5]).await.is_empty());
    // Email suppressions apply to every sender.
    let mail = json!({"from": "news@usehatchapp.com", "to": addresses[0], "type": "email",
                      "body": "Hello"});
    assert_opted_out(&api.post_json("/messages/outbound", &mail).await);
    let fine = json!({"from": "news@usehatchapp.com", "to": addresses[5], "type": "email",
                      "body": "Hello"});
    assert_eq!(api.post_json("/messages/outbound", &fine).await.status, 202);
}

#[tokio::test]
async fn operators_add_list_and_lift_suppressions_with_the_right_scopes() {
    let operator = Api::with_key(Some(
        &new_key(&[Scope::SuppressionsWrite, Scope::MessagesRead]).await,
    ));
    let reader = Api::with_key(Some(&new_key(&[Scope::MessagesRead]).await));
    let recipient = phone();
    let encoded = recipient.replace('+', "%2B");
    let add = json!({"channel": "phone", "address": recipient, "sender": OUR_NUMBER,
                     "reason": "asked by phone"});

    let refused = reader.post_json("/suppressions", &add).await;
    assert_eq!(refused.status, 403, "{}", refused.json);
    let refused = Api::with_key(None).post_json("/suppressions", &add).await;
    assert_eq!(refused.status, 401, "{}", refused.json);

    let created = operator.post_json("/suppressions", &add).await;
    assert_eq!(created.status, 201, "{}", created.json);
    assert_eq!(created.json["source"], "api");
    assert_eq!(created.json["reason"], "asked by phone");
    assert_eq!(created.json["sender"], OUR_NUMBER);
    assert_eq!(
        created.headers["location"],
        format!("/suppressions/phone/{encoded}").as_str()
    );
    let again = operator.post_json("/suppressions", &add).await;
    assert_eq!(again.status, 200, "{}", again.json);
    assert_eq!(again.json["created_at"], created.json["created_at"]);
    let everyone = json!({"channel": "phone", "address": recipient});
    assert_eq!(
        operator.post_json("/suppressions", &everyone).await.status,
        201
    );
    let invalid = operator
        .post_json(
            "/suppressions",
            &json!({"channel": "email", "address": "not-an-email", "sender": OUR_NUMBER}),
        )
        .await;
    assert_eq!(invalid.status, 422, "{}", invalid.json);
    let fields: Vec<_> = invalid.json["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(fields, ["address", "sender"], "{}", invalid.json);

    // Readers list; the every-sender entry comes first.
    let listed = suppressions_of(&reader, &recipient).await;
    let senders: Vec<_> = listed.iter().map(|e| e["sender"].clone()).collect();
    assert_eq!(senders, [Value::Null, json!(OUR_NUMBER)]);
    let page = reader
        .send(
            reader
                .http()
                .get(reader.url("/suppressions"))
                .query(&[("address", recipient.as_str()), ("limit", "1")]),
        )
        .await;
    assert_eq!(page.json["suppressions"].as_array().unwrap().len(), 1);
    let cursor = page.json["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let next = reader
        .send(reader.http().get(reader.url("/suppressions")).query(&[
            ("address", recipient.as_str()),
            ("limit", "1"),
            ("cursor", cursor.as_str()),
        ]))
        .await;
    assert_eq!(
        next.json["suppressions"][0]["sender"], OUR_NUMBER,
        "{}",
        next.json
    );
    assert_eq!(next.json["next_cursor"], Value::Null);

    // Lift one sender's entry, then the rest; a second DELETE finds nothing.
    let delete = |api: &Api, query: &str| {
        api.http()
            .delete(api.url(&format!("/suppressions/phone/{encoded}{query}")))
    };
    let refused = reader.send_raw(delete(&reader, "")).await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    let one = operator
        .send_raw(delete(
            &operator,
            &format!("?sender={}", OUR_NUMBER.replace('+', "%2B")),
        ))
        .await;
    assert_eq!(one.status, 204, "{}", one.text);
    assert_eq!(suppressions_of(&reader, &recipient).await.len(), 1);
    assert_eq!(operator.send_raw(delete(&operator, "")).await.status, 204);
    assert!(suppressions_of(&reader, &recipient).await.is_empty());
    let gone = operator.send(delete(&operator, "")).await;
    assert_eq!(gone.status, 404, "{}", gone.json);
    assert_eq!(gone.json["errors"][0]["field"], "address");
}

#[tokio::test]
async fn the_whole_list_pages_in_order_without_repeats() {
    let api = Api::new();
    let store = store().await;
    let mine: Vec<String> = (0..3).map(|_| phone()).collect();
    for address in &mine {
        for sender in [None, Some(OUR_NUMBER), Some(OTHER_NUMBER)] {
            store
                .suppress(&Suppression {
                    channel: SuppressionChannel::Phone,
                    address: address.clone(),
                    sender: sender.map(str::to_owned),
                    reason: "listing test".into(),
                    source: SuppressionSource::Api,
                    message_id: None,
                    created_at: OffsetDateTime::now_utc(),
                })
                .await
                .unwrap();
        }
    }
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![("channel", "phone".to_owned()), ("limit", "4".to_owned())];
        if let Some(cursor) = &cursor {
            query.push(("cursor", cursor.clone()));
        }
        let page = api
            .send(api.http().get(api.url("/suppressions")).query(&query))
            .await;
        assert_eq!(page.status, 200, "{}", page.json);
        let items = page.json["suppressions"].as_array().unwrap();
        assert!(items.len() <= 4);
        seen.extend(items.iter().map(|e| {
            (
                e["address"].as_str().unwrap().to_owned(),
                e["sender"].as_str().unwrap_or("*").to_owned(),
            )
        }));
        match page.json["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted, "in order, without repeats");
    for address in &mine {
        let count = seen.iter().filter(|(a, _)| a == address).count();
        assert_eq!(count, 3, "{address}");
        store
            .lift(SuppressionChannel::Phone, address, &Lift::All)
            .await
            .unwrap();
    }
}

/// `OPT_OUT_SCOPE=all`, through the accept use case on the stack's table and
/// queue: a STOP to one of our numbers silences the others too.
#[tokio::test]
async fn with_opt_out_scope_all_a_stop_silences_every_sender() {
    let (store, queue) = (store().await, queue().await);
    let recipient = phone();
    store
        .suppress(&Suppression {
            channel: SuppressionChannel::Phone,
            address: recipient.clone(),
            sender: Some(OUR_NUMBER.to_owned()),
            reason: "opt-out keyword STOP".into(),
            source: SuppressionSource::Keyword,
            message_id: None,
            created_at: OffsetDateTime::now_utc(),
        })
        .await
        .unwrap();
    let from_other = sms(OTHER_NUMBER, &recipient, "sms", "hello");
    let payload = from_other.as_object().unwrap();
    let everywhere = SendRules {
        opt_out_scope: OptOutScope::All,
        ..SendRules::default()
    };
    let err = accept_outbound(&store, &queue, &everywhere, payload, None)
        .await
        .unwrap_err();
    let AcceptError::Invalid(fields) = err else {
        panic!("not a 422: {err:?}");
    };
    assert_eq!(fields[0].field, "to");
    accept_outbound(&store, &queue, &SendRules::default(), payload, None)
        .await
        .expect("per sender (the default), another of our numbers still sends");
}
