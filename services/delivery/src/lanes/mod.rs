//! Per-destination FIFO lanes inside each assigned partition. See `design.md` beside this file.

const NO_LABELS: &[&str] = &[];

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use carrier_config::Environment;
use carrier_kafka::consumer::{self, ConsumerOptions, OffsetTracker, PartitionProcessor, Processor, Record};
use carrier_kafka::Topics;
use carrier_proto::config_v1::Destination;
use carrier_proto::records_v1::{DeliveryTask, LogStatus};
use carrier_telemetry::prometheus::{HistogramVec, IntCounterVec, IntGaugeVec};
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::attempt::{self, AttemptResult};
use crate::destinations::{Destinations, LookupError};
use crate::events::LogEvents;
use crate::outbound::OutboundPolicy;
use crate::parking::{HeldHead, HeldReason, ParkingStore, ToPark};
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
    parked: IntCounterVec,
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
        parked: carrier_telemetry::counter_vec(
            "carrier_delivery_tasks_parked_total",
            "Tasks written to the parking store (backlog of held destinations)",
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
    directory: Arc<LaneDirectory>,
    shutdown: CancellationToken,
    client: reqwest::Client,
    outbound: Arc<OutboundPolicy>,
    parking: ParkingStore,
    destinations: Arc<Destinations>,
    events: LogEvents,
    policy: RetryPolicy,
    excerpt_bytes: usize,
    runtime: tokio::runtime::Handle,
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
        runtime: tokio::runtime::Handle::current(),
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
        Arc::new(LaneProcessor { shared }),
        shutdown,
    )?)
}

struct LaneProcessor {
    shared: Arc<Shared>,
}

impl Processor for LaneProcessor {
    fn assign(&self, tracker: Arc<OffsetTracker>) -> Box<dyn PartitionProcessor> {
        let partition = Arc::new(PartitionState {
            tracker: tracker.clone(),
            lanes: Mutex::new(HashMap::new()),
            finished_logs: Mutex::new(RecentLogs::default()),
            to_park: Mutex::new(Vec::new()),
            park_wakeup: tokio::sync::Notify::new(),
        });
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
            let mut lanes = partition.lanes.lock().expect("lanes lock");
            lanes.insert(destination_id.clone(), Lane::parked());
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

/// A task waiting in its lane, with where it came from.
struct Queued {
    offset: i64,
    task: DeliveryTask,
    origin: Origin,
}

/// Where a task's completion is recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// Read from the partition and not parked: finishing it lets its offset be committed.
    Live,
    /// Stored in the parking store (its offset is already finished): finishing it removes it.
    Parked,
}

/// One destination's line within a partition.
struct Lane {
    /// Live tasks waiting in memory, oldest first (empty in parked mode).
    queue: VecDeque<Queued>,
    /// Parked mode: the destination's line continues in the parking store; new tasks of this
    /// destination are parked too, until the store has none left for it.
    parked: bool,
    /// Bumped each time tasks of this destination are written to the parking store, so the
    /// lane can tell that none arrived while it found the store empty.
    park_generation: u64,
    /// Tasks of this destination taken by the parker and not yet written.
    parking_in_flight: usize,
    /// Parked tasks this lane took to deliver whose outcome is not recorded yet.
    parked_unfinished: usize,
    /// Offsets of parked tasks that are final: their rows are removed in one statement.
    parked_done: Vec<i64>,
    /// The held head, while one is (the live view operators get through the control service).
    held: Option<HeldHead>,
    /// Ends the lane's current wait (backoff, operator pause) at once: an operator acted.
    wakeup: Arc<tokio::sync::Notify>,
}

impl Lane {
    fn new(queue: VecDeque<Queued>, parked: bool) -> Self {
        Self {
            queue,
            parked,
            park_generation: 0,
            parking_in_flight: 0,
            parked_unfinished: 0,
            parked_done: Vec::new(),
            held: None,
            wakeup: Arc::new(tokio::sync::Notify::new()),
        }
    }

    fn live(first: Queued) -> Self {
        Self::new(VecDeque::from([first]), false)
    }

