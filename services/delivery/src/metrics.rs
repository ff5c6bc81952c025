//! Delivery's metrics: one static set, registered on first use. The gauges sampled from the
//! lanes (held, depth, parked) are set by `lanes/metrics.rs`.

use carrier_telemetry::prometheus::{GaugeVec, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec};

pub(crate) const NO_LABELS: &[&str] = &[];

pub(crate) struct Metrics {
    pub(crate) attempts: IntCounterVec,
    pub(crate) attempt_seconds: HistogramVec,
    pub(crate) lanes: IntGaugeVec,
    pub(crate) finished: IntCounterVec,
    pub(crate) parked: IntCounterVec,
    pub(crate) overflows: IntCounterVec,
    pub(crate) in_flight: IntGaugeVec,
    pub(crate) held: IntGaugeVec,
    pub(crate) oldest_held: GaugeVec,
    pub(crate) depth: IntGaugeVec,
    pub(crate) parked_tasks: IntGaugeVec,
    /// Operator control requests served, by method and outcome.
    pub(crate) control_requests: IntCounterVec,
    /// Attempts refused by the outbound policy, by address class.
    pub(crate) outbound_refused: IntCounterVec,
    /// Partitions of `carrier.deliveries` this worker owns.
    pub(crate) owned_partitions: IntGauge,
}

pub(crate) fn metrics() -> &'static Metrics {
    static METRICS: std::sync::OnceLock<Metrics> = std::sync::OnceLock::new();
    METRICS.get_or_init(|| Metrics {
        attempts: carrier_telemetry::counter_vec(
            "carrier_delivery_attempts_total",
            "HTTP attempts by outcome (success, failure) and status class (2xx, 3xx, 4xx, 5xx, timeout, connect, refused, other)",
            &["outcome", "status_class"],
        ),
        attempt_seconds: carrier_telemetry::histogram_vec(
            "carrier_delivery_attempt_seconds",
            "Duration of HTTP attempts, by outcome",
            &["outcome"],
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
        in_flight: carrier_telemetry::gauge_vec(
            "carrier_delivery_requests_in_flight",
            "Requests to destinations sent and not answered yet (at most one per destination)",
            &[],
        ),
        held: carrier_telemetry::gauge_vec(
            "carrier_delivery_held_destinations",
            "Destinations whose queue is held on this worker's partitions, by reason (failing: the head keeps failing; operator: paused)",
            &["reason"],
        ),
        oldest_held: carrier_telemetry::float_gauge_vec(
            "carrier_delivery_oldest_held_seconds",
            "Age of the oldest held head on this worker's partitions, by reason (0 when none is held)",
            &["reason"],
        ),
        depth: carrier_telemetry::gauge_vec(
            "carrier_delivery_partition_depth",
            "Tasks waiting in memory per partition this worker owns (queued, prefetched, on their way to the parking store)",
            &["partition"],
        ),
        parked_tasks: carrier_telemetry::gauge_vec(
            "carrier_delivery_parked_tasks",
            "Tasks in the parking store for the partitions this worker owns",
            &[],
        ),
        control_requests: carrier_telemetry::counter_vec(
            "carrier_delivery_control_requests_total",
            "Operator control requests served by this worker, by method and outcome",
            &["method", "outcome"],
        ),
        outbound_refused: carrier_telemetry::counter_vec(
            "carrier_delivery_outbound_refused_total",
            "Attempts refused by the outbound policy, by address class",
            &["class"],
        ),
        owned_partitions: carrier_telemetry::gauge_vec(
            "carrier_delivery_owned_partitions",
            "Partitions of carrier.deliveries this worker owns now",
            &[],
        )
        .with_label_values(NO_LABELS),
    })
}
