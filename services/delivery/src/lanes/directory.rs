//! The lane directory: the partitions this worker owns and their lanes, as the control service
//! reads them (live queue state) and wakes them (an operator acted).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::partition::PartitionState;
use crate::parking::{HeldHead, HeldReason};

/// The partitions this worker owns and their lanes: what the control service reads (live queue
/// state) and wakes (an operator acted).
#[derive(Default)]
pub struct LaneDirectory {
    partitions: Mutex<HashMap<i32, Arc<PartitionState>>>,
}

/// What the owned lanes hold now, for the gauges (`metrics::sample_every`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sample {
    pub failing: HeldCount,
    pub by_operator: HeldCount,
    /// (partition, tasks in memory: queued, prefetched and waiting for the parker), in order.
    pub depth: Vec<(i32, usize)>,
}

/// Held heads of one reason.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HeldCount {
    pub count: i64,
    /// When the oldest of them became held (ms since the epoch); `None` when none is.
    pub oldest_since_ms: Option<i64>,
}

impl HeldCount {
    fn add(&mut self, since_ms: i64) {
        self.count += 1;
        self.oldest_since_ms = Some(
            self.oldest_since_ms
                .map_or(since_ms, |oldest| oldest.min(since_ms)),
        );
    }
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
    pub(super) fn insert(&self, partition: Arc<PartitionState>) {
        let mut partitions = self.partitions.lock().expect("directory lock");
        partitions.retain(|_, state| !state.tracker.is_released());
        partitions.insert(partition.tracker.partition(), partition);
    }

    pub(super) fn owned(&self, partition: i32) -> Option<Arc<PartitionState>> {
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
        let book = state.book();
        let waiting_to_park = book.waiting_to_park(destination_id);
        Some(match book.lanes.get(destination_id) {
            Some(lane) => LaneView {
                queued_in_memory: lane.in_memory() + waiting_to_park,
                held: lane.held.clone(),
            },
            None => LaneView {
                queued_in_memory: waiting_to_park,
                held: None,
            },
        })
    }

    /// Counts held heads and queued tasks over the owned partitions (one lock at a time).
    pub fn sample(&self) -> Sample {
        let owned: Vec<Arc<PartitionState>> = {
            let partitions = self.partitions.lock().expect("directory lock");
            partitions
                .values()
                .filter(|state| !state.tracker.is_released())
                .cloned()
                .collect()
        };
        let mut sample = Sample::default();
        for state in owned {
            let book = state.book();
            let mut depth = book.to_park.len();
            for lane in book.lanes.values() {
                depth += lane.in_memory();
                let Some(held) = &lane.held else { continue };
                match held.reason {
                    HeldReason::Failing => sample.failing.add(held.since_ms),
                    HeldReason::Operator => sample.by_operator.add(held.since_ms),
                }
            }
            sample.depth.push((state.tracker.partition(), depth));
        }
        sample.depth.sort_unstable();
        sample
    }

    /// Ends the current wait of the destination's lane, so it looks at its settings again now.
    pub fn wake(&self, partition: i32, destination_id: &str) {
        if let Some(state) = self.owned(partition) {
            if let Some(lane) = state.book().lanes.get(destination_id) {
                lane.wakeup.notify_one();
            }
        }
    }
}
