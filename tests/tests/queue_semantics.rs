//! The SQS behaviour the service relies on, observed on the running stack's
//! emulator. `cargo xtask test` runs this suite on ministack and again with SQS on
//! LocalStack, so that where the two differ (from each other, or from SQS) a test
//! fails: the `ApproximateReceiveCount` attribute and its growth per receive,
//! visibility changes as retry delays, receives of at most ten and batch deletes,
//! the redrive policy and its move to the dead-letter queue.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};
use e2e_tests::{Api, Simulator, aws, env, phone};
use serde_json::{Value, json};
use shared::adapters::sqs::SqsQueue;
use shared::ports::{DeliveryQueue, QueueVisibility};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const SETTLE: Duration = Duration::from_secs(60);

fn settled(m: &Value) -> bool {
    matches!(m["status"].as_str(), Some("sent" | "delivered" | "failed"))
}

async fn sqs() -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&aws().await)
}

async fn attributes(client: &aws_sdk_sqs::Client, url: &str) -> HashMap<String, String> {
    let output = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap_or_else(|e| panic!("attributes of {url}: {e:?}"));
    output
        .attributes
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.as_str().to_owned(), v))
        .collect()
}

/// The redrive policy's `maxReceiveCount` and dead-letter target of `url`.
async fn redrive_policy(client: &aws_sdk_sqs::Client, url: &str) -> (u64, String) {
    let attributes = attributes(client, url).await;
    let policy = attributes
        .get("RedrivePolicy")
        .unwrap_or_else(|| panic!("{url} has no RedrivePolicy: {attributes:?}"));
    let policy: Value = serde_json::from_str(policy).expect("RedrivePolicy is JSON");
    // SQS gives the number back as it was set (a JSON number here); nothing in
    // the service reads it back, so a string form is accepted too.
    let max = match &policy["maxReceiveCount"] {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .unwrap_or_else(|| panic!("maxReceiveCount in {policy}"));
    let target = policy["deadLetterTargetArn"]
        .as_str()
        .unwrap_or_else(|| panic!("deadLetterTargetArn in {policy}"))
        .to_owned();
    (max, target)
}

/// A queue of the test's own, optionally redriving to `dead_letter` after
/// `max_receives`.
async fn private_queue(
    client: &aws_sdk_sqs::Client,
    tag: &str,
    redrive: Option<(&str, u32)>,
) -> String {
    let mut request = client
        .create_queue()
        .queue_name(format!("it-{tag}-{}", uuid::Uuid::new_v4().simple()));
    if let Some((arn, max)) = redrive {
        let policy = json!({"deadLetterTargetArn": arn, "maxReceiveCount": max});
        request = request.attributes(QueueAttributeName::RedrivePolicy, policy.to_string());
    }
    request
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue URL")
}

async fn receive(
    client: &aws_sdk_sqs::Client,
    url: &str,
    max: i32,
    wait_seconds: i32,
    visibility: Option<i32>,
) -> Vec<aws_sdk_sqs::types::Message> {
    client
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(max)
        .wait_time_seconds(wait_seconds)
        .set_visibility_timeout(visibility)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .unwrap_or_else(|e| panic!("receive from {url}: {e:?}"))
        .messages
        .unwrap_or_default()
}

fn receive_count(message: &aws_sdk_sqs::types::Message) -> Option<u32> {
    message
        .attributes()?
        .get(&MessageSystemAttributeName::ApproximateReceiveCount)?
        .parse()
        .ok()
}

/// Receive counts no longer end retries: a message still failing on the last
/// receive the queue allows (learnt from each record's `ApproximateReceiveCount`)
/// is handed over to a fresh queue message, and is sent once the provider
/// recovers. Between receives the record is hidden for the retry delay
/// (ChangeMessageVisibility). If the emulator did not count receives, the
/// record would reach the dead-letter queue, the message stranded `queued`.
#[tokio::test]
async fn retries_outlast_the_receives_the_queue_allows() {
    let (api, sim) = (Api::new(), Simulator::new());
    let client = sqs().await;
    let (max_receives, _) = redrive_policy(&client, &env("QUEUE_URL")).await;
    let to = phone();
    let failures = 2 * max_receives as u32;
    sim.fail_next(&to, 500, failures, None).await;
    let answer = api
        .post_json(
            "/messages/outbound",
            &json!({"from": "+18045551234", "to": to, "type": "sms", "body": "at last"}),
        )
        .await;
    assert_eq!(answer.status, 202, "{}", answer.json);
    let id = answer.json["id"].as_str().expect("id");
    let message = api.wait_for(id, SETTLE, settled).await;
    assert_eq!(message["status"], "sent", "{message}");
    assert_eq!(message["attempts"], failures + 1, "{message}");
    let calls = sim.requests_to(&to).await;
    assert_eq!(
        calls.len() as u32,
        failures + 1,
        "one provider call per attempt"
    );
    assert_eq!(
        calls.iter().filter(|c| c["status"] == 201).count(),
        1,
        "sent exactly once"
    );
}

/// Retries end by the message's age (`MAX_DELIVERY_AGE_SECONDS`, 40 s on the
/// test stack): then the message fails, naming its age and the last error.
#[tokio::test]
async fn retries_end_when_the_message_is_too_old() {
    let (api, sim) = (Api::new(), Simulator::new());
    let to = phone();
    sim.fail_next(&to, 500, 1000, None).await;
    let answer = api
        .post_json(
            "/messages/outbound",
            &json!({"from": "+18045551234", "to": to, "type": "sms", "body": "never"}),
        )
        .await;
    assert_eq!(answer.status, 202, "{}", answer.json);
    let id = answer.json["id"].as_str().expect("id");
    let message = api.wait_for(id, Duration::from_secs(90), settled).await;
    assert_eq!(message["status"], "failed", "{message}");
    let error = message["last_error"].as_str().unwrap_or_default();
    assert!(error.starts_with("retries exhausted after "), "{message}");
    assert!(error.contains("500"), "{message}");
    let created = OffsetDateTime::parse(message["created_at"].as_str().unwrap(), &Rfc3339).unwrap();
    let updated = OffsetDateTime::parse(message["updated_at"].as_str().unwrap(), &Rfc3339).unwrap();
    let age = (updated - created).whole_seconds();
    assert!(
        (30..=45).contains(&age),
        "failed {age} s after it was accepted: {message}"
    );
    assert!(message["attempts"].as_u64() > Some(5), "{message}");
}

/// The bridge receives up to ten messages at a time and deletes what the function
/// did not report, in batches: a burst is delivered, each message once.
#[tokio::test]
async fn a_burst_is_delivered_in_batches_each_message_once() {
    let (api, sim) = (Api::new(), Simulator::new());
    let recipients: Vec<String> = (0..30).map(|_| phone()).collect();
    let payloads: Vec<Value> = recipients
        .iter()
        .map(|to| json!({"from": "+18045551234", "to": to, "type": "sms", "body": "burst"}))
        .collect();
    let answers = futures::future::join_all(
        payloads
            .iter()
            .map(|payload| api.post_json("/messages/outbound", payload)),
    )
    .await;
    let ids: Vec<String> = answers
        .iter()
        .map(|a| {
            assert_eq!(a.status, 202, "{}", a.json);
            a.json["id"].as_str().expect("id").to_owned()
        })
        .collect();
    let messages =
        futures::future::join_all(ids.iter().map(|id| api.wait_for(id, SETTLE, settled))).await;
    for message in &messages {
        assert!(
            matches!(message["status"].as_str(), Some("sent" | "delivered")),
            "{message}"
        );
        assert_eq!(message["attempts"], 1, "{message}");
    }
    for to in &recipients {
        assert_eq!(sim.requests_to(to).await.len(), 1, "{to} got one request");
    }
}

/// A receive returns at most ten messages; DeleteMessageBatch takes ten entries
/// and reports each; deleted messages are gone.
#[tokio::test]
async fn receives_return_at_most_ten_and_batch_deletes_remove_them() {
    let client = sqs().await;
    let url = private_queue(&client, "batch", None).await;
    let queue = SqsQueue::new(client.clone(), &url);
    for i in 0..13 {
        queue
            .enqueue(&format!("01932c07-0000-7000-8000-{i:012}"), Duration::ZERO)
            .await
            .unwrap();
    }
    let mut received = 0;
    for _ in 0..20 {
        let batch = receive(&client, &url, 10, 1, Some(30)).await;
        assert!(batch.len() <= 10, "a receive returned {}", batch.len());
        if batch.is_empty() {
            if received == 13 {
                break;
            }
            continue;
        }
        let entries = batch
            .iter()
            .enumerate()
            .map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .set_receipt_handle(m.receipt_handle.clone())
                    .build()
                    .unwrap()
            })
            .collect();
        let deleted = client
            .delete_message_batch()
            .queue_url(&url)
            .set_entries(Some(entries))
            .send()
            .await
            .expect("delete batch");
        assert!(deleted.failed().is_empty(), "{:?}", deleted.failed());
        assert_eq!(deleted.successful().len(), batch.len());
        received += batch.len();
    }
    assert_eq!(received, 13, "every message received once");
    let left = attributes(&client, &url).await;
    assert_eq!(left["ApproximateNumberOfMessages"], "0", "{left:?}");
    assert_eq!(
        left["ApproximateNumberOfMessagesNotVisible"], "0",
        "{left:?}"
    );
    client.delete_queue().queue_url(&url).send().await.unwrap();
}

