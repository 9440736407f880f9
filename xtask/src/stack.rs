//! The local stack: AWS emulator, table and queues from template.yaml, provider
//! simulator, `cargo lambda watch` serving the functions, and the SQS bridge.

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;
use tokio::process::Command;

use crate::process::{LogSink, Service};
use crate::python::Tools;
use crate::template::{self, Infrastructure, QueueSpec};

pub const TABLE_NAME: &str = "messages";
pub const QUEUE_NAME: &str = "messages";
pub const DLQ_NAME: &str = "messages-dlq";
const REGION: &str = "us-east-1";
/// Credentials of the simulated providers (the simulator accepts only these).
const TWILIO_SID: &str = "ACtest";
const TWILIO_TOKEN: &str = "test-token";
const SENDGRID_KEY: &str = "SG.test-key";

pub struct Ports {
    pub emulator: u16,
    pub api: u16,
    /// 0 = any free port.
    pub simulator: u16,
}

impl Ports {
    pub fn fixed() -> Self {
        Self {
            emulator: 4566,
            api: 9000,
            simulator: 4010,
        }
    }

    pub fn free() -> Result<Self> {
        Ok(Self {
            emulator: free_port()?,
            api: free_port()?,
            simulator: 0,
        })
    }
}

pub struct Options {
    pub ports: Ports,
    pub sink: LogSink,
    /// Extra settings for the functions (e.g. short retry delays in tests).
    pub function_env: Vec<(String, String)>,
    /// Replaces the template's queue visibility timeout (tests shorten it so that
    /// crash recovery happens within a test's time).
    pub visibility_timeout: Option<i64>,
    /// Function instances per function (`cargo lambda watch --concurrency`) and
    /// concurrent batches of the bridge.
    pub concurrency: u32,
}

pub struct Stack {
    services: Vec<Service>,
    /// Environment that reaches the stack: AWS endpoint, names, URLs.
    pub env: Vec<(String, String)>,
    pub api_url: String,
    pub simulator_url: Option<String>,
    pub emulator_url: String,
    pub queue_url: String,
    pub dlq_url: String,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
        .is_ok()
}

async fn wait_for_port(name: &str, port: u16, timeout: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    while !port_open(port) {
        if tokio::time::Instant::now() > deadline {
            bail!("{name} is not listening on 127.0.0.1:{port} after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// SDK configuration for the local emulator.
pub async fn aws_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new(REGION))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test", "test", None, None, "xtask",
        ))
        .load()
        .await
}

