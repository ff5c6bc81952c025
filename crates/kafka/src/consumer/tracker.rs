//! Per-partition bookkeeping: which offsets are unfinished, what may be committed, and how much
//! work is in flight right now (what a revoke must wait for).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use carrier_store::leases::{Anchor, Fence};
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct State {
    /// Offsets handed to the processor and not finished yet.
    pending: BTreeSet<i64>,
    /// One past the highest offset accepted.
    next: Option<i64>,
    /// Where this owner started reading (its predecessor committed everything below).
    start: Option<i64>,
    /// Work that has started and must finish (or time out) before the partition is released.
    active: usize,
}

/// The state of one assigned partition, shared between the consumer thread and the processor.
pub struct OffsetTracker {
    partition: i32,
    state: Mutex<State>,
    idle: Condvar,
    /// Cancelled when the lease is lost; cancels `released` too (its parent).
    lost: CancellationToken,
    released: CancellationToken,
    fence: Option<Fence>,
    /// This member's own deadline for the lease (see the coordinator); checked synchronously
    /// too, so a process that resumes after a freeze does not start work before its watchdog
    /// had a chance to run.
    deadline: Mutex<Option<Instant>>,
    /// The generation of the partition's stream this owner reads (see `stream.rs`).
    generation: AtomicI64,
    /// Set when the coordinator wants a new anchor: the next record accepted becomes it.
    anchor_wanted: AtomicBool,
    anchor_found: Mutex<Option<Anchor>>,
}

impl OffsetTracker {
    /// A tracker without a lease (unit tests of processors).
    pub fn new(partition: i32) -> Self {
        Self::with_fence(partition, None)
    }

    pub(crate) fn with_fence(partition: i32, fence: Option<Fence>) -> Self {
        let lost = CancellationToken::new();
        Self {
            partition,
            state: Mutex::default(),
            idle: Condvar::new(),
            released: lost.child_token(),
            lost,
            fence,
            deadline: Mutex::new(None),
            generation: AtomicI64::new(0),
            anchor_wanted: AtomicBool::new(false),
            anchor_found: Mutex::new(None),
        }
    }

    /// The lease this partition is worked under: hold it in a transaction that writes state
    /// belonging to the partition (`Fence::hold`), so a previous owner's late write is refused.
    /// `None` only for trackers made by [`OffsetTracker::new`].
    pub fn fence(&self) -> Option<&Fence> {
        self.fence.as_ref()
    }

    /// Cancelled when this member's lease of the partition ran out (it could not be renewed in
    /// time, or another member holds it now): abandon work in flight at once, even a request
    /// half sent. Another member may start on the partition soon after.
    pub fn lost_token(&self) -> &CancellationToken {
        &self.lost
    }