    fn parked() -> Self {
        Self::new(VecDeque::new(), true)
    }
}

struct PartitionState {
    tracker: Arc<OffsetTracker>,
    /// Destination ID → its lane. A destination has an entry exactly while a lane task runs for
    /// it; the lane task removes the entry when it finds nothing left to do.
    lanes: Mutex<HashMap<String, Lane>>,
    finished_logs: Mutex<RecentLogs>,
    /// Tasks waiting to be written to the parking store by this partition's parker.
    to_park: Mutex<Vec<Queued>>,
    park_wakeup: tokio::sync::Notify,
}

impl PartitionState {
    fn park(&self, queued: Queued) {
        self.to_park.lock().expect("park lock").push(queued);
        self.park_wakeup.notify_one();
    }
}

struct PartitionLanes {
    shared: Arc<Shared>,
    partition: Arc<PartitionState>,
    /// False when the partition could not be set up (see `assign`): records are left
    /// unfinished, so their offsets are never committed here.
    dispatching: bool,
}

impl PartitionProcessor for PartitionLanes {
    fn process(&mut self, record: Record) {
        if !self.dispatching {
            return;
        }
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
            origin: Origin::Live,
        };
        let mut lanes = self.partition.lanes.lock().expect("lanes lock");
        match lanes.get_mut(&destination_id) {
            Some(lane) if lane.parked => {
                drop(lanes);
                self.partition.park(queued);
            }
            Some(lane) => lane.queue.push_back(queued),
            None => {
                lanes.insert(destination_id.clone(), Lane::live(queued));
                drop(lanes);
                spawn_lane(&self.shared, &self.partition, destination_id);
            }
        }
    }
}

fn spawn_lane(shared: &Arc<Shared>, partition: &Arc<PartitionState>, destination_id: String) {
    metrics().lanes.with_label_values(NO_LABELS).inc();
    shared
        .runtime
        .spawn(run_lane(shared.clone(), partition.clone(), destination_id));
}

/// Writes parked tasks to Postgres in batches; only then are their offsets finished
/// (invariant 4: parked is durable before it is committed).
async fn run_parker(shared: Arc<Shared>, partition: Arc<PartitionState>) {
    let released = partition.tracker.released_token().clone();
    loop {
        tokio::select! {
            _ = partition.park_wakeup.notified() => {}
            _ = released.cancelled() => return,
        }
        loop {
            let batch: Vec<Queued> = {
                let mut lanes = partition.lanes.lock().expect("lanes lock");
                let batch = std::mem::take(&mut *partition.to_park.lock().expect("park lock"));
                for queued in &batch {
                    if let Some(lane) = lanes.get_mut(&queued.task.destination_id) {
                        lane.parking_in_flight += 1;
                    }
                }
                batch
            };
            if batch.is_empty() {
                break;
            }
            let _activity = partition.tracker.activity();
            let rows: Vec<ToPark> = batch
                .iter()
                .map(|queued| ToPark {
                    offset: queued.offset,
                    task: queued.task.clone(),
                })
                .collect();
            let mut failures = 0u32;
            while let Err(error) = shared.parking.park(partition.tracker.partition(), &rows).await {
                failures += 1;
                tracing::error!(%error, tasks = rows.len(), failures, "parking tasks failed; their offsets stay uncommitted, retrying");
                if !sleep_unless_released(
                    &released,
                    Duration::from_millis(200 * u64::from(failures.min(25))),
                )
                .await
                {
                    return;
                }
            }
            metrics()
                .parked
                .with_label_values(NO_LABELS)
                .inc_by(rows.len() as u64);
            {
                let mut lanes = partition.lanes.lock().expect("lanes lock");
                for queued in &batch {
                    if let Some(lane) = lanes.get_mut(&queued.task.destination_id) {
                        lane.park_generation += 1;
                        lane.parking_in_flight -= 1;
                    }
                }
            }
            for queued in &batch {
                if queued.origin == Origin::Live {
                    partition.tracker.finish(queued.offset);
                }
            }
        }
    }
}

/// What a lane does next.
enum Next {
    Deliver(Box<Queued>),
    /// Parked mode: read the next tasks from the parking store.
    ReadParked {
        generation: u64,
    },
    Done,
}

