//! The conversation API on the running local stack: threads built from API
//! messages and provider webhooks read back in order across pages, and
//! cursors that cannot be forged or reused elsewhere.

use e2e_tests::{Answer, Api, email, phone, twilio_auth_token};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const OUR_NUMBER: &str = "+18045551234";

fn at(offset_minutes: i64) -> String {
    (OffsetDateTime::now_utc() + time::Duration::minutes(offset_minutes))
        .format(&Rfc3339)
        .unwrap()
}

async fn post(api: &Api, path: &str, body: Value) -> Value {
    let answer = api.post_json(path, &body).await;
    assert!(
        matches!(answer.status, 201 | 202),
        "{path}: {} {}",
        answer.status,
        answer.json
    );
    answer.json
}

async fn get_with(api: &Api, path: &str, query: &[(&str, &str)]) -> Answer {
    api.send(api.http().get(api.url(path)).query(query)).await
}

/// Every page of `path`, following `next_cursor` `limit` at a time; checks the
/// `Link` header matches the cursor.
async fn all_pages(
    api: &Api,
    path: &str,
    key: &str,
    extra: &[(&str, &str)],
    limit: usize,
) -> Vec<Vec<Value>> {
    let limit_text = limit.to_string();
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query: Vec<(&str, &str)> = extra.to_vec();
        query.push(("limit", &limit_text));
        if let Some(c) = &cursor {
            query.push(("cursor", c));
        }
        let answer = get_with(api, path, &query).await;
        assert_eq!(answer.status, 200, "{}", answer.json);
        let items = answer.json[key].as_array().unwrap().clone();
        assert!(items.len() <= limit);
        pages.push(items);
        match answer.json["next_cursor"].as_str() {
            Some(next) => {
                let link = answer.headers["link"].to_str().unwrap();
                assert!(link.ends_with("rel=\"next\""), "{link}");
                assert!(link.starts_with(&format!("<{path}?")), "{link}");
                let encoded: String = url_encode(next);
                assert!(
                    link.contains(&format!("cursor={encoded}")),
                    "{link} vs {next}"
                );
                cursor = Some(next.to_owned());
            }
            None => {
                assert!(answer.headers.get("link").is_none());
                return pages;
            }
        }
    }
}

/// `value` as it stands in a query string (form-urlencoded).
fn url_encode(value: &str) -> String {
    let url = reqwest::Url::parse_with_params("http://x/", [("c", value)]).unwrap();
    url.query().unwrap()["c=".len()..].to_owned()
}

#[tokio::test]
async fn a_phone_thread_of_api_and_twilio_messages_reads_back_in_timestamp_order_across_pages() {
    let (api, token) = (Api::new(), twilio_auth_token().await);
    let them = phone();
    // Stored out of timestamp order, in both directions, through three doors.
    let third = post(
        &api,
        "/messages/outbound",
        json!({"from": OUR_NUMBER, "to": them,
        "type": "sms", "body": "third", "timestamp": at(-1)}),
    )
    .await;
    let first = post(
        &api,
        "/messages/outbound",
        json!({"from": OUR_NUMBER, "to": them,
        "type": "sms", "body": "first", "timestamp": at(-5)}),
    )
    .await;
    let second = post(
        &api,
        "/messages/inbound",
        json!({"from": them, "to": OUR_NUMBER,
        "type": "mms", "body": "second", "attachments": ["https://example.com/a.png"],
        "timestamp": at(-3), "messaging_provider_id": format!("p-{}", uuid::Uuid::new_v4())}),
    )
    .await;
    let sid = format!("SM{}", uuid::Uuid::new_v4().simple());
    let answer = api
        .post_twilio(
            "/webhooks/twilio/messages",
            &[
                ("MessageSid", &sid),
                ("From", &them),
                ("To", OUR_NUMBER),
                ("Body", "fourth"),
            ],
            Some(&token),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);

    let conversation_id = first["conversation_id"].as_str().unwrap();
    for m in [&second, &third] {
        assert_eq!(m["conversation_id"], conversation_id, "one thread: {m}");
    }
    let path = format!("/conversations/{conversation_id}/messages");
    let pages = all_pages(&api, &path, "messages", &[], 3).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 1]);
    let bodies: Vec<&str> = pages
        .iter()
        .flatten()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["first", "second", "third", "fourth"]);
    let directions: Vec<&str> = pages
        .iter()
        .flatten()
        .map(|m| m["direction"].as_str().unwrap())
        .collect();
    assert_eq!(directions, ["outbound", "inbound", "outbound", "inbound"]);
    // Page size 1 gives the same sequence.
    let one_by_one: Vec<Value> = all_pages(&api, &path, "messages", &[], 1)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(one_by_one.len(), 4);
    assert_eq!(one_by_one[1]["id"], second["id"]);

    let conversation = api.get(&format!("/conversations/{conversation_id}")).await;
    assert_eq!(conversation.status, 200, "{}", conversation.json);
    let c = &conversation.json;
    assert_eq!(c["channel"], "phone");
    let mut participants = vec![OUR_NUMBER.to_owned(), them.clone()];
    participants.sort();
    assert_eq!(c["participants"], json!(participants));
    assert_eq!(c["message_count"], 4);
    assert_eq!(c["last_message"]["preview"], "fourth");
    assert_eq!(c["last_message_preview"], "fourth");
    assert_eq!(c["last_message"]["direction"], "inbound");
}

