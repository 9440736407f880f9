//! Developer tooling. `cargo xtask dev` runs the local stack, `cargo xtask test`
//! runs every check and test against a fresh one.

mod policy;
mod process;
mod python;
mod queue;
mod stack;
mod template;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Result, bail};

use crate::process::LogSink;
use crate::stack::{Options, Ports, Stack};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  dev       run the local stack: AWS emulator on 127.0.0.1:4566, the API on
            http://127.0.0.1:9000 (cargo lambda watch), the SQS bridge and the
            provider simulator on 127.0.0.1:4010; Ctrl-C stops everything
  test      format check, SAM template lint, clippy, and every test against a
            fresh local stack on free ports; then the fault-injection suite alone
  faults    only the fault-injection suite, on a fresh stack
            (--messages N per phase, default 1000: the long mode)
  queue     queue operations, on the local stack or (--aws) on AWS:
              queue stats              queue depths and messages by status
              queue peek [--dlq]       what waits for delivery / what is dead
              queue redrive            move the dead-letter queue back
              queue show <message-id>  one message, its lease and its state
            (`cargo xtask queue --help` for the options)
  inspect   the same as `queue stats`
  setup     install the pinned Python tools into .local/venv";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("dev") => dev().await,
        Some("test") => test().await,
        Some("faults") => faults(&args[1..]).await,
        Some("queue") => queue::run(&args[1..]).await,
        Some("inspect") => queue::inspect(&args[1..]).await,
        Some("setup") => python::ensure(&root()).map(|_| ()),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn has_nextest() -> bool {
    Command::new("cargo-nextest")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The fault-injection suite, with its figures printed.
fn fault_suite(nextest: bool) -> Command {
    if nextest {
        cargo(&[
            "nextest",
            "run",
            "-p",
            "e2e-tests",
            "--test",
            "fault_injection",
            "--run-ignored",
            "only",
            "--no-capture",
        ])
    } else {
        cargo(&[
            "test",
            "-p",
            "e2e-tests",
            "--test",
            "fault_injection",
            "--",
            "--ignored",
            "--nocapture",
        ])
    }
}

/// A fresh stack on free ports, logging to `logs`, tuned for tests: short retry
/// delays, and a short queue visibility timeout (template: 180 s) and lease so
/// that recovery from a killed delivery happens within a test's time.
async fn start_test_stack(root: &Path, tools: &python::Tools, logs: &Path) -> Result<Stack> {
    let _ = std::fs::remove_dir_all(logs);
    println!(
        "xtask: starting the local stack (logs in {})",
        logs.display()
    );
    Stack::start(
        root,
        tools,
        Options {
            ports: Ports::free()?,
            sink: LogSink::Dir(logs.to_path_buf()),
            function_env: vec![
                ("RETRY_BASE_SECONDS".into(), "1".into()),
                ("RETRY_MAX_SECONDS".into(), "2".into()),
                ("PROVIDER_TIMEOUT_SECONDS".into(), "5".into()),
                ("LEASE_SECONDS".into(), "10".into()),
            ],
            visibility_timeout: Some(20),
            concurrency: 4,
        },
    )
    .await
}

/// `cargo xtask faults [--messages N]`: the long mode of the fault-injection suite.
async fn faults(args: &[String]) -> Result<()> {
    let messages = match args {
        [] => 1000,
        [flag, n] if flag == "--messages" => n.parse()?,
        _ => bail!("usage: cargo xtask faults [--messages N]"),
    };
    let root = root();
    let tools = python::ensure(&root)?;
    python::run(&mut cargo(&["build", "--workspace", "--all-targets"]))?;
    let logs = root.join("target/xtask/logs");
    let stack = start_test_stack(&root, &tools, &logs).await?;
    let result = python::run(
        fault_suite(has_nextest())
            .env("FAULT_MESSAGES", messages.to_string())
            .envs(stack.env.iter().map(|(k, v)| (k, v))),
    );
    stack.stop().await;
    result
}

fn cargo(args: &[&str]) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.args(args).current_dir(root());
    command
}