/// Works through one destination's tasks in offset order, one at a time, until none is left
/// or the partition is released. In parked mode it reads its tasks from the parking store.
async fn run_lane(shared: Arc<Shared>, partition: Arc<PartitionState>, destination_id: String) {
    // Parked tasks already taken from the store (offsets up to this one).
    let mut parked_cursor = -1i64;
    // The first parked task this lane delivers may be a head an earlier owner was retrying.
    let mut first_parked = true;
    let mut parked_batch: VecDeque<Queued> = VecDeque::new();
    loop {
        if partition.tracker.is_released() {
            break;
        }
        let next = match parked_batch.pop_front() {
            Some(queued) => Next::Deliver(Box::new(queued)),
            None => {
                let mut lanes = partition.lanes.lock().expect("lanes lock");
                match lanes.get_mut(&destination_id) {
                    Some(lane) if lane.parked => Next::ReadParked {
                        generation: lane.park_generation,
                    },
                    Some(lane) => match lane.queue.pop_front() {
                        Some(queued) => Next::Deliver(Box::new(queued)),
                        None => {
                            lanes.remove(&destination_id);
                            Next::Done
                        }
                    },
                    None => Next::Done,
                }
            }
        };
        match next {
            Next::Done => break,
            Next::ReadParked { generation } => {
                remove_done_rows(&shared, &partition, &destination_id).await;
                match shared
                    .parking
                    .next(&destination_id, parked_cursor, PARKED_BATCH)
                    .await
                {
                    Ok(tasks) if tasks.is_empty() => {
                        if leave_parked_mode(&partition, &destination_id, generation) {
                            tracing::info!(
                                destination_id,
                                "parked backlog drained; destination back to live traffic"
                            );
                        } else {
                            // Tasks are on their way into the store; look again shortly.
                            if !sleep_unless_released(
                                partition.tracker.released_token(),
                                Duration::from_millis(20),
                            )
                            .await
                            {
                                break;
                            }
                        }
                    }
                    Ok(tasks) => {
                        if let Some(lane) = partition
                            .lanes
                            .lock()
                            .expect("lanes lock")
                            .get_mut(&destination_id)
                        {
                            lane.parked_unfinished += tasks.len();
                        }
                        for parked in tasks {
                            parked_cursor = parked.offset;
                            parked_batch.push_back(Queued {
                                offset: parked.offset,
                                task: parked.task,
                                origin: Origin::Parked,
                            });
                        }
                    }
                    Err(error) => {
                        tracing::error!(%error, destination_id, "cannot read parked tasks; retrying");
                        if !sleep_unless_released(partition.tracker.released_token(), Duration::from_secs(1))
                            .await
                        {
                            break;
                        }
                    }
                }
            }
            Next::Deliver(queued) => {
                let queued = *queued;
                if partition
                    .finished_logs
                    .lock()
                    .expect("finished logs lock")
                    .contains(&finished_key(&queued.task))
                {
                    tracing::debug!(log_id = %queued.task.log_id, "duplicate task of a finished log skipped");
                    complete(&partition, &queued);
                    continue;
                }
                let resume_held = first_parked && queued.origin == Origin::Parked;
                first_parked = first_parked && !resume_held;
                // A task parked while it was the head is past the cursor now.
                if let Some(offset) = deliver(&shared, &partition, queued, resume_held).await {
                    parked_cursor = parked_cursor.max(offset);
                }
            }
        }
    }
    metrics().lanes.with_label_values(NO_LABELS).dec();
}

/// What identifies a finished task for duplicate detection: its log, and for a manual retry
/// also the retry (a log may be retried, and each retry is a task of its own).
fn finished_key(task: &DeliveryTask) -> String {
    if task.retry_id.is_empty() {
        task.log_id.clone()
    } else {
        format!("{}/{}", task.log_id, task.retry_id)
    }
}

/// Parked tasks read from the store per query.
const PARKED_BATCH: i64 = 100;

/// Back to live mode, if nothing was parked for the destination since the lane found the store
/// empty and nothing is waiting to be parked. The check and the switch happen under the lanes
/// lock, which `process` also takes: a new task either was parked before the switch (and the
/// generation moved) or arrives after it and joins the live queue.
fn leave_parked_mode(partition: &PartitionState, destination_id: &str, generation: u64) -> bool {
    let mut lanes = partition.lanes.lock().expect("lanes lock");
    let waiting = partition
        .to_park
        .lock()
        .expect("park lock")
        .iter()
        .any(|q| q.task.destination_id == destination_id);
    match lanes.get_mut(destination_id) {
        Some(lane)
            if lane.park_generation == generation
                && lane.parking_in_flight == 0
                && lane.parked_unfinished == 0
                && lane.parked_done.is_empty()
                && !waiting =>
        {
            lane.parked = false;
            true
        }
        _ => false,
    }
}

/// Records that a task needs nothing more (a duplicate skipped): its offset is finished, or its
/// parked row removed.
fn complete(partition: &PartitionState, queued: &Queued) {
    match queued.origin {
        Origin::Live => partition.tracker.finish(queued.offset),
        Origin::Parked => {
            // The lane removes final rows in batches (before it reads the next ones, and before
            // it leaves parked mode); a lane that is gone (partition released) removes nothing:
            // the row stays, and the next owner skips or redoes it.
            let mut lanes = partition.lanes.lock().expect("lanes lock");
            if let Some(lane) = lanes.get_mut(&queued.task.destination_id) {
                lane.parked_unfinished = lane.parked_unfinished.saturating_sub(1);
                lane.parked_done.push(queued.offset);
            }
        }
    }
}

/// A parked task whose final event could not be written: its row stays (a restart redoes it).
fn abandon_parked(partition: &PartitionState, queued: &Queued) {
    if queued.origin == Origin::Parked {
        if let Some(lane) = partition
            .lanes
            .lock()
            .expect("lanes lock")
            .get_mut(&queued.task.destination_id)
        {
            lane.parked_unfinished = lane.parked_unfinished.saturating_sub(1);
        }
    }
}

