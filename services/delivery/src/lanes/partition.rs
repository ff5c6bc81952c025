//! One assigned partition: its lanes, the tasks on their way to the parking store, the recently
//! finished logs (duplicate detection), and `process`, which sends each record of the partition
//! to the lane of its destination.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use carrier_kafka::consumer::{OffsetTracker, PartitionProcessor, Record};
use carrier_proto::records_v1::DeliveryTask;
use prost::Message;
use tokio::sync::{Notify, Semaphore};

use super::lane::{spawn_lane, Lane};
use super::metrics::{metrics, NO_LABELS};
use super::Shared;
use crate::parking::Position;
use crate::spans::TaskTrace;

/// How many finished logs each destination remembers, to skip a task written twice (the router
/// re-routes a message after a crash) instead of sending it again. A re-routed task follows its
/// original within the router's uncommitted window, so a short window per destination suffices;
/// a window per partition would let a busy destination push a quiet one's logs out.
pub(super) const REMEMBERED_LOGS_PER_DESTINATION: usize = 256;
/// Destinations whose finished logs a partition remembers; the least recently active are
/// forgotten first.
pub(super) const REMEMBERED_DESTINATIONS: usize = 4_096;

/// A task waiting in its lane, with where it came from.
pub(super) struct Queued {
    /// Where it was read (a live task: this owner's generation of the stream).
    pub(super) position: Position,
    pub(super) task: DeliveryTask,
    pub(super) origin: Origin,
    /// The trace its attempts belong to (`spans.rs`).
    pub(super) trace: TaskTrace,
}

impl Queued {
    /// Where the task is in `carrier.deliveries` (a parked task keeps the offset it was read at),
    /// for its log events.
    pub(super) fn task_position(&self, partition: &PartitionState) -> crate::events::TaskPosition {
        crate::events::TaskPosition {
            partition: partition.tracker.partition(),
            offset: self.position.offset,
        }
    }
}

/// Where a task's completion is recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Origin {
    /// Read from the partition and not parked: finishing it lets its offset be committed.
    Live,
    /// Stored in the parking store (its offset is already finished): finishing it removes it.
    Parked,
}

/// The memory a partition's lanes may use (invariant 5).
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Live tasks one destination may hold in memory; past it, its new tasks are parked.
    pub(super) queued_per_destination: usize,
    /// Unfinished records of the partition past which the destination with the longest queue
    /// parks its new tasks, so that no destination makes the partition's fetching pause.
    pub(super) partition_pressure: usize,
    /// Final log events awaiting the broker's acknowledgement (each holds its task).
    pub(super) unacknowledged_events: usize,
}

pub(super) struct PartitionState {
    pub(super) tracker: Arc<OffsetTracker>,
    /// The lanes and the tasks on their way to the parking store, under one lock: whether a task
    /// is queued or parked, and whether a lane may leave parked mode, are decided on one state.
    pub(super) book: Mutex<Book>,
    pub(super) finished_logs: Mutex<RecentLogs>,
    /// The logs of the tasks just below this assignment's start (`seed_finished_logs`).
    pub(super) below_start: Mutex<BelowStart>,
    pub(super) park_wakeup: Notify,
    /// Permits for final log events not yet acknowledged: a lane waits for one before it lets a
    /// finished task go, so a broker outage stops the lanes instead of filling memory.
    pub(super) unacknowledged: Arc<Semaphore>,
    pub(super) limits: Limits,
}

/// What a partition's lanes share (see [`PartitionState::book`]).
#[derive(Default)]
pub(super) struct Book {
    /// Destination ID → its lane. A destination has an entry exactly while a lane task runs for
    /// it; the lane task removes the entry when it finds nothing left to do.
    pub(super) lanes: HashMap<String, Lane>,
    /// Tasks waiting to be written to the parking store by the partition's parker, in the order
    /// they were handed over (a destination's tasks in offset order).
    pub(super) to_park: Vec<Queued>,
}

