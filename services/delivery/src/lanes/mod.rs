//! Per-destination FIFO lanes inside each assigned partition of `carrier.deliveries`. See
//! `design.md` beside this file for the rules (order, offsets, parking, rebalances).
//!
//! Where a task goes, by file:
//! - `mod.rs` (here): starting the consumer, and setting up each assigned partition
//!   (`LaneProcessor::assign`: its parked destinations first);
//! - `partition.rs`: a partition's state; `process` sends each record to its destination's lane;
//! - `lane.rs`: `run_lane`, one task per destination with work, taking one task at a time;
//! - `deliver.rs`: one task's attempts until its log is final, and that ending;
//! - `hold.rs`: a held head's state (what operators see) and the waits between attempts;
//! - `parker.rs`: moving a held destination's backlog into the parking store and back;
//! - `directory.rs`: the lanes as the control service sees them;
//! - `metrics.rs`: the lanes' metrics, and the gauges sampled from them (held, depth, parked).

mod deliver;
mod directory;
mod hold;
mod lane;
mod metrics;
mod parker;
mod partition;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use carrier_kafka::consumer::{self, ConsumerOptions, OffsetTracker, PartitionProcessor, Processor};
use carrier_kafka::Topics;
use tokio_util::sync::CancellationToken;

pub use directory::LaneDirectory;

use crate::attempt;
use crate::destinations::Destinations;
use crate::events::LogEvents;
use crate::outbound::OutboundPolicy;
use crate::parking::ParkingStore;
use crate::retry::RetryPolicy;
use crate::Config;
use lane::{spawn_lane, Lane};
use parker::run_parker;
use partition::{Limits, PartitionLanes, PartitionState};

/// What every lane shares.
struct Shared {
    directory: Arc<LaneDirectory>,
    shutdown: CancellationToken,
    client: reqwest::Client,
    outbound: Arc<OutboundPolicy>,
    parking: ParkingStore,
    destinations: Arc<Destinations>,
    events: LogEvents,
    policy: RetryPolicy,
    excerpt_bytes: usize,
    /// See `spans::attempt_span`.
    trace_continue_within: Duration,
    limits: Limits,
    runtime: tokio::runtime::Handle,
    /// Reads the tasks just below a new assignment's start (see `seed_finished_logs`).
    reader: carrier_kafka::admin::RecordReader,
    topic: String,
    /// The consumer group (an attribute of the consumer spans).
    group: String,
}

/// Starts the consumer; the lanes it runs are visible through `directory`.
pub fn start(
    config: &Config,
    destinations: Arc<Destinations>,
    events: LogEvents,
    parking: ParkingStore,
    directory: Arc<LaneDirectory>,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let outbound = Arc::new(OutboundPolicy::new(&config.outbound)?);
    tokio::spawn(metrics::sample_every(
        directory.clone(),
        parking.clone(),
        shutdown.clone(),
    ));
    let shared = Arc::new(Shared {
        directory,
        shutdown: shutdown.clone(),
        client: attempt::client(outbound.clone()),
        outbound,
        parking,
        destinations,
        events,
        policy: config.retry.clone(),
        excerpt_bytes: config.response_excerpt_bytes,
        trace_continue_within: Duration::from_millis(config.trace_continue_within_ms),
        limits: Limits {
            queued_per_destination: config.max_queued_per_destination,
            // Below the consumer's own cap (where fetching pauses), so a slow destination is
            // parked before it can stop the partition.
            partition_pressure: (config.max_pending_per_partition * 3 / 4).max(1),
            unacknowledged_events: config.max_pending_per_partition,
        },
        runtime: tokio::runtime::Handle::current(),
        reader: carrier_kafka::admin::RecordReader::new(&config.kafka)?,
        topic: Topics::new(&config.kafka).deliveries,
        group: config.consumer_group.clone(),
    });
    let options = ConsumerOptions {
        topic: Topics::new(&config.kafka).deliveries,
        group_id: config.consumer_group.clone(),
        client_id: "carrier-delivery".into(),
        max_pending_per_partition: config.max_pending_per_partition,
        handover_timeout: Duration::from_millis(config.handover_timeout_ms),
        drain_timeout: Duration::from_millis(config.drain_timeout_ms),
        commit_interval: Duration::from_millis(200),
    };
    Ok(consumer::spawn(
        &config.kafka,
        options,
        Arc::new(LaneProcessor {
            shared: shared.clone(),
        }),
        shared.parking.pool(),
        shutdown,
    )?)
}

