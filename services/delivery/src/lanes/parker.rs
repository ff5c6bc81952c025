//! Parking: a held destination's backlog moves to the parking store (Postgres) and back.
//! Entering parked mode, the partition's batched writer (`run_parker`), the removal of final
//! parked rows, and leaving parked mode once the store has nothing left for the destination.

use std::sync::Arc;
use std::time::Duration;

use super::hold::sleep_unless_released;
use super::metrics::{metrics, NO_LABELS};
use super::partition::{Origin, PartitionState, Queued};
use super::Shared;
use crate::parking::ToPark;
use tracing::Instrument as _;

/// Writes parked tasks to Postgres in batches; only then are their offsets finished
/// (invariant 4: parked is durable before it is committed).
/// The parking store's row of `queued`, keeping its trace context with the task.
fn to_park(queued: &Queued) -> ToPark {
    let mut task = queued.task.clone();
    queued.trace.stamp(&mut task);
    ToPark {
        position: queued.position,
        task,
    }
}

pub(super) async fn run_parker(shared: Arc<Shared>, partition: Arc<PartitionState>) {
    let released = partition.tracker.released_token().clone();
    loop {
        tokio::select! {
            _ = partition.park_wakeup.notified() => {}
            _ = released.cancelled() => return,
        }
        loop {
            // Each task is already counted in its lane's `parking` (since it was handed over).
            let batch: Vec<Queued> = std::mem::take(&mut partition.book().to_park);
            if batch.is_empty() {
                break;
            }
            let _activity = partition.tracker.activity();
            let rows: Vec<ToPark> = batch.iter().map(to_park).collect();
            let span = crate::spans::park_span(partition.tracker.partition(), rows.len());
            let mut failures = 0u32;
            while let Err(error) = shared
                .parking
                .park(partition.tracker.fence(), partition.tracker.partition(), &rows)
                .instrument(span.clone())
                .await
            {
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
                let mut book = partition.book();
                for queued in &batch {
                    if let Some(lane) = book.lanes.get_mut(&queued.task.destination_id) {
                        lane.park_writes += 1;
                        lane.parking = lane.parking.saturating_sub(1);
                    }
                }
            }
            for queued in &batch {
                if queued.origin == Origin::Live {
                    partition.tracker.finish(queued.position.offset);
                }
            }
        }
    }
}

/// Parked tasks a flowing lane reads from the store per query (a held or starting lane reads
/// one), and the most task bytes one read may bring into memory (at least one row).
pub(super) const PARKED_BATCH: i64 = 100;
pub(super) const PARKED_BATCH_BYTES: i64 = 1024 * 1024;

/// Back to live mode, if nothing was parked for the destination since the lane found the store
/// empty and nothing is waiting to be parked. The check and the switch happen under the lanes
/// lock, which `process` also takes (and under which it hands tasks to the parker): a new task
/// either was handed over before the switch (and is counted in `parking`) or arrives after it and
/// joins the live queue.
pub(super) fn leave_parked_mode(partition: &PartitionState, destination_id: &str, writes: u64) -> bool {
    let mut book = partition.book();
    match book.lanes.get_mut(destination_id) {
        Some(lane)
            if lane.park_writes == writes
                && lane.parking == 0
                && lane.parked_unfinished == 0
                && lane.parked_done.is_empty()
                && lane.queue.is_empty() =>
        {
            lane.parked = false;
            true
        }
        _ => false,
    }
}

/// A parked task whose final event could not be written: its row stays (a restart redoes it).
pub(super) fn abandon_parked(partition: &PartitionState, queued: &Queued) {
    if queued.origin == Origin::Parked {
        if let Some(lane) = partition.book().lanes.get_mut(&queued.task.destination_id) {
            lane.parked_unfinished = lane.parked_unfinished.saturating_sub(1);
        }
    }
}

/// A flowing lane removes the rows of final parked tasks once this many have gathered (and
/// before every read): a worker killed meanwhile leaves at most about this many delivered rows
/// behind, which the next owner sends again (duplicates with their original `webhook-id`). With
/// removals only before each read of 100 rows, one kill -9 left up to 100 (the fault matrix's
/// kill-delivery run: 920 duplicates at its mostly-parked destination over 10 kills).
pub(super) const PARKED_REMOVE_EVERY: usize = 10;

/// Removes the rows of the lane's final parked tasks in one statement.
pub(super) async fn remove_done_rows(shared: &Shared, partition: &PartitionState, destination_id: &str) {
    let done = match partition.book().lanes.get_mut(destination_id) {
        Some(lane) => std::mem::take(&mut lane.parked_done),
        None => return,
    };
    if done.is_empty() {
        return;
    }
    if let Err(error) = shared
        .parking
        .remove_many(partition.tracker.fence(), destination_id, &done)
        .await
    {
        tracing::warn!(%error, destination_id, rows = done.len(), "final parked tasks could not be removed yet; retrying");
        if let Some(lane) = partition.book().lanes.get_mut(destination_id) {
            lane.parked_done.extend(done);
        }
    }
}

/// Moves a live destination whose head is failing (or paused) into parked mode: the head is
/// written to the parking store at once (so its offset can be committed while it keeps failing),
/// and every task queued behind it follows through the partition's parker, so the partition's
/// commits move on and memory stays bounded however long the destination stays down. The head
/// stays this lane's head: the lane goes on retrying it and removes its row once it is final.
///
/// True once the head is parked (at once when it came from the store). False when the parking
/// store cannot take it now: the caller tries again at its next step, so a pause or a failure
/// during a Postgres outage is parked once Postgres is back.
pub(super) async fn enter_parked_mode(
    shared: &Arc<Shared>,
    partition: &Arc<PartitionState>,
    head: &mut Queued,
) -> bool {
    if head.origin == Origin::Parked {
        return true;
    }
    let row = to_park(head);
    let span = crate::spans::park_span(partition.tracker.partition(), 1);
    if let Err(error) = shared
        .parking
        .park(
            partition.tracker.fence(),
            partition.tracker.partition(),
            std::slice::from_ref(&row),
        )
        .instrument(span)
        .await
    {
        tracing::error!(%error, destination_id = %head.task.destination_id, "cannot park a held destination yet; its backlog stays in memory and parking is tried again");
        return false;
    }
    partition.tracker.finish(head.position.offset);
    head.origin = Origin::Parked;
    let mut book = partition.book();
    let Some(lane) = book.lanes.get_mut(&head.task.destination_id) else {
        return true;
    };
    lane.parked = true;
    lane.parked_unfinished += 1;
    // Handed to the parker under the same lock that set parked mode: a newer task arriving now
    // is queued for the store behind these, never ahead of them.
    let queued: Vec<Queued> = lane.queue.drain(..).collect();
    let backlog = queued.len() + 1;
    for queued in queued {
        book.park(queued);
    }
    drop(book);
    partition.park_wakeup.notify_one();
    tracing::warn!(destination_id = %head.task.destination_id, backlog, "destination held; parking its backlog");
    metrics().parked.with_label_values(NO_LABELS).inc();
    true
}

/// The head of a parked backlog is held (failing or paused): the rows read after it go back to
/// the store (memory stays at the head) and are read again once it is final.
pub(super) fn drop_prefetched(partition: &PartitionState, head: &Queued) {
    if head.origin != Origin::Parked {
        return;
    }
    if let Some(lane) = partition.book().lanes.get_mut(&head.task.destination_id) {
        if !lane.prefetched.is_empty() {
            lane.parked_unfinished = lane.parked_unfinished.saturating_sub(lane.prefetched.len());
            lane.prefetched.clear();
            lane.cursor = head.position;
        }
    }
}
