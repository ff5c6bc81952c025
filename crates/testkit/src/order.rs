//! Order and completeness as one receiver saw them, judged on the **raw** arrival sequence.
//!
//! De-duplicated "first arrivals" hide reorders: after a crash a worker may send messages 2 and 3
//! again, and a receiver that applies updates in arrival order ends with whatever arrived last.
//! So both the first and the last arrival of every message must come in message order: with
//! F(s) and L(s) the index of the first and the last arrival of message s, a message whose F or
//! L comes before the previous message's is out of order. `1, 2, 3, 2, 3` (a replay in order) is
//! fine; `1, 2, 3, 3, 2` (the replay ends on 2, older than 3) is not, although its first arrivals
//! are in order.
//!
//! A repeat of a message is a retry when its `carrier-attempt` is higher than every earlier
//! arrival's of that message, and a duplicate otherwise (a replay after a crash). Every arrival
//! of one message must carry the same `webhook-id` (the log ID): a repeat under another ID is a
//! second log of the same message, which receivers cannot recognise.

use std::collections::{BTreeMap, HashMap, HashSet};

/// Why a message counts as a raw reorder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReorderKind {
    /// Its first arrival came before the previous message's first arrival.
    First,
    /// Its last arrival came before the previous message's last arrival.
    Last,
}

/// One reordered message and the previous one it overtook (or fell behind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reorder {
    pub message: u64,
    pub previous: u64,
    pub kind: ReorderKind,
}

/// Raw reorders of one stream: `arrivals` holds message numbers in raw arrival order; the
/// intended order is ascending.
pub fn raw_reorders(arrivals: &[u64]) -> Vec<Reorder> {
    let mut first: BTreeMap<u64, usize> = BTreeMap::new();
    let mut last: HashMap<u64, usize> = HashMap::new();
    for (index, message) in arrivals.iter().enumerate() {
        first.entry(*message).or_insert(index);
        last.insert(*message, index);
    }
    let mut reorders = Vec::new();
    let mut previous: Option<(u64, usize, usize)> = None;
    for (message, first_index) in first {
        let last_index = last[&message];
        if let Some((previous_message, previous_first, previous_last)) = previous {
            let kind = if first_index < previous_first {
                Some(ReorderKind::First)
            } else if last_index < previous_last {
                Some(ReorderKind::Last)
            } else {
                None
            };
            if let Some(kind) = kind {
                reorders.push(Reorder {
                    message,
                    previous: previous_message,
                    kind,
                });
            }
        }
        previous = Some((message, first_index, last_index));
    }
    reorders
}

/// One arrival at a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    /// The message's place in the order it was accepted (the test's `Sequence`).
    pub sequence: u64,
    pub webhook_id: String,
    /// `carrier-attempt`.
    pub attempt: u32,
}

/// What the raw sequence shows.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OrderReport {
    /// Distinct messages that arrived.
    pub delivered: usize,
    /// Messages whose first or last arrival came before the previous message's.
    pub reordered: Vec<u64>,
    /// Arrivals repeating an earlier (webhook-id, attempt) of the same message.
    pub duplicates: usize,
    /// Repeats of a message under a different `webhook-id` than its first arrival.
    pub foreign_ids: Vec<u64>,
    /// Expected messages that never arrived.
    pub missing: Vec<u64>,
    /// Arrived messages that were not expected (e.g. refused ones).
    pub unexpected: Vec<u64>,
}

impl OrderReport {
    /// In order, complete, and every repeat under its original `webhook-id`.
    pub fn is_clean(&self) -> bool {
        self.reordered.is_empty()
            && self.foreign_ids.is_empty()
            && self.missing.is_empty()
            && self.unexpected.is_empty()
    }
}

