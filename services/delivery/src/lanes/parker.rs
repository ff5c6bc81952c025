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

/// Writes parked tasks to Postgres in batches; only then are their offsets finished
/// (invariant 4: parked is durable before it is committed).
pub(super) async fn run_parker(shared: Arc<Shared>, partition: Arc<PartitionState>) {
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

/// Parked tasks read from the store per query.
pub(super) const PARKED_BATCH: i64 = 100;

/// Back to live mode, if nothing was parked for the destination since the lane found the store
/// empty and nothing is waiting to be parked. The check and the switch happen under the lanes
/// lock, which `process` also takes: a new task either was parked before the switch (and the
/// generation moved) or arrives after it and joins the live queue.
pub(super) fn leave_parked_mode(partition: &PartitionState, destination_id: &str, generation: u64) -> bool {
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

/// A parked task whose final event could not be written: its row stays (a restart redoes it).
pub(super) fn abandon_parked(partition: &PartitionState, queued: &Queued) {
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
pub(super) async fn remove_done_rows(shared: &Shared, partition: &PartitionState, destination_id: &str) {
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
pub(super) async fn enter_parked_mode(
    shared: &Arc<Shared>,
    partition: &Arc<PartitionState>,
    head: &mut Queued,
) {
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
