//! CloudWatch metrics in the Embedded Metric Format (EMF): one JSON line on
//! stdout per event worth counting, which CloudWatch Logs turns into metrics. No
//! API calls, no extra permissions.
//!
//! [`documents`] builds the lines (pure, testable); [`emit`] writes them to the
//! [`MetricSink`] chosen once with [`init`], by default straight to stdout
//! ([`Stdout`]), not through `tracing`, whose JSON formatter would wrap them. Every
//! metric has the dimension `Service`; the extra dimensions given to [`emit`] add
//! a second dimension set, so a metric can be read both in total and split:
//!
//! ```text
//! {"_aws":{"Timestamp":1730469600000,"CloudWatchMetrics":[{"Namespace":"Messaging",
//!   "Dimensions":[["Service"],["Service","Channel"]],
//!   "Metrics":[{"Name":"MessagesAccepted","Unit":"Count"}]}]},
//!  "Service":"messaging","Channel":"sms","MessagesAccepted":1}
//! ```
//!
//! See <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>.

use std::io::Write;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Number, Value, json};

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "Messaging";
/// The value of the `Service` dimension.
pub const SERVICE: &str = "messaging";

/// The most metrics one directive may hold, and the most values one metric may
/// carry in one document.
pub const MAX_METRICS: usize = 100;
pub const MAX_VALUES: usize = 100;
/// The most dimensions one dimension set may hold.
pub const MAX_DIMENSIONS: usize = 30;

/// Metric names. Alarms and dashboards refer to them: do not rename.
pub mod name {
    /// An outbound message was stored and queued (dimension `Channel`).
    pub const MESSAGES_ACCEPTED: &str = "MessagesAccepted";
    /// A request was answered 422.
    pub const VALIDATION_REJECTED: &str = "ValidationRejected";
    /// A provider accepted a message (dimension `Channel`).
    pub const MESSAGES_DELIVERED: &str = "MessagesDelivered";
    /// A delivery attempt failed and will be retried (dimension `Reason`).
    pub const DELIVERY_RETRIED: &str = "DeliveryRetried";
    /// A message failed for good (dimension `Channel`).
    pub const MESSAGES_FAILED: &str = "MessagesFailed";
    /// How long one provider call took (dimension `Provider`).
    pub const PROVIDER_LATENCY: &str = "ProviderLatency";
    /// From a message's `created_at` to the provider accepting it.
    pub const MESSAGE_AGE_AT_DELIVERY: &str = "MessageAgeAtDelivery";
    /// Records in one delivery invocation.
    pub const BATCH_SIZE: &str = "BatchSize";
    /// Records of one delivery invocation reported back to the queue.
    pub const BATCH_FAILURES: &str = "BatchFailures";
    /// A stored message could not be counted in its conversation's summary.
    pub const CONVERSATION_SUMMARY_FAILED: &str = "ConversationSummaryFailed";
    /// A webhook was refused for a bad, missing or stale signature or credentials
    /// (dimension `Provider`).
    pub const WEBHOOK_REJECTED: &str = "WebhookRejected";
    /// A provider report moved a message to `delivered` or `failed`
    /// (dimension `Provider`).
    pub const REPORTS_APPLIED: &str = "ReportsApplied";
    /// An inbound email neither SPF nor DKIM vouched for, not stored
    /// (`INBOUND_EMAIL_REQUIRE_AUTH`).
    pub const INBOUND_EMAIL_UNVERIFIED: &str = "InboundEmailUnverified";
    /// A provider's circuit opened: calls to it pause (dimension `Provider`).
    pub const CIRCUIT_OPENED: &str = "CircuitOpened";
    /// A provider refused our credentials (401/403), also as read again from
    /// their store, by `Provider`.
    pub const PROVIDER_AUTH_FAILED: &str = "ProviderAuthFailed";
    /// A message was refused or failed because its recipient opted out.
    pub const SUPPRESSED: &str = "MessagesSuppressed";
    /// An address was added to the suppression list (dimension `Source`:
    /// keyword, api, twilio, sendgrid).
    pub const SUPPRESSIONS_ADDED: &str = "SuppressionsAdded";
}