    pub(crate) fn lose(&self) {
        self.lost.cancel();
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The generation of the partition's stream this owner reads. Offsets name records only
    /// within one generation: state keyed by offsets (parked tasks) is keyed by it too, and
    /// state of an older generation comes before everything of this one.
    pub fn generation(&self) -> i64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn set_generation(&self, generation: i64) {
        self.generation.store(generation, Ordering::Release);
    }

    /// Asks for the next accepted record as the stream's new anchor.
    pub(crate) fn want_anchor(&self) {
        self.anchor_wanted.store(true, Ordering::Release);
    }

    pub(crate) fn wants_anchor(&self) -> bool {
        self.anchor_wanted.load(Ordering::Acquire)
    }

    pub(crate) fn offer_anchor(&self, anchor: Anchor) {
        self.anchor_wanted.store(false, Ordering::Release);
        *self.anchor_found.lock().expect("anchor lock") = Some(anchor);
    }

    /// An anchor found since the last call, to be stored with the lease.
    pub(crate) fn take_anchor(&self) -> Option<Anchor> {
        self.anchor_found.lock().expect("anchor lock").take()
    }

    /// Records that `offset` was handed out. Returns false for an offset at or below one already
    /// seen (librdkafka may return records again after a pause); such a record is skipped.
    pub fn accept(&self, offset: i64) -> bool {
        let mut state = self.state.lock().expect("tracker lock");
        if state.next.is_some_and(|next| offset < next) {
            return false;
        }
        state.pending.insert(offset);
        state.next = Some(offset + 1);
        true
    }

    /// The work of `offset` is final: it no longer holds the commit back.
    pub fn finish(&self, offset: i64) {
        let mut state = self.state.lock().expect("tracker lock");
        state.pending.remove(&offset);
        if state.pending.is_empty() && state.active == 0 {
            self.idle.notify_all();
        }
    }

    /// Every offset below this one was either committed before this owner started or has been
    /// handed to the processor: state a previous owner stored for offsets at or above it (e.g.
    /// parked tasks) may still be joined by records of lower offsets. `None` before the first
    /// record when the start is unknown (a new group reading from the beginning).
    pub fn seen_below(&self) -> Option<i64> {
        let state = self.state.lock().expect("tracker lock");
        match (state.start, state.next) {
            (Some(start), Some(next)) => Some(start.max(next)),
            (start, next) => start.or(next),
        }
    }

    pub(crate) fn set_start(&self, offset: i64) {
        self.state.lock().expect("tracker lock").start = Some(offset);
    }

    /// The offset to commit: the oldest unfinished one, or one past the last seen when all are
    /// finished. `None` before the first record.
    pub fn committable(&self) -> Option<i64> {
        let state = self.state.lock().expect("tracker lock");
        state.pending.first().copied().or(state.next)
    }

    /// How many handed-out records are unfinished.
    pub fn pending(&self) -> usize {
        self.state.lock().expect("tracker lock").pending.len()
    }

    /// How many pieces of in-flight work are running.
    pub fn active(&self) -> usize {
        self.state.lock().expect("tracker lock").active
    }

    /// Cancelled when the partition is released (handed to another member, the consumer stops,
    /// or the lease is lost): start no new work then.
    pub fn released_token(&self) -> &CancellationToken {
        &self.released
    }

    /// True once the partition was released, or its lease lost or past this member's deadline.
    pub fn is_released(&self) -> bool {
        self.released.is_cancelled()
            || self
                .deadline
                .lock()
                .expect("deadline lock")
                .is_some_and(|deadline| Instant::now() >= deadline)
    }

    pub(crate) fn set_deadline(&self, deadline: Instant) {
        *self.deadline.lock().expect("deadline lock") = Some(deadline);
    }

    pub(crate) fn release(&self) {
        self.released.cancel();
    }

    /// Marks work in flight until the guard is dropped. A revoke waits for every guard.
    pub fn activity(self: &Arc<Self>) -> ActivityGuard {
        self.state.lock().expect("tracker lock").active += 1;
        ActivityGuard {
            tracker: self.clone(),
        }
    }

    /// Waits until every accepted record is finished and nothing is in flight, or `deadline`
    /// passes. True when drained.
    pub(crate) fn wait_drained_until(&self, deadline: Instant) -> bool {
        self.wait_until(deadline, |state| state.pending.is_empty() && state.active == 0)
    }

    /// Waits until no work is in flight or `deadline` passes. True when idle.
    pub(crate) fn wait_idle_until(&self, deadline: Instant) -> bool {
        self.wait_until(deadline, |state| state.active == 0)
    }

    fn wait_until(&self, deadline: Instant, done: impl Fn(&State) -> bool) -> bool {
        let mut state = self.state.lock().expect("tracker lock");
        while !done(&state) {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self
                .idle
                .wait_timeout(state, deadline - now)
                .expect("tracker lock")
                .0;
        }
        true
    }
}

/// In-flight work of a partition; see [`OffsetTracker::activity`].
pub struct ActivityGuard {
    tracker: Arc<OffsetTracker>,
}

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        let mut state = self.tracker.state.lock().expect("tracker lock");
        state.active -= 1;
        if state.active == 0 {
            // Wakes both waits: for idleness, and (when nothing is pending) for a drain.
            self.tracker.idle.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn commits_stop_below_the_oldest_unfinished_offset() {
        let tracker = OffsetTracker::new(0);
        assert_eq!(tracker.committable(), None);
        for offset in 10..15 {
            assert!(tracker.accept(offset));
        }
        assert_eq!(tracker.committable(), Some(10));
        tracker.finish(11);
        tracker.finish(12);
        assert_eq!(
            tracker.committable(),
            Some(10),
            "10 is unfinished: nothing past it is committed"
        );
        tracker.finish(10);
        assert_eq!(tracker.committable(), Some(13));
        tracker.finish(14);
        tracker.finish(13);
        assert_eq!(tracker.committable(), Some(15));
        assert!(!tracker.accept(12), "an offset seen before is skipped");
        assert_eq!(tracker.pending(), 0);
    }

    #[test]
    fn idle_wait_returns_when_the_last_guard_drops() {
        let tracker = Arc::new(OffsetTracker::new(0));
        let guard = tracker.activity();
        assert!(!tracker.wait_idle_until(Instant::now() + Duration::from_millis(20)));
        let waiter = {
            let tracker = tracker.clone();
            std::thread::spawn(move || tracker.wait_idle_until(Instant::now() + Duration::from_secs(10)))
        };
        std::thread::sleep(Duration::from_millis(20));
        drop(guard);
        assert!(waiter.join().unwrap());
    }
}
