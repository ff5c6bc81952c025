//! The parking store (Postgres): a held destination's backlog, in offset order, and the state
//! of held queues that `GET /v1/destinations/{id}/queue` shows.
//! See `lanes/design.md` for when tasks are parked and how they drain.

use carrier_proto::records_v1::DeliveryTask;
use carrier_store::leases::{Fence, FenceError};
use carrier_store::sqlx::{self, PgPool, Row};
use prost::Message;
use uuid::Uuid;

/// Where a task was read: the generation of its partition's stream and its offset there. Tasks
/// of a destination are in this order (an older generation's all come first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub generation: i64,
    pub offset: i64,
}

impl Position {
    /// Before every parked row.
    pub const START: Position = Position {
        generation: -1,
        offset: -1,
    };
}

/// A parked task: where it was read in `carrier.deliveries`, and the task itself.
pub struct ToPark {
    pub position: Position,
    pub task: DeliveryTask,
}

#[derive(Clone)]
pub struct ParkingStore {
    pool: PgPool,
}

fn uuid(text: &str) -> Uuid {
    Uuid::parse_str(text).unwrap_or_default()
}

impl ParkingStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The Postgres pool (also where stored message bodies are read).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Stores `tasks` (of any destinations of `partition`) in one transaction. Storing a task
    /// that is already parked changes nothing.
    ///
    /// One `INSERT` per [`PARK_STATEMENT_ROWS`] rows or [`PARK_STATEMENT_BYTES`] of encoded
    /// tasks, whichever comes first: a connection's write buffer grows to the largest statement
    /// it ever sent and keeps that size, so one `INSERT` of a whole backlog (2,000 tasks and
    /// more) left ~19 MiB behind on each pooled connection that carried one (valgrind massif
    /// under `carrier-bench delivery`).
    pub async fn park(
        &self,
        fence: Option<&Fence>,
        partition: i32,
        tasks: &[ToPark],
    ) -> Result<(), FenceError> {
        let encoded: Vec<Vec<u8>> = tasks.iter().map(|parked| parked.task.encode_to_vec()).collect();
        let mut tx = fenced(&self.pool, fence).await?;
        let mut start = 0;
        while start < tasks.len() {
            let end = statement_end(&encoded, start);
            insert_parked(&mut tx, partition, &tasks[start..end], &encoded[start..end]).await?;
            start = end;
        }
        Ok(tx.commit().await?)
    }

    /// The next parked tasks of a destination after `after`, oldest first: at most `limit` of
    /// them and, past the first, no more than `max_bytes` of task bytes in all (so a batch of
    /// large bodies does not fill the worker's memory).
    pub async fn next(
        &self,
        destination_id: &str,
        after: Position,
        limit: i64,
        max_bytes: i64,
    ) -> Result<Vec<ToPark>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT generation, task_offset, task FROM (
                SELECT generation, task_offset, task,
                       sum(octet_length(task)) OVER (ORDER BY generation, task_offset) - octet_length(task) AS before
                FROM (SELECT generation, task_offset, task FROM parked_tasks
                      WHERE destination_id = $1 AND (generation, task_offset) > ($5, $2)
                      ORDER BY generation, task_offset LIMIT $3) AS head
             ) AS batch WHERE before < $4 ORDER BY generation, task_offset",
        )
        .bind(uuid(destination_id))
        .bind(after.offset)
        .bind(limit)
        .bind(max_bytes)
        .bind(after.generation)
        .fetch_all(&self.pool)
        .await?;
        let mut tasks = Vec::with_capacity(rows.len());
        for row in rows {
            let bytes: Vec<u8> = row.get("task");
            match DeliveryTask::decode(bytes.as_slice()) {
                Ok(task) => tasks.push(ToPark {
                    position: Position {
                        generation: row.get("generation"),
                        offset: row.get("task_offset"),
                    },
                    task,
                }),
                Err(error) => {
                    tracing::error!(%error, destination_id, "undecodable parked task left in place")
                }
            }
        }
        Ok(tasks)
    }

    /// Removes tasks whose logs are final.
    pub async fn remove_many(
        &self,
        fence: Option<&Fence>,
        destination_id: &str,
        positions: &[Position],
    ) -> Result<(), FenceError> {
        let (generations, offsets): (Vec<i64>, Vec<i64>) =
            positions.iter().map(|p| (p.generation, p.offset)).unzip();
        let mut tx = fenced(&self.pool, fence).await?;
        sqlx::query(
            "DELETE FROM parked_tasks WHERE destination_id = $1
                AND (generation, task_offset) IN (SELECT * FROM UNNEST($2::bigint[], $3::bigint[]))",
        )
        .bind(uuid(destination_id))
        .bind(&generations)
        .bind(&offsets)
        .execute(&mut *tx)
        .await?;
        Ok(tx.commit().await?)
    }

    /// Destinations of `partition` with parked tasks: their lanes start in parked mode.
    pub async fn parked_destinations(&self, partition: i32) -> Result<Vec<String>, sqlx::Error> {
        let rows = sqlx::query("SELECT DISTINCT destination_id FROM parked_tasks WHERE partition = $1")
            .bind(partition)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|row| row.get::<Uuid, _>("destination_id").to_string())
            .collect())
    }
}

