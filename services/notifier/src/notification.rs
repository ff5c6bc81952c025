//! The notification every channel sends: one JSON document (schema
//! `docs/schemas/notification.v1.json`, documented in `docs/notifications.md`), written to
//! `carrier.notifications` as is, posted to Slack with a readable `text` added, and rendered as
//! the e-mail's subject and body.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An alert to raise: what every channel will say.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertFacts {
    pub kind: AlertKind,
    pub incident_id: Uuid,
    pub since: DateTime<Utc>,
    /// Failed attempts of the run so far.
    pub attempts: i32,
    pub last_error: String,
    /// The held head when failing; the log that was delivered when recovered.
    pub head_log_id: Uuid,
    /// When the attempt that raised the alert finished (a backlog alert: when it was raised).
    pub occurred_at: DateTime<Utc>,
    /// A backlog alert's figures (`None` for failing/recovered).
    pub backlog: Option<Backlog>,
}

/// What a backlog alert reports (`backlog.rs`): the destination's queue when it was raised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backlog {
    /// What crossed its threshold: `age` (the held head) or `depth` (parked tasks).
    pub reason: String,
    /// Why the queue is held (`failing`, `operator`), `None` when it is not held.
    pub held_reason: Option<String>,
    /// How long the head has been held, in seconds (0 when not held).
    pub held_for_secs: i64,
    /// Tasks parked behind the head.
    pub depth: i64,
    /// The thresholds in force (0: that criterion off).
    pub after_secs: i64,
    pub max_depth: i64,
}

impl Backlog {
    fn empty() -> Self {
        Backlog {
            reason: String::new(),
            held_reason: None,
            held_for_secs: 0,
            depth: 0,
            after_secs: 0,
            max_depth: 0,
        }
    }
}

/// The value of every notification's `schema` field.
pub const SCHEMA: &str = "carrier.notification.v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    Failing,
    Recovered,
    /// A production destination's queue piles up (held head too old, or too deep).
    Backlog,
    /// That backlog is gone.
    BacklogCleared,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Failing => "failing",
            AlertKind::Recovered => "recovered",
            AlertKind::Backlog => "backlog",
            AlertKind::BacklogCleared => "backlog_cleared",
        }
    }

    /// Backlog alerts also go to the operator's recipients (`alerts.operator_*`).
    pub fn is_backlog(self) -> bool {
        matches!(self, AlertKind::Backlog | AlertKind::BacklogCleared)
    }
}