/// Removes the rows of the lane's final parked tasks in one statement.
async fn remove_done_rows(shared: &Shared, partition: &PartitionState, destination_id: &str) {
    let done = match partition
        .lanes
        .lock()
        .expect("lanes lock")
        .get_mut(destination_id)
    {
        Some(lane) => std::mem::take(&mut lane.parked_done),
        None => return,
    };
    if done.is_empty() {
        return;
    }
    if let Err(error) = shared.parking.remove_many(destination_id, &done).await {
        tracing::warn!(%error, destination_id, rows = done.len(), "final parked tasks could not be removed yet; retrying");
        if let Some(lane) = partition
            .lanes
            .lock()
            .expect("lanes lock")
            .get_mut(destination_id)
        {
            lane.parked_done.extend(done);
        }
    }
}

/// Moves a live destination whose head is failing into parked mode: the head is written to the
/// parking store at once (so its offset can be committed while it keeps failing), and every task
/// queued behind it follows through the partition's parker, so the partition's commits move on
/// and memory stays bounded however long the destination stays down. The head stays this lane's
/// head: the lane goes on retrying it and removes its row once it is final.
async fn enter_parked_mode(shared: &Arc<Shared>, partition: &Arc<PartitionState>, head: &mut Queued) {
    if head.origin == Origin::Parked {
        return;
    }
    let row = ToPark {
        offset: head.offset,
        task: head.task.clone(),
    };
    if let Err(error) = shared
        .parking
        .park(partition.tracker.partition(), std::slice::from_ref(&row))
        .await
    {
        tracing::error!(%error, destination_id = %head.task.destination_id, "cannot park a failing destination; its backlog stays in memory");
        return;
    }
    partition.tracker.finish(head.offset);
    head.origin = Origin::Parked;
    let mut lanes = partition.lanes.lock().expect("lanes lock");
    let Some(lane) = lanes.get_mut(&head.task.destination_id) else {
        return;
    };
    lane.parked = true;
    lane.parked_unfinished += 1;
    let queued: Vec<Queued> = lane.queue.drain(..).collect();
    drop(lanes);
    tracing::warn!(destination_id = %head.task.destination_id, backlog = queued.len() + 1, "destination held by a failing head; parking its backlog");
    metrics().parked.with_label_values(NO_LABELS).inc();
    for queued in queued {
        partition.park(queued);
    }
}

