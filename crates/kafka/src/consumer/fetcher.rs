//! The librdkafka side: one blocking thread polls the consumer and hands each record to the
//! processor of its partition; partitions are added and removed by the coordinator (manual
//! assignment, no group membership in Kafka). It also pauses partitions with too much unfinished
//! work and mirrors committed offsets to the Kafka group, for lag monitoring and tools (the
//! offsets that count are the leases'). Partitions nothing is written to stop being fetched
//! when the idle policy says so (`idle.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use carrier_store::leases::Anchor;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::ends::Ends;
use super::idle::{IdlePolicy, Peeks};
use super::metrics::metrics;
use super::{stream, ConsumerOptions, OffsetTracker, PartitionProcessor, Processor, Record};

/// One partition being worked on.
pub(crate) struct Slot {
    pub tracker: Arc<OffsetTracker>,
    /// Dropped only after the partition's work has drained.
    pub processor: Box<dyn PartitionProcessor>,
    mirrored: Option<i64>,
    /// Paused for backpressure: too much unfinished work.
    held_back: bool,
    /// When its last record was seen, or its doorbell heard (or it was assigned).
    last_activity: Instant,
    /// Whether it is in librdkafka's assignment: an idle partition is taken out of it (see
    /// `apply_fetching` for why not paused).
    fetching: bool,
    /// Where work on it started: where it resumes when nothing was seen since, and, when that
    /// was an offset, the lag's base until the first record is finished.
    assigned_at: Offset,
}

pub(crate) struct Fetcher {
    pub consumer: BaseConsumer<Ends>,
    pub options: ConsumerOptions,
    processor: Arc<dyn Processor>,
    idle: IdlePolicy,
    /// Locked inside `slots` only.
    peeks: Mutex<Peeks>,
    slots: Mutex<HashMap<i32, Slot>>,
}