/// Dimension names.
pub mod dimension {
    /// On every metric, with the value [`super::SERVICE`].
    pub const SERVICE: &str = "Service";
    /// `sms`, `mms` or `email`.
    pub const CHANNEL: &str = "Channel";
    /// `throttled`, `server_error`, `timeout` or `connection`.
    pub const REASON: &str = "Reason";
    /// `twilio` or `sendgrid`.
    pub const PROVIDER: &str = "Provider";
    /// Who added a suppression.
    pub const SOURCE: &str = "Source";
}

/// The CloudWatch units this service uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Count => "Count",
            Self::Milliseconds => "Milliseconds",
        }
    }
}

/// One value of one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: &'static str,
    pub unit: Unit,
    pub value: Number,
}

impl Metric {
    pub fn count(name: &'static str, n: u64) -> Self {
        Self {
            name,
            unit: Unit::Count,
            value: n.into(),
        }
    }

    /// A duration in milliseconds (microsecond precision).
    pub fn milliseconds(name: &'static str, duration: Duration) -> Self {
        let ms = (duration.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
        Self {
            name,
            unit: Unit::Milliseconds,
            value: Number::from_f64(ms).unwrap_or_else(|| 0.into()),
        }
    }
}

/// Writes `metrics` with the `Service` dimension and, if any are given, a second
/// dimension set of `Service` plus `dimensions` (name, value).
pub fn emit(metrics: &[Metric], dimensions: &[(&str, &str)]) {
    for document in documents(metrics, dimensions, now_ms()) {
        write_line(&document.to_string());
    }
}

/// The EMF documents (one JSON line each) for `metrics` at `timestamp_ms`.
/// Usually one; more only if there are more than [`MAX_METRICS`] metric names or
/// more than [`MAX_VALUES`] values of one name. Repeated names are sent as one
/// metric with an array of values. Empty when there is nothing to send.
pub fn documents(metrics: &[Metric], dimensions: &[(&str, &str)], timestamp_ms: u64) -> Vec<Value> {
    let mut members = Map::new();
    members.insert(dimension::SERVICE.to_owned(), SERVICE.into());
    let mut split = vec![dimension::SERVICE];
    for &(name, value) in dimensions {
        if name == dimension::SERVICE || split.contains(&name) {
            continue;
        }
        if split.len() == MAX_DIMENSIONS {
            break;
        }
        members.insert(name.to_owned(), value.into());
        split.push(name);
    }
    let dimension_sets = if split.len() > 1 {
        json!([[dimension::SERVICE], split])
    } else {
        json!([[dimension::SERVICE]])
    };

    // Values grouped by metric name, in the order first seen.
    let mut groups: Vec<(&str, Unit, Vec<Number>)> = Vec::new();
    for metric in metrics {
        match groups.iter_mut().find(|(name, ..)| *name == metric.name) {
            Some((.., values)) => values.push(metric.value.clone()),
            None => groups.push((metric.name, metric.unit, vec![metric.value.clone()])),
        }
    }

    let mut out = Vec::new();
    loop {
        let mut document = members.clone();
        let mut definitions = Vec::new();
        for (name, unit, values) in groups
            .iter_mut()
            .filter(|(.., values)| !values.is_empty())
            .take(MAX_METRICS)
        {
            let taken: Vec<Value> = values
                .drain(..values.len().min(MAX_VALUES))
                .map(Value::Number)
                .collect();
            let value = match <[Value; 1]>::try_from(taken) {
                Ok([single]) => single,
                Err(many) => Value::Array(many),
            };
            document.insert((*name).to_owned(), value);
            definitions.push(json!({ "Name": name, "Unit": unit.as_str() }));
        }
        if definitions.is_empty() {
            return out;
        }
        document.insert(
            "_aws".to_owned(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": dimension_sets,
                    "Metrics": definitions,
                }],
            }),
        );
        out.push(Value::Object(document));
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Where the EMF lines go, one at a time. A sink never fails: metrics never
/// fail a request.
pub trait MetricSink: Send + Sync + 'static {
    fn write_line(&self, line: &str);
}

