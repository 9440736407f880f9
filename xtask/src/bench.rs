//! `cargo xtask bench`: how fast and how lean the release functions are, on a fresh
//! local stack. Prints a table (min / median / max over repeated runs) and writes it
//! into BENCHMARKS.md between the `bench:begin` / `bench:end` markers.
//!
//! 1. cold start of each function: its binary behind a minimal Runtime API
//!    (`coldstart.rs`): spawn → first `/next` (init),
//!    `/next` → response (first invocation), and a second, warm invocation;
//! 2. handler overhead without storage or queue: the criterion benches in
//!    `benches/src/handlers.rs`;
//! 3. API latency with wrk at 1, 4 and 16 connections through `cargo lambda watch
//!    --release`, and the emulator's own latency (`benches/src/emulator.rs`);
//! 4. delivery throughput: N messages written straight to the table and a queue of
//!    their own, drained by the release bridge and delivery binary, with the provider
//!    simulator answering after 50 ms and after 0 ms, and one record at a time;
//! 5. peak RSS (VmHWM) of the function processes under that load, and the size of
//!    `cargo lambda build --release --arm64 --output-format zip`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use serde_json::{Value, json};
use shared::adapters::dynamodb::DynamoDbStore;
use shared::adapters::sqs::encode_body;
use shared::domain::{Direction, Message, validate_outbound};
use tokio::process::Command;

use crate::process::{LogSink, Service};
use crate::python::{self, Tools};
use crate::stack::{self, Options, Ports, Stack};

const FUNCTIONS: [&str; 6] = [
    "outbound",
    "inbound",
    "read",
    "suppressions",
    "delivery",
    "webhooks",
];
/// Binaries the stack runs besides the functions (built ahead, so that `cargo lambda
/// watch --release` never compiles during a run).
const STACK_BINARIES: [&str; 2] = ["sqs-bridge", "provider-sim"];
/// The bench program (`benches/`: `bench handlers` and `bench emulator`): criterion's
/// handler benches and the emulator's own latency, a release binary like the functions.
const BENCH_PROGRAM: &str = "bench";
/// `cargo lambda watch --concurrency` (instances per function) during the API runs:
/// as many as the highest wrk concurrency, as Lambda would scale to.
const API_INSTANCES: u32 = 16;
const WRK_CONNECTIONS: [u32; 3] = [1, 4, 16];
/// Queue the API's outbound function sends to during this bench: nothing consumes
/// it, so delivery does not compete with the API for the machine's cores.
const SINK_QUEUE: &str = "bench-api-sink";
const BEGIN: &str = "<!-- bench:begin -->";
const END: &str = "<!-- bench:end -->";
const SMS: &str = r#"{"from":"+18045551234","to":"+12016661234","type":"sms","body":"Hello from the benchmark","attachments":null}"#;

const USAGE: &str = "usage: cargo xtask bench [--quick] [--messages N] [--opt-level LEVEL]
  --quick          a short smoke run (few repetitions); BENCHMARKS.md is not written
  --messages N     messages per delivery throughput run (default 5000)
  --opt-level L    build the functions with opt-level L into target/bench-opt-L and
                   measure only x86_64 sizes, cold starts and handler overhead (the
                   profile comparison); the report goes to target/xtask/bench/opt-level-L.md";

/// How much of everything to do.
struct Plan {
    quick: bool,
    cold_runs: usize,
    wrk_runs: usize,
    wrk_seconds: u32,
    throughput_runs: usize,
    messages: usize,
    sequential_messages: usize,
    pollers: u32,
    opt_level: Option<String>,
}

impl Plan {
    fn parse(args: &[String]) -> Result<Self> {
        let mut plan = Self {
            quick: false,
            cold_runs: 15,
            wrk_runs: 3,
            wrk_seconds: 3,
            throughput_runs: 3,
            messages: 5000,
            sequential_messages: 300,
            pollers: 8,
            opt_level: None,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => plan.quick = true,
                "--messages" => {
                    plan.messages = args
                        .next()
                        .and_then(|n| n.parse().ok())
                        .filter(|n| *n > 0)
                        .ok_or_else(|| anyhow!("--messages needs a positive number"))?;
                }
                "--opt-level" => {
                    let level = args
                        .next()
                        .ok_or_else(|| anyhow!("--opt-level needs a value"))?;
                    if !["0", "1", "2", "3", "s", "z"].contains(&level.as_str()) {
                        bail!("--opt-level must be 0, 1, 2, 3, s or z");
                    }
                    plan.opt_level = Some(level.clone());
                }
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?}\n{USAGE}"),
            }
        }
        if plan.quick {
            plan.cold_runs = 3;
            plan.wrk_runs = 1;
            plan.wrk_seconds = 2;
            plan.throughput_runs = 1;
            plan.messages = plan.messages.min(500);
            plan.sequential_messages = 50;
        }
        Ok(plan)
    }
}

/// Where the measured function binaries come from: the workspace's release profile,
/// or the same with another opt-level in a target directory of its own.
struct Build {
    target_dir: PathBuf,
    env: Vec<(String, String)>,
}

impl Build {
    fn new(root: &Path, opt_level: Option<&str>) -> Self {
        match opt_level {
            None => Self {
                target_dir: root.join("target"),
                env: Vec::new(),
            },
            Some(level) => {
                let target_dir = root.join(format!("target/bench-opt-{level}"));
                Self {
                    env: vec![
                        ("CARGO_PROFILE_RELEASE_OPT_LEVEL".into(), level.into()),
                        (
                            "CARGO_TARGET_DIR".into(),
                            target_dir.to_string_lossy().into_owned(),
                        ),
                    ],
                    target_dir,
                }
            }
        }
    }

    fn binary(&self, name: &str) -> PathBuf {
        self.target_dir.join("release").join(name)
    }

    fn cargo(&self, args: &[&str]) -> std::process::Command {
        let mut command = crate::cargo(args);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }
}

// ---- results --------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Target {
    AtMost(f64),
    AtLeast(f64),
}

struct Row {
    figure: &'static str,
    what: String,
    unit: &'static str,
    values: Vec<f64>,
    target: Option<Target>,
}

struct Summary {
    min: f64,
    median: f64,
    max: f64,
}

fn summary(values: &[f64]) -> Option<Summary> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    Some(Summary {
        min: sorted[0],
        median,
        max: sorted[n - 1],
    })
}

