//! What a destination saw, judged: raw reorders, duplicates, foreign `webhook-id`s, lost
//! messages and the longest gap between deliveries. Pure functions over arrival lists, so each
//! definition is pinned by unit tests.
//!
//! Definitions (one destination, one sending stream, messages numbered in the order the stream
//! sent them, each sent only after the previous one's 200):
//! - **Raw reorder**: as `carrier_testkit::order` defines it (the first and the last arrival of
//!   every message in message order, on the raw sequence), the one definition the e2e tests use.
//! - **Duplicate**: an arrival whose (`webhook-id`, `carrier-attempt`) the destination saw
//!   before. A retry carries a higher `carrier-attempt` and is not a duplicate.
//! - **Foreign `webhook-id`**: an arrival of a message with a `webhook-id` other than its
//!   original (the log ID ingress answered with; else the message's first arrival's).
//! - **Lost**: accepted for the destination, never answered 2xx by it.
//! - **Longest gap**: the longest time between consecutive successful arrivals, counted from
//!   a start time (the fault's start) to the last one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

/// One request as a destination received it, reduced to what the checks read.
#[derive(Debug, Clone, PartialEq)]
pub struct Arrival {
    /// The message's number (its `Sequence`).
    pub sequence: u64,
    /// The sending stream (a source) the message came from.
    pub stream: String,
    pub webhook_id: String,
    /// `carrier-attempt` (1-based).
    pub attempt: u32,
    /// The receiver answered 2xx: a delivery, not a failed attempt.
    pub succeeded: bool,
    /// When it arrived, since the scenario started.
    pub at: Duration,
}

pub use carrier_testkit::order::{raw_reorders, Reorder, ReorderKind};

/// Arrivals whose (`webhook-id`, `carrier-attempt`) was seen before.
pub fn duplicates(arrivals: &[Arrival]) -> usize {
    let mut seen = HashSet::new();
    arrivals
        .iter()
        .filter(|arrival| !seen.insert((arrival.webhook_id.as_str(), arrival.attempt)))
        .count()
}

/// Arrivals carrying a `webhook-id` other than their message's original: `original` maps a
/// message number to the log ID ingress answered with; a message missing from it keeps the
/// `webhook-id` of its first arrival.
pub fn foreign_webhook_ids(arrivals: &[Arrival], original: &HashMap<u64, String>) -> usize {
    let mut first_seen: HashMap<u64, &str> = HashMap::new();
    let mut foreign = 0;
    for arrival in arrivals {
        let expected = match original.get(&arrival.sequence) {
            Some(log_id) => log_id.as_str(),
            None => *first_seen
                .entry(arrival.sequence)
                .or_insert(arrival.webhook_id.as_str()),
        };
        if arrival.webhook_id != expected {
            foreign += 1;
        }
    }
    foreign
}

/// The longest time between consecutive `times` (sorted) from `from` on, the wait from `from`
/// to the first one included; `None` when nothing arrived after `from`.
pub fn longest_gap(times: &[Duration], from: Duration) -> Option<Duration> {
    let mut previous = from;
    let mut longest = None;
    for time in times.iter().copied().filter(|time| *time >= from) {
        let gap = time - previous;
        longest = Some(longest.map_or(gap, |longest: Duration| longest.max(gap)));
        previous = time;
    }
    longest
}

/// A gap longer than this is a stall: a healthy destination receives several deliveries a
/// second under the matrix's load, so a second without one is its line standing still (a
/// hand-over, a fault), not the pace of the load.
pub const STALL: Duration = Duration::from_secs(1);

/// The time spent in gaps longer than `longer_than` between consecutive `times` (sorted) from
/// `from` on, the wait from `from` to the first one included (how long a destination stood
/// still, in total, where `longest_gap` says how long at most).
pub fn stalled(times: &[Duration], from: Duration, longer_than: Duration) -> Duration {
    let mut previous = from;
    let mut total = Duration::ZERO;
    for time in times.iter().copied().filter(|time| *time >= from) {
        let gap = time - previous;
        if gap > longer_than {
            total += gap;
        }
        previous = time;
    }
    total
}

/// The raw arrivals of `stream` around `reorder` (the `before` arrivals up to the reordered
/// one and `after` more), to show what a receiver saw. Arrivals of other streams and of
/// messages not accepted are left out, as in the order check.
pub fn window<'a>(
    arrivals: &'a [Arrival],
    accepted: &HashMap<u64, String>,
    stream: &str,
    reorder: &Reorder,
    before: usize,
    after: usize,
) -> Vec<&'a Arrival> {
    let line: Vec<&Arrival> = arrivals
        .iter()
        .filter(|arrival| arrival.stream == stream && accepted.contains_key(&arrival.sequence))
        .collect();
    let position = match reorder.kind {
        ReorderKind::First => line
            .iter()
            .position(|arrival| arrival.sequence == reorder.message),
        ReorderKind::Last => line
            .iter()
            .rposition(|arrival| arrival.sequence == reorder.previous),
    };
    let Some(position) = position else {
        return Vec::new();
    };
    let start = position.saturating_sub(before);
    let end = (position + after + 1).min(line.len());
    line[start..end].to_vec()
}