/// Stdout, where Lambda picks the lines up. A failed write is dropped.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stdout;

impl MetricSink for Stdout {
    fn write_line(&self, line: &str) {
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }
}

static SINK: OnceLock<Box<dyn MetricSink>> = OnceLock::new();

/// Chooses where [`emit`] writes, once per process; `false` (and the sink is
/// dropped) if one was already chosen. Without it, lines go to [`Stdout`].
pub fn init(sink: impl MetricSink) -> bool {
    SINK.set(Box::new(sink)).is_ok()
}

fn write_line(line: &str) {
    match SINK.get() {
        Some(sink) => sink.write_line(line),
        None => Stdout.write_line(line),
    }
}

/// Capturing emitted lines in tests, and checking them against the EMF spec.
#[cfg(test)]
pub(crate) mod testing {
    use std::cell::RefCell;
    use std::marker::PhantomData;

    use serde_json::Value;

    thread_local! {
        static CAPTURED: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
    }

    /// The tests' sink: a line goes to the capture running on its thread, or
    /// else through libtest's output capture (which a direct write to stdout
    /// would bypass).
    struct PerThread;

    impl super::MetricSink for PerThread {
        fn write_line(&self, line: &str) {
            if !capture(line) {
                println!("{line}");
            }
        }
    }

    /// Offers a line to the capture of this thread; false if none is running.
    pub(super) fn capture(line: &str) -> bool {
        CAPTURED.with_borrow_mut(|captured| match captured {
            Some(lines) => {
                lines.push(line.to_owned());
                true
            }
            None => false,
        })
    }

    /// Captures every line emitted on this thread while it lives (tokio's test
    /// runtime runs everything on the test's thread).
    pub(crate) struct Capture {
        _same_thread: PhantomData<*const ()>,
    }

    impl Capture {
        pub(crate) fn start() -> Self {
            // The first capture chooses the tests' sink for the whole process.
            super::init(PerThread);
            CAPTURED.set(Some(Vec::new()));
            Self {
                _same_thread: PhantomData,
            }
        }

        /// Every line so far, parsed; panics if one breaks the EMF spec.
        pub(crate) fn documents(&self) -> Vec<Value> {
            let lines = CAPTURED.with_borrow(|captured| captured.clone().unwrap_or_default());
            let now = super::now_ms();
            lines
                .iter()
                .map(|line| {
                    validate_line(line, now).unwrap_or_else(|e| panic!("invalid EMF ({e}): {line}"))
                })
                .collect()
        }

        /// The documents that carry metric `name`.
        pub(crate) fn with_metric(&self, name: &str) -> Vec<Value> {
            self.documents()
                .into_iter()
                .filter(|d| metric_names(d).contains(&name.to_owned()))
                .collect()
        }

        /// Names of every metric emitted so far, in order.
        pub(crate) fn names(&self) -> Vec<String> {
            self.documents().iter().flat_map(metric_names).collect()
        }
    }

    impl Drop for Capture {
        fn drop(&mut self) {
            CAPTURED.set(None);
        }
    }

    /// The metric names a document's directives declare.
    pub(crate) fn metric_names(document: &Value) -> Vec<String> {
        document["_aws"]["CloudWatchMetrics"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|d| d["Metrics"].as_array().into_iter().flatten())
            .filter_map(|m| m["Name"].as_str().map(str::to_owned))
            .collect()
    }

    /// The dimension sets of a document's first directive.
    pub(crate) fn dimension_sets(document: &Value) -> Value {
        document["_aws"]["CloudWatchMetrics"][0]["Dimensions"].clone()
    }

