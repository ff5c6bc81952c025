//! A topic deleted and created again (issue 10 §9c): its offsets start again at 0 and name other
//! records. Consumers must read the new stream from its beginning, not from the old stored
//! offset, and state keyed by offsets (parked tasks) must not be mistaken for the new stream's.
//! Tansu deletes every topic when one is deleted, so each test wipes a broker of its own.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use carrier_kafka::consumer::{self, ConsumerOptions, OffsetTracker, PartitionProcessor, Processor, Record};
use carrier_kafka::producer::{self, Ordering, WhenFull};
use carrier_testkit::broker::Broker;
use tokio_util::sync::CancellationToken;

/// Records every payload it is given and finishes it at once.
#[derive(Clone, Default)]
struct Recording(Arc<Mutex<Vec<String>>>);

struct RecordingPartition {
    seen: Recording,
    tracker: Arc<OffsetTracker>,
}

impl Processor for Recording {
    fn assign(&self, tracker: Arc<OffsetTracker>) -> Box<dyn PartitionProcessor> {
        Box::new(RecordingPartition {
            seen: self.clone(),
            tracker,
        })
    }
}

impl PartitionProcessor for RecordingPartition {
    fn process(&mut self, record: Record) {
        let payload = String::from_utf8_lossy(&record.payload).into_owned();
        self.seen.0.lock().unwrap().push(payload);
        self.tracker.finish(record.offset);
    }
}

impl Recording {
    fn payloads(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// The lease row of partition 0: (generation, committed offset).
async fn lease_row(pool: &carrier_store::sqlx::PgPool) -> (i64, Option<i64>) {
    carrier_store::sqlx::query_as(
        "SELECT generation, committed_offset FROM partition_leases WHERE topic = $1 AND partition = 0",
    )
    .bind(TOPIC)
    .fetch_one(pool)
    .await
    .expect("lease row")
}

/// One topic on a broker of its own, consumed by one member at a time of group `generations`.
struct World {
    broker: Broker,
    settings: carrier_config::KafkaSettings,
    pool: carrier_store::sqlx::PgPool,
}

const TOPIC: &str = "generations.test";

impl World {
    async fn start() -> World {
        let broker = Broker::start().await;
        let settings = carrier_config::KafkaSettings {
            brokers: broker.brokers(),
            enable_idempotence: false,
            session_timeout_ms: 3000,
            fetch_wait_max_ms: 50,
            ..Default::default()
        };
        let database = carrier_testkit::unique("carrier_generations_");
        let url = format!("{}/{database}", carrier_testkit::test_postgres());
        let pool = carrier_store::connect_and_migrate(&url, 4, Duration::from_secs(30))
            .await
            .expect("database");
        let world = World {
            broker,
            settings,
            pool,
        };
        world.create_topic().await;
        world
    }

    async fn create_topic(&self) {
        carrier_kafka::admin::ensure_topics(&self.settings, &[(TOPIC, 1)])
            .await
            .unwrap();
    }

    /// The topic deleted and created again (every client of it stopped first: librdkafka 2.12
    /// can crash when a topic it knows comes back with another topic ID).
    async fn recreate_topic(&mut self) {
        self.broker.wipe().await;
        self.create_topic().await;
    }

    /// Writes `count` records `<prefix>-<n>`.
    async fn produce(&self, prefix: &str, count: usize) {
        let producer =
            producer::create(&self.settings, "generations-test", Ordering::Strict).expect("producer");
        for n in 0..count {
            producer::send(
                &producer,
                TOPIC,
                "key",
                format!("{prefix}-{n}").as_bytes(),
                None,
                WhenFull::Wait,
            )
            .await
            .expect("record written");
        }
    }

    /// Runs a consumer until it has read exactly `expected` (`<prefix>-<n>`, n < count), in
    /// order, and the lease row says (generation, offset); then stops it.
    async fn consume(&self, what: &str, expected: (&str, usize), lease: (i64, i64)) {
        let recording = Recording::default();
        let shutdown = CancellationToken::new();
        let options = ConsumerOptions {
            topic: TOPIC.into(),
            group_id: "generations".into(),
            client_id: "generations-test".into(),
            max_pending_per_partition: 100,
            handover_timeout: Duration::from_millis(500),
            drain_timeout: Duration::from_millis(500),
            commit_interval: Duration::from_millis(100),
        };
        let consumer = consumer::spawn(
            &self.settings,
            options,
            Arc::new(recording.clone()),
            &self.pool,
            shutdown.clone(),
        )
        .expect("consumer");
        let (prefix, count) = expected;
        let expected: Vec<String> = (0..count).map(|n| format!("{prefix}-{n}")).collect();
        carrier_testkit::eventually(Duration::from_secs(60), what, || {
            let seen = recording.payloads().len();
            async move { (seen >= count).then_some(()) }
        })
        .await;
        carrier_testkit::eventually(Duration::from_secs(20), "the lease row", || {
            let pool = self.pool.clone();
            async move { (lease_row(&pool).await == (lease.0, Some(lease.1))).then_some(()) }
        })
        .await;
        assert_eq!(recording.payloads(), expected, "{what}: exactly these, in order");
        shutdown.cancel();
        consumer.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_reads_a_topic_created_again_from_its_beginning() {
    carrier_testkit::init_test_logging();
    let mut world = World::start().await;
    world.produce("first", 20).await;
    world.consume("the first stream", ("first", 20), (0, 20)).await;

    // 1. Recreated with fewer records than were read: the stored offset lies past the new end.
    world.recreate_topic().await;
    world.produce("second", 5).await;
    world
        .consume("the second stream, from its beginning", ("second", 5), (1, 5))
        .await;

    // 2. Recreated, and the new stream already goes past the stored offset: only the anchor (a
    //    record of the old stream, not found at its offset) tells. Without it the new owner
    //    would start at offset 5 and skip the new stream's first five records.
    world.recreate_topic().await;
    world.produce("third", 30).await;
    world
        .consume("the third stream, from its beginning", ("third", 30), (2, 30))
        .await;

    // 3. The same stream, restarted: no new generation, nothing read twice.
    world.produce("more", 3).await;
    world.consume("only what is new", ("more", 3), (2, 33)).await;
}
