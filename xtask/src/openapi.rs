//! `openapi.yaml` held to the code: `cargo xtask openapi` (on a fresh stack, or
//! `--url` on a running one), and a step of `cargo xtask test`.
//!
//! Three checks, each of which fails the step:
//! 1. the document: valid OpenAPI 3.1; every example in it (request bodies,
//!    parameters, headers, responses, schemas) valid against its schema, so that
//!    none is silently skipped below and none documents a shape the schema denies;
//!    every operation has an example request and every response an example;
//! 2. the examples: schemathesis sends every example request to the stack as it
//!    is (the webhooks' unsigned) and validates each answer against the document
//!    (status documented, content type, headers, body schema); every operation
//!    must have been tested;
//! 3. fuzzing: schemathesis's coverage, fuzzing and stateful phases, bounded and
//!    seeded: no 5xx, and no answer that strays from the document. With the
//!    stack's webhook credentials, generated webhook requests are signed (see
//!    [`HOOKS`]) and fuzzing must get past authentication on each webhook.
//!
//! schemathesis is pinned in xtask/requirements-schemathesis.txt and installed into
//! `.local/schemathesis-venv`. Logs and reports go to target/xtask/openapi/.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::python;

/// The document, at the repository's top level.
const SPEC: &str = "openapi.yaml";
/// What every answer is checked for.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance,response_headers_conformance";
/// Fixed, so that a run is reproducible: the same seed generates the same requests.
const SEED: &str = "20241101";
/// Test cases per operation and phase in the fuzz run (the coverage phase adds its
/// own deterministic set). About a minute for the whole check on 2 cores.
const MAX_EXAMPLES: &str = "100";
/// Where reports and logs go, under the repository.
const OUT_DIR: &str = "target/xtask/openapi";
/// The variable through which `cargo xtask test` hands over its stack's API.
const API_URL_VARIABLE: &str = "MESSAGING_API_URL";

/// The local stack's SendGrid Event Webhook key pair: the simulator's
/// development key (public test data). Events are signed with it only when the
/// stack verifies with its public half.
const DEV_SENDGRID_SIGNING_KEY: &str = provider_sim::DEV_SENDGRID_SIGNING_KEY;
const DEV_SENDGRID_PUBLIC_KEY: &str = provider_sim::DEV_SENDGRID_PUBLIC_KEY;

/// What [`HOOKS`] signs webhook requests with (set for the fuzz run only).
const CREDENTIAL_VARIABLES: [&str; 4] = [
    "XTASK_OPENAPI_TWILIO_AUTH_TOKEN",
    "XTASK_OPENAPI_SENDGRID_BASIC_AUTH",
    "XTASK_OPENAPI_SENDGRID_SIGNING_KEY",
    "XTASK_OPENAPI_SENDGRID_PUBLIC_KEY",
];

/// Each webhook, the credential that gets a request past its authentication, and
/// the answers that a request stopped at or before authentication gets.
const WEBHOOKS: [(&str, &str, &[u16]); 4] = [
    (
        "POST /webhooks/twilio/messages",
        "XTASK_OPENAPI_TWILIO_AUTH_TOKEN",
        &[403, 413, 415],
    ),
    (
        "POST /webhooks/twilio/status",
        "XTASK_OPENAPI_TWILIO_AUTH_TOKEN",
        &[403, 413, 415],
    ),
    (
        "POST /webhooks/sendgrid/inbound",
        "XTASK_OPENAPI_SENDGRID_BASIC_AUTH",
        &[401],
    ),
    (
        "POST /webhooks/sendgrid/events",
        "XTASK_OPENAPI_SENDGRID_SIGNING_KEY",
        &[403, 413],
    ),
];

const USAGE: &str = "usage: cargo xtask openapi [--url API_URL]\n  \
    without --url: on a fresh local stack; with it: on a running API (e.g. `cargo \
    xtask dev`'s http://127.0.0.1:9000), whose webhook credentials are read from \
    this environment as the stack sets them (PROVIDER_SECRET_ID and AWS_ENDPOINT_URL \
    or TWILIO_AUTH_TOKEN, SENDGRID_INBOUND_BASIC_AUTH, SENDGRID_WEBHOOK_PUBLIC_KEY)";

/// `cargo xtask openapi [--url URL]`.
pub async fn command(args: &[String]) -> Result<()> {
    let root = crate::root();
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match args {
        [] => on_fresh_stack(&root).await,
        [flag, url] if flag == "--url" => check(&root, url, &env).await,
        [url] if url.starts_with("--url=") => check(&root, &url["--url=".len()..], &env).await,
        // `cargo xtask test`'s step, with the test stack's environment.
        [flag] if flag == "--on-test-stack" => {
            let url =
                env(API_URL_VARIABLE).with_context(|| format!("{API_URL_VARIABLE} is not set"))?;
            check(&root, &url, &env).await
        }
        [flag] if flag == "-h" || flag == "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        _ => bail!("{USAGE}"),
    }
}

