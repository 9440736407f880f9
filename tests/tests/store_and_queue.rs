//! Integration tests of the DynamoDB and SQS adapters against the emulator,
//! through the real SDK clients: conditional writes, race-free inbound dedupe,
//! the delivery lease, and the queue.

use std::time::Duration;

use e2e_tests::{
    aws, env, keyword_replies, marker, phone, private_queue, store, stored_with_marker,
};
use serde_json::json;
use shared::adapters::sqs::{SqsQueue, decode_body};
use shared::api::SendRules;
use shared::api::{AcceptError, OutboundAccepted, accept_inbound, accept_outbound};
use shared::domain::{Direction, IdempotencyKey, Message, Status, validate_outbound};
use shared::http::ApiError;
use shared::ports::{
    Claim, Completion, DeliveryQueue, DeliveryStore, InboundInsert, Lease, MessageStore,
    OutboundInsert, QueueVisibility, StoreError,
};
use time::OffsetDateTime;

fn outbound_message() -> Message {
    let payload =
        json!({"from": "+18045551234", "to": phone(), "type": "sms", "body": "integration"});
    let new = validate_outbound(payload.as_object().unwrap()).unwrap();
    Message::accept(new, Direction::Outbound, OffsetDateTime::now_utc())
}

fn lease(expires_in: time::Duration) -> Lease {
    Lease {
        id: uuid::Uuid::new_v4().to_string(),
        expires_at: OffsetDateTime::now_utc() + expires_in,
    }
}

#[tokio::test]
async fn outbound_insert_is_conditional_and_reads_back() {
    let store = store().await;
    let message = outbound_message();
    assert_eq!(
        store.insert_outbound(&message, None).await.unwrap(),
        OutboundInsert::Created
    );
    assert_eq!(
        store.get(&message.id).await.unwrap().as_ref(),
        Some(&message)
    );
    let again = store.insert_outbound(&message, None).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert_eq!(
        store
            .get("01932c07-0000-7000-8000-00000000dead")
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn concurrent_inbound_posts_store_one_message() {
    let store = store().await;
    let provider_id = format!("concurrent-{}", uuid::Uuid::new_v4());
    let payload = json!({"from": "+18045551234", "to": "+12016661234", "type": "sms", "body": "hello",
                         "messaging_provider_id": provider_id});
    let payload = payload.as_object().unwrap().clone();
    let replies = keyword_replies().await;
    let results =
        futures::future::join_all((0..20).map(|_| accept_inbound(&store, &replies, &payload)))
            .await;
    let mut created = Vec::new();
    let mut duplicates = Vec::new();
    for result in results {
        match result.expect("inbound accepted") {
            InboundInsert::Created(m) => created.push(m.id),
            InboundInsert::Duplicate(m) => duplicates.push(m.id),
        }
    }
    assert_eq!(created.len(), 1, "exactly one post creates the message");
    assert_eq!(duplicates.len(), 19);
    assert!(
        duplicates.iter().all(|id| *id == created[0]),
        "every duplicate returns the first message"
    );
}

/// The `expires_at` (epoch seconds) of the raw item `pk`, if it exists.
async fn item_expiry(pk: &str) -> Option<Option<i64>> {
    let item = aws_sdk_dynamodb::Client::new(&aws().await)
        .get_item()
        .table_name(env("TABLE_NAME"))
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(pk.into()))
        .consistent_read(true)
        .send()
        .await
        .expect("get item")
        .item?;
    Some(
        item.get("expires_at")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok()),
    )
}

fn inbound_message(provider_id: &str) -> Message {
    let payload = json!({
        "from": phone(), "to": "+18045551234", "type": "sms", "body": "namespaced",
        "messaging_provider_id": provider_id,
    });
    let new = shared::domain::validate_inbound(payload.as_object().unwrap()).unwrap();
    Message::accept(new, Direction::Inbound, OffsetDateTime::now_utc())
}