async fn dev() -> Result<()> {
    let root = root();
    let tools = python::ensure(&root)?;
    python::run(&mut cargo(&["build", "--workspace", "--bins"]))?;
    let stack = Stack::start(
        &root,
        &tools,
        Options {
            ports: Ports::fixed(),
            sink: LogSink::Console,
            function_env: vec![
                ("LOG_FORMAT".into(), "text".into()),
                ("RETRY_BASE_SECONDS".into(), "2".into()),
                ("RETRY_MAX_SECONDS".into(), "30".into()),
            ],
            visibility_timeout: None,
            concurrency: 2,
        },
    )
    .await?;
    println!(
        "\nxtask: local stack ready\n  API:            {api}\n  AWS emulator:   {emu} (table {table}, queue {queue})\n  Provider sim:   {sim}\n\n  curl -s -X POST {api}/messages/outbound -H 'content-type: application/json' \\\n    -d '{{\"from\":\"+18045551234\",\"to\":\"+12016661234\",\"type\":\"sms\",\"body\":\"Hello\",\"attachments\":null}}'\n  cargo xtask queue stats\n\nPress Ctrl-C to stop.",
        api = stack.api_url,
        emu = stack.emulator_url,
        table = stack::TABLE_NAME,
        queue = stack.queue_url,
        sim = stack
            .simulator_url
            .as_deref()
            .unwrap_or("(not started: provider URLs given)"),
    );
    wait_for_shutdown().await;
    println!("xtask: stopping the local stack...");
    stack.stop().await;
    Ok(())
}

async fn wait_for_shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

async fn test() -> Result<()> {
    let started = Instant::now();
    let root = root();
    let mut failures = Vec::new();
    let mut step = |name: &str, command: &mut Command| {
        println!("xtask: {name}");
        if let Err(e) = python::run(command) {
            eprintln!("xtask: {name} failed: {e:#}");
            failures.push(name.to_owned());
        }
    };

    step(
        "cargo fmt --check",
        &mut cargo(&["fmt", "--all", "--", "--check"]),
    );
    let tools = python::ensure(&root)?;
    step(
        "sam validate --lint",
        Command::new(tools.exe("sam"))
            .args(["validate", "--lint", "--template", "template.yaml"])
            .current_dir(&root)
            .env("SAM_CLI_TELEMETRY", "0")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_REGION", "us-east-1"),
    );
    step(
        "cargo clippy",
        &mut cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    );
    python::run(&mut cargo(&["build", "--workspace", "--all-targets"]))?;

    let logs = root.join("target/xtask/logs");
    let stack = start_test_stack(&root, &tools, &logs).await?;
    println!("xtask: stack ready at {}; running the tests", stack.api_url);
    let nextest = has_nextest();
    // Everything but the fault-injection suite (it is #[ignore]d: it changes the
    // simulator's global settings and kills processes), then that suite alone.
    let mut suites = if nextest {
        cargo(&["nextest", "run", "--workspace", "--no-fail-fast"])
    } else {
        cargo(&["test", "--workspace", "--no-fail-fast"])
    };
    let mut result = python::run(suites.envs(stack.env.iter().map(|(k, v)| (k, v))));
    if result.is_ok() {
        println!("xtask: fault-injection suite");
        result = python::run(fault_suite(nextest).envs(stack.env.iter().map(|(k, v)| (k, v))));
    }
    stack.stop().await;
    if let Err(e) = result {
        eprintln!(
            "xtask: tests failed: {e:#}\nxtask: service logs are in {}",
            logs.display()
        );
        failures.push("tests".into());
    }

    let elapsed = started.elapsed().as_secs();
    if failures.is_empty() {
        println!(
            "xtask: all checks passed in {}m{:02}s",
            elapsed / 60,
            elapsed % 60
        );
        Ok(())
    } else {
        bail!(
            "failed: {} (after {}m{:02}s)",
            failures.join(", "),
            elapsed / 60,
            elapsed % 60
        )
    }
}