/// Attempts one task until its log is final (or the partition is released, in which case the
/// task stays unfinished and whoever owns the partition next delivers it).
///
/// `resume_held`: the task is the first one a lane takes from a parked backlog, so it may be a
/// head that an earlier owner of the partition was retrying (before a crash or a rebalance).
/// Its attempt numbers, last error and next attempt time then continue from what that owner
/// stored, instead of starting over (a crash loop must not reset the backoff).
async fn deliver(
    shared: &Arc<Shared>,
    partition: &Arc<PartitionState>,
    mut queued: Queued,
    resume_held: bool,
) -> Option<i64> {
    let tracker = &partition.tracker;
    let released = tracker.released_token().clone();
    let destination_id = queued.task.destination_id.clone();
    let wakeup = lane_wakeup(partition, &destination_id);
    // A manual retry numbers its attempts after the log's earlier ones; the retry rules count
    // from its own first attempt.
    let previous_attempts = queued.task.previous_attempts;
    let mut number: u32 = previous_attempts + 1;
    // When the last attempt started: a manual "retry now" newer than this wakes the head.
    let mut last_attempt_ms: i64 = 0;
    // What operators see of this head while it holds the queue.
    let mut hold = Hold::new(&destination_id);
    let mut held_by_operator = false;
    if resume_held {
        if let Some(stored) = stored_head(shared, &queued.task).await {
            number = number.max(stored.attempts + 1);
            tracing::info!(
                destination_id,
                log_id = %stored.log_id,
                attempts = stored.attempts,
                "resuming a held head where the partition's previous owner left it"
            );
            let wait_ms = stored
                .next_attempt_at_ms
                .map_or(0, |at| at - chrono::Utc::now().timestamp_millis());
            hold.resume(partition, stored);
            if wait_ms > 0
                && !sleep_until_retry(
                    shared,
                    &released,
                    &wakeup,
                    Duration::from_millis(wait_ms as u64),
                    &destination_id,
                    &queued.task.log_id,
                    last_attempt_ms,
                )
                .await
            {
                return None;
            }
        }
    }
    loop {
        // Held across the attempt and its event: a revoke waits for it, so no request of this
        // partition is still in flight once another worker may own it.
        let activity = tracker.activity();
        if released.is_cancelled() {
            return None;
        }
        let parked_offset = (queued.origin == Origin::Parked).then_some(queued.offset);
        let task = &queued.task;
        let destination = match shared.destinations.get(&task.destination_id).await {
            Ok(destination) => destination,
            Err(LookupError::Unavailable(error)) => {
                tracing::warn!(%error, destination_id = %task.destination_id, "destination settings unavailable, waiting");
                drop(activity);
                if sleep_unless_released(&released, Duration::from_secs(1)).await {
                    continue;
                }
                return None;
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
                let ending = Ending::Attempted {
                    number,
                    result,
                    status: LogStatus::Cancelled,
                };
                finish(shared, partition, queued, String::new(), ending, activity);
                hold.release(shared, partition).await;
                return parked_offset;
            }
        };
        if skip_requested(&destination, &task.log_id) {
            tracing::info!(destination_id = %task.destination_id, log_id = %task.log_id, "head skipped by an operator; log cancelled");
            let environment = destination.environment.clone();
            finish(
                shared,
                partition,
                queued,
                environment,
                Ending::Skipped { sequence: number },
                activity,
            );
            hold.release(shared, partition).await;
            return parked_offset;
        }
        let retry_now = retry_requested(&destination, &queued.task.log_id, last_attempt_ms);
        if destination.paused_by_operator && !retry_now {
            drop(activity);
            if !held_by_operator {
                tracing::info!(destination_id = %task.destination_id, "destination paused by an operator");
                enter_parked_mode(shared, partition, &mut queued).await;
                held_by_operator = true;
            }
            hold.record(
                shared,
                partition,
                HeldReason::Operator,
                &queued.task.log_id,
                number - 1,
                None,
            )
            .await;
            if wait_or_wakeup(&released, &wakeup, OPERATOR_PAUSE_RECHECK).await {
                continue;
            }
            return None;
        }
        held_by_operator = held_by_operator && destination.paused_by_operator;
        last_attempt_ms = chrono::Utc::now().timestamp_millis();
        let result = match stored_body(shared, task).await {
            Ok(stored) => {
                let body = stored.as_deref().unwrap_or(&task.body);
                attempt::send(
                    &shared.client,
                    &shared.outbound,
                    &destination,
                    task,
                    body,
                    number,
                    shared.excerpt_bytes,
                )
                .await
            }
            Err(error) => AttemptResult::not_sent(error),
        };
        metrics()
            .attempts
            .with_label_values(&[if result.success { "success" } else { "failure" }])
            .inc();
        metrics()
            .attempt_seconds
            .with_label_values(NO_LABELS)
            .observe(result.duration.as_secs_f64());
        let environment = destination.environment.parse().unwrap_or(Environment::Production);
        let nth_try = number - previous_attempts;
        match shared.policy.decide(
            environment,
            task.test,
            nth_try,
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
                let environment = destination.environment.clone();
                finish(
                    shared,
                    partition,
                    queued,
                    environment,
                    Ending::Attempted {
                        number,
                        result,
                        status,
                    },
                    activity,
                );
                hold.release(shared, partition).await;
                return parked_offset;
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
                if environment == Environment::Production {
                    hold.last_error = result.error.clone();
                    let next_attempt_at_ms = chrono::Utc::now().timestamp_millis() + delay.as_millis() as i64;
                    hold.record(
                        shared,
                        partition,
                        HeldReason::Failing,
                        &task.log_id,
                        number,
                        Some(next_attempt_at_ms),
                    )
                    .await;
                }
                // The attempt's event is written in the background; the log stays queued.
                let events = shared.events.clone();
                let event_task = task.clone();
                let production = environment == Environment::Production;
                let environment = destination.environment.clone();
                shared.runtime.spawn(async move {
                    if let Err(error) = events.attempt(&event_task, &environment, number, &result, LogStatus::Queued).await {
                        tracing::warn!(%error, log_id = %event_task.log_id, "attempt event could not be written");
                    }
                    drop(activity);
                });
                if production {
                    enter_parked_mode(shared, partition, &mut queued).await;
                }
                if !sleep_until_retry(
                    shared,
                    &released,
                    &wakeup,
                    delay,
                    &destination_id,
                    &queued.task.log_id,
                    last_attempt_ms,
                )
                .await
                {
                    return None;
                }
                number += 1;
            }
        }
    }
}

/// The head an earlier owner stored for `task`'s destination, if it is this task.
async fn stored_head(shared: &Shared, task: &DeliveryTask) -> Option<HeldHead> {
    match shared.parking.held(&task.destination_id).await {
        Ok(stored) => stored.filter(|head| head.log_id == task.log_id),
        Err(error) => {
            // Not fatal: the head is attempted with fresh numbering, as before a crash.
            tracing::warn!(%error, destination_id = %task.destination_id, "cannot read the stored held head; its attempt count starts over");
            None
        }
    }
}

/// The lane's wake-up handle (a fresh one if the lane is gone, which nothing will wake).
fn lane_wakeup(partition: &PartitionState, destination_id: &str) -> Arc<tokio::sync::Notify> {
    partition
        .lanes
        .lock()
        .expect("lanes lock")
        .get(destination_id)
        .map(|lane| lane.wakeup.clone())
        .unwrap_or_default()
}