/// The command `cargo xtask test` runs with a test stack's environment: this
/// binary, `openapi --on-test-stack`.
pub fn test_step() -> Result<Command> {
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    // `cargo build --workspace` may relink xtask while it runs; on Linux this
    // process's image then reads "<path> (deleted)", and the new one is at <path>.
    let exe = exe
        .to_str()
        .and_then(|path| path.strip_suffix(" (deleted)"))
        .map_or(exe.clone(), PathBuf::from);
    let mut command = Command::new(exe);
    command.args(["openapi", "--on-test-stack"]);
    Ok(command)
}

async fn on_fresh_stack(root: &Path) -> Result<()> {
    let tools = python::ensure(root)?;
    python::ensure_schemathesis(root)?;
    python::run(&mut crate::cargo(&["build", "--workspace", "--bins"]))?;
    let logs = root.join("target/xtask/logs");
    let stack = crate::start_test_stack(root, &tools, &logs).await?;
    println!("xtask: stack ready at {}", stack.api_url);
    let env = |name: &str| {
        stack
            .env
            .iter()
            .rev()
            .find(|(key, value)| key == name && !value.is_empty())
            .map(|(_, value)| value.clone())
    };
    let result = check(root, &stack.api_url, &env).await;
    stack.stop().await;
    if result.is_err() {
        eprintln!("xtask: service logs are in {}", logs.display());
    }
    result
}

