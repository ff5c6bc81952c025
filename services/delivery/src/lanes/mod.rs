//! Per-destination FIFO lanes inside each assigned partition. See `design.md` beside this file.

const NO_LABELS: &[&str] = &[];

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use carrier_config::Environment;
use carrier_kafka::consumer::{self, ConsumerOptions, OffsetTracker, PartitionProcessor, Processor, Record};
use carrier_kafka::Topics;
use carrier_proto::records_v1::{DeliveryTask, LogStatus};
use carrier_telemetry::prometheus::{HistogramVec, IntCounterVec, IntGaugeVec};
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::attempt::{self, AttemptResult};
use crate::destinations::{Destinations, LookupError};
use crate::events::LogEvents;
use crate::retry::{Decision, RetryPolicy};
use crate::Config;

/// How many finished log IDs a partition remembers, to skip a task written twice (the router
/// re-routes a message after a crash) instead of sending it again.
const REMEMBERED_LOGS: usize = 10_000;

struct Metrics {
    attempts: IntCounterVec,
    attempt_seconds: HistogramVec,
    lanes: IntGaugeVec,
    finished: IntCounterVec,
}

fn metrics() -> &'static Metrics {
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
        finished: carrier_telemetry::counter_vec(
            "carrier_delivery_logs_finished_total",
            "Logs that reached a final status, by status",
            &["status"],
        ),
    })
}

/// What every lane shares.
struct Shared {
    client: reqwest::Client,
    destinations: Arc<Destinations>,
    events: LogEvents,
    policy: RetryPolicy,
    excerpt_bytes: usize,
    runtime: tokio::runtime::Handle,
}

pub fn start(
    config: &Config,
    destinations: Arc<Destinations>,
    events: LogEvents,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let shared = Arc::new(Shared {
        client: attempt::client(),
        destinations,
        events,
        policy: config.retry.clone(),
        excerpt_bytes: config.response_excerpt_bytes,
        runtime: tokio::runtime::Handle::current(),
    });
    let options = ConsumerOptions {
        topic: Topics::new(&config.kafka).deliveries,
        group_id: config.consumer_group.clone(),
        client_id: "carrier-delivery".into(),
        max_pending_per_partition: config.max_pending_per_partition,
        drain_timeout: Duration::from_millis(config.drain_timeout_ms),
        commit_interval: Duration::from_millis(200),
    };
    Ok(consumer::spawn(
        &config.kafka,
        options,
        Arc::new(LaneProcessor { shared }),
        shutdown,
    )?)
}

struct LaneProcessor {
    shared: Arc<Shared>,
}

impl Processor for LaneProcessor {
    fn assign(&self, tracker: Arc<OffsetTracker>) -> Box<dyn PartitionProcessor> {
        Box::new(PartitionLanes {
            shared: self.shared.clone(),
            partition: Arc::new(PartitionState {
                tracker,
                lanes: Mutex::new(HashMap::new()),
                finished_logs: Mutex::new(RecentLogs::default()),
            }),
        })
    }
}

/// A task waiting in its lane, with the offset that finishes when it does.
struct Queued {
    offset: i64,
    task: DeliveryTask,
}

struct PartitionState {
    tracker: Arc<OffsetTracker>,
    /// Destination ID → its waiting tasks, oldest first. A destination has an entry exactly
    /// while a lane task runs for it; the lane removes the entry when it finds it empty.
    lanes: Mutex<HashMap<String, VecDeque<Queued>>>,
    finished_logs: Mutex<RecentLogs>,
}

struct PartitionLanes {
    shared: Arc<Shared>,
    partition: Arc<PartitionState>,
}

impl PartitionProcessor for PartitionLanes {
    fn process(&mut self, record: Record) {
        let task = match DeliveryTask::decode(record.payload.as_slice()) {
            Ok(task) => task,
            Err(error) => {
                tracing::error!(%error, partition = record.partition, offset = record.offset, "undecodable delivery task skipped");
                self.partition.tracker.finish(record.offset);
                return;
            }
        };
        let destination_id = task.destination_id.clone();
        let queued = Queued {
            offset: record.offset,
            task,
        };
        let mut lanes = self.partition.lanes.lock().expect("lanes lock");
        match lanes.get_mut(&destination_id) {
            Some(lane) => lane.push_back(queued),
            None => {
                lanes.insert(destination_id.clone(), VecDeque::from([queued]));
                metrics().lanes.with_label_values(NO_LABELS).inc();
                let shared = self.shared.clone();
                let partition = self.partition.clone();
                self.shared
                    .runtime
                    .spawn(run_lane(shared, partition, destination_id));
            }
        }
    }
}

/// Works through one destination's tasks in offset order, one at a time, until none is left
/// or the partition is released.
async fn run_lane(shared: Arc<Shared>, partition: Arc<PartitionState>, destination_id: String) {
    loop {
        if partition.tracker.is_released() {
            break;
        }
        let next = {
            let mut lanes = partition.lanes.lock().expect("lanes lock");
            match lanes.get_mut(&destination_id).and_then(VecDeque::pop_front) {
                Some(queued) => queued,
                None => {
                    lanes.remove(&destination_id);
                    break;
                }
            }
        };
        if partition
            .finished_logs
            .lock()
            .expect("finished logs lock")
            .contains(&next.task.log_id)
        {
            tracing::debug!(log_id = %next.task.log_id, "duplicate task of a finished log skipped");
            partition.tracker.finish(next.offset);
            continue;
        }
        deliver(&shared, &partition, next).await;
    }
    metrics().lanes.with_label_values(NO_LABELS).dec();
}

