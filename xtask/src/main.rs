//! Developer tooling. `cargo xtask dev` runs the local stack, `cargo xtask test`
//! runs every check and test against a fresh one.

mod bench;
mod coldstart;
mod deployed;
mod keys;
mod openapi;
mod policy;
mod process;
mod python;
mod queue;
mod routes;
mod sam;
mod secrets;
mod stack;
mod template;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context as _, Result, anyhow, bail};

use crate::process::LogSink;
use crate::stack::{Emulator, Options, Ports, Stack};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  dev       run the local stack: AWS emulator on 127.0.0.1:4566, the API on
            http://127.0.0.1:9000 (cargo lambda watch), the SQS bridge and the
            provider simulator on 127.0.0.1:4010; Ctrl-C stops everything
            --emulator localstack: SQS on LocalStack (the one answering at
            AWS_ENDPOINT_URL, else the pinned one on 127.0.0.1:4566), DynamoDB
            on ministack at 127.0.0.1:4567 unless that LocalStack offers it
            --sam: the API through sam local start-api on http://127.0.0.1:3000,
            the functions in containers as in sam-test (needs Docker)
            --deployed: template.yaml deployed by CloudFormation into ministack
            on 127.0.0.1:4566 (its Lambda functions, HTTP API and SQS event
            source mapping) and the provider simulator; prints `API: <url>`
  test      format check, SAM template lint, clippy, and every test against a
            fresh local stack on free ports, then the OpenAPI check (as `openapi`)
            on that stack; then the integration and end-to-end suites again with
            SQS on LocalStack; then those suites and the fault-injection suite on
            template.yaml deployed into ministack; then the SAM suites
            --emulator localstack | --deployed: only the first run, there (as dev)
  e2e       only the integration and end-to-end suites on a fresh stack; further
            arguments go to cargo nextest (e.g. `cargo xtask e2e --test webhooks`)
            --deployed (first): on a deployed stack
  faults    only the fault-injection suite, on a fresh deployed stack (it kills
            delivery processes) (--messages N per phase, default 1000: the long mode)
  openapi   hold the API to openapi.yaml, on a fresh stack: its examples valid,
            every example request sent and the answer validated, then a bounded,
            seeded schemathesis fuzz run (no 5xx, nothing undocumented); reports
            in target/xtask/openapi/ (--url URL: on a running API instead)
  queue     queue operations, on the local stack or (--aws) on AWS:
              queue stats              queue depths and messages by status
              queue peek [--dlq]       what waits for delivery / what is dead
              queue redrive            move the dead-letter queue back
              queue show <message-id>  one message, its lease and its state
            (`cargo xtask queue --help` for the options)
  inspect   the same as `queue stats`
  keys      API keys on the dev stack (or --aws): keys create [--name NAME]
            --scopes a,b | keys list | keys revoke <key id or key>
            (`cargo xtask keys --help`)
  routes    print the `cargo lambda watch` router for Cargo.toml, generated
            from the route table (shared/src/http/routes.rs)
  bench     release builds on a fresh stack: cold starts, handler overhead, API
            latency (wrk), delivery throughput, memory, sizes -> BENCHMARKS.md
  sam-test  the functions under AWS SAM locally: sam build (x86_64), sam local
            invoke of every fixture in events/, the end-to-end suite through sam
            local start-api, all against a fresh local stack (needs Docker)
  sam-image build the local invoke base image messaging-lambda-base:al2023-local
            (debootstrap; only where no registry is reachable; --force rebuilds)
  setup     install the pinned Python tools into .local/venv, SAM CLI into
            .local/sam-venv, LocalStack into .local/localstack-venv and
            schemathesis into .local/schemathesis-venv";

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
        Some("dev") => dev(&args[1..]).await,
        Some("test") => test(&args[1..]).await,
        Some("faults") => faults(&args[1..]).await,
        Some("e2e") => e2e(&args[1..]).await,
        Some("openapi") => openapi::command(&args[1..]).await,
        Some("queue") => queue::run(&args[1..]).await,
        Some("bench") => bench::run(&args[1..]).await,
        Some("sam-image") => sam::image_command(&args[1..]),
        Some("sam-test") => sam::test(&args[1..]).await,
        Some("routes") => routes::command(),
        Some("keys") => keys::command(&args[1..]).await,
        Some("inspect") => queue::inspect(&args[1..]).await,
        Some("setup") => python::ensure_sam(&root())
            .and_then(|_| python::ensure_localstack(&root()))
            .and_then(|_| python::ensure_schemathesis(&root()))
            .map(|_| ()),
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

