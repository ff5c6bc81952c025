//! Traces: `tracing` spans exported as OpenTelemetry spans over OTLP when a collector is
//! configured (`export.rs`: the standard `OTEL_*` variables; off without an endpoint), through
//! a bounded queue that never slows the services down (`queue.rs`), with W3C trace context in
//! and out of HTTP headers, gRPC metadata and Kafka record headers (`context.rs`), and the
//! trace and span IDs in JSON log lines (`json.rs`).
//!
//! Which spans exist, their attributes (OpenTelemetry's HTTP, RPC and messaging semantic
//! conventions) and the rule for late retries are described in README "Tracing". Spans are
//! `tracing` spans at INFO with a target under `carrier`; only those reach the exporter, and
//! none is printed in the logs.

mod context;
mod export;
mod json;
mod queue;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{filter_fn, FilterExt as _};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

pub use context::{
    add_link, context_of, continuation, continue_or_link, current_headers, extract, extract_from_pairs,
    extract_from_text, headers_of, rename, set_parent, trace_id_of, Continuation, TRACEPARENT, TRACESTATE,
};
pub use export::{ExportSettings, ExportSettingsError, Protocol};
pub use json::WithTraceIds;
pub use opentelemetry::Context;
pub use queue::{dropped_spans, QueueLimits, QueueProcessor};

/// Set once an exporter is installed in this process; spans carry OpenTelemetry contexts only then.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported by this process (an OTLP endpoint was configured).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// How long shutdown waits for the last spans to reach the collector.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Held by `main` for the process's life: on drop, the spans still queued are exported
/// (waiting at most [`FLUSH_TIMEOUT`]).
#[must_use = "dropping the guard stops the export at once"]
pub struct TracingGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TracingGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(error) = provider.shutdown_with_timeout(FLUSH_TIMEOUT) {
                tracing::warn!(%error, "not every span was exported before shutdown");
            }
        }
    }
}

/// Whether a span or event is one of Carrier's trace spans (exported, never logged).
fn is_carrier_span(metadata: &tracing::Metadata<'_>) -> bool {
    metadata.is_span()
        && metadata.target().starts_with("carrier")
        && *metadata.level() <= tracing::Level::INFO
}

/// Installs the global tracing subscriber of a service (`service`: `ingress`, ...).
/// `RUST_LOG` filters the logs (default `info`); `CARRIER_LOG_FORMAT=json` writes one JSON
/// object per line (with `trace_id` and `span_id` inside traced work). With an OTLP endpoint
/// (`OTEL_EXPORTER_OTLP_ENDPOINT`), Carrier's spans are exported. Call on the tokio runtime, and
/// keep the guard until the service has stopped. A variable it cannot use ends the process
/// with exit status 2 and a message naming it.
pub fn init_tracing(service: &'static str) -> TracingGuard {
    let export = match ExportSettings::from_env(service) {
        Ok(export) => export,
        Err(error) => {
            eprintln!("carrier-{service}: {error}");
            std::process::exit(2);
        }
    };
    let provider = match export.as_ref().map(ExportSettings::provider).transpose() {
        Ok(provider) => provider,
        Err(error) => {
            eprintln!("carrier-{service}: {error}");
            std::process::exit(2);
        }
    };
    let log_filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    let json = std::env::var("CARRIER_LOG_FORMAT")
        .map(|f| f == "json")
        .unwrap_or(false);
    // The logs show events only: Carrier's spans are for the exporter (a log line inside one
    // names it by `trace_id` in JSON).
    let events_only = filter_fn(|metadata| !is_carrier_span(metadata));
    let fmt_layer = if json {
        tracing_subscriber::fmt::layer()
            .with_target(true)
            .json()
            .map_event_format(WithTraceIds)
            .with_filter(log_filter().and(events_only))
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_target(true)
            .with_filter(log_filter().and(events_only))
            .boxed()
    };
    let otel_layer = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("carrier"))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_target(false)
            .with_filter(filter_fn(is_carrier_span))
    });
    let result = tracing_subscriber::registry()
        .with(fmt_layer)
        .with(otel_layer)
        .try_init();
    if result.is_ok() {
        if let (Some(export), Some(_)) = (&export, &provider) {
            ENABLED.store(true, Ordering::Relaxed);
            tracing::info!(
                endpoint = %export.endpoint,
                protocol = ?export.protocol,
                service_name = %export.service_name,
                "exporting traces over otlp"
            );
        }
        tracing::info!(
            service,
            version = crate::VERSION,
            commit = crate::COMMIT,
            "starting"
        );
    }
    TracingGuard {
        provider: if result.is_ok() { provider } else { None },
    }
}

/// The CLIENT span of a call to an internal gRPC server (OpenTelemetry's RPC conventions); the
/// interceptor of `carrier-internal-auth` sends its context along, so the server's span is its
/// child. Record the outcome with [`record_grpc_status`].
pub fn grpc_client_span(service: &'static str, method: &'static str) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "grpc.client",
        otel.name = %format_args!("{service}/{method}"),
        otel.kind = "client",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// Records a gRPC call's status code on `span` (a non-OK one also marks the span as an error).
pub fn record_grpc_status(span: &tracing::Span, code: i32) {
    span.record("rpc.grpc.status_code", code);
    if code != 0 {
        span.record("otel.status_code", "error");
    }
}