    /// Units CloudWatch accepts.
    const UNITS: &[&str] = &[
        "Seconds",
        "Microseconds",
        "Milliseconds",
        "Bytes",
        "Kilobytes",
        "Megabytes",
        "Gigabytes",
        "Terabytes",
        "Bits",
        "Kilobits",
        "Megabits",
        "Gigabits",
        "Terabits",
        "Percent",
        "Count",
        "Bytes/Second",
        "Kilobytes/Second",
        "Megabytes/Second",
        "Gigabytes/Second",
        "Terabytes/Second",
        "Bits/Second",
        "Kilobits/Second",
        "Megabits/Second",
        "Gigabits/Second",
        "Terabits/Second",
        "Count/Second",
        "None",
    ];

    /// Checks one emitted line against the EMF specification; `now_ms` is the
    /// time the timestamp must lie within a minute of.
    pub(crate) fn validate_line(line: &str, now_ms: u64) -> Result<Value, String> {
        if line.contains('\n') {
            return Err("a document must be one line".into());
        }
        if line.len() > 256 * 1024 {
            return Err("longer than a CloudWatch Logs event".into());
        }
        let document: Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
        let root = document.as_object().ok_or("root is not an object")?;
        let aws = root
            .get("_aws")
            .and_then(Value::as_object)
            .ok_or("no _aws object")?;
        let timestamp = aws
            .get("Timestamp")
            .and_then(Value::as_u64)
            .ok_or("_aws.Timestamp is not a non-negative integer")?;
        if timestamp.abs_diff(now_ms) > 60_000 {
            return Err(format!(
                "Timestamp {timestamp} is more than a minute from {now_ms}"
            ));
        }
        let directives = aws
            .get("CloudWatchMetrics")
            .and_then(Value::as_array)
            .ok_or("_aws.CloudWatchMetrics is not an array")?;
        if directives.is_empty() {
            return Err("no metric directive".into());
        }
        for directive in directives {
            let namespace = directive["Namespace"]
                .as_str()
                .ok_or("Namespace is not a string")?;
            if namespace.is_empty() || namespace.len() > 255 {
                return Err(format!("Namespace {namespace:?} is empty or too long"));
            }
            let sets = directive["Dimensions"]
                .as_array()
                .ok_or("Dimensions is not an array")?;
            for set in sets {
                let set = set.as_array().ok_or("a dimension set is not an array")?;
                if set.len() > super::MAX_DIMENSIONS {
                    return Err(format!("a dimension set has {} dimensions", set.len()));
                }
                for name in set {
                    let name = name.as_str().ok_or("a dimension name is not a string")?;
                    match root.get(name).and_then(Value::as_str) {
                        Some(value) if !value.is_empty() => {}
                        _ => return Err(format!("dimension {name:?} has no string member")),
                    }
                }
            }
            let metrics = directive["Metrics"]
                .as_array()
                .ok_or("Metrics is not an array")?;
            if metrics.len() > super::MAX_METRICS {
                return Err(format!("{} metrics in one directive", metrics.len()));
            }
            let mut seen = Vec::new();
            for metric in metrics {
                let name = metric["Name"]
                    .as_str()
                    .filter(|n| !n.is_empty() && n.len() <= 1024)
                    .ok_or("a metric has no valid Name")?;
                if seen.contains(&name) {
                    return Err(format!("metric {name:?} declared twice"));
                }
                seen.push(name);
                if let Some(unit) = metric.get("Unit") {
                    let unit = unit.as_str().ok_or("Unit is not a string")?;
                    if !UNITS.contains(&unit) {
                        return Err(format!("{unit:?} is not a CloudWatch unit"));
                    }
                }
                match root.get(name) {
                    Some(Value::Number(_)) => {}
                    Some(Value::Array(values))
                        if !values.is_empty()
                            && values.len() <= super::MAX_VALUES
                            && values.iter().all(Value::is_number) => {}
                    _ => return Err(format!("metric {name:?} has no numeric member")),
                }
            }
        }
        Ok(document)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{Capture, dimension_sets, metric_names, validate_line};
    use super::*;

    const AT: u64 = 1_730_469_600_000;

    fn valid(document: &Value, now: u64) -> Value {
        validate_line(&document.to_string(), now).unwrap_or_else(|e| panic!("{e}: {document}"))
    }

    #[test]
    fn metric_names_are_the_agreed_ones() {
        assert_eq!(
            [
                name::MESSAGES_ACCEPTED,
                name::VALIDATION_REJECTED,
                name::MESSAGES_DELIVERED,
                name::DELIVERY_RETRIED,
                name::MESSAGES_FAILED,
                name::PROVIDER_LATENCY,
                name::MESSAGE_AGE_AT_DELIVERY,
                name::BATCH_SIZE,
                name::BATCH_FAILURES,
            ],
            [
                "MessagesAccepted",
                "ValidationRejected",
                "MessagesDelivered",
                "DeliveryRetried",
                "MessagesFailed",
                "ProviderLatency",
                "MessageAgeAtDelivery",
                "BatchSize",
                "BatchFailures",
            ]
        );
        assert_eq!(
            [
                dimension::SERVICE,
                dimension::CHANNEL,
                dimension::REASON,
                dimension::PROVIDER
            ],
            ["Service", "Channel", "Reason", "Provider"]
        );
    }

    #[test]
    fn one_count_with_a_split_dimension() {
        let docs = documents(
            &[Metric::count(name::MESSAGES_ACCEPTED, 1)],
            &[(dimension::CHANNEL, "sms")],
            AT,
        );
        assert_eq!(
            docs,
            vec![json!({
                "_aws": {
                    "Timestamp": AT,
                    "CloudWatchMetrics": [{
                        "Namespace": "Messaging",
                        "Dimensions": [["Service"], ["Service", "Channel"]],
                        "Metrics": [{"Name": "MessagesAccepted", "Unit": "Count"}],
                    }],
                },
                "Service": "messaging",
                "Channel": "sms",
                "MessagesAccepted": 1,
            })]
        );
        valid(&docs[0], AT);
    }

    #[test]
    fn without_extra_dimensions_only_the_service_set() {
        let docs = documents(
            &[
                Metric::count(name::BATCH_SIZE, 10),
                Metric::count(name::BATCH_FAILURES, 2),
            ],
            &[],
            AT,
        );
        assert_eq!(docs.len(), 1);
        let doc = valid(&docs[0], AT);
        assert_eq!(dimension_sets(&doc), json!([["Service"]]));
        assert_eq!(doc["BatchSize"], 10);
        assert_eq!(doc["BatchFailures"], 2);
        assert_eq!(metric_names(&doc), ["BatchSize", "BatchFailures"]);
    }

    #[test]
    fn milliseconds_keep_fractions() {
        let docs = documents(
            &[Metric::milliseconds(
                name::PROVIDER_LATENCY,
                Duration::from_micros(12_345),
            )],
            &[(dimension::PROVIDER, "twilio")],
            AT,
        );
        let doc = valid(&docs[0], AT);
        assert_eq!(doc["ProviderLatency"], json!(12.345));
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Metrics"],
            json!([{"Name": "ProviderLatency", "Unit": "Milliseconds"}])
        );
        assert_eq!(doc["Provider"], "twilio");
    }

