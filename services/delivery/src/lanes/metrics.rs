//! The lanes' metrics (one static set, registered on first use), and the gauges sampled from
//! the lanes every few seconds (`sample_every`).

use std::sync::Arc;
use std::time::Duration;

use carrier_telemetry::prometheus::{GaugeVec, HistogramVec, IntCounterVec, IntGaugeVec};
use tokio_util::sync::CancellationToken;

use super::directory::{HeldCount, LaneDirectory};
use crate::parking::{HeldReason, ParkingStore};

pub(super) const NO_LABELS: &[&str] = &[];

pub(super) struct Metrics {
    pub(super) attempts: IntCounterVec,
    pub(super) attempt_seconds: HistogramVec,
    pub(super) lanes: IntGaugeVec,
    pub(super) finished: IntCounterVec,
    pub(super) parked: IntCounterVec,
    pub(super) overflows: IntCounterVec,
    pub(super) in_flight: IntGaugeVec,
    held: IntGaugeVec,
    oldest_held: GaugeVec,
    depth: IntGaugeVec,
    parked_tasks: IntGaugeVec,
}

pub(super) fn metrics() -> &'static Metrics {
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
    })
}

/// How often the gauges are sampled from the lanes; the parked count (a Postgres count over
/// the owned partitions) every `PARKED_EVERY` samples.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);
const PARKED_EVERY: u32 = 6;

/// Samples the held, depth and parked gauges until `shutdown`. Sampled, not kept up to date at
/// every change: a held head's age grows by itself, and counting at scrape time would take the
/// lanes' locks from the metrics handler.
pub async fn sample_every(directory: Arc<LaneDirectory>, parking: ParkingStore, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(SAMPLE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round = 0u32;
    let mut partitions_shown: Vec<i32> = Vec::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let sample = directory.sample();
        let now_ms = chrono::Utc::now().timestamp_millis();
        for (reason, held) in [
            (HeldReason::Failing, &sample.failing),
            (HeldReason::Operator, &sample.by_operator),
        ] {
            set_held(reason, held, now_ms);
        }
        let owned: Vec<i32> = sample.depth.iter().map(|(partition, _)| *partition).collect();
        for gone in partitions_shown
            .iter()
            .filter(|partition| !owned.contains(partition))
        {
            let _ = metrics().depth.remove_label_values(&[&gone.to_string()]);
        }
        for (partition, depth) in &sample.depth {
            metrics()
                .depth
                .with_label_values(&[&partition.to_string()])
                .set(*depth as i64);
        }
        partitions_shown = owned;
        if round.is_multiple_of(PARKED_EVERY) {
            match parking.parked_in_partitions(&partitions_shown).await {
                Ok(count) => metrics().parked_tasks.with_label_values(NO_LABELS).set(count),
                Err(error) => {
                    tracing::debug!(%error, "counting parked tasks failed; the gauge keeps its last value")
                }
            }
        }
        round = round.wrapping_add(1);
    }
}

fn set_held(reason: HeldReason, held: &HeldCount, now_ms: i64) {
    metrics()
        .held
        .with_label_values(&[reason.as_str()])
        .set(held.count);
    let age_ms = held.oldest_since_ms.map_or(0, |since| (now_ms - since).max(0));
    metrics()
        .oldest_held
        .with_label_values(&[reason.as_str()])
        .set(age_ms as f64 / 1000.0);
}

/// Counts one request in flight while alive (also when the attempt is abandoned).
pub(super) struct InFlight;

impl InFlight {
    pub(super) fn start() -> Self {
        metrics().in_flight.with_label_values(NO_LABELS).inc();
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics().in_flight.with_label_values(NO_LABELS).dec();
    }
}