/// Why a destination's queue is held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HeldReason {
    #[default]
    Failing,
    Operator,
}

impl HeldReason {
    pub fn as_str(self) -> &'static str {
        match self {
            HeldReason::Failing => "failing",
            HeldReason::Operator => "operator",
        }
    }

    fn parse(text: &str) -> Self {
        if text == "operator" {
            HeldReason::Operator
        } else {
            HeldReason::Failing
        }
    }
}

/// The head of a held queue, as the operator sees it. The owning worker keeps it in its lane
/// (the live view) and in `destination_queues` (what survives it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeldHead {
    pub destination_id: String,
    pub reason: HeldReason,
    /// When the queue became held (kept while the same incident goes on).
    pub since_ms: i64,
    pub log_id: String,
    /// The head's task: empty for its log's original task, else the manual retry's ID.
    pub retry_id: String,
    pub attempts: u32,
    pub next_attempt_at_ms: Option<i64>,
    /// When its last attempt started (a "retry now" older than that has been used).
    pub last_attempt_at_ms: Option<i64>,
    pub last_error: String,
}

impl ParkingStore {
    /// Records (or refreshes) a held queue; `held_since` keeps its first value.
    pub async fn record_held(&self, fence: Option<&Fence>, head: &HeldHead) -> Result<(), FenceError> {
        use carrier_store::sqlx::types::chrono::DateTime;
        let mut tx = fenced(&self.pool, fence).await?;
        sqlx::query(
            "INSERT INTO destination_queues (destination_id, reason, held_since, head_log_id, head_attempts,
                next_attempt_at, last_error, head_retry_id, last_attempt_at)
             VALUES ($1, $2, $7, $3, $4, $5, $6, $8, $9)
             ON CONFLICT (destination_id) DO UPDATE SET
                reason = EXCLUDED.reason, head_log_id = EXCLUDED.head_log_id, head_attempts = EXCLUDED.head_attempts,
                next_attempt_at = EXCLUDED.next_attempt_at, last_error = EXCLUDED.last_error,
                head_retry_id = EXCLUDED.head_retry_id, last_attempt_at = EXCLUDED.last_attempt_at,
                updated_at = now()",
        )
        .bind(uuid(&head.destination_id))
        .bind(head.reason.as_str())
        .bind(uuid(&head.log_id))
        .bind(head.attempts as i32)
        .bind(head.next_attempt_at_ms.and_then(DateTime::from_timestamp_millis))
        .bind((!head.last_error.is_empty()).then_some(head.last_error.as_str()))
        .bind(DateTime::from_timestamp_millis(head.since_ms))
        .bind(&head.retry_id)
        .bind(head.last_attempt_at_ms.and_then(DateTime::from_timestamp_millis))
        .execute(&mut *tx)
        .await?;
        Ok(tx.commit().await?)
    }

    /// The stored state of a held queue (written by whichever worker held it last).
    pub async fn held(&self, destination_id: &str) -> Result<Option<HeldHead>, sqlx::Error> {
        use carrier_store::sqlx::types::chrono::{DateTime, Utc};
        let row = sqlx::query(
            "SELECT reason, held_since, head_log_id, head_attempts, next_attempt_at, last_error,
                    head_retry_id, last_attempt_at
             FROM destination_queues WHERE destination_id = $1",
        )
        .bind(uuid(destination_id))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| HeldHead {
            destination_id: destination_id.to_string(),
            reason: HeldReason::parse(row.get("reason")),
            since_ms: row.get::<DateTime<Utc>, _>("held_since").timestamp_millis(),
            log_id: row
                .get::<Option<Uuid>, _>("head_log_id")
                .map(|id| id.to_string())
                .unwrap_or_default(),
            retry_id: row.get("head_retry_id"),
            attempts: row.get::<i32, _>("head_attempts").max(0) as u32,
            next_attempt_at_ms: row
                .get::<Option<DateTime<Utc>>, _>("next_attempt_at")
                .map(|at| at.timestamp_millis()),
            last_attempt_at_ms: row
                .get::<Option<DateTime<Utc>>, _>("last_attempt_at")
                .map(|at| at.timestamp_millis()),
            last_error: row.get::<Option<String>, _>("last_error").unwrap_or_default(),
        }))
    }

    /// Tasks parked in `partitions` (the owner's gauge; an index-only count).
    pub async fn parked_in_partitions(&self, partitions: &[i32]) -> Result<i64, sqlx::Error> {
        if partitions.is_empty() {
            return Ok(0);
        }
        sqlx::query_scalar("SELECT count(*) FROM parked_tasks WHERE partition = ANY($1)")
            .bind(partitions)
            .fetch_one(&self.pool)
            .await
    }

    /// How many tasks of a destination are parked.
    pub async fn parked_count(&self, destination_id: &str) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT count(*) FROM parked_tasks WHERE destination_id = $1")
            .bind(uuid(destination_id))
            .fetch_one(&self.pool)
            .await
    }

    /// The destination flows again.
    pub async fn clear_held(&self, fence: Option<&Fence>, destination_id: &str) -> Result<(), FenceError> {
        let mut tx = fenced(&self.pool, fence).await?;
        sqlx::query("DELETE FROM destination_queues WHERE destination_id = $1")
            .bind(uuid(destination_id))
            .execute(&mut *tx)
            .await?;
        Ok(tx.commit().await?)
    }
}