impl Book {
    /// Hands a task to the parker. Its lane counts it until it is written, so the lane cannot
    /// leave parked mode, nor read past it, before it is in the store.
    pub(super) fn park(&mut self, queued: Queued) {
        if let Some(lane) = self.lanes.get_mut(&queued.task.destination_id) {
            lane.parking += 1;
        }
        self.to_park.push(queued);
    }

    /// Tasks of `destination_id` waiting for the parker.
    pub(super) fn waiting_to_park(&self, destination_id: &str) -> usize {
        self.to_park
            .iter()
            .filter(|queued| queued.task.destination_id == destination_id)
            .count()
    }

    /// The lane with the longest live queue parks its new tasks from now on (the partition is
    /// under pressure). Its queued tasks stay: they are older than anything it will park.
    fn overflow_longest(&mut self) -> Option<String> {
        let (destination_id, lane) = self
            .lanes
            .iter_mut()
            .filter(|(_, lane)| !lane.parked && lane.queue.len() > 1)
            .max_by_key(|(_, lane)| lane.queue.len())?;
        lane.parked = true;
        Some(destination_id.clone())
    }
}

impl PartitionState {
    pub(super) fn new(tracker: Arc<OffsetTracker>, limits: Limits) -> Self {
        Self {
            tracker,
            book: Mutex::new(Book::default()),
            finished_logs: Mutex::new(RecentLogs::default()),
            below_start: Mutex::new(BelowStart::default()),
            park_wakeup: Notify::new(),
            unacknowledged: Arc::new(Semaphore::new(limits.unacknowledged_events)),
            limits,
        }
    }

    pub(super) fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().expect("lanes lock")
    }
}

pub(super) struct PartitionLanes {
    pub(super) shared: Arc<Shared>,
    pub(super) partition: Arc<PartitionState>,
    /// False when the partition could not be set up (see `assign`): records are left
    /// unfinished, so their offsets are never committed here.
    pub(super) dispatching: bool,
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
        // The CONSUMER span ends once the task is in its lane; its attempts continue its trace.
        let span = carrier_kafka::spans::process_span(&record, &self.shared.topic, &self.shared.group);
        span.record("carrier.log_id", task.log_id.as_str());
        span.record("carrier.message_id", task.message_id.as_str());
        let trace = TaskTrace {
            context: carrier_telemetry::trace::context_of(&span),
            written_at_ms: record
                .timestamp
                .unwrap_or_else(|| chrono::Utc::now().timestamp_millis()),
            last_attempt: None,
        };
        let _entered = span.enter();
        let queued = Queued {
            position: Position {
                generation: self.partition.tracker.generation(),
                offset: record.offset,
            },
            task,
            origin: Origin::Live,
            trace,
        };
        let limits = self.partition.limits;
        let mut book = self.partition.book();
        let mut overflowing = None;
        let mut new_lane = false;
        match book.lanes.get_mut(&destination_id) {
            Some(lane) if lane.parked => {
                book.park(queued);
                self.partition.park_wakeup.notify_one();
            }
            Some(lane) => {
                lane.queue.push_back(queued);
                if lane.queue.len() > limits.queued_per_destination {
                    lane.parked = true;
                    overflowing = Some(destination_id.clone());
                }
            }
            None => {
                book.lanes.insert(destination_id.clone(), Lane::live(queued));
                new_lane = true;
            }
        }
        if overflowing.is_none() && self.partition.tracker.pending() >= limits.partition_pressure {
            overflowing = book.overflow_longest();
        }
        drop(book);
        if let Some(overflowing) = overflowing {
            metrics().overflows.with_label_values(NO_LABELS).inc();
            tracing::info!(
                destination_id = %overflowing,
                partition = self.partition.tracker.partition(),
                "destination's backlog is over its memory share; its new tasks are parked"
            );
        }
        if new_lane {
            spawn_lane(&self.shared, &self.partition, destination_id);
        }
    }
}

