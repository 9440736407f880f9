//! The local stack as AWS runs it: template.yaml deployed as a CloudFormation
//! stack into ministack (`cargo xtask dev --deployed`, and a run of `cargo xtask
//! test`). The functions are the emulator's own Lambda functions (the debug
//! builds, zipped as `bootstrap`, run as local processes), behind its HTTP API,
//! and the delivery function runs under its SQS event source mapping. Nothing of
//! the table, the queues, the functions' settings or their permissions is made
//! here: the template makes them.
//!
//! `deploy.py` deploys (and adds the HTTP API's routes, which the emulator does not
//! import from SAM's OpenAPI body); this starts the emulator and the provider
//! simulator around it and sets the local values: the simulator's URLs and the
//! test stack's short delays, on top of the template's function settings.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use aws_sdk_sqs::types::QueueAttributeName;
use serde::Deserialize;

use crate::python::Tools;
use crate::stack::{self, Endpoint, Options, Stack};

/// The CloudFormation stack's name (`dev --deployed` and the tests alike).
pub const STACK_NAME: &str = "messaging";

/// What the emulator serves: the services of template.yaml's resources, and SSM
/// (tests/tests/secrets.rs).
const SERVICES: &str =
    "cloudformation,s3,lambda,apigateway,iam,sts,logs,monitoring,sqs,dynamodb,secretsmanager,ssm";

/// What `deploy.py` prints.
#[derive(Deserialize)]
struct Report {
    outputs: HashMap<String, String>,
    api_url: String,
    functions: HashMap<String, String>,
    single_metric_alarms: Vec<String>,
}

/// The deployed CloudFormation stack.
pub struct Deployment {
    pub stack_name: String,
    /// The delivery function's name in the emulator's Lambda.
    pub delivery_function: String,
    /// Metric-math alarms deployed as alarms on one of their metrics (the
    /// emulator cannot create metric math).
    pub stand_in_alarms: Vec<String>,
}

