//! Large message bodies, kept out of Kafka (`message_bodies`).
//!
//! Why: a 10 MiB body would need every Kafka client and the brokers to allow 12 MiB records, and
//! Tansu 0.6 cannot hand out a record of 5 MiB or more at all (its fetch responses are capped at
//! 5 MiB: the record is acknowledged, then never read, and blocks its partition). So ingress
//! stores a body over `inline_body_bytes` here before the durable write, the Kafka records carry
//! `body_stored = true` and no body, and delivery reads the body when it sends. Records stay
//! small, and a body is written once however many destinations it goes to.
//!
//! Bodies are purged after ingress's `stored_body_retention_days`, except those a message still
//! waiting somewhere needs: a parked task names its body (`parked_tasks.body_message_id`,
//! written by delivery's parking store), and a task still in a lane (the head of a failing
//! queue, retried in memory with backoff) has a `queued` log. A held queue delivers its backlog
//! whenever it is released, however long it was held.

use std::time::Duration;

use sqlx::PgPool;

/// Stores `body` under `message_id`. Storing the same message again (an idempotent retry that
/// reuses its IDs) keeps the first copy: the request fingerprint guarantees they are equal.
pub async fn store(pool: &PgPool, message_id: &str, body: &[u8]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO message_bodies (message_id, body) VALUES ($1, $2) ON CONFLICT (message_id) DO NOTHING",
    )
    .bind(message_id)
    .bind(body)
    .execute(pool)
    .await?;
    Ok(())
}

/// The stored body of `message_id`; `None` if it was never stored or has been purged.
pub async fn load(pool: &PgPool, message_id: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
    sqlx::query_scalar("SELECT body FROM message_bodies WHERE message_id = $1")
        .bind(message_id)
        .fetch_optional(pool)
        .await
}

/// Deletes bodies older than `retention`, 1,000 rows per statement; returns how many. A body
/// that a message still waiting needs is kept whatever its age, or its queue could never deliver
/// it: one a parked task names (`parked_tasks.body_message_id`: the task waits in a held queue,
/// failing or paused, however long), and one whose message has a log still `queued` (a task in
/// a lane's memory, retried with backoff, is not parked; the log store keeps every queued log
/// past its retention). It becomes purgeable once every log of its message is final and its last
/// parked task removed.
///
/// Message IDs are UUIDs (ingress makes them); the guarded cast keeps one odd row from failing
/// the whole purge, and lets the lookup use `logs_by_message`.
pub async fn purge_older_than(pool: &PgPool, retention: Duration) -> Result<u64, sqlx::Error> {
    crate::in_batches(1000, || async {
        Ok(sqlx::query(
            "DELETE FROM message_bodies WHERE message_id IN (
                SELECT b.message_id FROM message_bodies b
                WHERE b.created_at < now() - make_interval(secs => $1)
                  AND NOT EXISTS (SELECT 1 FROM parked_tasks p WHERE p.body_message_id = b.message_id)
                  AND NOT EXISTS (SELECT 1 FROM logs l
                                   WHERE l.message_id = CASE WHEN b.message_id ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                                                             THEN b.message_id::uuid END
                                     AND l.status = 'queued')
                LIMIT 1000)",
        )
        .bind(retention.as_secs_f64())
        .execute(pool)
        .await?
        .rows_affected())
    })
    .await
}
