//! Each partition's end (high watermark) as librdkafka's statistics report it, for the lag
//! metric (`Fetcher::record_lag`). librdkafka emits its statistics every
//! `statistics.interval.ms` (set by `client_config`) from the thread that polls the consumer;
//! the context keeps the last `hi_offset` of each partition of the member's topic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::consumer::ConsumerContext;
use rdkafka::statistics::Statistics;

/// How often librdkafka reports its statistics (the lag metric's resolution).
pub(crate) const STATISTICS_INTERVAL_MS: u32 = 5_000;

/// The consumer's context: librdkafka's log and errors as by default, its statistics kept.
#[derive(Clone)]
pub(crate) struct Ends {
    topic: String,
    ends: Arc<Mutex<HashMap<i32, i64>>>,
}

impl Ends {
    pub(crate) fn new(topic: &str) -> Self {
        Ends {
            topic: topic.to_owned(),
            ends: Arc::default(),
        }
    }

    /// The partition's end at the last statistics; `None` before librdkafka knew it.
    pub(crate) fn end(&self, partition: i32) -> Option<i64> {
        self.ends.lock().ok()?.get(&partition).copied()
    }

    /// Keeps the known ends among (partition, `hi_offset`) of the member's topic.
    fn keep(&self, seen: impl IntoIterator<Item = (i32, i64)>) {
        let Ok(mut ends) = self.ends.lock() else {
            return;
        };
        for (partition, end) in seen {
            // librdkafka lists an internal partition -1, and -1001 for an end not known yet.
            if partition >= 0 && end >= 0 {
                ends.insert(partition, end);
            }
        }
    }
}

impl ClientContext for Ends {
    fn stats(&self, statistics: Statistics) {
        if let Some(topic) = statistics.topics.get(&self.topic) {
            self.keep(
                topic
                    .partitions
                    .iter()
                    .map(|(partition, seen)| (*partition, seen.hi_offset)),
            );
        }
    }
}

impl ConsumerContext for Ends {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_known_ends_and_their_latest_value() {
        let ends = Ends::new("mine");
        ends.keep([(0, 42), (1, -1001), (-1, 7)]);
        assert_eq!(ends.end(0), Some(42));
        assert_eq!(ends.end(1), None, "not known yet");
        assert_eq!(ends.end(-1), None, "librdkafka's internal partition");
        ends.keep([(0, 50), (1, 3)]);
        assert_eq!((ends.end(0), ends.end(1)), (Some(50), Some(3)));
    }
}
