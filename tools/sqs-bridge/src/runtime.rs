//! A minimal host for a Lambda function binary: the bridge plays the Lambda service
//! through the [Runtime API] that `lambda_runtime` speaks, so that crashes and timeouts
//! behave as on AWS (the invocation fails, the next one gets a fresh runtime process).
//!
//! One [`Worker`] runs at most one invocation at a time, like one Lambda execution
//! environment: it owns a Runtime API server on `127.0.0.1:<ephemeral port>` and at most
//! one child process of the function binary, started on demand.
//!
//! [Runtime API]: https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tracing::{info, warn};
use uuid::Uuid;

/// How long a runtime may take to exit after SIGTERM (and after SIGKILL) on shutdown.
const EXIT_WAIT: Duration = Duration::from_secs(2);
/// Lambda's payload limit for synchronous invocations.
const PAYLOAD_LIMIT: usize = 6 * 1024 * 1024;
/// The account id in the function ARN (the one local emulators use).
const ACCOUNT_ID: &str = "000000000000";

const REQUEST_ID: HeaderName = HeaderName::from_static("lambda-runtime-aws-request-id");
const DEADLINE_MS: HeaderName = HeaderName::from_static("lambda-runtime-deadline-ms");
const FUNCTION_ARN: HeaderName = HeaderName::from_static("lambda-runtime-invoked-function-arn");
const TRACE_ID: HeaderName = HeaderName::from_static("lambda-runtime-trace-id");
const ERROR_TYPE: &str = "lambda-runtime-function-error-type";

/// Why an invocation failed. For the event source mapping every variant means the
/// whole batch failed.
#[derive(Debug)]
pub enum FunctionError {
    /// The runtime process could not be started.
    Start(io::Error),
    /// The function reported an error (`POST /runtime/invocation/{id}/error`).
    Reported { error_type: String, body: String },
    /// The runtime process exited before completing the invocation (a crash). The next
    /// invocation starts a new one.
    Exited(String),
    /// The invocation did not complete within the function timeout; the runtime was
    /// killed and the next invocation starts a new one.
    Timeout(Duration),
    /// The function's response is unusable (not JSON).
    InvalidResponse(String),
}

impl FunctionError {
    /// `true` when the function could not even be started (callers back off).
    pub fn is_start_failure(&self) -> bool {
        matches!(self, Self::Start(_))
    }
}

impl fmt::Display for FunctionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Start(e) => write!(f, "cannot start runtime: {e}"),
            Self::Reported { error_type, body } => {
                let excerpt: String = body.chars().take(500).collect();
                write!(f, "function reported {error_type}: {excerpt}")
            }
            Self::Exited(status) => write!(f, "runtime exited with {status}"),
            Self::Timeout(timeout) => write!(
                f,
                "task timed out after {:.2} seconds; runtime killed",
                timeout.as_secs_f64()
            ),
            Self::InvalidResponse(e) => write!(f, "invalid response: {e}"),
        }
    }
}

impl std::error::Error for FunctionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Start(e) => Some(e),
            _ => None,
        }
    }
}

/// Where the time of one invocation went (see [`Worker::invoke_timed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvokeTiming {
    /// From spawning the runtime process to its first `GET /runtime/invocation/next`
    /// (Lambda's init phase); `None` when the process was already running.
    pub init: Option<Duration>,
    /// From handing the event out (`/next`) to the runtime posting its response.
    pub invocation: Duration,
}

/// What the runtime posted for an invocation.
enum Completion {
    Response(Bytes),
    Error { error_type: String, body: Bytes },
}

/// The invocation a worker is running (at most one).
struct Pending {
    id: String,
    event: Bytes,
    deadline_ms: u64,
    arn: String,
    trace_id: String,
    /// Handed out by `/invocation/next`.
    delivered: bool,
    done: oneshot::Sender<Completion>,
}

#[derive(Default)]
struct RuntimeState {
    /// Bumped whenever a runtime process is replaced (or the worker goes away): a
    /// `/next` request that arrived under an older generation came from a process that
    /// is gone, and must not take the event meant for its successor.
    generation: u64,
    invocation: Option<Pending>,
    /// When the current invocation's event was handed out, and when its result arrived.
    delivered_at: Option<Instant>,
    completed_at: Option<Instant>,
}

