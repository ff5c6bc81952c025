//! A scenario's result, its violations of what must hold, and the Markdown the results file
//! and the README show.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::analysis::{DestinationVerdict, ReorderKind};
use crate::settings::Settings;
use crate::topology::Role;

/// One destination's line in the details.
#[derive(Debug, Clone)]
pub struct DestinationRow {
    pub name: String,
    pub role: Role,
    /// Its partition of `carrier.deliveries` (the task key is the destination ID).
    pub partition: i32,
    pub verdict: DestinationVerdict,
    /// The most requests the receiver ever had in flight at once.
    pub max_in_flight: usize,
    /// The raw arrivals around the first reorder, one line each (empty without a reorder).
    pub reorder_window: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ScenarioReport {
    pub name: String,
    pub description: String,
    /// Requests the load sent, and those answered 200.
    pub sent: usize,
    pub accepted: usize,
    /// Requests not answered 200, by status.
    pub refused: BTreeMap<String, usize>,
    /// (accepted message, subscribed production destination) pairs.
    pub expected_deliveries: usize,
    pub destinations: Vec<DestinationRow>,
    pub timeline: Vec<(Duration, String)>,
    /// From the end of the load (faults undone) until everything accepted was delivered.
    pub settled_after: Option<Duration>,
    pub duration: Duration,
    pub evidence: Vec<String>,
    /// The harness itself failed (infrastructure did not start, ...).
    pub harness_error: Option<String>,
    pub log_dir: PathBuf,
}

impl ScenarioReport {
    pub fn delivered(&self) -> usize {
        self.production().map(|row| row.verdict.delivered).sum()
    }

    pub fn lost(&self) -> usize {
        self.destinations.iter().map(|row| row.verdict.lost).sum()
    }

    pub fn reorders(&self) -> usize {
        self.destinations
            .iter()
            .map(|row| row.verdict.reorders.len())
            .sum()
    }

    pub fn duplicates(&self) -> usize {
        self.destinations.iter().map(|row| row.verdict.duplicates).sum()
    }

    pub fn foreign_webhook_ids(&self) -> usize {
        self.destinations
            .iter()
            .map(|row| row.verdict.foreign_webhook_ids)
            .sum()
    }

    pub fn max_in_flight(&self) -> usize {
        self.destinations
            .iter()
            .map(|row| row.max_in_flight)
            .max()
            .unwrap_or(0)
    }

    /// The longest gap of a healthy destination; `None` when one received nothing after the
    /// fault started.
    pub fn longest_healthy_gap(&self) -> Option<Duration> {
        let mut longest = Duration::ZERO;
        for row in self.destinations.iter().filter(|row| row.role.healthy()) {
            longest = longest.max(row.verdict.longest_gap?);
        }
        Some(longest)
    }

    /// Time the healthy destinations stood still (gaps over a second), summed over them.
    pub fn healthy_stalled(&self) -> Duration {
        self.destinations
            .iter()
            .filter(|row| row.role.healthy())
            .filter_map(|row| row.verdict.stalled)
            .sum()
    }

    fn production(&self) -> impl Iterator<Item = &DestinationRow> {
        self.destinations.iter().filter(|row| row.role.production())
    }

    /// What broke an invariant (empty: the scenario passed).
    pub fn violations(&self) -> Vec<String> {
        let mut violations = Vec::new();
        if let Some(error) = &self.harness_error {
            violations.push(format!("harness: {error}"));
            return violations;
        }
        if self.accepted == 0 {
            violations.push("no message was accepted: the scenario proves nothing".into());
        }
        for row in &self.destinations {
            let verdict = &row.verdict;
            if verdict.lost > 0 {
                violations.push(format!(
                    "{}: {} accepted messages never delivered (e.g. {:?})",
                    row.name, verdict.lost, verdict.lost_examples
                ));
            }
            if !verdict.reorders.is_empty() {
                let examples: Vec<String> = verdict
                    .reorders
                    .iter()
                    .take(3)
                    .map(|(stream, reorder)| {
                        let kind = match reorder.kind {
                            ReorderKind::First => "first arrival before",
                            ReorderKind::Last => "last arrival before",
                        };
                        format!("{stream}: {} {kind} {}", reorder.message, reorder.previous)
                    })
                    .collect();
                violations.push(format!(
                    "{}: {} raw reorders ({})",
                    row.name,
                    verdict.reorders.len(),
                    examples.join("; ")
                ));
            }
            if verdict.foreign_webhook_ids > 0 {
                violations.push(format!(
                    "{}: {} arrivals with a webhook-id other than the original",
                    row.name, verdict.foreign_webhook_ids
                ));
            }
            if row.max_in_flight > 1 {
                violations.push(format!(
                    "{}: {} requests in flight at once",
                    row.name, row.max_in_flight
                ));
            }
        }
        violations
    }