fn number(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        "–".to_owned()
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

impl Row {
    fn new(figure: &'static str, what: impl Into<String>, unit: &'static str) -> Self {
        Self {
            figure,
            what: what.into(),
            unit,
            values: Vec::new(),
            target: None,
        }
    }

    fn values(mut self, values: Vec<f64>) -> Self {
        self.values = values;
        self
    }

    fn target(mut self, target: Target) -> Self {
        self.target = Some(target);
        self
    }

    fn markdown(&self) -> String {
        let (min, median, max) = match summary(&self.values) {
            Some(s) => (number(s.min), number(s.median), number(s.max)),
            None => ("–".into(), "–".into(), "–".into()),
        };
        let target = match (self.target, summary(&self.values)) {
            (None, _) => String::new(),
            (Some(t), s) => {
                let (text, met) = match t {
                    Target::AtMost(x) => (format!("≤ {}", number(x)), s.map(|s| s.median <= x)),
                    Target::AtLeast(x) => (format!("≥ {}", number(x)), s.map(|s| s.median >= x)),
                };
                match met {
                    Some(true) => format!("{text} ✅"),
                    Some(false) => format!("{text} ❌"),
                    None => text,
                }
            }
        };
        format!(
            "| {} | {} | {} | {min} | **{median}** | {max} | {} | {target} |",
            self.figure,
            self.what,
            self.unit,
            self.values.iter().filter(|v| v.is_finite()).count()
        )
    }
}

fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| figure | measurement | unit | min | median | max | n | target (on the median) |\n\
         |---|---|---|---:|---:|---:|---:|---|\n",
    );
    for row in rows {
        out.push_str(&row.markdown());
        out.push('\n');
    }
    out
}

// ---- entry point ----------------------------------------------------------------

pub async fn run(args: &[String]) -> Result<()> {
    if args.first().map(String::as_str) == Some("--cold-start-child") {
        return cold_start_child(&args[1..]).await;
    }
    let plan = Plan::parse(args)?;
    let started = Instant::now();
    let root = crate::root();
    if plan.opt_level.is_none() {
        ensure_wrk()?;
    }
    let tools = python::ensure(&root)?;
    let work = root.join("target/xtask/bench");
    let logs = work.join("logs");
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs)?;
    let build = Build::new(&root, plan.opt_level.as_deref());
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut cpu = Vec::new();
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut timings: Vec<(&str, Duration)> = Vec::new();

    // Builds: warm, these only check that everything is up to date.
    let built_before = if build.binary(FUNCTIONS[0]).exists() {
        "the release binaries were already built: the builds only checked or relinked"
    } else {
        "no release binaries before the run: the builds compiled them and whatever of the \
         dependency tree was missing"
    };
    let phase = Instant::now();
    build_all(&build, plan.opt_level.is_some())?;
    timings.push(("release builds", phase.elapsed()));

    let phase = Instant::now();
    sizes(&root, &tools, &build, &mut rows)?;
    timings.push(("sizes (incl. cargo lambda build --arm64)", phase.elapsed()));

    let phase = Instant::now();
    handler_overhead(&build, &logs, &mut rows)?;
    timings.push(("handler overhead (criterion)", phase.elapsed()));

    println!(
        "xtask: starting the local stack, release builds (logs in {})",
        logs.display()
    );
    let phase = Instant::now();
    let ports = Ports::free()?;
    // ministack's queue URLs are <endpoint>/<account>/<name>; checked once created.
    let sink_url = format!(
        "http://127.0.0.1:{}/000000000000/{SINK_QUEUE}",
        ports.emulator
    );
    let stack = Stack::start(
        &root,
        &tools,
        Options {
            ports,
            sink: LogSink::Dir(logs.clone()),
            function_env: vec![("QUEUE_URL".into(), sink_url.clone())],
            visibility_timeout: None,
            // The opt-level comparison measures no API: one instance each is enough.
            concurrency: if plan.opt_level.is_some() {
                1
            } else {
                API_INSTANCES
            },
            release: true,
            // Delivery figures measure delivery: no provider reports competing
            // for the two cores.
            provider_reports: false,
            api_key: shared::domain::access::generate_key(),
        },
    )
    .await?;
    timings.push(("stack start", phase.elapsed()));

    let result = async {
        let env = Env::new(&stack, &sink_url).await?;
        let phase = Instant::now();
        cold_starts(&root, &build, &env, &plan, &logs, &mut rows).await?;
        timings.push(("cold starts", phase.elapsed()));
        if plan.opt_level.is_some() {
            return Ok(());
        }
        let phase = Instant::now();
        let memory =
            api_latency(&build, &env, &plan, &work, &mut rows, &mut notes, &mut cpu).await?;
        timings.push(("API latency (wrk) + emulator alone", phase.elapsed()));
        let phase = Instant::now();
        throughput(
            &build,
            &env,
            &plan,
            &logs,
            memory,
            &mut rows,
            (&mut notes, &mut cpu),
        )
        .await?;
        timings.push(("delivery throughput", phase.elapsed()));
        anyhow::Ok(())
    }
    .await;
    stack.stop().await;
    result?;

    let total = started.elapsed();
    // By figure, in the order measured within each.
    rows.sort_by(|a, b| a.figure.cmp(b.figure));
    let table = table(&rows);
    println!("\n{table}");
    for note in &notes {
        println!("note: {note}");
    }
    for line in &cpu {
        println!("cpu: {line}");
    }
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = |l: &str| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    notes.push(format!(
        "load average (1, 5, 15 min) at the start: {}; at the end: {}",
        load(&load_before),
        load(&load_after)
    ));
    let mut phases = String::new();
    for (name, took) in &timings {
        let _ = writeln!(phases, "| {name} | {:.0} s |", took.as_secs_f64());
    }
    let _ = writeln!(phases, "| **total** | **{:.0} s** |", total.as_secs_f64());
    let phases = format!(
        "Time taken ({built_before}; not counting the build of xtask itself, which \
         `cargo xtask` runs first):\n\n| phase | took |\n|---|---:|\n{phases}"
    );
    println!("\n{phases}");
    let report = report(&root, args, &table, &notes, &cpu, &phases)?;
    match (&plan.opt_level, plan.quick) {
        (Some(level), _) => {
            let path = work.join(format!("opt-level-{level}.md"));
            std::fs::write(&path, report)?;
            println!("xtask: wrote {}", path.display());
        }
        (None, true) => println!("xtask: --quick: BENCHMARKS.md left as it is"),
        (None, false) => {
            write_benchmarks(&root.join("BENCHMARKS.md"), &report)?;
            println!("xtask: wrote BENCHMARKS.md");
        }
    }
    Ok(())
}

/// The release binaries the bench measures and runs, the benches, the arm64 zips.
fn build_all(build: &Build, variant: bool) -> Result<()> {
    let bins = |names: &[&str]| -> Vec<String> {
        names
            .iter()
            .flat_map(|n| ["--bin".to_owned(), (*n).to_owned()])
            .collect()
    };
    println!("xtask: release builds");
    // The stack's own release binaries (cargo lambda watch --release runs the
    // functions from target/release: build them the same way, workspace-wide).
    // One cargo invocation for all of them, the bench program included: one build of
    // the dependency tree, with the feature set every workspace-wide build resolves.
    let mut stack_bins = bins(&FUNCTIONS);
    stack_bins.extend(bins(&STACK_BINARIES));
    let mut measured_bins = bins(&[BENCH_PROGRAM]);
    let mut args = vec!["build", "--release"];
    args.extend(stack_bins.iter().map(String::as_str));
    if variant {
        // The stack's binaries come from the workspace's own release profile; the
        // functions and the bench program measured, from the variant's.
        python::run(&mut crate::cargo(&args))?;
        measured_bins.extend(bins(&FUNCTIONS));
        let mut args = vec!["build", "--release"];
        args.extend(measured_bins.iter().map(String::as_str));
        python::run(&mut build.cargo(&args))?;
    } else {
        args.extend(measured_bins.iter().map(String::as_str));
        python::run(&mut crate::cargo(&args))?;
    }
    Ok(())
}

