//! Incident detection: per destination, the run of consecutive failed attempts of real (not
//! test) messages at a production destination. The run's `failing_after_attempts`-th failure
//! opens an incident and raises one "failing" alert; the destination's next delivery closes it
//! and raises one "recovered" alert.
//!
//! Why it holds under replays, restarts and replicas:
//! - It runs inside the log store's batch transaction and sees only attempts that transaction
//!   inserted for the first time (`attempts` is keyed by log and number). A replayed event was
//!   inserted before, so it changes nothing; two notifiers writing the same events during a
//!   rebalance wait on each other's rows and only one of them sees each attempt.
//! - The state lives in `destination_incidents` and is read `FOR UPDATE`, so it survives
//!   restarts and two transactions touching one destination run one after the other.
//! - `alerts` allows one alert per (incident, kind).
//!
//! Order: `carrier.log-events` is keyed by destination ID, so one partition (one notifier at a
//! time) carries a destination's attempts in the order they were made, and a batch lists them
//! in offset order.

use std::collections::{BTreeMap, HashMap};

use carrier_proto::records_v1::{AttemptOutcome, LogEvent};
use carrier_store::sqlx::types::chrono::{DateTime, Utc};
use carrier_store::sqlx::{self, Postgres, Row, Transaction};
use uuid::Uuid;

use crate::notification::{AlertFacts, AlertKind, Notification};

/// One attempt, as incident detection sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    Failure {
        log_id: Uuid,
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
        error: String,
    },
    Success {
        log_id: Uuid,
        finished_at: DateTime<Utc>,
    },
}

impl Observation {
    /// What an attempt event means for incidents: failures count only for real messages at
    /// production destinations; a delivery of a real message ends a run in any environment.
    /// `None` for test messages and for events without an attempt.
    pub fn of(event: &LogEvent) -> Option<Observation> {
        let attempt = event.attempt.as_ref()?;
        if event.test {
            return None;
        }
        let log_id = Uuid::parse_str(&event.log_id).ok()?;
        let finished_at = timestamp(event.at_ms);
        if attempt.outcome == AttemptOutcome::Success as i32 {
            return Some(Observation::Success { log_id, finished_at });
        }
        if event.environment != "production" {
            return None;
        }
        // Carrier's words only: an attempt's `error` can quote the receiver (patient data), and
        // incidents go to every alert channel. An event from before `error_summary` existed
        // says only its status code.
        let error = if !attempt.error_summary.is_empty() {
            attempt.error_summary.clone()
        } else if attempt.status_code != 0 {
            format!("destination answered HTTP {}", attempt.status_code)
        } else {
            "attempt failed".to_string()
        };
        Some(Observation::Failure {
            log_id,
            started_at: timestamp(attempt.started_at_ms),
            finished_at,
            error,
        })
    }
}

fn timestamp(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// A destination's incident state (a `destination_incidents` row).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IncidentState {
    pub consecutive_failures: i32,
    pub failing_since: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub head_log_id: Option<Uuid>,
    /// The open incident, once the run reached the threshold.
    pub incident_id: Option<Uuid>,
}

impl IncidentState {
    /// Applies one attempt; returns the alert it raises, if any.
    pub fn observe(&mut self, observation: &Observation, failing_after_attempts: i32) -> Option<AlertFacts> {
        match observation {
            Observation::Failure {
                log_id,
                started_at,
                finished_at,
                error,
            } => {
                self.consecutive_failures += 1;
                if self.failing_since.is_none() {
                    self.failing_since = Some(*started_at);
                }
                self.last_error = Some(error.clone());
                self.head_log_id = Some(*log_id);
                if self.incident_id.is_some() || self.consecutive_failures < failing_after_attempts {
                    return None;
                }
                let incident_id = Uuid::now_v7();
                self.incident_id = Some(incident_id);
                Some(AlertFacts {
                    kind: AlertKind::Failing,
                    incident_id,
                    since: self.failing_since.unwrap_or(*started_at),
                    attempts: self.consecutive_failures,
                    last_error: error.clone(),
                    head_log_id: *log_id,
                    occurred_at: *finished_at,
                    backlog: None,
                })
            }
            Observation::Success { log_id, finished_at } => {
                let before = std::mem::take(self);
                let incident_id = before.incident_id?;
                Some(AlertFacts {
                    kind: AlertKind::Recovered,
                    incident_id,
                    since: before.failing_since.unwrap_or(*finished_at),
                    attempts: before.consecutive_failures,
                    last_error: before.last_error.unwrap_or_default(),
                    head_log_id: *log_id,
                    occurred_at: *finished_at,
                    backlog: None,
                })
            }
        }
    }

