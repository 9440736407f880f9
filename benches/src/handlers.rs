//! Handler overhead without storage or queue: what a function spends on its own per
//! request or record, with the store, queue and provider answering instantly.
//!
//! `cargo xtask bench` runs these and writes the medians into BENCHMARKS.md. To run
//! them alone: `cargo run --release -p benches -- handlers | grep -v '^{'` (the delivery
//! path writes its CloudWatch EMF metric lines to stdout, as it does in Lambda).
//! Criterion keeps its estimates in `$CRITERION_HOME/<group>/<bench>/new/`
//! (`target/criterion` by default).

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use lambda_http::Request;
use serde_json::Value;
use shared::delivery::{Deliverer, DeliveryRecord};
use shared::domain::{
    Direction, Message, RetryPolicy, Status, Suppression, SuppressionChannel, validate_outbound,
};
use shared::http::json_object_body;
use shared::ports::Lift;
use shared::ports::{
    Accepted, Claim, Completion, DeliveryStore, Lease, Page, Position, Provider, ProviderError,
    QueueError, QueueHandOver, QueueVisibility, StoreError, Suppressed, SuppressionList,
};
use shared::sqs_trigger::delivery_records;
use shared::views::MessageView;
use time::OffsetDateTime;

const OUTBOUND_SMS: &str = include_str!("../../events/outbound-sms.json");

/// The functions' logging: JSON lines at `info` (as `shared::telemetry::init` sets it
/// up in Lambda), written to a sink instead of stdout.
fn install_lambda_logging() {
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_target(false)
        .without_time()
        .with_writer(std::io::sink)
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .finish();
    let _ = tracing::subscriber::set_global_default(subscriber);
}

fn outbound_request() -> Request {
    lambda_http::request::from_str(OUTBOUND_SMS).expect("outbound-sms.json is an API Gateway event")
}

/// A request's body as the outbound function reads it: a JSON object.
fn body_of(request: &Request) -> serde_json::Map<String, serde_json::Value> {
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok());
    json_object_body(content_type, request.body().as_ref()).expect("a JSON object")
}

/// The outbound function's own work on a request: body → JSON object → validation →
/// the stored message → its JSON (the 202 body).
fn accept(request: &Request) -> String {
    let payload = body_of(request);
    let new = validate_outbound(&payload).expect("a valid message");
    let message = Message::accept(new, Direction::Outbound, OffsetDateTime::now_utc());
    serde_json::to_string(&MessageView::from(&message)).expect("serializable")
}

fn outbound(c: &mut Criterion) {
    install_lambda_logging();
    let mut group = c.benchmark_group("outbound");
    let request = outbound_request();
    group.bench_function("parse_validate_serialize", |b| {
        b.iter(|| accept(black_box(&request)));
    });
    // Also the API Gateway v2 event's own deserialization (what lambda_http does
    // before the handler runs).
    group.bench_function("from_event", |b| {
        b.iter(|| {
            let request = lambda_http::request::from_str(black_box(OUTBOUND_SMS))
                .expect("an API Gateway event");
            accept(&request)
        });
    });
    group.finish();
}

// ---- delivery fakes: answer at once, remember nothing -----------------------------

/// A store whose every claim succeeds with `message` and every completion is accepted.
struct InstantStore {
    message: Message,
}

impl DeliveryStore for InstantStore {
    async fn claim(
        &self,
        id: &str,
        _lease: &Lease,
        _now: OffsetDateTime,
    ) -> Result<Claim, StoreError> {
        let mut message = self.message.clone();
        id.clone_into(&mut message.id);
        Ok(Claim::Claimed(message))
    }

    async fn complete(
        &self,
        _id: &str,
        _lease_id: &str,
        completion: &Completion,
        _now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        black_box(completion);
        Ok(())
    }
}

/// Nobody has opted out: the send path's check reads an empty list.
impl SuppressionList for InstantStore {
    async fn suppressions_of(
        &self,
        _channel: SuppressionChannel,
        _address: &str,
    ) -> Result<Vec<Suppression>, StoreError> {
        Ok(Vec::new())
    }

    async fn suppress(&self, entry: &Suppression) -> Result<Suppressed, StoreError> {
        Ok(Suppressed::Added(entry.clone()))
    }