/// A transaction for a write that belongs to a partition: with `fence`, it holds the writer's
/// lease until it commits, so a worker that lost the partition (frozen, cut off) cannot write
/// over its next owner's state. `None` only where no lease exists (tests of this store).
async fn fenced(
    pool: &PgPool,
    fence: Option<&Fence>,
) -> Result<carrier_store::sqlx::Transaction<'static, carrier_store::sqlx::Postgres>, FenceError> {
    let mut tx = pool.begin().await?;
    if let Some(fence) = fence {
        fence.hold(&mut tx).await?;
    }
    Ok(tx)
}

/// The most rows, and the most encoded task bytes (past the first row), of one parking `INSERT`:
/// a 1 KiB message's task is ~1.3 KiB, so a statement carries ~200 of them.
pub const PARK_STATEMENT_ROWS: usize = 200;
pub const PARK_STATEMENT_BYTES: usize = 256 * 1024;

/// Where the statement starting at `start` ends: at most [`PARK_STATEMENT_ROWS`] rows and
/// [`PARK_STATEMENT_BYTES`] of task bytes, and always at least one row.
fn statement_end(encoded: &[Vec<u8>], start: usize) -> usize {
    let mut end = start + 1;
    let mut bytes = encoded[start].len();
    while end < encoded.len()
        && end - start < PARK_STATEMENT_ROWS
        && bytes + encoded[end].len() <= PARK_STATEMENT_BYTES
    {
        bytes += encoded[end].len();
        end += 1;
    }
    end
}