// ---- 5b. sizes ------------------------------------------------------------------

fn sizes(root: &Path, tools: &Tools, build: &Build, rows: &mut Vec<Row>) -> Result<()> {
    for function in FUNCTIONS {
        let bytes = std::fs::metadata(build.binary(function))?.len();
        rows.push(
            Row::new("5 size", format!("{function}: x86_64 binary"), "MB")
                .values(vec![bytes as f64 / 1e6]),
        );
    }
    if !build.env.is_empty() {
        // The opt-level comparison: a whole aarch64 build per level is not worth it;
        // the x86_64 sizes compare the levels.
        return Ok(());
    }
    println!("xtask: cargo lambda build --release --arm64 --output-format zip");
    let mut command = std::process::Command::new(tools.exe("cargo-lambda"));
    command
        .current_dir(root)
        .args([
            "lambda",
            "build",
            "--release",
            "--arm64",
            "--output-format",
            "zip",
        ])
        .args(FUNCTIONS.iter().flat_map(|f| ["--bin", f]))
        .env("PATH", tools.path_env())
        .envs(build.env.iter().map(|(k, v)| (k, v)));
    python::run(&mut command)?;
    for function in FUNCTIONS {
        let zip = build
            .target_dir
            .join("lambda")
            .join(function)
            .join("bootstrap.zip");
        let bytes = std::fs::metadata(&zip)
            .with_context(|| format!("{} (from cargo lambda build)", zip.display()))?
            .len();
        rows.push(
            Row::new("5 size", format!("{function}: arm64 bootstrap.zip"), "MB")
                .values(vec![bytes as f64 / 1e6])
                .target(Target::AtMost(6.0)),
        );
    }
    Ok(())
}

// ---- 2. handler overhead --------------------------------------------------------

/// `(group, bench, what, records)`: a bench over a whole SQS event of several records
/// is also reported per record (the target is per request, and per record for delivery).
const CRITERION_BENCHES: [(&str, &str, &str, usize); 4] = [
    (
        "outbound",
        "parse_validate_serialize",
        "outbound: body → validate → accept → JSON",
        1,
    ),
    (
        "outbound",
        "from_event",
        "outbound: the same from the API Gateway event",
        1,
    ),
    (
        "delivery",
        "record",
        "delivery: one record (instant store/queue/provider)",
        1,
    ),
    (
        "delivery",
        "batch_of_10_from_event",
        "delivery: SQS event of 10 records, end to end",
        10,
    ),
];

fn handler_overhead(build: &Build, logs: &Path, rows: &mut Vec<Row>) -> Result<()> {
    println!(
        "xtask: handler overhead (criterion; log in {})",
        logs.display()
    );
    let log = std::fs::File::create(logs.join("criterion.log"))?;
    // stdout carries the delivery path's EMF metric lines: discarded.
    let criterion_home = build.target_dir.join("criterion");
    python::run(
        std::process::Command::new(build.binary(BENCH_PROGRAM))
            .arg("handlers")
            .env("CRITERION_HOME", &criterion_home)
            .stdout(Stdio::null())
            .stderr(log),
    )?;
    for (group, bench, what, records) in CRITERION_BENCHES {
        let path = criterion_home
            .join(group)
            .join(bench)
            .join("new/sample.json");
        let sample: Value = serde_json::from_slice(
            &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        )?;
        let column = |name: &str| -> Vec<f64> {
            sample[name]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default()
        };
        // Each sample is `iters` iterations taking `times` ns: its mean per iteration.
        let per_iteration: Vec<f64> = column("iters")
            .iter()
            .zip(column("times"))
            .map(|(iters, ns)| ns / iters / 1000.0)
            .collect();
        if records == 1 {
            rows.push(
                Row::new("2 handler", what, "µs")
                    .values(per_iteration)
                    .target(Target::AtMost(200.0)),
            );
        } else {
            let per_record = per_iteration.iter().map(|us| us / records as f64).collect();
            rows.push(Row::new("2 handler", what, "µs").values(per_iteration));
            rows.push(
                Row::new("2 handler", format!("{what}, per record"), "µs")
                    .values(per_record)
                    .target(Target::AtMost(200.0)),
            );
        }
    }
    Ok(())
}

// ---- the running stack ----------------------------------------------------------

/// What the measurements need from the running stack.
struct Env {
    /// The environment the functions get (the sink queue as QUEUE_URL).
    vars: Vec<(String, String)>,
    api_url: String,
    /// The stack's API key (every scope), sent with every API request.
    api_key: String,
    simulator_url: String,
    emulator_url: String,
    ddb: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
    http: reqwest::Client,
}

