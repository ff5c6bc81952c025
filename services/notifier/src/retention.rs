//! Log retention: a periodic purge deletes the logs (and their attempts) whose message arrived
//! more than `log_retention_days` ago.
//!
//! The purge deletes in batches of `log_purge_batch_size` logs, each batch its own short
//! transaction, oldest first (index `logs_by_received`), so it never holds many row locks or a
//! long transaction while the notifier keeps writing. Rows are claimed with `FOR UPDATE SKIP
//! LOCKED`: several notifier replicas may purge at once without waiting on each other or on a
//! batch write that holds a row.
//!
//! Logs still `queued` are kept, however old: their destination is still trying (a production
//! destination held for longer than the retention), and their record must outlive it. They are
//! purged once they end and are past the retention.
//!
//! Alerts go with the same retention: an incident's two alerts (and their outbox rows) are
//! deleted once its `recovered` alert is older than the retention and every channel has sent or
//! skipped both. An open incident's `failing` alert is kept, however old: the dispatcher sends a
//! `recovered` only after its `failing`.
//!
//! Manual retry reads a message back from `carrier.deliveries`; that topic's retention must be
//! at least this one for a retry to work on every log the store still shows (README, "Kafka in
//! production").

use std::time::Duration;

use carrier_store::sqlx::{self, PgPool};
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

/// When and how much to purge.
#[derive(Debug, Clone, Copy)]
pub struct RetentionSettings {
    /// Logs received longer ago than this are deleted; 0 keeps logs forever.
    pub retention_days: u32,
    /// Time between purge passes.
    pub interval: Duration,
    /// Logs deleted per transaction.
    pub batch_size: i64,
}

/// Deletes one batch: at most `batch_size` finished logs received before `cutoff`, and their
/// attempts. Returns how many logs it deleted.
async fn purge_batch(pool: &PgPool, cutoff: DateTime<Utc>, batch_size: i64) -> Result<u64, sqlx::Error> {
    let deleted = sqlx::query(
        "WITH doomed AS (
             SELECT id FROM logs
             WHERE received_at < $1 AND status <> 'queued'
             ORDER BY received_at
             LIMIT $2
             FOR UPDATE SKIP LOCKED
         ), doomed_attempts AS (
             DELETE FROM attempts WHERE log_id IN (SELECT id FROM doomed)
         )
         DELETE FROM logs WHERE id IN (SELECT id FROM doomed)",
    )
    .bind(cutoff)
    .bind(batch_size)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(deleted)
}

/// Deletes every finished log received before `cutoff` (with its attempts), `batch_size` at a
/// time, until a batch comes back short. Returns how many logs it deleted.
pub async fn purge_older_than(
    pool: &PgPool,
    cutoff: DateTime<Utc>,
    batch_size: i64,
) -> Result<u64, sqlx::Error> {
    carrier_store::in_batches(batch_size as u64, || purge_batch(pool, cutoff, batch_size)).await
}

/// Deletes the alerts of finished incidents whose `recovered` alert was raised before `cutoff`
/// and is fully sent (both alerts, every channel), `batch_size` incidents per transaction.
/// Returns how many alerts it deleted.
pub async fn purge_alerts_older_than(
    pool: &PgPool,
    cutoff: DateTime<Utc>,
    batch_size: i64,
) -> Result<u64, sqlx::Error> {
    // Two alerts per incident: a batch is short when it deleted fewer incidents than asked.
    carrier_store::in_batches(batch_size as u64 * 2, || async {
        // The outbox rows and the alerts go in one statement: the foreign key is checked at
        // its end.
        Ok(sqlx::query(
            "WITH doomed AS (
                 SELECT recovered.incident_id FROM alerts recovered
                 WHERE recovered.kind = 'recovered' AND recovered.created_at < $1
                   AND NOT EXISTS (
                       SELECT 1 FROM alerts alert JOIN alert_deliveries delivery ON delivery.alert_id = alert.id
                       WHERE alert.incident_id = recovered.incident_id AND delivery.status = 'pending')
                 LIMIT $2
             ), doomed_deliveries AS (
                 DELETE FROM alert_deliveries WHERE alert_id IN (
                     SELECT id FROM alerts WHERE incident_id IN (SELECT incident_id FROM doomed))
             )
             DELETE FROM alerts WHERE incident_id IN (SELECT incident_id FROM doomed)",
        )
        .bind(cutoff)
        .bind(batch_size)
        .execute(pool)
        .await?
        .rows_affected())
    })
    .await
}

/// Deletes the log events set aside in `dead_letter_events` before `cutoff`: they hold what a
/// log's attempts hold (a receiver's error text and response excerpt can quote patient data),
/// so they are kept no longer than the logs.
pub async fn purge_dead_letters_older_than(pool: &PgPool, cutoff: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM dead_letter_events WHERE created_at < $1")
            .bind(cutoff)
            .execute(pool)
            .await?
            .rows_affected(),
    )
}

/// Purges every `interval` until `shutdown` (through `carrier_store::purge_every`, which logs and
/// counts each pass); the first pass runs at start.
pub async fn run(pool: PgPool, settings: RetentionSettings, shutdown: CancellationToken) {
    if settings.retention_days == 0 {
        tracing::info!("log retention off (log_retention_days = 0): logs are kept forever");
        return;
    }
    let retention = chrono::Duration::days(i64::from(settings.retention_days));
    carrier_store::purge_every("logs", settings.interval, shutdown, move || {
        let pool = pool.clone();
        async move {
            let cutoff = Utc::now() - retention;
            let logs = purge_older_than(&pool, cutoff, settings.batch_size).await?;
            let alerts = purge_alerts_older_than(&pool, cutoff, settings.batch_size).await?;
            if alerts > 0 {
                tracing::info!(alerts, %cutoff, "alerts of incidents past retention deleted");
            }
            let dead_letters = purge_dead_letters_older_than(&pool, cutoff).await?;
            if dead_letters > 0 {
                tracing::info!(dead_letters, %cutoff, "dead-lettered log events past retention deleted");
            }
            Ok(logs)
        }
    })
    .await;
}
