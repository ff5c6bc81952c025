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
struct Recording(Arc<Mutex<Vec<(i64, String)>>>);

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
        self.seen.0.lock().unwrap().push((record.offset, payload));
        self.tracker.finish(record.offset);
    }
}

impl Recording {
    fn payloads(&self) -> Vec<String> {
        self.0.lock().unwrap().iter().map(|(_, p)| p.clone()).collect()
    }
}

async fn produce(settings: &carrier_config::KafkaSettings, topic: &str, prefix: &str, count: usize) {
    let producer = producer::create(settings, "generations-test", Ordering::Strict).expect("producer");
    for n in 0..count {
        producer::send(
            &producer,
            topic,
            "key",
            format!("{prefix}-{n}").as_bytes(),
            None,
            WhenFull::Wait,
        )
        .await
        .expect("record written");
    }
}

/// The lease row of partition 0: (generation, committed offset).
async fn lease_row(pool: &carrier_store::sqlx::PgPool, topic: &str) -> (i64, Option<i64>) {
    carrier_store::sqlx::query_as(
        "SELECT generation, committed_offset FROM partition_leases WHERE topic = $1 AND partition = 0",
    )
    .bind(topic)
    .fetch_one(pool)
    .await
    .expect("lease row")
}

fn start(
    settings: &carrier_config::KafkaSettings,
    topic: &str,
    recording: &Recording,
    pool: &carrier_store::sqlx::PgPool,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let shutdown = CancellationToken::new();
    let options = ConsumerOptions {
        topic: topic.into(),
        group_id: "generations".into(),
        client_id: "generations-test".into(),
        max_pending_per_partition: 100,
        handover_timeout: Duration::from_millis(500),
        drain_timeout: Duration::from_millis(500),
        commit_interval: Duration::from_millis(100),
    };
    let handle = consumer::spawn(
        settings,
        options,
        Arc::new(recording.clone()),
        pool,
        shutdown.clone(),
    )
    .expect("consumer");
    (shutdown, handle)
}

async fn wait_for(recording: &Recording, what: &str, expected: &[String]) {
    let expected = expected.to_vec();
    carrier_testkit::eventually(Duration::from_secs(60), what, || {
        let seen = recording.payloads();
        let expected = expected.clone();
        async move { (seen.len() >= expected.len()).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(recording.payloads(), expected, "{what}: exactly these, in order");
}

fn names(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|n| format!("{prefix}-{n}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_reads_a_topic_created_again_from_its_beginning() {
    carrier_testkit::init_test_logging();
    let mut broker = Broker::start().await;
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
    let topic = "generations.test";
    carrier_kafka::admin::ensure_topics(&settings, &[(topic, 1)])
        .await
        .unwrap();
    produce(&settings, topic, "first", 20).await;

    let recording = Recording::default();
    let (shutdown, consumer) = start(&settings, topic, &recording, &pool);
    wait_for(&recording, "the first stream", &names("first", 20)).await;
    carrier_testkit::eventually(Duration::from_secs(20), "offset 20 stored", || {
        let pool = pool.clone();
        async move { (lease_row(&pool, topic).await == (0, Some(20))).then_some(()) }
    })
    .await;

    shutdown.cancel();
    consumer.await.unwrap();

    // 1. Recreated with fewer records than were read: the stored offset lies past the new end.
    //    (Every client of the topic is stopped first: librdkafka 2.12 can crash when a topic it
    //    knows comes back with another topic ID, as the production notes say.)
    broker.wipe().await;
    carrier_kafka::admin::ensure_topics(&settings, &[(topic, 1)])
        .await
        .unwrap();
    produce(&settings, topic, "second", 5).await;
    let recording = Recording::default();
    let (shutdown, consumer) = start(&settings, topic, &recording, &pool);
    wait_for(
        &recording,
        "the second stream, from its beginning",
        &names("second", 5),
    )
    .await;
    carrier_testkit::eventually(Duration::from_secs(20), "generation 1 at offset 5", || {
        let pool = pool.clone();
        async move { (lease_row(&pool, topic).await == (1, Some(5))).then_some(()) }
    })
    .await;
    shutdown.cancel();
    consumer.await.unwrap();

    // 2. Recreated, and the new stream already goes past the stored offset: only the anchor (a record of the old stream, not found at its offset) tells.
    //    Without it the new owner would start at offset 5 and skip the first five records.
    broker.wipe().await;
    carrier_kafka::admin::ensure_topics(&settings, &[(topic, 1)])
        .await
        .unwrap();
    produce(&settings, topic, "third", 30).await;
    let recording = Recording::default();
    let (shutdown, consumer) = start(&settings, topic, &recording, &pool);
    wait_for(
        &recording,
        "the third stream, from its beginning",
        &names("third", 30),
    )
    .await;
    carrier_testkit::eventually(Duration::from_secs(20), "generation 2 at offset 30", || {
        let pool = pool.clone();
        async move { (lease_row(&pool, topic).await == (2, Some(30))).then_some(()) }
    })
    .await;
    shutdown.cancel();
    consumer.await.unwrap();

    // 3. The same stream, restarted: no new generation, nothing read twice.
    produce(&settings, topic, "more", 3).await;
    let recording = Recording::default();
    let (shutdown, consumer) = start(&settings, topic, &recording, &pool);
    wait_for(&recording, "only what is new", &names("more", 3)).await;
    assert_eq!(
        lease_row(&pool, topic).await.0,
        2,
        "the same stream keeps its generation"
    );
    shutdown.cancel();
    consumer.await.unwrap();
}