    fn is_clear(&self) -> bool {
        *self == IncidentState::default()
    }
}

/// Applies the batch's new attempts to the incident state of their destinations and raises
/// alerts (with one outbox row per channel), inside the batch's transaction. Returns how many
/// alerts were raised. `new_attempts`: the attempt events of the batch that this transaction
/// inserted first, in batch (offset) order.
pub async fn apply(
    transaction: &mut Transaction<'_, Postgres>,
    new_attempts: &[&LogEvent],
    failing_after_attempts: i32,
) -> Result<usize, sqlx::Error> {
    // Per destination, in order; a BTreeMap locks rows in one order everywhere (no deadlocks).
    let mut by_destination: BTreeMap<Uuid, (Uuid, Vec<Observation>)> = BTreeMap::new();
    for event in new_attempts {
        let Some(observation) = Observation::of(event) else {
            continue;
        };
        let Ok(destination_id) = Uuid::parse_str(&event.destination_id) else {
            continue;
        };
        let organization_id = Uuid::parse_str(&event.organization_id).unwrap_or_default();
        by_destination
            .entry(destination_id)
            .or_insert_with(|| (organization_id, Vec::new()))
            .1
            .push(observation);
    }
    if by_destination.is_empty() {
        return Ok(0);
    }

    // A destination that fails needs a row to lock; one that only delivers needs none if it
    // has none (nothing to end).
    let failing: Vec<Uuid> = by_destination
        .iter()
        .filter(|(_, (_, observations))| {
            observations
                .iter()
                .any(|observation| matches!(observation, Observation::Failure { .. }))
        })
        .map(|(destination_id, _)| *destination_id)
        .collect();
    if !failing.is_empty() {
        let organizations: Vec<Uuid> = failing.iter().map(|id| by_destination[id].0).collect();
        sqlx::query(
            "INSERT INTO destination_incidents (destination_id, organization_id)
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[]) ORDER BY 1
             ON CONFLICT (destination_id) DO NOTHING",
        )
        .bind(&failing)
        .bind(&organizations)
        .execute(&mut **transaction)
        .await?;
    }
    let destinations: Vec<Uuid> = by_destination.keys().copied().collect();
    let rows = sqlx::query(
        "SELECT destination_id, consecutive_failures, failing_since, last_error, head_log_id, incident_id
         FROM destination_incidents WHERE destination_id = ANY($1) ORDER BY destination_id FOR UPDATE",
    )
    .bind(&destinations)
    .fetch_all(&mut **transaction)
    .await?;
    let mut states: HashMap<Uuid, IncidentState> = HashMap::new();
    for row in rows {
        states.insert(
            row.get("destination_id"),
            IncidentState {
                consecutive_failures: row.get("consecutive_failures"),
                failing_since: row.get("failing_since"),
                last_error: row.get("last_error"),
                head_log_id: row.get("head_log_id"),
                incident_id: row.get("incident_id"),
            },
        );
    }

    let mut raised = 0;
    for (destination_id, (organization_id, observations)) in &by_destination {
        let Some(state) = states.get_mut(destination_id) else {
            continue;
        };
        let before = state.clone();
        let mut alerts = Vec::new();
        for observation in observations {
            if let Some(alert) = state.observe(observation, failing_after_attempts) {
                alerts.push(alert);
            }
        }
        // A whole incident may fit in one batch: the state ends as it began, with two alerts.
        if *state == before && alerts.is_empty() {
            continue;
        }
        if state.is_clear() {
            sqlx::query("DELETE FROM destination_incidents WHERE destination_id = $1")
                .bind(destination_id)
                .execute(&mut **transaction)
                .await?;
        } else {
            sqlx::query(
                "UPDATE destination_incidents SET consecutive_failures = $2, failing_since = $3, last_error = $4,
                        head_log_id = $5, incident_id = $6, updated_at = now()
                 WHERE destination_id = $1",
            )
            .bind(destination_id)
            .bind(state.consecutive_failures)
            .bind(state.failing_since)
            .bind(&state.last_error)
            .bind(state.head_log_id)
            .bind(state.incident_id)
            .execute(&mut **transaction)
            .await?;
        }
        for alert in alerts {
            raised += raise(transaction, *destination_id, *organization_id, &alert).await?;
        }
    }
    Ok(raised)
}

