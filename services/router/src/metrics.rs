//! The router's metrics: one static set, registered on first use.

use std::sync::OnceLock;

use carrier_telemetry::prometheus::{HistogramVec, IntCounterVec, IntGauge};

pub(crate) struct Metrics {
    /// Inbound records by outcome: routed, failed (routed again later), undecodable (skipped).
    pub records: IntCounterVec,
    /// Partitions whose routing halted after a write failed for good.
    pub halted_partitions: IntGauge,
    /// From a message's first task write to the acknowledgement of its last log event.
    pub write_seconds: HistogramVec,
}

pub(crate) fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| Metrics {
        records: carrier_telemetry::counter_vec(
            "carrier_router_records_total",
            "Inbound records processed by the router, by outcome",
            &["outcome"],
        ),
        halted_partitions: carrier_telemetry::gauge_vec(
            "carrier_router_halted_partitions",
            "Partitions of carrier.inbound whose routing is halted after a write failed for good",
            &[],
        )
        .with_label_values(&[] as &[&str]),
        write_seconds: carrier_telemetry::histogram_vec(
            "carrier_router_write_seconds",
            "Durable write of one routed message: from its first task write to the broker's acknowledgement of its tasks and log events",
            &[],
        ),
    })
}
