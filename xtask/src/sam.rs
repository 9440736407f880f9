//! The functions under AWS SAM locally: `cargo xtask sam-image` builds the local
//! invoke base image, `cargo xtask sam-test` builds the functions with `sam build`
//! (x86_64), invokes every fixture in `events/` with `sam local invoke` and runs the
//! end-to-end suite through `sam local start-api`, against the normal local stack.
//!
//! **The invoke image.** `sam local` runs each function in a container built
//! `FROM` AWS's `public.ecr.aws/lambda/provided:al2023` image plus SAM's bundled
//! Runtime Interface Emulator (RIE). Where no registry is reachable that image
//! cannot be pulled, so `sam-image` builds a stand-in: a Debian bookworm
//! (`debootstrap --variant=minbase`) root with CA certificates and Lambda's
//! directories, imported as `messaging-lambda-base:al2023-local`; SAM adds the
//! same RIE to it (`--invoke-image`, `--skip-pull-image`). The functions are
//! Rust binaries that need only glibc and CA certificates (cargo-lambda links them
//! with zig against an old glibc: nothing newer than a weak `gettid@GLIBC_2.30`;
//! bookworm has 2.36, AL2023 2.34), so the Debian userland does not change their
//! behaviour. With a registry (any normal machine) none of this is needed: plain
//! `sam local invoke` pulls the real image.
//!
//! **Reaching the local stack from the containers.** SAM (1.167) creates its
//! containers on Docker's default bridge even with `--docker-network host` (it only
//! *connects* containers to a named network and skips `host`), and the emulator and
//! simulator listen on 127.0.0.1 only. So this module forwards the bridge gateway
//! address (e.g. 172.17.0.1) to those ports and hands the functions URLs on it.
//!
//! **Variables.** `sam local` passes a function only the variables that the
//! template declares (plus its own `AWS_*` set), whatever `--env-vars` holds; the
//! emulator endpoints (`AWS_ENDPOINT_URL*`) and the test tuning are not declared.
//! So the suite runs on `target/sam/template.local.yaml`, the built template with those
//! names declared (empty) under `Globals`, and `env.json` gives their values.
//! `env.json` also always sets `CURSOR_SECRET_ID`: the template names the generated
//! secret (`!Ref CursorSecret`), which `sam local` cannot resolve to the stack's.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use serde_norway::Value as Yaml;

use crate::python::{self, Tools};

/// The local invoke base image (`--invoke-image`).
pub const IMAGE: &str = "messaging-lambda-base:al2023-local";
/// The image SAM builds from [`IMAGE`] (base + RIE): `<repository>:rapid-<arch>`.
/// SAM reuses it as long as it exists, so it goes whenever the base is rebuilt.
const RAPID_IMAGES: [&str; 2] = [
    "messaging-lambda-base:rapid-x86_64",
    "messaging-lambda-base:rapid-arm64",
];
/// Label holding the hash of [`recipe`] that built the image.
const RECIPE_LABEL: &str = "messaging.recipe-hash";
const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";
const PACKAGES: &str = "ca-certificates";
/// What the image adds besides the root file system: Lambda's directories and the
/// environment AWS's provided.al2023 image sets.
const IMAGE_DIRS: [&str; 3] = ["var/task", "opt", "var/runtime"];
const IMAGE_CHANGES: [&str; 2] = [
    "ENV LANG=C.UTF-8 TZ=:/etc/localtime \
     PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/opt/bin \
     LD_LIBRARY_PATH=/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib \
     LAMBDA_TASK_ROOT=/var/task LAMBDA_RUNTIME_DIR=/var/runtime",
    "WORKDIR /var/task",
];

/// The architecture local invokes use: this machine's (no emulation of the other).
const ARCHITECTURE: &str = "x86_64";
const FUNCTIONS: [&str; 6] = [
    "OutboundFunction",
    "InboundFunction",
    "ReadFunction",
    "SuppressionsFunction",
    "WebhooksFunction",
    "DeliveryFunction",
];
/// Messages the SQS fixture names (records 1 and 4), stored before it is invoked.
const SEEDED_SMS: &str = "01932c07-a0c4-7b6e-8000-0000000000a1";
const SEEDED_EMAIL: &str = "01932c07-a0c4-7b6e-8000-0000000000a2";
/// The template's AllowedSenders has no default; env.json then sets
/// ALLOWED_SENDERS empty (any sender), as the other local stacks run.
const LOCAL_ALLOWED_SENDERS: &str = "+18045551234";

/// `--parameter-overrides` of every local build and run.
fn parameter_overrides() -> String {
    format!("Architecture={ARCHITECTURE} AllowedSenders={LOCAL_ALLOWED_SENDERS}")
}
const ALLOWED_SENDERS: &str = "ALLOWED_SENDERS";
/// Set for every function in env.json (see [`prepare_local`]).
/// Stack variables the functions do not get: the SDK's credentials and region come
/// from SAM (its own environment), the rest are for the test suites.
const NOT_FOR_FUNCTIONS: [&str; 11] = [
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "DLQ_URL",
    "MESSAGING_API_URL",
    "MESSAGING_API_KEY",
    "PROVIDER_SIM_URL",
    // The credentials reach the delivery function through the secret, as on AWS.
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "SENDGRID_API_KEY",
];

fn sam_dir(root: &Path) -> PathBuf {
    root.join("target/sam")
}

fn elapsed(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 60.0 {
        format!("{}m{:04.1}s", (s / 60.0) as u64, s % 60.0)
    } else {
        format!("{s:.1}s")
    }
}

