//! `carrier-bench idle`: what an idle stack costs, and what a message waits.
//!
//! Against the running stack (`scripts/bench.sh idle` starts it twice: with
//! `kafka.idle_after_ms = 0`, every partition fetched always, and with make up's 2000):
//! 1. the CPU time each process of `CARRIER_BENCH_IDLE_PIDS` (`name=pid ...`, the broker
//!    first) spends over `CARRIER_BENCH_IDLE_SECONDS` (20) with nothing sent, after a quiet
//!    spell that leaves partitions idle;
//! 2. send → arrival of `CARRIER_BENCH_IDLE_SAMPLES` (10) messages, each after
//!    `CARRIER_BENCH_QUIET_MS` (3000) of quiet: the first message after a quiet spell;
//! 3. send → arrival of 100 messages at 20 msg/s: a busy pipeline.
//!
//! Each run writes its figures as one JSON line to `CARRIER_BENCH_OUT`; with
//! `CARRIER_BENCH_IDLE_COMPARE` (the other run's JSON) it writes the table of both to
//! `CARRIER_BENCH_REPORT` (`.run/bench/idle.md`), ratios computed there.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use carrier_testkit::client::Api;
use serde_json::{json, Value};

use crate::delivery::process_cpu;
use crate::{env_number, env_or, env_pairs, percentile, start_receiver, unix_micros, Arrivals};

/// Sends one latency message and waits for it to arrive; its send → arrival.
async fn one_message(
    api: &Api,
    token: &str,
    arrivals: &Arrivals,
    sequence: usize,
) -> anyhow::Result<Duration> {
    let before = arrivals.latencies.lock().expect("lock").len();
    let body = json!({
        "Meta": { "DataModel": "Latency", "EventType": "New" },
        "Sequence": sequence,
        "SentMicros": unix_micros(),
    });
    let (status, answer) = api.send(token, &body).await;
    anyhow::ensure!(status == 200, "a message was refused: {status} {answer}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(latency) = arrivals.latencies.lock().expect("lock").get(before) {
            return Ok(*latency);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "message {sequence} did not arrive in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn summary(mut latencies: Vec<Duration>) -> Value {
    latencies.sort();
    json!({
        "p50_ms": percentile(&latencies, 0.5),
        "p99_ms": percentile(&latencies, 0.99),
        "max_ms": latencies.last().map_or(f64::NAN, |max| max.as_secs_f64() * 1000.0),
        "count": latencies.len(),
    })
}

pub async fn run(ingress: &str, admin_token: &str, output: &str) -> anyhow::Result<()> {
    let label = env_or("CARRIER_BENCH_IDLE_LABEL", "this stack");
    let pids = env_pairs("CARRIER_BENCH_IDLE_PIDS", "");
    anyhow::ensure!(
        !pids.is_empty(),
        "CARRIER_BENCH_IDLE_PIDS (name=pid ...) is needed"
    );
    let idle_seconds: u64 = env_number("CARRIER_BENCH_IDLE_SECONDS", 20);
    let samples: usize = env_number("CARRIER_BENCH_IDLE_SAMPLES", 10);
    let quiet = Duration::from_millis(env_number("CARRIER_BENCH_QUIET_MS", 3_000));

    let arrivals = Arc::new(Arrivals::default());
    let receiver = start_receiver(arrivals.clone()).await?;
    let api = Api::new(ingress, admin_token);
    let organization = api.create_organization("Idle benchmark").await;
    let source = api.create_source(&organization, "production").await;
    api.subscribed_destination(
        &organization,
        &source,
        &format!("http://{receiver}/latency"),
        "production",
        "Latency",
    )
    .await;
    let token = api.token(&source).await;
    // The route is cached and every stage has seen a record: what follows is steady state.
    one_message(&api, &token, &arrivals, 0).await?;

    println!("{label}: {idle_seconds} s with nothing sent");
    tokio::time::sleep(quiet).await;
    let before: Vec<Duration> = pids.iter().map(|(_, pid)| process_cpu(pid)).collect();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(idle_seconds)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let idle_cpu: serde_json::Map<String, Value> = pids
        .iter()
        .zip(before)
        .map(|((name, pid), before)| {
            let used = process_cpu(pid).saturating_sub(before).as_secs_f64();
            (name.clone(), json!(used / elapsed * 100.0))
        })
        .collect();

    println!(
        "{label}: {samples} messages, each after {} ms of quiet",
        quiet.as_millis()
    );
    let mut after_quiet = Vec::new();
    for sequence in 1..=samples {
        tokio::time::sleep(quiet).await;
        after_quiet.push(one_message(&api, &token, &arrivals, sequence).await?);
    }
    println!("{label}: 100 messages at 20 msg/s");
    let mut busy = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(50));
    for sequence in 0..100 {
        ticker.tick().await;
        busy.push(one_message(&api, &token, &arrivals, 1_000 + sequence).await?);
    }

    let result = json!({
        "label": label,
        "idle_cpu_percent_of_a_core": idle_cpu,
        "after_quiet": summary(after_quiet),
        "busy": summary(busy),
    });
    println!("{result}");
    if let Some(parent) = std::path::Path::new(output).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(output, format!("{result}\n"))?;
    if let Ok(compare) = std::env::var("CARRIER_BENCH_IDLE_COMPARE") {
        let other: Value =
            serde_json::from_str(&std::fs::read_to_string(&compare).context("the other run's JSON")?)?;
        let report_path = env_or("CARRIER_BENCH_REPORT", ".run/bench/idle.md");
        let report = report(&[other, result], &pids);
        println!("\n{report}");
        std::fs::write(&report_path, report)?;
        println!("written to {report_path}");
    }
    Ok(())
}