/// State shared between a worker and its Runtime API server.
#[derive(Default)]
struct Shared {
    state: Mutex<RuntimeState>,
    changed: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, RuntimeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, f: impl FnOnce(&mut RuntimeState)) {
        f(&mut self.lock());
        self.changed.notify_waiters();
    }

    /// Completes the delivered invocation `id`; `false` if there is no such invocation.
    fn complete(&self, id: &str, completion: Completion) -> bool {
        let pending = {
            let mut state = self.lock();
            let pending = state.invocation.take_if(|p| p.delivered && p.id == id);
            if pending.is_some() {
                state.completed_at = Some(Instant::now());
            }
            pending
        };
        match pending {
            Some(pending) => {
                // The worker may have given up on it in the meantime; nothing to do then.
                let _ = pending.done.send(completion);
                true
            }
            None => false,
        }
    }
}

/// One Lambda execution environment for a function binary.
pub struct Worker {
    binary: PathBuf,
    name: String,
    timeout: Duration,
    arn: String,
    region: String,
    addr: SocketAddr,
    shared: Arc<Shared>,
    child: Option<Child>,
    /// When the current runtime process was spawned.
    spawned_at: Option<Instant>,
    server: JoinHandle<()>,
}

impl Worker {
    /// Starts the Runtime API server; the function process starts with the first
    /// invocation. The region (for the function ARN and, if unset, the function's
    /// `AWS_REGION`) comes from `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`;
    /// see [`Worker::with_region`].
    pub async fn start(binary: impl Into<PathBuf>, timeout: Duration) -> io::Result<Self> {
        let binary = binary.into();
        let name = binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not a file path", binary.display()),
                )
            })?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .layer(DefaultBodyLimit::max(PAYLOAD_LIMIT))
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                warn!("runtime API server on {addr} failed: {e}");
            }
        });
        let region = ["AWS_REGION", "AWS_DEFAULT_REGION"]
            .into_iter()
            .find_map(|var| std::env::var(var).ok().filter(|v| !v.is_empty()))
            .unwrap_or_else(|| "us-east-1".to_owned());
        Ok(Self {
            arn: function_arn(&region, &name),
            region,
            binary,
            name,
            timeout,
            addr,
            shared,
            child: None,
            spawned_at: None,
            server,
        })
    }

    /// Sets the region of the function ARN (and of `AWS_REGION` if the bridge has none).
    #[must_use]
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = region.into();
        self.arn = function_arn(&self.region, &self.name);
        self
    }

    /// The Runtime API address (`AWS_LAMBDA_RUNTIME_API` of the function process).
    pub fn runtime_api(&self) -> SocketAddr {
        self.addr
    }

    /// The function name (the binary's file name).
    pub fn function_name(&self) -> &str {
        &self.name
    }

    /// The process id of the current runtime process, if one is running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Invokes the function with `event` and waits for the first of: its response, its
    /// reported error, the runtime process exiting, or the function timeout (which
    /// kills the process). An empty response is `null`.
    pub async fn invoke(&mut self, event: &Value) -> Result<Value, FunctionError> {
        self.invoke_timed(event).await.map(|(response, _)| response)
    }

    /// [`Worker::invoke`], also telling how long the runtime took to initialize (if
    /// this invocation started it) and to answer (`cargo xtask bench` measures cold
    /// starts with it).
    pub async fn invoke_timed(
        &mut self,
        event: &Value,
    ) -> Result<(Value, InvokeTiming), FunctionError> {
        self.reap_idle_exit();
        let cold = self.child.is_none();
        if cold {
            self.spawn().map_err(FunctionError::Start)?;
        }
        let Some(child) = self.child.as_mut() else {
            return Err(FunctionError::Start(io::Error::other("no runtime process")));
        };

        let started = SystemTime::now();
        let deadline_ms = epoch_millis(started + self.timeout);
        let id = Uuid::new_v4().to_string();
        let (done, completion) = oneshot::channel();
        let pending = Pending {
            id,
            event: Bytes::from(event.to_string()),
            deadline_ms,
            arn: self.arn.clone(),
            trace_id: trace_id(started),
            delivered: false,
            done,
        };
        self.shared.update(|s| {
            s.invocation = Some(pending);
            s.delivered_at = None;
            s.completed_at = None;
        });

        let outcome = tokio::select! {
            // A response that arrived just before the process exited still counts.
            biased;
            completion = completion => match completion {
                Ok(Completion::Response(body)) => Ok(body),
                Ok(Completion::Error { error_type, body }) => Err(FunctionError::Reported {
                    error_type,
                    body: String::from_utf8_lossy(&body).into_owned(),
                }),
                // Only the worker itself drops a pending invocation, so this does not happen.
                Err(_) => Err(FunctionError::InvalidResponse("invocation lost".to_owned())),
            },
            status = child.wait() => Err(FunctionError::Exited(describe_exit(status))),
            () = tokio::time::sleep(self.timeout) => Err(FunctionError::Timeout(self.timeout)),
        };
        // Late responses for this invocation get 400 from now on.
        self.shared.update(|s| s.invocation = None);

        match outcome {
            Ok(body) => {
                let (delivered, completed) = {
                    let state = self.shared.lock();
                    (state.delivered_at, state.completed_at)
                };
                let invocation = match (delivered, completed) {
                    (Some(delivered), Some(completed)) => completed.duration_since(delivered),
                    _ => Duration::ZERO,
                };
                let init = match (cold, self.spawned_at, delivered) {
                    (true, Some(spawned), Some(delivered)) => {
                        Some(delivered.duration_since(spawned))
                    }
                    _ => None,
                };
                let timing = InvokeTiming { init, invocation };
                parse_response(&body).map(|response| (response, timing))
            }
            Err(e) => {
                match &e {
                    // Already reaped by `wait`.
                    FunctionError::Exited(_) => self.child = None,
                    FunctionError::Timeout(_) => self.kill().await,
                    _ => {}
                }
                Err(e)
            }
        }
    }

    /// Stops the runtime process: SIGTERM, then SIGKILL if it has not exited in time.
    pub async fn shutdown(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        if terminate(&child) {
            if let Ok(status) = tokio::time::timeout(EXIT_WAIT, child.wait()).await {
                info!("{} runtime stopped: {}", self.name, describe_exit(status));
                return;
            }
            warn!(
                "{} runtime did not exit within {EXIT_WAIT:?} of SIGTERM; killing it",
                self.name
            );
        }
        self.child = Some(child);
        self.kill().await;
    }

    /// Forgets a runtime process that exited while idle; the next invocation starts a new one.
    fn reap_idle_exit(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        match child.try_wait() {
            Ok(None) => {}
            Ok(Some(status)) => {
                warn!(
                    "{} runtime exited while idle ({status}); starting a new one",
                    self.name
                );
                self.child = None;
            }
            Err(e) => {
                warn!("cannot check {} runtime: {e}; replacing it", self.name);
                // Dropping kills it (`kill_on_drop`).
                self.child = None;
            }
        }
    }

    fn spawn(&mut self) -> io::Result<()> {
        let mut command = Command::new(&self.binary);
        command
            .env("AWS_LAMBDA_RUNTIME_API", self.addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", &self.name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{}", self.name),
            )
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "local")
            .env("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
            // One invocation at a time per execution environment.
            .env_remove("AWS_LAMBDA_MAX_CONCURRENCY")
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for var in ["AWS_REGION", "AWS_DEFAULT_REGION"] {
            if std::env::var_os(var).is_none_or(|v| v.is_empty()) {
                command.env(var, &self.region);
            }
        }
        // Requests still pending from a previous process must not see the next event.
        self.shared.update(|s| s.generation += 1);
        self.spawned_at = Some(Instant::now());
        let child = command
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.binary.display())))?;
        info!(
            pid = child.id(),
            runtime_api = %self.addr,
            "started {} runtime",
            self.name
        );
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILLs and reaps the runtime process (bounded).
    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            if tokio::time::timeout(EXIT_WAIT, child.wait()).await.is_err() {
                warn!("{} runtime did not exit after SIGKILL", self.name);
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.server.abort();
        // Releases `/next` requests still waiting; the child is killed by `kill_on_drop`.
        self.shared.update(|s| {
            s.generation += 1;
            s.invocation = None;
        });
    }
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("binary", &self.binary)
            .field("runtime_api", &self.addr)
            .field("pid", &self.pid())
            .finish_non_exhaustive()
    }
}