impl Env {
    async fn new(stack: &Stack, sink_url: &str) -> Result<Self> {
        let ddb = aws_sdk_dynamodb::Client::new(&stack::aws_config(&stack.dynamodb.url).await);
        let sqs = aws_sdk_sqs::Client::new(&stack::aws_config(&stack.sqs.url).await);
        let created = sqs
            .create_queue()
            .queue_name(SINK_QUEUE)
            .send()
            .await
            .context("creating the sink queue")?
            .queue_url
            .unwrap_or_default();
        if created != sink_url {
            bail!(
                "the emulator named the sink queue {created:?}, not {sink_url:?}: the \
                 functions were started with the wrong QUEUE_URL"
            );
        }
        let api_key = stack
            .env
            .iter()
            .find(|(name, _)| name == "MESSAGING_API_KEY")
            .map(|(_, key)| key.clone())
            .ok_or_else(|| anyhow!("the stack has no MESSAGING_API_KEY"))?;
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {api_key}").parse()?,
        );
        let mut vars = stack.env.clone();
        // `Command::envs` keeps the last value of a name: the sink queue wins.
        vars.push(("QUEUE_URL".into(), sink_url.to_owned()));
        Ok(Self {
            vars,
            api_url: stack.api_url.clone(),
            simulator_url: stack.simulator_url.clone().ok_or_else(|| {
                anyhow!(
                    "the bench needs the provider simulator (unset TWILIO_API_URL/SENDGRID_API_URL)"
                )
            })?,
            emulator_url: stack.emulator_url.clone(),
            ddb,
            sqs,
            http: reqwest::Client::builder()
                .default_headers(headers)
                .build()?,
            api_key,
        })
    }

    async fn set_provider_latency(&self, ms: u64) -> Result<()> {
        self.http
            .put(format!("{}/_sim/config", self.simulator_url))
            .json(&json!({ "latency_ms": ms }))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    async fn provider_requests(&self) -> Result<u64> {
        let stats: Value = self
            .http
            .get(format!("{}/_sim/stats", self.simulator_url))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        stats["total"]
            .as_u64()
            .ok_or_else(|| anyhow!("provider-sim stats without total: {stats}"))
    }

    /// Writes `messages` queued outbound SMS straight to the table (what the outbound
    /// function stores); returns their ids.
    async fn seed(&self, messages: usize) -> Result<Vec<String>> {
        let items: Vec<(String, _)> = (0..messages)
            .map(|_| {
                let m = sms_message();
                let item = DynamoDbStore::message_item(&m).map_err(|e| anyhow!("{e}"));
                item.map(|item| (m.id, item))
            })
            .collect::<Result<_>>()?;
        let ids = items.iter().map(|(id, _)| id.clone()).collect();
        let chunks: Vec<Vec<WriteRequest>> = items
            .chunks(25)
            .map(|chunk| {
                chunk
                    .iter()
                    .map(|(_, item)| {
                        PutRequest::builder()
                            .set_item(Some(item.clone()))
                            .build()
                            .map(|put| WriteRequest::builder().put_request(put).build())
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<_, _>>()?;
        in_parallel(chunks, 8, |chunk| {
            let ddb = self.ddb.clone();
            async move {
                let mut pending = chunk;
                for _ in 0..20 {
                    let output = ddb
                        .batch_write_item()
                        .request_items(stack::TABLE_NAME, pending)
                        .send()
                        .await
                        .context("BatchWriteItem")?;
                    pending = output
                        .unprocessed_items
                        .and_then(|mut u| u.remove(stack::TABLE_NAME))
                        .unwrap_or_default();
                    if pending.is_empty() {
                        return Ok(());
                    }
                }
                bail!("BatchWriteItem kept items unprocessed")
            }
        })
        .await?;
        Ok(ids)
    }

    /// Sends one queue message per id (10 per SendMessageBatch).
    async fn enqueue(&self, queue_url: &str, ids: &[String]) -> Result<()> {
        let chunks: Vec<Vec<String>> = ids.chunks(10).map(<[String]>::to_vec).collect();
        in_parallel(chunks, 8, |chunk| {
            let (sqs, queue_url) = (self.sqs.clone(), queue_url.to_owned());
            async move {
                let entries = chunk
                    .iter()
                    .enumerate()
                    .map(|(i, id)| {
                        SendMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .message_body(encode_body(id))
                            .build()
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let output = sqs
                    .send_message_batch()
                    .queue_url(queue_url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .context("SendMessageBatch")?;
                if !output.failed().is_empty() {
                    bail!("SendMessageBatch failed for {:?}", output.failed());
                }
                Ok(())
            }
        })
        .await
    }

    async fn queue_depth(&self, queue_url: &str) -> Result<u64> {
        let attributes = self
            .sqs
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await?
            .attributes
            .unwrap_or_default();
        Ok(attributes
            .values()
            .filter_map(|v| v.parse::<u64>().ok())
            .sum())
    }

    async fn create_queue(&self, name: &str) -> Result<String> {
        self.sqs
            .create_queue()
            .queue_name(name)
            .attributes(QueueAttributeName::VisibilityTimeout, "180")
            .send()
            .await
            .with_context(|| format!("creating queue {name}"))?
            .queue_url
            .ok_or_else(|| anyhow!("queue {name} has no URL"))
    }
}

fn sms_message() -> Message {
    let payload: Value = serde_json::from_str(SMS).expect("SMS is JSON");
    let new = validate_outbound(payload.as_object().expect("an object")).expect("a valid SMS");
    Message::accept(new, Direction::Outbound, time::OffsetDateTime::now_utc())
}

/// Runs `work` on every item, at most `limit` at a time; the first error wins.
async fn in_parallel<T, F, Fut>(items: Vec<T>, limit: usize, work: F) -> Result<()>
where
    T: Send + 'static,
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for item in items {
        if set.len() >= limit
            && let Some(joined) = set.join_next().await
        {
            joined??;
        }
        set.spawn(work(item));
    }
    while let Some(joined) = set.join_next().await {
        joined??;
    }
    Ok(())
}

// ---- memory: VmHWM of running function processes --------------------------------

/// Processes running `exe` whose environment holds `marker` (`NAME=value`).
fn processes(exe: &Path, marker: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let exe = exe.canonicalize().unwrap_or_else(|_| exe.to_path_buf());
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let runs_exe = std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| {
                // A binary rebuilt while running shows as "<path> (deleted)".
                p == exe
                    || p.to_string_lossy().trim_end_matches(" (deleted)") == exe.to_string_lossy()
            });
            runs_exe
                && std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()))
        })
        .collect()
}

/// Peak resident set size of a process (VmHWM), in KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Highest VmHWM seen per process, per function.
#[derive(Default)]
struct Memory(BTreeMap<&'static str, BTreeMap<u32, u64>>);

impl Memory {
    fn sample(&mut self, function: &'static str, exe: &Path, marker: &str) {
        for pid in processes(exe, marker) {
            if let Some(kib) = vm_hwm_kib(pid) {
                let peak = self.0.entry(function).or_default().entry(pid).or_default();
                *peak = (*peak).max(kib);
            }
        }
    }

    fn rows(&self, rows: &mut Vec<Row>, load: &str) {
        for (function, peaks) in &self.0 {
            rows.push(
                Row::new(
                    "5 memory",
                    format!("{function}: peak RSS per process under {load}"),
                    "MB",
                )
                .values(
                    peaks
                        .values()
                        .map(|kib| *kib as f64 * 1024.0 / 1e6)
                        .collect(),
                )
                .target(Target::AtMost(30.0)),
            );
        }
    }
}

// ---- 1. cold starts -------------------------------------------------------------

/// `bench --cold-start-child BINARY EVENTS OUT`: runs in its own process (so that the
/// functions' logs go to a file): per pair of events in EVENTS (a JSON list), a fresh
/// runtime process, invoked once cold and once warm.
async fn cold_start_child(args: &[String]) -> Result<()> {
    let [binary, events, out] = args else {
        bail!("usage: bench --cold-start-child BINARY EVENTS OUT");
    };
    let events: Vec<Value> = serde_json::from_slice(
        &std::fs::read(events).with_context(|| format!("reading {events}"))?,
    )?;
    let mut runs = Vec::new();
    for pair in events.chunks(2) {
        let started = Instant::now();
        let mut function = crate::coldstart::Function::start(Path::new(binary), pair.to_vec())
            .await
            .with_context(|| format!("starting {binary} behind a Runtime API"))?;
        let (response, cold) = function.invoke().await.context("cold invocation")?;
        let total = started.elapsed();
        let pid = function.pid();
        let warm = match pair.len() {
            2 => Some(function.invoke().await.context("warm invocation")?.1),
            _ => None,
        };
        let hwm = pid.and_then(vm_hwm_kib);
        function.stop().await;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        runs.push(json!({
            "init_ms": cold.init.map(ms),
            "first_ms": ms(cold.invocation),
            "total_ms": ms(total),
            "warm_ms": warm.map(|w| ms(w.invocation)),
            "hwm_kib": hwm,
            "response": response,
        }));
    }
    std::fs::write(out, serde_json::to_vec(&runs)?)?;
    Ok(())
}

async fn cold_starts(
    root: &Path,
    build: &Build,
    env: &Env,
    plan: &Plan,
    logs: &Path,
    rows: &mut Vec<Row>,
) -> Result<()> {
    println!("xtask: cold starts ({} per function)", plan.cold_runs);
    let fixture = |name: &str| -> Result<Value> {
        let path = root.join("events").join(name);
        Ok(serde_json::from_slice(
            &std::fs::read(&path).with_context(|| path.display().to_string())?,
        )?)
    };
    let mut init_rows = Vec::new();
    let mut first_rows = Vec::new();
    let mut warm_rows = Vec::new();
    let mut memory_rows = Vec::new();
    for function in FUNCTIONS {
        let events: Vec<Value> = match function {
            "outbound" => vec![fixture("outbound-sms.json")?; 2 * plan.cold_runs],
            "inbound" => vec![fixture("inbound-sms.json")?; 2 * plan.cold_runs],
            "read" => vec![fixture("get-message-unknown.json")?; 2 * plan.cold_runs],
            "suppressions" => {
                vec![fixture("remove-suppression-unknown.json")?; 2 * plan.cold_runs]
            }
            // A signed Twilio inbound SMS (signed for the Host it names: the
            // function runs without PUBLIC_BASE_URL here, as in `sam local invoke`).
            "webhooks" => vec![fixture("twilio-inbound-sms.json")?; 2 * plan.cold_runs],
            _ => env
                .seed(2 * plan.cold_runs)
                .await?
                .iter()
                .map(|id| sqs_event(id))
                .collect(),
        };
        let dir = logs.join("cold-start");
        std::fs::create_dir_all(&dir)?;
        let events_path = dir.join(format!("{function}-events.json"));
        let out_path = dir.join(format!("{function}-runs.json"));
        std::fs::write(&events_path, serde_json::to_vec(&events)?)?;
        let log = std::fs::File::create(dir.join(format!("{function}.log")))?;
        let status = Command::new(xtask_exe()?)
            .arg("bench")
            .arg("--cold-start-child")
            .arg(build.binary(function))
            .arg(&events_path)
            .arg(&out_path)
            .envs(env.vars.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .await?;
        if !status.success() {
            bail!(
                "cold starts of {function} failed ({status}); see {}",
                dir.join(format!("{function}.log")).display()
            );
        }
        let runs: Vec<Value> = serde_json::from_slice(&std::fs::read(&out_path)?)?;
        for run in &runs {
            check_response(function, &run["response"])?;
        }
        let column =
            |name: &str| -> Vec<f64> { runs.iter().filter_map(|r| r[name].as_f64()).collect() };
        init_rows.push(
            Row::new(
                "1 cold start",
                format!("{function}: init (spawn → first /next)"),
                "ms",
            )
            .values(column("init_ms"))
            .target(Target::AtMost(20.0)),
        );
        first_rows.push(
            Row::new(
                "1 cold start",
                format!("{function}: first invocation (/next → response)"),
                "ms",
            )
            .values(column("first_ms")),
        );
        warm_rows.push(
            Row::new(
                "1 cold start",
                format!("{function}: second (warm) invocation"),
                "ms",
            )
            .values(column("warm_ms")),
        );
        memory_rows.push(
            Row::new(
                "5 memory",
                format!("{function}: peak RSS after two invocations"),
                "MB",
            )
            .values(column("hwm_kib").iter().map(|k| k * 1024.0 / 1e6).collect())
            .target(Target::AtMost(30.0)),
        );
    }
    rows.extend(init_rows);
    rows.extend(first_rows);
    rows.extend(warm_rows);
    rows.extend(memory_rows);
    Ok(())
}

/// This program, also when it was rebuilt while running (Linux then names the old
/// file "<path> (deleted)"; the new one is at the same path).
fn xtask_exe() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    Ok(
        match exe.to_str().and_then(|e| e.strip_suffix(" (deleted)")) {
            Some(path) => PathBuf::from(path),
            None => exe,
        },
    )
}

/// A Lambda SQS event with one record naming message `id`.
fn sqs_event(id: &str) -> Value {
    json!({"Records": [{
        "messageId": format!("sqs-{id}"),
        "receiptHandle": format!("bench-{id}"),
        "body": encode_body(id),
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1730469600000"},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:messages",
        "awsRegion": "us-east-1"
    }]})
}

/// Fails unless a cold-start invocation got the answer its fixture expects.
fn check_response(function: &str, response: &Value) -> Result<()> {
    let status = response["statusCode"].as_u64();
    let ok = match function {
        "outbound" => status == Some(202),
        "inbound" => matches!(status, Some(200 | 201)),
        "read" | "suppressions" => status == Some(404),
        "webhooks" => status == Some(200),
        _ => response["batchItemFailures"]
            .as_array()
            .is_some_and(Vec::is_empty),
    };
    if ok {
        Ok(())
    } else {
        bail!("{function} answered unexpectedly during the cold-start runs: {response}")
    }
}

// ---- 3. API latency -------------------------------------------------------------

struct WrkRun {
    p50_ms: f64,
    p99_ms: f64,
    rps: f64,
    requests: u64,
    failed: u64,
}

/// The route that answers without touching the emulator (a 404 by design).
const NO_IO_ROUTE: &str = "GET /messages/not-a-message-id (404, no I/O)";

const WRK_DONE: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH_WRK %.0f %.0f %d %d %d %d\n",
    latency:percentile(50), latency:percentile(99), summary.requests,
    summary.duration, e.status, e.connect + e.read + e.write + e.timeout))
