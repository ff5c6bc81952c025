//! `carrier-chaos`: runs the fault matrix and writes its results (`scripts/chaos.sh`, i.e.
//! `make chaos`, builds the binaries and calls it).
//!
//! ```text
//! carrier-chaos [--short] [--only NAME,NAME] [--bin-dir DIR] [--run-dir DIR] [--out FILE] [--seed N]
//!               [--deliveries-partitions N]
//! ```
//! - `--short`: the shortened matrix (one fault of each kind, short outages).
//! - `--only`: these scenarios only (`--list` prints the names).
//! - `--bin-dir`: where the Carrier binaries are (default: next to this binary).
//! - `--run-dir`: scenario logs (default `.run/chaos`); `--out`: the results file (default
//!   `<run-dir>/results.md`, or `results-short.md` with `--short`).
//! - `--deliveries-partitions`: partitions of `carrier.deliveries` (default 4; the rebalance
//!   benchmark also runs with 12, `docs/rebalance-benchmark.md`).
//!
//! Exits 1 when a scenario failed.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use carrier_chaos::{matrix, run_matrix, Settings};

struct Arguments {
    short: bool,
    list: bool,
    only: Option<Vec<String>>,
    bin_dir: Option<PathBuf>,
    run_dir: PathBuf,
    out: Option<PathBuf>,
    seed: Option<u64>,
    deliveries_partitions: Option<i32>,
}

fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Arguments> {
    let mut parsed = Arguments {
        short: false,
        list: false,
        only: None,
        bin_dir: None,
        run_dir: PathBuf::from(".run/chaos"),
        out: None,
        seed: None,
        deliveries_partitions: None,
    };
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--short" => parsed.short = true,
            "--list" => parsed.list = true,
            "--only" => parsed.only = Some(value()?.split(',').map(str::to_string).collect()),
            "--bin-dir" => parsed.bin_dir = Some(value()?.into()),
            "--run-dir" => parsed.run_dir = value()?.into(),
            "--out" => parsed.out = Some(value()?.into()),
            "--seed" => parsed.seed = Some(value()?.parse().context("--seed is a number")?),
            "--deliveries-partitions" => {
                let partitions: i32 = value()?.parse().context("--deliveries-partitions is a number")?;
                anyhow::ensure!(partitions > 0, "--deliveries-partitions is at least 1");
                parsed.deliveries_partitions = Some(partitions);
            }
            other => {
                anyhow::bail!("unknown argument {other} (see the doc comment of tools/chaos/src/main.rs)")
            }
        }
    }
    Ok(parsed)
}

#[tokio::main]
async fn main() -> ExitCode {
    carrier_telemetry::print_version_if_asked("carrier-chaos");
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("carrier_chaos=info,warn")),
        )
        .try_init();
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("carrier-chaos: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn run() -> anyhow::Result<bool> {
    let arguments = parse(std::env::args().skip(1))?;
    let bin_dir = match arguments.bin_dir {
        Some(dir) => dir,
        None => std::env::current_exe()?
            .parent()
            .context("the binary's directory")?
            .to_path_buf(),
    };
    let run_dir = std::path::absolute(&arguments.run_dir)?;
    let mut settings = if arguments.short {
        Settings::short(bin_dir, run_dir.clone())
    } else {
        Settings::full(bin_dir, run_dir.clone())
    };
    if let Some(seed) = arguments.seed {
        settings.seed = seed;
    }
    if let Some(partitions) = arguments.deliveries_partitions {
        settings.deliveries_partitions = partitions;
    }
    let mut scenarios = matrix(&settings);
    if arguments.list {
        for scenario in &scenarios {
            println!("{:<18} {}", scenario.name, scenario.description());
        }
        return Ok(true);
    }
    if let Some(only) = &arguments.only {
        for name in only {
            anyhow::ensure!(
                scenarios.iter().any(|scenario| scenario.name == *name),
                "no scenario {name} (--list)"
            );
        }
        scenarios.retain(|scenario| only.contains(&scenario.name));
    }
    let out = arguments.out.unwrap_or_else(|| {
        run_dir.join(if arguments.short {
            "results-short.md"
        } else {
            "results.md"
        })
    });
    let command = std::env::var("CARRIER_CHAOS_COMMAND")
        .unwrap_or_else(|_| std::env::args().collect::<Vec<_>>().join(" "));
    let reports = run_matrix(&settings, &scenarios, &out, &command).await?;
    println!("results: {}", out.display());
    Ok(reports.iter().all(|report| report.passed()))
}
