//! What every Carrier service exposes to its operator: structured logs, `/metrics`
//! (Prometheus text), `/healthz` (the process is alive), `/readyz` (its dependencies answered),
//! and one shutdown signal (SIGTERM or Ctrl-C) that every task watches; [`trace`]: the
//! OpenTelemetry traces (off unless an OTLP endpoint is configured) and W3C trace context.
#![forbid(unsafe_code)]

pub mod trace;

pub use trace::{init_tracing, TracingGuard};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

pub use prometheus;

/// The version of every Carrier binary (the workspace's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit the binary was built from: `CARRIER_BUILD_COMMIT` at build time (the Dockerfile
/// passes it as a build argument), else `unknown`. Read at build time, not from `.git`, so a
/// commit does not rebuild every crate.
pub const COMMIT: &str = match option_env!("CARRIER_BUILD_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};

/// What `--version` prints: `carrier-ingress 0.1.0 (commit 1a2b3c4)`.
pub fn version_line(binary: &str) -> String {
    format!("{binary} {VERSION} (commit {COMMIT})")
}

/// For a tool that takes arguments of its own: `--version` (or `-V`) as the first argument
/// prints [`version_line`] and exits 0; anything else is left to the tool. Call first in `main`.
pub fn print_version_if_asked(binary: &str) {
    if matches!(std::env::args().nth(1).as_deref(), Some("--version" | "-V")) {
        println!("{}", version_line(binary));
        std::process::exit(0);
    }
}

/// The command line of a service binary, which is configured by `CARRIER_*` variables and a
/// `CARRIER_CONFIG_FILE` only: `--version` (or `-V`) prints [`version_line`] and exits 0,
/// `--help` (or `-h`) says where the configuration comes from, and anything else is refused with
/// exit status 2. Call first thing in `main`.
pub fn handle_command_line(binary: &str) {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    match arguments
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => {}
        ["--version" | "-V"] => {
            println!("{}", version_line(binary));
            std::process::exit(0);
        }
        ["--help" | "-h"] => {
            println!(
                "{}\n\nUsage: {binary} [--version]\n\nConfigured by CARRIER_* environment variables \
                 and the TOML file named by CARRIER_CONFIG_FILE (README \"Configuration\"); a \
                 variable CARRIER_<NAME>_FILE reads CARRIER_<NAME> from a file.",
                version_line(binary)
            );
            std::process::exit(0);
        }
        _ => {
            eprintln!(
                "{binary}: unexpected arguments {arguments:?}; it takes none but --version and \
                 --help (configure it with CARRIER_* variables)"
            );
            std::process::exit(2);
        }
    }
}

/// `carrier_build_info{service, version, commit} 1`: which build each process runs (a
/// rolling upgrade shows two versions side by side until it is done).
pub fn register_build_info(service: &str) {
    gauge_vec(
        "carrier_build_info",
        "The build a Carrier process runs: 1 for its service, version and commit.",
        &["service", "version", "commit"],
    )
    .with_label_values(&[service, VERSION, COMMIT])
    .set(1);
    register_process_metrics();
}

/// The standard `process_*` metrics (CPU seconds, resident memory, open file descriptors,
/// start time), read from `/proc` at each scrape. Once per process.
fn register_process_metrics() {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        let collector = prometheus::process_collector::ProcessCollector::for_self();
        if let Err(error) = prometheus::register(Box::new(collector)) {
            tracing::warn!(%error, "the process metrics could not be registered");
        }
    });
}

/// A cancellation token cancelled on SIGTERM or Ctrl-C.
/// Binds a service's socket; the error names the address (a taken port is the usual cause).
pub async fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|error| std::io::Error::new(error.kind(), format!("binding {addr}: {error}")))
}

pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler can be installed");
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown signal received, draining");
        trigger.cancel();
    });
    token
}

