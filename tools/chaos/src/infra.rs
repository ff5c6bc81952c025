//! The infrastructure of one scenario, all of it its own, so restarting any of it disturbs
//! nothing else on the machine: a Postgres instance (initdb into a scratch directory, free
//! port), a `redis-server` (free port, nothing persisted) and a Tansu broker (SQLite storage in
//! the scratch directory, free port).
//!
//! Binaries: `CARRIER_TANSU_BIN` (else `/var/cache/carrier/tansu/bin/tansu`, else `tansu`),
//! `CARRIER_REDIS_SERVER_BIN` (else `/usr/bin/redis-server`), `CARRIER_PG_BIN_DIR` (else the
//! newest `/usr/lib/postgresql/*/bin`). `scripts/chaos.sh` installs what is missing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use carrier_store::sqlx::{self, Connection};

use crate::process::{free_port, wait_for_port, Process, Signal, Spec};

/// A Postgres server of the scenario's own.
pub struct Postgres {
    pub port: u16,
    pub process: Process,
}

impl Postgres {
    /// initdb into `dir/postgres` and start it on a free port.
    pub async fn start(dir: &Path) -> anyhow::Result<Postgres> {
        let bin = postgres_bin_dir()?;
        let data = dir.join("postgres");
        std::fs::create_dir_all(&data)?;
        // Postgres refuses to run as root: run it as the `postgres` user when we are root.
        let user = postgres_user()?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&data, Some(uid), Some(gid)).context("chown the Postgres directory")?;
        }
        let log = dir.join("postgres.log");
        let mut initdb = Process::new(
            Spec::new("initdb", bin.join("initdb"), &log)
                .args([
                    "-D",
                    path_str(&data)?,
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ])
                .user(user),
        );
        initdb.start()?;
        anyhow::ensure!(
            initdb.wait(Duration::from_secs(120)).await?,
            "initdb failed; see {}",
            log.display()
        );
        let port = free_port()?;
        let spec = Spec::new("postgres", bin.join("postgres"), &log)
            .args(["-D", path_str(&data)?, "-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", &format!("unix_socket_directories={}", path_str(&data)?)])
            .args([
                "-c",
                "max_connections=300",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
            ])
            .args(["-c", "full_page_writes=off", "-c", "shared_buffers=64MB"])
            .user(user);
        let mut postgres = Postgres {
            port,
            process: Process::new(spec),
        };
        postgres.launch().await?;
        Ok(postgres)
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        self.process.start()?;
        let url = self.url("postgres");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(connection) = sqlx::PgConnection::connect(&url).await {
                let _ = connection.close().await;
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "Postgres did not accept connections on {} within 60 s",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A restart as an operator does it: fast shutdown (clients disconnected, transactions
    /// rolled back), `down_for` with no server, then start on the same data.
    pub async fn restart(&mut self, down_for: Duration) -> anyhow::Result<()> {
        self.stop().await;
        tokio::time::sleep(down_for).await;
        self.launch().await
    }

    pub async fn stop(&mut self) {
        self.process.stop(Signal::Int, Duration::from_secs(30)).await;
    }
}

/// A `redis-server` of the scenario's own (nothing persisted: a restart comes back empty).
pub struct Redis {
    pub port: u16,
    pub process: Process,
}

impl Redis {
    pub async fn start(dir: &Path) -> anyhow::Result<Redis> {
        let port = free_port()?;
        let spec = Spec::new(
            "redis",
            carrier_testkit::redis::redis_server_binary(),
            dir.join("redis.log"),
        )
        .dir(dir)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"]);
        let mut redis = Redis {
            port,
            process: Process::new(spec),
        };
        redis.launch().await?;
        Ok(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        self.process.start()?;
        wait_for_port(self.port, Duration::from_secs(30), "redis-server").await
    }

    /// SIGKILL, `down_for`, then an empty server on the same port.
    pub async fn restart(&mut self, down_for: Duration) -> anyhow::Result<()> {
        self.process.kill().await;
        tokio::time::sleep(down_for).await;
        self.launch().await
    }
}

/// A Tansu broker of the scenario's own, listening on `port` and advertising `advertised` (the
/// address clients connect to after bootstrap; see `kafka_split`).
pub struct Tansu {
    pub port: u16,
    pub process: Process,
}

impl Tansu {
    pub async fn start(dir: &Path, port: u16, advertised: &str) -> anyhow::Result<Tansu> {
        let dir = dir.join("tansu");
        std::fs::create_dir_all(&dir)?;
        let spec = Spec::new(
            "tansu",
            carrier_testkit::broker::tansu_binary(),
            dir.join("tansu.log"),
        )
        .dir(&dir)
        .args(["broker", "--listener-url", &format!("tcp://127.0.0.1:{port}")])
        .args(["--advertised-listener-url", &format!("tcp://{advertised}")])
        // Relative to the working directory: the broker's data stays in `dir`.
        .args(["--storage-engine", "sqlite://tansu.db"])
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1");
        let mut tansu = Tansu {
            port,
            process: Process::new(spec),
        };
        tansu.launch().await?;
        Ok(tansu)
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        self.process.start()?;
        wait_for_port(self.port, Duration::from_secs(60), "tansu").await
    }

    /// kill -9, `down_for`, then start on the same SQLite storage.
    pub async fn kill_and_restart(&mut self, down_for: Duration) -> anyhow::Result<()> {
        self.process.kill().await;
        tokio::time::sleep(down_for).await;
        self.launch().await
    }
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

/// Where Postgres's binaries are, and whom to run them as: testkit's answers (the TLS tests
/// start their Postgres the same way).
fn postgres_bin_dir() -> anyhow::Result<PathBuf> {
    carrier_testkit::postgres::postgres_bin_dir().map_err(anyhow::Error::msg)
}

fn postgres_user() -> anyhow::Result<Option<(u32, u32)>> {
    carrier_testkit::postgres::postgres_user().map_err(anyhow::Error::msg)
}
