//! Writing log events to the log store, and detecting incidents in the same transaction.

use std::collections::{HashMap, HashSet};

use carrier_proto::records_v1::{AttemptOutcome, LogEvent, LogStatus};
use carrier_store::sqlx::types::chrono::{DateTime, Utc};
use carrier_store::sqlx::{self, PgPool};
use uuid::Uuid;

fn timestamp(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn uuid(text: &str) -> Uuid {
    // IDs are minted by Carrier; a malformed one maps to nil rather than losing the batch.
    Uuid::parse_str(text).unwrap_or_default()
}

/// One log's row after merging every event of a batch.
struct LogRow<'a> {
    event: &'a LogEvent,
    status: LogStatus,
    status_seq: i32,
    attempts: i32,
    updated_at_ms: i64,
    /// Where the log's delivery task is (from its creation event).
    task_position: Option<(i32, i64)>,
}

fn task_position(event: &LogEvent) -> Option<(i32, i64)> {
    Some((event.task_partition?, event.task_offset?))
}

/// The sequence of an event: its explicit `sequence` (an operator's skip), else the attempt
/// number for an attempt, else 0 (creation).
fn sequence(event: &LogEvent) -> i32 {
    if event.sequence != 0 {
        return event.sequence as i32;
    }
    attempt_number(event)
}

/// The attempt number an event records, 0 when it records none.
fn attempt_number(event: &LogEvent) -> i32 {
    event
        .attempt
        .as_ref()
        .map(|attempt| attempt.number as i32)
        .unwrap_or(0)
}

