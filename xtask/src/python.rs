//! The Python tools of the local stack (emulator, cargo-lambda, SAM CLI), pinned in
//! xtask/requirements.txt and installed once into `.local/venv`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

pub struct Tools {
    pub bin: PathBuf,
}

impl Tools {
    pub fn exe(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// `PATH` with the venv first, so `cargo lambda` resolves to the pinned one.
    pub fn path_env(&self) -> String {
        let rest = std::env::var("PATH").unwrap_or_default();
        format!("{}:{rest}", self.bin.display())
    }
}

/// Installs the pinned tools unless the venv already holds exactly those pins.
pub fn ensure(root: &Path) -> Result<Tools> {
    let venv = root.join(".local/venv");
    let requirements = root.join("xtask/requirements.txt");
    let wanted =
        std::fs::read_to_string(&requirements).context("reading xtask/requirements.txt")?;
    let stamp = venv.join(".xtask-requirements");
    let python = venv.join("bin/python");
    let tools = Tools {
        bin: venv.join("bin"),
    };
    if python.exists() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        return Ok(tools);
    }
    println!(
        "xtask: installing the local stack's Python tools into .local/venv (first run only)..."
    );
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
        .arg(&requirements))?;
    std::fs::write(&stamp, wanted)?;
    Ok(tools)
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
