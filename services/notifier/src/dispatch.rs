//! The alert outbox dispatcher: one task per channel sends that channel's due rows of
//! `alert_deliveries`, so a channel that fails or hangs never holds up the others.
//!
//! - A row is claimed with a lease (`lease_until`) under `FOR UPDATE SKIP LOCKED`, so notifier
//!   replicas share the work and never send one row at the same time; a notifier that dies
//!   mid-send leaves its lease to expire and another one sends the row.
//! - After a send the row is `sent` (or `skipped`: nothing to send to); after a failure it is
//!   retried with backoff (`retry_base_ms` doubling to `retry_cap_ms`, ±20 %), forever.
//! - A channel sends an incident's `recovered` alert only after its `failing` one.
//! - At least once: a crash between a send and its row's update sends it again. Each
//!   notification carries its alert `id` for receivers to deduplicate.

use std::sync::Arc;
use std::time::Duration;

use carrier_store::sqlx::{self, PgPool, Row};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::channels::{Channel, Channels, Recipients, Sent};
use crate::metrics::metrics;
use crate::notification::Notification;
use crate::AlertSettings;

/// Rows one channel claims at a time (sent concurrently).
const CLAIM_BATCH: i64 = 32;

/// Wakes the channel tasks when new alerts were committed (they also poll).
#[derive(Clone, Default)]
pub struct Wakeup(Arc<[Notify; 3]>);

impl Wakeup {
    pub fn wake_all(&self) {
        for notify in self.0.iter() {
            notify.notify_one();
        }
    }

    fn notify(&self, channel: Channel) -> &Notify {
        &self.0[channel as usize]
    }
}

/// Starts one task per channel; they end when `shutdown` is cancelled, after their current
/// sends finish.
pub fn start(
    pool: PgPool,
    channels: Channels,
    settings: AlertSettings,
    wakeup: Wakeup,
    shutdown: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    Channel::ALL
        .iter()
        .map(|channel| {
            tokio::spawn(run_channel(
                *channel,
                pool.clone(),
                channels.clone(),
                settings.clone(),
                wakeup.clone(),
                shutdown.clone(),
            ))
        })
        .collect()
}

struct Claimed {
    alert_id: Uuid,
    attempts: i32,
    notification: Result<Notification, String>,
    recipients: Recipients,
}

async fn run_channel(
    channel: Channel,
    pool: PgPool,
    channels: Channels,
    settings: AlertSettings,
    wakeup: Wakeup,
    shutdown: CancellationToken,
) {
    let poll = Duration::from_millis(settings.poll_interval_ms);
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let claimed = match claim(&pool, channel, &settings).await {
            Ok(claimed) => claimed,
            Err(error) => {
                metrics()
                    .outbox_errors
                    .with_label_values(&[channel.as_str()])
                    .inc();
                tracing::warn!(%error, channel = channel.as_str(), "reading the alert outbox failed, retrying");
                Vec::new()
            }
        };
        if claimed.is_empty() {
            tokio::select! {
                _ = wakeup.notify(channel).notified() => {}
                _ = tokio::time::sleep(poll) => {}
                _ = shutdown.cancelled() => return,
            }
            continue;
        }
        let sends = claimed.iter().map(|row| send_one(channel, &channels, row));
        let results = futures::future::join_all(sends).await;
        for (row, result) in claimed.iter().zip(results) {
            if let Err(error) = record(&pool, channel, row, result, &settings).await {
                // The lease expires and the row is sent again: at least once.
                metrics()
                    .outbox_errors
                    .with_label_values(&[channel.as_str()])
                    .inc();
                tracing::warn!(%error, channel = channel.as_str(), alert_id = %row.alert_id, "recording an alert send failed; it will be sent again");
            }
        }
    }
}

async fn send_one(channel: Channel, channels: &Channels, row: &Claimed) -> Result<Sent, String> {
    let notification = row.notification.as_ref().map_err(Clone::clone)?;
    channels
        .send(channel, notification, &row.recipients)
        .await
        .map_err(|error| error.to_string())
}