end
"#;

fn lua_string(s: &str) -> String {
    format!("{s:?}")
}

/// The wrk scripts: `(route, URL, script)`.
fn wrk_scripts(
    env: &Env,
    read_id: &str,
    work: &Path,
) -> Result<Vec<(&'static str, String, PathBuf)>> {
    let api = &env.api_url;
    // Every route measured takes the stack's API key.
    let auth = format!(
        "wrk.headers[\"Authorization\"] = {}\n",
        lua_string(&format!("Bearer {}", env.api_key))
    );
    let post = format!(
        "{auth}wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = {}\n{WRK_DONE}",
        lua_string(SMS)
    );
    let get = format!("{auth}{WRK_DONE}");
    // Inbound needs a new messaging_provider_id per request (else it is a duplicate).
    let run = std::process::id();
    let inbound = format!(
        r#"{auth}wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local n = 0
request = function()
  n = n + 1
  local body = string.format('{{"from":"+12016661234","to":"+18045551234","type":"sms","body":"Inbound from the benchmark","attachments":null,"messaging_provider_id":"bench-{run}-%d-%d-%d"}}', os.time(), tid or 0, n)
  return wrk.format(nil, nil, nil, body)
end
{WRK_DONE}"#
    );
    let mut scripts = Vec::new();
    for (route, url, text) in [
        (
            "POST /messages/outbound",
            format!("{api}/messages/outbound"),
            post,
        ),
        (
            "GET /messages/{id}",
            format!("{api}/messages/{read_id}"),
            get.clone(),
        ),
        (
            "POST /messages/inbound",
            format!("{api}/messages/inbound"),
            inbound,
        ),
        // 404 before any storage call (the id is not a UUID): what the local API
        // plumbing (cargo lambda watch, Runtime API, lambda_http) costs by itself.
        (NO_IO_ROUTE, format!("{api}/messages/not-a-message-id"), get),
    ] {
        let name: String = route.chars().filter(char::is_ascii_alphanumeric).collect();
        let path = work.join(format!("{name}.lua"));
        std::fs::write(&path, text)?;
        scripts.push((route, url, path));
    }
    Ok(scripts)
}

