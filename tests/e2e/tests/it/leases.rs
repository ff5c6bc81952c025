//! Partition leases on a real Postgres: one owner at a time, taken over only after expiry or
//! release, offsets carried to the next owner, and a previous owner's writes refused.

use std::time::Duration;

use carrier_store::leases::{FenceError, Leases};
use carrier_store::sqlx::{Connection, PgConnection, PgPool};

/// A fresh migrated database: its URL and a pool.
async fn database() -> (String, PgPool) {
    let database = carrier_testkit::unique("carrier_leases_");
    let url = format!("{}/{database}", carrier_testkit::test_postgres());
    let pool = carrier_store::connect_and_migrate(&url, 4, Duration::from_secs(30))
        .await
        .expect("database");
    (url, pool)
}

#[tokio::test]
async fn a_partition_has_one_owner_until_its_lease_expires_or_is_released() {
    let (_, pool) = database().await;
    let a = Leases::new(pool.clone(), "group", "topic", "a");
    let b = Leases::new(pool.clone(), "group", "topic", "b");
    let lease = Duration::from_millis(1500);

    assert_eq!(a.heartbeat(lease).await.unwrap(), ["a"]);
    assert_eq!(b.heartbeat(lease).await.unwrap(), ["a", "b"]);

    let first = a
        .acquire(0, lease)
        .await
        .unwrap()
        .expect("a free partition is taken");
    assert_eq!(first.committed_offset, None);
    assert_eq!(
        b.acquire(0, lease).await.unwrap(),
        None,
        "a held lease is not taken"
    );
    assert_eq!(a.commit(&[(0, first.epoch, 42)]).await.unwrap(), [0]);
    assert_eq!(a.renew(&[(0, first.epoch)], lease).await.unwrap(), [0]);
    assert_eq!(
        b.commit(&[(0, first.epoch, 99)]).await.unwrap(),
        Vec::<i32>::new(),
        "only the owner commits"
    );

    // a stops renewing (killed): b takes over once the lease expired, where a left off.
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    let second = b
        .acquire(0, lease)
        .await
        .unwrap()
        .expect("an expired lease is taken");
    assert_eq!(second.epoch, first.epoch + 1);
    assert_eq!(second.committed_offset, Some(42));
    assert!(
        a.renew(&[(0, first.epoch)], lease).await.unwrap().is_empty(),
        "a lost it"
    );
    assert!(
        a.commit(&[(0, first.epoch, 50)]).await.unwrap().is_empty(),
        "a's late commit is refused"
    );
    let mut tx = pool.begin().await.unwrap();
    assert!(matches!(
        a.fence(0, first.epoch).hold(&mut tx).await,
        Err(FenceError::Lost { .. })
    ));
    drop(tx);

    // A release hands over at once.
    assert!(b.release(0, second.epoch).await.unwrap());
    let third = a
        .acquire(0, lease)
        .await
        .unwrap()
        .expect("a released lease is taken at once");
    assert_eq!(third.epoch, second.epoch + 1);
    assert_eq!(third.committed_offset, Some(42));

    a.leave().await.unwrap();
    assert_eq!(b.heartbeat(lease).await.unwrap(), ["b"]);
    let owners = carrier_store::leases::owners(&pool, "group", "topic")
        .await
        .unwrap();
    assert_eq!(owners, [(0, Some("a".to_string()), Some(42))]);
    pool.close().await;
}