    async fn lift(
        &self,
        _channel: SuppressionChannel,
        _address: &str,
        _which: &Lift,
    ) -> Result<Vec<Suppression>, StoreError> {
        Ok(Vec::new())
    }

    async fn suppression_page(
        &self,
        _channel: Option<SuppressionChannel>,
        _limit: usize,
        _after: Option<&Position>,
    ) -> Result<Page<Suppression>, StoreError> {
        Ok(Page {
            items: Vec::new(),
            next: None,
        })
    }
}

struct InstantQueue;

impl QueueHandOver for InstantQueue {
    async fn hand_over(
        &self,
        _message_id: &str,
        _routing: shared::ports::Routing,
        _delay: Duration,
        _hop: u32,
    ) -> Result<(), QueueError> {
        Ok(())
    }
}

impl QueueVisibility for InstantQueue {
    async fn postpone(&self, _receipt_handle: &str, _delay: Duration) -> Result<(), QueueError> {
        Ok(())
    }
}

struct InstantProvider;

impl Provider for InstantProvider {
    async fn send(&self, message: &Message) -> Result<Accepted, ProviderError> {
        black_box(message);
        Ok(Accepted {
            provider_message_id: Some("SM00000000000000000000000000000000".to_owned()),
        })
    }
}

/// A claimed outbound SMS, as the store hands it to a delivery.
fn claimed_message() -> Message {
    let payload = body_of(&outbound_request());
    let new = validate_outbound(&payload).expect("a valid message");
    let mut message = Message::accept(new, Direction::Outbound, OffsetDateTime::now_utc());
    message.status = Status::Sending;
    message.attempts = 1;
    message
}

/// A Lambda SQS event with `n` records naming queued messages.
fn sqs_event(n: usize) -> String {
    let records: Vec<Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "messageId": format!("6f1c7a52-0000-4a8b-9c1e-{i:012}"),
                "receiptHandle": format!("AQEB6f1c7a52-{i:04}=="),
                "body": format!("{{\"id\": \"01932c07-a0c4-7b6e-8000-{i:012}\"}}"),
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": "1730469600000",
                    "SenderId": "AIDAEXAMPLE",
                    "ApproximateFirstReceiveTimestamp": "1730469600100"
                },
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:messages",
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    serde_json::json!({ "Records": records }).to_string()
}

fn delivery(c: &mut Criterion) {
    install_lambda_logging();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a tokio runtime");
    let deliverer = Deliverer::new(
        InstantStore {
            message: claimed_message(),
        },
        InstantQueue,
        InstantProvider,
        RetryPolicy {
            base: Duration::from_secs(5),
            cap: Duration::from_secs(300),
            max_receives: 5,
            max_age: Duration::from_secs(36_000),
        },
        Duration::from_secs(60),
    );
    let record = DeliveryRecord {
        queue_message_id: "6f1c7a52-0001-4a8b-9c1e-000000000001".to_owned(),
        receipt_handle: "AQEB6f1c7a52-0001-4a8b-9c1e-000000000001==".to_owned(),
        message_id: Ok("01932c07-a0c4-7b6e-8000-0000000000a1".to_owned()),
        receive_count: 1,
        hop: 0,
        routing: Default::default(),
    };

    let mut group = c.benchmark_group("delivery");
    group.bench_function("record", |b| {
        b.iter(|| runtime.block_on(deliverer.deliver(black_box(&record))));
    });
    // A full batch of ten as the function gets it: the SQS event's JSON, its records,
    // all ten delivered concurrently.
    let event = sqs_event(10);
    group.bench_function("batch_of_10_from_event", |b| {
        b.iter(|| {
            let event: aws_lambda_events::event::sqs::SqsEvent =
                serde_json::from_str(black_box(&event)).expect("an SQS event");
            let records = delivery_records(&event);
            runtime.block_on(deliverer.deliver_batch(&records, None))
        });
    });
    group.finish();
}

/// `bench handlers`: criterion in benchmark mode, without plots (criterion's own
/// command-line parsing is left out: `bench` takes the subcommand instead).
pub fn run() {
    let mut criterion = Criterion::default()
        .without_plots()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    outbound(&mut criterion);
    delivery(&mut criterion);
    criterion.final_summary();
}