/// The three checks against the API at `api_url`; `env` is the stack's
/// environment, where its webhook credentials are found.
pub async fn check(root: &Path, api_url: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<()> {
    let started = Instant::now();
    let bin = python::ensure_schemathesis(root)?;
    let spec = root.join(SPEC);
    let out = root.join(OUT_DIR);
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let api_url = api_url.trim_end_matches('/');
    let hooks = out.join("hooks");
    std::fs::create_dir_all(&hooks)?;
    std::fs::write(hooks.join(format!("{HOOKS_MODULE}.py")), HOOKS)?;

    println!("xtask: openapi: the document and its examples ({SPEC})");
    let status = run_logged(
        Command::new(bin.join("python"))
            .arg("-c")
            .arg(DOCUMENT_CHECK)
            .arg(&spec),
        &out.join("document.log"),
    )?;
    if !status.success() {
        bail!("{SPEC} is not valid or holds invalid examples (see above)");
    }

    // Both runs go ahead whatever the other found, so that one run shows it all.
    let mut failures = Vec::new();
    println!("xtask: openapi: every example request, sent to {api_url}");
    // Every example, also after a failure of the same operation; nothing signed.
    let examples = schemathesis(
        &bin,
        &spec,
        api_url,
        &out,
        "examples",
        &["examples"],
        &["--continue-on-failure"],
        &[],
    )?;
    let report = examples.report()?;
    if !examples.status.success() {
        failures.push(format!(
            "answers to its example requests stray from {SPEC} ({})",
            summary(&report, &examples)
        ));
    }
    // Not one operation without an example request (schemathesis skips those).
    let operations = &report["operations"];
    let count = |key: &str| operations[key].as_u64().unwrap_or(0);
    if count("total") == 0 || count("tested") != count("total") || count("skipped") > 0 {
        failures.push(format!(
            "the examples tested {} of {} operations (skipped: {}): every operation needs an example request",
            count("tested"),
            count("total"),
            operations["skip_reasons"]
        ));
    }
    let example_cases = report["test_cases"]["generated"].clone();

    let credentials = webhook_credentials(env).await;
    println!(
        "xtask: openapi: fuzzing {api_url} (seed {SEED}, {MAX_EXAMPLES} cases per operation and phase)"
    );
    let fuzz = schemathesis(
        &bin,
        &spec,
        api_url,
        &out,
        "fuzz",
        &["coverage", "fuzzing", "stateful"],
        &["--max-examples", MAX_EXAMPLES, "--no-shrink"],
        &credentials,
    )?;
    let report = fuzz.report()?;
    if !fuzz.status.success() {
        failures.push(format!(
            "fuzzing found answers that stray from {SPEC} ({})",
            summary(&report, &fuzz)
        ));
    }
    let fuzz_cases = &report["test_cases"]["generated"];
    let answers = fuzz.answers()?;
    println!("xtask: openapi: what the fuzz run's requests were answered:");
    for (operation, statuses) in &answers {
        let counts: Vec<String> = statuses.iter().map(|(s, n)| format!("{s}×{n}")).collect();
        println!("  {operation:<40} {}", counts.join(" "));
    }
    // A webhook signed with the stack's credentials must have let some requests in.
    for (operation, credential, refusals) in WEBHOOKS {
        if !credentials.iter().any(|(name, _)| name == credential) {
            println!(
                "xtask: openapi: {operation}: no credentials for it in the environment, so fuzzing stops at its authentication"
            );
            continue;
        }
        let statuses = answers.get(operation);
        let past = statuses.is_some_and(|s| s.keys().any(|status| !refusals.contains(status)));
        if !past {
            failures.push(format!(
                "fuzzing never got past the authentication of {operation} (answers {statuses:?}): \
                 are the credentials the requests were signed with the stack's?"
            ));
        }
    }

    let elapsed = started.elapsed().as_secs();
    let took = format!("{}m{:02}s", elapsed / 60, elapsed % 60);
    if !failures.is_empty() {
        bail!("{} (after {took})", failures.join("; "));
    }
    println!(
        "xtask: openapi: the API conforms to {SPEC}: {example_cases} example and {fuzz_cases} fuzz test cases passed in {took}"
    );
    Ok(())
}

/// The stack's webhook credentials, as the variables [`HOOKS`] reads: the Twilio
/// auth token (of the webhooks' secret the stack seeded, else `TWILIO_AUTH_TOKEN`),
/// the Inbound Parse credentials, and provider-sim's development key for the
/// SendGrid events when the stack verifies with it. Only those found.
async fn webhook_credentials(env: &dyn Fn(&str) -> Option<String>) -> Vec<(String, String)> {
    let mut found = Vec::new();
    // The secret first, as the functions read it (it wins over the variable).
    let twilio = match twilio_token_from_secret(env).await {
        Some(token) => Some(token),
        None => env("TWILIO_AUTH_TOKEN"),
    };
    if let Some(token) = twilio {
        found.push(("XTASK_OPENAPI_TWILIO_AUTH_TOKEN".to_owned(), token));
    }
    if let Some(key) = env("MESSAGING_API_KEY") {
        found.push(("XTASK_OPENAPI_API_KEY".to_owned(), key));
    }
    if let Some(user_password) = env("SENDGRID_INBOUND_BASIC_AUTH") {
        found.push((
            "XTASK_OPENAPI_SENDGRID_BASIC_AUTH".to_owned(),
            user_password,
        ));
    }
    if env("SENDGRID_WEBHOOK_PUBLIC_KEY").is_some_and(|key| key.trim() == DEV_SENDGRID_PUBLIC_KEY) {
        found.push((
            "XTASK_OPENAPI_SENDGRID_SIGNING_KEY".to_owned(),
            DEV_SENDGRID_SIGNING_KEY.to_owned(),
        ));
        found.push((
            "XTASK_OPENAPI_SENDGRID_PUBLIC_KEY".to_owned(),
            DEV_SENDGRID_PUBLIC_KEY.to_owned(),
        ));
    }
    found
}

/// `twilio_auth_token` of the Secrets Manager secret `WEBHOOK_SECRET_ID` on the
/// stack's emulator.
async fn twilio_token_from_secret(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let secret_id = env("WEBHOOK_SECRET_ID")?;
    let endpoint = env("AWS_ENDPOINT_URL_SECRETSMANAGER").or_else(|| env("AWS_ENDPOINT_URL"))?;
    let config = crate::stack::aws_config(&endpoint).await;
    let answer = aws_sdk_secretsmanager::Client::new(&config)
        .get_secret_value()
        .secret_id(&secret_id)
        .send()
        .await;
    let secret = match answer {
        Ok(secret) => secret,
        Err(e) => {
            eprintln!("xtask: openapi: could not read the secret {secret_id} at {endpoint}: {e}");
            return None;
        }
    };
    let value: Value = serde_json::from_str(secret.secret_string()?).ok()?;
    value["twilio_auth_token"].as_str().map(str::to_owned)
}

/// One schemathesis run's outcome and where its reports are.
struct Run {
    status: ExitStatus,
    dir: PathBuf,
}

impl Run {
    /// The run's JSON report (schemathesis writes it even when checks fail).
    fn report(&self) -> Result<Value> {
        let path = self.dir.join("report.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "schemathesis failed without a report ({}, exit {}): see above",
                path.display(),
                self.status.code().unwrap_or(-1)
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))
    }

    /// How often each operation was answered with each status (from [`HOOKS`]'s
    /// `after_call`): `"POST /messages/outbound"` → status → count.
    fn answers(&self) -> Result<BTreeMap<String, BTreeMap<u16, usize>>> {
        let path = self.dir.join("answers.txt");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut answers: BTreeMap<String, BTreeMap<u16, usize>> = BTreeMap::new();
        for line in text.lines() {
            let Some((operation, status)) = line.rsplit_once(' ') else {
                continue;
            };
            let status = status
                .parse()
                .with_context(|| format!("{}: {line:?}", path.display()))?;
            *answers
                .entry(operation.to_owned())
                .or_default()
                .entry(status)
                .or_default() += 1;
        }
        Ok(answers)
    }
}