impl Stack {
    pub async fn start(root: &Path, tools: &Tools, options: Options) -> Result<Self> {
        let Options {
            ports,
            sink,
            function_env,
            visibility_timeout,
            concurrency,
        } = options;
        let mut infra = template::load(&root.join("template.yaml"))?;
        if visibility_timeout.is_some() {
            infra.queue.visibility_timeout = visibility_timeout;
        }
        let mut services = Vec::new();
        let emulator_url = format!("http://127.0.0.1:{}", ports.emulator);

        if port_open(ports.emulator) {
            println!("xtask: using the AWS emulator already listening at {emulator_url}");
        } else {
            let mut emulator = Command::new(tools.exe("ministack"));
            emulator
                .env("BIND_HOST", "127.0.0.1")
                .env("GATEWAY_PORT", ports.emulator.to_string())
                .env("SERVICES", "sqs,dynamodb");
            let (service, _) =
                Service::start("emulator", emulator, &sink, None, Duration::ZERO).await?;
            services.push(service);
            wait_for_port(
                "the AWS emulator (ministack)",
                ports.emulator,
                Duration::from_secs(30),
            )
            .await?;
        }
        let aws = aws_config(&emulator_url).await;
        create_table(&aws_sdk_dynamodb::Client::new(&aws), &infra).await?;
        let (queue_url, dlq_url) = create_queues(&aws_sdk_sqs::Client::new(&aws), &infra).await?;

        let mut env: Vec<(String, String)> = vec![
            ("AWS_ENDPOINT_URL".into(), emulator_url.clone()),
            ("AWS_REGION".into(), REGION.into()),
            ("AWS_DEFAULT_REGION".into(), REGION.into()),
            ("AWS_ACCESS_KEY_ID".into(), "test".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
            ("TABLE_NAME".into(), TABLE_NAME.into()),
            ("QUEUE_URL".into(), queue_url.clone()),
        ];

        // Providers: the simulator, unless real/other provider URLs are given.
        let given = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let simulator_url = if given("TWILIO_API_URL").is_some()
            || given("SENDGRID_API_URL").is_some()
        {
            for name in [
                "TWILIO_API_URL",
                "TWILIO_ACCOUNT_SID",
                "TWILIO_AUTH_TOKEN",
                "SENDGRID_API_URL",
                "SENDGRID_API_KEY",
            ] {
                if let Some(value) = given(name) {
                    env.push((name.into(), value));
                }
            }
            println!(
                "xtask: TWILIO_API_URL/SENDGRID_API_URL set; not starting the provider simulator"
            );
            None
        } else {
            let mut sim = Command::new(root.join("target/debug/provider-sim"));
            sim.args(["--addr", &format!("127.0.0.1:{}", ports.simulator)])
                .args([
                    "--twilio-account-sid",
                    TWILIO_SID,
                    "--twilio-auth-token",
                    TWILIO_TOKEN,
                ])
                .args(["--sendgrid-api-key", SENDGRID_KEY])
                .env_remove("TWILIO_ACCOUNT_SID")
                .env_remove("TWILIO_AUTH_TOKEN")
                .env_remove("SENDGRID_API_KEY");
            let (service, line) = Service::start(
                "provider-sim",
                sim,
                &sink,
                Some("listening on "),
                Duration::from_secs(20),
            )
            .await?;
            services.push(service);
            let url = line
                .and_then(|l| l.split("listening on ").nth(1).map(|u| u.trim().to_owned()))
                .ok_or_else(|| anyhow!("provider-sim did not say where it listens"))?;
            for (name, value) in [
                ("TWILIO_API_URL", url.as_str()),
                ("SENDGRID_API_URL", url.as_str()),
                ("TWILIO_ACCOUNT_SID", TWILIO_SID),
                ("TWILIO_AUTH_TOKEN", TWILIO_TOKEN),
                ("SENDGRID_API_KEY", SENDGRID_KEY),
            ] {
                env.push((name.into(), value.into()));
            }
            Some(url)
        };
        env.extend(function_env);

        // The functions, behind the router in Cargo.toml.
        let api_url = format!("http://127.0.0.1:{}", ports.api);
        let mut watch = Command::new(tools.exe("cargo-lambda"));
        watch
            .current_dir(root)
            .args([
                "lambda",
                "watch",
                "--ignore-changes",
                "-A",
                "127.0.0.1",
                "-P",
                &ports.api.to_string(),
                "--concurrency",
                &concurrency.to_string(),
            ])
            .env("PATH", tools.path_env())
            .envs(env.iter().map(|(k, v)| (k, v)));
        let (service, _) = Service::start("functions", watch, &sink, None, Duration::ZERO).await?;
        services.push(service);
        wait_for_port("cargo lambda watch", ports.api, Duration::from_secs(60)).await?;

        // The SQS -> delivery function event source mapping. The bridge runs the
        // delivery function itself behind a Lambda Runtime API, so that a crashed
        // or timed-out invocation fails its batch and the next one gets a fresh
        // process, as on AWS (cargo lambda watch does not restart a killed function).
        let mut bridge = Command::new(root.join("target/debug/sqs-bridge"));
        bridge
            .args(["--queue-url", &queue_url])
            .args([
                "--function-binary",
                &root.join("target/debug/delivery").to_string_lossy(),
            ])
            .args(["--function-timeout", &infra.delivery_timeout.to_string()])
            .args(["--pollers", &concurrency.to_string()])
            .envs(env.iter().map(|(k, v)| (k, v)));
        let (service, _) = Service::start(
            "sqs-bridge",
            bridge,
            &sink,
            Some("sqs-bridge polling"),
            Duration::from_secs(20),
        )
        .await?;
        services.push(service);

        let mut stack = Self {
            services,
            env,
            api_url,
            simulator_url,
            emulator_url,
            queue_url,
            dlq_url,
        };
        stack.env.push(("DLQ_URL".into(), stack.dlq_url.clone()));
        stack
            .env
            .push(("MESSAGING_API_URL".into(), stack.api_url.clone()));
        if let Some(url) = &stack.simulator_url {
            stack.env.push(("PROVIDER_SIM_URL".into(), url.clone()));
        }
        stack.warm_up().await?;
        Ok(stack)
    }

    /// Starts every HTTP function once (answers 404 or 422), so
    /// start-up problems show here rather than in the first test.
    async fn warm_up(&mut self) -> Result<()> {
        let client = reqwest::Client::new();
        let api = &self.api_url;
        let probes = [
            (
                client.get(format!(
                    "{api}/messages/00000000-0000-7000-8000-000000000000"
                )),
                404,
            ),
            (
                client
                    .post(format!("{api}/messages/outbound"))
                    .json(&serde_json::json!({})),
                422,
            ),
            (
                client
                    .post(format!("{api}/messages/inbound"))
                    .json(&serde_json::json!({})),
                422,
            ),
            (
                client
                    .post(format!("{api}/2015-03-31/functions/delivery/invocations"))
                    .json(&serde_json::json!({"Records": []})),
                200,
            ),
        ];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        for (probe, expected) in probes {
            loop {
                let request = probe
                    .try_clone()
                    .ok_or_else(|| anyhow!("probe is not cloneable"))?;
                let answer = request.send().await;
                match answer {
                    Ok(r) if r.status().as_u16() == expected => break,
                    Ok(r) if tokio::time::Instant::now() > deadline => {
                        bail!(
                            "warm-up: {} answered {} (expected {expected})",
                            r.url(),
                            r.status()
                        )
                    }
                    Err(e) if tokio::time::Instant::now() > deadline => {
                        bail!("warm-up: the API did not answer: {e}")
                    }
                    _ => tokio::time::sleep(Duration::from_millis(250)).await,
                }
                if let Some(dead) = self
                    .services
                    .iter_mut()
                    .find_map(|s| (!s.is_running()).then(|| s.name.clone()))
                {
                    bail!("{dead} exited during start-up");
                }
            }
        }
        Ok(())
    }

    pub async fn stop(self) {
        for service in self.services.into_iter().rev() {
            service.stop().await;
        }
    }
}

async fn create_table(client: &aws_sdk_dynamodb::Client, infra: &Infrastructure) -> Result<()> {
    let exists = client
        .describe_table()
        .table_name(TABLE_NAME)
        .send()
        .await
        .is_ok();
    if exists {
        return Ok(());
    }
    let key = |(name, kind): &(String, String)| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(KeyType::from(kind.as_str()))
            .build()
    };
    let spec = &infra.table;
    let mut request = client
        .create_table()
        .table_name(TABLE_NAME)
        .billing_mode(BillingMode::PayPerRequest);
    for (name, kind) in &spec.attributes {
        request = request.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::from(kind.as_str()))
                .build()?,
        );
    }
    for element in &spec.key_schema {
        request = request.key_schema(key(element)?);
    }
    for index in &spec.global_indexes {
        let mut gsi = GlobalSecondaryIndex::builder()
            .index_name(&index.name)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::from(index.projection.as_str()))
                    .build(),
            );
        for element in &index.key_schema {
            gsi = gsi.key_schema(key(element)?);
        }
        request = request.global_secondary_indexes(gsi.build()?);
    }
    request.send().await.context("creating the table")?;
    if let Some(attribute) = &spec.ttl_attribute {
        client
            .update_time_to_live()
            .table_name(TABLE_NAME)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(attribute)
                    .enabled(true)
                    .build()?,
            )
            .send()
            .await
            .context("enabling TTL")?;
    }
    Ok(())
}

