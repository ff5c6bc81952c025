//! `carrier-bench`: measures a running Carrier (`make bench` starts one from release builds).
//!
//! 1. Ingress: `connections` concurrent senders POST a 1 KiB Data Model API message for
//!    `seconds`; accepted msgs/s and p50/p99 of the durable 200 (auth and routing on).
//! 2. The same load against the reference ceiling (`../shared/bench/ceiling`: axum → rdkafka
//!    acks=all → 200, nothing else), started here on the same broker, in the same run.
//! 3. End to end: one destination, messages paced at `e2e_rate` msg/s; p50/p99 from the send to
//!    the receiver's arrival (same machine clock).
//!
//! Results go to stdout and to `CARRIER_BENCH_OUT` (default `.run/bench/results.md`), with the
//! ratio to the ceiling computed in the run.
//!
//! `carrier-bench sustained` finds the highest rate the whole pipeline keeps up with, at fan-out
//! 1 and 10, and runs twice that for a minute (`sustained.rs`);
//! `carrier-bench records` counts the broker records written and the fetch requests made per
//! delivered message, at fan-out 1 and 10 (`records.rs`);
//! `carrier-bench idle` what an idle stack costs the broker and what the first message after a
//! quiet spell waits (`idle.rs`);
//! `carrier-bench delivery` measures isolation, drain rate and memory instead (`delivery.rs`);
//! `carrier-bench protection` the cost of the rate limiter, authentication and
//! `Idempotency-Key` on ingress throughput (`protection.rs`); `carrier-bench logs` the log store:
//! write throughput and search latency on 1,000,000 logs (`logs.rs`, Postgres only).
#![forbid(unsafe_code)]

mod delivery;
mod hops;
mod idle;
mod instructions;
mod logs;
mod protection;
mod records;
mod sustained;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Bytes;
use axum::routing::post;
use carrier_testkit::client::Api;
use serde_json::{json, Value};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

#[derive(Debug, Clone)]
struct LoadResult {
    label: String,
    /// Every 200, warm-up included.
    total_ok: usize,
    accepted: usize,
    failed: usize,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl LoadResult {
    fn rate(&self) -> f64 {
        self.accepted as f64 / self.seconds
    }
}

pub(crate) fn percentile(sorted: &[Duration], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

/// A 1 KiB Data Model API message.
fn kilobyte_message() -> Vec<u8> {
    let mut message = json!({
        "Meta": { "DataModel": "Results", "EventType": "New", "Test": false },
        "Patient": { "Identifiers": [ { "ID": "MRN-0000001", "IDType": "MR" } ] },
        "Padding": "",
    });
    let size = serde_json::to_vec(&message).expect("json").len();
    message["Padding"] = json!("x".repeat(1024usize.saturating_sub(size)));
    serde_json::to_vec(&message).expect("json")
}

/// `connections` closed-loop senders for `seconds` after a warm-up.
async fn load(
    label: &str,
    url: &str,
    token: Option<&str>,
    body: Vec<u8>,
    connections: usize,
    seconds: u64,
    // A new `Idempotency-Key` on every request.
    keyed: bool,
) -> LoadResult {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .expect("client");
    let warmup = Duration::from_secs(2);
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let body = Bytes::from(body);
    let mut workers = Vec::new();
    for worker in 0..connections {
        let client = client.clone();
        let url = url.to_string();
        let token = token.map(str::to_string);
        let body = body.clone();
        let stop = stop.clone();
        let measuring = measuring.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failed = 0usize;
            let mut total_ok = 0usize;
            let run = unix_micros();
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let mut request = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone());
                if keyed {
                    sent += 1;
                    request = request.header("idempotency-key", format!("bench-{run}-{worker}-{sent}"));
                }
                if let Some(token) = &token {
                    request = request.bearer_auth(token);
                }
                let ok = match request.send().await {
                    Ok(response) => {
                        let ok = response.status().is_success();
                        let _ = response.bytes().await;
                        ok
                    }
                    Err(_) => false,
                };
                total_ok += usize::from(ok);
                if measuring.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                    if ok {
                        latencies.push(started.elapsed());
                    } else {
                        failed += 1;
                    }
                }
            }
            (latencies, failed, total_ok)
        }));
    }
    tokio::time::sleep(warmup).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let mut latencies = Vec::new();
    let mut failed = 0;
    let mut total_ok = 0;
    for worker in workers {
        let (worker_latencies, worker_failed, worker_ok) = worker.await.expect("worker");
        latencies.extend(worker_latencies);
        failed += worker_failed;
        total_ok += worker_ok;
    }
    latencies.sort();
    LoadResult {
        label: label.to_string(),
        total_ok,
        accepted: latencies.len(),
        failed,
        seconds: elapsed,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
    }
}