/// A `messaging_provider_id` is unique within its source only: an API caller
/// who picks a Twilio sid does not block (or read) the Twilio message, and a
/// SendGrid id does not find a Twilio message. The guard and mapping items expire.
#[tokio::test]
async fn provider_ids_are_namespaced_by_source_and_expire() {
    use shared::domain::{InboundSource, ProviderKind};
    use shared::ports::ReportStore;
    let store = store().await;
    let sid = format!("SM{}", uuid::Uuid::new_v4().simple());

    let from_api = inbound_message(&sid);
    let InboundInsert::Created(_) = store
        .insert_inbound(InboundSource::Api, &from_api)
        .await
        .unwrap()
    else {
        panic!("the API's message is new");
    };
    let from_twilio = inbound_message(&sid);
    let InboundInsert::Created(created) = store
        .insert_inbound(InboundSource::Twilio, &from_twilio)
        .await
        .unwrap()
    else {
        panic!("the same id from Twilio is another message, not the API's");
    };
    assert_eq!(created.id, from_twilio.id);
    let again = inbound_message(&sid);
    let InboundInsert::Duplicate(first) = store
        .insert_inbound(InboundSource::Twilio, &again)
        .await
        .unwrap()
    else {
        panic!("Twilio's retry is the same message");
    };
    assert_eq!(
        first.id, from_twilio.id,
        "Twilio's own message, not the API's"
    );

    let now = OffsetDateTime::now_utc().unix_timestamp();
    let day = 86_400;
    for source in ["api", "twilio"] {
        let expiry = item_expiry(&format!("INBOUND#{source}#{sid}")).await;
        let expires = expiry
            .flatten()
            .unwrap_or_else(|| panic!("{source} guard with expires_at: {expiry:?}"));
        assert!(
            (now + 6 * day..=now + 8 * day).contains(&expires),
            "{source}: 7 days, got {}",
            expires - now
        );
    }
    assert_eq!(
        item_expiry(&format!("INBOUND#{sid}")).await,
        None,
        "no shared namespace"
    );

    // The provider's id of a sent message leads only that provider's reports to it.
    let message = outbound_message();
    store.insert_outbound(&message, None).await.unwrap();
    let held = lease(time::Duration::seconds(60));
    let claimed = store
        .claim(&message.id, &held, OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert!(matches!(claimed, Claim::Claimed(_)), "{claimed:?}");
    let sent = Completion::Sent {
        provider: ProviderKind::Twilio,
        provider_message_id: Some(sid.clone()),
    };
    store
        .complete(&message.id, &held.id, &sent, OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(
        store
            .find_by_provider_id(ProviderKind::Twilio, &sid)
            .await
            .unwrap(),
        Some(message.id.clone())
    );
    assert_eq!(
        store
            .find_by_provider_id(ProviderKind::SendGrid, &sid)
            .await
            .unwrap(),
        None
    );
    let expires = item_expiry(&format!("PROVIDER#twilio#{sid}"))
        .await
        .flatten()
        .expect("mapping with expires_at");
    assert!(
        (now + 29 * day..=now + 31 * day).contains(&expires),
        "30 days, got {}",
        expires - now
    );
}

#[tokio::test]
async fn a_lease_admits_one_delivery_at_a_time() {
    let store = store().await;
    let message = outbound_message();
    store.insert_outbound(&message, None).await.unwrap();
    let now = OffsetDateTime::now_utc();

    let first = lease(time::Duration::seconds(60));
    let Claim::Claimed(claimed) = store.claim(&message.id, &first, now).await.unwrap() else {
        panic!("first claim must succeed");
    };
    assert_eq!(claimed.status, Status::Sending);
    assert_eq!(claimed.attempts, 1);

    let second = lease(time::Duration::seconds(60));
    assert!(matches!(
        store.claim(&message.id, &second, now).await.unwrap(),
        Claim::Busy { .. }
    ));

    // Only the lease holder may record the outcome.
    let sent = Completion::Sent {
        provider: shared::domain::ProviderKind::Twilio,
        provider_message_id: Some("SM123".into()),
    };
    assert!(matches!(
        store.complete(&message.id, &second.id, &sent, now).await,
        Err(StoreError::Conflict(_))
    ));
    store
        .complete(&message.id, &first.id, &sent, now)
        .await
        .unwrap();

    let settled = store.claim(&message.id, &second, now).await.unwrap();
    let Claim::Settled(settled) = settled else {
        panic!("a sent message is settled, got {settled:?}");
    };
    assert_eq!(settled.status, Status::Sent);
    assert_eq!(settled.provider_message_id.as_deref(), Some("SM123"));
    assert_eq!(
        store
            .claim("01932c07-0000-7000-8000-00000000dead", &second, now)
            .await
            .unwrap(),
        Claim::NotFound
    );
}

#[tokio::test]
async fn an_expired_lease_can_be_taken_over() {
    let store = store().await;
    let message = outbound_message();
    store.insert_outbound(&message, None).await.unwrap();
    let now = OffsetDateTime::now_utc();
    let crashed = lease(time::Duration::seconds(5));
    assert!(matches!(
        store.claim(&message.id, &crashed, now).await.unwrap(),
        Claim::Claimed(_)
    ));

    let later = now + time::Duration::seconds(10);
    let takeover = lease(time::Duration::seconds(60));
    let Claim::Claimed(m) = store.claim(&message.id, &takeover, later).await.unwrap() else {
        panic!("an expired lease must be taken over");
    };
    assert_eq!(m.attempts, 2);
    // The crashed holder can no longer record anything.
    let failed = Completion::Failed {
        reason: "late".into(),
    };
    assert!(
        store
            .complete(&message.id, &crashed.id, &failed, later)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn retry_requeues_with_the_reason() {
    let store = store().await;
    let message = outbound_message();
    store.insert_outbound(&message, None).await.unwrap();
    let now = OffsetDateTime::now_utc();
    let l = lease(time::Duration::seconds(60));
    store.claim(&message.id, &l, now).await.unwrap();
    let next = now + time::Duration::seconds(30);
    let retry = Completion::Retry {
        reason: "twilio answered 500".into(),
        next_attempt_at: next,
    };
    store
        .complete(&message.id, &l.id, &retry, now)
        .await
        .unwrap();
    let m = store.get(&message.id).await.unwrap().unwrap();
    assert_eq!(m.status, Status::Queued);
    assert_eq!(m.last_error.as_deref(), Some("twilio answered 500"));
    let history: Vec<(Status, Option<&str>)> = m
        .history
        .iter()
        .map(|h| (h.status, h.error.as_deref()))
        .collect();
    assert_eq!(
        history,
        vec![
            (Status::Queued, None),
            (Status::Sending, None),
            (Status::Queued, Some("twilio answered 500"))
        ]
    );
    assert_eq!(
        m.next_attempt_at.map(|t| t.unix_timestamp()),
        Some(next.unix_timestamp())
    );
    assert!(matches!(
        store
            .claim(&message.id, &lease(time::Duration::seconds(60)), now)
            .await
            .unwrap(),
        Claim::Claimed(_)
    ));
}

#[tokio::test]
async fn enqueue_and_postpone_through_sqs() {
    let (client, url) = private_queue().await;
    let queue = SqsQueue::new(client.clone(), &url);
    queue
        .enqueue("01932c07-0000-7000-8000-000000000001", Duration::ZERO)
        .await
        .unwrap();
    let received = client
        .receive_message()
        .queue_url(&url)
        .wait_time_seconds(2)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    assert_eq!(received.len(), 1);
    let body = received[0].body().unwrap();
    assert_eq!(
        decode_body(body).unwrap(),
        "01932c07-0000-7000-8000-000000000001"
    );

    // Postponing hides the message for the delay, then it comes back.
    queue
        .postpone(
            received[0].receipt_handle().unwrap(),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    let hidden = client
        .receive_message()
        .queue_url(&url)
        .send()
        .await
        .unwrap();
    assert!(
        hidden.messages.unwrap_or_default().is_empty(),
        "postponed message must be invisible"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let back = client
        .receive_message()
        .queue_url(&url)
        .wait_time_seconds(2)
        .send()
        .await
        .unwrap();
    assert_eq!(
        back.messages.unwrap_or_default().len(),
        1,
        "postponed message must come back"
    );
    client.delete_queue().queue_url(&url).send().await.unwrap();
}

#[tokio::test]
async fn a_delayed_enqueue_becomes_visible_after_the_delay() {
    let (client, url) = private_queue().await;
    let queue = SqsQueue::new(client.clone(), &url);
    queue
        .enqueue(
            "01932c07-0000-7000-8000-000000000002",
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    let early = client
        .receive_message()
        .queue_url(&url)
        .send()
        .await
        .unwrap();
    assert!(
        early.messages.unwrap_or_default().is_empty(),
        "delayed message must not be visible yet"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let later = client
        .receive_message()
        .queue_url(&url)
        .wait_time_seconds(2)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    assert_eq!(later.len(), 1, "delayed message must arrive");
    assert_eq!(
        decode_body(later[0].body().unwrap()).unwrap(),
        "01932c07-0000-7000-8000-000000000002"
    );
    client.delete_queue().queue_url(&url).send().await.unwrap();
}

#[tokio::test]
async fn a_failed_enqueue_is_a_503_and_leaves_nothing_stored() {
    let store = store().await;
    let client = aws_sdk_sqs::Client::new(&aws().await);
    let broken = SqsQueue::new(client, format!("{}-does-not-exist", env("QUEUE_URL")));
    let marker = marker();
    let key = IdempotencyKey::parse(&uuid::Uuid::new_v4().to_string()).unwrap();
    let payload = json!({"from": "+18045551234", "to": phone(), "type": "sms", "body": marker});
    let payload = payload.as_object().unwrap();
    let err = accept_outbound(&store, &broken, &SendRules::default(), payload, Some(&key))
        .await
        .expect_err("enqueue into a missing queue must fail");
    assert!(matches!(err, AcceptError::Unavailable(_)), "{err:?}");
    assert_eq!(ApiError::from(err).status(), 503);
    assert_eq!(
        stored_with_marker(&marker).await,
        0,
        "the message must be rolled back"
    );

    // The key was released with it: a retry with a working queue is accepted anew.
    let (client, url) = private_queue().await;
    let working = SqsQueue::new(client.clone(), &url);
    let retried = accept_outbound(&store, &working, &SendRules::default(), payload, Some(&key))
        .await
        .unwrap();
    assert!(
        matches!(retried, OutboundAccepted::Queued(_)),
        "{retried:?}"
    );
    client.delete_queue().queue_url(&url).send().await.unwrap();
}

#[tokio::test]
async fn concurrent_requests_with_one_idempotency_key_queue_one_message() {
    let store = store().await;
    let (client, url) = private_queue().await;
    let queue = SqsQueue::new(client.clone(), &url);
    let key = IdempotencyKey::parse(&format!("order-{}", uuid::Uuid::new_v4())).unwrap();
    let payload = json!({"from": "+18045551234", "to": phone(), "type": "sms", "body": "once"});
    let payload = payload.as_object().unwrap();
    let senders = SendRules::default();
    let results = futures::future::join_all(
        (0..20).map(|_| accept_outbound(&store, &queue, &senders, payload, Some(&key))),
    )
    .await;
    let mut queued = Vec::new();
    let mut replayed = Vec::new();
    for result in results {
        match result.expect("accepted") {
            OutboundAccepted::Queued(m) => queued.push(m.id),
            OutboundAccepted::Replayed { message_id, .. } => replayed.push(message_id),
        }
    }
    assert_eq!(queued.len(), 1, "exactly one request stores and queues");
    assert!(replayed.iter().all(|id| *id == queued[0]));
    let attributes = client
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default();
    let depth = &attributes[&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages];
    assert_eq!(depth, "1", "one queue entry");

    // The same key with another body is a conflict.
    let other = json!({"from": "+18045551234", "to": phone(), "type": "sms", "body": "different"});
    let err = accept_outbound(
        &store,
        &queue,
        &SendRules::default(),
        other.as_object().unwrap(),
        Some(&key),
    )
    .await
    .unwrap_err();
    assert_eq!(ApiError::from(err).status(), 409);
    client.delete_queue().queue_url(&url).send().await.unwrap();
}

/// The stack's SQS, reached only after `delay`: a first request that is still
/// enqueueing while its repeat arrives.
struct SlowQueue {
    inner: SqsQueue,
    delay: std::time::Duration,
}

impl DeliveryQueue for SlowQueue {
    async fn enqueue(
        &self,
        message_id: &str,
        delay: std::time::Duration,
    ) -> Result<(), shared::ports::QueueError> {
        tokio::time::sleep(self.delay).await;
        self.inner.enqueue(message_id, delay).await
    }
}

#[tokio::test]
async fn a_repeat_during_a_first_request_that_fails_is_a_new_request_not_its_replay() {
    let store = store().await;
    let client = aws_sdk_sqs::Client::new(&aws().await);
    let failing = SlowQueue {
        inner: SqsQueue::new(client, format!("{}-does-not-exist", env("QUEUE_URL"))),
        delay: std::time::Duration::from_millis(600),
    };
    let (client, url) = private_queue().await;
    let working = SqsQueue::new(client.clone(), &url);
    let key = IdempotencyKey::parse(&uuid::Uuid::new_v4().to_string()).unwrap();
    let marker = marker();
    let payload = json!({"from": "+18045551234", "to": phone(), "type": "sms", "body": marker});
    let payload = payload.as_object().unwrap();
    let rules = SendRules::default();

    let (first, repeat) = tokio::join!(
        accept_outbound(&store, &failing, &rules, payload, Some(&key)),
        async {
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
            accept_outbound(&store, &working, &rules, payload, Some(&key)).await
        }
    );

    assert!(
        matches!(first, Err(AcceptError::Unavailable(_))),
        "{first:?}"
    );
    let Ok(OutboundAccepted::Queued(message)) = repeat else {
        panic!("the repeat must be accepted anew, not told the first succeeded: {repeat:?}");
    };
    assert_eq!(
        stored_with_marker(&marker).await,
        1,
        "only the repeat's message"
    );
    let kept = store.get(&message.id).await.unwrap();
    assert!(kept.is_some());
    client.delete_queue().queue_url(&url).send().await.unwrap();
}

#[tokio::test]
async fn a_repeat_while_the_first_request_is_still_running_gets_409_then_the_first_answer() {
    let store = store().await;
    let (client, url) = private_queue().await;
    let slow = SlowQueue {
        inner: SqsQueue::new(client.clone(), &url),
        delay: std::time::Duration::from_secs(5),
    };
    let working = SqsQueue::new(client.clone(), &url);
    let key = IdempotencyKey::parse(&uuid::Uuid::new_v4().to_string()).unwrap();
    let payload = json!({"from": "+18045551234", "to": phone(), "type": "sms", "body": "slow"});
    let payload = payload.as_object().unwrap();
    let rules = SendRules::default();

    let (first, repeat) = tokio::join!(
        accept_outbound(&store, &slow, &rules, payload, Some(&key)),
        async {
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
            accept_outbound(&store, &working, &rules, payload, Some(&key)).await
        }
    );

    let Ok(OutboundAccepted::Queued(message)) = first else {
        panic!("{first:?}");
    };
    let err = repeat.expect_err("still in progress after the wait");
    assert!(
        matches!(err, AcceptError::IdempotencyKeyInProgress),
        "{err:?}"
    );
    let answer = ApiError::from(err);
    assert_eq!(answer.status(), 409);
    let later = accept_outbound(&store, &working, &rules, payload, Some(&key))
        .await
        .unwrap();
    let OutboundAccepted::Replayed { message_id, .. } = later else {
        panic!("{later:?}");
    };
    assert_eq!(message_id, message.id);
    client.delete_queue().queue_url(&url).send().await.unwrap();
}
