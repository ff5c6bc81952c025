//! Backlog alerts: "the queues pile up". Every `alerts.backlog_check_interval_ms` one notifier
//! replica (a transaction-scoped advisory lock) looks at the production destinations that are
//! held or have parked tasks, and at the open backlog incidents:
//! - a destination whose held head is older than its `after_secs`, or with more than its
//!   `max_depth` tasks parked, opens a backlog incident (`destination_backlogs`) and raises one
//!   `backlog` alert;
//! - an open incident whose destination is no longer held too long and has at most half its
//!   `max_depth` parked (so a depth hovering at the threshold does not flap) closes, raising one
//!   `backlog_cleared` alert.
//!
//! Thresholds: the destination's own (`destinations.backlog_alert_*`), else its organization's,
//! else the notifier's configuration; 0 turns a criterion off. The alerts go through the same
//! outbox as failing/recovered (e-mail, Slack, `carrier.notifications`), and also to the
//! operator's recipients (`alerts.operator_*`, see `dispatch.rs`).
//!
//! Depth is what Postgres holds: the parked tasks. A held destination's new tasks are parked
//! once its in-memory share is used (`max_queued_per_destination`, delivery), so past a few
//! hundred tasks the parked count is the backlog.

use std::time::Duration;

use carrier_store::sqlx::{self, PgPool, Row};
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::dispatch::Wakeup;
use crate::incidents;
use crate::notification::{AlertFacts, AlertKind, Backlog};
use crate::AlertSettings;

/// The advisory lock one checking replica holds for its transaction.
const LOCK_KEY: i64 = 0x6361_7272_6965_7262; // "carrierb"

/// What a destination's queue looks like now, against its thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct Queue {
    /// Seconds its head has been held; `None` when it is not held.
    pub held_for_secs: Option<i64>,
    pub depth: i64,
    pub after_secs: i64,
    pub max_depth: i64,
}

/// What to do about one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Open an incident for this reason (`age` or `depth`).
    Open(&'static str),
    Close,
}

/// The rule (pure): `open` says whether an incident is open now.
pub fn decide(open: bool, queue: &Queue) -> Option<Change> {
    let too_old = queue.after_secs > 0 && queue.held_for_secs.is_some_and(|held| held >= queue.after_secs);
    let too_deep = queue.max_depth > 0 && queue.depth > queue.max_depth;
    match open {
        false if too_old => Some(Change::Open("age")),
        false if too_deep => Some(Change::Open("depth")),
        false => None,
        true => {
            let shallow = queue.max_depth == 0 || queue.depth <= queue.max_depth / 2;
            (!too_old && shallow).then_some(Change::Close)
        }
    }
}

/// Checks every `settings.backlog_check_interval_ms` until `shutdown`; wakes the channels when
/// alerts were raised.
pub async fn run(pool: PgPool, settings: AlertSettings, wakeup: Wakeup, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(Duration::from_millis(settings.backlog_check_interval_ms));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match check_once(&pool, &settings).await {
            Ok(0) => {}
            Ok(_) => wakeup.wake_all(),
            Err(error) => {
                tracing::warn!(%error, "checking destinations for backlogs failed; retried at the next check")
            }
        }
    }
}

