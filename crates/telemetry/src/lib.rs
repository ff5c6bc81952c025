//! What every Carrier service exposes to its operator: structured logs, `/metrics`
//! (Prometheus text), `/healthz` (the process is alive), `/readyz` (its dependencies answered),
//! and one shutdown signal (SIGTERM or Ctrl-C) that every task watches.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

pub use prometheus;

/// Installs the global tracing subscriber. `RUST_LOG` filters (default `info`);
/// `CARRIER_LOG_FORMAT=json` writes one JSON object per line.
pub fn init_tracing(service: &'static str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = std::env::var("CARRIER_LOG_FORMAT")
        .map(|f| f == "json")
        .unwrap_or(false);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let result = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if result.is_ok() {
        tracing::info!(service, version = env!("CARGO_PKG_VERSION"), "starting");
    }
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
