//! The gauges sampled from the lanes every few seconds (`sample_every`), and the in-flight
//! count; the metrics themselves are delivery's one set (`crate::metrics`).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::directory::{HeldCount, LaneDirectory};
pub(super) use crate::metrics::{metrics, NO_LABELS};
use crate::parking::{HeldReason, ParkingStore};

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