/// One alert, as every channel carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub schema: String,
    /// The alert's ID: the same in every channel (deduplicate by it).
    pub id: Uuid,
    pub kind: AlertKind,
    /// One incident has one `failing` and one `recovered` alert.
    pub incident_id: Uuid,
    pub organization_id: Uuid,
    pub destination_id: Uuid,
    pub destination_name: String,
    pub environment: String,
    /// When the first failed attempt of the incident started (RFC 3339).
    pub since: String,
    /// Consecutive failed attempts: 3 (the threshold) when failing; all of the incident's when
    /// recovered.
    pub attempts: i32,
    pub last_error: String,
    /// The held head log when failing; the log whose delivery ended the incident when recovered.
    pub head_log_id: Uuid,
    /// The operator command that shows the destination's queue.
    pub queue_command: String,
    /// When the attempt that raised the alert finished (RFC 3339); a backlog alert: when the
    /// notifier raised it.
    pub occurred_at: String,
    /// Only in `backlog` and `backlog_cleared` alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<Backlog>,
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Notification {
    pub fn new(
        id: Uuid,
        alert: &AlertFacts,
        organization_id: Uuid,
        destination_id: Uuid,
        destination_name: String,
        environment: String,
    ) -> Self {
        Self {
            schema: SCHEMA.into(),
            id,
            kind: alert.kind,
            incident_id: alert.incident_id,
            organization_id,
            destination_id,
            destination_name,
            environment,
            since: rfc3339(alert.since),
            attempts: alert.attempts,
            last_error: alert.last_error.clone(),
            head_log_id: alert.head_log_id,
            queue_command: format!("carrierctl destinations queue {destination_id}"),
            occurred_at: rfc3339(alert.occurred_at),
            backlog: alert.backlog.clone(),
        }
    }

    /// The destination as people read it: its name, or its ID when it has none.
    fn destination_label(&self) -> String {
        if self.destination_name.is_empty() {
            self.destination_id.to_string()
        } else {
            self.destination_name.clone()
        }
    }

    /// One line for people (Slack `text`, e-mail subject).
    pub fn summary(&self) -> String {
        match self.kind {
            AlertKind::Failing => format!(
                "Carrier destination {} is failing: {} consecutive failed attempts since {}",
                self.destination_label(),
                self.attempts,
                self.since
            ),
            AlertKind::Recovered => format!(
                "Carrier destination {} recovered after {} failed attempts since {}",
                self.destination_label(),
                self.attempts,
                self.since
            ),
            AlertKind::Backlog => {
                let backlog = self.backlog.clone().unwrap_or_else(Backlog::empty);
                let held = match &backlog.held_reason {
                    Some(reason) => format!("held ({reason}) for {} s", backlog.held_for_secs),
                    None => "not held".to_string(),
                };
                format!(
                    "Carrier destination {} has a backlog: {held}, {} tasks parked",
                    self.destination_label(),
                    backlog.depth
                )
            }
            AlertKind::BacklogCleared => format!(
                "Carrier destination {}'s backlog cleared (it had piled up since {})",
                self.destination_label(),
                self.since
            ),
        }
    }

    /// The Slack text: the summary, then the details.
    /// Slack text and e-mail lines of a backlog alert's figures (empty for other kinds).
    fn backlog_lines(&self) -> String {
        self.backlog
            .as_ref()
            .map(|backlog| {
                format!(
                    "Backlog: {} (held: {}, for {} s; {} parked; thresholds {} s, {} tasks; 0 = off)\n",
                    backlog.reason,
                    backlog.held_reason.as_deref().unwrap_or("no"),
                    backlog.held_for_secs,
                    backlog.depth,
                    backlog.after_secs,
                    backlog.max_depth
                )
            })
            .unwrap_or_default()
    }

    pub fn slack_text(&self) -> String {
        format!(
            "{}\n{}Destination: {} ({})\nLast error: {}\nHead log: {}\nQueue: `{}`",
            self.summary(),
            self.backlog_lines(),
            self.destination_label(),
            self.destination_id,
            self.last_error,
            self.head_log_id,
            self.queue_command
        )
    }

    /// The Slack incoming-webhook body: a readable `text` plus every field of the notification.
    pub fn slack_body(&self) -> serde_json::Value {
        let mut body = serde_json::to_value(self).expect("a notification serializes");
        body["text"] = serde_json::Value::String(self.slack_text());
        body
    }

    pub fn email_subject(&self) -> String {
        format!("[Carrier] {}: {}", self.kind.as_str(), self.summary())
    }

    /// Plain text: the details for people, then the notification as JSON for tools.
    pub fn email_body(&self) -> String {
        let mut body = format!(
            "{}\n\n\
             Kind:           {}\n\
             Destination:    {} ({})\n\
             Environment:    {}\n\
             Since:          {}\n\
             Attempts:       {}\n\
             Last error:     {}\n\
             Head log:       {}\n\
             Show the queue: {}\n\
             Incident:       {}\n\
             At:             {}\n\n",
            self.summary(),
            self.kind.as_str(),
            self.destination_label(),
            self.destination_id,
            self.environment,
            self.since,
            self.attempts,
            self.last_error,
            self.head_log_id,
            self.queue_command,
            self.incident_id,
            self.occurred_at,
        );
        body.push_str(&self.backlog_lines());
        if self.backlog.is_some() {
            body.push('\n');
        }
        body.push_str(&serde_json::to_string_pretty(self).expect("a notification serializes"));
        body.push('\n');
        body
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A notification of `kind` about the "ADT feed" destination (also used by `channels`' tests).
    pub(crate) fn sample(kind: AlertKind) -> Notification {
        let alert = AlertFacts {
            kind,
            incident_id: Uuid::from_u128(1),
            since: DateTime::from_timestamp(1_800_000_000, 0).expect("valid"),
            attempts: 3,
            last_error: "destination answered HTTP 500".into(),
            head_log_id: Uuid::from_u128(2),
            occurred_at: DateTime::from_timestamp(1_800_000_006, 0).expect("valid"),
            backlog: kind.is_backlog().then(|| Backlog {
                reason: "age".into(),
                held_reason: Some("failing".into()),
                held_for_secs: 1_200,
                depth: 42,
                after_secs: 900,
                max_depth: 1_000,
            }),
        };
        Notification::new(
            Uuid::from_u128(3),
            &alert,
            Uuid::from_u128(4),
            Uuid::from_u128(5),
            "ADT feed".into(),
            "production".into(),
        )
    }

    /// The committed schema accepts what the notifier sends (and names every field it sends).
    #[test]
    fn notifications_match_the_committed_schema() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../../docs/schemas/notification.v1.json"))
                .expect("the schema is JSON");
        let validator = jsonschema::validator_for(&schema).expect("a valid JSON schema");
        for kind in [
            AlertKind::Failing,
            AlertKind::Recovered,
            AlertKind::Backlog,
            AlertKind::BacklogCleared,
        ] {
            let notification = serde_json::to_value(sample(kind)).expect("serializes");
            assert_eq!(notification["kind"], kind.as_str());
            assert_eq!(
                notification.get("backlog").is_some(),
                kind.is_backlog(),
                "{notification}"
            );
            let errors: Vec<String> = validator
                .iter_errors(&notification)
                .map(|error| error.to_string())
                .collect();
            assert!(errors.is_empty(), "{kind:?}: {errors:?}");
            let slack = sample(kind).slack_body();
            assert!(slack["text"].as_str().unwrap_or("").contains("ADT feed"));
        }
        let mut wrong = serde_json::to_value(sample(AlertKind::Failing)).expect("serializes");
        wrong["kind"] = "degraded".into();
        assert!(!validator.is_valid(&wrong), "the schema restricts kind");
        let mut missing = serde_json::to_value(sample(AlertKind::Failing)).expect("serializes");
        missing.as_object_mut().expect("object").remove("head_log_id");
        assert!(!validator.is_valid(&missing), "the schema requires head_log_id");
    }

    #[test]
    fn people_read_the_destination_the_error_and_the_queue_command() {
        let failing = sample(AlertKind::Failing);
        assert_eq!(failing.since, "2027-01-15T08:00:00.000Z");
        assert_eq!(
            failing.queue_command,
            format!("carrierctl destinations queue {}", Uuid::from_u128(5))
        );
        let text = failing.slack_text();
        for part in [
            "ADT feed is failing",
            "destination answered HTTP 500",
            &Uuid::from_u128(2).to_string(),
            &failing.queue_command,
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
        assert!(failing.email_subject().starts_with("[Carrier] failing: "));
        assert!(failing.email_body().contains("\"kind\": \"failing\""));
        assert!(sample(AlertKind::Recovered)
            .summary()
            .contains("recovered after 3 failed attempts"));
    }
}
