//! The lanes' metrics (one static set, registered on first use).

use carrier_telemetry::prometheus::{HistogramVec, IntCounterVec, IntGaugeVec};

pub(super) const NO_LABELS: &[&str] = &[];

pub(super) struct Metrics {
    pub(super) attempts: IntCounterVec,
    pub(super) attempt_seconds: HistogramVec,
    pub(super) lanes: IntGaugeVec,
    pub(super) finished: IntCounterVec,
    pub(super) parked: IntCounterVec,
    pub(super) overflows: IntCounterVec,
}

pub(super) fn metrics() -> &'static Metrics {
    static METRICS: std::sync::OnceLock<Metrics> = std::sync::OnceLock::new();
    METRICS.get_or_init(|| Metrics {
        attempts: carrier_telemetry::counter_vec(
            "carrier_delivery_attempts_total",
            "HTTP attempts by outcome (success, failure)",
            &["outcome"],
        ),
        attempt_seconds: carrier_telemetry::histogram_vec(
            "carrier_delivery_attempt_seconds",
            "Duration of HTTP attempts",
            &[],
        ),
        lanes: carrier_telemetry::gauge_vec(
            "carrier_delivery_active_lanes",
            "Destination lanes with queued work",
            &[],
        ),
        parked: carrier_telemetry::counter_vec(
            "carrier_delivery_tasks_parked_total",
            "Tasks written to the parking store (backlog of held destinations)",
            &[],
        ),
        overflows: carrier_telemetry::counter_vec(
            "carrier_delivery_backlog_overflows_total",
            "Destinations whose in-memory backlog reached its share, so their new tasks are parked",
            &[],
        ),
        finished: carrier_telemetry::counter_vec(
            "carrier_delivery_logs_finished_total",
            "Logs that reached a final status, by status",
            &["status"],
        ),
    })
}