#[tokio::test]
async fn an_email_thread_joins_api_and_sendgrid_inbound_messages_case_insensitively() {
    let api = Api::new();
    let them = email();
    let ours = "support@usehatchapp.com";
    let out = post(
        &api,
        "/messages/outbound",
        json!({"from": ours, "to": them.to_uppercase(),
        "type": "email", "body": "<p>hello</p>", "timestamp": at(-2)}),
    )
    .await;
    let credentials = e2e_tests::env("SENDGRID_INBOUND_BASIC_AUTH");
    let (user, password) = credentials.split_once(':').unwrap();
    let form = reqwest::multipart::Form::new()
        .text("from", format!("Them <{them}>"))
        .text("to", format!("Support <{}>", ours.to_uppercase()))
        .text("subject", "Re: hello")
        .text("text", "hello back")
        .text(
            "headers",
            format!("Message-ID: <{}@example.com>\n", uuid::Uuid::new_v4()),
        );
    let reply = api
        .send_raw(
            api.http()
                .post(api.url("/webhooks/sendgrid/inbound"))
                .basic_auth(user, Some(password))
                .multipart(form),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let reply = reply.json();
    assert_eq!(reply["conversation_id"], out["conversation_id"]);

    let list = get_with(
        &api,
        "/conversations",
        &[("participant", &format!("  {}  ", them.to_uppercase()))],
    )
    .await;
    assert_eq!(list.status, 200, "{}", list.json);
    let conversations = list.json["conversations"].as_array().unwrap();
    assert_eq!(conversations.len(), 1, "{}", list.json);
    assert_eq!(conversations[0]["id"], out["conversation_id"]);
    assert_eq!(conversations[0]["channel"], "email");
    assert_eq!(conversations[0]["message_count"], 2);
    assert_eq!(conversations[0]["participants"], json!([them, ours]));
    assert_eq!(conversations[0]["last_message"]["id"], reply["id"]);
}

#[tokio::test]
async fn a_participants_conversations_come_latest_activity_first() {
    let api = Api::new();
    let me = phone();
    let (a, b, c) = (phone(), phone(), phone());
    // Latest activity: b (-1), then c (-2), then a (-3, though written last).
    for (to, minutes) in [(&b, -10), (&c, -2), (&b, -1), (&a, -3)] {
        post(
            &api,
            "/messages/outbound",
            json!({"from": me, "to": to, "type": "sms",
            "body": format!("to {to}"), "timestamp": at(minutes)}),
        )
        .await;
    }
    let pages = all_pages(
        &api,
        "/conversations",
        "conversations",
        &[("participant", &me)],
        2,
    )
    .await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1]);
    let others: Vec<String> = pages
        .iter()
        .flatten()
        .map(|c| {
            c["participants"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_owned())
                .find(|p| *p != me)
                .unwrap()
        })
        .collect();
    assert_eq!(others, [b.clone(), c, a]);
    let first = &pages[0][0];
    assert_eq!(first["message_count"], 2);
    assert_eq!(first["last_message"]["preview"], format!("to {b}"));
}

#[tokio::test]
async fn concurrent_messages_of_one_thread_are_all_counted() {
    let api = Api::new();
    let them = phone();
    let answers = futures::future::join_all((0..12).map(|i| {
        let api = &api;
        let them = them.clone();
        async move {
            post(
                api,
                "/messages/outbound",
                json!({"from": OUR_NUMBER, "to": them,
                "type": "sms", "body": format!("n{i:02}"), "timestamp": at(-60 + i)}),
            )
            .await
        }
    }))
    .await;
    let id = answers[0]["conversation_id"].as_str().unwrap();
    let c = api.get(&format!("/conversations/{id}")).await.json;
    assert_eq!(c["message_count"], 12, "{c}");
    assert_eq!(c["last_message"]["preview"], "n11", "{c}");
}

/// A path, its query, and the parameter the 400 must name.
type BadQuery<'a> = (String, Vec<(&'a str, &'a str)>, &'a str);