/// The logs of the tasks just below an assignment's start, all of them (at most
/// `SEEDED_TASKS`, not a window per destination: a copy of the oldest must be recognised too).
/// They are final as far as the stream goes, but a parked task lies below the start too and is
/// not delivered yet: only tasks this owner read from the stream (at or after `start`, live or
/// parked by it, such as the router's copies) are checked against them.
#[derive(Default)]
pub(super) struct BelowStart {
    pub(super) start: Option<Position>,
    pub(super) logs: HashSet<String>,
}

impl BelowStart {
    /// Whether `queued` is a copy of a task below the start.
    pub(super) fn has_copy(&self, queued: &Queued, key: &str) -> bool {
        self.start.is_some_and(|start| queued.position >= start) && self.logs.contains(key)
    }
}

/// What identifies a finished task for duplicate detection: its log, and for a manual retry
/// also the retry (a log may be retried, and each retry is a task of its own).
pub(super) fn finished_key(task: &DeliveryTask) -> String {
    if task.retry_id.is_empty() {
        task.log_id.clone()
    } else {
        format!("{}/{}", task.log_id, task.retry_id)
    }
}

/// Records that a task needs nothing more (a duplicate skipped): its offset is finished, or its
/// parked row removed.
pub(super) fn complete(partition: &PartitionState, queued: &Queued) {
    match queued.origin {
        Origin::Live => partition.tracker.finish(queued.position.offset),
        Origin::Parked => {
            // The lane removes final rows in batches (before it reads the next ones, and before
            // it leaves parked mode); a lane that is gone (partition released) removes nothing:
            // the row stays, and the next owner skips or redoes it.
            if let Some(lane) = partition.book().lanes.get_mut(&queued.task.destination_id) {
                lane.parked_unfinished = lane.parked_unfinished.saturating_sub(1);
                lane.parked_done.push(queued.position);
            }
        }
    }
}

/// The logs each destination finished recently (a bounded window per destination, for a bounded
/// number of destinations), per assignment. Not kept across assignments: a new owner redoes the
/// partition from its stored offset, and a window that remembered some of those tasks (from an
/// earlier assignment, the oldest already forgotten) would skip all but the forgotten ones and
/// send those alone, after later ones (the fault matrix's postgres-cut: `... 1269 1103 1271`).
/// What lies below the start is covered by `below_start` instead.
#[derive(Default)]
pub(super) struct RecentLogs {
    by_destination: HashMap<String, DestinationLogs>,
    /// Bumped on every insert: the least recently active destination is forgotten first.
    clock: u64,
}

#[derive(Default)]
struct DestinationLogs {
    last_active: u64,
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl RecentLogs {
    pub(super) fn insert(&mut self, destination_id: &str, key: String) {
        self.clock += 1;
        if !self.by_destination.contains_key(destination_id)
            && self.by_destination.len() >= REMEMBERED_DESTINATIONS
        {
            self.forget_least_active();
        }
        let logs = self.by_destination.entry(destination_id.to_string()).or_default();
        logs.last_active = self.clock;
        if logs.set.insert(key.clone()) {
            logs.order.push_back(key);
            if logs.order.len() > REMEMBERED_LOGS_PER_DESTINATION {
                if let Some(oldest) = logs.order.pop_front() {
                    logs.set.remove(&oldest);
                }
            }
        }
    }

    pub(super) fn contains(&self, destination_id: &str, key: &str) -> bool {
        self.by_destination
            .get(destination_id)
            .is_some_and(|logs| logs.set.contains(key))
    }

    /// Forgets the least recently active tenth of the destinations (one scan for many inserts).
    fn forget_least_active(&mut self) {
        let mut activity: Vec<u64> = self
            .by_destination
            .values()
            .map(|logs| logs.last_active)
            .collect();
        let cut = (activity.len() / 10).max(1);
        activity.select_nth_unstable(cut - 1);
        let threshold = activity[cut - 1];
        self.by_destination.retain(|_, logs| logs.last_active > threshold);
    }
}