/// Deploys template.yaml into a fresh ministack and starts the provider simulator.
pub async fn start(root: &Path, tools: &Tools, options: Options) -> Result<Stack> {
    let Options {
        ports,
        sink,
        function_env,
        visibility_timeout,
        concurrency: _,
        release,
        provider_reports: _,
        api_key,
    } = options;
    let bin_dir = root
        .join("target")
        .join(if release { "release" } else { "debug" });
    let mut services = Vec::new();
    let emulator =
        stack::start_ministack(tools, ports.emulator, SERVICES, &sink, &mut services).await?;
    let aws = stack::aws_config(&emulator).await;
    // The secrets exist before the deploy, as on AWS (README, Deploying).
    stack::seed_secrets(&aws).await?;

    let simulator_port = match ports.simulator {
        0 => stack::free_port()?,
        port => port,
    };
    let simulator_url = format!("http://127.0.0.1:{simulator_port}");
    let mut overlay = stack::simulator_env(&simulator_url);
    overlay.retain(|(name, _)| name.ends_with("_API_URL"));
    // Twilio signs, and reports to, the URL it was given: the API's local URL.
    overlay.push(("PUBLIC_BASE_URL".into(), "{api_url}".into()));
    overlay.extend(function_env.iter().cloned());
    let parameters = [
        ("Architecture", host_architecture()),
        // Any sender, and Inbound Parse posts without SPF/DKIM verdicts (as a
        // developer's curl sends them), as on the watch stack.
        ("AllowedSenders", ""),
        ("InboundEmailRequireAuth", "false"),
        (
            "SendGridWebhookPublicKey",
            provider_sim::DEV_SENDGRID_PUBLIC_KEY,
        ),
    ];
    println!("xtask: deploying template.yaml as stack {STACK_NAME} into {emulator}");
    let mut deploy = std::process::Command::new(tools.exe("python"));
    deploy
        .arg(root.join("xtask/src/deploy.py"))
        .arg(root.join("template.yaml"))
        .args(["--endpoint", &emulator, "--stack", STACK_NAME])
        .arg("--binaries")
        .arg(&bin_dir);
    for (name, value) in parameters {
        deploy.arg("--parameter").arg(format!("{name}={value}"));
    }
    for (name, value) in &overlay {
        deploy.arg("--environment").arg(format!("{name}={value}"));
    }
    let output = deploy.output().context("running xtask/src/deploy.py")?;
    if !output.status.success() {
        bail!(
            "deploying template.yaml failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let report: Report =
        serde_json::from_slice(&output.stdout).context("reading deploy.py's report")?;
    let output = |name: &str| {
        report
            .outputs
            .get(name)
            .cloned()
            .with_context(|| format!("the stack has no output {name}"))
    };
    let (table, queue_url, dlq_url) = (
        output("TableName")?,
        output("QueueUrl")?,
        output("DeadLetterQueueUrl")?,
    );
    let delivery_function = report
        .functions
        .get("DeliveryFunction")
        .cloned()
        .context("the stack has no DeliveryFunction")?;
    if !report.single_metric_alarms.is_empty() {
        println!(
            "xtask: the emulator has no metric-math alarms; deployed {} on one metric each",
            report.single_metric_alarms.join(", ")
        );
    }

    crate::keys::register_stack_keys(aws_sdk_dynamodb::Client::new(&aws), &table, &api_key).await?;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    if let Some(seconds) = visibility_timeout {
        sqs.set_queue_attributes()
            .queue_url(&queue_url)
            .attributes(QueueAttributeName::VisibilityTimeout, seconds.to_string())
            .send()
            .await
            .context("shortening the queue's visibility timeout")?;
    }

    let events = format!("{}/webhooks/sendgrid/events", report.api_url);
    let (simulator, url) =
        stack::start_simulator(&bin_dir, simulator_port, Some(&events), &sink).await?;
    services.push(simulator);

    // The tests' environment: the stack's names and URLs, and what the tests that
    // run the functions' code in-process need (as on the watch stack).
    let mut env: Vec<(String, String)> = vec![
        ("AWS_ENDPOINT_URL".into(), emulator.clone()),
        ("AWS_ENDPOINT_URL_DYNAMODB".into(), emulator.clone()),
        ("AWS_ENDPOINT_URL_SQS".into(), emulator.clone()),
        ("AWS_REGION".into(), stack::REGION.into()),
        ("AWS_DEFAULT_REGION".into(), stack::REGION.into()),
        ("AWS_ACCESS_KEY_ID".into(), "test".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
        ("TABLE_NAME".into(), table),
        ("QUEUE_URL".into(), queue_url.clone()),
        ("DLQ_URL".into(), dlq_url.clone()),
        ("MESSAGING_API_URL".into(), report.api_url.clone()),
        ("MESSAGING_API_KEY".into(), api_key),
        ("PROVIDER_SIM_URL".into(), url.clone()),
        ("DELIVERY_FUNCTION_NAME".into(), delivery_function.clone()),
        (
            "TWILIO_STATUS_CALLBACK_URL".into(),
            format!("{}/webhooks/twilio/status", report.api_url),
        ),
    ];
    env.extend(stack::simulator_env(&url));
    stack::seed_cursor_secret(&aws, &mut env).await?;
    env.extend(function_env);

    let endpoint = Endpoint {
        url: emulator.clone(),
        by: "ministack, deployed stack".into(),
        external: false,
    };
    let mut stack = Stack {
        services,
        temporary_queues: None,
        scratch: Vec::new(),
        deployment: Some(Deployment {
            stack_name: STACK_NAME.into(),
            delivery_function,
            stand_in_alarms: report.single_metric_alarms,
        }),
        env,
        api_url: report.api_url,
        simulator_url: Some(url),
        emulator_url: emulator,
        dynamodb: endpoint.clone(),
        sqs: endpoint,
        queue_url,
        dlq_url,
    };
    stack.warm_up().await?;
    Ok(stack)
}

/// The template's `Architecture` value for this machine (the binaries are built
/// for it).
fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "x86_64",
    }
}