async fn wrk(url: &str, script: &Path, connections: u32, seconds: u32) -> Result<WrkRun> {
    let output = Command::new("wrk")
        .arg(format!("-t{}", connections.min(2)))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("--timeout=10s")
        .arg("-s")
        .arg(script)
        .arg(url)
        .output()
        .await
        .context("running wrk (apt-get install -y wrk)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed: {}{}",
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("BENCH_WRK "))
        .ok_or_else(|| anyhow!("wrk printed no BENCH_WRK line: {stdout}"))?;
    let f: Vec<f64> = line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let [
        p50_us,
        p99_us,
        requests,
        duration_us,
        status_errors,
        socket_errors,
    ] = f[..]
    else {
        bail!("unexpected BENCH_WRK line {line:?}");
    };
    Ok(WrkRun {
        p50_ms: p50_us / 1e3,
        p99_ms: p99_us / 1e3,
        rps: requests / (duration_us / 1e6),
        requests: requests as u64,
        failed: (status_errors + socket_errors) as u64,
    })
}

/// The wrk matrix, then the emulator alone. Returns the API functions' memory peaks.
async fn api_latency(
    build: &Build,
    env: &Env,
    plan: &Plan,
    work: &Path,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
    cpu: &mut Vec<String>,
) -> Result<Memory> {
    // A message to read back.
    let created: Value = env
        .http
        .post(format!("{}/messages/outbound", env.api_url))
        .header("content-type", "application/json")
        .body(SMS)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let read_id = created["id"]
        .as_str()
        .ok_or_else(|| anyhow!("outbound answered without an id: {created}"))?
        .to_owned();
    let scripts = wrk_scripts(env, &read_id, work)?;
    let marker = format!("AWS_ENDPOINT_URL={}", env.emulator_url);
    let mut memory = Memory::default();
    for (route, url, script) in &scripts {
        // Let cargo lambda watch start all its instances before measuring.
        // cargo lambda watch starts instances on demand (each through `cargo run`): load
        // until all of them run, then once more, so that no run pays for a start.
        let function = match *route {
            r if r.contains("outbound") => "outbound",
            r if r.contains("inbound") => "inbound",
            _ => "read",
        };
        for _ in 0..5 {
            wrk(url, script, API_INSTANCES, 3).await?;
            let running = processes(&build.binary(function), &marker).len();
            println!("xtask: wrk {route}: warming up, {running} instances running");
            if running >= API_INSTANCES as usize {
                break;
            }
        }
        wrk(url, script, API_INSTANCES, 2).await?;
        let mut p50 = Vec::new();
        let mut p99 = Vec::new();
        let mut rps = Vec::new();
        for connections in WRK_CONNECTIONS {
            let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
            for i in 0..plan.wrk_runs {
                let before = cpu_snapshot();
                let run = wrk(url, script, connections, plan.wrk_seconds).await?;
                if i == 0 && connections == API_INSTANCES {
                    cpu.push(cpu_line(
                        &format!("wrk {route}, {connections} connections"),
                        &before,
                        &cpu_snapshot(),
                    ));
                }
                println!(
                    "xtask: wrk {route} -c{connections}: p50 {:.2} ms, p99 {:.2} ms, {:.0} req/s ({} requests, {} failed)",
                    run.p50_ms, run.p99_ms, run.rps, run.requests, run.failed
                );
                if run.failed > 0 && *route != NO_IO_ROUTE {
                    notes.push(format!(
                        "{route} at {connections} connections: {} of {} requests failed (non-2xx or socket errors)",
                        run.failed, run.requests
                    ));
                }
                a.push(run.p50_ms);
                b.push(run.p99_ms);
                c.push(run.rps);
            }
            p50.push((connections, a));
            p99.push((connections, b));
            rps.push((connections, c));
        }
        let outbound = route.contains("outbound");
        for (connections, values) in p50 {
            let row =
                Row::new("3 API", format!("{route} p50, {connections} conn."), "ms").values(values);
            rows.push(if outbound {
                row.target(Target::AtMost(5.0))
            } else {
                row
            });
        }
        for (connections, values) in p99 {
            rows.push(
                Row::new("3 API", format!("{route} p99, {connections} conn."), "ms").values(values),
            );
        }
        for (connections, values) in rps {
            rows.push(
                Row::new(
                    "3 API",
                    format!("{route} throughput, {connections} conn."),
                    "req/s",
                )
                .values(values),
            );
        }
        for function in ["outbound", "read", "inbound"] {
            memory.sample(function, &build.binary(function), &marker);
        }
    }
    emulator_alone(build, env, plan, rows)?;
    Ok(memory)
}

/// `benches/src/emulator.rs` against the stack: the emulator without functions.
fn emulator_alone(build: &Build, env: &Env, plan: &Plan, rows: &mut Vec<Row>) -> Result<()> {
    println!("xtask: the emulator alone (benches/src/emulator.rs)");
    let ops = if plan.quick { "100" } else { "400" };
    let mut results = Vec::new();
    for _ in 0..plan.wrk_runs {
        let output = std::process::Command::new(build.binary(BENCH_PROGRAM))
            .arg("emulator")
            .envs(env.vars.iter().map(|(k, v)| (k, v)))
            .env("BENCH_EMULATOR_OPS", ops)
            .stderr(Stdio::inherit())
            .output()?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("BENCH_RESULT "))
            .ok_or_else(|| anyhow!("the emulator bench printed no result: {stdout}"))?;
        results.push(serde_json::from_str::<Value>(line)?);
    }
    let column = |key: &str, field: &str| -> Vec<f64> {
        results
            .iter()
            .filter_map(|r| r[key][field].as_f64())
            .collect()
    };
    for (op, what) in [
        ("put_item", "PutItem (outbound insert)"),
        ("send_message", "SendMessage (enqueue)"),
        ("put_item_then_send_message", "PutItem + SendMessage"),
        (
            "conversation_summary",
            "conversation summary (3 concurrent UpdateItems)",
        ),
        (
            "outbound_writes",
            "PutItem + SendMessage + summary (what outbound does)",
        ),
        ("get_item", "GetItem (read)"),
        (
            "suppression_check",
            "opt-out check (1 GetItem per send: accept and delivery)",
        ),
        (
            "claim_then_complete",
            "claim + complete (UpdateItem; PutItem + UpdateItem: what delivery does)",
        ),
    ] {
        for concurrency in [1, 16] {
            let key = format!("{op}@{concurrency}");
            rows.push(
                Row::new(
                    "3 emulator",
                    format!("{what} p50, {concurrency} at a time"),
                    "ms",
                )
                .values(column(&key, "p50_us").iter().map(|us| us / 1e3).collect()),
            );
            if concurrency == 16 {
                rows.push(
                    Row::new("3 emulator", format!("{what} rate, 16 at a time"), "ops/s")
                        .values(column(&key, "ops_per_s")),
                );
            }
        }
    }
    Ok(())
}

