//! One destination's line within a partition, and the task (`run_lane`) that works through it:
//! live tasks from memory, or in parked mode the destination's backlog from the parking store.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use super::deliver::deliver;
use super::hold::sleep_unless_released;
use super::metrics::{metrics, NO_LABELS};
use super::parker::{
    leave_parked_mode, remove_done_rows, PARKED_BATCH, PARKED_BATCH_BYTES, PARKED_REMOVE_EVERY,
};
use super::partition::{complete, finished_key, Origin, PartitionState, Queued};
use super::Shared;
use crate::parking::{HeldHead, Position, ToPark};

/// One destination's line within a partition.
pub(super) struct Lane {
    /// Live tasks waiting in memory, oldest first. In parked mode it only drains (new tasks of
    /// the destination are parked), and it is older than every row the lane will read.
    pub(super) queue: VecDeque<Queued>,
    /// Parked mode: the destination's line continues in the parking store; new tasks of this
    /// destination are parked too, until the store has none left for it.
    pub(super) parked: bool,
    /// Bumped each time tasks of this destination are written to the parking store, so the
    /// lane can tell that none arrived while it found the store empty.
    pub(super) park_writes: u64,
    /// Tasks of this destination handed to the parker and not yet written.
    pub(super) parking: usize,
    /// Rows read from the parking store and not started yet (a bounded batch; dropped while the
    /// head is held, and read again later).
    pub(super) prefetched: VecDeque<Queued>,
    /// The position of the last row taken from the parking store.
    pub(super) cursor: Position,
    /// Whether the last task this lane finished needed a single attempt: the lane then reads
    /// parked rows in batches; after a failure, or at the start, one at a time.
    pub(super) flowing: bool,
    /// Parked tasks this lane took to deliver whose outcome is not recorded yet.
    pub(super) parked_unfinished: usize,
    /// Positions of parked tasks that are final: their rows are removed in one statement.
    pub(super) parked_done: Vec<Position>,
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
            park_writes: 0,
            parking: 0,
            prefetched: VecDeque::new(),
            cursor: Position::START,
            flowing: false,
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

    /// Tasks of this lane held in memory (queued and prefetched), for the operator's view.
    pub(super) fn in_memory(&self) -> usize {
        self.queue.len() + self.prefetched.len()
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
        writes: u64,
        cursor: Position,
        rows: i64,
    },
    Done,
}

/// Whether a parked row is in its final place in the destination's order. Rows of an earlier
/// generation of the partition's stream always are (that stream came first, and is over).
/// Rows of this owner's generation once the stream has passed them: a previous owner's rows can
/// be joined by tasks of lower offsets that this owner reads again (they were not committed).
pub(super) fn in_final_order(row: Position, generation: i64, seen_below: Option<i64>) -> bool {
    row.generation < generation
        || (row.generation == generation && seen_below.is_some_and(|below| row.offset < below))
}

/// How long a lane may wait for the partition's stream to reach a parked row before it says so.
const STREAM_WAIT_WARNING: Duration = Duration::from_secs(60);

