//! Consumers listen for the doorbells their topic's producers ring (`crate::doorbell`): an idle
//! partition (`idle.rs`) whose doorbell rang is fetched again at once.

use std::sync::{Arc, Weak};
use std::time::Duration;

use carrier_store::sqlx::postgres::{PgListener, PgPool};
use tokio_util::sync::CancellationToken;

use super::fetcher::Fetcher;
use super::metrics::metrics;
use crate::doorbell;

/// Listens, on a connection of its own from `pool`, for the doorbells of `consumer`'s topic,
/// until `shutdown` or until the consumer is gone.
pub(crate) fn listen(pool: PgPool, consumer: Arc<Fetcher>, shutdown: CancellationToken) {
    let topic = consumer.options.topic.clone();
    let consumer = Arc::downgrade(&consumer);
    tokio::spawn(async move {
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = listen_until_gone(&pool, &topic, consumer) => {}
        }
    });
}

async fn listen_until_gone(pool: &PgPool, topic: &str, consumer: Weak<Fetcher>) {
    let mut listener = loop {
        let connected = async {
            let mut listener = PgListener::connect_with(pool).await?;
            listener.listen(doorbell::CHANNEL).await?;
            Ok::<_, carrier_store::sqlx::Error>(listener)
        };
        match connected.await {
            Ok(listener) => break listener,
            Err(error) => {
                tracing::warn!(%error, topic, "listening for doorbells failed (retrying in 5 s): idle partitions are found by their peeks meanwhile");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
        if consumer.strong_count() == 0 {
            return;
        }
    };
    tracing::debug!(topic, channel = doorbell::CHANNEL, "listening for doorbells");
    loop {
        let heard = listener.try_recv().await;
        let Some(consumer) = consumer.upgrade() else {
            return;
        };
        match heard {
            Ok(Some(notification)) => {
                if let Some(partitions) = doorbell::partitions_of(notification.payload(), topic) {
                    metrics().doorbells.with_label_values(&[topic, "rang"]).inc();
                    consumer.wake(&partitions);
                }
            }
            // The connection was lost and is being opened again: what rang meanwhile is gone.
            Ok(None) => {
                metrics()
                    .doorbells
                    .with_label_values(&[topic, "reconnected"])
                    .inc();
                tracing::info!(
                    topic,
                    "the doorbell connection was lost; every partition is fetched again"
                );
                consumer.wake_all();
            }
            Err(error) => {
                tracing::warn!(%error, topic, "listening for doorbells failed (retrying in 1 s)");
                drop(consumer);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