// ---- 4. delivery throughput -----------------------------------------------------

struct Config {
    label: String,
    latency_ms: u64,
    pollers: u32,
    batch_size: u32,
    messages: usize,
}

async fn throughput(
    build: &Build,
    env: &Env,
    plan: &Plan,
    logs: &Path,
    mut memory: Memory,
    rows: &mut Vec<Row>,
    (notes, cpu): (&mut Vec<String>, &mut Vec<String>),
) -> Result<()> {
    let configs = [
        Config {
            label: format!("{} pollers × batches of 10, provider 50 ms", plan.pollers),
            latency_ms: 50,
            pollers: plan.pollers,
            batch_size: 10,
            messages: plan.messages,
        },
        Config {
            label: format!("{} pollers × batches of 10, provider 0 ms", plan.pollers),
            latency_ms: 0,
            pollers: plan.pollers,
            batch_size: 10,
            messages: plan.messages,
        },
        Config {
            label: "1 poller × batches of 1 (one at a time), provider 50 ms".into(),
            latency_ms: 50,
            pollers: 1,
            batch_size: 1,
            messages: plan.sequential_messages,
        },
    ];
    let mut medians = Vec::new();
    let mut preload_rates = Vec::new();
    let mut run_number = 0;
    for config in &configs {
        let mut rates = Vec::new();
        for i in 0..plan.throughput_runs {
            run_number += 1;
            let run = drain(build, env, config, run_number, logs, &mut memory).await?;
            if i == 0 {
                cpu.push(run.cpu.clone());
            }
            println!(
                "xtask: delivery, {}: {} messages in {:.1} s = {:.0} msg/s ({} provider requests)",
                config.label, config.messages, run.seconds, run.rate, run.provider_requests
            );
            if run.provider_requests != config.messages as u64 {
                notes.push(format!(
                    "delivery run {run_number} ({}): the provider got {} requests for {} messages",
                    config.label, run.provider_requests, config.messages
                ));
            }
            rates.push(run.rate);
            preload_rates.push(run.preload_rate);
        }
        medians.push(summary(&rates).map_or(f64::NAN, |s| s.median));
        let row = Row::new(
            "4 delivery",
            format!("{} ({} msgs)", config.label, config.messages),
            "msg/s",
        )
        .values(rates);
        rows.push(if config.latency_ms == 50 && config.pollers > 1 {
            row.target(Target::AtLeast(1000.0))
        } else {
            row
        });
    }
    rows.push(
        Row::new(
            "4 delivery",
            "concurrent ÷ one at a time (50 ms, medians)",
            "×",
        )
        .values(vec![medians[0] / medians[2]]),
    );
    rows.push(
        Row::new(
            "4 emulator",
            "pre-load: BatchWriteItem + SendMessageBatch, 8 at a time",
            "msg/s",
        )
        .values(preload_rates),
    );
    memory.rows(rows, "wrk and the delivery runs");
    Ok(())
}

struct Drained {
    /// Where the CPU went while draining.
    cpu: String,
    seconds: f64,
    rate: f64,
    preload_rate: f64,
    provider_requests: u64,
}

/// Pre-loads `config.messages` into a fresh queue, starts the release bridge on it
/// and measures until the queue is empty.
async fn drain(
    build: &Build,
    env: &Env,
    config: &Config,
    run: usize,
    logs: &Path,
    memory: &mut Memory,
) -> Result<Drained> {
    let queue_url = env
        .create_queue(&format!("bench-delivery-{}-{run}", std::process::id()))
        .await?;
    let preload = Instant::now();
    let ids = env.seed(config.messages).await?;
    env.enqueue(&queue_url, &ids).await?;
    let preload_rate = config.messages as f64 / preload.elapsed().as_secs_f64();
    env.set_provider_latency(config.latency_ms).await?;
    let provider_before = env.provider_requests().await?;

    // The release delivery function under the stack's `cargo lambda watch --release`
    // (as many instances as the API runs had), invoked by the bridge.
    let mut bridge = Command::new(build.binary("sqs-bridge"));
    bridge
        .args(["--queue-url", &queue_url])
        .args([
            "--invoke-url",
            &format!("{}/2015-03-31/functions/delivery/invocations", env.api_url),
        ])
        .args(["--pollers", &config.pollers.to_string()])
        .args(["--batch-size", &config.batch_size.to_string()])
        .args(["--wait-seconds", "1"])
        .envs(env.vars.iter().map(|(k, v)| (k, v)));
    let (service, _) = Service::start(
        &format!("bench-bridge-{run}"),
        bridge,
        &LogSink::Dir(logs.to_path_buf()),
        Some("sqs-bridge polling"),
        Duration::from_secs(20),
    )
    .await?;
    let started = Instant::now();
    let cpu_before = cpu_snapshot();
    // The delivery processes watch runs: the stack's, with the sink as QUEUE_URL.
    let marker = env
        .vars
        .iter()
        .find(|(name, _)| name == "QUEUE_URL")
        .map(|(name, value)| format!("{name}={value}"))
        .unwrap_or_default();
    let exe = build.binary("delivery");
    let limit = Duration::from_secs(60 + config.messages as u64 / 10);
    let mut remaining = config.messages as u64;
    let mut last_sample = Instant::now();
    while started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(100)).await;
        remaining = env.queue_depth(&queue_url).await?;
        if last_sample.elapsed() > Duration::from_millis(500) {
            memory.sample("delivery", &exe, &marker);
            last_sample = Instant::now();
        }
        if remaining == 0 {
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_line(
        &format!("delivery, {} ({} msgs)", config.label, config.messages),
        &cpu_before,
        &cpu_snapshot(),
    );
    memory.sample("delivery", &exe, &marker);
    service.stop().await;
    env.set_provider_latency(0).await?;
    if remaining > 0 {
        bail!(
            "delivery run {run} ({}): {remaining} of {} messages still queued after {seconds:.0} s",
            config.label,
            config.messages
        );
    }
    let _ = env.sqs.delete_queue().queue_url(&queue_url).send().await;
    Ok(Drained {
        cpu,
        seconds,
        rate: config.messages as f64 / seconds,
        preload_rate,
        provider_requests: env.provider_requests().await? - provider_before,
    })
}

// ---- the report -----------------------------------------------------------------

fn first_line(path: &str, prefix: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()?.lines().find_map(|l| {
        l.strip_prefix(prefix)
            .map(|v| v.trim().trim_start_matches(':').trim().to_owned())
    })
}