/// Whether a manual retry asked to attempt `log_id` now, after the attempt started at
/// `last_attempt_ms`.
fn retry_requested(destination: &Destination, log_id: &str, last_attempt_ms: i64) -> bool {
    destination.retry_log_id == log_id && destination.retry_requested_at_ms > last_attempt_ms
}

/// Whether an operator skipped `log_id`.
fn skip_requested(destination: &Destination, log_id: &str) -> bool {
    !destination.skip_log_id.is_empty() && destination.skip_log_id == log_id
}

/// The backoff before the next attempt of a held head: sleeps `delay`, but ends early when an
/// operator acts on the head (retry now, skip, pause). Operators' requests reach the owning
/// worker through the control service, which wakes the lane at once; a request stored by
/// another worker is seen at the next periodic look. False when the partition was released.
async fn sleep_until_retry(
    shared: &Shared,
    released: &CancellationToken,
    wakeup: &tokio::sync::Notify,
    delay: Duration,
    destination_id: &str,
    log_id: &str,
    last_attempt_ms: i64,
) -> bool {
    let deadline = tokio::time::Instant::now() + delay;
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return true;
        }
        if !wait_or_wakeup(released, wakeup, (deadline - now).min(OPERATOR_PAUSE_RECHECK)).await {
            return false;
        }
        if let Ok(destination) = shared.destinations.get(destination_id).await {
            if retry_requested(&destination, log_id, last_attempt_ms) {
                tracing::info!(
                    destination_id,
                    log_id,
                    "manual retry: attempting the held head now"
                );
                return true;
            }
            if skip_requested(&destination, log_id) || destination.paused_by_operator {
                return true;
            }
        }
    }
}

/// Sleeps for `delay`, ending early when an operator acts on the lane; false when the partition
/// was released first.
async fn wait_or_wakeup(released: &CancellationToken, wakeup: &tokio::sync::Notify, delay: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = wakeup.notified() => true,
        _ = released.cancelled() => false,
    }
}

/// How often a destination paused by an operator checks whether it was resumed (a resume sent
/// to the owning worker wakes it at once).
const OPERATOR_PAUSE_RECHECK: Duration = Duration::from_millis(500);

/// The state of a head that holds its queue: kept in the lane (the owner's live view for the
/// control service) and in `destination_queues` (what outlives this worker). A failure to store
/// it is logged, never fatal: it is a view, not the queue.
struct Hold {
    destination_id: String,
    /// Whether a `destination_queues` row was written (and must go when the head is final).
    stored: bool,
    since_ms: Option<i64>,
    last_error: String,
}

impl Hold {
    fn new(destination_id: &str) -> Self {
        Self {
            destination_id: destination_id.to_string(),
            stored: false,
            since_ms: None,
            last_error: String::new(),
        }
    }

    /// Continues from the state an earlier owner stored.
    fn resume(&mut self, partition: &PartitionState, stored: HeldHead) {
        self.stored = true;
        self.since_ms = Some(stored.since_ms);
        self.last_error = stored.last_error.clone();
        set_lane_head(partition, &self.destination_id, Some(stored));
    }

    async fn record(
        &mut self,
        shared: &Shared,
        partition: &PartitionState,
        reason: HeldReason,
        log_id: &str,
        attempts: u32,
        next_attempt_at_ms: Option<i64>,
    ) {
        let head = HeldHead {
            destination_id: self.destination_id.clone(),
            reason,
            since_ms: *self
                .since_ms
                .get_or_insert_with(|| chrono::Utc::now().timestamp_millis()),
            log_id: log_id.to_string(),
            attempts,
            next_attempt_at_ms,
            last_error: self.last_error.clone(),
        };
        let unchanged = partition
            .lanes
            .lock()
            .expect("lanes lock")
            .get(&self.destination_id)
            .and_then(|lane| lane.held.as_ref())
            == Some(&head);
        if unchanged && self.stored {
            return;
        }
        set_lane_head(partition, &self.destination_id, Some(head.clone()));
        match shared.parking.record_held(&head).await {
            Ok(()) => self.stored = true,
            Err(error) => {
                tracing::warn!(%error, destination_id = %head.destination_id, "could not record the held queue state")
            }
        }
    }

    /// The head is final: its queue is no longer held by it.
    async fn release(&mut self, shared: &Shared, partition: &PartitionState) {
        set_lane_head(partition, &self.destination_id, None);
        if !self.stored {
            return;
        }
        match shared.parking.clear_held(&self.destination_id).await {
            Ok(()) => self.stored = false,
            Err(error) => {
                tracing::warn!(%error, destination_id = %self.destination_id, "could not clear the held queue state")
            }
        }
    }
}

