//! Holds and waits: the state of a head that holds its queue (what operators see, kept in the
//! lane and in `destination_queues`), the backoff wait that an operator's action ends early, and
//! the sleeps that end when the partition is released.

use std::sync::Arc;
use std::time::Duration;

use carrier_proto::records_v1::DeliveryTask;
use tokio_util::sync::CancellationToken;

use super::deliver::{retry_requested, skip_requested};
use super::partition::PartitionState;
use super::Shared;
use crate::parking::{HeldHead, HeldReason};

/// The lane's wake-up handle (a fresh one if the lane is gone, which nothing will wake).
pub(super) fn lane_wakeup(partition: &PartitionState, destination_id: &str) -> Arc<tokio::sync::Notify> {
    partition
        .book()
        .lanes
        .get(destination_id)
        .map(|lane| lane.wakeup.clone())
        .unwrap_or_default()
}

/// The backoff before the next attempt of a held head: sleeps `delay`, but ends early when an
/// operator acts on the head (retry now, skip, pause). Operators' requests reach the owning
/// worker through the control service, which wakes the lane at once; a request stored by
/// another worker is seen at the next periodic look. False when the partition was released.
pub(super) async fn sleep_until_retry(
    shared: &Shared,
    released: &CancellationToken,
    wakeup: &tokio::sync::Notify,
    delay: Duration,
    task: &DeliveryTask,
    last_attempt_ms: i64,
) -> bool {
    let destination_id = task.destination_id.as_str();
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
            if retry_requested(&destination, task, last_attempt_ms) {
                tracing::info!(
                    destination_id,
                    log_id = %task.log_id,
                    "manual retry: attempting the held head now"
                );
                return true;
            }
            if skip_requested(&destination, task) || destination.paused_by_operator {
                return true;
            }
        }
    }
}

/// Sleeps for `delay`, ending early when an operator acts on the lane; false when the partition
/// was released first.
pub(super) async fn wait_or_wakeup(
    released: &CancellationToken,
    wakeup: &tokio::sync::Notify,
    delay: Duration,
) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = wakeup.notified() => true,
        _ = released.cancelled() => false,
    }
}

/// How often a destination paused by an operator checks whether it was resumed (a resume sent
/// to the owning worker wakes it at once).
pub(super) const OPERATOR_PAUSE_RECHECK: Duration = Duration::from_millis(500);

/// The state of a head that holds its queue: kept in the lane (the owner's live view for the
/// control service) and in `destination_queues` (what outlives this worker). A failure to store
/// it is logged, never fatal: it is a view, not the queue.
pub(super) struct Hold {
    pub(super) destination_id: String,
    /// Whether a `destination_queues` row was written (and must go when the head is final).
    pub(super) stored: bool,
    pub(super) since_ms: Option<i64>,
    pub(super) last_error: String,
    /// When the head's last attempt started (0: none yet); a "retry now" newer than this
    /// attempts it at once.
    pub(super) last_attempt_ms: i64,
}

impl Hold {
    pub(super) fn new(destination_id: &str) -> Self {
        Self {
            destination_id: destination_id.to_string(),
            stored: false,
            since_ms: None,
            last_error: String::new(),
            last_attempt_ms: 0,
        }
    }

    /// Continues from the state an earlier owner stored.
    pub(super) fn resume(&mut self, partition: &PartitionState, stored: HeldHead) {
        self.stored = true;
        self.since_ms = Some(stored.since_ms);
        self.last_error = stored.last_error.clone();
        // A "retry now" from before that owner's last attempt has been used already.
        self.last_attempt_ms = stored.last_attempt_at_ms.unwrap_or(0);
        set_lane_head(partition, &self.destination_id, Some(stored));
    }

    pub(super) async fn record(
        &mut self,
        shared: &Shared,
        partition: &PartitionState,
        reason: HeldReason,
        task: &DeliveryTask,
        attempts: u32,
        next_attempt_at_ms: Option<i64>,
    ) {
        let head = HeldHead {
            destination_id: self.destination_id.clone(),
            reason,
            since_ms: *self
                .since_ms
                .get_or_insert_with(|| chrono::Utc::now().timestamp_millis()),
            log_id: task.log_id.clone(),
            retry_id: task.retry_id.clone(),
            attempts,
            next_attempt_at_ms,
            last_attempt_at_ms: (self.last_attempt_ms > 0).then_some(self.last_attempt_ms),
            last_error: self.last_error.clone(),
        };
        let unchanged = partition
            .book()
            .lanes
            .get(&self.destination_id)
            .and_then(|lane| lane.held.as_ref())
            == Some(&head);
        if unchanged && self.stored {
            return;
        }
        set_lane_head(partition, &self.destination_id, Some(head.clone()));
        match shared.parking.record_held(partition.tracker.fence(), &head).await {
            Ok(()) => self.stored = true,
            Err(error) => {
                tracing::warn!(%error, destination_id = %head.destination_id, "could not record the held queue state")
            }
        }
    }

    /// The head is final: its queue is no longer held by it.
    pub(super) async fn release(&mut self, shared: &Shared, partition: &PartitionState) {
        set_lane_head(partition, &self.destination_id, None);
        if !self.stored {
            return;
        }
        match shared
            .parking
            .clear_held(partition.tracker.fence(), &self.destination_id)
            .await
        {
            Ok(()) => self.stored = false,
            Err(error) => {
                tracing::warn!(%error, destination_id = %self.destination_id, "could not clear the held queue state")
            }
        }
    }
}

fn set_lane_head(partition: &PartitionState, destination_id: &str, head: Option<HeldHead>) {
    if let Some(lane) = partition.book().lanes.get_mut(destination_id) {
        lane.held = head;
    }
}

/// Sleeps for `delay`; false when the partition was released first.
pub(super) async fn sleep_unless_released(released: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = released.cancelled() => false,
    }
}
