//! The adaptive limit on messages being written: how many requests of one replica may wait for
//! the router, the log store and the broker's acknowledgement at once.
//!
//! Why it adapts: by Little's law a request waits, on average, (requests in progress) / (requests
//! completed per second). Under a fixed cap that wait is cap / rate, so it grows whenever the
//! broker slows down: at fan-out 10 the broker acknowledged ~417 writes a second, and 256 in
//! progress (one source's cap) meant ~0.6 s each and a p99 past 1 s (docs/benchmarks.md). So the
//! limit follows the broker instead: once per window it becomes about `limit × target / mean
//! latency`, which under saturation is `completions per second × target`, and the mean wait
//! stays near `limits.admission_target_latency_ms` however fast the broker is today. Past the
//! limit a request is shed at once (503 + `Retry-After`, like the other caps: a request queued
//! here would only wait longer and be sent again).
//!
//! The limit only grows when requests actually reached it (a quiet replica keeps a small one, so
//! a sudden burst cannot start thousands of writes at once), moves at most ×2 or ×½ per window
//! and only half-way to the new figure (one slow window does not swing it), and stays between
//! [`FLOOR`] and `limits.max_in_flight`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use carrier_proto::ErrorKind;

use super::LimitSettings;
use crate::error::ApiError;
use crate::metrics::metrics;

/// The fewest requests the limit lets through at once, however slow the broker: below this a
/// replica would refuse nearly everything during a broker hiccup.
pub const FLOOR: usize = 16;
/// The limit a replica starts with (at most `max_in_flight`).
const INITIAL: usize = 64;
/// How long completions are gathered before the limit moves, and how many at least.
const WINDOW: Duration = Duration::from_millis(200);
const MIN_SAMPLES: u32 = 10;

/// The pure controller: the limit, what is in progress, and the current window's completions.
#[derive(Debug)]
struct Controller {
    target: Duration,
    ceiling: usize,
    limit: usize,
    in_flight: usize,
    /// The most in progress at once during the window: the limit grows only if it was reached.
    peak: usize,
    window_started: Instant,
    samples: u32,
    latency_sum: Duration,
}

impl Controller {
    fn new(target: Duration, ceiling: usize, now: Instant) -> Self {
        Self {
            target,
            ceiling,
            limit: INITIAL.min(ceiling),
            in_flight: 0,
            peak: 0,
            window_started: now,
            samples: 0,
            latency_sum: Duration::ZERO,
        }
    }

    fn floor(&self) -> usize {
        FLOOR.min(self.ceiling)
    }

    /// Takes a slot, or `false` when `limit` are in progress.
    fn admit(&mut self) -> bool {
        if self.in_flight >= self.limit {
            return false;
        }
        self.in_flight += 1;
        self.peak = self.peak.max(self.in_flight);
        true
    }

    /// Gives a slot back after `latency`; the new limit when this completion closed a window.
    fn complete(&mut self, now: Instant, latency: Duration) -> Option<usize> {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.samples += 1;
        self.latency_sum += latency;
        if self.samples < MIN_SAMPLES || now.duration_since(self.window_started) < WINDOW {
            return None;
        }
        let mean = self.latency_sum.as_secs_f64() / f64::from(self.samples);
        let current = self.limit as f64;
        let mut proposed =
            (current * self.target.as_secs_f64() / mean.max(1e-6)).clamp(current / 2.0, current * 2.0);
        // Demand below the limit says nothing about how many more the broker could take.
        if proposed > current && (self.peak as f64) < current * 0.75 {
            proposed = current;
        }
        let next = ((current + proposed) / 2.0).round() as usize;
        self.limit = next.clamp(self.floor(), self.ceiling);
        self.window_started = now;
        self.samples = 0;
        self.latency_sum = Duration::ZERO;
        self.peak = self.in_flight;
        Some(self.limit)
    }
}

/// The replica's adaptive limit; `None` in [`AdaptiveLimit::new`] when it is turned off.
pub struct AdaptiveLimit {
    controller: Mutex<Controller>,
}