fn set_lane_head(partition: &PartitionState, destination_id: &str, head: Option<HeldHead>) {
    if let Some(lane) = partition
        .lanes
        .lock()
        .expect("lanes lock")
        .get_mut(destination_id)
    {
        lane.held = head;
    }
}

/// The partitions this worker owns and their lanes: what the control service reads (live queue
/// state) and wakes (an operator acted).
#[derive(Default)]
pub struct LaneDirectory {
    partitions: Mutex<HashMap<i32, Arc<PartitionState>>>,
}

/// A destination's lane as its owner sees it.
#[derive(Debug, Default)]
pub struct LaneView {
    /// Tasks waiting in memory (not yet parked), not counting the one being attempted.
    pub queued_in_memory: usize,
    /// The held head, if the queue is held.
    pub held: Option<HeldHead>,
}

impl LaneDirectory {
    fn insert(&self, partition: Arc<PartitionState>) {
        let mut partitions = self.partitions.lock().expect("directory lock");
        partitions.retain(|_, state| !state.tracker.is_released());
        partitions.insert(partition.tracker.partition(), partition);
    }

    fn owned(&self, partition: i32) -> Option<Arc<PartitionState>> {
        self.partitions
            .lock()
            .expect("directory lock")
            .get(&partition)
            .filter(|state| !state.tracker.is_released())
            .cloned()
    }

    /// The partitions this worker owns now, in order.
    pub fn owned_partitions(&self) -> Vec<i32> {
        let mut owned: Vec<i32> = self
            .partitions
            .lock()
            .expect("directory lock")
            .iter()
            .filter(|(_, state)| !state.tracker.is_released())
            .map(|(partition, _)| *partition)
            .collect();
        owned.sort_unstable();
        owned
    }

    /// The destination's lane; `None` when this worker does not own `partition`.
    pub fn view(&self, partition: i32, destination_id: &str) -> Option<LaneView> {
        let state = self.owned(partition)?;
        let waiting_to_park = state
            .to_park
            .lock()
            .expect("park lock")
            .iter()
            .filter(|queued| queued.task.destination_id == destination_id)
            .count();
        let lanes = state.lanes.lock().expect("lanes lock");
        Some(match lanes.get(destination_id) {
            Some(lane) => LaneView {
                queued_in_memory: lane.queue.len() + waiting_to_park,
                held: lane.held.clone(),
            },
            None => LaneView {
                queued_in_memory: waiting_to_park,
                held: None,
            },
        })
    }

    /// Ends the current wait of the destination's lane, so it looks at its settings again now.
    pub fn wake(&self, partition: i32, destination_id: &str) {
        if let Some(state) = self.owned(partition) {
            if let Some(lane) = state.lanes.lock().expect("lanes lock").get(destination_id) {
                lane.wakeup.notify_one();
            }
        }
    }
}

/// How a log became final.
enum Ending {
    /// After attempt `number`, with this status.
    Attempted {
        number: u32,
        result: AttemptResult,
        status: LogStatus,
    },
    /// An operator skipped it (cancelled) before attempt `sequence`.
    Skipped { sequence: u32 },
}