/// Claims up to [`CLAIM_BATCH`] due rows of `channel` with a lease.
async fn claim(
    pool: &PgPool,
    channel: Channel,
    settings: &AlertSettings,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let rows = sqlx::query(
        "WITH due AS (
             SELECT d.alert_id FROM alert_deliveries d JOIN alerts a ON a.id = d.alert_id
             WHERE d.channel = $1 AND d.status = 'pending' AND d.next_attempt_at <= now()
               AND (d.lease_until IS NULL OR d.lease_until <= now())
               AND NOT (a.kind IN ('recovered', 'backlog_cleared') AND EXISTS (
                   SELECT 1 FROM alert_deliveries p JOIN alerts f ON f.id = p.alert_id
                   WHERE p.channel = d.channel AND p.status = 'pending'
                     AND f.incident_id = a.incident_id
                     AND f.kind = CASE a.kind WHEN 'recovered' THEN 'failing' ELSE 'backlog' END))
             ORDER BY d.next_attempt_at
             LIMIT $2
             FOR UPDATE OF d SKIP LOCKED
         )
         UPDATE alert_deliveries d
         SET lease_until = now() + $3 * interval '1 millisecond', attempts = d.attempts + 1
         FROM due JOIN alerts a ON a.id = due.alert_id
              LEFT JOIN organizations o ON o.id = a.organization_id
         WHERE d.alert_id = due.alert_id AND d.channel = $1
         RETURNING d.alert_id, d.attempts, a.payload, o.alert_emails, o.slack_webhook_url",
    )
    .bind(channel.as_str())
    .bind(CLAIM_BATCH)
    .bind(settings.lease_ms as f64)
    .fetch_all(pool)
    .await?;
    let mut claimed = Vec::with_capacity(rows.len());
    for row in rows {
        let payload: serde_json::Value = row.get("payload");
        let notification: Result<Notification, String> = serde_json::from_value(payload)
            .map_err(|error| format!("stored notification unreadable: {error}"));
        let mut recipients = Recipients {
            alert_emails: row
                .get::<Option<Vec<String>>, _>("alert_emails")
                .unwrap_or_default(),
            slack_webhook_url: row.get("slack_webhook_url"),
            ..Default::default()
        };
        if notification.as_ref().is_ok_and(|n| n.kind.is_backlog()) {
            recipients.operator_emails = settings.operator_emails.clone();
            recipients.operator_slack_webhook_url = settings.operator_slack_webhook_url.clone();
        }
        claimed.push(Claimed {
            alert_id: row.get("alert_id"),
            attempts: row.get("attempts"),
            notification,
            recipients,
        });
    }
    Ok(claimed)
}

/// Stores the outcome of one send, counts it and logs failures.
async fn record(
    pool: &PgPool,
    channel: Channel,
    row: &Claimed,
    result: Result<Sent, String>,
    settings: &AlertSettings,
) -> Result<(), sqlx::Error> {
    let kind = row
        .notification
        .as_ref()
        .map(|notification| notification.kind.as_str())
        .unwrap_or("unknown");
    match result {
        Ok(Sent::Delivered) => {
            metrics()
                .sends
                .with_label_values(&[channel.as_str(), kind, "sent"])
                .inc();
            tracing::info!(channel = channel.as_str(), alert_id = %row.alert_id, kind, "alert sent");
            sqlx::query(
                "UPDATE alert_deliveries SET status = 'sent', sent_at = now(), lease_until = NULL
                 WHERE alert_id = $1 AND channel = $2",
            )
            .bind(row.alert_id)
            .bind(channel.as_str())
            .execute(pool)
            .await?;
        }
        Ok(Sent::Skipped(reason)) => {
            metrics()
                .sends
                .with_label_values(&[channel.as_str(), kind, "skipped"])
                .inc();
            tracing::debug!(channel = channel.as_str(), alert_id = %row.alert_id, kind, reason, "alert not sent on this channel");
            sqlx::query(
                "UPDATE alert_deliveries SET status = 'skipped', last_error = $3, lease_until = NULL
                 WHERE alert_id = $1 AND channel = $2",
            )
            .bind(row.alert_id)
            .bind(channel.as_str())
            .bind(reason)
            .execute(pool)
            .await?;
        }
        Err(error) => {
            metrics()
                .sends
                .with_label_values(&[channel.as_str(), kind, "failed"])
                .inc();
            let delay = retry_delay(settings, row.attempts, rand::random::<f64>());
            tracing::warn!(
                %error,
                channel = channel.as_str(),
                alert_id = %row.alert_id,
                kind,
                attempts = row.attempts,
                retry_in_ms = delay.as_millis() as u64,
                "sending an alert failed, will retry"
            );
            sqlx::query(
                "UPDATE alert_deliveries
                 SET last_error = $3, lease_until = NULL, next_attempt_at = now() + $4 * interval '1 millisecond'
                 WHERE alert_id = $1 AND channel = $2",
            )
            .bind(row.alert_id)
            .bind(channel.as_str())
            .bind(error)
            .bind(delay.as_millis() as f64)
            .execute(pool)
            .await?;
        }
    }
    Ok(())
}

/// The delay after failed send number `attempts` (1-based): `retry_base_ms` doubling up to
/// `retry_cap_ms`, placed by `unit` (in [0, 1)) within ±20 %.
fn retry_delay(settings: &AlertSettings, attempts: i32, unit: f64) -> Duration {
    let exponent = (attempts.max(1) - 1).min(32) as u32;
    let nominal = settings
        .retry_base_ms
        .saturating_mul(1u64 << exponent)
        .min(settings.retry_cap_ms) as f64;
    let delay = nominal * (0.8 + 0.4 * unit.clamp(0.0, 1.0));
    Duration::from_millis(delay.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_sends_back_off_to_the_cap() {
        let settings = AlertSettings {
            retry_base_ms: 1_000,
            retry_cap_ms: 300_000,
            ..AlertSettings::default()
        };
        assert_eq!(retry_delay(&settings, 1, 0.5), Duration::from_millis(1_000));
        assert_eq!(retry_delay(&settings, 2, 0.5), Duration::from_millis(2_000));
        assert_eq!(retry_delay(&settings, 4, 0.0), Duration::from_millis(6_400));
        assert_eq!(retry_delay(&settings, 40, 0.5), Duration::from_millis(300_000));
        assert_eq!(retry_delay(&settings, 40, 1.0), Duration::from_millis(360_000));
    }
}