/// Works through one destination's tasks in offset order, one at a time, until none is left
/// or the partition is released: first what it holds in memory (prefetched rows, then live
/// tasks), then, in parked mode, the destination's backlog in the parking store.
pub(super) async fn run_lane(shared: Arc<Shared>, partition: Arc<PartitionState>, destination_id: String) {
    // The first parked task this lane delivers may be a head an earlier owner was retrying.
    let mut first_parked = true;
    // Since when the lane waits for the stream to reach its next parked row (logged once if
    // that takes long: the row may belong to an earlier incarnation of the topic).
    let mut waiting_for_stream: Option<(std::time::Instant, bool)> = None;
    loop {
        if partition.tracker.is_released() {
            break;
        }
        let next = {
            let mut book = partition.book();
            match book.lanes.get_mut(&destination_id) {
                None => Next::Done,
                Some(lane) => {
                    if let Some(queued) = lane.prefetched.pop_front().or_else(|| lane.queue.pop_front()) {
                        Next::Deliver(Box::new(queued))
                    } else if lane.parked {
                        Next::ReadParked {
                            writes: lane.park_writes,
                            cursor: lane.cursor,
                            rows: if lane.flowing { PARKED_BATCH } else { 1 },
                        }
                    } else {
                        book.lanes.remove(&destination_id);
                        Next::Done
                    }
                }
            }
        };
        match next {
            Next::Done => break,
            Next::ReadParked { writes, cursor, rows } => {
                remove_done_rows(&shared, &partition, &destination_id).await;
                // Rows a previous owner parked can be joined by tasks of lower offsets that this
                // owner reads again from Kafka (they were not committed) and parks behind them:
                // only rows below what this owner has read, with no write of its own pending,
                // are in their final order. (Read in this order: a task handed out after
                // `seen_below` is above it; one handed out before is counted in `parking`.)
                let seen_below = partition.tracker.seen_below();
                let stream_generation = partition.tracker.generation();
                let settled = |row: &ToPark| in_final_order(row.position, stream_generation, seen_below);
                let writes_pending = partition
                    .book()
                    .lanes
                    .get(&destination_id)
                    .is_some_and(|lane| lane.parking > 0);
                if writes_pending {
                    if !sleep_unless_released(partition.tracker.released_token(), Duration::from_millis(20))
                        .await
                    {
                        break;
                    }
                    continue;
                }
                match shared
                    .parking
                    .next(&destination_id, cursor, rows, PARKED_BATCH_BYTES)
                    .await
                {
                    Ok(tasks) if !tasks.is_empty() && !settled(&tasks[0]) => {
                        // The stream has not reached this row yet; what precedes it may still come.
                        let (since, logged) =
                            waiting_for_stream.get_or_insert((std::time::Instant::now(), false));
                        if !*logged && since.elapsed() > STREAM_WAIT_WARNING {
                            *logged = true;
                            tracing::warn!(
                                destination_id,
                                partition = partition.tracker.partition(),
                                parked_offset = tasks[0].position.offset,
                                parked_generation = tasks[0].position.generation,
                                stream_generation,
                                read_below = ?seen_below,
                                "a parked task lies beyond what the partition's stream has reached; the destination waits for it"
                            );
                        }
                        if !sleep_unless_released(
                            partition.tracker.released_token(),
                            Duration::from_millis(20),
                        )
                        .await
                        {
                            break;
                        }
                    }
                    Ok(tasks) if tasks.is_empty() => {
                        if leave_parked_mode(&partition, &destination_id, writes) {
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
                    Ok(mut tasks) => {
                        waiting_for_stream = None;
                        tasks.retain(settled);
                        let mut book = partition.book();
                        if let Some(lane) = book.lanes.get_mut(&destination_id) {
                            lane.parked_unfinished += tasks.len();
                            for parked in tasks {
                                lane.cursor = parked.position;
                                lane.prefetched.push_back(Queued {
                                    position: parked.position,
                                    trace: crate::spans::TaskTrace::of_parked(&parked.task),
                                    task: parked.task,
                                    origin: Origin::Parked,
                                });
                            }
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
                let key = finished_key(&queued.task);
                let finished = partition
                    .finished_logs
                    .lock()
                    .expect("finished logs lock")
                    .contains(&destination_id, &key)
                    || partition
                        .below_start
                        .lock()
                        .expect("below start lock")
                        .has_copy(&queued, &key);
                if finished {
                    tracing::debug!(log_id = %queued.task.log_id, "duplicate task of a finished log skipped");
                    complete(&partition, &queued);
                    continue;
                }
                let resume_held = first_parked && queued.origin == Origin::Parked;
                first_parked = first_parked && !resume_held;
                if let Some(ended) = deliver(&shared, &partition, queued, resume_held).await {
                    let remove_now = {
                        let mut book = partition.book();
                        book.lanes.get_mut(&destination_id).is_some_and(|lane| {
                            lane.flowing = ended.first_try;
                            // A task parked while it was the head is past the cursor now.
                            if let Some(position) = ended.parked_at {
                                lane.cursor = lane.cursor.max(position);
                            }
                            lane.parked_done.len() >= PARKED_REMOVE_EVERY
                        })
                    };
                    if remove_now {
                        remove_done_rows(&shared, &partition, &destination_id).await;
                    }
                }
            }
        }
    }
    metrics().lanes.with_label_values(NO_LABELS).dec();
}
