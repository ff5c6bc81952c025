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