/// One check, in one transaction; returns how many alerts it raised (0 when another replica
/// is checking).
pub async fn check_once(pool: &PgPool, settings: &AlertSettings) -> Result<usize, sqlx::Error> {
    let mut transaction = pool.begin().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(LOCK_KEY)
        .fetch_one(&mut *transaction)
        .await?;
    if !locked {
        transaction.commit().await?;
        return Ok(0);
    }
    let rows = sqlx::query(
        "WITH parked AS (
             SELECT destination_id, count(*) AS depth FROM parked_tasks GROUP BY destination_id
         )
         SELECT d.id, d.organization_id,
                q.reason AS held_reason, q.held_since, q.head_log_id, q.head_attempts, q.last_error,
                floor(extract(epoch FROM now() - q.held_since))::bigint AS held_for_secs,
                coalesce(p.depth, 0) AS depth,
                coalesce(d.backlog_alert_after_secs, o.backlog_alert_after_secs, $1)::bigint AS after_secs,
                coalesce(d.backlog_alert_depth, o.backlog_alert_depth, $2)::bigint AS max_depth,
                b.incident_id, b.opened_at, b.reason AS open_reason
           FROM destinations d
           JOIN organizations o ON o.id = d.organization_id
           LEFT JOIN destination_queues q ON q.destination_id = d.id
           LEFT JOIN parked p ON p.destination_id = d.id
           LEFT JOIN destination_backlogs b ON b.destination_id = d.id
          WHERE d.environment = 'production'
            AND (q.destination_id IS NOT NULL OR p.depth IS NOT NULL OR b.destination_id IS NOT NULL)
          ORDER BY d.id",
    )
    .bind(settings.backlog_after_secs as i32)
    .bind(settings.backlog_depth as i32)
    .fetch_all(&mut *transaction)
    .await?;
    let now = Utc::now();
    let mut raised = 0;
    for row in rows {
        let destination_id: Uuid = row.get("id");
        let organization_id: Uuid = row.get("organization_id");
        let open: Option<Uuid> = row.get("incident_id");
        let held_reason: Option<String> = row.get("held_reason");
        let queue = Queue {
            held_for_secs: held_reason
                .as_ref()
                .map(|_| row.get::<Option<i64>, _>("held_for_secs").unwrap_or(0)),
            depth: row.get("depth"),
            after_secs: row.get("after_secs"),
            max_depth: row.get("max_depth"),
        };
        let Some(change) = decide(open.is_some(), &queue) else {
            continue;
        };
        let (kind, incident_id, reason, since): (AlertKind, Uuid, String, DateTime<Utc>) = match change {
            Change::Open(reason) => {
                let incident_id = Uuid::now_v7();
                sqlx::query(
                    "INSERT INTO destination_backlogs (destination_id, organization_id, incident_id, reason)
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(destination_id)
                .bind(organization_id)
                .bind(incident_id)
                .bind(reason)
                .execute(&mut *transaction)
                .await?;
                let since = row.get::<Option<DateTime<Utc>>, _>("held_since").unwrap_or(now);
                (AlertKind::Backlog, incident_id, reason.to_string(), since)
            }
            Change::Close => {
                let incident_id = open.expect("a close has an open incident");
                sqlx::query("DELETE FROM destination_backlogs WHERE destination_id = $1")
                    .bind(destination_id)
                    .execute(&mut *transaction)
                    .await?;
                let since = row.get::<Option<DateTime<Utc>>, _>("opened_at").unwrap_or(now);
                let reason = row
                    .get::<Option<String>, _>("open_reason")
                    .unwrap_or_else(|| "age".into());
                (AlertKind::BacklogCleared, incident_id, reason, since)
            }
        };
        let alert = AlertFacts {
            kind,
            incident_id,
            since,
            attempts: row.get::<Option<i32>, _>("head_attempts").unwrap_or(0),
            last_error: row.get::<Option<String>, _>("last_error").unwrap_or_default(),
            head_log_id: row.get::<Option<Uuid>, _>("head_log_id").unwrap_or_default(),
            occurred_at: now,
            backlog: Some(Backlog {
                reason,
                held_reason,
                held_for_secs: queue.held_for_secs.unwrap_or(0),
                depth: queue.depth,
                after_secs: queue.after_secs,
                max_depth: queue.max_depth,
            }),
        };
        tracing::info!(%destination_id, %incident_id, kind = kind.as_str(), depth = queue.depth, held_for_secs = ?queue.held_for_secs, "destination backlog alert raised");
        raised += incidents::raise(&mut transaction, destination_id, organization_id, &alert).await?;
    }
    transaction.commit().await?;
    Ok(raised)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(held_for_secs: Option<i64>, depth: i64) -> Queue {
        Queue {
            held_for_secs,
            depth,
            after_secs: 900,
            max_depth: 1_000,
        }
    }

    #[test]
    fn an_old_held_head_or_a_deep_backlog_opens_an_incident() {
        assert_eq!(decide(false, &queue(Some(899), 0)), None);
        assert_eq!(decide(false, &queue(Some(900), 0)), Some(Change::Open("age")));
        assert_eq!(decide(false, &queue(None, 1_000)), None);
        assert_eq!(decide(false, &queue(None, 1_001)), Some(Change::Open("depth")));
        assert_eq!(
            decide(false, &queue(Some(5_000), 5_000)),
            Some(Change::Open("age"))
        );
    }

    #[test]
    fn an_open_incident_closes_once_the_head_moved_and_the_backlog_halved() {
        assert_eq!(decide(true, &queue(Some(1_000), 0)), None, "still held too long");
        assert_eq!(
            decide(true, &queue(None, 501)),
            None,
            "not yet half the threshold"
        );
        assert_eq!(decide(true, &queue(None, 500)), Some(Change::Close));
        assert_eq!(
            decide(true, &queue(Some(10), 0)),
            Some(Change::Close),
            "a new, young hold"
        );
    }

    #[test]
    fn zero_turns_a_criterion_off() {
        let off = Queue {
            held_for_secs: Some(1_000_000),
            depth: 1_000_000,
            after_secs: 0,
            max_depth: 0,
        };
        assert_eq!(decide(false, &off), None);
        assert_eq!(decide(true, &off), Some(Change::Close));
    }
}
