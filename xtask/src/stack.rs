//! The local stack: AWS emulator(s), table and queues from template.yaml, provider
//! simulator, `cargo lambda watch` serving the functions, and the SQS bridge.
//!
//! The emulator is ministack (DynamoDB and SQS on one port), or, with
//! `--emulator localstack`, LocalStack for SQS: one already running at
//! `AWS_ENDPOINT_URL` (also for DynamoDB when it offers it), else the pinned one
//! from `.local/localstack-venv`, with DynamoDB on ministack. Everything the stack
//! starts gets its endpoints per service (`AWS_ENDPOINT_URL_DYNAMODB`,
//! `AWS_ENDPOINT_URL_SQS`), which the AWS SDK's default configuration honours.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;
use tokio::process::Command;

use crate::process::{LogSink, Service};
use crate::python::{self, Tools};
use crate::template::{self, Infrastructure, QueueSpec};

pub const TABLE_NAME: &str = "messages";
pub const QUEUE_NAME: &str = "messages";
pub const DLQ_NAME: &str = "messages-dlq";
pub(crate) const REGION: &str = "us-east-1";
/// What the stack's ministack serves: the table and queues, and the provider
/// credentials' Secrets Manager secret or SSM parameters (tests/tests/secrets.rs).
const MINISTACK_SERVICES: &str = "sqs,dynamodb,secretsmanager,ssm";
/// Credentials of the simulated providers (the simulator accepts only these).
const TWILIO_SID: &str = "ACtest";
const TWILIO_TOKEN: &str = "test-token";
const SENDGRID_KEY: &str = "SG.test-key";
/// What the local stack's SendGrid Inbound Parse webhook requires (HTTP Basic).
pub const SENDGRID_INBOUND_BASIC_AUTH: &str = "sendgrid:inbound-test-password";
/// The local stack's pagination cursor key, and the secret holding it.
const CURSOR_KEY: &str = "local-cursor-key-of-the-messaging-stack-0123456789";
pub const CURSOR_SECRET: &str = "messaging/cursor-key";
/// The Secrets Manager secret holding the provider credentials (the template's
/// `ProviderSecretName` default).
pub const PROVIDER_SECRET: &str = "messaging/providers";
/// The webhooks' secret (the template's `WebhookSecretName` default).
pub const WEBHOOK_SECRET: &str = "messaging/webhooks";
/// Credential variables of the caller's shell that must not reach the functions
/// when they read the secret (they would be ignored, with a warning).
const CREDENTIAL_VARIABLES: [&str; 3] = [
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "SENDGRID_API_KEY",
];

/// The AWS emulator(s) behind the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emulator {
    /// ministack: DynamoDB and SQS on one port.
    Ministack,
    /// LocalStack for SQS, DynamoDB on ministack. With `reuse`, a LocalStack
    /// already answering at `AWS_ENDPOINT_URL` (or on the LocalStack port) is used
    /// as it is, for DynamoDB too when it offers it; otherwise, and always without
    /// `reuse`, the pinned LocalStack from `.local/localstack-venv` is started.
    LocalStack { reuse: bool },
    /// ministack hosting template.yaml itself, deployed as a CloudFormation
    /// stack: the functions run as its Lambda functions (`deployed.rs`), not
    /// under `cargo lambda watch` and the SQS bridge.
    Deployed,
}

impl Emulator {
    /// `--emulator ministack|localstack` or `--deployed` among `args`; `args` must
    /// hold nothing else.
    pub fn from_args(args: &[String]) -> Result<Self> {
        match args {
            [] => Ok(Self::Ministack),
            [flag] if flag == "--deployed" => Ok(Self::Deployed),
            [flag, name] if flag == "--emulator" => Self::parse(name),
            [arg] if arg.starts_with("--emulator=") => Self::parse(&arg["--emulator=".len()..]),
            _ => bail!(
                "expected nothing, --emulator ministack|localstack or --deployed, got {args:?}"
            ),
        }
    }

    fn parse(name: &str) -> Result<Self> {
        match name {
            "ministack" => Ok(Self::Ministack),
            "localstack" => Ok(Self::LocalStack { reuse: true }),
            other => bail!("unknown emulator {other:?} (ministack or localstack)"),
        }
    }
}