/// `GET /2018-06-01/runtime/invocation/next`: waits for this worker's next event.
async fn next(State(shared): State<Arc<Shared>>) -> Response {
    let generation = shared.lock().generation;
    loop {
        let mut changed = pin!(shared.changed.notified());
        changed.as_mut().enable();
        {
            let mut state = shared.lock();
            if state.generation != generation {
                return (StatusCode::GONE, "runtime instance replaced").into_response();
            }
            if let Some(pending) = state.invocation.as_mut().filter(|p| !p.delivered) {
                pending.delivered = true;
                let response = event_response(pending);
                state.delivered_at = Some(Instant::now());
                return response;
            }
        }
        changed.await;
    }
}

fn event_response(pending: &Pending) -> Response {
    let mut headers = HeaderMap::new();
    let mut insert = |name: HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    insert(REQUEST_ID, &pending.id);
    insert(DEADLINE_MS, &pending.deadline_ms.to_string());
    insert(FUNCTION_ARN, &pending.arn);
    insert(TRACE_ID, &pending.trace_id);
    insert(header::CONTENT_TYPE, "application/json");
    (StatusCode::OK, headers, pending.event.clone()).into_response()
}

/// `POST /2018-06-01/runtime/invocation/{id}/response`
async fn response(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Response {
    accepted_or_unknown(shared.complete(&id, Completion::Response(body)), &id)
}

/// `POST /2018-06-01/runtime/invocation/{id}/error`
async fn error(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let error_type = error_type(&headers, &body);
    let completion = Completion::Error { error_type, body };
    accepted_or_unknown(shared.complete(&id, completion), &id)
}

/// `POST /2018-06-01/runtime/init/error`: the runtime failed to initialize (and exits).
async fn init_error(headers: HeaderMap, body: Bytes) -> Response {
    let error_type = error_type(&headers, &body);
    let excerpt: String = String::from_utf8_lossy(&body).chars().take(500).collect();
    warn!("function init error ({error_type}): {excerpt}");
    accepted()
}

fn accepted_or_unknown(found: bool, id: &str) -> Response {
    if found {
        return accepted();
    }
    warn!("runtime posted a result for unknown request id {id:?}");
    let body = json!({
        "errorMessage": format!("Invalid request ID: {id:?}"),
        "errorType": "InvalidRequestID",
    });
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

fn accepted() -> Response {
    (StatusCode::ACCEPTED, axum::Json(json!({ "status": "OK" }))).into_response()
}

/// The error type from the header, else from the `errorType` of a JSON body.
fn error_type(headers: &HeaderMap, body: &[u8]) -> String {
    headers
        .get(ERROR_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            serde_json::from_slice::<Value>(body)
                .ok()?
                .get("errorType")?
                .as_str()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "Unhandled".to_owned())
}

fn parse_response(body: &[u8]) -> Result<Value, FunctionError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body)
        .map_err(|e| FunctionError::InvalidResponse(format!("response is not JSON: {e}")))
}

