//! The delivery function's entry point, the driving side of the queue: the
//! Lambda SQS event in (its records as delivery records), the delivery logic
//! within the invocation's deadline, the partial batch response out. The queue
//! itself (send, change visibility) is [`crate::adapters::sqs`].

use std::time::SystemTime;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use lambda_runtime::LambdaEvent;

use crate::adapters::sqs::{Queued, decode_queued};
use crate::delivery::{Deliverer, DeliveryRecord};
use crate::local;
use crate::metrics::{self, Metric, name};
use crate::ports::{
    DeliveryStore, Provider, QueueHandOver, QueueVisibility, Routing, SuppressionList,
};

fn queued(record: &SqsMessage) -> Result<Queued, String> {
    record
        .body
        .as_deref()
        .ok_or_else(|| "record has no body".to_owned())
        .and_then(decode_queued)
}

/// The records of a Lambda SQS event, as delivery records.
pub fn delivery_records(event: &SqsEvent) -> Vec<DeliveryRecord> {
    event
        .records
        .iter()
        .map(|r| {
            // The body is read once; an unreadable one keeps its reason.
            let (message_id, hop, routing) = match queued(r) {
                Ok(q) => (Ok(q.message_id), q.hop, q.routing),
                Err(reason) => (Err(reason), 0, Routing::default()),
            };
            DeliveryRecord {
                queue_message_id: r.message_id.clone().unwrap_or_default(),
                receipt_handle: r.receipt_handle.clone().unwrap_or_default(),
                message_id,
                hop,
                routing,
                receive_count: r
                    .attributes
                    .get("ApproximateReceiveCount")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1),
            }
        })
        .collect()
}

/// Runs one Lambda invocation of the delivery function: every record of the
/// event, concurrently, within the invocation's deadline.
pub async fn handle_event<S, Q, P>(
    deliverer: &Deliverer<S, Q, P>,
    event: LambdaEvent<SqsEvent>,
) -> SqsBatchResponse
where
    S: DeliveryStore + SuppressionList,
    Q: QueueHandOver + QueueVisibility,
    P: Provider,
{
    let records = delivery_records(&event.payload);
    let deadline = local::deadline(event.context.deadline, SystemTime::now());
    let failed = deliverer.deliver_batch(&records, deadline).await;
    tracing::info!(
        request_id = %event.context.request_id,
        records = records.len(),
        failed = failed.len(),
        "batch handled"
    );
    metrics::emit(
        &[
            Metric::count(name::BATCH_SIZE, records.len() as u64),
            Metric::count(name::BATCH_FAILURES, failed.len() as u64),
        ],
        &[],
    );
    batch_response(failed)
}

/// The partial batch response naming the records to receive again.
pub fn batch_response(failed_queue_message_ids: Vec<String>) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failed_queue_message_ids
        .into_iter()
        .map(|id| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            failure
        })
        .collect();
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_from_the_lambda_event() {
        let event: SqsEvent = serde_json::from_value(serde_json::json!({"Records": [
            {"messageId": "m1", "receiptHandle": "r1", "body": "{\"id\":\"a\"}",
             "attributes": {"ApproximateReceiveCount": "3"}, "messageAttributes": {},
             "eventSource": "aws:sqs"},
            {"messageId": "m2", "receiptHandle": "r2", "body": "garbage",
             "attributes": {}, "messageAttributes": {}}
        ]}))
        .unwrap();
        let records = delivery_records(&event);
        assert_eq!(records[0].message_id.as_deref(), Ok("a"));
        assert_eq!(records[0].receive_count, 3);
        assert_eq!(records[0].receipt_handle, "r1");
        assert!(records[1].message_id.is_err());
        assert_eq!(records[1].receive_count, 1);
    }

    #[test]
    fn batch_response_names_only_failures() {
        let json = serde_json::to_value(batch_response(vec!["m2".into()])).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"batchItemFailures": [{"itemIdentifier": "m2"}]})
        );
        let json = serde_json::to_value(batch_response(vec![])).unwrap();
        assert_eq!(json, serde_json::json!({"batchItemFailures": []}));
    }
}