impl Fetcher {
    pub fn new(
        consumer: BaseConsumer<Ends>,
        options: ConsumerOptions,
        processor: Arc<dyn Processor>,
        idle: IdlePolicy,
    ) -> Self {
        Self {
            consumer,
            options,
            processor,
            idle,
            peeks: Mutex::new(Peeks::new(Instant::now())),
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// Starts work on `partition` from `offset`. Blocking: the processor may read its state.
    /// Nothing is started when the tracker was released or lost meanwhile.
    pub fn assign(&self, tracker: Arc<OffsetTracker>, offset: Offset) -> Result<(), KafkaError> {
        let partition = tracker.partition();
        let processor = self.processor.assign(tracker.clone());
        // Under the lock, so a revoke cannot fall between the check and the assignment.
        let mut slots = self.slots.lock().expect("slots lock");
        if tracker.is_released() {
            return Ok(());
        }
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&self.options.topic, partition, offset)?;
        self.consumer.incremental_assign(&list)?;
        // librdkafka keeps an application's pause across unassign and assign: a partition
        // paused when it was revoked would come back paused, and the fresh slot (not paused)
        // would never resume it (issue 10 §1).
        self.consumer.resume(&list)?;
        slots.insert(
            partition,
            Slot {
                processor,
                tracker,
                mirrored: None,
                held_back: false,
                last_activity: Instant::now(),
                fetching: true,
                assigned_at: offset,
            },
        );
        Ok(())
    }

    /// Stops handing `partition`'s records out and returns its slot (its work goes on until the
    /// caller releases or loses the tracker).
    pub fn revoke(&self, partition: i32) -> Option<Slot> {
        let mut slots = self.slots.lock().expect("slots lock");
        let slot = slots.remove(&partition)?;
        // Another member reports it from now on: a stale series would count it twice.
        let _ = metrics()
            .lag
            .remove_label_values(&[&self.options.topic, &partition.to_string()]);
        if slot.fetching {
            let mut list = TopicPartitionList::new();
            list.add_partition(&self.options.topic, partition);
            if let Err(error) = self.consumer.incremental_unassign(&list) {
                tracing::warn!(%error, topic = %self.options.topic, partition, "unassigning a partition failed");
            }
        }
        Some(slot)
    }

    fn dispatch(&self, record: Record) {
        let mut slots = self.slots.lock().expect("slots lock");
        match slots.get_mut(&record.partition) {
            Some(slot) if !slot.tracker.is_released() => {
                slot.last_activity = Instant::now();
                if slot.tracker.accept(record.offset) {
                    if slot.tracker.wants_anchor() {
                        slot.tracker.offer_anchor(Anchor {
                            offset: record.offset,
                            digest: stream::digest(record.timestamp, record.key.as_deref(), &record.payload),
                        });
                    }
                    slot.processor.process(record);
                }
            }
            _ => tracing::debug!(
                partition = record.partition,
                "record of a partition not worked on ignored"
            ),
        }
    }

    /// A producer wrote to these partitions (their doorbell rang): fetched again at once if
    /// they were idle.
    pub fn wake(&self, partitions: &[i32]) {
        let mut slots = self.slots.lock().expect("slots lock");
        let now = Instant::now();
        for partition in partitions {
            if let Some(slot) = slots.get_mut(partition) {
                slot.last_activity = now;
            }
        }
        self.apply_fetching(&mut slots, now);
    }

    /// Every partition is fetched again at once (doorbells may have been missed).
    pub fn wake_all(&self) {
        let partitions: Vec<i32> = self.slots.lock().expect("slots lock").keys().copied().collect();
        self.wake(&partitions);
    }

    /// Pauses and resumes partitions: a partition over its cap of unfinished records is held
    /// back (paused) until half of them finished (backpressure); an idle one is in librdkafka's
    /// assignment only during peeks (`idle.rs`); all others are fetched.
    ///
    /// Idle partitions are unassigned, not paused: librdkafka's broker thread does not notice a
    /// resume until it next wakes on its own, up to a second later, which would be the latency
    /// of every doorbell; an assignment wakes it at once. Taken out of the assignment, a
    /// partition comes back where this member's work is (one past the last record seen), so
    /// nothing is skipped; a record seen twice is ignored by the tracker.
    fn apply_fetching(&self, slots: &mut HashMap<i32, Slot>, now: Instant) {
        let cap = self.options.max_pending_per_partition;
        let any_idle = slots
            .values()
            .any(|slot| self.idle.is_idle(slot.last_activity, now));
        let peeking = self.idle.enabled()
            && self
                .peeks
                .lock()
                .expect("peeks lock")
                .peeking(&self.idle, any_idle, now);
        let mut pause = TopicPartitionList::new();
        let mut resume = TopicPartitionList::new();
        let mut assign = TopicPartitionList::new();
        let mut unassign = TopicPartitionList::new();
        let mut idle = 0;
        for (partition, slot) in slots.iter_mut() {
            let pending = slot.tracker.pending();
            let held_back = if !slot.held_back && pending >= cap {
                tracing::debug!(
                    partition,
                    pending,
                    "partition held back: too much unfinished work"
                );
                true
            } else if slot.held_back && pending <= cap / 2 {
                tracing::debug!(partition, pending, "partition no longer held back");
                false
            } else {
                slot.held_back
            };
            if held_back {
                // Busy by definition: records wait behind the unfinished ones.
                slot.last_activity = now;
            }
            let is_idle = self.idle.is_idle(slot.last_activity, now);
            idle += usize::from(is_idle);
            let fetch = !is_idle || peeking;
            if fetch != slot.fetching {
                if fetch {
                    let from = slot.tracker.seen_below().map_or(slot.assigned_at, Offset::Offset);
                    let _ = assign.add_partition_offset(&self.options.topic, *partition, from);
                } else {
                    let _ = unassign.add_partition(&self.options.topic, *partition);
                }
                slot.fetching = fetch;
            }
            if held_back != slot.held_back {
                let list = if held_back { &mut pause } else { &mut resume };
                let _ = list.add_partition(&self.options.topic, *partition);
                slot.held_back = held_back;
            }
        }
        let topic = &self.options.topic;
        if unassign.count() > 0 {
            if let Err(error) = self.consumer.incremental_unassign(&unassign) {
                tracing::warn!(%error, %topic, "leaving idle partitions out of fetches failed");
            }
        }
        if assign.count() > 0 {
            // An idle partition is never held back, and librdkafka keeps a pause across
            // unassign and assign: resume it anyway, as `assign` does.
            let result = self
                .consumer
                .incremental_assign(&assign)
                .and_then(|()| self.consumer.resume(&assign));
            if let Err(error) = result {
                tracing::warn!(%error, %topic, "fetching idle partitions again failed");
            }
        }
        if pause.count() > 0 {
            if let Err(error) = self.consumer.pause(&pause) {
                tracing::warn!(%error, %topic, "holding partitions back failed");
            }
        }
        if resume.count() > 0 {
            if let Err(error) = self.consumer.resume(&resume) {
                tracing::warn!(%error, %topic, "resuming held-back partitions failed");
            }
        }
        if self.idle.enabled() {
            metrics().idle.with_label_values(&[topic]).set(idle as i64);
        }
    }

    /// Copies committable offsets to the Kafka group (asynchronously; a failure only delays
    /// what lag monitoring sees).
    fn mirror_commits(&self) {
        let mut list = TopicPartitionList::new();
        let mut slots = self.slots.lock().expect("slots lock");
        for (partition, slot) in slots.iter_mut() {
            if let Some(offset) = slot.tracker.committable() {
                if slot.mirrored != Some(offset) {
                    let _ =
                        list.add_partition_offset(&self.options.topic, *partition, Offset::Offset(offset));
                    slot.mirrored = Some(offset);
                }
            }
        }
        drop(slots);
        if list.count() > 0 {
            if let Err(error) = self.consumer.commit(&list, CommitMode::Async) {
                tracing::debug!(%error, topic = %self.options.topic, "mirroring offsets to the Kafka group failed");
            }
        }
    }

    /// Sets each worked partition's lag: the partition's end in librdkafka's last statistics
    /// (`ends.rs`) minus the committable offset
    /// (everything below it is finished), or the start before anything is (the partition's
    /// first offset when work started at its beginning). Not librdkafka's
    /// statistics' `consumer_lag`: that counts from the Kafka group's committed offset, which
    /// Carrier only mirrors, best effort (the offsets that count are the leases'). A partition
    /// paused for backpressure is not fetched, so its end, and its lag, lag behind meanwhile.
    fn record_lag(&self) {
        let slots = self.slots.lock().expect("slots lock");
        for (partition, slot) in slots.iter() {
            let Some(seen) = self.consumer.context().watermarks(*partition) else {
                continue;
            };
            // Nothing finished yet: from where work started (the partition's start when that
            // was "the beginning").
            let Some(done) = slot
                .tracker
                .committable()
                .or(match slot.assigned_at {
                    Offset::Offset(offset) => Some(offset),
                    _ => None,
                })
                .or(seen.low)
            else {
                continue;
            };
            metrics()
                .lag
                .with_label_values(&[&self.options.topic, &partition.to_string()])
                .set((seen.high - done).max(0));
        }
    }

    /// Polls until `stop` is cancelled (by the coordinator, once every partition is released).
    pub fn poll_until(&self, stop: CancellationToken) {
        let mut last_mirror = Instant::now();
        let mut last_error_log: Option<Instant> = None;
        while !stop.is_cancelled() {
            match self.consumer.poll(Duration::from_millis(50)) {
                None => {}
                Some(Ok(message)) => {
                    let headers = message
                        .headers()
                        .map(|headers| {
                            headers
                                .iter()
                                .map(|h| (h.key.to_string(), h.value.map(|v| v.to_vec()).unwrap_or_default()))
                                .collect()
                        })
                        .unwrap_or_default();
                    let record = Record {
                        partition: message.partition(),
                        offset: message.offset(),
                        timestamp: message.timestamp().to_millis(),
                        key: message.key().map(|k| k.to_vec()),
                        payload: message.payload().map(|p| p.to_vec()).unwrap_or_default(),
                        headers,
                    };
                    drop(message);
                    self.dispatch(record);
                }
                Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset))) => {
                    self.stop_partitions_out_of_range();
                }
                // A broker outage produces one error per poll; say it once every few seconds.
                Some(Err(error)) if last_error_log.is_none_or(|at| at.elapsed() > Duration::from_secs(5)) => {
                    tracing::warn!(%error, topic = %self.options.topic, "consumer error");
                    last_error_log = Some(Instant::now());
                }
                Some(Err(_)) => {}
            }
            {
                let mut slots = self.slots.lock().expect("slots lock");
                self.apply_fetching(&mut slots, Instant::now());
            }
            if last_mirror.elapsed() >= self.options.commit_interval {
                self.mirror_commits();
                self.record_lag();
                last_mirror = Instant::now();
            }
        }
        self.mirror_commits();
    }

    /// A partition's position fell outside it (librdkafka stopped fetching it, as configured):
    /// records were deleted by retention before they were read, or the topic was created again.
    /// The partition stops here (its lease is lost, then expires) and is started again from
    /// what its lease says, which tells the two apart (`stream.rs`). librdkafka's error does not
    /// say which partition it was: those whose position lies outside their watermarks now stop,
    /// and if none does any more (records arrived meanwhile), every partition stops, because one
    /// of them is no longer fetched.
    fn stop_partitions_out_of_range(&self) {
        let trackers: Vec<(i32, Arc<OffsetTracker>)> = self
            .slots
            .lock()
            .expect("slots lock")
            .iter()
            .map(|(partition, slot)| (*partition, slot.tracker.clone()))
            .collect();
        let outside: Vec<&(i32, Arc<OffsetTracker>)> = trackers
            .iter()
            .filter(|(partition, tracker)| {
                let Some(position) = tracker.seen_below() else {
                    return false;
                };
                match self.watermarks(*partition) {
                    Ok((low, high)) if position < low || position > high => {
                        tracing::warn!(topic = %self.options.topic, partition, position, earliest = low, end = high, "a partition's position lies outside it");
                        true
                    }
                    Ok(_) => false,
                    Err(error) => {
                        tracing::debug!(%error, partition, "reading watermarks failed");
                        false
                    }
                }
            })
            .collect();
        let stopping = if outside.is_empty() {
            trackers.iter().collect()
        } else {
            outside
        };
        let partitions: Vec<i32> = stopping.iter().map(|(partition, _)| *partition).collect();
        metrics()
            .out_of_range
            .with_label_values(&[&self.options.topic])
            .inc();
        tracing::warn!(
            topic = %self.options.topic,
            ?partitions,
            "a partition's position fell outside it (records deleted by retention, or the topic created again); these partitions stop here and start again from their leases"
        );
        for (_, tracker) in stopping {
            tracker.lose();
        }
    }

    /// The partition's earliest offset and its end (one past its last record).
    pub fn watermarks(&self, partition: i32) -> Result<(i64, i64), KafkaError> {
        self.consumer
            .fetch_watermarks(&self.options.topic, partition, Duration::from_secs(10))
    }

    /// The Kafka group's committed offset of `partition` (where a group that committed only to
    /// Kafka, before leases, left off). `Offset::Invalid` when it has none.
    pub fn kafka_committed(&self, partition: i32) -> Result<Offset, KafkaError> {
        let mut list = TopicPartitionList::new();
        list.add_partition(&self.options.topic, partition);
        let committed = self.consumer.committed_offsets(list, Duration::from_secs(10))?;
        Ok(committed
            .find_partition(&self.options.topic, partition)
            .map(|e| e.offset())
            .unwrap_or(Offset::Invalid))
    }

    /// The topic's partition count from the broker's metadata.
    pub fn partition_count(&self) -> Result<i32, KafkaError> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(&self.options.topic), Duration::from_secs(5))?;
        Ok(metadata
            .topics()
            .iter()
            .find(|t| t.name() == self.options.topic && t.error().is_none())
            .map_or(0, |t| t.partitions().len() as i32))
    }
}