/// A postponed message comes back after the delay as the same message, with its
/// receive count grown by one.
#[tokio::test]
async fn a_postponed_message_returns_with_its_receive_count_grown() {
    let client = sqs().await;
    let url = private_queue(&client, "visibility", None).await;
    let queue = SqsQueue::new(client.clone(), &url);
    queue
        .enqueue("01932c07-0000-7000-8000-0000000000aa", Duration::ZERO)
        .await
        .unwrap();
    let first = receive(&client, &url, 10, 2, None).await;
    assert_eq!(first.len(), 1);
    assert_eq!(receive_count(&first[0]), Some(1), "{:?}", first[0]);
    queue
        .postpone(first[0].receipt_handle().unwrap(), Duration::from_secs(2))
        .await
        .unwrap();
    assert!(receive(&client, &url, 10, 0, None).await.is_empty());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let again = receive(&client, &url, 10, 2, None).await;
    assert_eq!(again.len(), 1, "the postponed message comes back");
    assert_eq!(again[0].message_id(), first[0].message_id());
    assert_eq!(receive_count(&again[0]), Some(2), "{:?}", again[0]);
    client.delete_queue().queue_url(&url).send().await.unwrap();
}

/// The stack's queue redrives to the stack's dead-letter queue, and a message
/// received `maxReceiveCount` times moves there on the next receive.
#[tokio::test]
async fn the_queue_redrives_to_its_dead_letter_queue() {
    let client = sqs().await;
    let (max, target) = redrive_policy(&client, &env("QUEUE_URL")).await;
    assert_eq!(max, 5, "the template's maxReceiveCount");
    let dlq = attributes(&client, &env("DLQ_URL")).await;
    assert_eq!(
        target, dlq["QueueArn"],
        "the redrive target is DLQ_URL's queue"
    );

    // The move itself, on a pair of the test's own (maxReceiveCount 2).
    let dead = private_queue(&client, "dead", None).await;
    let dead_arn = attributes(&client, &dead).await["QueueArn"].clone();
    let url = private_queue(&client, "redrive", Some((&dead_arn, 2))).await;
    let (_, target) = redrive_policy(&client, &url).await;
    assert_eq!(target, dead_arn);
    SqsQueue::new(client.clone(), &url)
        .enqueue("01932c07-0000-7000-8000-0000000000bb", Duration::ZERO)
        .await
        .unwrap();
    for n in 1..=2 {
        let got = receive(&client, &url, 10, 2, Some(0)).await;
        assert_eq!(got.len(), 1, "receive {n}");
        assert_eq!(receive_count(&got[0]), Some(n), "{:?}", got[0]);
    }
    assert!(
        receive(&client, &url, 10, 1, Some(0)).await.is_empty(),
        "after maxReceiveCount receives the message leaves the queue"
    );
    let moved = receive(&client, &dead, 10, 2, None).await;
    assert_eq!(moved.len(), 1, "and is in the dead-letter queue");
    assert_eq!(
        moved[0].body(),
        Some(r#"{"id":"01932c07-0000-7000-8000-0000000000bb"}"#)
    );
    for queue in [url, dead] {
        client
            .delete_queue()
            .queue_url(&queue)
            .send()
            .await
            .unwrap();
    }
}