/// Readiness of a service: set once its dependencies (broker, database, peers) answered.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set_ready(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// `/healthz`, `/readyz` and `/metrics` (the process-wide Prometheus registry).
pub fn probes_router(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let readiness = readiness.clone();
                async move {
                    if readiness.is_ready() {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }
            }),
        )
        .route("/metrics", get(render_metrics))
}

/// Serves [`probes_router`] on `listener` until `shutdown`, and publishes `service`'s
/// `carrier_build_info`. When `shutdown` fires, readiness turns false and the listener stops
/// taking connections, while the service drains: a load balancer polling `/readyz` sends no new
/// work from then on.
pub async fn serve_probes(
    service: &'static str,
    listener: tokio::net::TcpListener,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    register_build_info(service);
    let router = probes_router(readiness.clone());
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.cancelled().await;
            readiness.set_ready(false);
        })
        .await
}

async fn render_metrics() -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let encoder = prometheus::TextEncoder::new();
    match encoder.encode_to_string(&prometheus::gather()) {
        Ok(text) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4")],
            text,
        ),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "text/plain")],
            format!("metrics encoding failed: {error}"),
        ),
    }
}

/// Registers (once per process) and returns a counter vector in the global registry.
/// Tests run several services in one process, so a second call returns the first series.
pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> prometheus::IntCounterVec {
    register_once(name, || {
        prometheus::IntCounterVec::new(prometheus::Opts::new(name, help), labels)
    })
}

/// Registers (once per process) and returns a gauge vector in the global registry.
pub fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> prometheus::IntGaugeVec {
    register_once(name, || {
        prometheus::IntGaugeVec::new(prometheus::Opts::new(name, help), labels)
    })
}

/// Registers (once per process) and returns a gauge vector of floats (e.g. an age in seconds).
pub fn float_gauge_vec(name: &str, help: &str, labels: &[&str]) -> prometheus::GaugeVec {
    register_once(name, || {
        prometheus::GaugeVec::new(prometheus::Opts::new(name, help), labels)
    })
}

/// Registers (once per process) and returns a histogram vector (seconds) in the global registry.
pub fn histogram_vec(name: &str, help: &str, labels: &[&str]) -> prometheus::HistogramVec {
    let buckets = vec![
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ];
    register_once(name, || {
        prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new(name, help).buckets(buckets),
            labels,
        )
    })
}

type AnyMetric = Box<dyn std::any::Any + Send + Sync>;
static REGISTERED: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, AnyMetric>>> =
    std::sync::LazyLock::new(Default::default);

fn register_once<M>(name: &str, make: impl FnOnce() -> prometheus::Result<M>) -> M
where
    M: prometheus::core::Collector + Clone + Send + Sync + 'static,
{
    let mut registered = REGISTERED.lock().expect("metrics registry lock");
    if let Some(metric) = registered.get(name).and_then(|metric| metric.downcast_ref::<M>()) {
        return metric.clone();
    }
    let metric = make().expect("metric definition is valid");
    prometheus::register(Box::new(metric.clone())).expect("metric names are unique");
    registered.insert(name.to_string(), Box::new(metric.clone()));
    metric
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readiness_drops_the_moment_shutdown_begins_and_build_info_is_published() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let readiness = Readiness::default();
        readiness.set_ready(true);
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve_probes(
            "telemetry-test",
            listener,
            readiness.clone(),
            shutdown.clone(),
        ));
        let ready = reqwest::get(format!("{url}/readyz")).await.unwrap();
        assert_eq!(ready.status().as_u16(), 200);
        let metrics = reqwest::get(format!("{url}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains(&format!(
                "carrier_build_info{{commit=\"{COMMIT}\",service=\"telemetry-test\",version=\"{VERSION}\"}} 1"
            )),
            "{metrics}"
        );

        shutdown.cancel();
        server.await.unwrap().unwrap();
        assert!(!readiness.is_ready(), "not ready once shutdown began");
        assert_eq!(
            version_line("carrier-x"),
            format!("carrier-x {VERSION} (commit {COMMIT})")
        );
    }
}