fn report(runs: &[Value], pids: &[(String, String)]) -> String {
    let mut report = format!(
        "# Idle stack and first-message latency — {}\n\nCPU: % of one core over the idle window (nothing sent). Latency: send → arrival at the receiver, one destination.\n\n",
        chrono::Utc::now().to_rfc3339()
    );
    report.push_str("| run |");
    for (name, _) in pids {
        report.push_str(&format!(" {name} idle CPU % |"));
    }
    report.push_str(" after quiet p50 / max ms | busy (20 msg/s) p50 / p99 ms |\n|---|");
    for _ in pids {
        report.push_str("---|");
    }
    report.push_str("---|---|\n");
    for run in runs {
        report.push_str(&format!("| {} |", run["label"].as_str().unwrap_or("?")));
        for (name, _) in pids {
            report.push_str(&format!(
                " {:.1} |",
                run["idle_cpu_percent_of_a_core"][name]
                    .as_f64()
                    .unwrap_or(f64::NAN)
            ));
        }
        report.push_str(&format!(
            " {:.1} / {:.1} | {:.1} / {:.1} |\n",
            run["after_quiet"]["p50_ms"].as_f64().unwrap_or(f64::NAN),
            run["after_quiet"]["max_ms"].as_f64().unwrap_or(f64::NAN),
            run["busy"]["p50_ms"].as_f64().unwrap_or(f64::NAN),
            run["busy"]["p99_ms"].as_f64().unwrap_or(f64::NAN),
        ));
    }
    if let (Some((broker, _)), [always, idle]) = (pids.first(), runs) {
        let cpu = |run: &Value| {
            run["idle_cpu_percent_of_a_core"][broker]
                .as_f64()
                .unwrap_or(f64::NAN)
        };
        let quiet = |run: &Value| run["after_quiet"]["p50_ms"].as_f64().unwrap_or(f64::NAN);
        report.push_str(&format!(
            "\n{broker} idle: {:.1} % → {:.1} % of a core (target < 10 %); the first message after a quiet spell: p50 {:.1} → {:.1} ms ({:+.1} ms)\n",
            cpu(always),
            cpu(idle),
            quiet(always),
            quiet(idle),
            quiet(idle) - quiet(always),
        ));
    }
    report
}
