//! The cold-start bench's Lambda host: one function process behind a minimal
//! [Runtime API] that hands out the given events in order and records when the
//! process asked for each (`GET /next`) and answered it. The first ask after the
//! spawn ends Lambda's init phase.
//!
//! [Runtime API]: https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::Value;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// What the Runtime API saw: a request for the next event, or an answer.
enum Seen {
    Asked(Instant),
    Answered(Instant, Result<Bytes, Bytes>),
}

struct Host {
    events: Mutex<VecDeque<Value>>,
    seen: mpsc::UnboundedSender<Seen>,
}

/// The timings of one invocation.
pub struct Timing {
    /// Spawn to the first `/next` (cold invocations only).
    pub init: Option<Duration>,
    /// `/next` to the response.
    pub invocation: Duration,
}

/// One function process serving `events` in order.
pub struct Function {
    child: Child,
    seen: mpsc::UnboundedReceiver<Seen>,
    spawned: Instant,
    invocations: usize,
}

impl Function {
    /// Spawns `binary` with a Runtime API that serves `events`.
    pub async fn start(binary: &Path, events: Vec<Value>) -> Result<Self> {
        let (tx, seen) = mpsc::unbounded_channel();
        let host = Arc::new(Host {
            events: Mutex::new(events.into()),
            seen: tx,
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(answer))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(error))
            .with_state(host);
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        let name = binary.file_name().unwrap_or_default().to_string_lossy();
        let spawned = Instant::now();
        let child = Command::new(binary)
            .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", name.as_ref())
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self {
            child,
            seen,
            spawned,
            invocations: 0,
        })
    }

    /// The function process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits for the next event to be asked for and answered.
    pub async fn invoke(&mut self) -> Result<(Value, Timing)> {
        let mut asked = None;
        loop {
            let seen = tokio::time::timeout(Duration::from_secs(60), self.seen.recv())
                .await
                .context("the function did not answer within 60 s")?
                .context("the Runtime API stopped")?;
            match (seen, asked) {
                (Seen::Asked(at), None) => asked = Some(at),
                (Seen::Answered(at, answer), Some(asked)) => {
                    let body = answer.map_err(|e| {
                        anyhow::anyhow!("function error: {}", String::from_utf8_lossy(&e))
                    })?;
                    let timing = Timing {
                        init: (self.invocations == 0).then(|| asked - self.spawned),
                        invocation: at - asked,
                    };
                    self.invocations += 1;
                    let response = if body.is_empty() {
                        Value::Null
                    } else {
                        serde_json::from_slice(&body)?
                    };
                    return Ok((response, timing));
                }
                (Seen::Answered(_, Err(e)), None) => {
                    bail!("init error: {}", String::from_utf8_lossy(&e))
                }
                _ => bail!("the runtime asked or answered out of turn"),
            }
        }
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

async fn next(State(host): State<Arc<Host>>) -> impl IntoResponse {
    let _ = host.seen.send(Seen::Asked(Instant::now()));
    let event = host.events.lock().expect("not poisoned").pop_front();
    // No more events: the runtime waits, as between invocations on Lambda.
    let Some(event) = event else {
        return std::future::pending().await;
    };
    let deadline = SystemTime::now() + Duration::from_secs(30);
    let deadline_ms = deadline
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    (
        [
            ("lambda-runtime-aws-request-id", uuid_like()),
            ("lambda-runtime-deadline-ms", deadline_ms.to_string()),
            (
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:000000000000:function:bench".to_owned(),
            ),
        ],
        event.to_string(),
    )
}

fn uuid_like() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("bench-{nanos}")
}

async fn answer(
    State(host): State<Arc<Host>>,
    UrlPath(_id): UrlPath<String>,
    body: Bytes,
) -> StatusCode {
    let _ = host.seen.send(Seen::Answered(Instant::now(), Ok(body)));
    StatusCode::ACCEPTED
}

async fn error(State(host): State<Arc<Host>>, body: Bytes) -> StatusCode {
    let _ = host.seen.send(Seen::Answered(Instant::now(), Err(body)));
    StatusCode::ACCEPTED
}
