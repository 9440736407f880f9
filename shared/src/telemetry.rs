//! Logging set-up shared by every binary.
//!
//! What is logged: ids (Lambda request id, message id, conversation id, SQS
//! message id), statuses, provider names, timings and error texts. What is never
//! logged: credentials, authorization headers and message bodies (only their
//! length); `tests/tests/logging.rs` checks this on a real delivery.

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// JSON logs to stdout (what CloudWatch and Lambda's JSON log format expect),
/// and EMF metric lines to stdout too. Level from `RUST_LOG`, else
/// `AWS_LAMBDA_LOG_LEVEL`, else `info`. Set `LOG_FORMAT=text` for
/// human-readable local logs.
pub fn init() {
    crate::metrics::init(crate::metrics::Stdout);
    let filter = std::env::var("RUST_LOG")
        .ok()
        .or_else(|| {
            std::env::var("AWS_LAMBDA_LOG_LEVEL")
                .ok()
                .map(|l| l.to_lowercase())
        })
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f == "text") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_target(false)
            .without_time()
            .init();
    } else {
        tracing::subscriber::set_global_default(json_subscriber(filter, std::io::stdout))
            .unwrap_or_else(|e| eprintln!("logging was already set up: {e}"));
    }
}

/// The JSON subscriber every function uses in Lambda, writing to `writer`.
pub fn json_subscriber<W>(filter: EnvFilter, writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        // Lambda adds its own timestamps to every log line.
        .without_time()
        .with_writer(writer)
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .finish()
}