/// "N of M test cases failed, ...; reports in DIR" from a run's JSON report.
fn summary(report: &Value, run: &Run) -> String {
    let cases = &report["test_cases"];
    let errors = report["errors"].as_array().map_or(0, Vec::len);
    format!(
        "{} of {} test cases failed, {} errors; exit {}; reports in {}",
        cases["with_failures"],
        cases["generated"],
        errors,
        run.status.code().unwrap_or(-1),
        run.dir.display()
    )
}

/// `schemathesis run` of the given phases, with its reports in `out/<name>/` and
/// its output on the console and in `out/<name>.log`; `envs` reach [`HOOKS`].
#[allow(clippy::too_many_arguments)]
fn schemathesis(
    bin: &Path,
    spec: &Path,
    api_url: &str,
    out: &Path,
    name: &str,
    phases: &[&str],
    extra: &[&str],
    envs: &[(String, String)],
) -> Result<Run> {
    let dir = out.join(name);
    std::fs::create_dir_all(&dir)?;
    let mut command = Command::new(bin.join("schemathesis"));
    command
        .arg("run")
        .arg(spec)
        .args(["--url", api_url])
        .args(["--phases", &phases.join(",")])
        .args(["--checks", CHECKS])
        .args(["--seed", SEED])
        // Nothing replayed from an earlier run: the seed alone decides the cases.
        .args(["--generation-database", "none"])
        // One worker: the requests in the same order every run (and 2 cores are
        // busy enough with the stack).
        .args(["--workers", "1"])
        // Debug builds; a function that was never called starts on its first request.
        .args(["--request-timeout", "30"])
        // JUnit and JSON summaries, and every request with its answer (VCR).
        .args(["--report", "junit,json,vcr"])
        .arg("--report-dir")
        .arg(&dir)
        .arg("--report-json-path")
        .arg(dir.join("report.json"))
        // Local test data only: show header values (Idempotency-Key, Authorization)
        // as sent, so that a failure can be reproduced from the output.
        .args(["--output-sanitize", "false"])
        .arg("--no-color")
        .args(extra)
        // The same hashes every run (hypothesis iterates over sets).
        .env("PYTHONHASHSEED", "0")
        .env("SCHEMATHESIS_HOOKS", HOOKS_MODULE)
        .env("PYTHONPATH", out.join("hooks"))
        .env("XTASK_OPENAPI_API_URL", api_url)
        .env("XTASK_OPENAPI_ANSWERS", dir.join("answers.txt"))
        .env("COLUMNS", "120")
        // Hypothesis's working files land here, not in the repository.
        .current_dir(&dir);
    // The hooks sign with what `envs` holds, and nothing of the caller's.
    for name in CREDENTIAL_VARIABLES {
        command.env_remove(name);
    }
    command.envs(envs.iter().map(|(k, v)| (k, v)));
    let status = run_logged(&mut command, &out.join(format!("{name}.log")))?;
    Ok(Run { status, dir })
}

/// Runs `command` with its output on the console and in `log`.
fn run_logged(command: &mut Command, log: &Path) -> Result<ExitStatus> {
    let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let file = Arc::new(Mutex::new(file));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {command:?}"))?;
    let streams: Vec<Box<dyn std::io::Read + Send>> = vec![
        Box::new(child.stdout.take().context("stdout")?),
        Box::new(child.stderr.take().context("stderr")?),
    ];
    let copiers: Vec<_> = streams
        .into_iter()
        .map(|stream| {
            let file = Arc::clone(&file);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    println!("{line}");
                    if let Ok(mut file) = file.lock() {
                        let _ = writeln!(file, "{line}");
                    }
                }
            })
        })
        .collect();
    let status = child.wait()?;
    for copier in copiers {
        let _ = copier.join();
    }
    Ok(status)
}

/// The module of [`HOOKS`], written to `target/xtask/openapi/hooks/`.
const HOOKS_MODULE: &str = "xtask_openapi_hooks";

/// schemathesis hooks (see the docstring): requests the local emulator cannot
/// carry sent so that it can, webhook requests signed with the stack's
/// credentials, and every answer's status recorded.
const HOOKS: &str = include_str!("openapi/hooks.py");

/// Check 1, in the schemathesis venv's Python (PyYAML, jsonschema-rs and
/// schemathesis's OpenAPI 3.1 meta-schema): `python -c DOCUMENT_CHECK openapi.yaml`.
const DOCUMENT_CHECK: &str = include_str!("openapi/document_check.py");
