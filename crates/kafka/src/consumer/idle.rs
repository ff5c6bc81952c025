//! Which partitions a consumer fetches while nothing is written to them.
//!
//! Tansu 0.6 answers a fetch only when its whole `fetch.wait.max.ms` has passed, with records
//! or without, so a consumer fetches every partition it holds every `fetch_wait_max_ms` (10 ms
//! for latency): with the dev stack's 16 partitions an idle broker spent a whole core
//! answering. A longer wait is no way out, because it is then the latency of every record.
//!
//! So a partition that has had no record (and no doorbell, `doorbell.rs`) for
//! `kafka.idle_after_ms` is *idle*: it is taken out of librdkafka's assignment, which then
//! leaves it out of its fetch requests (no request at all when every partition is idle; why not
//! paused: `Fetcher::apply_fetching`). It is fetched again, from where its work is:
//! - at once when a producer rings its doorbell (it wrote to the partition);
//! - at a *peek*, every `kafka.idle_peek_interval_ms`, for `peek_for` (long enough for one fetch
//!   to be answered), all idle partitions together in one request: a record whose doorbell was
//!   not heard waits at most that long;
//! - as soon as a record of it is seen (a peek found one): it is busy again.
//!
//! Apache Kafka answers a fetch as soon as a record arrives, so there a long
//! `fetch_wait_max_ms` costs no latency and this stays off (`idle_after_ms = 0`).

use std::time::{Duration, Instant};

use carrier_config::KafkaSettings;

/// When partitions count as idle, and how they are looked at then.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdlePolicy {
    /// No record for this long: idle. `None`: never (always fetched).
    pub after: Option<Duration>,
    /// How often idle partitions are fetched anyway.
    pub peek_every: Duration,
    /// How long a peek fetches them: about two fetch waits (one may be in flight when the peek
    /// starts) and the round trips.
    pub peek_for: Duration,
}

impl IdlePolicy {
    pub fn from_settings(settings: &KafkaSettings) -> Self {
        let wait = Duration::from_millis(settings.fetch_wait_max_ms as u64);
        Self {
            after: (settings.idle_after_ms > 0).then(|| Duration::from_millis(settings.idle_after_ms as u64)),
            // A peek shorter than its own window would never let a partition rest.
            peek_every: Duration::from_millis(settings.idle_peek_interval_ms as u64)
                .max(wait * 4 + Duration::from_millis(100)),
            peek_for: wait * 2 + Duration::from_millis(50),
        }
    }

    /// Every partition is always fetched.
    #[cfg(test)]
    pub fn off() -> Self {
        Self::from_settings(&KafkaSettings::default())
    }

    pub fn enabled(&self) -> bool {
        self.after.is_some()
    }

    /// Whether a partition last busy at `last_activity` is idle at `now`.
    pub fn is_idle(&self, last_activity: Instant, now: Instant) -> bool {
        self.after
            .is_some_and(|after| now.saturating_duration_since(last_activity) >= after)
    }
}

/// The peeks of one consumer: all its idle partitions are looked at together.
#[derive(Debug)]
pub(crate) struct Peeks {
    next: Instant,
    until: Option<Instant>,
}

impl Peeks {
    pub fn new(now: Instant) -> Self {
        Self {
            next: now,
            until: None,
        }
    }

    /// Whether idle partitions are fetched at `now`: a peek is under way, or one is due (then
    /// it starts). Without idle partitions no peek starts, and the next one is due a whole
    /// interval after a partition becomes idle at the earliest.
    pub fn peeking(&mut self, policy: &IdlePolicy, any_idle: bool, now: Instant) -> bool {
        if let Some(until) = self.until {
            if now < until {
                return true;
            }
            self.until = None;
        }
        if !any_idle {
            self.next = now + policy.peek_every;
            return false;
        }
        if now >= self.next {
            self.until = Some(now + policy.peek_for);
            self.next = now + policy.peek_every;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> IdlePolicy {
        IdlePolicy::from_settings(&KafkaSettings {
            fetch_wait_max_ms: 10,
            idle_after_ms: 2_000,
            idle_peek_interval_ms: 1_000,
            ..Default::default()
        })
    }

    #[test]
    fn a_partition_is_idle_only_when_the_policy_is_on_and_it_was_quiet_long_enough() {
        let start = Instant::now();
        assert!(!IdlePolicy::off().is_idle(start, start + Duration::from_secs(3_600)));
        let policy = policy();
        assert!(!policy.is_idle(start, start + Duration::from_millis(1_999)));
        assert!(policy.is_idle(start, start + Duration::from_millis(2_000)));
        assert_eq!(policy.peek_for, Duration::from_millis(70));
    }

    #[test]
    fn the_peek_interval_is_never_shorter_than_a_few_fetches() {
        let policy = IdlePolicy::from_settings(&KafkaSettings {
            fetch_wait_max_ms: 500,
            idle_after_ms: 1_000,
            idle_peek_interval_ms: 10,
            ..Default::default()
        });
        assert_eq!(policy.peek_every, Duration::from_millis(2_100));
    }

    #[test]
    fn idle_partitions_are_peeked_at_for_a_window_once_per_interval() {
        let policy = policy();
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut peeks = Peeks::new(start);
        // Nothing idle: no peek, and the first one is a whole interval after idling began.
        assert!(!peeks.peeking(&policy, false, at(0)));
        assert!(!peeks.peeking(&policy, false, at(500)));
        assert!(!peeks.peeking(&policy, true, at(1_000)));
        assert!(peeks.peeking(&policy, true, at(1_500)), "due: a peek starts");
        assert!(peeks.peeking(&policy, true, at(1_569)), "within its window");
        assert!(!peeks.peeking(&policy, true, at(1_570)), "the window ended");
        assert!(!peeks.peeking(&policy, true, at(2_499)));
        assert!(
            peeks.peeking(&policy, true, at(2_500)),
            "the next, an interval later"
        );
    }
}