pub struct Ports {
    /// ministack: DynamoDB, and SQS unless LocalStack serves it.
    pub emulator: u16,
    /// The LocalStack the stack starts (when it starts one).
    pub localstack: u16,
    pub api: u16,
    /// 0 = any free port.
    pub simulator: u16,
    /// Chosen free ports (not fixed ones): LocalStack may move to another if its
    /// port is taken by the time it starts.
    pub free: bool,
}

impl Ports {
    /// `cargo xtask dev`: ministack on 4566, or, with LocalStack, LocalStack on
    /// 4566 (where users and tools expect it) and ministack on 4567.
    pub fn fixed_for(emulator: Emulator) -> Self {
        Self {
            emulator: match emulator {
                Emulator::Ministack | Emulator::Deployed => 4566,
                Emulator::LocalStack { .. } => 4567,
            },
            localstack: 4566,
            api: 9000,
            simulator: 4010,
            free: false,
        }
    }

    pub fn free() -> Result<Self> {
        Ok(Self {
            emulator: free_port()?,
            localstack: free_port()?,
            api: free_port()?,
            simulator: 0,
            free: true,
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
    /// Release builds of the functions, the bridge and the simulator (`cargo xtask
    /// bench`): `cargo lambda watch --release` and `target/release/...`.
    pub release: bool,
    /// Whether the providers report back: Twilio status callbacks (delivery sends
    /// a `StatusCallback`) and SendGrid events from the simulator to the webhooks.
    pub provider_reports: bool,
    /// Registered with every scope and handed to the tests as `MESSAGING_API_KEY`.
    pub api_key: String,
}

pub struct Stack {
    pub(crate) services: Vec<Service>,
    /// Queues to delete when the stack stops.
    pub(crate) temporary_queues: Option<(aws_sdk_sqs::Client, Vec<String>)>,
    /// Directories to remove when the stack stops.
    pub(crate) scratch: Vec<PathBuf>,
    /// The CloudFormation stack, when template.yaml is deployed (`deployed.rs`).
    pub deployment: Option<crate::deployed::Deployment>,
    /// Environment that reaches the stack: AWS endpoints, names, URLs.
    pub env: Vec<(String, String)>,
    pub api_url: String,
    pub simulator_url: Option<String>,
    /// `AWS_ENDPOINT_URL`: the DynamoDB endpoint, and SQS's too unless LocalStack
    /// serves SQS apart (see `dynamodb`, `sqs`).
    pub emulator_url: String,
    pub dynamodb: Endpoint,
    pub sqs: Endpoint,
    pub queue_url: String,
    pub dlq_url: String,
}

/// Where one AWS service of the stack is served, and by what.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub url: String,
    /// "ministack", "LocalStack", ...
    pub by: String,
    /// An emulator the user runs, not one the stack started.
    pub external: bool,
}

pub(crate) fn free_port() -> Result<u16> {
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

/// What answers `GET <url>/_localstack/health`.
enum Probe {
    /// LocalStack, with the status its health gives SQS and DynamoDB.
    LocalStack {
        sqs: Option<String>,
        dynamodb: Option<String>,
    },
    /// Nothing, or not LocalStack: why.
    Other(String),
}

/// A service LocalStack's health lists as "available" (loads at first use) or
/// "running" offers that service.
fn offered(status: &Option<String>) -> bool {
    matches!(status.as_deref(), Some("available" | "running"))
}

async fn probe_localstack(url: &str) -> Probe {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
    {
        Ok(client) => client,
        Err(e) => return Probe::Other(e.to_string()),
    };
    let health = match client.get(format!("{url}/_localstack/health")).send().await {
        Ok(r) if r.status().is_success() => r.json::<serde_json::Value>().await,
        Ok(r) => return Probe::Other(format!("its health check answered {}", r.status())),
        Err(e) => return Probe::Other(format!("no answer: {e}")),
    };
    let Some(services) = health
        .ok()
        .and_then(|h| h.get("services").and_then(|s| s.as_object()).cloned())
    else {
        return Probe::Other("its health check lists no services".into());
    };
    // ministack answers the health check too, but not LocalStack's info endpoint.
    let info = match client.get(format!("{url}/_localstack/info")).send().await {
        Ok(r) if r.status().is_success() => r.json::<serde_json::Value>().await.ok(),
        _ => None,
    };
    if info.is_none_or(|i| i.get("version").is_none()) {
        return Probe::Other(
            "it answers LocalStack's health check but not /_localstack/info, as ministack does"
                .into(),
        );
    }
    let status = |name: &str| {
        services
            .get(name)
            .and_then(|s| s.as_str())
            .map(str::to_owned)
    };
    Probe::LocalStack {
        sqs: status("sqs"),
        dynamodb: status("dynamodb"),
    }
}

/// Starts ministack serving `aws_services` on `port` (or uses an emulator already
/// listening there); returns its URL.
pub(crate) async fn start_ministack(
    tools: &Tools,
    port: u16,
    aws_services: &str,
    sink: &LogSink,
    services: &mut Vec<Service>,
) -> Result<String> {
    let url = format!("http://127.0.0.1:{port}");
    if port_open(port) {
        println!("xtask: using the AWS emulator already listening at {url}");
        return Ok(url);
    }
    let mut emulator = Command::new(tools.exe("ministack"));
    emulator
        .env("BIND_HOST", "127.0.0.1")
        .env("GATEWAY_PORT", port.to_string())
        // The functions it runs (a deployed stack) inherit its environment: they
        // call this emulator, and never the caller's provider credentials.
        .env("AWS_ENDPOINT_URL", &url)
        .env_remove("AWS_ENDPOINT_URL_DYNAMODB")
        .env_remove("AWS_ENDPOINT_URL_SQS")
        .env("SERVICES", aws_services);
    for name in CREDENTIAL_VARIABLES {
        emulator.env_remove(name);
    }
    let (service, _) = Service::start("emulator", emulator, sink, None, Duration::ZERO).await?;
    services.push(service);
    wait_for_port(
        "the AWS emulator (ministack)",
        port,
        Duration::from_secs(30),
    )
    .await?;
    Ok(url)
}

/// Starts the pinned LocalStack (installing it first if needed) serving SQS on
/// 127.0.0.1:`port`; returns its URL once its health says SQS is running. With
/// `may_move`, a port that turns out to be taken is replaced by another free one.
async fn start_localstack(
    root: &Path,
    port: u16,
    may_move: bool,
    sink: &LogSink,
    services: &mut Vec<Service>,
    scratch: &mut Vec<PathBuf>,
) -> Result<String> {
    let python = python::ensure_localstack(root)?;
    let mut port = port;
    const ATTEMPTS: u32 = 3;
    for attempt in 1.. {
        let started = match TcpListener::bind(("127.0.0.1", port)) {
            Ok(probe) => {
                drop(probe);
                launch_localstack(root, &python, port, sink).await
            }
            Err(e) => Err(anyhow!("127.0.0.1:{port} is in use: {e}")),
        };
        let data = localstack_dir(root, port);
        match started {
            Ok(service) => {
                services.push(service);
                scratch.push(data);
                let url = format!("http://127.0.0.1:{port}");
                // It logs https; plain http on the same port is what the stack uses.
                println!("xtask: LocalStack serves SQS at {url}");
                return Ok(url);
            }
            // Between choosing a free port and LocalStack binding it, the port can
            // be taken (e.g. as the local end of a connection); LocalStack then
            // waits for its gateway forever, silently.
            Err(e) if may_move && attempt < ATTEMPTS => {
                let _ = std::fs::remove_dir_all(&data);
                println!("xtask: LocalStack did not start ({e:#}); trying another port");
                port = free_port()?;
            }
            Err(e) => {
                return Err(e.context(
                    "starting LocalStack (stop what holds the port, or point AWS_ENDPOINT_URL \
                     at a LocalStack you run)",
                ));
            }
        }
    }
    unreachable!("the loop returns")
}

/// LocalStack's `FILESYSTEM_ROOT` when it runs on `port`; removed when the stack stops.
fn localstack_dir(root: &Path, port: u16) -> PathBuf {
    root.join(format!("target/xtask/localstack-{port}"))
}

/// One LocalStack process on `port`, once its health says SQS is running.
async fn launch_localstack(
    root: &Path,
    python: &Path,
    port: u16,
    sink: &LogSink,
) -> Result<Service> {
    // Its state (no persistence: caches and temporary files), fresh per run.
    let data = localstack_dir(root, port);
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let listen = format!("127.0.0.1:{port}");
    let mut localstack = Command::new(python);
    localstack
        .args(["-m", "localstack.runtime.main"])
        .current_dir(&data)
        .env("GATEWAY_SERVER", "hypercorn")
        .env("GATEWAY_LISTEN", &listen)
        .env("LOCALSTACK_HOST", &listen)
        .env("OVERRIDE_IN_DOCKER", "0")
        .env("FILESYSTEM_ROOT", &data)
        .env("DNS_ADDRESS", "0")
        .env("SKIP_SSL_CERT_DOWNLOAD", "1")
        .env("SERVICES", "sqs")
        .env("EAGER_SERVICE_LOADING", "1")
        .env("SQS_ENDPOINT_STRATEGY", "path")
        .env("DISABLE_EVENTS", "1");
    for inherited in [
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_SQS",
        "AWS_ENDPOINT_URL_DYNAMODB",
        "PERSISTENCE",
        "DEBUG",
    ] {
        localstack.env_remove(inherited);
    }
    let (mut service, _) =
        Service::start("localstack", localstack, sink, None, Duration::ZERO).await?;
    let url = format!("http://{listen}");
    // Ready in 1-7 s; LocalStack itself gives up on its gateway after 15 s.
    let timeout = Duration::from_secs(45);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match probe_localstack(&url).await {
            Probe::LocalStack { sqs, .. } if sqs.as_deref() == Some("running") => {
                return Ok(service);
            }
            _ if !service.is_running() => bail!("LocalStack exited during start-up"),
            _ if tokio::time::Instant::now() > deadline => {
                // Dropping the service kills it.
                bail!("LocalStack did not report SQS running at {url} within {timeout:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Starts (or finds) the emulators; returns the DynamoDB and SQS endpoints.
async fn start_emulators(
    root: &Path,
    tools: &Tools,
    emulator: Emulator,
    ports: &Ports,
    sink: &LogSink,
    services: &mut Vec<Service>,
    scratch: &mut Vec<PathBuf>,
) -> Result<(Endpoint, Endpoint)> {
    let endpoint = |url: &str, by: &str| Endpoint {
        url: url.to_owned(),
        by: by.to_owned(),
        external: false,
    };
    let external = |url: &str, by: &str| Endpoint {
        external: true,
        ..endpoint(url, by)
    };
    let reuse = match emulator {
        Emulator::Ministack => {
            let url =
                start_ministack(tools, ports.emulator, MINISTACK_SERVICES, sink, services).await?;
            return Ok((endpoint(&url, "ministack"), endpoint(&url, "ministack")));
        }
        Emulator::LocalStack { reuse } => reuse,
        Emulator::Deployed => bail!("a deployed stack starts its emulator itself"),
    };
    // A LocalStack the user runs (Docker, `localstack start`): at AWS_ENDPOINT_URL,
    // or else on LocalStack's port.
    let mut running = None;
    if reuse {
        let given = std::env::var("AWS_ENDPOINT_URL")
            .ok()
            .map(|u| u.trim().trim_end_matches('/').to_owned())
            .filter(|u| !u.is_empty());
        let url = given
            .clone()
            .unwrap_or_else(|| format!("http://127.0.0.1:{}", ports.localstack));
        match probe_localstack(&url).await {
            Probe::LocalStack { sqs, dynamodb } => {
                if !offered(&sqs) {
                    bail!(
                        "the LocalStack at {url} does not offer SQS (its health says {}); \
                         start it with SQS enabled",
                        sqs.as_deref().unwrap_or("nothing")
                    );
                }
                const BY: &str = "LocalStack, already running";
                if offered(&dynamodb) {
                    println!(
                        "xtask: using the LocalStack already running at {url} for DynamoDB and SQS"
                    );
                    return Ok((external(&url, BY), external(&url, BY)));
                }
                running = Some((external(&url, BY), dynamodb));
            }
            Probe::Other(why) if given.is_some() => println!(
                "xtask: no LocalStack at AWS_ENDPOINT_URL ({url}: {why}); starting the pinned LocalStack"
            ),
            Probe::Other(_) => {}
        }
    }
    let (sqs, note) = match running {
        Some((sqs, dynamodb)) => {
            let note = format!(
                "its health lists dynamodb as {}",
                dynamodb.as_deref().unwrap_or("absent")
            );
            (sqs, note)
        }
        None => {
            let url = start_localstack(root, ports.localstack, ports.free, sink, services, scratch)
                .await?;
            let note = "LocalStack's DynamoDB needs Amazon's DynamoDB Local, which LocalStack \
                        downloads at first use; that download is not possible here, and its \
                        license forbids bundling it";
            (endpoint(&url, "LocalStack"), note.to_owned())
        }
    };
    // Everything but SQS stays on ministack, at AWS_ENDPOINT_URL (SQS there is idle).
    let dynamodb =
        start_ministack(tools, ports.emulator, MINISTACK_SERVICES, sink, services).await?;
    println!(
        "xtask: SQS on LocalStack ({}), DynamoDB stays on ministack ({dynamodb}): {note}",
        sqs.url
    );
    Ok((endpoint(&dynamodb, "ministack"), sqs))
}

impl Stack {
    /// The stack on ministack.
    pub async fn start(root: &Path, tools: &Tools, options: Options) -> Result<Self> {
        Self::start_with(root, tools, options, Emulator::Ministack).await
    }

    pub async fn start_with(
        root: &Path,
        tools: &Tools,
        options: Options,
        emulator: Emulator,
    ) -> Result<Self> {
        if emulator == Emulator::Deployed {
            return crate::deployed::start(root, tools, options).await;
        }
        let Options {
            ports,
            sink,
            function_env,
            visibility_timeout,
            concurrency,
            release,
            provider_reports,
            api_key,
        } = options;
        let bin_dir = root
            .join("target")
            .join(if release { "release" } else { "debug" });
        let mut infra = template::load(&root.join("template.yaml"))?;
        if visibility_timeout.is_some() {
            infra.queue.visibility_timeout = visibility_timeout;
        }
        let (mut services, mut scratch) = (Vec::new(), Vec::new());
        let (dynamodb, sqs) = start_emulators(
            root,
            tools,
            emulator,
            &ports,
            &sink,
            &mut services,
            &mut scratch,
        )
        .await?;
        let sqs_client = aws_sdk_sqs::Client::new(&aws_config(&sqs.url).await);
        let dynamodb_client = aws_sdk_dynamodb::Client::new(&aws_config(&dynamodb.url).await);
        create_table(&dynamodb_client, &infra).await?;
        crate::keys::register_stack_keys(dynamodb_client, TABLE_NAME, &api_key).await?;
        // A test stack on a LocalStack the user runs gets queues of its own,
        // deleted when it stops, so that it neither reconfigures nor drains the
        // user's `messages` queue (which a `cargo xtask dev` may be consuming).
        let (queue_name, dlq_name) = if ports.free && sqs.external {
            let name = format!("{QUEUE_NAME}-test-{}", ports.api);
            (name.clone(), format!("{name}-dlq"))
        } else {
            (QUEUE_NAME.to_owned(), DLQ_NAME.to_owned())
        };
        let (queue_url, dlq_url) =
            create_queues(&sqs_client, &infra, &queue_name, &dlq_name).await?;
        let temporary_queues = (ports.free && sqs.external)
            .then(|| (sqs_client.clone(), vec![queue_url.clone(), dlq_url.clone()]));

        // Per-service endpoints always (not just AWS_ENDPOINT_URL), so that such a
        // variable in the caller's environment cannot send a client elsewhere.
        let mut env: Vec<(String, String)> = vec![
            ("AWS_ENDPOINT_URL".into(), dynamodb.url.clone()),
            ("AWS_ENDPOINT_URL_DYNAMODB".into(), dynamodb.url.clone()),
            ("AWS_ENDPOINT_URL_SQS".into(), sqs.url.clone()),
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
            let events = provider_reports
                .then(|| format!("http://127.0.0.1:{}/webhooks/sendgrid/events", ports.api));
            let (service, url) =
                start_simulator(&bin_dir, ports.simulator, events.as_deref(), &sink).await?;
            services.push(service);
            seed_secrets(&aws_config(&dynamodb.url).await).await?;
            env.extend(simulator_env(&url));
            Some(url)
        };
        // The webhooks: the URL Twilio is asked to report to, the Inbound Parse
        // credentials (read from the webhooks' secret when the simulator runs;
        // the tests send them); and the cursor key, from its secret as on AWS.
        if provider_reports {
            env.push((
                "TWILIO_STATUS_CALLBACK_URL".into(),
                format!("http://127.0.0.1:{}/webhooks/twilio/status", ports.api),
            ));
        }
        seed_cursor_secret(&aws_config(&dynamodb.url).await, &mut env).await?;
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
            .args(release.then_some("--release"))
            .env("PATH", tools.path_env())
            .envs(env.iter().map(|(k, v)| (k, v)));
        if simulator_url.is_some() {
            for name in CREDENTIAL_VARIABLES {
                watch.env_remove(name);
            }
        }
        let (service, _) = Service::start("functions", watch, &sink, None, Duration::ZERO).await?;
        services.push(service);
        wait_for_port("cargo lambda watch", ports.api, Duration::from_secs(60)).await?;

        // The SQS -> delivery function event source mapping: the bridge invokes
        // the delivery function through `cargo lambda watch`. (A crash's fresh
        // execution environment, which watch does not give, is the deployed
        // stack's: the fault-injection suite runs there.)
        let mut bridge = Command::new(bin_dir.join("sqs-bridge"));
        bridge
            .args(["--queue-url", &queue_url])
            .args([
                "--invoke-url",
                &format!("{api_url}/2015-03-31/functions/delivery/invocations"),
            ])
            .args(["--pollers", &concurrency.to_string()])
            .envs(env.iter().map(|(k, v)| (k, v)));
        if simulator_url.is_some() {
            for name in CREDENTIAL_VARIABLES {
                bridge.env_remove(name);
            }
        }
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
            temporary_queues,
            scratch,
            env,
            api_url,
            simulator_url,
            emulator_url: dynamodb.url.clone(),
            deployment: None,
            dynamodb,
            sqs,
            queue_url,
            dlq_url,
        };
        stack.env.push(("DLQ_URL".into(), stack.dlq_url.clone()));
        stack
            .env
            .push(("MESSAGING_API_URL".into(), stack.api_url.clone()));
        stack.env.push(("MESSAGING_API_KEY".into(), api_key));
        if let Some(url) = &stack.simulator_url {
            stack.env.push(("PROVIDER_SIM_URL".into(), url.clone()));
        }
        stack.warm_up().await?;
        Ok(stack)
    }

    /// The stack's API key (every scope).
    pub fn api_key(&self) -> &str {
        self.env
            .iter()
            .find(|(name, _)| name == "MESSAGING_API_KEY")
            .map(|(_, key)| key.as_str())
            .unwrap_or_default()
    }

    /// Where the delivery function is invoked directly (Lambda's Invoke API):
    /// the emulator's Lambda for a deployed stack, else `cargo lambda watch`.
    fn delivery_invoke_url(&self) -> String {
        match &self.deployment {
            Some(d) => format!(
                "{}/2015-03-31/functions/{}/invocations",
                self.emulator_url, d.delivery_function
            ),
            None => format!("{}/2015-03-31/functions/delivery/invocations", self.api_url),
        }
    }

    /// Starts every function once (the HTTP ones answer 404, 422 or 403), so
    /// start-up problems show here rather than in the first test.
    pub(crate) async fn warm_up(&mut self) -> Result<()> {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", self.api_key()).parse()?,
        );
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .build()?;
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
                    .post(format!("{api}/webhooks/twilio/status"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body("MessageSid=SM0&MessageStatus=sent"),
                403,
            ),
            (
                client
                    .post(self.delivery_invoke_url())
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
        if let Some((client, urls)) = self.temporary_queues {
            for url in urls {
                if let Err(e) = client.delete_queue().queue_url(&url).send().await {
                    eprintln!("xtask: could not delete the test queue {url}: {e}");
                }
            }
        }
        for dir in self.scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Starts the provider simulator on 127.0.0.1:`port` (0: any free port), posting
/// signed SendGrid events to `events_url`; returns it and its URL.
pub(crate) async fn start_simulator(
    bin_dir: &Path,
    port: u16,
    events_url: Option<&str>,
    sink: &LogSink,
) -> Result<(Service, String)> {
    let mut sim = Command::new(bin_dir.join("provider-sim"));
    sim.args(["--addr", &format!("127.0.0.1:{port}")]);
    // The simulator reports delivery like the real providers: Twilio status
    // callbacks to the StatusCallback URL each message names, and signed SendGrid
    // events to the events webhook.
    if let Some(url) = events_url {
        sim.args(["--sendgrid-events-url", url]);
    }
    sim.args([
        "--twilio-account-sid",
        TWILIO_SID,
        "--twilio-auth-token",
        TWILIO_TOKEN,
    ])
    .args(["--sendgrid-api-key", SENDGRID_KEY]);
    for name in CREDENTIAL_VARIABLES {
        sim.env_remove(name);
    }
    let (service, line) = Service::start(
        "provider-sim",
        sim,
        sink,
        Some("listening on "),
        Duration::from_secs(20),
    )
    .await?;
    let url = line
        .and_then(|l| l.split("listening on ").nth(1).map(|u| u.trim().to_owned()))
        .ok_or_else(|| anyhow!("provider-sim did not say where it listens"))?;
    Ok((service, url))
}

/// The stack's secrets in the emulator's Secrets Manager, as they are on AWS: the
/// simulated providers' credentials and the webhooks' secret.
pub(crate) async fn seed_secrets(aws: &aws_config::SdkConfig) -> Result<()> {
    crate::secrets::seed_provider_secret(
        aws,
        PROVIDER_SECRET,
        TWILIO_SID,
        TWILIO_TOKEN,
        SENDGRID_KEY,
    )
    .await?;
    crate::secrets::seed_webhook_secret(
        aws,
        WEBHOOK_SECRET,
        TWILIO_TOKEN,
        SENDGRID_INBOUND_BASIC_AUTH,
    )
    .await
}

/// The cursor key's secret, and what the functions need to find it and the
/// Inbound Parse credentials the tests send.
pub(crate) async fn seed_cursor_secret(
    aws: &aws_config::SdkConfig,
    env: &mut Vec<(String, String)>,
) -> Result<()> {
    crate::secrets::seed_secret(aws, CURSOR_SECRET, CURSOR_KEY).await?;
    for (name, value) in [
        ("SENDGRID_INBOUND_BASIC_AUTH", SENDGRID_INBOUND_BASIC_AUTH),
        ("CURSOR_SECRET_ID", CURSOR_SECRET),
    ] {
        env.push((name.into(), value.into()));
    }
    Ok(())
}

/// What the functions (and the tests that run their code) need to call the
/// simulator at `url` and read the stack's secrets.
pub(crate) fn simulator_env(url: &str) -> Vec<(String, String)> {
    [
        ("TWILIO_API_URL", url),
        ("SENDGRID_API_URL", url),
        ("PROVIDER_SECRET_ID", PROVIDER_SECRET),
        ("WEBHOOK_SECRET_ID", WEBHOOK_SECRET),
        (
            "SENDGRID_WEBHOOK_PUBLIC_KEY",
            provider_sim::DEV_SENDGRID_PUBLIC_KEY,
        ),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect()
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
    queue_name: &str,
    dlq_name: &str,
) -> Result<(String, String)> {
    let dlq_url = ensure_queue(client, dlq_name, &infra.dead_letter_queue, None).await?;
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
    let queue_url = ensure_queue(client, queue_name, &infra.queue, Some(&dlq_arn)).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn emulator_flag() {
        assert_eq!(Emulator::from_args(&[]).unwrap(), Emulator::Ministack);
        for line in ["--emulator localstack", "--emulator=localstack"] {
            assert_eq!(
                Emulator::from_args(&args(line)).unwrap(),
                Emulator::LocalStack { reuse: true },
                "{line}"
            );
        }
        assert_eq!(
            Emulator::from_args(&args("--emulator ministack")).unwrap(),
            Emulator::Ministack
        );
        for bad in [
            "--emulator",
            "--emulator docker",
            "--fast",
            "--emulator localstack x",
        ] {
            assert!(Emulator::from_args(&args(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn dev_ports_put_localstack_where_users_expect_it() {
        let ministack = Ports::fixed_for(Emulator::Ministack);
        assert_eq!((ministack.emulator, ministack.free), (4566, false));
        let localstack = Ports::fixed_for(Emulator::LocalStack { reuse: true });
        assert_eq!((localstack.localstack, localstack.emulator), (4566, 4567));
    }

    #[test]
    fn offered_services() {
        for status in ["available", "running"] {
            assert!(offered(&Some(status.into())), "{status}");
        }
        for status in [Some("disabled".to_owned()), Some("error".into()), None] {
            assert!(!offered(&status), "{status:?}");
        }
    }
}