/// Upserts the logs and inserts the attempts of `events` in one transaction, with the incident
/// state and alerts the attempts inserted for the first time lead to (see `incidents`).
/// Returns how many alerts were raised.
pub async fn write(
    pool: &PgPool,
    events: &[&LogEvent],
    failing_after_attempts: i32,
) -> Result<usize, sqlx::Error> {
    let mut rows: HashMap<&str, LogRow<'_>> = HashMap::new();
    for event in events {
        let seq = sequence(event);
        let status = LogStatus::try_from(event.status).unwrap_or(LogStatus::Queued);
        rows.entry(event.log_id.as_str())
            .and_modify(|row| {
                if seq >= row.status_seq {
                    row.status = status;
                    row.status_seq = seq;
                    row.event = event;
                }
                row.attempts = row.attempts.max(attempt_number(event));
                row.task_position = row.task_position.or(task_position(event));
                row.updated_at_ms = row.updated_at_ms.max(event.at_ms);
            })
            .or_insert(LogRow {
                event,
                status,
                status_seq: seq,
                attempts: attempt_number(event),
                updated_at_ms: event.at_ms,
                task_position: task_position(event),
            });
    }

    let mut ids = Vec::with_capacity(rows.len());
    let mut message_ids = Vec::with_capacity(rows.len());
    let mut destination_ids = Vec::with_capacity(rows.len());
    let mut organization_ids = Vec::with_capacity(rows.len());
    let mut source_ids = Vec::with_capacity(rows.len());
    let mut data_models = Vec::with_capacity(rows.len());
    let mut event_types = Vec::with_capacity(rows.len());
    let mut environments = Vec::with_capacity(rows.len());
    let mut tests = Vec::with_capacity(rows.len());
    let mut statuses = Vec::with_capacity(rows.len());
    let mut seqs = Vec::with_capacity(rows.len());
    let mut attempt_counts = Vec::with_capacity(rows.len());
    let mut received = Vec::with_capacity(rows.len());
    let mut updated = Vec::with_capacity(rows.len());
    let mut task_partitions = Vec::with_capacity(rows.len());
    let mut task_offsets = Vec::with_capacity(rows.len());
    for row in rows.values() {
        task_partitions.push(row.task_position.map(|(partition, _)| partition));
        task_offsets.push(row.task_position.map(|(_, offset)| offset));
        let event = row.event;
        ids.push(uuid(&event.log_id));
        message_ids.push(uuid(&event.message_id));
        destination_ids.push(uuid(&event.destination_id));
        organization_ids.push(uuid(&event.organization_id));
        source_ids.push(uuid(&event.source_id));
        data_models.push(event.data_model.clone());
        event_types.push(event.event_type.clone());
        environments.push(event.environment.clone());
        tests.push(event.test);
        statuses.push(row.status.as_api_str().to_string());
        seqs.push(row.status_seq);
        attempt_counts.push(row.attempts);
        received.push(timestamp(event.received_at_ms));
        updated.push(timestamp(row.updated_at_ms));
    }

    let mut attempt_logs = Vec::new();
    let mut numbers = Vec::new();
    let mut started = Vec::new();
    let mut durations = Vec::new();
    let mut outcomes = Vec::new();
    let mut status_codes: Vec<Option<i32>> = Vec::new();
    let mut errors: Vec<Option<String>> = Vec::new();
    let mut excerpts: Vec<Option<String>> = Vec::new();
    for event in events {
        let Some(attempt) = &event.attempt else { continue };
        attempt_logs.push(uuid(&event.log_id));
        numbers.push(attempt.number as i32);
        started.push(timestamp(attempt.started_at_ms));
        durations.push(attempt.duration_ms.min(i32::MAX as u32) as i32);
        let success = attempt.outcome == AttemptOutcome::Success as i32;
        outcomes.push(if success { "success" } else { "failure" }.to_string());
        status_codes.push((attempt.status_code != 0).then_some(attempt.status_code as i32));
        errors.push((!attempt.error.is_empty()).then(|| attempt.error.clone()));
        excerpts.push((!attempt.response_excerpt.is_empty()).then(|| attempt.response_excerpt.clone()));
    }

    let mut transaction = pool.begin().await?;
    sqlx::query(
        "INSERT INTO logs (id, message_id, destination_id, organization_id, source_id, data_model, event_type,
                           environment, test, status, status_seq, attempts, received_at, updated_at,
                           task_partition, task_offset)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], $6::text[], $7::text[],
                              $8::text[], $9::bool[], $10::text[], $11::int[], $12::int[], $13::timestamptz[],
                              $14::timestamptz[], $15::int[], $16::bigint[])
         ON CONFLICT (id) DO UPDATE SET
            status = CASE WHEN EXCLUDED.status_seq >= logs.status_seq THEN EXCLUDED.status ELSE logs.status END,
            status_seq = GREATEST(logs.status_seq, EXCLUDED.status_seq),
            attempts = GREATEST(logs.attempts, EXCLUDED.attempts),
            environment = CASE WHEN logs.environment = '' THEN EXCLUDED.environment ELSE logs.environment END,
            updated_at = GREATEST(logs.updated_at, EXCLUDED.updated_at),
            task_partition = COALESCE(logs.task_partition, EXCLUDED.task_partition),
            task_offset = COALESCE(logs.task_offset, EXCLUDED.task_offset)",
    )
    .bind(&ids)
    .bind(&message_ids)
    .bind(&destination_ids)
    .bind(&organization_ids)
    .bind(&source_ids)
    .bind(&data_models)
    .bind(&event_types)
    .bind(&environments)
    .bind(&tests)
    .bind(&statuses)
    .bind(&seqs)
    .bind(&attempt_counts)
    .bind(&received)
    .bind(&updated)
    .bind(&task_partitions)
    .bind(&task_offsets)
    .execute(&mut *transaction)
    .await?;
    let mut raised = 0;
    if !attempt_logs.is_empty() {
        // RETURNING lists only the attempts this transaction inserted: a replayed event (or one
        // another notifier wrote first) is not among them.
        let inserted: Vec<(Uuid, i32)> = sqlx::query_as(
            "INSERT INTO attempts (log_id, number, started_at, duration_ms, outcome, status_code, error, response_excerpt)
             SELECT * FROM UNNEST($1::uuid[], $2::int[], $3::timestamptz[], $4::int[], $5::text[], $6::int[],
                                  $7::text[], $8::text[])
             ON CONFLICT (log_id, number) DO NOTHING
             RETURNING log_id, number",
        )
        .bind(&attempt_logs)
        .bind(&numbers)
        .bind(&started)
        .bind(&durations)
        .bind(&outcomes)
        .bind(&status_codes)
        .bind(&errors)
        .bind(&excerpts)
        .fetch_all(&mut *transaction)
        .await?;
        let mut inserted: HashSet<(Uuid, i32)> = inserted.into_iter().collect();
        let mut new_attempts = Vec::with_capacity(inserted.len());
        for event in events {
            let Some(attempt) = &event.attempt else { continue };
            // `remove`: an event listed twice in one batch counts once.
            if inserted.remove(&(uuid(&event.log_id), attempt.number as i32)) {
                new_attempts.push(*event);
            }
        }
        raised = crate::incidents::apply(&mut transaction, &new_attempts, failing_after_attempts).await?;
    }
    transaction.commit().await?;
    Ok(raised)
}
