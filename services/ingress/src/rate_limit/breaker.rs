//! What keeps a missing or hung Redis cheap: after a failure requests skip it for a while
//! ([`SkipAfterFailure`]), and its warnings are logged at most once per interval ([`WarnThrottle`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Shortest interval between two "rate-limit store unavailable" warnings.
pub(super) const WARN_INTERVAL: Duration = Duration::from_secs(5);

/// After Redis timed out or failed, how long requests go through without asking it.
pub(super) const SKIP_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// After a failure, tells requests to leave Redis alone for a while: while it is down or hung,
/// one request per interval waits on it instead of every one.
pub(super) struct SkipAfterFailure {
    epoch: Instant,
    interval: Duration,
    /// Milliseconds after `epoch` until which requests skip Redis.
    until_ms: AtomicU64,
}

impl SkipAfterFailure {
    pub(super) fn new(interval: Duration) -> Self {
        Self {
            epoch: Instant::now(),
            interval,
            until_ms: AtomicU64::new(0),
        }
    }

    fn millis(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    pub(super) fn is_skipping(&self, now: Instant) -> bool {
        self.millis(now) < self.until_ms.load(Ordering::Relaxed)
    }

    pub(super) fn failed(&self, now: Instant) {
        let until = self.millis(now) + self.interval.as_millis() as u64;
        self.until_ms.fetch_max(until, Ordering::Relaxed);
    }
}

/// Lets a warning through at most once per interval; counts what it held back.
pub(super) struct WarnThrottle {
    interval: Duration,
    state: std::sync::Mutex<(Option<Instant>, u64)>,
}

impl WarnThrottle {
    pub(super) fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: std::sync::Mutex::new((None, 0)),
        }
    }

    /// `Some(suppressed since the last warning)` when a warning may be logged at `now`.
    pub(super) fn should_warn(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (last, suppressed) = &mut *state;
        match last {
            Some(last) if now.saturating_duration_since(*last) < self.interval => {
                *suppressed += 1;
                None
            }
            _ => {
                *last = Some(now);
                Some(std::mem::take(suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_throttled_and_count_what_they_held_back() {
        let throttle = WarnThrottle::new(Duration::from_secs(5));
        let start = Instant::now();
        assert_eq!(throttle.should_warn(start), Some(0));
        for millis in [1, 100, 4_999] {
            assert_eq!(throttle.should_warn(start + Duration::from_millis(millis)), None);
        }
        assert_eq!(throttle.should_warn(start + Duration::from_secs(5)), Some(3));
        assert_eq!(throttle.should_warn(start + Duration::from_secs(6)), None);
        assert_eq!(throttle.should_warn(start + Duration::from_secs(11)), Some(1));
    }

    #[test]
    fn after_a_failure_redis_is_skipped_for_one_interval_then_tried_again() {
        let skip = SkipAfterFailure::new(Duration::from_secs(1));
        let start = skip.epoch;
        assert!(!skip.is_skipping(start));
        skip.failed(start + Duration::from_millis(100));
        assert!(skip.is_skipping(start + Duration::from_millis(100)));
        assert!(skip.is_skipping(start + Duration::from_millis(1_099)));
        assert!(!skip.is_skipping(start + Duration::from_millis(1_100)));
        // A late report of an older failure does not shorten a newer skip.
        skip.failed(start + Duration::from_millis(2_000));
        skip.failed(start + Duration::from_millis(1_500));
        assert!(skip.is_skipping(start + Duration::from_millis(2_999)));
        assert!(!skip.is_skipping(start + Duration::from_millis(3_000)));
    }
}
