//! Each partition's start and end (low and high watermarks) as librdkafka's statistics report
//! them, for the lag metric (`Fetcher::record_lag`). librdkafka emits its statistics every
//! `statistics.interval.ms` (set by `client_config`) from the thread that polls the consumer;
//! the context keeps the last `lo_offset` and `hi_offset` of each partition of the member's topic,
//! and counts the Fetch requests the statistics report (`carrier_consumer_fetch_requests_total`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::consumer::ConsumerContext;
use serde::Deserialize;

/// How often librdkafka reports its statistics (the lag metric's resolution).
pub(crate) const STATISTICS_INTERVAL_MS: u32 = 5_000;

/// The consumer's context: librdkafka's log and errors as by default, its statistics kept.
#[derive(Clone)]
pub(crate) struct Ends {
    topic: String,
    ends: Arc<Mutex<HashMap<i32, Watermarks>>>,
    /// Fetch requests counted so far (librdkafka's statistics are totals since the client began).
    fetches: Arc<AtomicU64>,
}

/// A partition's first offset (`low`, `None` while unknown) and its end (`high`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Watermarks {
    pub low: Option<i64>,
    pub high: i64,
}

impl Ends {
    pub(crate) fn new(topic: &str) -> Self {
        Ends {
            topic: topic.to_owned(),
            ends: Arc::default(),
            fetches: Arc::default(),
        }
    }

    /// The partition's watermarks at the last statistics; `None` before librdkafka knew its end.
    pub(crate) fn watermarks(&self, partition: i32) -> Option<Watermarks> {
        self.ends.lock().ok()?.get(&partition).copied()
    }

    /// The partition's end at the last statistics.
    #[cfg(test)]
    fn end(&self, partition: i32) -> Option<i64> {
        self.watermarks(partition).map(|w| w.high)
    }

    /// Counts the Fetch requests past those already counted; returns how many were new.
    fn count_fetches(&self, total: u64) -> u64 {
        let before = self.fetches.fetch_max(total, Ordering::Relaxed);
        total.saturating_sub(before)
    }

    /// Keeps the known watermarks among (partition, `lo_offset`, `hi_offset`) of the topic.
    fn keep(&self, seen: impl IntoIterator<Item = (i32, i64, i64)>) {
        let Ok(mut ends) = self.ends.lock() else {
            return;
        };
        for (partition, low, high) in seen {
            // librdkafka lists an internal partition -1, and -1001 for an offset not known yet.
            if partition >= 0 && high >= 0 {
                let low = (low >= 0).then_some(low);
                ends.insert(partition, Watermarks { low, high });
            }
        }
    }
}

/// The part of librdkafka's statistics JSON read here. Not rdkafka's `Statistics`: that type
/// requires every field of the version it was written for, and librdkafka 2.12's JSON does not
/// parse into it (rdkafka then logs an error and drops the statistics).
#[derive(Deserialize)]
struct Seen {
    #[serde(default)]
    topics: HashMap<String, SeenTopic>,
    #[serde(default)]
    brokers: HashMap<String, SeenBroker>,
}

impl Seen {
    /// Fetch requests sent, over every broker connection.
    fn fetch_requests(&self) -> u64 {
        self.brokers
            .values()
            .filter_map(|broker| broker.req.get("Fetch"))
            .sum()
    }
}

#[derive(Deserialize)]
struct SeenBroker {
    /// Requests sent, by request type.
    #[serde(default)]
    req: HashMap<String, u64>,
}

#[derive(Deserialize)]
struct SeenTopic {
    #[serde(default)]
    partitions: HashMap<String, SeenPartition>,
}

#[derive(Deserialize)]
struct SeenPartition {
    partition: i32,
    #[serde(default = "unknown")]
    lo_offset: i64,
    hi_offset: i64,
}

fn unknown() -> i64 {
    -1001
}

impl ClientContext for Ends {
    fn stats_raw(&self, statistics: &[u8]) {
        match serde_json::from_slice::<Seen>(statistics) {
            Ok(seen) => {
                let fetches = self.count_fetches(seen.fetch_requests());
                if fetches > 0 {
                    super::metrics::metrics()
                        .fetch_requests
                        .with_label_values(&[&self.topic])
                        .inc_by(fetches);
                }
                if let Some(topic) = seen.topics.get(&self.topic) {
                    self.keep(
                        topic
                            .partitions
                            .values()
                            .map(|p| (p.partition, p.lo_offset, p.hi_offset)),
                    );
                }
            }
            Err(error) => {
                tracing::debug!(%error, "librdkafka's statistics not understood; the lag gauge waits")
            }
        }
    }
}

impl ConsumerContext for Ends {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_ends_of_its_topic_from_librdkafkas_statistics_json() {
        let ends = Ends::new("mine");
        let json = br#"{"name":"c#consumer-1","type":"consumer","brokers":{},"topics":{
            "mine":{"topic":"mine","partitions":{
                "0":{"partition":0,"lo_offset":3,"hi_offset":42,"consumer_lag":-1},
                "1":{"partition":1,"hi_offset":-1001},
                "-1":{"partition":-1,"hi_offset":-1}}},
            "other":{"topic":"other","partitions":{"0":{"partition":0,"hi_offset":7}}}}}"#;
        ends.stats_raw(json);
        assert_eq!((ends.end(0), ends.end(1)), (Some(42), None));
        ends.stats_raw(b"not json");
        assert_eq!(ends.end(0), Some(42), "kept");
    }

    #[test]
    fn counts_the_fetch_requests_of_every_broker_once() {
        let ends = Ends::new("fetched");
        let statistics = |first: u64, second: u64| {
            format!(
                r#"{{"brokers":{{"a:9092/1":{{"req":{{"Fetch":{first},"Produce":9}}}},
                    "GroupCoordinator":{{"req":{{"Fetch":{second}}}}},"b:9092/bootstrap":{{}}}},"topics":{{}}}}"#
            )
        };
        let counted = || {
            crate::consumer::metrics::metrics()
                .fetch_requests
                .with_label_values(&["fetched"])
                .get()
        };
        ends.stats_raw(statistics(10, 2).as_bytes());
        assert_eq!(counted(), 12);
        ends.stats_raw(statistics(15, 2).as_bytes());
        assert_eq!(counted(), 17, "only the new ones");
        ends.stats_raw(statistics(15, 2).as_bytes());
        assert_eq!(counted(), 17, "none new");
    }

    #[test]
    fn keeps_the_known_ends_and_their_latest_value() {
        let ends = Ends::new("mine");
        ends.keep([(0, 0, 42), (1, -1001, -1001), (-1, 0, 7)]);
        assert_eq!(ends.end(0), Some(42));
        assert_eq!(ends.end(1), None, "not known yet");
        assert_eq!(ends.end(-1), None, "librdkafka's internal partition");
        ends.keep([(0, 5, 50), (1, -1001, 3)]);
        assert_eq!(
            ends.watermarks(0),
            Some(Watermarks {
                low: Some(5),
                high: 50
            })
        );
        assert_eq!(ends.watermarks(1), Some(Watermarks { low: None, high: 3 }));
        assert_eq!((ends.end(0), ends.end(1)), (Some(50), Some(3)));
    }
}
