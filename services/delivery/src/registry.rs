//! The worker registry (`delivery_workers` in Postgres): which worker owns which partitions of
//! `carrier.deliveries`, and where its control service listens. Ingress reads it to send an
//! operator's request to the owner of a destination's lane.
//!
//! Each worker refreshes its row every `HEARTBEAT` (so a rebalance shows within that time) and
//! deletes it when it stops cleanly. A crashed worker's row ages out: readers ignore rows older
//! than `carrier_store::LIVE_WORKER_SECS`. A stale row is harmless: whoever is asked answers from
//! the stored state, and controls are stored, so the real owner obeys them anyway.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use carrier_config::KafkaSettings;
use carrier_store::sqlx::{self, PgPool};
use tokio_util::sync::CancellationToken;

use crate::lanes::LaneDirectory;

const HEARTBEAT: Duration = Duration::from_secs(2);
/// How often the partition count of `carrier.deliveries` is read again (partitions can be added).
const PARTITION_COUNT_REFRESH: Duration = Duration::from_secs(60);

pub struct Registry {
    pub pool: PgPool,
    pub worker_id: String,
    pub control_url: String,
    pub directory: Arc<LaneDirectory>,
    pub partition_count: Arc<AtomicI32>,
    pub kafka: KafkaSettings,
    pub deliveries_topic: String,
}

/// A name for this worker: the host (the pod's name on Kubernetes) and a random suffix, so two
/// processes on one host differ.
pub fn worker_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "delivery".into());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}", &suffix[..8])
}

impl Registry {
    /// Keeps this worker's row fresh until `shutdown`, then removes it.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut healthy = true;
        let mut last_count_read: Option<tokio::time::Instant> = None;
        loop {
            // Registered first (ingress can reach this worker at once), then the partition
            // count, which needs the broker's metadata and may take a while.
            self.heartbeat_logged(&mut healthy).await;
            if last_count_read.is_none_or(|at| at.elapsed() >= PARTITION_COUNT_REFRESH)
                || self.partition_count.load(Ordering::Relaxed) == 0
            {
                match carrier_kafka::admin::partition_count(&self.kafka, &self.deliveries_topic).await {
                    Ok(count) if count > 0 => {
                        let changed =
                            self.partition_count.swap(count as i32, Ordering::Relaxed) != count as i32;
                        last_count_read = Some(tokio::time::Instant::now());
                        if changed {
                            self.heartbeat_logged(&mut healthy).await;
                        }
                    }
                    Ok(_) => tracing::warn!(topic = %self.deliveries_topic, "topic has no partitions yet"),
                    Err(error) => {
                        tracing::warn!(%error, "cannot read the partition count of the deliveries topic")
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(HEARTBEAT) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        if let Err(error) = sqlx::query("DELETE FROM delivery_workers WHERE worker_id = $1")
            .bind(&self.worker_id)
            .execute(&self.pool)
            .await
        {
            tracing::warn!(%error, "could not remove this worker's registry row; it ages out");
        }
    }

    /// Refreshes the row; logs when that starts or stops working (not every failure).
    async fn heartbeat_logged(&self, healthy: &mut bool) {
        match self.heartbeat().await {
            Ok(()) if !*healthy => {
                tracing::info!(worker_id = %self.worker_id, "worker registry reachable again");
                *healthy = true;
            }
            Ok(()) => {}
            Err(error) if *healthy => {
                // Operator requests then reach any worker, which answers from the stored
                // state; deliveries are not affected.
                tracing::warn!(%error, worker_id = %self.worker_id, "cannot refresh this worker's registry row");
                *healthy = false;
            }
            Err(_) => {}
        }
    }

    async fn heartbeat(&self) -> Result<(), sqlx::Error> {
        let partitions = self.directory.owned_partitions();
        crate::metrics::metrics()
            .owned_partitions
            .set(partitions.len() as i64);
        sqlx::query(
            "INSERT INTO delivery_workers (worker_id, control_url, partitions, partition_count)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (worker_id) DO UPDATE SET control_url = EXCLUDED.control_url,
                partitions = EXCLUDED.partitions, partition_count = EXCLUDED.partition_count,
                heartbeat_at = now()",
        )
        .bind(&self.worker_id)
        .bind(&self.control_url)
        .bind(&partitions)
        .bind(self.partition_count.load(Ordering::Relaxed))
        .execute(&self.pool)
        .await?;
        sqlx::query("DELETE FROM delivery_workers WHERE heartbeat_at < now() - interval '1 hour'")
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
