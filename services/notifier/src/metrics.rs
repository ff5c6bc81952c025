//! The notifier's metrics: one static set, registered on first use.

use std::sync::OnceLock;

use carrier_telemetry::prometheus::{HistogramVec, IntCounter, IntCounterVec};

pub(crate) struct Metrics {
    /// Log events the log store refused, set aside in `dead_letter_events`.
    pub dead_letters: IntCounter,
    /// Incident alerts raised (a failing and a recovered one per incident).
    pub alerts_raised: IntCounter,
    /// One batch of log events written to the log store (retries and set-asides included).
    pub write_seconds: HistogramVec,
    /// Alert sends by channel, kind and outcome.
    pub sends: IntCounterVec,
    /// Alert outbox reads or updates that failed, by channel.
    pub outbox_errors: IntCounterVec,
}

const NO_LABELS: &[&str] = &[];

pub(crate) fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| Metrics {
        dead_letters: carrier_telemetry::counter_vec(
            "carrier_notifier_dead_letter_events_total",
            "Log events the log store refused, set aside in dead_letter_events",
            NO_LABELS,
        )
        .with_label_values(NO_LABELS),
        alerts_raised: carrier_telemetry::counter_vec(
            "carrier_notifier_alerts_raised_total",
            "Incident alerts raised (one failing and one recovered per incident)",
            NO_LABELS,
        )
        .with_label_values(NO_LABELS),
        write_seconds: carrier_telemetry::histogram_vec(
            "carrier_notifier_write_seconds",
            "Writing one batch of log events to the log store (Postgres), retries included",
            NO_LABELS,
        ),
        sends: carrier_telemetry::counter_vec(
            "carrier_notifier_alert_sends_total",
            "Alert sends by channel, kind and outcome (sent, skipped, failed; a failed send is retried)",
            &["channel", "kind", "outcome"],
        ),
        outbox_errors: carrier_telemetry::counter_vec(
            "carrier_notifier_alert_outbox_errors_total",
            "Alert outbox reads or updates that failed (Postgres), by channel",
            &["channel"],
        ),
    })
}