/// FNV-1a, 64 bits: a hash that stays the same across Rust versions.
fn fnv1a(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// Everything that decides the image's content; its hash labels the image.
fn recipe() -> String {
    format!(
        "v1 debootstrap --variant=minbase --include={PACKAGES} {SUITE} {MIRROR}; \
         trim apt caches, docs, man pages, locales; mkdir {dirs}; {changes}",
        dirs = IMAGE_DIRS.join(" "),
        changes = IMAGE_CHANGES.join("; "),
    )
}

fn docker() -> Command {
    Command::new("docker")
}

/// stdout of `command`, trimmed, if it succeeds.
fn output_of(command: &mut Command) -> Option<String> {
    let output = command.stderr(Stdio::null()).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn image_recipe_hash(image: &str) -> Option<String> {
    output_of(docker().args([
        "image",
        "inspect",
        image,
        "--format",
        &format!("{{{{ index .Config.Labels \"{RECIPE_LABEL}\" }}}}"),
    ]))
}

/// `cargo xtask sam-image [--force]`.
pub fn image_command(args: &[String]) -> Result<()> {
    let force = match args {
        [] => false,
        [flag] if flag == "--force" => true,
        _ => bail!("usage: cargo xtask sam-image [--force]"),
    };
    ensure_image(&crate::root(), force)?;
    Ok(())
}

/// Builds [`IMAGE`] unless it exists with the current recipe. Returns whether it
/// built and how long that took.
pub fn ensure_image(root: &Path, force: bool) -> Result<(bool, Duration)> {
    let started = Instant::now();
    require_docker()?;
    let hash = fnv1a(&recipe());
    if !force && image_recipe_hash(IMAGE).as_deref() == Some(hash.as_str()) {
        println!("xtask: {IMAGE} is up to date (recipe {hash})");
        return Ok((false, started.elapsed()));
    }
    println!("xtask: building {IMAGE} (recipe {hash}): debootstrap {SUITE}, then docker import");
    // debootstrap needs root (chroot, device nodes, file ownership).
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "building {IMAGE} needs root (debootstrap); run `sudo -E cargo xtask sam-image` once, \
             or on a machine with a registry skip it: sam pulls the real image"
        );
    }
    ensure_debootstrap()?;
    let work = sam_dir(root);
    let logs = work.join("logs");
    std::fs::create_dir_all(&logs)?;
    let rootfs = work.join(format!("rootfs-{hash}"));
    remove_rootfs(&rootfs)?;
    let log = logs.join("debootstrap.log");
    let log_file = std::fs::File::create(&log)?;
    let status = Command::new("debootstrap")
        .args(["--variant=minbase", &format!("--include={PACKAGES}"), SUITE])
        .arg(&rootfs)
        .arg(MIRROR)
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .status()
        .context("starting debootstrap")?;
    if !status.success() {
        bail!(
            "debootstrap failed with {status} (is {MIRROR} reachable?); see {}",
            log.display()
        );
    }
    // What a Lambda image needs none of.
    for dir in [
        "var/cache/apt",
        "var/lib/apt/lists",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/locale",
    ] {
        let path = rootfs.join(dir);
        if path.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                let entry = entry?.path();
                if entry.is_dir() {
                    std::fs::remove_dir_all(&entry)?;
                } else {
                    std::fs::remove_file(&entry)?;
                }
            }
        }
    }
    for dir in IMAGE_DIRS {
        std::fs::create_dir_all(rootfs.join(dir))?;
    }
    let previous = output_of(docker().args(["image", "inspect", IMAGE, "--format", "{{.Id}}"]));
    let mut tar = Command::new("tar")
        .args(["--numeric-owner", "-C"])
        .arg(&rootfs)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting tar")?;
    let mut import = docker();
    import.arg("import");
    for change in IMAGE_CHANGES {
        import.args(["--change", change]);
    }
    let import = import
        .args(["--change", &format!("LABEL {RECIPE_LABEL}={hash}")])
        .args(["-", IMAGE])
        .stdin(tar.stdout.take().expect("piped"))
        .stdout(Stdio::null())
        .status()
        .context("starting docker import")?;
    let tar = tar.wait()?;
    if !tar.success() || !import.success() {
        bail!("tar | docker import failed (tar: {tar}, docker import: {import})");
    }
    remove_rootfs(&rootfs)?;
    // SAM builds its image (base + RIE) only when it is missing: drop the one
    // built from the previous base, and the previous base itself.
    for rapid in RAPID_IMAGES {
        let _ = docker()
            .args(["image", "rm", rapid])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    if let Some(id) = previous {
        let _ = docker()
            .args(["image", "rm", &id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let glibc = output_of(docker().args([
        "run",
        "--rm",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "ldd --version | head -n 1",
    ]))
    .ok_or_else(|| anyhow!("{IMAGE} does not run a shell"))?;
    println!(
        "xtask: built {IMAGE} in {} ({glibc})",
        elapsed(started.elapsed())
    );
    Ok((true, started.elapsed()))
}

fn require_docker() -> Result<()> {
    let ok = docker()
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        bail!("the Docker engine does not answer (`docker info`); sam local needs it");
    }
    Ok(())
}

fn ensure_debootstrap() -> Result<()> {
    let found = |name: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if found("debootstrap") {
        return Ok(());
    }
    println!("xtask: installing debootstrap (apt-get)");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "debootstrap"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        python::run(Command::new("apt-get").arg("update"))?;
        if !install() {
            bail!("apt-get install debootstrap failed");
        }
    }
    Ok(())
}

fn remove_rootfs(rootfs: &Path) -> Result<()> {
    if rootfs.exists() {
        std::fs::remove_dir_all(rootfs)
            .with_context(|| format!("removing {}", rootfs.display()))?;
    }
    Ok(())
}

/// `sam` with the pinned tools first on PATH (its rust-cargolambda build runs
/// `cargo lambda build`) and the emulator's credentials, which SAM hands to the
/// functions as AWS_ACCESS_KEY_ID etc.
fn sam(root: &Path, tools: &Tools) -> Command {
    let mut command = Command::new(tools.exe("sam"));
    command
        .current_dir(root)
        .env("PATH", tools.path_env())
        .env("SAM_CLI_TELEMETRY", "0")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_DEFAULT_REGION", "us-east-1");
    for name in [
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_ENDPOINT_URL_SQS",
    ] {
        command.env_remove(name);
    }
    command
}

/// `sam build` for x86_64 into target/sam/build (not `.aws-sam`, so it never
/// mixes with an arm64 build for deployment). Not `--cached`: SAM's cache key
/// hashes the whole CodeUri, here the workspace with its `target/` (gigabytes,
/// changing under concurrent builds); cargo's own incremental build is the cache.
///
/// These builds exist to run the functions under SAM, not to measure them: the
/// release profile's whole-program optimisation (fat LTO, one codegen unit,
/// opt-level 3) is relaxed here through cargo's environment overrides, which
/// makes the first build several times faster on two cores. Behaviour does not
/// change (`panic = "abort"` and `strip` stay); `cargo xtask bench` and
/// `sam build` for deploying use the profile as it is.
fn sam_build(root: &Path, tools: &Tools) -> Result<Duration> {
    let started = Instant::now();
    println!(
        "xtask: sam build (x86_64, release with a quick-to-build profile) into target/sam/build"
    );
    python::run(
        sam(root, tools)
            .args([
                "build",
                "--parameter-overrides",
                &parameter_overrides(),
                "--build-dir",
                "target/sam/build",
                "--no-cached",
                "--parallel",
            ])
            .envs(QUICK_RELEASE_PROFILE),
    )?;
    Ok(started.elapsed())
}

/// Cargo's overrides of the release profile for test builds (see [`sam_build`]).
const QUICK_RELEASE_PROFILE: [(&str, &str); 3] = [
    ("CARGO_PROFILE_RELEASE_LTO", "off"),
    ("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16"),
    ("CARGO_PROFILE_RELEASE_OPT_LEVEL", "1"),
];

/// The built template with `names` declared under Globals.Function.Environment
/// (empty: env.json gives the values), as target/sam/template.local.yaml: outside
/// the build directory, which every `sam build` empties, with the functions'
/// CodeUris pointing into it.
fn write_local_template(sam_dir: &Path, names: &[&String]) -> Result<PathBuf> {
    const BUILD: &str = "build";
    let built = sam_dir.join(BUILD).join("template.yaml");
    let text = std::fs::read_to_string(&built)
        .with_context(|| format!("reading {} (run sam build)", built.display()))?;
    let mut doc: Yaml = serde_norway::from_str(&text)
        .with_context(|| format!("{} is not YAML", built.display()))?;
    if let Some(Yaml::Mapping(resources)) = doc.get_mut("Resources") {
        for resource in resources.values_mut() {
            if let Some(code) = resource
                .get_mut("Properties")
                .and_then(|p| p.get_mut("CodeUri"))
                && let Some(relative) = code.as_str().filter(|c| !c.starts_with('/'))
            {
                *code = Yaml::from(format!("{BUILD}/{relative}"));
            }
        }
    }
    let mapping = |value: &mut Yaml, key: &str| -> Result<()> {
        let Yaml::Mapping(map) = value else {
            bail!("template: {key}'s parent is not a mapping");
        };
        map.entry(Yaml::from(key))
            .or_insert_with(|| Yaml::Mapping(Default::default()));
        Ok(())
    };
    let mut node = &mut doc;
    for key in ["Globals", "Function", "Environment", "Variables"] {
        mapping(node, key)?;
        node = node
            .get_mut(key)
            .ok_or_else(|| anyhow!("template: no {key}"))?;
    }
    let Yaml::Mapping(variables) = node else {
        bail!("template: Globals.Function.Environment.Variables is not a mapping");
    };
    for name in names {
        variables
            .entry(Yaml::from(name.as_str()))
            .or_insert_with(|| Yaml::from(""));
    }
    let path = sam_dir.join("template.local.yaml");
    std::fs::write(
        &path,
        format!(
            "# Generated by `cargo xtask sam-test` (or `dev --sam`) from the template `sam build` wrote to\n\
             # target/sam/build: the same, with the local-only variables declared so that\n\
             # --env-vars can set them.\n{}",
            serde_norway::to_string(&doc)?
        ),
    )?;
    Ok(path)
}

/// Forwards `gateway:port` to `127.0.0.1:target` for the containers on Docker's
/// bridge; returns the bound port.
async fn forward(gateway: IpAddr, target: u16) -> Result<(u16, tokio::task::JoinHandle<()>)> {
    let listener = match tokio::net::TcpListener::bind((gateway, target)).await {
        Ok(listener) => listener,
        Err(_) => tokio::net::TcpListener::bind((gateway, 0))
            .await
            .with_context(|| format!("listening on {gateway}"))?,
    };
    let port = listener.local_addr()?.port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            tokio::spawn(async move {
                if let Ok(mut outbound) =
                    tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    Ok((port, task))
}

/// The gateway address of Docker's default bridge: the host as the containers see
/// it. IPAM's `Gateway` when Docker lists it (it does not always for the default
/// bridge), else the bridge interface's address, else the subnet's first address.
fn bridge_gateway() -> Result<IpAddr> {
    let inspect = |format: &str| {
        output_of(docker().args(["network", "inspect", "bridge", "--format", format]))
            .unwrap_or_default()
    };
    let first_ipv4 = |text: &str| {
        text.split_whitespace()
            .find_map(|a| a.split('/').next()?.parse::<IpAddr>().ok())
            .filter(IpAddr::is_ipv4)
    };
    if let Some(gateway) = first_ipv4(&inspect("{{range .IPAM.Config}}{{.Gateway}} {{end}}")) {
        return Ok(gateway);
    }
    let interface = inspect("{{index .Options \"com.docker.network.bridge.name\"}}");
    if !interface.is_empty()
        && let Some(addresses) =
            output_of(Command::new("ip").args(["-4", "-o", "addr", "show", "dev", &interface]))
    {
        // "5: docker0    inet 172.17.0.1/16 brd ..."
        let mut words = addresses.split_whitespace();
        if words.any(|w| w == "inet")
            && let Some(address) = words.next().and_then(first_ipv4)
        {
            return Ok(address);
        }
    }
    let subnet = inspect("{{range .IPAM.Config}}{{.Subnet}} {{end}}");
    if let Some(IpAddr::V4(network)) = first_ipv4(&subnet) {
        let [a, b, c, d] = network.octets();
        return Ok(IpAddr::from([a, b, c, d.wrapping_add(1)]));
    }
    bail!("cannot tell the address of Docker's bridge (docker network inspect bridge)")
}

/// Rewrites every `http://127.0.0.1:<port>` in `values` to the gateway, starting one
/// forwarder per port.
async fn reach_from_containers(
    values: &mut BTreeMap<String, String>,
    gateway: IpAddr,
    forwarders: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<()> {
    let mut ports: BTreeMap<u16, u16> = BTreeMap::new();
    for value in values.values_mut() {
        let Some(rest) = value.strip_prefix("http://127.0.0.1:") else {
            continue;
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let target: u16 = digits.parse().context("a port")?;
        let bound = match ports.get(&target) {
            Some(bound) => *bound,
            None => {
                let (bound, task) = forward(gateway, target).await?;
                forwarders.push(task);
                ports.insert(target, bound);
                bound
            }
        };
        *value = format!("http://{gateway}:{bound}{}", &rest[digits.len()..]);
    }
    Ok(())
}

/// Docker containers started from the SAM image (base + RIE).
fn sam_containers() -> Vec<String> {
    let mut ids = Vec::new();
    for rapid in RAPID_IMAGES {
        if let Some(out) = output_of(docker().args([
            "ps",
            "-a",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("ancestor={rapid}"),
        ])) {
            ids.extend(out.lines().map(str::to_owned));
        }
    }
    ids
}

/// sam removes its containers when it stops, though not always all of them (now and
/// then one of start-api's warm containers stays): waits a little, then removes
/// what is left of the containers this run started.
async fn remove_leftover_containers(before: &[String]) {
    let new = || -> Vec<String> {
        sam_containers()
            .into_iter()
            .filter(|id| !before.contains(id))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !new().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for id in new() {
        let function = output_of(docker().args([
            "inspect",
            "--format",
            "{{index .Config.Labels \"sam.cli.function.name\"}} ({{.State.Status}})",
            &id,
        ]))
        .unwrap_or_default();
        eprintln!("xtask: removing a container sam left behind: {function} {id}");
        let _ = docker()
            .args(["rm", "-f", &id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// One `sam local invoke`: the function's answer (stdout's last line) as JSON.
/// SAM's and the function's logs go to `log`.
async fn invoke(
    root: &Path,
    tools: &Tools,
    template: &Path,
    env_file: &Path,
    function: &str,
    fixture: &str,
    log: &Path,
) -> Result<Value> {
    let mut command = tokio::process::Command::from(sam(root, tools));
    command
        .arg("local")
        .arg("invoke")
        .arg(function)
        .args(["-e", &format!("events/{fixture}")])
        .arg("--template")
        .arg(template)
        .args(["--parameter-overrides", &parameter_overrides()])
        .args(["--invoke-image", IMAGE, "--skip-pull-image"])
        .arg("--env-vars")
        .arg(env_file)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(180), command.output())
        .await
        .map_err(|_| anyhow!("sam local invoke {function} did not finish within 180 s"))?
        .context("starting sam local invoke")?;
    std::fs::write(
        log,
        [
            output.stderr.as_slice(),
            b"\n--- stdout ---\n",
            &output.stdout,
        ]
        .concat(),
    )?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "sam local invoke failed with {} (log: {})",
            output.status,
            log.display()
        );
    }
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .ok_or_else(|| anyhow!("no answer on stdout (log: {})", log.display()))?;
    serde_json::from_str(last)
        .with_context(|| format!("the answer is not JSON: {last} (log: {})", log.display()))
}

/// (status, text body) of an API Gateway v2 answer.
fn text_answer(answer: &Value) -> Result<(u64, &str)> {
    let status = answer["statusCode"]
        .as_u64()
        .ok_or_else(|| anyhow!("no statusCode in {answer}"))?;
    if answer["isBase64Encoded"] == json!(true) {
        bail!("a base64 body: {answer}");
    }
    let body = answer["body"]
        .as_str()
        .ok_or_else(|| anyhow!("no body in {answer}"))?;
    Ok((status, body))
}

/// (status, JSON body) of an API Gateway v2 answer; any other body is an error.
fn http_answer(answer: &Value) -> Result<(u64, Value)> {
    let (status, body) = text_answer(answer)?;
    let body = serde_json::from_str(body).with_context(|| format!("body is not JSON: {body}"))?;
    Ok((status, body))
}

/// A header of an API Gateway v2 answer (names are lower case in `headers`).
fn answer_header<'a>(answer: &'a Value, name: &str) -> Option<&'a str> {
    answer["headers"]
        .as_object()?
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))?
        .1
        .as_str()
}

fn error_fields(body: &Value) -> Result<Vec<String>> {
    let errors = body["errors"]
        .as_array()
        .filter(|e| !e.is_empty())
        .ok_or_else(|| anyhow!("no errors list in {body}"))?;
    Ok(errors
        .iter()
        .map(|e| e["field"].as_str().unwrap_or("-").to_owned())
        .collect())
}

/// What one fixture must answer.
enum Expect {
    /// One of these statuses, with a message (it has an `id`) in this status.
    Message(&'static [u64], &'static str),
    /// 200 with the message the first answer to that fixture carried.
    SameAs(&'static str),
    /// 4xx with errors naming these fields.
    Errors(u64, &'static [&'static str]),
    /// 200, `text/xml`, exactly the empty TwiML answer Twilio's webhooks get.
    Twiml,
    /// 401 with an error for `authorization` and `WWW-Authenticate: Basic` for
    /// this realm.
    Unauthorized(&'static str),
}

fn check_http(answer: &Value, expect: &Expect, ids: &BTreeMap<&str, String>) -> Result<String> {
    // The one answer that is not JSON.
    if let Expect::Twiml = expect {
        let (status, body) = text_answer(answer)?;
        if status != 200 {
            bail!("status {status}, expected 200: {body}");
        }
        let content_type = answer_header(answer, "content-type");
        if content_type != Some("text/xml") {
            bail!("content-type {content_type:?}, expected text/xml");
        }
        if body != shared::adapters::twilio_webhook::EMPTY_TWIML {
            bail!(
                "body {body:?}, expected {:?}",
                shared::adapters::twilio_webhook::EMPTY_TWIML
            );
        }
        return Ok("200, text/xml, empty TwiML".into());
    }
    let (status, body) = http_answer(answer)?;
    match expect {
        Expect::Message(statuses, message_status) => {
            if !statuses.contains(&status) {
                bail!("status {status}, expected {statuses:?}: {body}");
            }
            let id = body["id"]
                .as_str()
                .ok_or_else(|| anyhow!("no id in {body}"))?;
            if body["status"] != *message_status {
                bail!(
                    "message status {}, expected {message_status}",
                    body["status"]
                );
            }
            Ok(format!("{status}, {message_status}, id {id}"))
        }
        Expect::SameAs(fixture) => {
            if status != 200 {
                bail!("status {status}, expected 200: {body}");
            }
            let first = ids.get(fixture).map(String::as_str);
            if body["id"].as_str() != first {
                bail!("id {}, expected the first answer's {first:?}", body["id"]);
            }
            Ok(format!("200, the same message {}", body["id"]))
        }
        Expect::Errors(expected, fields) => {
            if status != *expected {
                bail!("status {status}, expected {expected}: {body}");
            }
            let got = error_fields(&body)?;
            if got != *fields {
                bail!("errors for {got:?}, expected {fields:?}");
            }
            Ok(format!("{status}, errors for {}", got.join(", ")))
        }
        Expect::Unauthorized(realm) => {
            if status != 401 {
                bail!("status {status}, expected 401: {body}");
            }
            let got = error_fields(&body)?;
            if got != ["authorization"] {
                bail!("errors for {got:?}, expected [\"authorization\"]");
            }
            let challenge = answer_header(answer, "www-authenticate");
            let expected = format!("Basic realm=\"{realm}\"");
            if challenge != Some(expected.as_str()) {
                bail!("www-authenticate {challenge:?}, expected {expected:?}");
            }
            Ok(format!("401, errors for authorization, {expected}"))
        }
        Expect::Twiml => unreachable!("answered above"),
    }
}

/// A unique suffix for test recipients.
fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// Stores a queued message under a fixed id, as tests/tests/handlers.rs does.
async fn seed(client: &aws_sdk_dynamodb::Client, id: &str, payload: Value) -> Result<()> {
    use shared::domain::{Direction, Message, validate_outbound};
    let object = payload
        .as_object()
        .ok_or_else(|| anyhow!("a seed is an object"))?;
    let new = validate_outbound(object).map_err(|e| anyhow!("invalid seed: {e:?}"))?;
    let mut message = Message::accept(new, Direction::Outbound, time::OffsetDateTime::now_utc());
    message.id = id.to_owned();
    let item = shared::adapters::dynamodb::DynamoDbStore::message_item(&message)
        .map_err(|e| anyhow!("{e}"))?;
    client
        .put_item()
        .table_name(crate::stack::TABLE_NAME)
        .set_item(Some(item))
        .send()
        .await
        .context("seeding a message")?;
    Ok(())
}

/// `cargo xtask sam-test`: image, `sam build`, the stack, the invoke suite and the
/// start-api suite; stops everything it started.
pub async fn test(args: &[String]) -> Result<()> {
    if !args.is_empty() {
        bail!("usage: cargo xtask sam-test");
    }
    let started = Instant::now();
    let root = crate::root();
    let tools = python::ensure_sam(&root)?;
    let mut timings: Vec<(String, Duration)> = Vec::new();
    let (built, took) = ensure_image(&root, false)?;
    timings.push((
        format!(
            "invoke image ({})",
            if built { "built" } else { "up to date" }
        ),
        took,
    ));
    timings.push(("sam build".into(), sam_build(&root, &tools)?));
    // The stack's own binaries (simulator, bridge, delivery) and the end-to-end suite.
    python::run(&mut crate::cargo(&["build", "--workspace", "--bins"]))?;
    python::run(&mut crate::cargo(&["build", "-p", "e2e-tests", "--tests"]))?;

    let logs = sam_dir(&root).join("logs");
    std::fs::create_dir_all(&logs)?;
    let containers_before = sam_containers();
    let stack = crate::start_test_stack(&root, &tools, &logs.join("stack")).await?;
    let mut forwarders = Vec::new();
    let mut failures = Vec::new();
    let result = suites(
        &root,
        &tools,
        &stack,
        &logs,
        &mut forwarders,
        &mut timings,
        &mut failures,
    )
    .await;
    for forwarder in forwarders {
        forwarder.abort();
    }
    stack.stop().await;
    remove_leftover_containers(&containers_before).await;

    println!("\nxtask: sam-test durations:");
    for (what, took) in &timings {
        println!("  {what:<28} {}", elapsed(*took));
    }
    println!("  {:<28} {}", "total", elapsed(started.elapsed()));
    result?;
    if !failures.is_empty() {
        bail!(
            "sam-test: {} failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
    println!("xtask: sam-test passed");
    Ok(())
}

/// Everything that runs on the stack. Failed checks go to `failures`; an error is
/// a suite that could not run.
async fn suites(
    root: &Path,
    tools: &Tools,
    stack: &crate::stack::Stack,
    logs: &Path,
    forwarders: &mut Vec<tokio::task::JoinHandle<()>>,
    timings: &mut Vec<(String, Duration)>,
    failures: &mut Vec<String>,
) -> Result<()> {
    let (template, env_file) = prepare_local(root, stack, forwarders).await?;

    let suite_started = Instant::now();
    invoke_suite(root, tools, stack, &template, &env_file, logs, failures).await?;
    timings.push(("invoke suite".into(), suite_started.elapsed()));

    let suite_started = Instant::now();
    start_api_suite(root, tools, stack, &template, &env_file, logs, failures).await?;
    timings.push(("start-api suite".into(), suite_started.elapsed()));
    Ok(())
}

/// What the functions need to run on `stack` in containers: the provider secret in
/// the emulator, forwarders from Docker's bridge to the stack's ports (pushed onto
/// `forwarders`), `target/sam/env.json` with the stack's variables and
/// `target/sam/template.local.yaml` declaring them. Returns (template, env file).
async fn prepare_local(
    root: &Path,
    stack: &crate::stack::Stack,
    forwarders: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<(PathBuf, PathBuf)> {
    let stack_env: BTreeMap<String, String> = stack.env.iter().cloned().collect();
    let mut variables: BTreeMap<String, String> = stack_env
        .iter()
        .filter(|(k, _)| !NOT_FOR_FUNCTIONS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // The delivery function reads its credentials from the secret the template
    // names, as on AWS.
    if !variables.contains_key(shared::config::PROVIDER_SECRET_ID) {
        let given = |name: &str| {
            stack_env
                .get(name)
                .cloned()
                .ok_or_else(|| anyhow!("the stack did not set {name}"))
        };
        crate::secrets::seed_provider_secret(
            &crate::stack::aws_config(&stack.emulator_url).await,
            crate::stack::PROVIDER_SECRET,
            &given("TWILIO_ACCOUNT_SID")?,
            &given("TWILIO_AUTH_TOKEN")?,
            &given("SENDGRID_API_KEY")?,
        )
        .await?;
        variables.insert(
            shared::config::PROVIDER_SECRET_ID.into(),
            crate::stack::PROVIDER_SECRET.into(),
        );
    }
    // And the webhooks theirs.
    if !variables.contains_key(shared::config::WEBHOOK_SECRET_ID) {
        let given = |name: &str| stack_env.get(name).cloned().unwrap_or_default();
        crate::secrets::seed_webhook_secret(
            &crate::stack::aws_config(&stack.emulator_url).await,
            crate::stack::WEBHOOK_SECRET,
            &given("TWILIO_AUTH_TOKEN"),
            &given("SENDGRID_INBOUND_BASIC_AUTH"),
        )
        .await?;
        variables.insert(
            shared::config::WEBHOOK_SECRET_ID.into(),
            crate::stack::WEBHOOK_SECRET.into(),
        );
    }
    // The template's CURSOR_SECRET_ID is `!Ref CursorSecret`, which sam local
    // cannot resolve to a secret: the stack's secret instead.
    variables
        .entry(shared::config::CURSOR_SECRET_ID.to_owned())
        .or_insert_with(|| crate::stack::CURSOR_SECRET.to_owned());
    variables.entry(ALLOWED_SENDERS.to_owned()).or_default();
    let gateway = bridge_gateway()?;
    reach_from_containers(&mut variables, gateway, forwarders).await?;
    let env_file = sam_dir(root).join("env.json");
    let per_function: serde_json::Map<String, Value> = FUNCTIONS
        .iter()
        .map(|f| ((*f).to_owned(), json!(variables)))
        .collect();
    std::fs::write(&env_file, serde_json::to_string_pretty(&per_function)?)?;
    let names: Vec<&String> = variables.keys().collect();
    let template = write_local_template(&sam_dir(root), &names)?;
    println!(
        "xtask: functions reach the stack through {gateway} (Docker's bridge); variables in {}",
        env_file.display()
    );

    Ok((template, env_file))
}

/// Every fixture in events/ through `sam local invoke`.
async fn invoke_suite(
    root: &Path,
    tools: &Tools,
    stack: &crate::stack::Stack,
    template: &Path,
    env_file: &Path,
    logs: &Path,
    failures: &mut Vec<String>,
) -> Result<()> {
    const SQS_FIXTURE: &str = "sqs-delivery-batch.json";
    println!("\nxtask: ===== sam local invoke: every fixture in events/ =====");
    let cases: [(&str, &str, Expect); 20] = [
        (
            "OutboundFunction",
            "outbound-sms.json",
            Expect::Message(&[202], "queued"),
        ),
        (
            "OutboundFunction",
            "outbound-mms.json",
            Expect::Message(&[202], "queued"),
        ),
        (
            "OutboundFunction",
            "outbound-email.json",
            Expect::Message(&[202], "queued"),
        ),
        (
            "OutboundFunction",
            "outbound-invalid.json",
            Expect::Errors(422, &["from", "attachments", "body"]),
        ),
        (
            "OutboundFunction",
            "outbound-malformed-json.json",
            Expect::Errors(400, &["body"]),
        ),
        (
            "OutboundFunction",
            "outbound-wrong-content-type.json",
            Expect::Errors(415, &["content-type"]),
        ),
        (
            "OutboundFunction",
            "outbound-no-api-key.json",
            Expect::Errors(401, &["Authorization"]),
        ),
        (
            "InboundFunction",
            "inbound-sms.json",
            Expect::Message(&[201], "received"),
        ),
        (
            "InboundFunction",
            "inbound-sms.json",
            Expect::SameAs("inbound-sms.json"),
        ),
        (
            "InboundFunction",
            "inbound-missing-provider-id.json",
            Expect::Errors(422, &["messaging_provider_id"]),
        ),
        (
            "ReadFunction",
            "get-message-unknown.json",
            Expect::Errors(404, &["id"]),
        ),
        (
            "ReadFunction",
            "list-conversations-bad-limit.json",
            Expect::Errors(400, &["limit"]),
        ),
        (
            "ReadFunction",
            "get-conversation-unknown.json",
            Expect::Errors(404, &["id"]),
        ),
        (
            "SuppressionsFunction",
            "list-suppressions-bad-channel.json",
            Expect::Errors(400, &["channel"]),
        ),
        (
            "SuppressionsFunction",
            "remove-suppression-unknown.json",
            Expect::Errors(404, &["address"]),
        ),
        // Signed with the stack's Twilio auth token for the fixture's URL.
        ("WebhooksFunction", "twilio-inbound-sms.json", Expect::Twiml),
        // Twilio's retry: the same MessageSid, stored once, answered alike.
        ("WebhooksFunction", "twilio-inbound-sms.json", Expect::Twiml),
        (
            "WebhooksFunction",
            "twilio-status-forged.json",
            Expect::Errors(403, &["X-Twilio-Signature"]),
        ),
        (
            "WebhooksFunction",
            "sendgrid-events-unsigned.json",
            Expect::Errors(403, &["x-twilio-email-event-webhook-signature"]),
        ),
        (
            "WebhooksFunction",
            "sendgrid-inbound-unauthorized.json",
            Expect::Unauthorized("sendgrid-inbound-parse"),
        ),
    ];
    // A fixture without a case here fails the suite rather than going untested.
    for entry in std::fs::read_dir(root.join("events"))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".json")
            && name != SQS_FIXTURE
            && !cases.iter().any(|(_, fixture, _)| *fixture == name)
        {
            failures.push(format!(
                "events/{name}: no expected answer for it in xtask/src/sam.rs"
            ));
        }
    }
    let invoke_logs = logs.join("invoke");
    std::fs::create_dir_all(&invoke_logs)?;
    let mut ids: BTreeMap<&str, String> = BTreeMap::new();
    for (i, (function, fixture, expect)) in cases.iter().enumerate() {
        let log = invoke_logs.join(format!("{i:02}-{fixture}.log"));
        let t = Instant::now();
        let outcome = invoke(root, tools, template, env_file, function, fixture, &log)
            .await
            .and_then(|answer| {
                let line = check_http(&answer, expect, &ids)?;
                if let Ok((_, body)) = http_answer(&answer)
                    && let Some(id) = body["id"].as_str()
                {
                    ids.entry(fixture).or_insert_with(|| id.to_owned());
                }
                Ok(line)
            });
        report(function, fixture, t.elapsed(), outcome, failures);
    }

    // The SQS batch: records 1 and 4 name stored messages, 2 is unreadable, 3
    // names an unknown message.
    let dynamodb =
        aws_sdk_dynamodb::Client::new(&crate::stack::aws_config(&stack.dynamodb.url).await);
    let sms_to = format!("+1555{:07}", unique() % 10_000_000);
    let email_to = format!("sam-{}@example.com", unique());
    seed(
        &dynamodb,
        SEEDED_SMS,
        json!({"from": "+18045551234", "to": sms_to, "type": "sms", "body": "fixture sms"}),
    )
    .await?;
    seed(
        &dynamodb,
        SEEDED_EMAIL,
        json!({"from": "user@usehatchapp.com", "to": email_to, "type": "email", "body": "fixture email"}),
    )
    .await?;
    let log = invoke_logs.join(format!("{:02}-{SQS_FIXTURE}.log", cases.len()));
    let t = Instant::now();
    let answer = invoke(
        root,
        tools,
        template,
        env_file,
        "DeliveryFunction",
        SQS_FIXTURE,
        &log,
    )
    .await;
    let outcome = match answer {
        Ok(answer) => {
            check_batch(
                &answer,
                &dynamodb,
                stack.simulator_url.as_deref(),
                &sms_to,
                &email_to,
            )
            .await
        }
        Err(e) => Err(e),
    };
    report(
        "DeliveryFunction",
        SQS_FIXTURE,
        t.elapsed(),
        outcome,
        failures,
    );
    Ok(())
}

fn report(
    function: &str,
    fixture: &str,
    took: Duration,
    outcome: Result<String>,
    failures: &mut Vec<String>,
) {
    match outcome {
        Ok(line) => println!(
            "xtask:   ok    {function:<17} events/{fixture:<34} {line} ({})",
            elapsed(took)
        ),
        Err(e) => {
            println!("xtask:   FAIL  {function:<17} events/{fixture:<34} {e:#}");
            failures.push(format!(
                "sam local invoke {function} -e events/{fixture}: {e:#}"
            ));
        }
    }
}

async fn check_batch(
    answer: &Value,
    dynamodb: &aws_sdk_dynamodb::Client,
    simulator: Option<&str>,
    sms_to: &str,
    email_to: &str,
) -> Result<String> {
    use shared::ports::MessageStore;
    let expected = json!({"batchItemFailures": [
        {"itemIdentifier": "6f1c7a52-0002-4a8b-9c1e-000000000002"},
        {"itemIdentifier": "6f1c7a52-0003-4a8b-9c1e-000000000003"},
    ]});
    if *answer != expected {
        bail!("answered {answer}, expected {expected}");
    }
    let store =
        shared::adapters::dynamodb::DynamoDbStore::new(dynamodb.clone(), crate::stack::TABLE_NAME);
    for id in [SEEDED_SMS, SEEDED_EMAIL] {
        let message = store
            .get(id)
            .await
            .map_err(|e| anyhow!("{e}"))?
            .ok_or_else(|| anyhow!("{id} is gone"))?;
        // The stack's simulator reports back like the providers (a Twilio status
        // callback, SendGrid events), so a sent message may have moved on to
        // `delivered` by now; either way it went through `sent`.
        use shared::domain::Status;
        let went_sent = message.history.iter().any(|h| h.status == Status::Sent);
        if !matches!(message.status, Status::Sent | Status::Delivered) || !went_sent {
            bail!(
                "{id} is {:?} (history {:?}), expected sent (or delivered since)",
                message.status,
                message.history
            );
        }
    }
    if let Some(simulator) = simulator {
        for to in [sms_to, email_to] {
            let requests: Vec<Value> = reqwest::Client::new()
                .get(format!("{simulator}/_sim/requests"))
                .query(&[("to", to)])
                .send()
                .await?
                .json()
                .await?;
            if requests.len() != 1 {
                bail!(
                    "the simulator got {} requests for {to}, expected 1",
                    requests.len()
                );
            }
        }
    }
    Ok("batchItemFailures: records 2 and 3; records 1 and 4 sent".into())
}

/// `sam local start-api` and the end-to-end suite through it.
async fn start_api_suite(
    root: &Path,
    tools: &Tools,
    stack: &crate::stack::Stack,
    template: &Path,
    env_file: &Path,
    logs: &Path,
    failures: &mut Vec<String>,
) -> Result<()> {
    println!("\nxtask: ===== sam local start-api: the end-to-end suite =====");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let api = format!("http://127.0.0.1:{port}");
    let log = logs.join("start-api.log");
    let log_file = std::fs::File::create(&log)?;
    let mut command = start_api_command(root, tools, template, env_file, port);
    command.stdout(log_file.try_clone()?).stderr(log_file);
    let mut child = command.spawn().context("starting sam local start-api")?;
    let see = format!("see {}", log.display());
    let result = async {
        wait_for_api(&api, &mut child, &see).await?;
        println!(
            "xtask: sam local start-api answers at {api} (log: {})",
            log.display()
        );
        let mut suite = if crate::has_nextest() {
            crate::cargo(&[
                "nextest",
                "run",
                "-p",
                "e2e-tests",
                "--test",
                "end_to_end",
                "--no-fail-fast",
            ])
        } else {
            crate::cargo(&[
                "test",
                "-p",
                "e2e-tests",
                "--test",
                "end_to_end",
                "--no-fail-fast",
            ])
        };
        suite
            .envs(stack.env.iter().map(|(k, v)| (k, v)))
            .env("MESSAGING_API_URL", &api);
        if let Err(e) = python::run(&mut suite) {
            failures.push(format!(
                "end-to-end suite through sam local start-api: {e:#}"
            ));
        }
        Ok(())
    }
    .await;
    stop_start_api(&mut child).await;
    result
}

/// `sam local start-api` on 127.0.0.1:`port` with warm containers, in its own
/// process group (stopped by [`stop_start_api`]); stdout and stderr are inherited
/// unless the caller redirects them.
fn start_api_command(
    root: &Path,
    tools: &Tools,
    template: &Path,
    env_file: &Path,
    port: u16,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::from(sam(root, tools));
    command
        .args(["local", "start-api", "--template"])
        .arg(template)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--parameter-overrides", &parameter_overrides()])
        .args(["--invoke-image", IMAGE, "--skip-pull-image"])
        .arg("--env-vars")
        .arg(env_file)
        .args(["--warm-containers", "EAGER"])
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    command
}

/// Waits until start-api routes a request to a function (the read function's 401).
/// `see` says where its output is, for the errors.
async fn wait_for_api(api: &str, child: &mut tokio::process::Child, see: &str) -> Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let probe = format!("{api}/messages/00000000-0000-7000-8000-000000000000");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        // The read function's own JSON answer: 401 without a key (the probe
        // sends none), 404 for the unknown id.
        if let Ok(response) = client.get(&probe).send().await
            && matches!(response.status().as_u16(), 401 | 404)
            && response
                .json::<Value>()
                .await
                .is_ok_and(|body| body["errors"].is_array())
        {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!("sam local start-api exited with {status}; {see}");
        }
        if Instant::now() > deadline {
            bail!("sam local start-api did not answer within 300 s; {see}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// SIGINT (sam's Ctrl-C, which stops its warm containers), SIGKILL after 60 s.
async fn stop_start_api(child: &mut tokio::process::Child) {
    let pid = child.id();
    let signal = |signal: libc::c_int| {
        if let Some(pid) = pid {
            // SAFETY: kill(2) with a negative pid signals the process group we created.
            unsafe {
                libc::kill(-(pid as libc::pid_t), signal);
            }
        }
    };
    signal(libc::SIGINT);
    if tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .is_err()
    {
        signal(libc::SIGKILL);
        let _ = child.wait().await;
    }
}

/// The port `cargo xtask dev --sam` serves the API on: `sam local start-api`'s default.
pub const DEV_API_PORT: u16 = 3000;

/// What `cargo xtask dev --sam` runs besides the stack: `sam local start-api` on
/// 127.0.0.1:[`DEV_API_PORT`], its output on the console, and the forwarders.
pub struct DevApi {
    pub url: String,
    child: tokio::process::Child,
    forwarders: Vec<tokio::task::JoinHandle<()>>,
    containers_before: Vec<String>,
}

/// Before the stack starts: the invoke image and `sam build`, as sam-test does.
pub fn dev_build(root: &Path, tools: &Tools) -> Result<()> {
    dev_port_free()?;
    ensure_image(root, false)?;
    sam_build(root, tools)?;
    Ok(())
}

fn dev_port_free() -> Result<()> {
    if std::net::TcpListener::bind(("127.0.0.1", DEV_API_PORT)).is_err() {
        bail!("127.0.0.1:{DEV_API_PORT} is taken; sam local start-api needs it");
    }
    Ok(())
}

impl DevApi {
    /// Prepares as sam-test does ([`prepare_local`]) and starts start-api; it is
    /// ready after [`DevApi::ready`]. Stop it with [`DevApi::stop`] either way.
    pub async fn start(root: &Path, tools: &Tools, stack: &crate::stack::Stack) -> Result<Self> {
        dev_port_free()?;
        let mut forwarders = Vec::new();
        let prepared = prepare_local(root, stack, &mut forwarders).await;
        let containers_before = sam_containers();
        let spawned = prepared.and_then(|(template, env_file)| {
            println!("xtask: sam local start-api on 127.0.0.1:{DEV_API_PORT} (its output follows)");
            start_api_command(root, tools, &template, &env_file, DEV_API_PORT)
                .spawn()
                .context("starting sam local start-api")
        });
        match spawned {
            Ok(child) => Ok(Self {
                url: format!("http://127.0.0.1:{DEV_API_PORT}"),
                child,
                forwarders,
                containers_before,
            }),
            Err(e) => {
                for forwarder in forwarders {
                    forwarder.abort();
                }
                Err(e)
            }
        }
    }

    /// Waits until start-api routes requests to the functions.
    pub async fn ready(&mut self) -> Result<()> {
        wait_for_api(&self.url, &mut self.child, "see its output above").await
    }

    /// Stops start-api (SIGINT), removes the containers it left, stops the forwarders.
    pub async fn stop(mut self) {
        stop_start_api(&mut self.child).await;
        remove_leftover_containers(&self.containers_before).await;
        for forwarder in self.forwarders {
            forwarder.abort();
        }
    }
}
