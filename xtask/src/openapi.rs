//! `openapi.yaml` held to the code: `cargo xtask openapi` (on a fresh stack, or
//! `--url` on a running one), and a step of `cargo xtask test`.
//!
//! Three checks, each of which fails the step:
//! 1. the document: valid OpenAPI 3.1; every example in it (request bodies,
//!    parameters, headers, responses, schemas) valid against its schema, so that
//!    none is silently skipped below and none documents a shape the schema denies;
//!    every operation has an example request and every response an example;
//! 2. the examples: schemathesis sends every example request to the stack and
//!    validates each answer against the document (status documented, content type,
//!    headers, body schema); every operation must have been tested;
//! 3. fuzzing: schemathesis's coverage, fuzzing and stateful phases, bounded and
//!    seeded: no 5xx, and no answer that strays from the document.
//!
//! schemathesis is pinned in xtask/requirements-schemathesis.txt and installed into
//! `.local/schemathesis-venv`. Logs and reports go to target/xtask/openapi/.

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
/// own deterministic set). About two minutes for the whole check on 2 cores.
const MAX_EXAMPLES: &str = "100";
/// Where reports and logs go, under the repository.
const OUT_DIR: &str = "target/xtask/openapi";
/// The variable through which `cargo xtask test` hands over its stack's API.
const API_URL_VARIABLE: &str = "MESSAGING_API_URL";

const USAGE: &str = "usage: cargo xtask openapi [--url API_URL]\n  \
    without --url: on a fresh local stack; with it: on a running API \
    (e.g. `cargo xtask dev`'s http://127.0.0.1:9000)";

/// `cargo xtask openapi [--url URL]`.
pub async fn command(args: &[String]) -> Result<()> {
    let root = crate::root();
    match args {
        [] => on_fresh_stack(&root).await,
        [flag, url] if flag == "--url" => check(&root, url),
        [url] if url.starts_with("--url=") => check(&root, &url["--url=".len()..]),
        // `cargo xtask test`'s step: the stack's URL is in the environment.
        [flag] if flag == "--on-test-stack" => {
            let url = std::env::var(API_URL_VARIABLE)
                .with_context(|| format!("{API_URL_VARIABLE} is not set"))?;
            check(&root, &url)
        }
        [flag] if flag == "-h" || flag == "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        _ => bail!("{USAGE}"),
    }
}

/// The command `cargo xtask test` runs with a test stack's environment.
pub fn test_step() -> Result<Command> {
    let exe = std::env::current_exe().context("locating the xtask binary")?;
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
    let result = check(root, &stack.api_url);
    stack.stop().await;
    if result.is_err() {
        eprintln!("xtask: service logs are in {}", logs.display());
    }
    result
}