/// Whether a Docker engine answers (`sam local` needs one).
fn docker_available() -> bool {
    Command::new("docker")
        .arg("info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
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

/// The integration and end-to-end suites (the `e2e-tests` package).
fn e2e_suites(nextest: bool) -> Command {
    if nextest {
        cargo(&["nextest", "run", "-p", "e2e-tests", "--no-fail-fast"])
    } else {
        cargo(&["test", "-p", "e2e-tests", "--no-fail-fast"])
    }
}

/// Leaves out of `suites` (every argument given) the test a deployed stack
/// cannot pass: the trailing-slash test (the emulator's HTTP API matches a
/// route's path exactly: `/messages/outbound/` finds no route there).
fn skip_emulator_gaps(mut suites: Command) -> Command {
    // `-- --skip` narrows what other filters select, for nextest as for cargo test.
    if !suites.get_args().any(|arg| arg == "--") {
        suites.arg("--");
    }
    suites.args(["--skip", "trailing_slash_routes_work"]);
    suites
}

/// A fresh stack on free ports, logging to `logs`, tuned for tests: short retry
/// delays, and a short queue visibility timeout (template: 180 s) and lease so
/// that recovery from a killed delivery happens within a test's time.
async fn start_test_stack(root: &Path, tools: &python::Tools, logs: &Path) -> Result<Stack> {
    Stack::start(root, tools, test_options(logs)?).await
}

/// [`start_test_stack`] on the given emulator(s).
async fn start_test_stack_with(
    root: &Path,
    tools: &python::Tools,
    logs: &Path,
    emulator: Emulator,
) -> Result<Stack> {
    Stack::start_with(root, tools, test_options(logs)?, emulator).await
}

/// The options of a test stack (and clears its log directory).
fn test_options(logs: &Path) -> Result<Options> {
    let _ = std::fs::remove_dir_all(logs);
    println!(
        "xtask: starting the local stack (logs in {})",
        logs.display()
    );
    Ok(Options {
        ports: Ports::free()?,
        sink: LogSink::Dir(logs.to_path_buf()),
        function_env: vec![
            ("RETRY_BASE_SECONDS".into(), "1".into()),
            ("RETRY_MAX_SECONDS".into(), "2".into()),
            // Outages are ridden out until a message is this old (10 hours on
            // AWS): long enough for the outage phase, short enough for the suites.
            ("MAX_DELIVERY_AGE_SECONDS".into(), "40".into()),
            // A short pause; a high threshold, so that the suites' scripted
            // per-recipient failures (which look like an outage) do not pause
            // the other suites' deliveries. The outage phase trips it.
            ("BREAKER_COOLDOWN_SECONDS".into(), "3".into()),
            ("BREAKER_THRESHOLD".into(), "30".into()),
            // Revocation tests wait for the key cache to expire.
            ("API_KEY_CACHE_SECONDS".into(), "2".into()),
            ("PROVIDER_TIMEOUT_SECONDS".into(), "5".into()),
            ("LEASE_SECONDS".into(), "10".into()),
        ],
        visibility_timeout: Some(20),
        concurrency: 4,
        release: false,
        provider_reports: true,
        api_key: shared::domain::access::generate_key(),
    })
}

/// `cargo xtask faults [--messages N] [--outage SECONDS] [--no-breaker]`: the
/// long mode of the fault-injection suite. `--outage` lengthens the outage phase
/// (and the messages' age limit with it); `--no-breaker` turns the circuit
/// breaker off, to compare what an outage costs in provider calls.
async fn faults(args: &[String]) -> Result<()> {
    const USAGE: &str =
        "usage: cargo xtask faults [--messages N] [--outage SECONDS] [--no-breaker]";
    let (mut messages, mut outage, mut breaker) = (1000u32, None::<u64>, true);
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--messages" => messages = rest.next().context(USAGE)?.parse()?,
            "--outage" => outage = Some(rest.next().context(USAGE)?.parse()?),
            "--no-breaker" => breaker = false,
            _ => bail!(USAGE),
        }
    }
    let root = root();
    let tools = python::ensure(&root)?;
    python::run(&mut cargo(&["build", "--workspace", "--all-targets"]))?;
    let logs = root.join("target/xtask/logs");
    let mut options = test_options(&logs)?;
    if let Some(seconds) = outage {
        options.function_env.push((
            "MAX_DELIVERY_AGE_SECONDS".into(),
            (2 * seconds + 60).to_string(),
        ));
    }
    if !breaker {
        options
            .function_env
            .push(("BREAKER_THRESHOLD".into(), "0".into()));
    }
    let stack = Stack::start_with(&root, &tools, options, Emulator::Deployed).await?;
    let mut suite = fault_suite(has_nextest());
    suite.env("FAULT_MESSAGES", messages.to_string());
    if let Some(seconds) = outage {
        suite.env("FAULT_OUTAGE_SECONDS", seconds.to_string());
    }
    let result = python::run(suite.envs(stack.env.iter().map(|(k, v)| (k, v))));
    stack.stop().await;
    result
}

