//! Test and demo support. Everything here talks to real components: the broker, Postgres and
//! HTTP receivers on loopback. Nothing is faked.
//!
//! - [`receiver`]: an HTTP receiving system that records what arrives and fails on command.
//! - [`stack`]: the four services in one process (or delivery as a child process), isolated by a
//!   random topic prefix, consumer groups and a database of their own.
//! - [`processes`]: the four services as child processes (each with its own global state).
//! - [`otlp`]: an OTLP trace receiver (gRPC and HTTP/protobuf) that keeps the spans it gets.
//! - [`client`]: the admin and Data Model API calls a user makes.
//! - [`keys`]: key pairs made on the spot, for `private_key_jwt` client assertions.
//! - [`fault_proxy`]: a TCP proxy that delays, partitions or cuts the network between a service
//!   and what it talks to (the broker, Postgres, a receiver), switchable at run time.
//! - [`broker`]: a Tansu broker process of a test's own, for tests that stop the broker.
//! - [`redis`]: a `redis-server` process of a test's own, for tests that kill or freeze Redis
//!   (or speak TLS).
//! - [`postgres`]: a Postgres server of a test's own, with TLS on.
//! - [`pki`]: a CA made on the spot and the certificates it signs.
//! - [`stunnel`]: a TLS listener in front of a plaintext server (the broker).
//! - [`smtp`]: an SMTP server (Python's aiosmtpd) of a test's own, that keeps every message.
//! - [`topic`]: reads a whole topic, as a team consuming `carrier.notifications` would.
//! - [`order`]: order, completeness and duplicates judged on a receiver's raw arrival sequence.
#![forbid(unsafe_code)]

pub mod broker;
pub mod client;
pub mod fault_proxy;
pub mod keys;
pub mod order;
pub mod otlp;
pub mod pki;
pub mod postgres;
pub mod processes;
pub mod prometheus;
pub mod receiver;
pub mod redis;
pub mod smtp;
pub mod stack;
pub mod stunnel;
pub mod topic;

/// Installs a test log subscriber once (`RUST_LOG` filters; default warnings only).
pub fn init_test_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// Bootstrap brokers of the tests (`CARRIER_TEST_BROKERS`, default `127.0.0.1:9092`).
pub fn test_brokers() -> String {
    std::env::var("CARRIER_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// Postgres server URL of the tests, without a database (`CARRIER_TEST_POSTGRES`).
pub fn test_postgres() -> String {
    std::env::var("CARRIER_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Redis of the tests (`CARRIER_TEST_REDIS`, default `redis://127.0.0.1:6379`); tests isolate
/// themselves by key prefix.
pub fn test_redis() -> String {
    std::env::var("CARRIER_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A server binary a test starts: the path in `env_var`, else `installed` if it exists, else
/// `name` on `PATH`.
pub fn server_binary(env_var: &str, installed: &str, name: &str) -> std::path::PathBuf {
    if let Ok(path) = std::env::var(env_var) {
        return path.into();
    }
    let installed = std::path::PathBuf::from(installed);
    if installed.exists() {
        return installed;
    }
    name.into()
}

/// A new scratch directory (named `prefix` + random) and a free loopback port, for a server
/// process a test owns.
pub fn scratch_dir_and_port(prefix: &str) -> (std::path::PathBuf, u16) {
    let dir = std::env::temp_dir().join(unique(prefix));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    let port = listener.local_addr().expect("addr").port();
    (dir, port)
}

/// The `/metrics` page of a service's operator port (`admin_url`, e.g. a stack's
/// `ingress_admin_url`).
pub async fn metrics_page(admin_url: &str) -> String {
    reqwest::get(format!("{admin_url}/metrics"))
        .await
        .expect("the operator port answers")
        .text()
        .await
        .expect("a metrics page")
}

/// A short random name part, for isolation.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Polls `check` every 50 ms until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: std::time::Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
