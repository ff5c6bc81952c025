//! Doorbells: a producer tells the consumers of a partition that it wrote to it, so that an
//! idle partition (`consumer/idle.rs`) is fetched again at once rather than at its next peek.
//!
//! Only for brokers that hold every fetch for its whole wait (Tansu 0.6): with
//! `kafka.idle_after_ms = 0` (Apache Kafka) nothing rings and nothing listens.
//!
//! The bell is Postgres's `NOTIFY`, which every Carrier service already talks to: on channel
//! [`CHANNEL`], the payload `<topic>\t<partition>,<partition>...`. A doorbell only makes a
//! record arrive sooner: one that is lost (a producer outside Carrier, a listening connection
//! that dropped, Postgres down) leaves the record to the next peek, at most
//! `kafka.idle_peek_interval_ms` later. Nothing else depends on it.
//!
//! Why not on every write: a busy partition is never idle, so one ring per partition every
//! [`COALESCE`] is enough — the first write after a quiet spell rings within that, and later
//! ones find the partition fetched. Under load a process sends at most 50 `NOTIFY`s a second.
//!
//! This file is the ringing side; consumers listen in `consumer/doorbells.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use carrier_config::KafkaSettings;
use carrier_store::sqlx::postgres::PgPool;
use tokio::sync::Notify;

/// The Postgres channel of every doorbell.
pub const CHANNEL: &str = "carrier_records";

/// The shortest time between two rings of one process.
pub const COALESCE: Duration = Duration::from_millis(20);

/// One process's bell for the topics under one prefix, in one database.
struct Bell {
    prefix: String,
    rung: Arc<Mutex<BTreeMap<String, BTreeSet<i32>>>>,
    wake: Arc<Notify>,
}

fn bells() -> &'static Mutex<Vec<Bell>> {
    static BELLS: OnceLock<Mutex<Vec<Bell>>> = OnceLock::new();
    BELLS.get_or_init(Default::default)
}

/// Makes this process's producers ring, through `pool`'s database, for the topics under
/// `settings.topic_prefix`, when idle partitions are left unfetched
/// (`kafka.idle_after_ms`); otherwise does nothing. Call once per service, on its runtime.
/// (Keyed by prefix: the tests run several stacks, each with its own prefix and database, in
/// one process.)
pub fn install(settings: &KafkaSettings, pool: &PgPool) {
    if settings.idle_after_ms == 0 {
        return;
    }
    let mut bells = bells().lock().expect("bells lock");
    if bells.iter().any(|bell| bell.prefix == settings.topic_prefix) {
        return;
    }
    let bell = Bell {
        prefix: settings.topic_prefix.clone(),
        rung: Default::default(),
        wake: Arc::new(Notify::new()),
    };
    tokio::spawn(ring_from(pool.clone(), bell.rung.clone(), bell.wake.clone()));
    bells.push(bell);
}

/// A producer wrote to `topic`'s `partition` (a no-op unless [`install`] set a bell up for it).
pub(crate) fn ring(topic: &str, partition: i32) {
    let bells = bells().lock().expect("bells lock");
    let Some(bell) = bells
        .iter()
        .filter(|bell| topic.starts_with(&bell.prefix))
        .max_by_key(|bell| bell.prefix.len())
    else {
        return;
    };
    let added = bell
        .rung
        .lock()
        .expect("rung lock")
        .entry(topic.to_owned())
        .or_default()
        .insert(partition);
    if added {
        bell.wake.notify_one();
    }
}

/// Sends what was rung, at most once every [`COALESCE`].
async fn ring_from(pool: PgPool, rung: Arc<Mutex<BTreeMap<String, BTreeSet<i32>>>>, wake: Arc<Notify>) {
    let mut failures = 0u64;
    loop {
        wake.notified().await;
        let topics = std::mem::take(&mut *rung.lock().expect("rung lock"));
        for (topic, partitions) in topics {
            let partitions: Vec<String> = partitions.iter().map(i32::to_string).collect();
            let payload = format!("{topic}\t{}", partitions.join(","));
            let sent = carrier_store::sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(&payload)
                .execute(&pool)
                .await;
            if let Err(error) = sent {
                failures += 1;
                // Only latency is at stake (peeks find the records): say so, but not per write.
                if failures.is_power_of_two() {
                    tracing::warn!(%error, failures, "ringing a doorbell failed: records reach idle consumers at their next peek (kafka.idle_peek_interval_ms)");
                }
            }
        }
        tokio::time::sleep(COALESCE).await;
    }
}

/// The partitions of a doorbell's payload, when it is `topic`'s.
pub(crate) fn partitions_of(payload: &str, topic: &str) -> Option<Vec<i32>> {
    let (rung, partitions) = payload.split_once('\t')?;
    (rung == topic).then(|| {
        partitions
            .split(',')
            .filter_map(|partition| partition.parse().ok())
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_names_its_topic_and_partitions() {
        assert_eq!(
            partitions_of("carrier.inbound\t0,3", "carrier.inbound"),
            Some(vec![0, 3])
        );
        assert_eq!(partitions_of("carrier.inbound\t0,3", "carrier.deliveries"), None);
        assert_eq!(partitions_of("carrier.inbound", "carrier.inbound"), None);
        assert_eq!(
            partitions_of("carrier.inbound\tx,2", "carrier.inbound"),
            Some(vec![2])
        );
    }
}