/// `cargo xtask e2e [nextest arguments]`: the integration and end-to-end suites
/// (or the tests the arguments select) against a fresh test stack, without the
/// other checks: the quick loop while working on one suite.
async fn e2e(args: &[String]) -> Result<()> {
    let root = root();
    let tools = python::ensure(&root)?;
    python::run(&mut cargo(&["build", "--workspace", "--all-targets"]))?;
    let logs = root.join("target/xtask/logs");
    let (emulator, args) = match args.first().map(String::as_str) {
        Some("--deployed") => (Emulator::Deployed, &args[1..]),
        _ => (Emulator::Ministack, args),
    };
    let stack = start_test_stack_with(&root, &tools, &logs, emulator).await?;
    let mut suites = e2e_suites(has_nextest());
    suites.args(args);
    if emulator == Emulator::Deployed {
        suites = skip_emulator_gaps(suites);
    }
    let result = python::run(suites.envs(stack.env.iter().map(|(k, v)| (k, v))));
    stack.stop().await;
    if result.is_err() {
        eprintln!("xtask: service logs are in {}", logs.display());
    }
    result
}

fn cargo(args: &[&str]) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.args(args).current_dir(root());
    command
}

async fn dev(args: &[String]) -> Result<()> {
    let sam = args.iter().any(|a| a == "--sam");
    let rest: Vec<String> = args.iter().filter(|a| *a != "--sam").cloned().collect();
    let emulator = Emulator::from_args(&rest)?;
    if sam && emulator != Emulator::Ministack {
        bail!("--sam runs on the default emulator (ministack) only; drop --emulator");
    }
    let root = root();
    let tools = python::ensure(&root)?;
    let api_key = keys::dev_key(&root)?;
    python::run(&mut cargo(&["build", "--workspace", "--bins"]))?;
    if sam {
        sam::dev_build(&root, &tools)?;
    }
    let start = Stack::start_with(
        &root,
        &tools,
        Options {
            ports: Ports::fixed_for(emulator),
            sink: LogSink::Console,
            function_env: vec![
                ("LOG_FORMAT".into(), "text".into()),
                ("RETRY_BASE_SECONDS".into(), "2".into()),
                ("RETRY_MAX_SECONDS".into(), "30".into()),
                // A recovery shows within a minute.
                ("BREAKER_COOLDOWN_SECONDS".into(), "10".into()),
            ],
            visibility_timeout: None,
            concurrency: 2,
            release: false,
            provider_reports: true,
            api_key,
        },
        emulator,
    );
    // Ctrl-C during start-up drops the half-started stack, which kills what it
    // started (each piece runs in its own process group, out of the terminal's reach).
    let stack = tokio::select! {
        stack = start => stack?,
        _ = wait_for_shutdown() => {
            println!("xtask: interrupted during start-up; stopping what was started");
            return Ok(());
        }
    };
    // --sam: the API through `sam local start-api`, the functions in containers.
    let mut sam_api = None;
    if sam {
        let mut api = match sam::DevApi::start(&root, &tools, &stack).await {
            Ok(api) => api,
            Err(e) => {
                stack.stop().await;
                return Err(e);
            }
        };
        let ready = tokio::select! {
            ready = api.ready() => ready.map(|()| true),
            _ = wait_for_shutdown() => Ok(false),
        };
        if !matches!(ready, Ok(true)) {
            if ready.is_ok() {
                println!("xtask: interrupted during start-up; stopping what was started");
            }
            api.stop().await;
            stack.stop().await;
            return ready.map(|_| ());
        }
        sam_api = Some(api);
    }
    let api_line = match &sam_api {
        Some(api) => format!(
            "{} (sam local start-api; cargo lambda watch's API is on {})",
            api.url, stack.api_url
        ),
        None => stack.api_url.clone(),
    };
    // `cargo xtask queue` defaults to one emulator at 127.0.0.1:4566, table and
    // queue `messages`; a deployed stack's are found as on AWS, by the stack's names.
    let queue_command = if stack.deployment.is_some() {
        let names = [
            "AWS_ENDPOINT_URL",
            "AWS_REGION",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "TABLE_NAME",
            "QUEUE_URL",
            "DLQ_URL",
        ];
        let env: Vec<String> = stack
            .env
            .iter()
            .filter(|(name, _)| names.contains(&name.as_str()))
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        format!("{} cargo xtask queue --aws stats", env.join(" "))
    } else if stack.dynamodb.url != stack.sqs.url {
        format!(
            "cargo xtask queue --endpoint {} --sqs-endpoint {} stats",
            stack.dynamodb.url, stack.sqs.url
        )
    } else if stack.dynamodb.url != "http://127.0.0.1:4566" {
        format!("cargo xtask queue --endpoint {} stats", stack.dynamodb.url)
    } else {
        "cargo xtask queue stats".to_owned()
    };
    let deployed = match &stack.deployment {
        Some(d) => format!(
            "  Stack:          {} (template.yaml, deployed by CloudFormation in the emulator; \
             delivery under its SQS event source mapping{})\n",
            d.stack_name,
            if d.stand_in_alarms.is_empty() {
                String::new()
            } else {
                format!(
                    "; single-metric stand-ins for {}",
                    d.stand_in_alarms.join(", ")
                )
            }
        ),
        None => String::new(),
    };
    println!(
        "\nxtask: local stack ready\nAPI: {api}\n{deployed}  API:            {api_line}\n  DynamoDB:       {dynamodb} ({dynamodb_by}; table {table})\n  SQS:            {sqs} ({sqs_by}; queue {queue})\n  Provider sim:   {sim}\n  API key:        {key} (every scope; {key_source})\n\n  export MESSAGING_API_KEY={key}\n  curl -s -X POST {api}/messages/outbound -H \"Authorization: Bearer $MESSAGING_API_KEY\" -H 'content-type: application/json' \\\n    -d '{{\"from\":\"+18045551234\",\"to\":\"+12016661234\",\"type\":\"sms\",\"body\":\"Hello\",\"attachments\":null}}'\n  {queue_command}\n\nPress Ctrl-C to stop.",
        api = sam_api.as_ref().map_or(&stack.api_url, |a| &a.url),
        dynamodb = stack.dynamodb.url,
        dynamodb_by = stack.dynamodb.by,
        sqs = stack.sqs.url,
        sqs_by = stack.sqs.by,
        table = stack
            .env
            .iter()
            .find(|(name, _)| name == "TABLE_NAME")
            .map_or(stack::TABLE_NAME, |(_, table)| table),
        queue = stack.queue_url,
        sim = stack
            .simulator_url
            .as_deref()
            .unwrap_or("(not started: provider URLs given)"),
        key = stack.api_key(),
        key_source = if std::env::var_os("MESSAGING_API_KEY").is_some() {
            "MESSAGING_API_KEY"
        } else {
            ".local/dev-api-key"
        },
    );
    wait_for_shutdown().await;
    if let Some(api) = sam_api {
        println!("xtask: stopping sam local start-api...");
        api.stop().await;
    }
    println!("xtask: stopping the local stack...");
    stack.stop().await;
    Ok(())
}