struct LaneProcessor {
    shared: Arc<Shared>,
}

impl Processor for LaneProcessor {
    fn assign(&self, tracker: Arc<OffsetTracker>) -> Box<dyn PartitionProcessor> {
        let partition = Arc::new(PartitionState::new(tracker.clone(), self.shared.limits));
        if let Some(start) = tracker.seen_below() {
            self.shared
                .runtime
                .block_on(seed_finished_logs(&self.shared, &partition, start));
        }
        // Destinations with parked tasks start in parked mode before any record of this
        // partition is dispatched, so a live task never overtakes a parked one (invariant 2).
        // This runs on the consumer thread (not a runtime worker), where blocking is allowed.
        let Some(parked) = self.shared.runtime.block_on(load_parked(&self.shared, &tracker)) else {
            // Released or shutting down before Postgres answered: this partition dispatches
            // nothing (its records stay uncommitted for the next owner).
            return Box::new(PartitionLanes {
                shared: self.shared.clone(),
                partition,
                dispatching: false,
            });
        };
        for destination_id in parked {
            partition
                .book()
                .lanes
                .insert(destination_id.clone(), Lane::parked());
            spawn_lane(&self.shared, &partition, destination_id);
        }
        self.shared
            .runtime
            .spawn(run_parker(self.shared.clone(), partition.clone()));
        self.shared.directory.insert(partition.clone());
        Box::new(PartitionLanes {
            shared: self.shared.clone(),
            partition,
            dispatching: true,
        })
    }
}

/// Tasks below a new assignment's start whose logs it remembers as finished.
const SEEDED_TASKS: i64 = 2_000;

/// Remembers the logs of the tasks just below where a new owner starts as finished: the stored
/// offset is a low watermark, so everything below it is final or parked (parked rows are not
/// checked against these: `PartitionState::below_start`). The router re-routes the messages
/// it had not committed when it lost its own lease (during a Postgres outage, every lease), and
/// those copies (same log IDs) land in the partition after tasks this owner reads; an owner
/// that did not finish the originals itself would send them again after later messages, a raw
/// reorder (the fault matrix's restart-postgres). The router's uncommitted window is far
/// smaller than this many tasks of one partition.
async fn seed_finished_logs(shared: &Shared, partition: &PartitionState, start: i64) {
    let tracker = &partition.tracker;
    use carrier_kafka::rdkafka::message::Message;
    use carrier_proto::records_v1::DeliveryTask;
    use prost::Message as _;
    let read = shared
        .reader
        .read_range(
            &shared.topic,
            tracker.partition(),
            start - SEEDED_TASKS,
            start,
            Duration::from_secs(5),
            |message| message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        )
        .await;
    match read {
        Ok(payloads) => {
            let mut below = partition.below_start.lock().expect("below start lock");
            below.start = Some(crate::parking::Position {
                generation: tracker.generation(),
                offset: start,
            });
            for payload in &payloads {
                if let Ok(task) = DeliveryTask::decode(payload.as_slice()) {
                    below.logs.insert(partition::finished_key(&task));
                }
            }
            tracing::debug!(
                partition = tracker.partition(),
                start,
                tasks = payloads.len(),
                "finished logs below the start remembered"
            );
        }
        Err(error) => {
            tracing::warn!(%error, partition = tracker.partition(), "could not read the tasks below the start; copies of them re-routed later could be sent again")
        }
    }
}

/// The destinations of a newly assigned partition that have parked tasks. Postgres must answer:
/// without it, order cannot be kept, so this retries (and logs) until it does; `None` when the
/// partition is released or the worker shuts down first.
async fn load_parked(shared: &Shared, tracker: &OffsetTracker) -> Option<Vec<String>> {
    let mut failures = 0u32;
    loop {
        match shared.parking.parked_destinations(tracker.partition()).await {
            Ok(destinations) => {
                if !destinations.is_empty() {
                    tracing::info!(
                        partition = tracker.partition(),
                        destinations = destinations.len(),
                        "resuming parked destinations"
                    );
                }
                return Some(destinations);
            }
            Err(error) => {
                failures += 1;
                tracing::error!(%error, partition = tracker.partition(), failures, "cannot read the parking store; partition waits");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = tracker.released_token().cancelled() => return None,
                    _ = shared.shutdown.cancelled() => return None,
                }
            }
        }
    }
}