/// The three checks against the API at `api_url`.
pub fn check(root: &Path, api_url: &str) -> Result<()> {
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
    // Every example, also after a failure of the same operation.
    let examples = schemathesis(
        &bin,
        &spec,
        api_url,
        &out,
        "examples",
        &["examples"],
        &["--continue-on-failure"],
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
    )?;
    let report = fuzz.report()?;
    if !fuzz.status.success() {
        failures.push(format!(
            "fuzzing found answers that stray from {SPEC} ({})",
            summary(&report, &fuzz)
        ));
    }
    let fuzz_cases = &report["test_cases"]["generated"];

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
/// its output on the console and in `out/<name>.log`.
fn schemathesis(
    bin: &Path,
    spec: &Path,
    api_url: &str,
    out: &Path,
    name: &str,
    phases: &[&str],
    extra: &[&str],
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
        .env("COLUMNS", "120")
        // Hypothesis's working files land here, not in the repository.
        .current_dir(&dir);
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

/// schemathesis hooks: requests the local stack's emulator cannot carry, sent so
/// that it can (see the docstring).
const HOOKS: &str = r#""""schemathesis hooks of `cargo xtask openapi` (written by xtask/src/openapi.rs).

The local stack's API emulator (`cargo lambda watch`) answers 500 itself, before any
function runs, to a request with a body or a header value that is not UTF-8 (it
cannot put such text into the Lambda event). That says nothing about the service,
so such requests keep their shape but travel as UTF-8: a header value with
non-ASCII characters is sent as their UTF-8 bytes (not Latin-1), and a body of
random bytes (syntax fuzzing) has its invalid sequences replaced (U+FFFD).
"""

import schemathesis


@schemathesis.hook
def before_call(context, case, kwargs):
    headers = case.headers or {}
    for name, value in list(headers.items()):
        if isinstance(value, str) and not value.isascii():
            headers[name] = value.encode("utf-8", "surrogatepass").decode("latin-1")
    if isinstance(case.body, (bytes, bytearray)):
        try:
            bytes(case.body).decode("utf-8")
        except UnicodeDecodeError:
            case.body = bytes(case.body).decode("utf-8", "replace").encode("utf-8")
"#;

/// Check 1, in the schemathesis venv's Python (PyYAML, jsonschema-rs and
/// schemathesis's OpenAPI 3.1 meta-schema): `python -c DOCUMENT_CHECK openapi.yaml`.
const DOCUMENT_CHECK: &str = r##"
import json
import sys

import jsonschema_rs
import yaml
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

path = sys.argv[1]
with open(path, encoding="utf-8") as f:
    spec = yaml.safe_load(f)
problems = []
checked = 0

for error in OPENAPI_31_VALIDATOR.iter_errors(json.loads(json.dumps(spec))):
    at = "/" + "/".join(map(str, error.instance_path))
    problems.append(f"not valid OpenAPI 3.1 at {at}: {error.message}")


def resolve(node):
    hops = 0
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            raise SystemExit(f"only local references are supported, got {ref}")
        node = spec
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        hops += 1
        if hops > 20:
            raise SystemExit(f"reference loop at {ref}")
    return node


def check(where, schema, value):
    global checked
    checked += 1
    if schema is None:
        problems.append(f"{where}: an example without a schema")
        return
    # The document's components at the root, so that its references resolve.
    root = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": spec.get("components", {}),
        "allOf": [schema],
    }
    for error in jsonschema_rs.validator_for(root, validate_formats=True).iter_errors(value):
        at = "/" + "/".join(map(str, error.instance_path))
        problems.append(f"{where}: the example is invalid at {at}: {error.message}")


def examples_of(node):
    """(name, value) of a parameter's, header's or media type's examples."""
    found = []
    if "example" in node:
        found.append(("example", node["example"]))
    for name, example in (node.get("examples") or {}).items():
        example = resolve(example)
        if "value" in example:
            found.append((name, example["value"]))
    return found


def schema_examples(where, schema, depth=0):
    """The `examples` (and `example`) of a schema and of its subschemas."""
    if not isinstance(schema, dict) or depth > 30:
        return
    if isinstance(schema.get("examples"), list):
        for value in schema["examples"]:
            check(f"{where} (schema example)", schema, value)
    if "example" in schema:
        check(f"{where} (schema example)", schema, schema["example"])
    for key, sub in schema.items():
        if key in ("properties", "patternProperties", "$defs"):
            for name, subschema in sub.items():
                schema_examples(f"{where}.{name}", subschema, depth + 1)
        elif key in ("items", "not", "additionalProperties", "contains"):
            schema_examples(f"{where}[{key}]", sub, depth + 1)
        elif key in ("allOf", "anyOf", "oneOf", "prefixItems"):
            for i, subschema in enumerate(sub):
                schema_examples(f"{where}.{key}[{i}]", subschema, depth + 1)


for name, schema in spec.get("components", {}).get("schemas", {}).items():
    schema_examples(f"components.schemas.{name}", schema)

operations = 0
for route, item in spec.get("paths", {}).items():
    for method, operation in item.items():
        if method not in ("get", "put", "post", "delete", "patch", "head", "options", "trace"):
            continue
        operations += 1
        op = f"{method.upper()} {route}"
        parameters = item.get("parameters", []) + operation.get("parameters", [])
        for parameter in map(resolve, parameters):
            where = f"{op}: {parameter['in']} parameter {parameter['name']}"
            found = examples_of(parameter)
            for name, value in found:
                check(f"{where} ({name})", parameter.get("schema"), value)
            if parameter.get("required") and not found:
                problems.append(f"{where}: required, but without an example")
        body = resolve(operation.get("requestBody", {}))
        for media_type, content in body.get("content", {}).items():
            found = examples_of(content)
            for name, value in found:
                check(f"{op}: request {media_type} ({name})", content.get("schema"), value)
            if not found:
                problems.append(f"{op}: request {media_type} without an example")
        for status, response in operation.get("responses", {}).items():
            response = resolve(response)
            for header_name, header in (response.get("headers") or {}).items():
                header = resolve(header)
                for name, value in examples_of(header):
                    where = f"{op}: {status} header {header_name} ({name})"
                    check(where, header.get("schema"), value)
            for media_type, content in (response.get("content") or {}).items():
                found = examples_of(content)
                for name, value in found:
                    check(f"{op}: {status} {media_type} ({name})", content.get("schema"), value)
                if not found:
                    problems.append(f"{op}: {status} {media_type} without an example")

if operations == 0:
    problems.append("no operations")
for problem in problems:
    print(f"{path}: {problem}")
print(f"{path}: {operations} operations, {checked} examples valid, {len(problems)} problems")
sys.exit(1 if problems else 0)
"##;