impl AdaptiveLimit {
    /// The limit of `limits`, or `None` when `admission_target_latency_ms` is 0 (off: only the
    /// fixed caps apply).
    pub fn new(limits: &LimitSettings) -> Option<Arc<Self>> {
        if limits.admission_target_latency_ms == 0 {
            return None;
        }
        let controller = Controller::new(
            Duration::from_millis(limits.admission_target_latency_ms),
            limits.max_in_flight,
            Instant::now(),
        );
        metrics().admission_limit.set(controller.limit as i64);
        Some(Arc::new(Self {
            controller: Mutex::new(controller),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Controller> {
        self.controller
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A slot for one message write, or 503 with `Retry-After` when the limit is reached.
    pub fn slot(self: &Arc<Self>) -> Result<WriteSlot, ApiError> {
        let mut controller = self.lock();
        if controller.admit() {
            return Ok(WriteSlot {
                limit: self.clone(),
                admitted: Instant::now(),
            });
        }
        let limit = controller.limit;
        drop(controller);
        metrics().shed.with_label_values(&["admission"]).inc();
        tracing::debug!(limit, "message shed: the adaptive admission limit is reached");
        Err(ApiError::new(
            ErrorKind::Overloaded,
            format!(
                "Carrier is overloaded (durable writes are slow: at most {limit} messages in \
                 progress on this replica now); retry after the Retry-After delay"
            ),
        ))
    }
}

/// One message write in progress; its latency feeds the limit when it is dropped, whatever the
/// outcome (a timed-out write is the slowest sample of all).
pub struct WriteSlot {
    limit: Arc<AdaptiveLimit>,
    admitted: Instant,
}

impl Drop for WriteSlot {
    fn drop(&mut self) {
        let now = Instant::now();
        let changed = self.limit.lock().complete(now, now.duration_since(self.admitted));
        if let Some(limit) = changed {
            metrics().admission_limit.set(limit as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: Duration = Duration::from_millis(250);

    /// Runs `windows` windows in which `in_flight` requests are in progress at once and each
    /// takes `latency`; the limit after them.
    fn saturate(
        controller: &mut Controller,
        clock: &mut Instant,
        windows: usize,
        latency: impl Fn(usize) -> Duration,
    ) -> usize {
        for _ in 0..windows {
            let in_progress = controller.limit;
            for _ in 0..in_progress {
                assert!(controller.admit());
            }
            assert!(!controller.admit(), "the limit holds");
            *clock += WINDOW;
            let latency = latency(in_progress);
            for _ in 0..in_progress {
                controller.complete(*clock, latency);
            }
        }
        controller.limit
    }

    #[test]
    fn under_a_saturated_broker_the_limit_settles_at_its_rate_times_the_target() {
        let mut clock = Instant::now();
        let mut controller = Controller::new(TARGET, 2_048, clock);
        // A broker acknowledging 400 writes a second: n in progress wait n / 400 s each.
        let limit = saturate(&mut controller, &mut clock, 40, |n| {
            Duration::from_secs_f64(n as f64 / 400.0)
        });
        assert!((95..=105).contains(&limit), "400/s × 0.25 s ≈ 100, got {limit}");
        // The broker slows to 100 a second: the limit follows it down, so the wait stays put.
        let limit = saturate(&mut controller, &mut clock, 40, |n| {
            Duration::from_secs_f64(n as f64 / 100.0)
        });
        assert!((23..=27).contains(&limit), "100/s × 0.25 s ≈ 25, got {limit}");
    }

    #[test]
    fn a_fast_broker_lets_the_limit_grow_to_the_ceiling_but_no_further() {
        let mut clock = Instant::now();
        let mut controller = Controller::new(TARGET, 300, clock);
        let limit = saturate(&mut controller, &mut clock, 20, |_| Duration::from_millis(5));
        assert_eq!(limit, 300);
    }

    #[test]
    fn a_slow_broker_cannot_push_the_limit_under_the_floor() {
        let mut clock = Instant::now();
        let mut controller = Controller::new(TARGET, 2_048, clock);
        let limit = saturate(&mut controller, &mut clock, 20, |_| Duration::from_secs(30));
        assert_eq!(limit, FLOOR);
    }

    #[test]
    fn the_limit_does_not_grow_while_demand_stays_below_it() {
        let mut clock = Instant::now();
        let mut controller = Controller::new(TARGET, 2_048, clock);
        for _ in 0..50 {
            // One request at a time, each fast: nothing says the broker could take more.
            assert!(controller.admit());
            clock += Duration::from_millis(20);
            controller.complete(clock, Duration::from_millis(5));
        }
        assert_eq!(controller.limit, INITIAL);
    }

    #[test]
    fn one_slow_window_moves_the_limit_at_most_half_way_to_half() {
        let mut clock = Instant::now();
        let mut controller = Controller::new(TARGET, 2_048, clock);
        let limit = saturate(&mut controller, &mut clock, 1, |_| Duration::from_secs(10));
        assert_eq!(limit, 48, "64 → half-way to 32");
    }

    #[test]
    fn a_window_needs_its_time_and_its_samples_before_the_limit_moves() {
        let started = Instant::now();
        let mut controller = Controller::new(TARGET, 2_048, started);
        for _ in 0..20 {
            assert!(controller.admit());
        }
        for _ in 0..19 {
            let early = started + WINDOW / 2;
            assert_eq!(
                controller.complete(early, Duration::from_secs(10)),
                None,
                "too early"
            );
        }
        assert_eq!(
            controller.complete(started + WINDOW, Duration::from_secs(10)),
            Some(48)
        );

        let mut controller = Controller::new(TARGET, 2_048, started);
        for _ in 0..(MIN_SAMPLES - 1) {
            assert!(controller.admit());
        }
        for _ in 0..(MIN_SAMPLES - 1) {
            let late = started + WINDOW * 10;
            assert_eq!(
                controller.complete(late, Duration::from_secs(10)),
                None,
                "too few samples"
            );
        }
    }

    #[test]
    fn a_small_ceiling_is_also_the_floor_and_the_start() {
        let controller = Controller::new(TARGET, 4, Instant::now());
        assert_eq!((controller.limit, controller.floor()), (4, 4));
    }

    #[test]
    fn a_target_as_long_as_the_request_deadline_is_refused_and_zero_is_off() {
        let too_long = LimitSettings {
            admission_target_latency_ms: 90_000,
            ..LimitSettings::default()
        };
        let error = too_long.validate().unwrap_err().to_string();
        assert!(
            error.contains(
                "limits.admission_target_latency_ms must be shorter than limits.request_timeout_ms"
            ),
            "{error}"
        );
        let off = LimitSettings {
            admission_target_latency_ms: 0,
            ..LimitSettings::default()
        };
        assert!(off.validate().is_ok());
    }

    #[test]
    fn turned_off_with_a_zero_target() {
        let limits = LimitSettings {
            admission_target_latency_ms: 0,
            ..LimitSettings::default()
        };
        assert!(AdaptiveLimit::new(&limits).is_none());
    }

    #[test]
    fn a_shed_message_gets_503_with_retry_after_naming_the_limit() {
        let limits = LimitSettings {
            max_in_flight: 1,
            ..LimitSettings::default()
        };
        let limit = AdaptiveLimit::new(&limits).expect("on by default");
        let held = limit.slot().expect("the first write runs");
        let Err(shed) = limit.slot() else {
            panic!("a second one at once is shed")
        };
        assert_eq!(shed.kind, ErrorKind::Overloaded);
        assert_eq!(shed.retry_after_secs, Some(1));
        assert!(
            shed.text
                .starts_with("Carrier is overloaded (durable writes are slow: at most 1 messages"),
            "{}",
            shed.text
        );
        drop(held);
        assert!(limit.slot().is_ok(), "the slot came back");
    }
}