#[cfg(test)]
mod tests {
    //! Against the real broker of the tests (`CARRIER_TEST_BROKERS`, as `make test` sets).

    use super::*;
    use crate::client::{self, Role};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    /// Records what it is given and never finishes anything: its partition fills its cap.
    struct Holding(Arc<Mutex<Vec<i64>>>);
    struct HoldingPartition(Arc<Mutex<Vec<i64>>>);

    impl Processor for Holding {
        fn assign(&self, _tracker: Arc<OffsetTracker>) -> Box<dyn PartitionProcessor> {
            Box::new(HoldingPartition(self.0.clone()))
        }
    }

    impl PartitionProcessor for HoldingPartition {
        fn process(&mut self, record: Record) {
            self.0.lock().unwrap().push(record.offset);
        }
    }

    /// A new topic of `partitions` on the tests' broker with `records` records in partition 0;
    /// its name and settings for it.
    async fn topic_with_records(
        name: &str,
        partitions: i32,
        records: usize,
    ) -> (String, carrier_config::KafkaSettings) {
        let brokers = std::env::var("CARRIER_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into());
        let topic = format!("{name}-{}", uuid::Uuid::new_v4().simple());
        let settings = carrier_config::KafkaSettings {
            brokers,
            fetch_wait_max_ms: 10,
            ..Default::default()
        };
        crate::admin::ensure_topics(&settings, &[(&topic, partitions)])
            .await
            .unwrap();
        let producer: FutureProducer = client::builder(&settings, Role::Producer).create().unwrap();
        for n in 0..records {
            write_record(&producer, &topic, n as i64).await;
        }
        (topic, settings)
    }

    /// Writes `n` (as text) to partition 0 of `topic`.
    async fn write_record(producer: &FutureProducer, topic: &str, n: i64) {
        let payload = n.to_string();
        producer
            .send(
                FutureRecord::<(), _>::to(topic).payload(&payload).partition(0),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }

    /// A member's options (cap 100) and librdkafka consumer for `topic`, as `spawn` makes them.
    fn member_consumer(
        topic: &str,
        settings: &carrier_config::KafkaSettings,
    ) -> (ConsumerOptions, BaseConsumer<Ends>) {
        let options = ConsumerOptions {
            topic: topic.to_string(),
            group_id: topic.to_string(),
            client_id: "fetcher-test".into(),
            max_pending_per_partition: 100,
            handover_timeout: Duration::from_millis(10),
            drain_timeout: Duration::from_millis(10),
            commit_interval: Duration::from_millis(200),
        };
        let consumer = super::super::client_config(settings, &options)
            .create_with_context(Ends::new(&options.topic))
            .unwrap();
        (options, consumer)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_partition_paused_when_it_was_revoked_is_fetched_again_when_assigned_again() {
        let (topic, settings) = topic_with_records("fetcher-pause", 1, 10).await;
        let consumer: BaseConsumer<Ends> = client::builder(&settings, Role::Consumer)
            .set("group.id", &topic)
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "10")
            .create_with_context(Ends::new(&topic))
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let options = ConsumerOptions {
            topic: topic.clone(),
            group_id: topic.clone(),
            client_id: "fetcher-test".into(),
            max_pending_per_partition: 3,
            handover_timeout: Duration::from_millis(10),
            drain_timeout: Duration::from_millis(10),
            commit_interval: Duration::from_millis(200),
        };
        let fetcher = Arc::new(Fetcher::new(
            consumer,
            options,
            Arc::new(Holding(seen.clone())),
            IdlePolicy::off(),
        ));
        let stop = CancellationToken::new();
        let poller = {
            let (fetcher, stop) = (fetcher.clone(), stop.clone());
            std::thread::spawn(move || fetcher.poll_until(stop))
        };
        let wait_for = |what: &str, done: &dyn Fn(&[i64]) -> bool| {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !done(&seen.lock().unwrap()) {
                assert!(
                    Instant::now() < deadline,
                    "{what}: saw {:?}",
                    seen.lock().unwrap()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        };

        fetcher
            .assign(Arc::new(OffsetTracker::new(0)), Offset::Beginning)
            .unwrap();
        wait_for("the cap's worth of records", &|seen| seen.len() >= 3);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !fetcher.slots.lock().unwrap()[&0].held_back {
            assert!(Instant::now() < deadline, "the full partition is paused");
            std::thread::sleep(Duration::from_millis(10));
        }
        let before = seen.lock().unwrap().len();

        // Handed away while paused, then back to this member with a fresh slot.
        drop(fetcher.revoke(0));
        fetcher
            .assign(Arc::new(OffsetTracker::new(0)), Offset::Beginning)
            .unwrap();
        wait_for("the partition read again from its start", &|seen| {
            seen.len() > before && seen[before..].contains(&0)
        });
        stop.cancel();
        poller.join().unwrap();
    }

    /// An idle partition is left out of fetches; a record written meanwhile is found by the
    /// next peek, or at once when its doorbell wakes the partition.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_partition_is_not_fetched_until_a_peek_or_its_doorbell() {
        let (topic, settings) = topic_with_records("fetcher-idle", 1, 2).await;
        let (options, consumer) = member_consumer(&topic, &settings);
        let idle = IdlePolicy {
            after: Some(Duration::from_millis(300)),
            peek_every: Duration::from_millis(1_000),
            peek_for: Duration::from_millis(70),
        };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let fetcher = Arc::new(Fetcher::new(
            consumer,
            options,
            Arc::new(Holding(seen.clone())),
            idle,
        ));
        let stop = CancellationToken::new();
        let poller = {
            let (fetcher, stop) = (fetcher.clone(), stop.clone());
            std::thread::spawn(move || fetcher.poll_until(stop))
        };
        let producer: FutureProducer = client::builder(&settings, Role::Producer).create().unwrap();
        let wait_until = |what: &str, done: &dyn Fn() -> bool| {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !done() {
                assert!(
                    Instant::now() < deadline,
                    "{what}: saw {:?}",
                    seen.lock().unwrap()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        let fetching = || fetcher.slots.lock().unwrap()[&0].fetching;

        fetcher
            .assign(Arc::new(OffsetTracker::new(0)), Offset::Beginning)
            .unwrap();
        wait_until("the first records", &|| seen.lock().unwrap().len() == 2);
        wait_until("the quiet partition left out of fetches", &|| !fetching());

        // No doorbell: a peek finds it.
        write_record(&producer, &topic, 2).await;
        wait_until("the record written while idle, found by a peek", &|| {
            seen.lock().unwrap().contains(&2)
        });
        wait_until("idle again", &|| !fetching());

        // Its doorbell: fetched again at once.
        write_record(&producer, &topic, 3).await;
        fetcher.wake(&[0]);
        assert!(fetching(), "a woken partition is fetched");
        wait_until("the record whose doorbell rang", &|| {
            seen.lock().unwrap().contains(&3)
        });
        assert_eq!(*seen.lock().unwrap(), vec![0, 1, 2, 3], "in order, each once");
        stop.cancel();
        poller.join().unwrap();
    }

    /// librdkafka reports a position outside the partition (Kafka answers OFFSET_OUT_OF_RANGE;
    /// the consumer runs with `auto.offset.reset=error`) without saying which partition: the
    /// fetcher stops those whose position lies outside their watermarks, and only those. Tansu
    /// never answers OFFSET_OUT_OF_RANGE, so the error is raised here by calling the handler.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_position_outside_its_partition_stops_that_partition_only() {
        let (topic, settings) = topic_with_records("fetcher-range", 2, 5).await;
        let (options, consumer) = member_consumer(&topic, &settings);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let fetcher = Arc::new(Fetcher::new(
            consumer,
            options,
            Arc::new(Holding(seen.clone())),
            IdlePolicy::off(),
        ));
        let stop = CancellationToken::new();
        let poller = {
            let (fetcher, stop) = (fetcher.clone(), stop.clone());
            std::thread::spawn(move || fetcher.poll_until(stop))
        };
        // Partition 0 at a stored offset of a topic since created again; partition 1 in range.
        let outside = Arc::new(OffsetTracker::new(0));
        outside.set_start(1_000);
        fetcher.assign(outside.clone(), Offset::Offset(1_000)).unwrap();
        let inside = Arc::new(OffsetTracker::new(1));
        inside.set_start(0);
        fetcher.assign(inside.clone(), Offset::Offset(0)).unwrap();
        tokio::task::spawn_blocking({
            let fetcher = fetcher.clone();
            move || fetcher.stop_partitions_out_of_range()
        })
        .await
        .unwrap();
        assert!(
            outside.lost_token().is_cancelled(),
            "the partition outside its range stops"
        );
        assert!(!inside.lost_token().is_cancelled(), "the other goes on");
        assert!(
            seen.lock().unwrap().is_empty(),
            "no record was taken from another position"
        );
        stop.cancel();
        poller.join().unwrap();
    }
}