/// Stores an alert and its outbox rows (one per channel). Returns 1 if it is new.
pub(crate) async fn raise(
    transaction: &mut Transaction<'_, Postgres>,
    destination_id: Uuid,
    organization_id: Uuid,
    alert: &AlertFacts,
) -> Result<usize, sqlx::Error> {
    // The router owns destinations; the name is read here so every channel says the same.
    let destination: Option<(String, String)> =
        sqlx::query_as("SELECT name, environment FROM destinations WHERE id = $1")
            .bind(destination_id)
            .fetch_optional(&mut **transaction)
            .await?;
    let (destination_name, environment) = destination.unwrap_or_else(|| (String::new(), "production".into()));
    let notification = Notification::new(
        Uuid::now_v7(),
        alert,
        organization_id,
        destination_id,
        destination_name,
        environment,
    );
    let payload = serde_json::to_value(&notification).expect("a notification serializes");
    let inserted = sqlx::query(
        "INSERT INTO alerts (id, incident_id, kind, destination_id, organization_id, payload)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (incident_id, kind) DO NOTHING",
    )
    .bind(notification.id)
    .bind(alert.incident_id)
    .bind(alert.kind.as_str())
    .bind(destination_id)
    .bind(organization_id)
    .bind(&payload)
    .execute(&mut **transaction)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(0);
    }
    sqlx::query(
        "INSERT INTO alert_deliveries (alert_id, channel)
         SELECT $1, channel FROM UNNEST(ARRAY['email', 'slack', 'kafka']) AS channel",
    )
    .bind(notification.id)
    .execute(&mut **transaction)
    .await?;
    tracing::info!(
        destination_id = %destination_id,
        incident_id = %alert.incident_id,
        kind = alert.kind.as_str(),
        attempts = alert.attempts,
        "destination incident alert raised"
    );
    Ok(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("valid")
    }

    fn failure(log: u128, seconds: i64) -> Observation {
        Observation::Failure {
            log_id: Uuid::from_u128(log),
            started_at: at(seconds),
            finished_at: at(seconds),
            error: format!("destination answered HTTP 500 ({seconds})"),
        }
    }

    fn success(log: u128, seconds: i64) -> Observation {
        Observation::Success {
            log_id: Uuid::from_u128(log),
            finished_at: at(seconds),
        }
    }

    #[test]
    fn the_third_consecutive_failure_raises_one_failing_alert_and_the_next_delivery_one_recovered() {
        let mut state = IncidentState::default();
        assert_eq!(state.observe(&failure(1, 0), 3), None);
        assert_eq!(state.observe(&failure(1, 2), 3), None);
        let failing = state.observe(&failure(1, 6), 3).expect("failing on the 3rd");
        assert_eq!(failing.kind, AlertKind::Failing);
        assert_eq!(failing.attempts, 3);
        assert_eq!(failing.since, at(0));
        assert_eq!(failing.head_log_id, Uuid::from_u128(1));
        assert_eq!(failing.last_error, "destination answered HTTP 500 (6)");
        for seconds in 10..20 {
            assert_eq!(
                state.observe(&failure(1, seconds), 3),
                None,
                "one alert per incident"
            );
        }
        let recovered = state.observe(&success(1, 30), 3).expect("recovered");
        assert_eq!(recovered.kind, AlertKind::Recovered);
        assert_eq!(recovered.incident_id, failing.incident_id);
        assert_eq!(recovered.attempts, 13);
        assert_eq!(recovered.since, at(0));
        assert_eq!(recovered.occurred_at, at(30));
        assert!(state.is_clear());
        assert_eq!(state.observe(&success(2, 31), 3), None);
    }

    #[test]
    fn a_delivery_before_the_threshold_resets_the_run_without_alerts() {
        let mut state = IncidentState::default();
        assert_eq!(state.observe(&failure(1, 0), 3), None);
        assert_eq!(state.observe(&failure(1, 1), 3), None);
        assert_eq!(state.observe(&success(1, 2), 3), None);
        assert!(state.is_clear());
        assert_eq!(state.observe(&failure(2, 3), 3), None);
        assert_eq!(state.observe(&failure(2, 4), 3), None);
        assert!(state.observe(&failure(2, 5), 3).is_some());
    }

    #[test]
    fn a_new_incident_after_recovery_gets_a_new_id() {
        let mut state = IncidentState::default();
        let first = (0..3)
            .filter_map(|s| state.observe(&failure(1, s), 3))
            .next()
            .expect("failing");
        state.observe(&success(1, 10), 3).expect("recovered");
        let second = (20..23)
            .filter_map(|s| state.observe(&failure(2, s), 3))
            .next()
            .expect("failing again");
        assert_ne!(first.incident_id, second.incident_id);
        assert_eq!(second.since, at(20));
    }

    fn event(test: bool, environment: &str, outcome: AttemptOutcome) -> LogEvent {
        LogEvent {
            log_id: Uuid::from_u128(7).to_string(),
            destination_id: Uuid::from_u128(8).to_string(),
            test,
            environment: environment.into(),
            at_ms: 1_800_000_000_000,
            attempt: Some(carrier_proto::records_v1::Attempt {
                number: 1,
                started_at_ms: 1_800_000_000_000,
                outcome: outcome as i32,
                status_code: 503,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn test_messages_and_non_production_failures_do_not_count() {
        assert_eq!(
            Observation::of(&event(true, "production", AttemptOutcome::Failure)),
            None
        );
        assert_eq!(
            Observation::of(&event(false, "staging", AttemptOutcome::Failure)),
            None
        );
        assert_eq!(
            Observation::of(&event(false, "development", AttemptOutcome::Failure)),
            None
        );
        assert_eq!(
            Observation::of(&event(true, "production", AttemptOutcome::Success)),
            None
        );
        match Observation::of(&event(false, "production", AttemptOutcome::Failure)) {
            Some(Observation::Failure { error, .. }) => assert_eq!(error, "destination answered HTTP 503"),
            other => panic!("expected a failure, got {other:?}"),
        }
        assert!(matches!(
            Observation::of(&event(false, "staging", AttemptOutcome::Success)),
            Some(Observation::Success { .. })
        ));
        let mut creation = event(false, "production", AttemptOutcome::Failure);
        creation.attempt = None;
        assert_eq!(Observation::of(&creation), None);
    }
}

/// The detection's SQL on a real Postgres (`CARRIER_TEST_POSTGRES`), in a database of its own:
/// replays and two writers of the same events raise one alert pair.
#[cfg(test)]
mod store_tests {
    use carrier_proto::records_v1::{Attempt, AttemptOutcome, LogEvent, LogStatus};
    use carrier_store::sqlx;
    use uuid::Uuid;

    use crate::log_store;

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
            Database(carrier_store::scratch::ScratchDatabase::create("carrier_incidents").await)
        }

        async fn count(&self, sql: &str) -> i64 {
            sqlx::query_scalar(sql).fetch_one(&self.pool).await.expect(sql)
        }

        async fn drop(self) {
            self.0.drop().await;
        }
    }

    fn attempt(
        log_id: Uuid,
        destination_id: Uuid,
        number: u32,
        success: bool,
        environment: &str,
        test: bool,
    ) -> LogEvent {
        let at_ms = 1_800_000_000_000 + i64::from(number) * 1_000;
        LogEvent {
            log_id: log_id.to_string(),
            message_id: Uuid::new_v4().to_string(),
            destination_id: destination_id.to_string(),
            organization_id: Uuid::from_u128(1).to_string(),
            source_id: Uuid::from_u128(2).to_string(),
            data_model: "Admissions".into(),
            event_type: "New".into(),
            test,
            received_at_ms: 1_800_000_000_000,
            status: if success {
                LogStatus::Delivered
            } else {
                LogStatus::Queued
            } as i32,
            attempt: Some(Attempt {
                number,
                started_at_ms: at_ms,
                duration_ms: 5,
                outcome: if success {
                    AttemptOutcome::Success
                } else {
                    AttemptOutcome::Failure
                } as i32,
                status_code: if success { 200 } else { 500 },
                error: if success {
                    String::new()
                } else {
                    "destination answered HTTP 500".into()
                },
                error_summary: if success {
                    String::new()
                } else {
                    "destination answered HTTP 500".into()
                },
                response_excerpt: String::new(),
            }),
            at_ms,
            environment: environment.into(),
            ..Default::default()
        }
    }

    /// Five failures then a delivery of one log.
    fn incident(destination_id: Uuid, environment: &str, test: bool) -> Vec<LogEvent> {
        let log_id = Uuid::new_v4();
        let mut events: Vec<LogEvent> = (1..=5)
            .map(|number| attempt(log_id, destination_id, number, false, environment, test))
            .collect();
        events.push(attempt(log_id, destination_id, 6, true, environment, test));
        events
    }

    #[tokio::test]
    async fn replayed_events_and_two_writers_raise_one_pair_per_incident() {
        let database = Database::create().await;
        let destination = Uuid::new_v4();
        let events = incident(destination, "production", false);
        let refs: Vec<&LogEvent> = events.iter().collect();

        // Event by event, in batches of two, then the whole incident replayed twice.
        for chunk in refs.chunks(2) {
            log_store::write(&database.pool, chunk, 3).await.expect("write");
        }
        assert_eq!(
            log_store::write(&database.pool, &refs, 3).await.expect("replay"),
            0
        );
        assert_eq!(
            log_store::write(&database.pool, &refs[..4], 3)
                .await
                .expect("replay"),
            0
        );
        assert_eq!(database.count("SELECT count(*) FROM alerts").await, 2);
        assert_eq!(
            database
                .count(
                    "SELECT count(*) FROM alerts WHERE kind = 'failing' AND (payload->>'attempts')::int = 3"
                )
                .await,
            1
        );
        assert_eq!(
            database
                .count("SELECT count(*) FROM alerts WHERE kind = 'recovered' AND (payload->>'attempts')::int = 5")
                .await,
            1
        );
        assert_eq!(database.count("SELECT count(*) FROM alert_deliveries").await, 6);
        assert_eq!(
            database.count("SELECT count(*) FROM destination_incidents").await,
            0
        );

        // Two notifiers writing the same events at once (a rebalance): still one pair.
        let second = Uuid::new_v4();
        let events = incident(second, "production", false);
        let refs: Vec<&LogEvent> = events.iter().collect();
        let (a, b) = tokio::join!(
            log_store::write(&database.pool, &refs, 3),
            log_store::write(&database.pool, &refs, 3)
        );
        assert_eq!(a.expect("writer a") + b.expect("writer b"), 2);
        assert_eq!(
            database
                .count(&format!(
                    "SELECT count(*) FROM alerts WHERE destination_id = '{second}'"
                ))
                .await,
            2
        );

        // Test messages and staging destinations raise nothing.
        for events in [
            incident(Uuid::new_v4(), "production", true),
            incident(Uuid::new_v4(), "staging", false),
        ] {
            let refs: Vec<&LogEvent> = events.iter().collect();
            assert_eq!(
                log_store::write(&database.pool, &refs, 3).await.expect("write"),
                0
            );
        }
        assert_eq!(database.count("SELECT count(*) FROM alerts").await, 4);
        database.drop().await;
    }

    #[tokio::test]
    async fn an_open_incident_survives_between_batches_and_counts_every_failure() {
        let database = Database::create().await;
        let destination = Uuid::new_v4();
        let head = Uuid::new_v4();
        for number in 1..=4 {
            let event = attempt(head, destination, number, false, "production", false);
            log_store::write(&database.pool, &[&event], 3)
                .await
                .expect("write");
        }
        assert_eq!(
            database
                .count(&format!(
                    "SELECT count(*) FROM destination_incidents WHERE destination_id = '{destination}'
                     AND consecutive_failures = 4 AND incident_id IS NOT NULL AND head_log_id = '{head}'"
                ))
                .await,
            1
        );
        let delivered = attempt(head, destination, 5, true, "production", false);
        log_store::write(&database.pool, &[&delivered], 3)
            .await
            .expect("write");
        let recovered: serde_json::Value =
            sqlx::query_scalar("SELECT payload FROM alerts WHERE kind = 'recovered'")
                .fetch_one(&database.pool)
                .await
                .expect("recovered alert");
        assert_eq!(recovered["attempts"], 4);
        assert_eq!(recovered["head_log_id"], head.to_string());
        assert_eq!(recovered["since"], "2027-01-15T08:00:01.000Z");
        database.drop().await;
    }
}
