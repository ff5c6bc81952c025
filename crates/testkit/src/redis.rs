//! A `redis-server` process owned by one test (no persistence), so the test can kill it, restart
//! it empty on the same port, or freeze it. Killed when dropped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The server binary: `CARRIER_REDIS_SERVER_BIN`, else `/usr/bin/redis-server`, else `PATH`.
pub fn redis_server_binary() -> PathBuf {
    crate::server_binary(
        "CARRIER_REDIS_SERVER_BIN",
        "/usr/bin/redis-server",
        "redis-server",
    )
}

pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    /// Serve TLS only (`--tls-port`, `--port 0`) with this certificate, key and CA.
    tls: Option<(PathBuf, PathBuf, PathBuf)>,
    child: Option<tokio::process::Child>,
}

impl RedisServer {
    /// Starts a server on a free loopback port.
    pub async fn start() -> RedisServer {
        let mut server = Self::reserve();
        server.launch().await;
        server
    }

    /// Picks a free port without starting the server yet (to start a client before its Redis).
    pub fn reserve() -> RedisServer {
        let (dir, port) = crate::scratch_dir_and_port("carrier-redis-");
        RedisServer {
            port,
            dir,
            tls: None,
            child: None,
        }
    }

    /// Starts a server on a free loopback port that speaks only TLS, with the certificate
    /// `cert` and key `key` (`ca` is the CA it would check client certificates with; it does
    /// not ask for them: `--tls-auth-clients no`).
    pub async fn start_tls(cert: &Path, key: &Path, ca: &Path) -> RedisServer {
        let mut server = Self::reserve();
        server.tls = Some((cert.to_path_buf(), key.to_path_buf(), ca.to_path_buf()));
        server.launch().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The `rediss://` URL of a TLS server, dialling `host` (e.g. `localhost`, the name its
    /// certificate should carry).
    pub fn tls_url(&self, host: &str) -> String {
        format!("rediss://{host}:{}", self.port)
    }

    /// Starts the server (empty: nothing is persisted) and waits until it answers `PING`.
    pub async fn launch(&mut self) {
        assert!(self.child.is_none(), "the test Redis is already running");
        let mut command = tokio::process::Command::new(redis_server_binary());
        match &self.tls {
            None => {
                command.args(["--port", &self.port.to_string()]);
            }
            Some((cert, key, ca)) => {
                command
                    .args(["--port", "0", "--tls-port", &self.port.to_string()])
                    .arg("--tls-cert-file")
                    .arg(cert)
                    .arg("--tls-key-file")
                    .arg(key)
                    .arg("--tls-ca-cert-file")
                    .arg(ca)
                    .args(["--tls-auth-clients", "no"]);
            }
        }
        let child = command
            .current_dir(&self.dir)
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--logfile", "redis.log"])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server starts (apt-get install redis-server, or set CARRIER_REDIS_SERVER_BIN)");
        self.child = Some(child);
        let port = self.port;
        if self.tls.is_some() {
            // PING below speaks plaintext: wait for the TLS port to listen instead.
            crate::eventually(
                Duration::from_secs(30),
                "the test Redis to listen",
                || async move {
                    tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .ok()
                        .map(|_| ())
                },
            )
            .await;
            return;
        }
        crate::eventually(
            Duration::from_secs(30),
            "the test Redis to answer PING",
            || async move { ping(port).await.then_some(()) },
        )
        .await;
    }

    /// SIGKILL: the server dies at once and everything it held is gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Kills the server and starts an empty one on the same port.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.launch().await;
    }

    /// SIGSTOP: the server keeps its connections open but answers nothing (a hung Redis).
    /// Returns once the process is stopped.
    pub async fn pause(&self) {
        let pid = self.signal("-STOP").await;
        crate::eventually(Duration::from_secs(10), "the test Redis to stop", || async move {
            process_state(pid).filter(|state| *state == 'T').map(|_| ())
        })
        .await;
    }

    /// SIGCONT: a paused server answers again (including what queued while it was paused).
    pub async fn resume(&self) {
        self.signal("-CONT").await;
    }

    async fn signal(&self, signal: &str) -> u32 {
        let pid = self
            .child
            .as_ref()
            .and_then(|child| child.id())
            .expect("the test Redis is running");
        let status = tokio::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .await
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}");
        pid
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        if std::thread::panicking() {
            eprintln!("test Redis log kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// True when a Redis server on the loopback `port` answers `PING`.
async fn ping(port: u16) -> bool {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut answer = [0u8; 7];
        stream.read_exact(&mut answer).await.ok()?;
        Some(&answer == b"+PONG\r\n")
    };
    tokio::time::timeout(Duration::from_secs(1), exchange)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// The state letter of a process (`R`, `S`, `T` for stopped, ...) from `/proc/{pid}/stat`.
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (command) state ...`: the command may contain spaces, so read after the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}
