//! A tiny SQS-triggered Lambda function for the `--function-binary` mode's tests.
//!
//! Per record body: `fail` is reported in `batchItemFailures`, `crash` aborts the
//! process, `slow` sleeps 10 s, `error` makes the handler return an error, `exit` answers
//! and then exits the process shortly after (while idle); anything else succeeds. The
//! response also echoes the invocation context (deadline, request id, ARN, pid) for checks.

use std::time::{Duration, UNIX_EPOCH};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

async fn handler(event: LambdaEvent<SqsEvent>) -> Result<Value, Error> {
    let (event, context) = event.into_parts();
    let mut response = SqsBatchResponse::default();
    for record in event.records {
        let id = record.message_id.unwrap_or_default();
        match record.body.as_deref().unwrap_or_default() {
            "fail" => response.add_failure(id),
            "crash" => std::process::abort(),
            "slow" => tokio::time::sleep(Duration::from_secs(10)).await,
            "error" => return Err(format!("record {id} asked for an error").into()),
            "exit" => {
                std::thread::spawn(|| {
                    std::thread::sleep(Duration::from_millis(200));
                    std::process::exit(3);
                });
            }
            _ => {}
        }
    }
    let deadline_ms = context
        .deadline()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut body = serde_json::to_value(response)?;
    if let Value::Object(fields) = &mut body {
        fields.insert("deadlineMs".into(), json!(deadline_ms));
        fields.insert("requestId".into(), json!(context.request_id));
        fields.insert("functionArn".into(), json!(context.invoked_function_arn));
        fields.insert("traceId".into(), json!(context.xray_trace_id));
        fields.insert("pid".into(), json!(std::process::id()));
    }
    Ok(body)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handler)).await
}