#[tokio::test]
async fn bad_queries_and_forged_cursors_are_400s_naming_the_parameter() {
    let api = Api::new();
    let them = phone();
    let mut conversation_ids = Vec::new();
    for other in [phone(), phone()] {
        for minutes in [-3, -2] {
            let m = post(
                &api,
                "/messages/outbound",
                json!({"from": them, "to": other,
                "type": "sms", "body": "x", "timestamp": at(minutes)}),
            )
            .await;
            conversation_ids.push(m["conversation_id"].as_str().unwrap().to_owned());
        }
    }
    let (a, b) = (&conversation_ids[0], &conversation_ids[2]);
    let page = get_with(
        &api,
        &format!("/conversations/{a}/messages"),
        &[("limit", "1")],
    )
    .await;
    let cursor = page.json["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let list = get_with(
        &api,
        "/conversations",
        &[("participant", &them), ("limit", "1")],
    )
    .await;
    let list_cursor = list.json["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();

    let mut flipped = cursor.clone().into_bytes();
    let i = flipped.len() / 3;
    flipped[i] = if flipped[i] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let cases: Vec<BadQuery> = vec![
        (
            format!("/conversations/{a}/messages"),
            vec![("cursor", &flipped)],
            "cursor",
        ),
        (
            format!("/conversations/{a}/messages"),
            vec![("cursor", "garbage")],
            "cursor",
        ),
        // Another thread's cursor, and a list cursor, continue nothing here.
        (
            format!("/conversations/{b}/messages"),
            vec![("cursor", &cursor)],
            "cursor",
        ),
        (
            format!("/conversations/{a}/messages"),
            vec![("cursor", &list_cursor)],
            "cursor",
        ),
        (
            "/conversations".to_owned(),
            vec![("participant", &them), ("cursor", &cursor)],
            "cursor",
        ),
        (
            format!("/conversations/{a}/messages"),
            vec![("limit", "0")],
            "limit",
        ),
        (
            format!("/conversations/{a}/messages"),
            vec![("limit", "201")],
            "limit",
        ),
        (
            "/conversations".to_owned(),
            vec![("participant", &them), ("limit", "ten")],
            "limit",
        ),
        ("/conversations".to_owned(), vec![], "participant"),
        (
            "/conversations".to_owned(),
            vec![("participant", "nobody")],
            "participant",
        ),
    ];
    for (path, query, field) in cases {
        let answer = get_with(&api, &path, &query).await;
        assert_eq!(answer.status, 400, "{path} {query:?}: {}", answer.json);
        assert_eq!(answer.json["errors"][0]["field"], field, "{path} {query:?}");
    }
    // The genuine cursor still works, and 200 is the largest page.
    let next = get_with(
        &api,
        &format!("/conversations/{a}/messages"),
        &[("cursor", &cursor), ("limit", "200")],
    )
    .await;
    assert_eq!(next.status, 200, "{}", next.json);
    assert_eq!(next.json["messages"].as_array().unwrap().len(), 1);
    assert_eq!(next.json["next_cursor"], Value::Null);
    for unknown in ["0123456789abcdef0123456789abcdef", "not-an-id"] {
        assert_eq!(
            api.get(&format!("/conversations/{unknown}")).await.status,
            404
        );
        assert_eq!(
            api.get(&format!("/conversations/{unknown}/messages"))
                .await
                .status,
            404
        );
    }
}

/// DynamoDB stops a query at 1 MB: a thread of large emails is still read whole,
/// page after page, with a next cursor only while there is more. Stored and read
/// through the use cases on the stack's table (the local function runtime is
/// not built for 1.5 MB answers).
#[tokio::test]
async fn a_thread_of_over_a_megabyte_is_read_whole() {
    let store = e2e_tests::store().await;
    let replies = e2e_tests::keyword_replies().await;
    let cursors = shared::cursor::CursorCodec::new(b"megabyte-test");
    let (them, us) = (email(), "support@usehatchapp.com");
    let big = "m".repeat(120 * 1024);
    let mut ids = Vec::new();
    for i in 0..13 {
        let body = if i == 12 {
            "and a small one".to_owned()
        } else {
            format!("{i} {big}")
        };
        let payload = json!({"from": them, "to": us, "type": "email", "body": body,
               "timestamp": at(i), "messaging_provider_id": format!("big-{}", uuid::Uuid::new_v4())});
        let stored = shared::api::accept_inbound(&store, &replies, payload.as_object().unwrap())
            .await
            .expect("stored");
        let shared::ports::InboundInsert::Created(message) = stored else {
            panic!("{stored:?}");
        };
        ids.push(message.id);
    }
    let conversation =
        shared::domain::ConversationKey::new(shared::domain::Channel::Email, &them, us).id();
    let (_, page) =
        shared::conversations::list_messages(&store, &cursors, &conversation, Some("50"), None)
            .await
            .expect("a page");
    let listed: Vec<&str> = page.items.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(listed.len(), 13, "one page holds the whole thread");
    assert_eq!(listed, ids.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(page.next_cursor, None);
    // Pages of 10: the first ends past 1 MB of items and still holds 10.
    let (_, first) =
        shared::conversations::list_messages(&store, &cursors, &conversation, Some("10"), None)
            .await
            .expect("a page");
    assert_eq!(first.items.len(), 10);
    let cursor = first.next_cursor.expect("a next page");
    let (_, rest) = shared::conversations::list_messages(
        &store,
        &cursors,
        &conversation,
        Some("10"),
        Some(&cursor),
    )
    .await
    .expect("the next page");
    assert_eq!(rest.items.len(), 3);
    assert_eq!(rest.next_cursor, None);
}
