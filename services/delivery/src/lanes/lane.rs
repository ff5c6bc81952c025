//! One destination's line within a partition, and the task (`run_lane`) that works through it:
//! live tasks from memory, or in parked mode the destination's backlog from the parking store.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use super::deliver::deliver;
use super::hold::sleep_unless_released;
use super::metrics::{metrics, NO_LABELS};
use super::parker::{leave_parked_mode, remove_done_rows, PARKED_BATCH};
use super::partition::{complete, finished_key, Origin, PartitionState, Queued};
use super::Shared;
use crate::parking::HeldHead;

/// One destination's line within a partition.
pub(super) struct Lane {
    /// Live tasks waiting in memory, oldest first (empty in parked mode).
    pub(super) queue: VecDeque<Queued>,
    /// Parked mode: the destination's line continues in the parking store; new tasks of this
    /// destination are parked too, until the store has none left for it.
    pub(super) parked: bool,
    /// Bumped each time tasks of this destination are written to the parking store, so the
    /// lane can tell that none arrived while it found the store empty.
    pub(super) park_generation: u64,
    /// Tasks of this destination taken by the parker and not yet written.
    pub(super) parking_in_flight: usize,
    /// Parked tasks this lane took to deliver whose outcome is not recorded yet.
    pub(super) parked_unfinished: usize,
    /// Offsets of parked tasks that are final: their rows are removed in one statement.
    pub(super) parked_done: Vec<i64>,
    /// The held head, while one is (the live view operators get through the control service).
    pub(super) held: Option<HeldHead>,
    /// Ends the lane's current wait (backoff, operator pause) at once: an operator acted.
    pub(super) wakeup: Arc<tokio::sync::Notify>,
}

impl Lane {
    pub(super) fn new(queue: VecDeque<Queued>, parked: bool) -> Self {
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

    pub(super) fn live(first: Queued) -> Self {
        Self::new(VecDeque::from([first]), false)
    }

    pub(super) fn parked() -> Self {
        Self::new(VecDeque::new(), true)
    }
}

pub(super) fn spawn_lane(shared: &Arc<Shared>, partition: &Arc<PartitionState>, destination_id: String) {
    metrics().lanes.with_label_values(NO_LABELS).inc();
    shared
        .runtime
        .spawn(run_lane(shared.clone(), partition.clone(), destination_id));
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
pub(super) async fn run_lane(shared: Arc<Shared>, partition: Arc<PartitionState>, destination_id: String) {
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