    #[test]
    fn repeated_names_become_arrays_of_at_most_100_values() {
        let metrics: Vec<Metric> = (0..250)
            .map(|i| Metric::count(name::BATCH_SIZE, i))
            .collect();
        let docs = documents(&metrics, &[], AT);
        assert_eq!(docs.len(), 3);
        let lens: Vec<usize> = docs
            .iter()
            .map(|d| valid(d, AT)["BatchSize"].as_array().unwrap().len())
            .collect();
        assert_eq!(lens, [100, 100, 50]);
        assert_eq!(docs[2]["BatchSize"][49], 249);
    }

    #[test]
    fn more_than_100_names_are_split_over_documents() {
        let names: Vec<&'static str> = (0..150)
            .map(|i| &*Box::leak(format!("M{i}").into_boxed_str()))
            .collect();
        let metrics: Vec<Metric> = names.iter().map(|n| Metric::count(n, 1)).collect();
        let docs = documents(&metrics, &[], AT);
        assert_eq!(docs.len(), 2);
        assert_eq!(metric_names(&valid(&docs[0], AT)).len(), 100);
        assert_eq!(metric_names(&valid(&docs[1], AT)).len(), 50);
    }

    #[test]
    fn dimension_sets_stay_within_30_and_service_is_not_repeated() {
        let owned: Vec<(String, String)> = (0..40)
            .map(|i| (format!("D{i}"), format!("v{i}")))
            .collect();
        let mut dims: Vec<(&str, &str)> = vec![("Service", "other"), ("D0", "again")];
        dims.extend(owned.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        let docs = documents(&[Metric::count(name::BATCH_SIZE, 1)], &dims, AT);
        let doc = valid(&docs[0], AT);
        let sets = dimension_sets(&doc);
        assert_eq!(sets[1].as_array().unwrap().len(), MAX_DIMENSIONS);
        assert_eq!(doc["Service"], SERVICE);
        assert_eq!(doc["D0"], "again", "the first value of a name wins");
    }

    #[test]
    fn nothing_to_send_is_no_document() {
        assert!(documents(&[], &[(dimension::CHANNEL, "sms")], AT).is_empty());
    }

    #[test]
    fn the_validator_catches_spec_violations() {
        let good = documents(
            &[Metric::count(name::MESSAGES_FAILED, 1)],
            &[(dimension::CHANNEL, "email")],
            AT,
        )
        .remove(0);
        valid(&good, AT);
        let broken = |edit: &dyn Fn(&mut Value)| {
            let mut doc = good.clone();
            edit(&mut doc);
            validate_line(&doc.to_string(), AT).expect_err(&doc.to_string())
        };
        broken(&|d| d["_aws"]["Timestamp"] = json!(AT as f64 + 0.5));
        broken(&|d| d["_aws"]["Timestamp"] = json!(AT - 61_000));
        broken(&|d| d["_aws"]["Timestamp"] = json!("now"));
        broken(&|d| d["_aws"]["CloudWatchMetrics"] = json!([]));
        broken(&|d| d["_aws"]["CloudWatchMetrics"][0]["Namespace"] = json!(""));
        broken(&|d| d["Channel"] = json!(5));
        broken(&|d| {
            d.as_object_mut().unwrap().remove("Service");
        });
        broken(&|d| d["MessagesFailed"] = json!("1"));
        broken(&|d| d["MessagesFailed"] = json!([]));
        broken(&|d| d["MessagesFailed"] = json!(vec![1; 101]));
        broken(&|d| d["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"] = json!("Things"));
        broken(&|d| {
            d["_aws"]["CloudWatchMetrics"][0]["Dimensions"] =
                json!([(0..31).map(|_| "Service").collect::<Vec<_>>()])
        });
        broken(&|d| {
            d["_aws"]["CloudWatchMetrics"][0]["Metrics"] = json!(
                (0..101)
                    .map(|i| json!({"Name": format!("M{i}")}))
                    .collect::<Vec<_>>()
            )
        });
        assert!(validate_line("{\"_aws\":\n{}}", AT).is_err());
    }

    #[test]
    fn emit_writes_lines_now() {
        let capture = Capture::start();
        emit(
            &[Metric::count(name::DELIVERY_RETRIED, 1)],
            &[(dimension::REASON, "throttled")],
        );
        let docs = capture.documents();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0]["DeliveryRetried"], 1);
        assert_eq!(docs[0]["Reason"], "throttled");
        assert_eq!(capture.names(), ["DeliveryRetried"]);
        drop(capture);
        assert!(!testing::capture("{}"), "the capture ends with its guard");
    }
}
