//! The fault matrix (`make chaos`; a shortened matrix runs in `make test`).
//!
//! Each scenario runs Carrier's real binaries as child processes on infrastructure of its own,
//! puts steady load through ingress, injects one kind of fault, undoes it, waits for every
//! accepted message to arrive, and judges what each receiver saw: nothing lost, no raw
//! reorder, duplicates only with their original `webhook-id`, one request in flight per
//! destination.
//!
//! - [`settings`]: the full and the short matrix's sizes and Carrier's settings.
//! - [`scenario`]: the matrix, one fault per scenario.
//! - [`world`]: what a scenario runs on, up and down ([`infra`]: own Postgres, Redis, Tansu;
//!   [`kafka_split`]: why and how delivery's broker traffic goes through a fault proxy;
//!   [`stack`]: the services as processes; [`topology`]: destinations, receivers, sources).
//! - [`load`]: the paced senders and what ingress accepted.
//! - [`faults`]: injecting a scenario's fault.
//! - [`observe`], [`analysis`]: reading the receivers, and the pure definitions of lost, raw
//!   reorder, duplicate and gap.
//! - [`run`]: one scenario end to end; [`report`]: its result; [`logs`] and [`lag`]: evidence
//!   from the services' logs and the consumer groups' committed offsets.
//! - [`process`]: a child process that can be killed, frozen and started again.
#![forbid(unsafe_code)]

pub mod analysis;
pub mod faults;
pub mod infra;
pub mod kafka_split;
pub mod lag;
pub mod load;
pub mod logs;
pub mod observe;
pub mod process;
pub mod report;
pub mod run;
pub mod scenario;
pub mod settings;
pub mod stack;
pub mod topology;
pub mod world;

use std::path::Path;
use std::time::Instant;

pub use report::ScenarioReport;
pub use run::run_scenario;
pub use scenario::{matrix, Scenario};
pub use settings::Settings;

/// Scenarios of the short matrix that fail on the current code, and why. `make test` skips
/// them (they run with `CARRIER_CHAOS_RUN_IGNORED=1`, and always in `make chaos`); each fix
/// removes its entry.
pub const SHORT_MATRIX_IGNORED: &[(&str, &str)] = &[
    // Empty since partitions are assigned by leases (issue 10 §0 and §3): kill-delivery and
    // scale-delivery failed on Tansu's group coordinator (a killed member kept its partitions;
    // a partition reached its next owner before the previous one let it go).
];

/// Why `scenario` is skipped in `make test`, if it is.
pub fn ignored_reason(scenario: &str) -> Option<&'static str> {
    SHORT_MATRIX_IGNORED
        .iter()
        .find(|(name, _)| *name == scenario)
        .map(|(_, reason)| *reason)
}

/// Runs `scenarios` one after the other, rewriting `out` after each, so a partial run leaves
/// its results too.
pub async fn run_matrix(
    settings: &Settings,
    scenarios: &[Scenario],
    out: &Path,
    command: &str,
) -> anyhow::Result<Vec<ScenarioReport>> {
    let started = Instant::now();
    let mut reports = Vec::new();
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    for scenario in scenarios {
        let report = run_scenario(settings, scenario).await;
        println!(
            "{:<18} {} ({:.0} s){}",
            report.name,
            if report.passed() { "pass" } else { "FAIL" },
            report.duration.as_secs_f64(),
            report
                .violations()
                .first()
                .map(|violation| format!(": {violation}"))
                .unwrap_or_default()
        );
        reports.push(report);
        std::fs::write(
            out,
            report::document(settings, command, &reports, started.elapsed()),
        )?;
    }
    Ok(reports)
}