    pub fn passed(&self) -> bool {
        self.violations().is_empty()
    }
}

fn seconds(duration: Duration) -> String {
    format!("{:.1}", duration.as_secs_f64())
}

/// The header of a results file: when, how, and with which settings.
pub fn header(settings: &Settings, command: &str) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "# Carrier fault matrix ({} matrix)\n", settings.matrix);
    let _ = writeln!(
        text,
        "- date: {}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    let _ = writeln!(text, "- command: `{command}`");
    let _ = writeln!(text, "- binaries: `{}`", settings.bin_dir.display());
    let _ = writeln!(
        text,
        "- load: {} production sources at {} msg/s each (6 destinations), 1 staging source at {} msg/s (2 destinations); {} delivery replicas (unless a scenario says otherwise); {} partitions of deliveries shared by 8 destinations",
        settings.production_streams,
        settings.stream_rate,
        settings.staging_rate,
        settings.delivery_replicas,
        settings.deliveries_partitions
    );
    let _ = writeln!(
        text,
        "- Carrier settings: session timeout {} ms, retry {}–{} ms (staging retry after {} ms), idempotence off (Tansu)",
        settings.session_timeout_ms, settings.retry_base_ms, settings.retry_cap_ms, settings.non_production_retry_ms
    );
    let _ = writeln!(
        text,
        "- phases: warm-up {} s, fault, recovery {} s, then up to {} s to settle; seed {}\n",
        settings.warm_up.as_secs(),
        settings.recovery.as_secs(),
        settings.settle_timeout.as_secs(),
        settings.seed
    );
    text
}

/// The summary table of `reports`.
pub fn table(reports: &[ScenarioReport]) -> String {
    let mut text = String::new();
    text.push_str("| scenario | accepted | delivered | lost | raw reorders | duplicates (foreign id) | max in flight | longest healthy gap (s) | settled after (s) | run (s) | result |\n");
    text.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for report in reports {
        let result = if report.passed() { "pass" } else { "**FAIL**" };
        if report.harness_error.is_some() {
            let _ = writeln!(
                text,
                "| {} | – | – | – | – | – | – | – | – | {} | **harness error** |",
                report.name,
                seconds(report.duration)
            );
            continue;
        }
        let gap = report
            .longest_healthy_gap()
            .map(seconds)
            .unwrap_or_else(|| "none delivered".into());
        let settled = report
            .settled_after
            .map(seconds)
            .unwrap_or_else(|| "not settled".into());
        let _ = writeln!(
            text,
            "| {} | {} | {}/{} | {} | {} | {} ({}) | {} | {} | {} | {} | {} |",
            report.name,
            report.accepted,
            report.delivered(),
            report.expected_deliveries,
            report.lost(),
            report.reorders(),
            report.duplicates(),
            report.foreign_webhook_ids(),
            report.max_in_flight(),
            gap,
            settled,
            seconds(report.duration),
            result
        );
    }
    text
}

/// One scenario's details: the fault, the timeline, refusals, per destination, violations and
/// evidence from the logs.
pub fn details(report: &ScenarioReport) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "### {}\n", report.name);
    let _ = writeln!(
        text,
        "{}. Logs: `{}`.\n",
        report.description,
        report.log_dir.display()
    );
    if let Some(error) = &report.harness_error {
        let _ = writeln!(text, "Harness error: {error}\n");
    }
    let refused: Vec<String> = report
        .refused
        .iter()
        .map(|(status, count)| format!("{status}: {count}"))
        .collect();
    let _ = writeln!(
        text,
        "Sent {}, accepted {}, not accepted: {}.\n",
        report.sent,
        report.accepted,
        if refused.is_empty() {
            "none".into()
        } else {
            refused.join(", ")
        }
    );
    text.push_str("Timeline (s since the scenario started):\n\n");
    for (at, event) in &report.timeline {
        let _ = writeln!(text, "- {} {event}", seconds(*at));
    }
    text.push('\n');
    if !report.destinations.is_empty() {
        text.push_str("| destination | role | partition | arrivals | delivered | lost | raw reorders | duplicates (foreign id) | not accepted | max in flight | longest gap (s) | stalled (s) |\n");
        text.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for row in &report.destinations {
            let verdict = &row.verdict;
            let gap = verdict.longest_gap.map(seconds).unwrap_or_else(|| "–".into());
            let stalled = verdict.stalled.map(seconds).unwrap_or_else(|| "–".into());
            let _ = writeln!(
                text,
                "| {} | {:?} | {} | {} | {} | {} | {} | {} ({}) | {} | {} | {} | {} |",
                row.name,
                row.role,
                row.partition,
                verdict.arrivals,
                verdict.delivered,
                verdict.lost,
                verdict.reorders.len(),
                verdict.duplicates,
                verdict.foreign_webhook_ids,
                verdict.unaccepted_arrivals,
                row.max_in_flight,
                gap,
                stalled
            );
        }
        text.push('\n');
        let _ = writeln!(
            text,
            "Stalled: time in gaps over {} s between deliveries from the fault's start; the healthy destinations stood still for {} s in all.\n",
            crate::analysis::STALL.as_secs(),
            seconds(report.healthy_stalled())
        );
    }
    let violations = report.violations();
    if !violations.is_empty() {
        text.push_str("Violations:\n\n");
        for violation in &violations {
            let _ = writeln!(text, "- {violation}");
        }
        text.push('\n');
    }
    for row in report
        .destinations
        .iter()
        .filter(|row| !row.reorder_window.is_empty())
    {
        let _ = writeln!(
            text,
            "Raw arrivals at `{}` around its first reorder (sequence, attempt, answer, s since start, webhook-id):\n\n```",
            row.name
        );
        for line in &row.reorder_window {
            let _ = writeln!(text, "{line}");
        }
        text.push_str("```\n\n");
    }
    if !report.evidence.is_empty() {
        text.push_str("Committed offsets / high watermarks at the end, and log lines (partition ownership, errors, restarts):\n\n```\n");
        for line in &report.evidence {
            let _ = writeln!(text, "{line}");
        }
        text.push_str("```\n\n");
    }
    text
}

