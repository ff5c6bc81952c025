//! One assigned partition: its lanes, the tasks waiting to be parked, the recently finished logs
//! (duplicate detection), and `process`, which sends each record of the partition to the lane of
//! its destination.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use carrier_kafka::consumer::{OffsetTracker, PartitionProcessor, Record};
use carrier_proto::records_v1::DeliveryTask;
use prost::Message;

use super::lane::{spawn_lane, Lane};
use super::Shared;

/// How many finished log IDs a partition remembers, to skip a task written twice (the router
/// re-routes a message after a crash) instead of sending it again.
pub(super) const REMEMBERED_LOGS: usize = 10_000;

/// A task waiting in its lane, with where it came from.
pub(super) struct Queued {
    pub(super) offset: i64,
    pub(super) task: DeliveryTask,
    pub(super) origin: Origin,
}

/// Where a task's completion is recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Origin {
    /// Read from the partition and not parked: finishing it lets its offset be committed.
    Live,
    /// Stored in the parking store (its offset is already finished): finishing it removes it.
    Parked,
}

pub(super) struct PartitionState {
    pub(super) tracker: Arc<OffsetTracker>,
    /// Destination ID → its lane. A destination has an entry exactly while a lane task runs for
    /// it; the lane task removes the entry when it finds nothing left to do.
    pub(super) lanes: Mutex<HashMap<String, Lane>>,
    pub(super) finished_logs: Mutex<RecentLogs>,
    /// Tasks waiting to be written to the parking store by this partition's parker.
    pub(super) to_park: Mutex<Vec<Queued>>,
    pub(super) park_wakeup: tokio::sync::Notify,
}

impl PartitionState {
    pub(super) fn park(&self, queued: Queued) {
        self.to_park.lock().expect("park lock").push(queued);
        self.park_wakeup.notify_one();
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

/// A bounded set of recently finished log IDs (oldest forgotten first).
#[derive(Default)]
pub(super) struct RecentLogs {
    pub(super) order: VecDeque<String>,
    pub(super) set: HashSet<String>,
}

impl RecentLogs {
    pub(super) fn insert(&mut self, log_id: String) {
        if self.set.insert(log_id.clone()) {
            self.order.push_back(log_id);
            if self.order.len() > REMEMBERED_LOGS {
                if let Some(oldest) = self.order.pop_front() {
                    self.set.remove(&oldest);
                }
            }
        }
    }

    pub(super) fn contains(&self, log_id: &str) -> bool {
        self.set.contains(log_id)
    }
}