fn describe_exit(status: io::Result<ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(e) => format!("unknown status ({e})"),
    }
}

fn function_arn(region: &str, name: &str) -> String {
    format!("arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{name}")
}

fn epoch_millis(time: SystemTime) -> u64 {
    let millis = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    u64::try_from(millis).unwrap_or(u64::MAX)
}

/// An X-Ray trace header: `Root=1-<epoch seconds, hex>-<96 random bits, hex>;...`.
fn trace_id(now: SystemTime) -> String {
    let seconds = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let root = Uuid::new_v4().simple().to_string();
    let parent = Uuid::new_v4().simple().to_string();
    format!(
        "Root=1-{seconds:08x}-{};Parent={};Sampled=0",
        &root[..24],
        &parent[..16]
    )
}

/// Sends SIGTERM; `false` if that was not possible (the caller then kills).
#[cfg(unix)]
fn terminate(child: &Child) -> bool {
    // `id` is `None` once the child has been reaped, so the pid cannot be reused yet.
    let Some(pid) = child.id().and_then(|pid| libc::pid_t::try_from(pid).ok()) else {
        return false;
    };
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, libc::SIGTERM) == 0 }
}

#[cfg(not(unix))]
fn terminate(_child: &Child) -> bool {
    false
}

/// Fails unless `path` is an existing file (so that a typo fails at startup rather than
/// at the first invocation).
pub fn check_binary(path: &Path) -> io::Result<()> {
    let metadata = std::fs::metadata(path)?;
    if metadata.is_file() {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::InvalidInput, "not a file"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_id_shape() {
        let id = trace_id(UNIX_EPOCH + Duration::from_secs(0x5759_e988));
        let (root, rest) = id.split_once(';').unwrap();
        let parts: Vec<&str> = root.trim_start_matches("Root=").split('-').collect();
        assert_eq!(parts[0], "1");
        assert_eq!(parts[1], "5759e988");
        assert_eq!(parts[2].len(), 24);
        assert!(rest.starts_with("Parent="));
    }

    #[test]
    fn error_type_from_header_or_body() {
        let mut headers = HeaderMap::new();
        assert_eq!(error_type(&headers, b"{}"), "Unhandled");
        assert_eq!(
            error_type(&headers, br#"{"errorType":"&str","errorMessage":"x"}"#),
            "&str"
        );
        headers.insert(ERROR_TYPE, HeaderValue::from_static("Runtime.InitError"));
        assert_eq!(error_type(&headers, b"{}"), "Runtime.InitError");
    }

    #[test]
    fn responses() {
        assert_eq!(parse_response(b"").unwrap(), Value::Null);
        assert_eq!(parse_response(b" \n").unwrap(), Value::Null);
        assert_eq!(parse_response(b"{\"a\":1}").unwrap(), json!({"a": 1}));
        assert!(parse_response(b"nope").is_err());
    }
}
