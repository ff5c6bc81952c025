//! A child process the harness owns and can hurt: SIGKILL, SIGSTOP/SIGCONT, SIGTERM, and start
//! again with the same command. Its output is appended to one log file across restarts, with a
//! marker line per start.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

/// How to start a process (kept, so it can be started again the same way).
#[derive(Debug, Clone)]
pub struct Spec {
    /// A short name for logs and the report (`delivery-1`, `tansu`).
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub dir: Option<PathBuf>,
    /// Run as this user and group (Postgres refuses to run as root).
    pub user: Option<(u32, u32)>,
    pub log: PathBuf,
}

impl Spec {
    pub fn new(name: &str, program: impl Into<PathBuf>, log: impl Into<PathBuf>) -> Self {
        Self {
            name: name.to_string(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            dir: None,
            user: None,
            log: log.into(),
        }
    }

    pub fn arg(mut self, value: impl Into<String>) -> Self {
        self.args.push(value.into());
        self
    }

    pub fn args<const N: usize>(mut self, values: [&str; N]) -> Self {
        self.args.extend(values.iter().map(|value| value.to_string()));
        self
    }

    pub fn env(mut self, name: &str, value: impl Into<String>) -> Self {
        self.env.push((name.to_string(), value.into()));
        self
    }

    pub fn dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_path_buf());
        self
    }

    pub fn user(mut self, user: Option<(u32, u32)>) -> Self {
        self.user = user;
        self
    }
}

/// A started (or stopped) process.
pub struct Process {
    pub spec: Spec,
    child: Option<tokio::process::Child>,
    starts: u32,
}

impl Process {
    pub fn new(spec: Spec) -> Self {
        Self {
            spec,
            child: None,
            starts: 0,
        }
    }

    /// Starts it; an error if it is already running or cannot be started.
    pub fn start(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "{} is already running", self.spec.name);
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.spec.log)
            .with_context(|| format!("opening {}", self.spec.log.display()))?;
        self.starts += 1;
        writeln!(
            log,
            "===== chaos: start #{} of {} at {}",
            self.starts,
            self.spec.name,
            chrono::Utc::now().to_rfc3339()
        )?;
        let mut command = tokio::process::Command::new(&self.spec.program);
        command
            .args(&self.spec.args)
            .envs(self.spec.env.iter().map(|(name, value)| (name, value)))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        if let Some(dir) = &self.spec.dir {
            command.current_dir(dir);
        }
        if let Some((uid, gid)) = self.spec.user {
            command.uid(uid).gid(gid);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {} ({})", self.spec.name, self.spec.program.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits up to `timeout` for a process that ends by itself (a command); true when it
    /// exited successfully.
    pub async fn wait(&mut self, timeout: Duration) -> anyhow::Result<bool> {
        let mut child = self.child.take().context("not started")?;
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => Ok(status?.success()),
            Err(_) => {
                let _ = child.start_kill();
                anyhow::bail!("{} did not end within {timeout:?}", self.spec.name)
            }
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|child| child.id())
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL, and waits until it is gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A stopped process dies of SIGKILL too.
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Sends `signal` (e.g. SIGTERM, SIGINT) and waits up to `grace` for the exit, then SIGKILL.
    /// True when it exited by itself.
    pub async fn stop(&mut self, signal: Signal, grace: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        if let Some(pid) = child.id() {
            send(pid, signal).await;
        }
        match tokio::time::timeout(grace, child.wait()).await {
            Ok(_) => true,
            Err(_) => {
                tracing::warn!(process = %self.spec.name, ?signal, "no exit in time; killing");
                let _ = child.start_kill();
                let _ = child.wait().await;
                false
            }
        }
    }

    /// SIGSTOP: frozen, its sockets open.
    pub async fn freeze(&self) {
        if let Some(pid) = self.pid() {
            send(pid, Signal::Stop).await;
        }
    }

    /// SIGCONT.
    pub async fn thaw(&self) {
        if let Some(pid) = self.pid() {
            send(pid, Signal::Cont).await;
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Signal {
    Term,
    Int,
    Stop,
    Cont,
}

impl Signal {
    fn flag(self) -> &'static str {
        match self {
            Signal::Term => "-TERM",
            Signal::Int => "-INT",
            Signal::Stop => "-STOP",
            Signal::Cont => "-CONT",
        }
    }
}

/// `kill -SIG pid` (no unsafe code: the crate forbids it).
async fn send(pid: u32, signal: Signal) {
    let status = tokio::process::Command::new("kill")
        .args([signal.flag(), &pid.to_string()])
        .status()
        .await;
    if !matches!(status, Ok(status) if status.success()) {
        tracing::warn!(pid, ?signal, "kill failed");
    }
}

/// A free loopback port (bound, read and released; the window for a race is tiny).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Waits until something accepts TCP connections on `127.0.0.1:port`.
pub async fn wait_for_port(port: u16, timeout: Duration, what: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{what} did not listen on 127.0.0.1:{port} within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
