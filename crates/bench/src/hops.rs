//! Two bare produce → consume hops on the broker Carrier uses: what the broker itself allows
//! end to end, measured in the same run as Carrier's end-to-end latency (`main.rs`).
//!
//! A sender writes `SentMicros` records at a fixed rate to a topic with as many partitions as
//! `carrier.inbound`; a forwarder consumes them and writes each to a second topic with as many
//! partitions as `carrier.deliveries`; a sink consumes that and records send → arrival. Carrier's
//! path has the same two hops (ingress → router → delivery) plus its own work and the receiver's
//! HTTP request. Clients use Carrier's defaults: `acks=all`, `linger.ms` 2,
//! `fetch.wait.max.ms` 10 (`KafkaSettings`), every partition assigned (no group).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use carrier_kafka::rdkafka::config::ClientConfig;
use carrier_kafka::rdkafka::consumer::{Consumer, StreamConsumer};
use carrier_kafka::rdkafka::message::Message;
use carrier_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use carrier_kafka::rdkafka::{Offset, TopicPartitionList};

use crate::{percentile, unix_micros};

/// The p50 and p99 (ms) of `rate` records/s for `seconds` through two hops, and how many arrived.
pub struct Hops {
    pub sent: usize,
    pub arrived: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

fn producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    let defaults = carrier_config::KafkaSettings::default();
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("linger.ms", defaults.linger_ms.to_string())
        .set("enable.idempotence", "false")
        .create()?)
}

/// A consumer of every partition of `topic`, from its end.
fn consumer(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<StreamConsumer> {
    let defaults = carrier_config::KafkaSettings::default();
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("bench-hops-{topic}"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", defaults.fetch_wait_max_ms.to_string())
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment.add_partition_offset(topic, partition, Offset::End)?;
    }
    consumer.assign(&assignment)?;
    Ok(consumer)
}

/// Hands every record `consumer` reads to `handle` until `stop`.
fn consume(
    consumer: StreamConsumer,
    stop: tokio_util::sync::CancellationToken,
    mut handle: impl FnMut(&carrier_kafka::rdkafka::message::BorrowedMessage<'_>) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                message = consumer.recv() => message,
                _ = stop.cancelled() => return,
            };
            if let Ok(message) = message {
                handle(&message);
            }
        }
    })
}

pub async fn two_hops(
    brokers: &str,
    (first_partitions, second_partitions): (i32, i32),
    rate: u64,
    seconds: u64,
) -> anyhow::Result<Hops> {
    // Reused across runs (read from their ends): every new topic is more for the broker to keep.
    let first = format!("bench.hop-a-{first_partitions}");
    let second = format!("bench.hop-b-{second_partitions}");
    let settings = carrier_config::KafkaSettings {
        brokers: brokers.to_string(),
        ..Default::default()
    };
    carrier_kafka::admin::ensure_topics(
        &settings,
        &[(&first, first_partitions), (&second, second_partitions)],
    )
    .await?;

    let stop = tokio_util::sync::CancellationToken::new();
    // Hop 1 → hop 2: each record forwarded as it comes.
    let forwarder = {
        let producer = producer(brokers)?;
        let second = second.clone();
        consume(
            consumer(brokers, &first, first_partitions)?,
            stop.clone(),
            move |message| {
                let payload = message.payload().unwrap_or_default().to_vec();
                let key = message.key().unwrap_or_default().to_vec();
                let producer = producer.clone();
                let second = second.clone();
                tokio::spawn(async move {
                    let _ = producer
                        .send(
                            FutureRecord::to(&second).key(&key).payload(&payload),
                            Duration::from_secs(10),
                        )
                        .await;
                });
            },
        )
    };
    // Hop 2's sink: send → arrival of every record.
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let arrivals = arrivals.clone();
        consume(
            consumer(brokers, &second, second_partitions)?,
            stop.clone(),
            move |message| {
                let sent = std::str::from_utf8(message.payload().unwrap_or_default())
                    .ok()
                    .and_then(|text| text.parse::<i64>().ok());
                if let Some(sent) = sent {
                    let micros = (unix_micros() - sent).max(0) as u64;
                    arrivals.lock().expect("lock").push(Duration::from_micros(micros));
                }
            },
        )
    };

    let sender = producer(brokers)?;
    let send = |sequence: usize| {
        let sender = sender.clone();
        let first = first.clone();
        async move {
            let key = sequence.to_string();
            let payload = unix_micros().to_string();
            sender
                .send(
                    FutureRecord::to(&first).key(&key).payload(&payload),
                    Duration::from_secs(10),
                )
                .await
                .is_ok()
        }
    };
    // Warm-up: until records make it through both hops (the consumers' positions are resolved).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut sequence = 0;
    while arrivals.lock().expect("lock").len() < 10 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no record made it through the two bare hops in 60 s"
        );
        send(sequence).await;
        sequence += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    arrivals.lock().expect("lock").clear();

    let total = (rate * seconds) as usize;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sends = Vec::with_capacity(total);
    for index in 0..total {
        ticker.tick().await;
        sends.push(tokio::spawn(send(sequence + index)));
    }
    let mut sent = 0;
    for handle in sends {
        sent += usize::from(handle.await?);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while arrivals.lock().expect("lock").len() < sent && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    let _ = tokio::join!(forwarder, sink);
    let mut latencies = arrivals.lock().expect("lock").clone();
    latencies.sort();
    Ok(Hops {
        sent,
        arrived: latencies.len(),
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
    })
}
