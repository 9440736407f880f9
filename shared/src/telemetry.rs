//! Logging set-up shared by every binary.

use tracing_subscriber::EnvFilter;

/// JSON logs to stdout (what CloudWatch and Lambda's JSON log format expect).
/// Level from `RUST_LOG`, else `AWS_LAMBDA_LOG_LEVEL`, else `info`. Set
/// `LOG_FORMAT=text` for human-readable local logs.
pub fn init() {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .or_else(|| {
            std::env::var("AWS_LAMBDA_LOG_LEVEL")
                .ok()
                .map(|l| l.to_lowercase())
        })
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        // Lambda adds its own timestamps to every log line.
        .without_time();
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f == "text") {
        builder.init();
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init();
    }
}
