//! Ingress's metrics: one static set, registered on first use.

use std::sync::OnceLock;

use carrier_telemetry::prometheus::{HistogramVec, IntCounter, IntCounterVec, IntGauge};

pub(crate) const NO_LABELS: &[&str] = &[];

pub(crate) struct Metrics {
    /// Inbound messages (Data Model and FHIR API) by API and HTTP status.
    pub requests: IntCounterVec,
    /// From a message's request to the broker's acknowledgement.
    pub durable_write_seconds: HistogramVec,
    /// Every request that reached routing, by route template, method and status; its duration.
    pub http_requests: IntCounterVec,
    pub http_request_seconds: HistogramVec,
    /// Requests with an `Idempotency-Key`, by outcome.
    pub idempotency: IntCounterVec,
    /// Manual retries that could not be queued, by reason.
    pub manual_retry_failures: IntCounterVec,
    /// Overload protection: requests in progress, shed by cap, ended by a deadline; connections.
    pub in_flight: IntGauge,
    /// The adaptive limit on message writes in progress (`overload::adaptive`).
    pub admission_limit: IntGauge,
    pub shed: IntCounterVec,
    pub timeouts: IntCounterVec,
    pub connections: IntGauge,
    pub connections_full: IntCounter,
    /// The rate limit: refusals, fail-open passes by reason, decisions.
    pub rate_limited: IntCounter,
    pub rate_limit_unavailable: IntCounterVec,
    pub rate_limit_decisions: IntCounterVec,
}

pub(crate) fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| Metrics {
        requests: carrier_telemetry::counter_vec(
            "carrier_ingress_requests_total",
            "Inbound messages (Data Model and FHIR API) by API and HTTP status",
            &["api", "status"],
        ),
        durable_write_seconds: carrier_telemetry::histogram_vec(
            "carrier_ingress_durable_write_seconds",
            "Time from request to the broker's acknowledgement",
            NO_LABELS,
        ),
        http_requests: carrier_telemetry::counter_vec(
            "carrier_ingress_http_requests_total",
            "HTTP requests on the public port by route template, method and status",
            &["route", "method", "status"],
        ),
        http_request_seconds: carrier_telemetry::histogram_vec(
            "carrier_ingress_http_request_seconds",
            "Time from a request's routing to its response, by route template",
            &["route"],
        ),
        idempotency: carrier_telemetry::counter_vec(
            "carrier_ingress_idempotency_total",
            "Requests with an Idempotency-Key by outcome (new, taken_over, replayed, in_progress, mismatch, store_unavailable, finish_failed)",
            &["outcome"],
        ),
        manual_retry_failures: carrier_telemetry::counter_vec(
            "carrier_ingress_manual_retry_failures_total",
            "Manual retries that could not be queued, by reason",
            &["reason"],
        ),
        in_flight: carrier_telemetry::gauge_vec(
            "carrier_ingress_requests_in_flight",
            "Requests in progress on this replica (the probes not counted)",
            NO_LABELS,
        )
        .with_label_values(NO_LABELS),
        admission_limit: carrier_telemetry::gauge_vec(
            "carrier_ingress_admission_limit",
            "Message writes this replica lets wait for the broker at once now: the adaptive limit \
             that keeps their latency near limits.admission_target_latency_ms",
            NO_LABELS,
        )
        .with_label_values(NO_LABELS),
        shed: carrier_telemetry::counter_vec(
            "carrier_ingress_requests_shed_total",
            "Requests answered 503 at once because a cap was reached, by cap \
             (in_flight, source_in_flight, admission, retries_in_flight)",
            &["cap"],
        ),
        timeouts: carrier_telemetry::counter_vec(
            "carrier_ingress_request_timeouts_total",
            "Requests ended by a deadline, by phase (body: 408, request: 504)",
            &["phase"],
        ),
        connections: carrier_telemetry::gauge_vec(
            "carrier_ingress_connections_open",
            "HTTP connections open on this replica",
            NO_LABELS,
        )
        .with_label_values(NO_LABELS),
        connections_full: carrier_telemetry::counter_vec(
            "carrier_ingress_connection_limit_reached_total",
            "Times every connection slot was taken (new connections waited to be accepted)",
            NO_LABELS,
        )
        .with_label_values(NO_LABELS),
        rate_limited: carrier_telemetry::counter_vec(
            "carrier_ingress_rate_limited_total",
            "Requests refused with 429 by the per-client rate limit",
            NO_LABELS,
        )
        .with_label_values(NO_LABELS),
        rate_limit_unavailable: carrier_telemetry::counter_vec(
            "carrier_ingress_rate_limit_unavailable_total",
            "Requests let through unlimited because Redis was unreachable or slow (fail open)",
            &["reason"],
        ),
        rate_limit_decisions: carrier_telemetry::counter_vec(
            "carrier_ingress_rate_limit_decisions_total",
            "Rate limit decisions: allowed, limited (429), unlimited (Redis unavailable: fail open)",
            &["decision"],
        ),
    })
}