/// One `INSERT` of parked rows; `encoded` are `tasks`' encodings, in the same order.
async fn insert_parked(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    partition: i32,
    tasks: &[ToPark],
    encoded: &[Vec<u8>],
) -> Result<(), sqlx::Error> {
    let destinations: Vec<Uuid> = tasks
        .iter()
        .map(|parked| uuid(&parked.task.destination_id))
        .collect();
    let generations: Vec<i64> = tasks.iter().map(|parked| parked.position.generation).collect();
    let offsets: Vec<i64> = tasks.iter().map(|parked| parked.position.offset).collect();
    let log_ids: Vec<Uuid> = tasks.iter().map(|parked| uuid(&parked.task.log_id)).collect();
    // The stored body a task still needs: the body purge keeps it while it is parked.
    let stored_bodies: Vec<Option<String>> = tasks
        .iter()
        .map(|parked| parked.task.body_stored.then(|| parked.task.message_id.clone()))
        .collect();
    sqlx::query(
        "INSERT INTO parked_tasks (destination_id, generation, task_offset, partition, log_id, task, body_message_id)
         SELECT d, g, o, $3, l, t, b
           FROM UNNEST($1::uuid[], $6::bigint[], $2::bigint[], $4::uuid[], $5::bytea[], $7::text[])
                AS u(d, g, o, l, t, b)
         ON CONFLICT (destination_id, generation, task_offset) DO NOTHING",
    )
    .bind(&destinations)
    .bind(&offsets)
    .bind(partition)
    .bind(&log_ids)
    .bind(encoded)
    .bind(&generations)
    .bind(&stored_bodies)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The parking store on a real Postgres (`CARRIER_TEST_POSTGRES`), in a database of its own.
#[cfg(test)]
mod store_tests {
    use std::time::Duration;

    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 60 * 60);

    /// A scratch database (see `carrier_store::scratch`) with this module's helpers.
    struct Database(carrier_store::scratch::ScratchDatabase);

    impl std::ops::Deref for Database {
        type Target = carrier_store::scratch::ScratchDatabase;
        fn deref(&self) -> &Self::Target {
            &self.0
        }
    }

    impl Database {
        async fn create() -> Database {
            Database(carrier_store::scratch::ScratchDatabase::create("carrier_parking").await)
        }

        /// Stores a body under `message_id`, received `age` ago.
        async fn stored_body(&self, message_id: &str, age: Duration) {
            carrier_store::bodies::store(&self.pool, message_id, b"a large body")
                .await
                .unwrap();
            sqlx::query("UPDATE message_bodies SET created_at = now() - make_interval(secs => $2) WHERE message_id = $1")
                .bind(message_id)
                .bind(age.as_secs_f64())
                .execute(&self.pool)
                .await
                .unwrap();
        }

        /// A log of `message_id` in the log store, with `status`.
        async fn log(&self, message_id: &str, status: &str) {
            sqlx::query(
                "INSERT INTO logs (id, message_id, destination_id, organization_id, source_id, data_model,
                                   event_type, environment, test, status, received_at)
                 VALUES ($1, $2::uuid, $3, $3, $3, 'hl7v2', 'ADT^A01', 'production', false, $4, now() - interval '40 days')
                 ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status",
            )
            // One log per message here: the message ID serves as the log ID too.
            .bind(Uuid::parse_str(message_id).unwrap())
            .bind(message_id)
            .bind(Uuid::new_v4())
            .bind(status)
            .execute(&self.pool)
            .await
            .unwrap();
        }

        async fn body_kept(&self, message_id: &str) -> bool {
            carrier_store::bodies::load(&self.pool, message_id)
                .await
                .unwrap()
                .is_some()
        }

        async fn drop(self) {
            self.0.drop().await;
        }
    }

    fn task(destination_id: Uuid, message_id: &str, body_stored: bool) -> DeliveryTask {
        DeliveryTask {
            log_id: Uuid::new_v4().to_string(),
            message_id: message_id.to_string(),
            destination_id: destination_id.to_string(),
            body_stored,
            ..Default::default()
        }
    }

    /// A backlog larger than one statement (rows and bytes) is stored whole and in order, in
    /// several `INSERT`s of one transaction; storing it again changes nothing.
    #[tokio::test]
    async fn a_large_batch_is_parked_whole_in_bounded_statements() {
        let database = Database::create().await;
        let parking = ParkingStore::new(database.pool.clone());
        let destination = Uuid::new_v4();
        let count = PARK_STATEMENT_ROWS * 2 + 17;
        let tasks: Vec<ToPark> = (0..count)
            .map(|offset| ToPark {
                position: Position {
                    generation: 0,
                    offset: offset as i64,
                },
                task: DeliveryTask {
                    // Every 50th task large: the byte bound ends statements too.
                    body: vec![b'x'; if offset % 50 == 0 { 100 * 1024 } else { 900 }],
                    ..task(destination, &Uuid::now_v7().to_string(), false)
                },
            })
            .collect();
        parking.park(None, 3, &tasks).await.unwrap();
        parking.park(None, 3, &tasks[..10]).await.unwrap();
        assert_eq!(
            parking.parked_count(&destination.to_string()).await.unwrap(),
            count as i64
        );
        let read = parking
            .next(&destination.to_string(), Position::START, count as i64, i64::MAX)
            .await
            .unwrap();
        let offsets: Vec<i64> = read.iter().map(|parked| parked.position.offset).collect();
        assert_eq!(offsets, (0..count as i64).collect::<Vec<_>>());
        assert_eq!(read[50].task.body.len(), 100 * 1024);
        database.drop().await;
    }

    #[test]
    fn statements_end_at_their_row_or_byte_bound_and_hold_at_least_one_row() {
        let small = vec![vec![0u8; 1_000]; PARK_STATEMENT_ROWS + 5];
        assert_eq!(statement_end(&small, 0), PARK_STATEMENT_ROWS);
        assert_eq!(
            statement_end(&small, PARK_STATEMENT_ROWS),
            PARK_STATEMENT_ROWS + 5
        );
        let large = vec![vec![0u8; PARK_STATEMENT_BYTES + 1]; 3];
        assert_eq!(statement_end(&large, 0), 1, "a row over the bound goes alone");
        let mixed = vec![vec![0u8; PARK_STATEMENT_BYTES / 2]; 5];
        assert_eq!(statement_end(&mixed, 1), 3);
    }

    #[tokio::test]
    async fn the_body_purge_keeps_old_bodies_of_messages_still_queued_in_a_lane() {
        // The head of a failing queue is retried in memory, not parked: its log is `queued`.
        let database = Database::create().await;
        let (in_lane, delivered) = (Uuid::now_v7().to_string(), Uuid::now_v7().to_string());
        for message_id in [&in_lane, &delivered] {
            database.stored_body(message_id, 40 * DAY).await;
        }
        database.log(&in_lane, "queued").await;
        database.log(&delivered, "delivered").await;
        // Not a UUID: never a message's, and must not fail the purge of the others.
        database.stored_body("not-a-uuid", 40 * DAY).await;

        let purged = carrier_store::bodies::purge_older_than(&database.pool, 30 * DAY)
            .await
            .unwrap();
        assert_eq!(purged, 2, "the delivered message's body and the odd row");
        assert!(
            database.body_kept(&in_lane).await,
            "its queue still has to deliver it"
        );
        assert!(!database.body_kept(&delivered).await);

        // Failed at last (the log is final): its body goes at the next purge.
        database.log(&in_lane, "failed").await;
        let purged = carrier_store::bodies::purge_older_than(&database.pool, 30 * DAY)
            .await
            .unwrap();
        assert_eq!(purged, 1);
        assert!(!database.body_kept(&in_lane).await);
        database.drop().await;
    }

    #[tokio::test]
    async fn the_body_purge_keeps_old_bodies_of_parked_tasks_until_they_are_removed() {
        let database = Database::create().await;
        let parking = ParkingStore::new(database.pool.clone());
        let destination = Uuid::new_v4();
        let (held, unreferenced, inline, recent) = (
            Uuid::now_v7().to_string(),
            Uuid::now_v7().to_string(),
            Uuid::now_v7().to_string(),
            Uuid::now_v7().to_string(),
        );
        for message_id in [&held, &unreferenced, &inline] {
            database.stored_body(message_id, 40 * DAY).await;
        }
        database.stored_body(&recent, DAY).await;
        // A held destination's parked tasks: one reads its body from the store, one carries its
        // body itself (it names no stored body, whatever its message ID).
        let positions = [
            Position {
                generation: 0,
                offset: 7,
            },
            Position {
                generation: 0,
                offset: 8,
            },
        ];
        parking
            .park(
                None,
                0,
                &[
                    ToPark {
                        position: positions[0],
                        task: task(destination, &held, true),
                    },
                    ToPark {
                        position: positions[1],
                        task: task(destination, &inline, false),
                    },
                ],
            )
            .await
            .unwrap();

        let purged = carrier_store::bodies::purge_older_than(&database.pool, 30 * DAY)
            .await
            .unwrap();
        assert_eq!(purged, 2, "the unreferenced old body and the inline task's");
        assert!(
            database.body_kept(&held).await,
            "the parked task still needs its body"
        );
        assert!(!database.body_kept(&unreferenced).await);
        assert!(!database.body_kept(&inline).await);
        assert!(database.body_kept(&recent).await, "within retention");

        // Delivered at last and removed: its body goes at the next purge.
        parking
            .remove_many(None, &destination.to_string(), &positions)
            .await
            .unwrap();
        let purged = carrier_store::bodies::purge_older_than(&database.pool, 30 * DAY)
            .await
            .unwrap();
        assert_eq!(purged, 1);
        assert!(!database.body_kept(&held).await);
        assert!(database.body_kept(&recent).await);
        database.drop().await;
    }
}
