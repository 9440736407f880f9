//! The Python tools of the local stack (emulator, cargo-lambda), pinned in
//! xtask/requirements.txt and installed once into `.local/venv`; AWS SAM CLI and
//! cfn-lint, pinned in xtask/requirements-sam.txt, in `.local/sam-venv` (only the
//! SAM steps need them: `cargo xtask dev` and `bench` start without); LocalStack,
//! pinned in xtask/requirements-localstack.txt, in `.local/localstack-venv`; and
//! schemathesis (`cargo xtask openapi`), in `.local/schemathesis-venv`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The `bin` directories of one or more venvs, searched in order.
pub struct Tools {
    bins: Vec<PathBuf>,
}

impl Tools {
    /// The program `name` from the first venv that has it.
    pub fn exe(&self, name: &str) -> PathBuf {
        self.bins
            .iter()
            .map(|bin| bin.join(name))
            .find(|path| path.exists())
            .unwrap_or_else(|| self.bins[0].join(name))
    }

    /// `PATH` with the venvs first, so `cargo lambda` resolves to the pinned one.
    pub fn path_env(&self) -> String {
        let mut path: Vec<String> = self
            .bins
            .iter()
            .map(|bin| bin.display().to_string())
            .collect();
        path.extend(std::env::var("PATH").ok());
        path.join(":")
    }
}

/// Installs the stack's pinned tools unless the venv already holds exactly those pins.
pub fn ensure(root: &Path) -> Result<Tools> {
    let bin = ensure_venv(
        root,
        ".local/venv",
        "xtask/requirements.txt",
        "the local stack's Python tools",
    )?;
    Ok(Tools { bins: vec![bin] })
}

/// The stack's tools and AWS SAM CLI with cfn-lint (its own venv: SAM's pins are many
/// and only the SAM steps need them). `sam build` finds cargo-lambda on `path_env()`,
/// and cargo-lambda finds zig as the `ziglang` module of the first `python3` on `PATH`:
/// so the stack's venv comes first.
pub fn ensure_sam(root: &Path) -> Result<Tools> {
    let stack = ensure(root)?;
    let sam = ensure_venv(
        root,
        ".local/sam-venv",
        "xtask/requirements-sam.txt",
        "AWS SAM CLI and cfn-lint",
    )?;
    Ok(Tools {
        bins: [stack.bins, vec![sam]].concat(),
    })
}

/// LocalStack, pinned in xtask/requirements-localstack.txt and installed once into
/// its own venv, `.local/localstack-venv` (its pins clash with SAM's). Returns the
/// venv's Python, which runs it as `python -m localstack.runtime.main`.
pub fn ensure_localstack(root: &Path) -> Result<PathBuf> {
    let bin = ensure_venv(
        root,
        ".local/localstack-venv",
        "xtask/requirements-localstack.txt",
        "LocalStack",
    )?;
    Ok(bin.join("python"))
}

/// schemathesis, pinned in xtask/requirements-schemathesis.txt and installed once
/// into its own venv, `.local/schemathesis-venv` (its pins clash with SAM's).
/// Returns the venv's `bin`.
pub fn ensure_schemathesis(root: &Path) -> Result<PathBuf> {
    ensure_venv(
        root,
        ".local/schemathesis-venv",
        "xtask/requirements-schemathesis.txt",
        "schemathesis",
    )
}

/// Creates the venv `venv` (relative to `root`) and installs `requirements` into
/// it, unless its stamp says it already holds exactly those pins. Returns its `bin`.
fn ensure_venv(root: &Path, venv: &str, requirements: &str, what: &str) -> Result<PathBuf> {
    let (venv_rel, venv) = (venv, root.join(venv));
    let wanted = std::fs::read_to_string(root.join(requirements))
        .with_context(|| format!("reading {requirements}"))?;
    let stamp = venv.join(".xtask-requirements");
    let python = venv.join("bin/python");
    if python.exists() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        return Ok(venv.join("bin"));
    }
    println!("xtask: installing {what} into {venv_rel} (first run only)...");
    if !python.exists() {
        let system_python = find_python()?;
        run(Command::new(&system_python).args(["-m", "venv"]).arg(&venv))?;
    }
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(root.join(requirements)))?;
    std::fs::write(&stamp, wanted)?;
    Ok(venv.join("bin"))
}

/// A Python 3.11 or newer.
fn find_python() -> Result<String> {
    for candidate in ["python3.11", "python3.12", "python3.13", "python3"] {
        let ok = Command::new(candidate)
            .args([
                "-c",
                "import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)",
            ])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(candidate.to_owned());
        }
    }
    bail!("Python 3.11 or newer is required (python3 -m venv); install it and retry")
}

pub fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("starting {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}