/// The load generator: Debian's `wrk`, installed with apt-get when missing (as root,
/// or through `sudo -n`); otherwise says how to install it.
fn ensure_wrk() -> Result<()> {
    let found = |out: std::io::Result<std::process::Output>| !matches!(out, Err(e) if e.kind() == std::io::ErrorKind::NotFound);
    if found(std::process::Command::new("wrk").arg("-v").output()) {
        return Ok(());
    }
    let root = command_output("id", &["-u"]) == "0";
    let apt = |args: &[&str]| -> Result<()> {
        let mut command = if root {
            std::process::Command::new("apt-get")
        } else {
            let mut sudo = std::process::Command::new("sudo");
            sudo.args(["-n", "apt-get"]);
            sudo
        };
        python::run(command.args(args).env("DEBIAN_FRONTEND", "noninteractive"))
    };
    println!("xtask: installing wrk (apt-get install -y wrk)");
    apt(&["install", "-y", "-q", "wrk"])
        .or_else(|_| apt(&["update", "-q"]).and_then(|()| apt(&["install", "-y", "-q", "wrk"])))
        .context("the bench needs wrk: install it with `apt-get install -y wrk` and retry")
}

fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn report(
    root: &Path,
    args: &[String],
    table: &str,
    notes: &[String],
    cpu_use: &[String],
    phases: &str,
) -> Result<String> {
    let cpu = first_line("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown".into());
    let memory = first_line("/proc/meminfo", "MemTotal").unwrap_or_else(|| "unknown".into());
    let nproc = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let rustc = command_output("rustc", &["-V"]);
    let wrk = command_output("wrk", &["-v"]);
    let ministack = std::fs::read_to_string(root.join("xtask/requirements.txt"))
        .ok()
        .and_then(|r| {
            r.lines()
                .find(|l| l.starts_with("ministack=="))
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let date = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let command = std::iter::once("cargo xtask bench".to_owned())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    let mut out = String::new();
    let _ = writeln!(out, "Measured {date} with `{command}`.\n");
    let _ = writeln!(
        out,
        "Machine: {nproc} cores ({cpu}), {memory} memory, Linux {}, {rustc}, {}, {ministack}.\n",
        kernel.trim(),
        wrk.lines()
            .next()
            .unwrap_or("wrk")
            .split(" [")
            .next()
            .unwrap_or("wrk")
    );
    out.push_str(table);
    if !notes.is_empty() {
        out.push('\n');
        for note in notes {
            let _ = writeln!(out, "- {note}");
        }
    }
    if !cpu_use.is_empty() {
        out.push_str("\nWhere the CPU went (cores used on average, from /proc/<pid>/stat):\n\n");
        for line in cpu_use {
            let _ = writeln!(out, "- {line}");
        }
    }
    let _ = write!(out, "\n{phases}");
    Ok(out)
}

/// Replaces the generated part of BENCHMARKS.md (between the markers).
fn write_benchmarks(path: &Path, report: &str) -> Result<()> {
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    let generated = format!("{BEGIN}\n{report}{END}");
    let text = match (existing.find(BEGIN), existing.find(END)) {
        (Some(begin), Some(end)) if begin < end => format!(
            "{}{generated}{}",
            &existing[..begin],
            &existing[end + END.len()..]
        ),
        _ => format!("# Benchmarks\n\n{generated}\n{existing}"),
    };
    std::fs::write(path, text)?;
    Ok(())
}

// ---- CPU: where the cores went during a load phase ------------------------------

/// CPU time so far of this program and everything it started (by executable name),
/// and of the whole machine.
struct CpuSnapshot {
    at: Instant,
    groups: BTreeMap<String, u64>,
    machine_busy: u64,
    machine_total: u64,
}

/// `(ppid, utime + stime)` of a process, in clock ticks.
fn process_ticks(pid: u32) -> Option<(u32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after "pid (comm)": state ppid ... utime (14th) stime (15th).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

fn group_name(pid: u32) -> String {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    let name = exe
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .trim_end_matches(" (deleted)")
                .to_owned()
        })
        .unwrap_or_default();
    if name.starts_with("python") {
        "ministack (emulator)".to_owned()
    } else if name == "cargo" {
        "cargo run (watch's wrappers)".to_owned()
    } else if pid == std::process::id() {
        "xtask (this bench)".to_owned()
    } else {
        name
    }
}

fn cpu_snapshot() -> CpuSnapshot {
    let me = std::process::id();
    let mut table = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
            if let Some(info) = process_ticks(pid) {
                table.insert(pid, info);
            }
        }
    }
    let mine = |mut pid: u32| {
        for _ in 0..64 {
            if pid == me {
                return true;
            }
            match table.get(&pid) {
                Some((ppid, _)) if *ppid != 0 => pid = *ppid,
                _ => return false,
            }
        }
        false
    };
    let mut groups = BTreeMap::new();
    for (pid, (_, ticks)) in &table {
        if mine(*pid) {
            *groups.entry(group_name(*pid)).or_default() += ticks;
        }
    }
    let cpu: Vec<u64> = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().next().map(str::to_owned))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .take(8)
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let machine_total: u64 = cpu.iter().sum();
    let idle = cpu.get(3).copied().unwrap_or(0) + cpu.get(4).copied().unwrap_or(0);
    CpuSnapshot {
        at: Instant::now(),
        groups,
        machine_busy: machine_total.saturating_sub(idle),
        machine_total,
    }
}

/// "label: a 0.95, b 0.40, …; machine 1.90 of 2 cores busy (0.10 outside this bench)".
fn cpu_line(label: &str, before: &CpuSnapshot, after: &CpuSnapshot) -> String {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let seconds = after.at.duration_since(before.at).as_secs_f64().max(1e-3);
    let mut used: Vec<(String, f64)> = after
        .groups
        .iter()
        .map(|(name, ticks)| {
            let start = before.groups.get(name).copied().unwrap_or(0);
            (
                name.clone(),
                ticks.saturating_sub(start) as f64 / hz / seconds,
            )
        })
        .filter(|(_, cores)| *cores >= 0.01)
        .collect();
    used.sort_by(|a, b| b.1.total_cmp(&a.1));
    let ours: f64 = used.iter().map(|(_, c)| c).sum();
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    let total = after
        .machine_total
        .saturating_sub(before.machine_total)
        .max(1) as f64;
    let busy = after.machine_busy.saturating_sub(before.machine_busy) as f64 / total * cores;
    let parts: Vec<String> = used
        .iter()
        .map(|(name, c)| format!("{name} {c:.2}"))
        .collect();
    format!(
        "{label}: {}; machine {busy:.2} of {cores:.0} cores busy ({:.2} outside this bench)",
        parts.join(", "),
        (busy - ours).max(0.0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries() {
        let s = summary(&[3.0, 1.0, 2.0, f64::NAN]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 2.0, 3.0));
        assert_eq!(summary(&[1.0, 2.0, 3.0, 4.0]).unwrap().median, 2.5);
        assert!(summary(&[]).is_none());
    }

    #[test]
    fn the_generated_part_is_replaced_in_place() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("BENCHMARKS.md");
        std::fs::write(&path, format!("intro\n{BEGIN}\nold\n{END}\nreading\n")).unwrap();
        write_benchmarks(&path, "new\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("intro\n{BEGIN}\nnew\n{END}\nreading\n")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