/// Judges `arrivals` (in arrival order) against the messages that should have arrived.
pub fn judge(arrivals: &[Arrival], expected: &[u64]) -> OrderReport {
    let mut first: BTreeMap<u64, usize> = BTreeMap::new();
    let mut ids: HashMap<u64, &str> = HashMap::new();
    let mut highest_attempt: HashMap<u64, u32> = HashMap::new();
    let mut seen: HashSet<(u64, &str, u32)> = HashSet::new();
    let mut report = OrderReport::default();
    for (index, arrival) in arrivals.iter().enumerate() {
        first.entry(arrival.sequence).or_insert(index);
        let original = *ids.entry(arrival.sequence).or_insert(arrival.webhook_id.as_str());
        if original != arrival.webhook_id && !report.foreign_ids.contains(&arrival.sequence) {
            report.foreign_ids.push(arrival.sequence);
        }
        let highest = highest_attempt.entry(arrival.sequence).or_insert(0);
        let key = (arrival.sequence, arrival.webhook_id.as_str(), arrival.attempt);
        if !seen.insert(key) || arrival.attempt < *highest {
            report.duplicates += 1;
        }
        *highest = (*highest).max(arrival.attempt);
    }
    report.delivered = first.len();
    let sequences: Vec<u64> = arrivals.iter().map(|arrival| arrival.sequence).collect();
    report.reordered = raw_reorders(&sequences)
        .iter()
        .map(|reorder| reorder.message)
        .collect();
    let expected_set: HashSet<u64> = expected.iter().copied().collect();
    report.missing = expected
        .iter()
        .copied()
        .filter(|s| !first.contains_key(s))
        .collect();
    report.unexpected = first
        .keys()
        .copied()
        .filter(|s| !expected_set.contains(s))
        .collect();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(arrivals: &[u64]) -> usize {
        raw_reorders(arrivals).len()
    }

    #[test]
    fn in_order_arrivals_have_no_reorder() {
        assert_eq!(count(&[]), 0);
        assert_eq!(count(&[1, 2, 3, 4]), 0);
        // Retries of the same message stay together.
        assert_eq!(count(&[1, 1, 2, 2, 2, 3]), 0);
        // A missing message is lost, not reordered.
        assert_eq!(count(&[1, 3, 4]), 0);
    }

    #[test]
    fn a_replay_in_order_after_a_crash_is_not_a_reorder() {
        // The new owner starts again from the committed offset and replays 2, 3 in order.
        assert_eq!(count(&[1, 2, 3, 2, 3, 4]), 0);
        assert_eq!(count(&[1, 2, 3, 1, 2, 3]), 0);
    }

    #[test]
    fn a_late_duplicate_is_a_reorder_that_first_arrivals_miss() {
        // First arrivals are 1, 2, 3 (in order), but the receiver ends with 2 applied last.
        let reorders = raw_reorders(&[1, 2, 3, 3, 2]);
        assert_eq!(
            reorders,
            vec![Reorder {
                message: 3,
                previous: 2,
                kind: ReorderKind::Last
            }]
        );
        // The late request after a revoke: the old owner's N lands after the new owner's N+1.
        assert_eq!(count(&[1, 2, 2, 3, 2]), 1);
        // A replay of an older message alone, after newer ones.
        assert_eq!(count(&[1, 2, 3, 1]), 1);
    }

    #[test]
    fn overtaking_is_a_reorder_counted_once_per_message() {
        assert_eq!(
            raw_reorders(&[2, 1, 3]),
            vec![Reorder {
                message: 2,
                previous: 1,
                kind: ReorderKind::First
            }]
        );
        assert_eq!(count(&[1, 3, 2]), 1);
        assert_eq!(count(&[3, 2, 1]), 2);
    }

    fn arrivals(sequences: &[(u64, u32)]) -> Vec<Arrival> {
        sequences
            .iter()
            .map(|(sequence, attempt)| Arrival {
                sequence: *sequence,
                webhook_id: format!("log-{sequence}"),
                attempt: *attempt,
            })
            .collect()
    }

    #[test]
    fn an_in_order_replay_after_a_crash_is_clean_and_counted_as_duplicates() {
        let report = judge(
            &arrivals(&[(1, 1), (2, 1), (3, 1), (2, 1), (3, 1), (4, 1)]),
            &[1, 2, 3, 4],
        );
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(report.duplicates, 2);
        assert_eq!(report.delivered, 4);
    }

    #[test]
    fn a_replay_ending_on_an_older_message_is_a_reorder_that_first_arrivals_miss() {
        // First arrivals are 1, 2, 3: in order. The last arrivals are not: 3 then 2.
        let report = judge(&arrivals(&[(1, 1), (2, 1), (3, 1), (3, 1), (2, 1)]), &[1, 2, 3]);
        assert_eq!(report.reordered, vec![3]);
        assert!(!report.is_clean());
    }

    #[test]
    fn a_late_first_arrival_is_a_reorder() {
        let report = judge(&arrivals(&[(1, 1), (3, 1), (2, 1)]), &[1, 2, 3]);
        assert_eq!(report.reordered, vec![3]);
    }

    #[test]
    fn retries_are_not_duplicates_but_a_repeat_under_another_id_is_foreign() {
        let mut seen = arrivals(&[(1, 1), (1, 2), (1, 3), (2, 1)]);
        assert_eq!(judge(&seen, &[1, 2]).duplicates, 0);
        seen.push(Arrival {
            sequence: 2,
            webhook_id: "another-log".into(),
            attempt: 1,
        });
        let report = judge(&seen, &[1, 2]);
        assert_eq!(report.foreign_ids, vec![2]);
        assert!(!report.is_clean());
    }

    #[test]
    fn missing_and_unexpected_messages_are_named() {
        let report = judge(&arrivals(&[(1, 1), (3, 1), (9, 1)]), &[1, 2, 3]);
        assert_eq!(report.missing, vec![2]);
        assert_eq!(report.unexpected, vec![9]);
    }
}