/// A whole results file.
pub fn document(settings: &Settings, command: &str, reports: &[ScenarioReport], total: Duration) -> String {
    let mut text = header(settings, command);
    let passed = reports.iter().filter(|report| report.passed()).count();
    let _ = writeln!(
        text,
        "{passed} of {} scenarios passed; the run took {:.1} min.\n",
        reports.len(),
        total.as_secs_f64() / 60.0
    );
    text.push_str(&table(reports));
    text.push_str(COLUMNS);
    text.push_str("\n## Details\n\n");
    for report in reports {
        text.push_str(&details(report));
    }
    text
}

/// What each column means (also in the README).
pub const COLUMNS: &str = "
Columns: **accepted** messages answered 200; **delivered** (accepted message, subscribed production destination) pairs answered 2xx by the receiver, of all such pairs; **lost** pairs never delivered by the end of the settle time (must be 0); **raw reorders** messages out of order in the raw arrival sequence of a destination (duplicates included: a message whose first arrival precedes the previous message's first arrival, or whose last arrival precedes the previous message's last arrival; must be 0); **duplicates** arrivals whose (`webhook-id`, `carrier-attempt`) was seen before, and in brackets arrivals whose `webhook-id` is not the message's original log ID (must be 0); **max in flight** the most requests one destination had at once (must be 1); **longest healthy gap** the longest time without a delivery at an always-healthy destination from the fault's start; **settled after** time from the end of the load until every accepted message was delivered.
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{Reorder, ReorderKind};

    fn row(name: &str, role: Role, verdict: DestinationVerdict, max_in_flight: usize) -> DestinationRow {
        DestinationRow {
            name: name.into(),
            role,
            partition: 0,
            verdict,
            max_in_flight,
            reorder_window: Vec::new(),
        }
    }

    #[test]
    fn violations_name_what_broke() {
        let mut report = ScenarioReport {
            name: "kill-router".into(),
            accepted: 10,
            destinations: vec![
                row("healthy-1", Role::Healthy, DestinationVerdict::default(), 1),
                row(
                    "staging-500",
                    Role::StagingFailing,
                    DestinationVerdict::default(),
                    1,
                ),
            ],
            ..ScenarioReport::default()
        };
        assert!(report.passed(), "{:?}", report.violations());

        report.destinations[0].verdict.lost = 2;
        report.destinations[0].verdict.lost_examples = vec![4, 5];
        report.destinations[0].verdict.reorders = vec![(
            "production-1".into(),
            Reorder {
                message: 3,
                previous: 2,
                kind: ReorderKind::Last,
            },
        )];
        report.destinations[1].max_in_flight = 2;
        report.destinations[1].verdict.foreign_webhook_ids = 1;
        let violations = report.violations();
        assert_eq!(violations.len(), 4, "{violations:?}");
        assert!(violations[0].contains("healthy-1: 2 accepted messages never delivered"));
        assert!(violations[1].contains("production-1: 3 last arrival before 2"));
        let table = table(&[report]);
        assert!(
            table.contains("| kill-router | 10 | 0/0 | 2 | 1 | 0 (1) | 2 |"),
            "{table}"
        );
        assert!(table.contains("**FAIL**"));
    }

    #[test]
    fn nothing_accepted_is_a_failure() {
        let report = ScenarioReport::default();
        assert!(!report.passed());
    }
}