/// Attempts one task until its log is final (or the partition is released, in which case the
/// task stays unfinished and whoever owns the partition next delivers it).
async fn deliver(shared: &Arc<Shared>, partition: &Arc<PartitionState>, queued: Queued) {
    let tracker = &partition.tracker;
    let released = tracker.released_token().clone();
    let task = queued.task;
    let mut number: u32 = 1;
    loop {
        // Held across the attempt and its event: a revoke waits for it, so no request of this
        // partition is still in flight once another worker may own it.
        let activity = tracker.activity();
        if released.is_cancelled() {
            return;
        }
        let destination = match shared.destinations.get(&task.destination_id).await {
            Ok(destination) => destination,
            Err(LookupError::Unavailable(error)) => {
                tracing::warn!(%error, destination_id = %task.destination_id, "destination settings unavailable, waiting");
                drop(activity);
                if sleep_unless_released(&released, Duration::from_secs(1)).await {
                    continue;
                }
                return;
            }
            Err(LookupError::Gone(id)) => {
                tracing::warn!(destination_id = %id, log_id = %task.log_id, "destination no longer exists; log cancelled");
                let result = AttemptResult {
                    success: false,
                    status_code: 0,
                    error: format!("destination {id} no longer exists"),
                    response_excerpt: String::new(),
                    started_at_ms: chrono::Utc::now().timestamp_millis(),
                    duration: Duration::ZERO,
                };
                finish(
                    shared,
                    partition,
                    queued.offset,
                    task,
                    String::new(),
                    number,
                    result,
                    LogStatus::Cancelled,
                    activity,
                );
                return;
            }
        };
        let result = attempt::send(&shared.client, &destination, &task, number, shared.excerpt_bytes).await;
        metrics()
            .attempts
            .with_label_values(&[if result.success { "success" } else { "failure" }])
            .inc();
        metrics()
            .attempt_seconds
            .with_label_values(NO_LABELS)
            .observe(result.duration.as_secs_f64());
        let environment = destination.environment.parse().unwrap_or(Environment::Production);
        match shared.policy.decide(
            environment,
            task.test,
            number,
            result.success,
            rand::random::<f64>(),
        ) {
            Decision::Final(status) => {
                if status != LogStatus::Delivered {
                    tracing::info!(
                        destination_id = %task.destination_id,
                        log_id = %task.log_id,
                        attempt = number,
                        test = task.test,
                        error = %result.error,
                        "delivery failed; log is final and the destination's next message proceeds"
                    );
                }
                finish(
                    shared,
                    partition,
                    queued.offset,
                    task,
                    destination.environment.clone(),
                    number,
                    result,
                    status,
                    activity,
                );
                return;
            }
            Decision::RetryAfter(delay) => {
                tracing::warn!(
                    destination_id = %task.destination_id,
                    log_id = %task.log_id,
                    attempt = number,
                    retry_in_ms = delay.as_millis() as u64,
                    error = %result.error,
                    "delivery attempt failed, will retry"
                );
                // The attempt's event is written in the background; the log stays queued.
                let events = shared.events.clone();
                let event_task = task.clone();
                let environment = destination.environment.clone();
                shared.runtime.spawn(async move {
                    if let Err(error) = events.attempt(&event_task, &environment, number, &result, LogStatus::Queued).await {
                        tracing::warn!(%error, log_id = %event_task.log_id, "attempt event could not be written");
                    }
                    drop(activity);
                });
                if !sleep_unless_released(&released, delay).await {
                    return;
                }
                number += 1;
            }
        }
    }
}

/// The log is final: write its event, and only once the broker has it, let the offset go.
/// The lane moves on to the next task meanwhile.
#[allow(clippy::too_many_arguments)]
fn finish(
    shared: &Arc<Shared>,
    partition: &Arc<PartitionState>,
    offset: i64,
    task: DeliveryTask,
    environment: String,
    number: u32,
    result: AttemptResult,
    status: LogStatus,
    activity: consumer::ActivityGuard,
) {
    metrics().finished.with_label_values(&[status.as_api_str()]).inc();
    partition
        .finished_logs
        .lock()
        .expect("finished logs lock")
        .insert(task.log_id.clone());
    let events = shared.events.clone();
    let partition = partition.clone();
    shared.runtime.spawn(async move {
        match events.attempt(&task, &environment, number, &result, status).await {
            Ok(()) => partition.tracker.finish(offset),
            Err(error) => {
                // The offset stays unfinished: after a restart the task is attempted again and
                // its event written then. Commits of this partition wait until then.
                tracing::error!(%error, log_id = %task.log_id, offset, "final log event could not be written; the partition's commits are held");
            }
        }
        drop(activity);
    });
}

/// Sleeps for `delay`; false when the partition was released first.
async fn sleep_unless_released(released: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = released.cancelled() => false,
    }
}

/// A bounded set of recently finished log IDs (oldest forgotten first).
#[derive(Default)]
struct RecentLogs {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl RecentLogs {
    fn insert(&mut self, log_id: String) {
        if self.set.insert(log_id.clone()) {
            self.order.push_back(log_id);
            if self.order.len() > REMEMBERED_LOGS {
                if let Some(oldest) = self.order.pop_front() {
                    self.set.remove(&oldest);
                }
            }
        }
    }

    fn contains(&self, log_id: &str) -> bool {
        self.set.contains(log_id)
    }
}
