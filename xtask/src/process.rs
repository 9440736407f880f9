//! Child processes of the local stack: each in its own process group (so that
//! `cargo lambda watch` and the functions it spawns stop together), with output
//! forwarded line by line to the console (prefixed) or to a log file.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

#[derive(Clone, Debug)]
pub enum LogSink {
    Console,
    Dir(PathBuf),
}

pub struct Service {
    pub name: String,
    child: Child,
}

impl Service {
    /// Starts `command`; if `ready` is given, waits for an output line containing it
    /// and returns that line.
    pub async fn start(
        name: &str,
        mut command: Command,
        sink: &LogSink,
        ready: Option<&str>,
        timeout: Duration,
    ) -> Result<(Self, Option<String>)> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let file = match sink {
            LogSink::Console => None,
            LogSink::Dir(dir) => {
                std::fs::create_dir_all(dir)?;
                let path = dir.join(format!("{name}.log"));
                Some(std::sync::Arc::new(tokio::sync::Mutex::new(
                    tokio::fs::File::create(&path).await?,
                )))
            }
        };
        let outputs: [Option<Box<dyn AsyncRead + Unpin + Send>>; 2] = [
            child.stdout.take().map(|s| Box::new(s) as _),
            child.stderr.take().map(|s| Box::new(s) as _),
        ];
        for stream in outputs.into_iter().flatten() {
            let (tx, file, prefix) = (tx.clone(), file.clone(), format!("[{name}] "));
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match &file {
                        Some(file) => {
                            let _ = file
                                .lock()
                                .await
                                .write_all(format!("{line}\n").as_bytes())
                                .await;
                        }
                        None => println!("{prefix}{line}"),
                    }
                    let _ = tx.send(line);
                }
            });
        }
        drop(tx);
        let service = Self {
            name: name.to_owned(),
            child,
        };
        let Some(pattern) = ready else {
            return Ok((service, None));
        };
        let wait = async {
            while let Some(line) = rx.recv().await {
                if line.contains(pattern) {
                    return Ok(line);
                }
            }
            Err(anyhow!("{name} exited before it was ready"))
        };
        let line = tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| anyhow!("{name} did not print {pattern:?} within {timeout:?}"))??;
        // Keep draining so the child never blocks on a full pipe.
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        Ok((service, Some(line)))
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn signal(&self, signal: libc::c_int) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) with a negative pid signals the process group we created.
            unsafe {
                libc::kill(-(pid as libc::pid_t), signal);
            }
        }
    }

    /// SIGTERM to the whole group, SIGKILL after a grace period.
    pub async fn stop(mut self) {
        self.signal(libc::SIGTERM);
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            self.signal(libc::SIGKILL);
            let _ = self.child.wait().await;
        }
        // Processes left in the group (functions spawned by cargo lambda watch).
        self.signal(libc::SIGKILL);
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal(libc::SIGKILL);
        }
    }
}