/// Starts the ceiling binary on the same broker and waits until it answers.
async fn start_ceiling(
    binary: &str,
    brokers: &str,
    topic: &str,
    addr: &str,
) -> anyhow::Result<tokio::process::Child> {
    let child = tokio::process::Command::new(binary)
        .env("BROKERS", brokers)
        .env("TOPIC", topic)
        .env("ADDR", addr)
        .env("LINGER_MS", "2")
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting the ceiling at {binary}"))?;
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if client
            .post(format!("http://{addr}/plain"))
            .body("{}")
            .send()
            .await
            .is_ok()
        {
            return Ok(child);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the ceiling did not start on {addr}")
}

#[derive(Default)]
pub(crate) struct Arrivals {
    /// Send → arrival of the latency run's messages.
    pub latencies: Mutex<Vec<Duration>>,
    /// How many of the load run's messages arrived.
    pub load: std::sync::atomic::AtomicUsize,
}

/// The `name=value` pairs of a space-separated environment variable (`default` when unset).
pub(crate) fn env_pairs(name: &str, default: &str) -> Vec<(String, String)> {
    env_or(name, default)
        .split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

/// Writes a run's JSON to `output` and its table to `CARRIER_BENCH_REPORT` (by default
/// `default_report`), both also printed.
pub(crate) fn write_results(
    output: &str,
    result: &Value,
    default_report: &str,
    report: &str,
) -> anyhow::Result<()> {
    if let Some(parent) = std::path::Path::new(output).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(output, format!("{result}\n"))?;
    let report_path = env_or("CARRIER_BENCH_REPORT", default_report);
    println!("\n{report}");
    std::fs::write(&report_path, report)?;
    println!("written to {report_path}");
    Ok(())
}

pub(crate) fn unix_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Sends `rate` msg/s for `seconds` to a destination served by an in-process receiver and
/// measures send → arrival.
async fn end_to_end(
    api: &Api,
    token: &str,
    arrivals: Arc<Arrivals>,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<(usize, usize, f64, f64)> {
    let total = (rate * seconds) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sends = Vec::with_capacity(total);
    for sequence in 0..total {
        ticker.tick().await;
        let api = api.clone();
        let token = token.to_string();
        sends.push(tokio::spawn(async move {
            let body = json!({
                "Meta": { "DataModel": "Latency", "EventType": "New" },
                "Sequence": sequence,
                "SentMicros": unix_micros(),
            });
            api.send(&token, &body).await.0
        }));
    }
    let mut accepted = 0;
    for send in sends {
        if send.await? == 200 {
            accepted += 1;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while arrivals.latencies.lock().expect("lock").len() < accepted && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut latencies = arrivals.latencies.lock().expect("lock").clone();
    latencies.sort();
    Ok((
        accepted,
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
    ))
}

/// A receiver on loopback, in this process: counts the arrivals on `/load` and records send →
/// arrival of every message carrying `SentMicros`.
pub(crate) async fn start_receiver(arrivals: Arc<Arrivals>) -> anyhow::Result<std::net::SocketAddr> {
    let receiver_arrivals = arrivals;
    let app = axum::Router::new().route(
        "/{*path}",
        post(move |uri: axum::http::Uri, body: Bytes| {
            let arrivals = receiver_arrivals.clone();
            async move {
                if uri.path() == "/load" {
                    arrivals.load.fetch_add(1, Ordering::Relaxed);
                }
                if let Ok(value) = serde_json::from_slice::<Value>(&body) {
                    if let Some(sent) = value["SentMicros"].as_i64() {
                        let micros = (unix_micros() - sent).max(0) as u64;
                        arrivals
                            .latencies
                            .lock()
                            .expect("lock")
                            .push(Duration::from_micros(micros));
                    }
                }
                r#"{"Meta":{"Errors":[]}}"#
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let receiver_addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(receiver_addr)
}

/// Sends a signal (`-STOP`, `-CONT`) to space-separated process IDs.
async fn signal(pids: &str, signal: &str) {
    for pid in pids.split_whitespace() {
        let _ = tokio::process::Command::new("kill")
            .args([signal, pid])
            .status()
            .await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    carrier_telemetry::print_version_if_asked("carrier-bench");
    let ingress = env_or("CARRIER_URL", "http://127.0.0.1:8080");
    let admin_token = env_or("CARRIER_ADMIN_TOKEN", "dev-admin-token");
    let brokers = env_or("CARRIER_BENCH_BROKERS", "127.0.0.1:9092");
    let ceiling_binary = env_or(
        "CARRIER_CEILING_BIN",
        "/var/cache/carrier/ceiling-target/release/ceiling",
    );
    let connections: usize = env_number("CARRIER_BENCH_CONNECTIONS", 64);
    let seconds: u64 = env_number("CARRIER_BENCH_SECONDS", 15);
    let e2e_rate: u64 = env_number("CARRIER_BENCH_E2E_RATE", 500);
    let e2e_seconds: u64 = env_number("CARRIER_BENCH_E2E_SECONDS", 10);
    let output = env_or("CARRIER_BENCH_OUT", ".run/bench/results.md");
    if std::env::args().nth(1).as_deref() == Some("logs") {
        let output = env_or("CARRIER_BENCH_OUT", ".run/bench/logs.md");
        return logs::run(&output).await;
    }
    if std::env::args().nth(1).as_deref() == Some("sustained") {
        let output = env_or("CARRIER_BENCH_OUT", ".run/bench/sustained.json");
        return sustained::run(&ingress, &admin_token, &output).await;
    }
    if std::env::args().nth(1).as_deref() == Some("hops") {
        // The bare hops alone, on any broker: partition counts from CARRIER_BENCH_HOP_PARTITIONS.
        let counts: Vec<i32> = env_or("CARRIER_BENCH_HOP_PARTITIONS", "4 8")
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .context("CARRIER_BENCH_HOP_PARTITIONS holds partition counts, e.g. \"4 8\"")?;
        let [first, second] = counts[..] else {
            anyhow::bail!("CARRIER_BENCH_HOP_PARTITIONS holds two partition counts, e.g. \"4 8\"");
        };
        let bare = hops::two_hops(&brokers, (first, second), e2e_rate, e2e_seconds).await?;
        println!(
            "bare two hops at {e2e_rate} msg/s: {} of {} arrived, p50 {:.1} ms, p99 {:.1} ms",
            bare.arrived, bare.sent, bare.p50_ms, bare.p99_ms
        );
        return Ok(());
    }
    if std::env::args().nth(1).as_deref() == Some("records") {
        let output = env_or("CARRIER_BENCH_OUT", ".run/bench/records.json");
        return records::run(&ingress, &admin_token, &output).await;
    }
    if std::env::args().nth(1).as_deref() == Some("idle") {
        let output = env_or("CARRIER_BENCH_OUT", ".run/bench/idle.json");
        return idle::run(&ingress, &admin_token, &output).await;
    }
    if std::env::args().nth(1).as_deref() == Some("delivery") {
        let delivery_pid =
            std::env::var("CARRIER_BENCH_DELIVERY_PID").context("CARRIER_BENCH_DELIVERY_PID")?;
        let output = env_or("CARRIER_BENCH_OUT", ".run/bench/delivery.md");
        return delivery::run(&ingress, &admin_token, &brokers, &delivery_pid, &output).await;
    }
    if std::env::args().nth(1).as_deref() == Some("protection") {
        let unlimited = env_or("CARRIER_BENCH_UNLIMITED_URL", "http://127.0.0.1:8090");
        let output = env_or("CARRIER_BENCH_OUT", ".run/bench/protection.md");
        return protection::run(protection::Options {
            limited_url: &ingress,
            unlimited_url: &unlimited,
            admin_token: &admin_token,
            receiver_url: &env_or("CARRIER_BENCH_RECEIVER_URL", "http://127.0.0.1:9000/bench"),
            pause_pids: std::env::var("CARRIER_BENCH_PAUSE_PIDS").ok(),
            connections,
            seconds: env_number("CARRIER_BENCH_SECONDS", 10),
            rounds: env_number("CARRIER_BENCH_ROUNDS", 2),
            output: &output,
        })
        .await;
    }

    // A receiver in this process, for the destinations of the run.
    let arrivals = Arc::new(Arrivals {
        latencies: Mutex::new(Vec::new()),
        load: Default::default(),
    });
    let receiver_addr = start_receiver(arrivals.clone()).await?;

    let api = Api::new(&ingress, &admin_token);
    let organization = api.create_organization("Benchmark").await;
    let source = api.create_source(&organization, "production").await;
    let load_destination = api
        .create_destination(
            &organization,
            &format!("http://{receiver_addr}/load"),
            "production",
        )
        .await;
    api.subscribe(
        &source.id,
        load_destination["id"].as_str().unwrap_or_default(),
        "Results",
    )
    .await;
    let latency_destination = api
        .create_destination(
            &organization,
            &format!("http://{receiver_addr}/latency"),
            "production",
        )
        .await;
    api.subscribe(
        &source.id,
        latency_destination["id"].as_str().unwrap_or_default(),
        "Latency",
    )
    .await;
    let token = api.token(&source).await;

    // The ceiling's topic, on the same broker.
    let settings = carrier_config::KafkaSettings {
        brokers: brokers.clone(),
        ..Default::default()
    };
    carrier_kafka::admin::ensure_topics(&settings, &[("bench.ceiling", 16)]).await?;
    let ceiling_addr = "127.0.0.1:18080";
    let mut ceiling = start_ceiling(&ceiling_binary, &brokers, "bench.ceiling", ceiling_addr).await?;

    // What the broker allows: the same two hops bare, on topics of the same partition counts,
    // first, while the broker is quiet (on a fresh machine p50 ~50-70 ms; docs/benchmarks.md,
    // "Runs of 2026-12-03", for the unexplained p50 2.9 s of a broker that had served a day).
    let topics = carrier_kafka::Topics::new(&settings);
    let partitions = (
        carrier_kafka::admin::partition_count(&settings, &topics.inbound).await? as i32,
        carrier_kafka::admin::partition_count(&settings, &topics.deliveries).await? as i32,
    );
    println!("measuring two bare hops ({e2e_rate} msg/s, {e2e_seconds} s, partitions {partitions:?})");
    let bare = hops::two_hops(&brokers, partitions, e2e_rate, e2e_seconds).await?;
    // Then Carrier's latency, on a quiet pipeline: the load runs leave backlogs (deliveries, log
    // writes) that would otherwise be measured instead.
    println!("measuring end-to-end latency ({e2e_rate} msg/s, {e2e_seconds} s)");
    let (e2e_accepted, e2e_arrived, e2e_p50, e2e_p99) =
        end_to_end(&api, &token, arrivals.clone(), e2e_rate, e2e_seconds).await?;

    let body = kilobyte_message();
    println!("measuring the ceiling ({connections} connections, {seconds} s)");
    let ceiling_result = load(
        "ceiling /endpoint",
        &format!("http://{ceiling_addr}/endpoint"),
        None,
        body.clone(),
        connections,
        seconds,
        false,
    )
    .await;
    let _ = ceiling.start_kill();
    let _ = ceiling.wait().await;
    println!("measuring Carrier ingress ({connections} connections, {seconds} s)");
    let load_started = Instant::now();
    let carrier_result = load(
        "carrier /endpoint, whole pipeline running",
        &format!("{ingress}/endpoint"),
        Some(&token),
        body.clone(),
        connections,
        seconds,
        false,
    )
    .await;
    // Ingress on its own: a second ingress of the stack writes to a topic nothing consumes
    // (`scripts/bench.sh` starts it), so the broker takes its writes alone, as the ceiling's.
    let solo_result = match std::env::var("CARRIER_BENCH_SOLO_URL") {
        Ok(solo) if !solo.trim().is_empty() => {
            println!("measuring Carrier ingress with nothing consuming its topic");
            Some(
                load(
                    "carrier /endpoint, nothing consuming its topic",
                    &format!("{solo}/endpoint"),
                    Some(&token),
                    body,
                    connections,
                    seconds,
                    false,
                )
                .await,
            )
        }
        _ => None,
    };
    let total_accepted = carrier_result.total_ok;
    // The load's deliveries (one destination, strictly in order) drain before latency is
    // measured; how fast they drain is the single-destination delivery rate.
    let drain_deadline = Instant::now() + Duration::from_secs(300);
    let mut last_count = 0;
    let mut last_progress = Instant::now();
    loop {
        let count = arrivals.load.load(Ordering::Relaxed);
        if count >= total_accepted || Instant::now() > drain_deadline {
            break;
        }
        if count != last_count {
            last_count = count;
            last_progress = Instant::now();
        } else if last_progress.elapsed() > Duration::from_secs(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delivered_after_load = arrivals.load.load(Ordering::Relaxed);
    let drain_seconds = last_progress.duration_since(load_started).as_secs_f64();

    let ratio = carrier_result.rate() / ceiling_result.rate();
    let mut report = String::new();
    report.push_str(&format!(
        "# Carrier benchmark — {}\n\nbroker {brokers}, {connections} connections, {seconds} s per run, 1 KiB body\n\n",
        chrono::Utc::now().to_rfc3339()
    ));
    report.push_str("| run | accepted msg/s | p50 ms | p99 ms | failed |\n|---|---|---|---|---|\n");
    for result in std::iter::once(&ceiling_result)
        .chain([&carrier_result])
        .chain(solo_result.iter())
    {
        report.push_str(&format!(
            "| {} | {:.0} | {:.2} | {:.2} | {} |\n",
            result.label,
            result.rate(),
            result.p50_ms,
            result.p99_ms,
            result.failed
        ));
    }
    report.push_str(&format!(
        "\ningress / ceiling throughput ratio, whole pipeline running: **{ratio:.2}** (target ≥ 0.80)\n"
    ));
    if let Some(solo) = &solo_result {
        report.push_str(&format!(
            "ingress / ceiling throughput ratio, nothing consuming its topic: **{:.2}** (target ≥ 0.80)\n",
            solo.rate() / ceiling_result.rate()
        ));
    }
    report.push_str(&format!(
        "\nend to end, one destination at {e2e_rate} msg/s for {e2e_seconds} s: {e2e_accepted} accepted, {e2e_arrived} arrived, p50 {e2e_p50:.1} ms, p99 {e2e_p99:.1} ms (target p99 ≤ 25 ms)\n"
    ));
    report.push_str(&format!(
        "two bare produce → consume hops on the same broker (partitions {} then {}), same rate: {} sent, {} arrived, p50 {:.1} ms, p99 {:.1} ms; Carrier's p99 / bare p99: **{:.2}** (target ≤ 1.5)\n",
        partitions.0,
        partitions.1,
        bare.sent,
        bare.arrived,
        bare.p50_ms,
        bare.p99_ms,
        e2e_p99 / bare.p99_ms
    ));
    report.push_str(&format!(
        "\none destination, strictly in order: {delivered_after_load} of {total_accepted} accepted load-run messages delivered, the last {drain_seconds:.1} s after the load began ({:.0} deliveries/s)\n",
        delivered_after_load as f64 / drain_seconds
    ));
    println!("\n{report}");
    if let Some(parent) = std::path::Path::new(&output).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&output, &report)?;
    println!("written to {output}");
    Ok(())
}