/// Creates (or updates) the dead-letter queue and the main queue; returns their URLs.
async fn create_queues(
    client: &aws_sdk_sqs::Client,
    infra: &Infrastructure,
) -> Result<(String, String)> {
    let dlq_url = ensure_queue(client, DLQ_NAME, &infra.dead_letter_queue, None).await?;
    let dlq_arn = client
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| anyhow!("the dead-letter queue has no ARN"))?;
    if let Some((target, _)) = &infra.queue.redrive
        && target != template::DEAD_LETTER_QUEUE
    {
        bail!(
            "template.yaml: {} must redrive to {}",
            template::QUEUE,
            template::DEAD_LETTER_QUEUE
        );
    }
    let queue_url = ensure_queue(client, QUEUE_NAME, &infra.queue, Some(&dlq_arn)).await?;
    Ok((queue_url, dlq_url))
}

async fn ensure_queue(
    client: &aws_sdk_sqs::Client,
    name: &str,
    spec: &QueueSpec,
    dlq_arn: Option<&str>,
) -> Result<String> {
    let url = client
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .with_context(|| format!("creating queue {name}"))?
        .queue_url
        .ok_or_else(|| anyhow!("queue {name} has no URL"))?;
    let mut request = client.set_queue_attributes().queue_url(&url);
    if let Some(v) = spec.visibility_timeout {
        request = request.attributes(QueueAttributeName::VisibilityTimeout, v.to_string());
    }
    if let Some(v) = spec.retention_period {
        request = request.attributes(QueueAttributeName::MessageRetentionPeriod, v.to_string());
    }
    if let (Some((_, max)), Some(arn)) = (&spec.redrive, dlq_arn) {
        let policy = serde_json::json!({ "deadLetterTargetArn": arn, "maxReceiveCount": max });
        request = request.attributes(QueueAttributeName::RedrivePolicy, policy.to_string());
    }
    request
        .send()
        .await
        .with_context(|| format!("configuring queue {name}"))?;
    Ok(url)
}