/// Starts a test stack on `emulator`, runs `commands` in order with its
/// environment until one fails (printing a command's name, if it has one, first),
/// and stops the stack.
async fn tests_on_stack(
    root: &Path,
    tools: &python::Tools,
    logs: &Path,
    emulator: Emulator,
    commands: Vec<(Option<&str>, Command)>,
) -> Result<()> {
    let started = Instant::now();
    let stack = start_test_stack_with(root, tools, logs, emulator).await?;
    println!(
        "xtask: stack ready at {} (DynamoDB: {}, {}; SQS: {}, {}); running the tests",
        stack.api_url, stack.dynamodb.by, stack.dynamodb.url, stack.sqs.by, stack.sqs.url
    );
    let mut result = Ok(());
    for (name, mut command) in commands {
        if let Some(name) = name {
            println!("xtask: {name}");
        }
        result = python::run(command.envs(stack.env.iter().map(|(k, v)| (k, v))));
        if result.is_err() {
            break;
        }
    }
    stack.stop().await;
    let elapsed = started.elapsed().as_secs();
    println!(
        "xtask: that run took {}m{:02}s, stack start and stop included",
        elapsed / 60,
        elapsed % 60
    );
    result
}

async fn wait_for_shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

async fn test(args: &[String]) -> Result<()> {
    let emulator = Emulator::from_args(args)?;
    let started = Instant::now();
    let root = root();
    // The second run's LocalStack installs (the first time only: about a minute)
    // while the checks run.
    let localstack_install = (emulator == Emulator::Ministack).then(|| {
        let root = root.clone();
        std::thread::spawn(move || python::ensure_localstack(&root))
    });
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
    let tools = python::ensure_sam(&root)?;
    step(
        "sam validate --lint",
        Command::new(tools.exe("sam"))
            .args(["validate", "--lint", "--template", "template.yaml"])
            .current_dir(&root)
            .env("SAM_CLI_TELEMETRY", "0")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_REGION", "us-east-1"),
    );
    // The roles as SAM generates them: no managed policy SAM adds on its own.
    step(
        "IAM: no managed policies on the functions' roles",
        // SAM's venv: the script imports its translator.
        Command::new(root.join(".local/sam-venv/bin/python"))
            .arg("xtask/src/managed_policies.py")
            .arg("template.yaml")
            .current_dir(&root),
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

    let nextest = has_nextest();
    let (runs, on) = match emulator {
        Emulator::Ministack => (3, "ministack (DynamoDB + SQS)"),
        Emulator::LocalStack { .. } => (1, "LocalStack"),
        Emulator::Deployed => (1, "template.yaml deployed into ministack"),
    };
    let faults = if emulator == Emulator::Deployed {
        "the fault-injection suite, "
    } else {
        ""
    };
    println!(
        "\nxtask: ===== run 1/{runs}: every test, then {faults}the OpenAPI check, on {on} ====="
    );
    // Everything but the fault-injection suite (it is #[ignore]d: it changes the
    // simulator's global settings and kills delivery processes, whose crash only
    // a deployed stack recovers from as AWS does: fresh execution environments).
    let mut suites = if nextest {
        cargo(&["nextest", "run", "--workspace", "--no-fail-fast"])
    } else {
        cargo(&["test", "--workspace", "--no-fail-fast"])
    };
    if emulator == Emulator::Deployed {
        suites = skip_emulator_gaps(suites);
    }
    let logs = root.join("target/xtask/logs");
    let mut commands = vec![(None, suites)];
    if emulator == Emulator::Deployed {
        commands.push((Some("fault-injection suite"), fault_suite(nextest)));
    }
    commands.push((Some("OpenAPI check (openapi.yaml)"), openapi::test_step()?));
    if let Err(e) = tests_on_stack(&root, &tools, &logs, emulator, commands).await {
        eprintln!(
            "xtask: tests failed: {e:#}\nxtask: service logs are in {}",
            logs.display()
        );
        failures.push(format!("tests on {on}"));
    }

    if let Some(install) = localstack_install {
        // The integration and end-to-end suites once more, with SQS on (the
        // pinned) LocalStack, so that a difference between the emulators fails a
        // test. DynamoDB stays on ministack (see stack.rs).
        println!(
            "\nxtask: ===== run 2/3: the integration and end-to-end suites, SQS on LocalStack, DynamoDB on ministack ====="
        );
        let installed = install
            .join()
            .unwrap_or_else(|_| Err(anyhow!("installing LocalStack panicked")));
        let suites = e2e_suites(nextest);
        let logs = root.join("target/xtask/logs-localstack");
        let localstack = Emulator::LocalStack { reuse: false };
        let result = match installed {
            Ok(_) => tests_on_stack(&root, &tools, &logs, localstack, vec![(None, suites)]).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            eprintln!(
                "xtask: tests with SQS on LocalStack failed: {e:#}\nxtask: service logs are in {}",
                logs.display()
            );
            failures.push("tests with SQS on LocalStack".into());
        }

        // The template itself, deployed into ministack: the functions as its
        // Lambda functions behind its HTTP API, delivery under its event source
        // mapping.
        println!(
            "\nxtask: ===== run 3/3: the integration and end-to-end suites, then the fault-injection suite, on template.yaml deployed into ministack ====="
        );
        let logs = root.join("target/xtask/logs-deployed");
        let commands = vec![
            (None, skip_emulator_gaps(e2e_suites(nextest))),
            (Some("fault-injection suite"), fault_suite(nextest)),
        ];
        if let Err(e) = tests_on_stack(&root, &tools, &logs, Emulator::Deployed, commands).await {
            eprintln!(
                "xtask: tests on the deployed stack failed: {e:#}\nxtask: service logs are in {}",
                logs.display()
            );
            failures.push("tests on the deployed stack".into());
        }

        // The functions under AWS SAM: `sam local invoke` with every fixture and
        // the end-to-end suite through `sam local start-api`. Needs a Docker engine.
        if docker_available() {
            println!(
                "\nxtask: ===== the functions under AWS SAM (sam build, sam local invoke, sam local start-api) ====="
            );
            if let Err(e) = sam::test(&[]).await {
                eprintln!("xtask: the SAM suites failed: {e:#}");
                failures.push("SAM suites".into());
            }
        } else {
            println!("\nxtask: no Docker engine answers (`docker info`): skipping the SAM suites");
        }
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