/// What one destination is expected to have received.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// Accepted messages routed to the destination: number → the log ID ingress answered.
    pub accepted: HashMap<u64, String>,
    /// Count messages never delivered as lost (production destinations).
    pub must_deliver: bool,
    /// Measure the longest gap from this time on (healthy destinations).
    pub gap_from: Option<Duration>,
}

/// The verdict on one destination.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DestinationVerdict {
    pub arrivals: usize,
    /// Accepted messages answered 2xx at least once.
    pub delivered: usize,
    /// Accepted, must be delivered, never answered 2xx.
    pub lost: usize,
    /// Up to a few lost message numbers, for the report.
    pub lost_examples: Vec<u64>,
    pub reorders: Vec<(String, Reorder)>,
    pub duplicates: usize,
    pub foreign_webhook_ids: usize,
    /// Arrivals of messages that were not accepted (refused or unanswered sends that were
    /// written anyway): allowed, and left out of the order check.
    pub unaccepted_arrivals: usize,
    pub longest_gap: Option<Duration>,
    /// Time in gaps longer than [`STALL`] from the same start (healthy destinations).
    pub stalled: Option<Duration>,
}

/// Judges one destination's raw arrivals against what it should have received.
pub fn judge(arrivals: &[Arrival], expected: &Expected) -> DestinationVerdict {
    let mut verdict = DestinationVerdict {
        arrivals: arrivals.len(),
        duplicates: duplicates(arrivals),
        foreign_webhook_ids: foreign_webhook_ids(arrivals, &expected.accepted),
        ..DestinationVerdict::default()
    };
    let mut delivered = HashSet::new();
    let mut delivery_times = Vec::new();
    let mut per_stream: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for arrival in arrivals {
        if !expected.accepted.contains_key(&arrival.sequence) {
            verdict.unaccepted_arrivals += 1;
            continue;
        }
        per_stream
            .entry(arrival.stream.as_str())
            .or_default()
            .push(arrival.sequence);
        if arrival.succeeded {
            delivered.insert(arrival.sequence);
            delivery_times.push(arrival.at);
        }
    }
    verdict.delivered = delivered.len();
    if expected.must_deliver {
        let mut lost: Vec<u64> = expected
            .accepted
            .keys()
            .copied()
            .filter(|sequence| !delivered.contains(sequence))
            .collect();
        lost.sort_unstable();
        verdict.lost = lost.len();
        verdict.lost_examples = lost.into_iter().take(5).collect();
    }
    for (stream, sequences) in per_stream {
        for reorder in raw_reorders(&sequences) {
            verdict.reorders.push((stream.to_string(), reorder));
        }
    }
    if let Some(from) = expected.gap_from {
        delivery_times.sort_unstable();
        verdict.longest_gap = longest_gap(&delivery_times, from);
        verdict.stalled = Some(stalled(&delivery_times, from, STALL));
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrival(sequence: u64, webhook_id: &str, attempt: u32, succeeded: bool, at_ms: u64) -> Arrival {
        Arrival {
            sequence,
            stream: "p1".into(),
            webhook_id: webhook_id.into(),
            attempt,
            succeeded,
            at: Duration::from_millis(at_ms),
        }
    }

    #[test]
    fn duplicates_are_repeated_webhook_id_and_attempt_pairs() {
        let arrivals = [
            arrival(1, "w1", 1, false, 0),
            arrival(1, "w1", 2, true, 10), // a retry
            arrival(2, "w2", 1, true, 20),
            arrival(2, "w2", 1, true, 30), // a duplicate
            arrival(1, "w1", 2, true, 40), // a duplicate of the retry
        ];
        assert_eq!(duplicates(&arrivals), 2);
    }

    #[test]
    fn a_repeat_with_another_webhook_id_is_foreign() {
        let original = HashMap::from([(1, "w1".to_string())]);
        let arrivals = [
            arrival(1, "w1", 1, true, 0),
            arrival(1, "w9", 1, true, 10), // same message, new log ID: foreign
            arrival(2, "w2", 1, true, 20), // not accepted: its first arrival's ID is the original
            arrival(2, "w3", 1, true, 30), // foreign
        ];
        assert_eq!(foreign_webhook_ids(&arrivals, &original), 2);
        // Not a duplicate by (webhook-id, attempt), which is why the foreign count exists.
        assert_eq!(duplicates(&arrivals), 0);
    }

    #[test]
    fn longest_gap_counts_from_the_start_to_the_last_arrival() {
        let times: Vec<Duration> = [1, 2, 5, 6].into_iter().map(Duration::from_secs).collect();
        assert_eq!(longest_gap(&times, Duration::ZERO), Some(Duration::from_secs(3)));
        // Arrivals before `from` do not count; the wait to the first one does.
        assert_eq!(
            longest_gap(&times, Duration::from_millis(5_500)),
            Some(Duration::from_millis(500))
        );
        assert_eq!(longest_gap(&times, Duration::from_secs(7)), None);
    }

    #[test]
    fn stalled_sums_the_gaps_longer_than_the_threshold() {
        let times: Vec<Duration> = [1_000, 1_500, 4_000, 4_200, 6_000, 6_100]
            .into_iter()
            .map(Duration::from_millis)
            .collect();
        // From 0: 1.0 s to the first (not longer than 1 s), 2.5 s and 1.8 s stalls.
        assert_eq!(
            stalled(&times, Duration::ZERO, Duration::from_secs(1)),
            Duration::from_millis(4_300)
        );
        assert_eq!(
            stalled(&times, Duration::from_millis(4_100), Duration::from_secs(1)),
            Duration::from_millis(1_800)
        );
        assert_eq!(
            stalled(&[], Duration::ZERO, Duration::from_secs(1)),
            Duration::ZERO
        );
    }

    #[test]
    fn judge_counts_lost_reorders_and_ignores_unaccepted_arrivals_in_the_order() {
        let expected = Expected {
            accepted: HashMap::from([
                (1, "w1".to_string()),
                (2, "w2".to_string()),
                (3, "w3".to_string()),
                (4, "w4".to_string()),
            ]),
            must_deliver: true,
            gap_from: Some(Duration::ZERO),
        };
        let arrivals = [
            arrival(1, "w1", 1, true, 100),
            arrival(9, "w9", 1, true, 150), // answered 504 but written: not in the order check
            arrival(3, "w3", 1, true, 200),
            arrival(2, "w2", 1, false, 1_200), // attempted after 3, and failed
        ];
        let verdict = judge(&arrivals, &expected);
        assert_eq!(verdict.arrivals, 4);
        assert_eq!(verdict.delivered, 2);
        assert_eq!(verdict.lost, 2);
        assert_eq!(verdict.lost_examples, vec![2, 4]);
        assert_eq!(verdict.unaccepted_arrivals, 1);
        assert_eq!(verdict.reorders.len(), 1, "{:?}", verdict.reorders);
        assert_eq!(verdict.reorders[0].1.message, 3);
        assert_eq!(verdict.longest_gap, Some(Duration::from_millis(100)));

        // A destination whose messages may fail for good (staging) loses nothing.
        let staging = Expected {
            must_deliver: false,
            gap_from: None,
            ..expected
        };
        let verdict = judge(&arrivals, &staging);
        assert_eq!(verdict.lost, 0);
        assert_eq!(verdict.longest_gap, None);
    }

    #[test]
    fn the_window_shows_the_raw_arrivals_around_a_reorder() {
        let arrivals: Vec<Arrival> = [1, 2, 3, 3, 2, 4]
            .into_iter()
            .enumerate()
            .map(|(index, sequence)| arrival(sequence, &format!("w{sequence}"), 1, true, index as u64))
            .collect();
        let accepted: HashMap<u64, String> = (1..=4)
            .map(|sequence| (sequence, format!("w{sequence}")))
            .collect();
        let reorders = raw_reorders(&[1, 2, 3, 3, 2, 4]);
        let shown: Vec<u64> = window(&arrivals, &accepted, "p1", &reorders[0], 2, 1)
            .iter()
            .map(|arrival| arrival.sequence)
            .collect();
        assert_eq!(shown, vec![3, 3, 2, 4], "up to 2's last arrival, and one after");
    }

    #[test]
    fn reorders_are_judged_per_stream() {
        let mut arrivals = vec![arrival(2, "w2", 1, true, 0), arrival(1, "w1", 1, true, 10)];
        arrivals[1].stream = "p2".into(); // 1 and 2 come from different sources
        let expected = Expected {
            accepted: HashMap::from([(1, "w1".to_string()), (2, "w2".to_string())]),
            must_deliver: true,
            gap_from: None,
        };
        assert!(judge(&arrivals, &expected).reorders.is_empty());
    }
}