#[tokio::test]
async fn a_write_under_a_fence_finishes_before_the_next_owner_takes_over() {
    let (url, pool) = database().await;
    let a = Leases::new(pool.clone(), "group", "topic", "a");
    let b = Leases::new(pool.clone(), "group", "topic", "b");
    let lease = Duration::from_millis(1000);
    let held = a.acquire(3, lease).await.unwrap().unwrap();

    // a's write transaction holds the fence while the lease runs out.
    let mut writer = PgConnection::connect(&url).await.unwrap();
    let mut tx = writer.begin().await.unwrap();
    a.fence(3, held.epoch).hold(&mut tx).await.expect("held");
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    let takeover = tokio::spawn(async move { b.acquire(3, Duration::from_secs(5)).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !takeover.is_finished(),
        "the takeover waits for the write holding the previous owner's fence"
    );
    tx.commit().await.unwrap();
    let acquired = takeover
        .await
        .unwrap()
        .unwrap()
        .expect("taken once the write committed");
    assert_eq!(acquired.epoch, held.epoch + 1);

    // Now a's fence is refused: its next write cannot land.
    let mut tx = writer.begin().await.unwrap();
    assert!(a.fence(3, held.epoch).hold(&mut tx).await.is_err());
    pool.close().await;
}

#[tokio::test]
async fn a_glance_sees_the_live_members_and_the_free_partitions() {
    let (_, pool) = database().await;
    let a = Leases::new(pool.clone(), "group", "topic", "a");
    let b = Leases::new(pool.clone(), "group", "topic", "b");
    let lease = Duration::from_secs(30);

    assert_eq!(a.glance().await.unwrap(), Default::default(), "an empty group");
    a.heartbeat(lease).await.unwrap();
    b.heartbeat(lease).await.unwrap();
    let zero = a.acquire(0, lease).await.unwrap().expect("partition 0");
    a.acquire(1, lease).await.unwrap().expect("partition 1");
    let glance = b.glance().await.unwrap();
    assert_eq!(glance.members, ["a", "b"]);
    assert!(glance.free.is_empty(), "both held: {glance:?}");

    assert!(a.release(0, zero.epoch).await.unwrap());
    a.leave().await.unwrap();
    let glance = b.glance().await.unwrap();
    assert_eq!(glance.members, ["b"], "a left");
    assert_eq!(glance.free, [0], "a released partition 0 and still holds 1");
    pool.close().await;
}

mod hand_over {
    //! Through the consumer: a member that joins gets its share as soon as the owner has
    //! drained, not at the owners' next lease tick.

    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use carrier_kafka::consumer::{
        self, ConsumerOptions, OffsetTracker, PartitionProcessor, Processor, Record,
    };
    use carrier_store::sqlx::PgPool;
    use tokio_util::sync::CancellationToken;

    /// Finishes every record at once (the topic stays empty here anyway).
    struct Finishing;

    struct FinishingPartition(Arc<OffsetTracker>);

    impl Processor for Finishing {
        fn assign(&self, tracker: Arc<OffsetTracker>) -> Box<dyn PartitionProcessor> {
            Box::new(FinishingPartition(tracker))
        }
    }

    impl PartitionProcessor for FinishingPartition {
        fn process(&mut self, record: Record) {
            self.0.finish(record.offset);
        }
    }

    /// A new topic of `partitions` on the shared broker, and the settings (lease `lease_ms`)
    /// and options of its consumer group `hand-over`.
    async fn group(
        prefix: &str,
        partitions: i32,
        lease_ms: u32,
    ) -> (carrier_config::KafkaSettings, ConsumerOptions) {
        let topic = carrier_testkit::unique(prefix);
        let settings = carrier_config::KafkaSettings {
            brokers: carrier_testkit::test_brokers(),
            enable_idempotence: false,
            session_timeout_ms: lease_ms,
            fetch_wait_max_ms: 50,
            ..Default::default()
        };
        carrier_kafka::admin::ensure_topics(&settings, &[(topic.as_str(), partitions)])
            .await
            .unwrap();
        let options = ConsumerOptions {
            topic,
            group_id: "hand-over".into(),
            client_id: "hand-over-test".into(),
            max_pending_per_partition: 100,
            handover_timeout: Duration::from_millis(500),
            drain_timeout: Duration::from_millis(500),
            commit_interval: Duration::from_millis(200),
        };
        (settings, options)
    }

    /// A member of the group (under `instance`, if given) until `shutdown`.
    fn member(
        settings: &carrier_config::KafkaSettings,
        options: &ConsumerOptions,
        pool: &PgPool,
        instance: Option<&str>,
        shutdown: &CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let settings = carrier_config::KafkaSettings {
            instance_id: instance.map(str::to_string),
            ..settings.clone()
        };
        consumer::spawn(
            &settings,
            options.clone(),
            Arc::new(Finishing),
            pool,
            shutdown.clone(),
        )
        .expect("consumer")
    }

    /// How many partitions each owner holds, most first.
    async fn shares(pool: &PgPool, topic: &str) -> Vec<usize> {
        let owners = carrier_store::leases::owners(pool, "hand-over", topic)
            .await
            .unwrap();
        let mut counts = std::collections::HashMap::<String, usize>::new();
        for owner in owners.into_iter().filter_map(|(_, owner, _)| owner) {
            *counts.entry(owner).or_default() += 1;
        }
        let mut counts: Vec<usize> = counts.into_values().collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        counts
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_that_joins_gets_its_share_before_the_owners_next_lease_tick() {
        carrier_testkit::init_test_logging();
        let (_, pool) = super::database().await;
        // A lease of 60 s: lease ticks every 15 s, glances every 3 s.
        let (settings, options) = group("leases.hand-over.", 4, 60_000).await;
        let topic = options.topic.clone();
        let shutdown = CancellationToken::new();
        let start = |shutdown: &CancellationToken| member(&settings, &options, &pool, None, shutdown);

        let first = start(&shutdown);
        carrier_testkit::eventually(Duration::from_secs(30), "the first member holds all four", || {
            let (pool, topic) = (pool.clone(), topic.clone());
            async move { (shares(&pool, &topic).await == [4]).then_some(()) }
        })
        .await;
        // The first member's next lease tick is about 15 s away.
        let joined = Instant::now();
        let second = start(&shutdown);
        carrier_testkit::eventually(
            Duration::from_secs(60),
            "two members, two partitions each",
            || {
                let (pool, topic) = (pool.clone(), topic.clone());
                async move { (shares(&pool, &topic).await == [2, 2]).then_some(()) }
            },
        )
        .await;
        let took = joined.elapsed();
        // Not a speed goal: without the glance the first member sees the join only at its next
        // tick (≥ 13 s from here) and the second takes the released leases at its own (15 s).
        assert!(
            took < Duration::from_secs(12),
            "the hand-over waited for a lease tick: {took:?}"
        );

        shutdown.cancel();
        first.await.unwrap();
        second.await.unwrap();
        pool.close().await;
    }

    /// Which instance holds each partition of `topic` now (partition order).
    async fn instances(pool: &PgPool, topic: &str) -> Vec<Option<String>> {
        carrier_store::sqlx::query_scalar(
            "SELECT m.instance_id FROM partition_leases l
               LEFT JOIN consumer_members m
                 ON m.group_id = l.group_id AND m.topic = l.topic AND m.member_id = l.owner
              WHERE l.group_id = 'hand-over' AND l.topic = $1 AND l.expires_at > now()
              ORDER BY l.partition",
        )
        .bind(topic)
        .fetch_all(pool)
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shares_are_sticky_and_an_instance_restarted_under_its_name_gets_its_share_back() {
        carrier_testkit::init_test_logging();
        let (_, pool) = super::database().await;
        let (settings, options) = group("leases.sticky.", 12, 6_000).await;
        let topic = options.topic.clone();
        let start = |instance: &str| {
            let shutdown = CancellationToken::new();
            let task = member(&settings, &options, &pool, Some(instance), &shutdown);
            (shutdown, task)
        };
        let settled = |wanted: &'static [usize]| {
            let (pool, topic) = (pool.clone(), topic.clone());
            async move {
                let held = instances(&pool, &topic).await;
                (held.len() == 12
                    && held.iter().all(Option::is_some)
                    && shares(&pool, &topic).await == wanted)
                    .then_some(held)
            }
        };

        let mut members: Vec<_> = ["pod-a", "pod-b", "pod-c"]
            .iter()
            .map(|name| start(name))
            .collect();
        let three = carrier_testkit::eventually(Duration::from_secs(60), "three shares of four", || {
            settled(&[4, 4, 4])
        })
        .await;

        // pod-b stops (a StatefulSet pod being replaced): its four partitions move to the others,
        // and theirs stay where they were.
        let (b_shutdown, b_task) = members.remove(1);
        b_shutdown.cancel();
        b_task.await.unwrap();
        let two =
            carrier_testkit::eventually(Duration::from_secs(60), "two shares of six", || settled(&[6, 6]))
                .await;
        for (partition, (before, after)) in three.iter().zip(&two).enumerate() {
            if before.as_deref() != Some("pod-b") {
                assert_eq!(
                    before, after,
                    "partition {partition} of a remaining pod moved: {three:?} → {two:?}"
                );
            }
        }

        // pod-b comes back under its name: it gets exactly its old share, and only that moves.
        let (b_shutdown, b_task) = start("pod-b");
        let back = carrier_testkit::eventually(Duration::from_secs(60), "three shares again", || {
            settled(&[4, 4, 4])
        })
        .await;
        assert_eq!(back, three, "the same share back under the same name");

        members.push((b_shutdown, b_task));
        for (shutdown, _) in &members {
            shutdown.cancel();
        }
        for (_, task) in members {
            task.await.unwrap();
        }
        pool.close().await;
    }
}
