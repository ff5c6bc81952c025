//! Instruction counts of services run under `valgrind --tool=callgrind` (`bash scripts/bench.sh
//! instructions` starts them so): what a fixed batch of messages costs each one, in instructions
//! executed, a figure that does not move with the machine's other load as CPU time does.
//!
//! `callgrind_control -z PID` zeroes a process's counters and `callgrind_control -d PID` dumps
//! them to a new file in `CARRIER_CALLGRIND_DIR` (`<name>.<pid>.<n>`, valgrind's
//! `--callgrind-out-file=DIR/<name>.%p`), whose `totals:` line is the instructions executed
//! since the zeroing, every thread together.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The processes under callgrind, by name, and where their dumps go.
pub struct Callgrind {
    dir: PathBuf,
    pids: Vec<(String, String)>,
}

impl Callgrind {
    /// `Some` when `CARRIER_CALLGRIND_DIR` is set (the directory `scripts/under-callgrind.sh`
    /// writes to): every process of `pids` but the broker runs under callgrind.
    pub fn from_env(pids: &[(String, String)]) -> Option<Self> {
        let dir = std::env::var_os("CARRIER_CALLGRIND_DIR")?;
        Some(Self {
            dir: PathBuf::from(dir),
            pids: pids.iter().filter(|(name, _)| name != "tansu").cloned().collect(),
        })
    }

    fn control(&self, option: &str, pid: &str) -> anyhow::Result<()> {
        let output = std::process::Command::new("callgrind_control")
            .args([option, pid])
            .output()
            .context("callgrind_control (Debian package valgrind)")?;
        anyhow::ensure!(
            output.status.success(),
            "callgrind_control {option} {pid}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    /// Zeroes every process's counters.
    pub fn zero(&self) -> anyhow::Result<()> {
        for (_, pid) in &self.pids {
            self.control("-z", pid)?;
        }
        Ok(())
    }

    /// Every process's instructions since its last zeroing (or dump), by name; dumping zeroes.
    pub async fn read(&self) -> anyhow::Result<BTreeMap<String, f64>> {
        let mut counts = BTreeMap::new();
        for (name, pid) in &self.pids {
            let before = dumps(&self.dir, name, pid)?;
            self.control("-d", pid)?;
            // callgrind_control returns once the request is taken; the file follows.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            let file = loop {
                let after = dumps(&self.dir, name, pid)?;
                if let Some(file) = after.into_iter().find(|file| !before.contains(file)) {
                    if let Some(total) = totals(&file)? {
                        break total;
                    }
                }
                anyhow::ensure!(
                    std::time::Instant::now() < deadline,
                    "no new callgrind dump of {name} (pid {pid}) in {}",
                    self.dir.display()
                );
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            };
            counts.insert(name.clone(), file as f64);
        }
        Ok(counts)
    }
}

/// The dump files of `name`'s process `pid`.
fn dumps(dir: &Path, name: &str, pid: &str) -> anyhow::Result<Vec<PathBuf>> {
    let prefix = format!("{name}.{pid}.");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| dir.display().to_string())? {
        let path = entry?.path();
        if path
            .file_name()
            .and_then(|file| file.to_str())
            .is_some_and(|file| file.starts_with(&prefix))
        {
            files.push(path);
        }
    }
    Ok(files)
}

/// The `totals:` (or older valgrind's `summary:`) instruction count of a complete dump; `None`
/// while the file is still being written.
fn totals(file: &Path) -> anyhow::Result<Option<u64>> {
    let text = std::fs::read_to_string(file).with_context(|| file.display().to_string())?;
    Ok(parse_totals(&text))
}

fn parse_totals(text: &str) -> Option<u64> {
    text.lines()
        .rev()
        .find_map(|line| {
            line.strip_prefix("totals:")
                .or_else(|| line.strip_prefix("summary:"))
        })
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::parse_totals;

    #[test]
    fn a_dump_s_total_is_its_first_event_count() {
        let dump = "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nfn=main\n1 5\ntotals: 123456 7\n";
        assert_eq!(parse_totals(dump), Some(123_456));
        assert_eq!(parse_totals("summary: 42\n"), Some(42));
        assert_eq!(
            parse_totals("events: Ir\nfn=main\n"),
            None,
            "a dump still being written"
        );
    }
}