/// The log is final: write its event, and only once the broker has it, let the task go (its
/// offset finished, or its parked row removed). The lane moves on to the next task meanwhile.
fn finish(
    shared: &Arc<Shared>,
    partition: &Arc<PartitionState>,
    queued: Queued,
    environment: String,
    ending: Ending,
    activity: consumer::ActivityGuard,
) {
    let status = match &ending {
        Ending::Attempted { status, .. } => *status,
        Ending::Skipped { .. } => LogStatus::Cancelled,
    };
    metrics().finished.with_label_values(&[status.as_api_str()]).inc();
    partition
        .finished_logs
        .lock()
        .expect("finished logs lock")
        .insert(finished_key(&queued.task));
    let shared_for_task = shared.clone();
    let partition = partition.clone();
    shared.runtime.spawn(async move {
        let events = &shared_for_task.events;
        let written = match &ending {
            Ending::Attempted { number, result, status } => {
                events.attempt(&queued.task, &environment, *number, result, *status).await
            }
            Ending::Skipped { sequence } => events.skipped(&queued.task, &environment, *sequence).await,
        };
        match written {
            Ok(()) => complete(&partition, &queued),
            Err(error) => {
                // The task stays unfinished: after a restart it is attempted again and its
                // event written then. Commits of this partition wait until then.
                tracing::error!(%error, log_id = %queued.task.log_id, offset = queued.offset, "final log event could not be written; the partition's commits are held");
                abandon_parked(&partition, &queued);
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

/// The body of a task whose body was too large for Kafka (`body_stored`), read from Postgres;
/// `None` for an ordinary task (its body is in the record). An error fails the attempt, which is
/// then retried on the usual schedule (Postgres may be back by then).
async fn stored_body(shared: &Shared, task: &DeliveryTask) -> Result<Option<Vec<u8>>, String> {
    if !task.body_stored {
        return Ok(None);
    }
    match carrier_store::bodies::load(shared.parking.pool(), &task.message_id).await {
        Ok(Some(body)) => Ok(Some(body)),
        Ok(None) => {
            tracing::error!(log_id = %task.log_id, message_id = %task.message_id, "stored message body not found (purged past its retention?)");
            Err("the message body is no longer stored (past stored_body_retention_days)".into())
        }
        Err(error) => {
            tracing::warn!(log_id = %task.log_id, %error, "cannot read the stored message body; the attempt fails and is retried");
            Err(format!(
                "the message body could not be read from Postgres: {error}"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn backoff_sleeps_run_on_the_tokio_clock_and_end_when_the_partition_is_released() {
        let released = CancellationToken::new();
        let started = tokio::time::Instant::now();
        assert!(sleep_unless_released(&released, Duration::from_secs(120)).await);
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(120),
            "the full backoff, on the paused clock"
        );

        let started = tokio::time::Instant::now();
        let releaser = released.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            releaser.cancel();
        });
        assert!(
            !sleep_unless_released(&released, Duration::from_secs(120)).await,
            "released: no retry"
        );
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(5),
            "a revoke ends the wait at once"
        );
    }

    /// When a head that keeps failing is attempted, on the paused clock: the retry rules decide
    /// the delay and the lane's own wait sleeps it (jitter off, so the times are exact).
    async fn attempt_times(
        policy: &RetryPolicy,
        environment: Environment,
        test: bool,
        failures: u32,
        wakeup: &tokio::sync::Notify,
    ) -> (Vec<Duration>, Option<LogStatus>) {
        let released = CancellationToken::new();
        let started = tokio::time::Instant::now();
        let mut times = Vec::new();
        for attempt in 1.. {
            times.push(started.elapsed());
            let success = attempt > failures;
            match policy.decide(environment, test, attempt, success, 0.5) {
                Decision::Final(status) => return (times, Some(status)),
                Decision::RetryAfter(delay) => {
                    assert!(wait_or_wakeup(&released, wakeup, delay).await);
                }
            }
        }
        unreachable!()
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_head_is_retried_on_the_backoff_schedule_by_environment() {
        let policy = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        let idle = tokio::sync::Notify::new();
        let secs = |list: &[u64]| list.iter().map(|s| Duration::from_secs(*s)).collect::<Vec<_>>();

        // Production: 2 s, doubling, settling at the 120 s cap; delivered on the 10th attempt.
        let (times, status) = attempt_times(&policy, Environment::Production, false, 9, &idle).await;
        assert_eq!(
            times,
            secs(&[0, 2, 6, 14, 30, 62, 126, 246, 366, 486]),
            "2, 4, 8, 16, 32, 64 s, then 120 s apart"
        );
        assert_eq!(status, Some(LogStatus::Delivered));

        // Staging and development: one retry after 5 s, then failed (the queue moves on).
        for environment in [Environment::Staging, Environment::Development] {
            let (times, status) = attempt_times(&policy, environment, false, 5, &idle).await;
            assert_eq!(times, secs(&[0, 5]), "{environment:?}");
            assert_eq!(status, Some(LogStatus::Failed));
        }

        // Test messages: one attempt, in every environment.
        for environment in [Environment::Production, Environment::Staging] {
            let (times, status) = attempt_times(&policy, environment, true, 5, &idle).await;
            assert_eq!(times, secs(&[0]), "{environment:?}");
            assert_eq!(status, Some(LogStatus::Failed));
        }

        // An operator's "retry now" (the control service wakes the lane) ends the wait at once.
        let wakeup = std::sync::Arc::new(tokio::sync::Notify::new());
        let operator = wakeup.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            operator.notify_one();
        });
        let started = tokio::time::Instant::now();
        assert!(wait_or_wakeup(&CancellationToken::new(), &wakeup, Duration::from_secs(120)).await);
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }

    #[test]
    fn a_manual_retry_is_a_task_of_its_own_for_duplicate_detection() {
        let task = DeliveryTask {
            log_id: "log".into(),
            ..Default::default()
        };
        let retry = DeliveryTask {
            log_id: "log".into(),
            retry_id: "r1".into(),
            ..Default::default()
        };
        assert_eq!(finished_key(&task), "log");
        assert_ne!(finished_key(&task), finished_key(&retry));
        let mut recent = RecentLogs::default();
        for index in 0..=REMEMBERED_LOGS {
            recent.insert(format!("log-{index}"));
        }
        assert!(
            !recent.contains("log-0"),
            "the oldest is forgotten past the bound"
        );
        assert!(recent.contains(&format!("log-{REMEMBERED_LOGS}")));
    }
}
