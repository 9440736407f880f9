//! The `--function-binary` mode's Lambda Runtime API host, driven directly (no SQS) with
//! the `test_function` example, which `cargo test -p sqs-bridge` builds.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sqs_bridge::runtime::{FunctionError, Worker};

const TIMEOUT: Duration = Duration::from_secs(30);

/// `target/<profile>/examples/test_function`, next to this test's `deps` directory.
fn test_function() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable in target/<profile>/deps");
    let binary = profile_dir
        .join("examples")
        .join(format!("test_function{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "{} is missing: run `cargo test -p sqs-bridge` (which builds the examples) or \
         `cargo build -p sqs-bridge --example test_function` first",
        binary.display()
    );
    binary
}

/// An SQS event with one record per `(message id, body)`.
fn event(records: &[(&str, &str)]) -> Value {
    let records: Vec<Value> = records
        .iter()
        .map(|(id, body)| {
            json!({
                "messageId": id,
                "receiptHandle": format!("rh-{id}"),
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": "md5",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:messages",
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    json!({ "Records": records })
}

async fn worker(timeout: Duration) -> Worker {
    Worker::start(test_function(), timeout)
        .await
        .expect("runtime API server")
        .with_region("eu-west-1")
}

fn failures(response: &Value) -> Vec<&str> {
    response["batchItemFailures"]
        .as_array()
        .expect("batchItemFailures list")
        .iter()
        .map(|f| f["itemIdentifier"].as_str().expect("itemIdentifier"))
        .collect()
}

fn pid(response: &Value) -> u64 {
    response["pid"].as_u64().expect("pid in response")
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

#[tokio::test]
async fn reports_failed_records_and_passes_the_context() {
    let mut worker = worker(TIMEOUT).await;
    let before = now_ms();
    let response = worker
        .invoke(&event(&[("a", "ok"), ("b", "fail"), ("c", "hello")]))
        .await
        .expect("invocation succeeds");
    assert_eq!(failures(&response), ["b"]);

    let deadline = u128::from(response["deadlineMs"].as_u64().expect("deadlineMs"));
    let after = now_ms();
    assert!(deadline > after, "deadline {deadline} is not in the future");
    assert!(
        deadline <= after + TIMEOUT.as_millis(),
        "deadline {deadline}"
    );
    assert!(
        deadline >= before + TIMEOUT.as_millis() - 1000,
        "deadline {deadline}"
    );
    assert_eq!(
        response["functionArn"],
        "arn:aws:lambda:eu-west-1:000000000000:function:test_function"
    );
    let request_id = response["requestId"].as_str().expect("requestId");
    assert_eq!(request_id.len(), 36, "{request_id}");
    assert_ne!(request_id, "00000000-0000-0000-0000-000000000000");
    let trace = response["traceId"].as_str().expect("traceId");
    assert!(trace.starts_with("Root=1-"), "{trace}");

    // The same warm process serves the next invocation, with a new request id.
    let again = worker.invoke(&event(&[("d", "ok")])).await.unwrap();
    assert!(failures(&again).is_empty());
    assert_eq!(pid(&again), pid(&response));
    assert_ne!(again["requestId"], response["requestId"]);
    worker.shutdown().await;
}

#[tokio::test]
async fn timed_invocations_report_init_only_when_they_start_the_process() {
    let mut worker = worker(TIMEOUT).await;
    let started = Instant::now();
    let (response, cold) = worker
        .invoke_timed(&event(&[("a", "ok")]))
        .await
        .expect("invocation succeeds");
    let elapsed = started.elapsed();
    assert!(failures(&response).is_empty());
    let init = cold.init.expect("the first invocation starts the process");
    assert!(
        init + cold.invocation <= elapsed,
        "{cold:?} within {elapsed:?}"
    );

    let (_, warm) = worker.invoke_timed(&event(&[("b", "ok")])).await.unwrap();
    assert_eq!(warm.init, None, "the process was already running");
    assert!(warm.invocation < TIMEOUT);
    worker.shutdown().await;
}

#[tokio::test]
async fn crash_fails_the_invocation_and_the_next_one_gets_a_new_process() {
    let mut worker = worker(TIMEOUT).await;
    let first = worker.invoke(&event(&[("a", "ok")])).await.unwrap();

    let crashed = worker
        .invoke(&event(&[("b", "ok"), ("c", "crash")]))
        .await
        .expect_err("a crash is a function error");
    assert!(
        matches!(crashed, FunctionError::Exited(_)),
        "unexpected: {crashed}"
    );
    assert!(
        crashed.to_string().starts_with("runtime exited with"),
        "{crashed}"
    );
    assert_eq!(worker.pid(), None, "the crashed process is reaped");

    let next = worker.invoke(&event(&[("d", "ok")])).await.unwrap();
    assert!(failures(&next).is_empty());
    assert_ne!(
        pid(&next),
        pid(&first),
        "a new process serves the next batch"
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn timeout_kills_the_process_and_the_next_one_gets_a_new_process() {
    let timeout = Duration::from_secs(2);
    let mut worker = worker(timeout).await;
    let first = worker.invoke(&event(&[("a", "ok")])).await.unwrap();
    let first_pid = pid(&first);

    let started = Instant::now();
    let timed_out = worker
        .invoke(&event(&[("b", "slow")]))
        .await
        .expect_err("a timeout is a function error");
    let elapsed = started.elapsed();
    assert!(
        matches!(timed_out, FunctionError::Timeout(t) if t == timeout),
        "unexpected: {timed_out}"
    );
    assert!(elapsed >= timeout, "gave up early: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    assert_eq!(worker.pid(), None);
    #[cfg(target_os = "linux")]
    assert!(
        !std::path::Path::new(&format!("/proc/{first_pid}")).exists(),
        "the timed-out process is gone"
    );

    let next = worker.invoke(&event(&[("c", "ok")])).await.unwrap();
    assert_ne!(pid(&next), first_pid);
    worker.shutdown().await;
}

#[tokio::test]
async fn reported_error_keeps_the_process() {
    let mut worker = worker(TIMEOUT).await;
    let first = worker.invoke(&event(&[("a", "ok")])).await.unwrap();
    let error = worker
        .invoke(&event(&[("b", "error")]))
        .await
        .expect_err("a handler error is a function error");
    match &error {
        FunctionError::Reported { body, .. } => {
            assert!(body.contains("record b asked for an error"), "{body}");
        }
        other => panic!("unexpected: {other}"),
    }
    let next = worker.invoke(&event(&[("c", "ok")])).await.unwrap();
    assert_eq!(
        pid(&next),
        pid(&first),
        "a reported error keeps the process"
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn process_exiting_while_idle_is_replaced() {
    let mut worker = worker(TIMEOUT).await;
    let first = worker.invoke(&event(&[("a", "exit")])).await.unwrap();
    // The example exits 200 ms after answering, while blocked in `/next`.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let next = tokio::time::timeout(
        Duration::from_secs(10),
        worker.invoke(&event(&[("b", "ok")])),
    )
    .await
    .expect("the event is not lost to the dead process's pending /next")
    .unwrap();
    assert_ne!(pid(&next), pid(&first));
    worker.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_the_process_and_unknown_ids_are_rejected() {
    let mut worker = worker(TIMEOUT).await;
    let response = worker.invoke(&event(&[("a", "ok")])).await.unwrap();

    let url = format!(
        "http://{}/2018-06-01/runtime/invocation/{}/response",
        worker.runtime_api(),
        response["requestId"].as_str().unwrap()
    );
    let late = reqwest::Client::new()
        .post(&url)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(late.status(), 400, "a completed invocation is unknown");

    let pid = worker.pid().expect("a running process");
    worker.shutdown().await;
    #[cfg(target_os = "linux")]
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} outlived shutdown"
    );
    let _ = pid;
}
