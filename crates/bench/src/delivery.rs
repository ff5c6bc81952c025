//! `carrier-bench delivery`: what a held destination costs everyone else (SPEC §5, issue 3).
//!
//! 1. Healthy throughput: with delivery stopped (SIGSTOP), 5,000 messages fan out to two healthy
//!    destinations that share a partition with destination P; delivery resumes and the time to
//!    deliver all 10,000 gives deliveries/s.
//! 2. P is paused by the operator and 100,000 messages are sent to it: they are parked.
//! 3. Step 1 again, with P's 100,000 parked: the ratio to step 1 is the isolation figure.
//! 4. P is resumed: the time to drain its 100,000 is compared with a plain sequential
//!    keep-alive client posting the same body to the same receiver.
//!
//! Delivery's resident memory (VmRSS) is read at idle and its peak (VmHWM) at the end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::post;
use carrier_testkit::client::{Api, SourceCredentials};
use serde_json::json;

use crate::signal;

#[derive(Default)]
struct PathCounter {
    count: AtomicUsize,
    last: Mutex<Option<Instant>>,
}

#[derive(Default)]
struct Counters {
    paths: Mutex<HashMap<String, Arc<PathCounter>>>,
}

impl Counters {
    fn path(&self, path: &str) -> Arc<PathCounter> {
        self.paths
            .lock()
            .expect("lock")
            .entry(path.to_string())
            .or_default()
            .clone()
    }
}

fn memory_kib(pid: &str, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with(field))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

/// The highest resident memory (VmRSS, sampled every 100 ms) of a process in each phase of the
/// run: which phase sets the peak (VmHWM says only how high it went).
struct RssByPhase {
    phase: AtomicUsize,
    peaks_kib: Mutex<Vec<u64>>,
}

impl RssByPhase {
    fn start(pid: &str, phases: usize) -> Arc<Self> {
        let sampler = Arc::new(Self {
            phase: AtomicUsize::new(0),
            peaks_kib: Mutex::new(vec![0; phases]),
        });
        let (pid, sampling) = (pid.to_string(), sampler.clone());
        tokio::spawn(async move {
            loop {
                let rss = memory_kib(&pid, "VmRSS:");
                let phase = sampling.phase.load(Ordering::Relaxed);
                if let Some(peak) = sampling.peaks_kib.lock().expect("lock").get_mut(phase) {
                    *peak = (*peak).max(rss);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        sampler
    }

    fn enter(&self, phase: usize) {
        self.phase.store(phase, Ordering::Relaxed);
    }

    fn peaks_mib(&self) -> Vec<f64> {
        let peaks = self.peaks_kib.lock().expect("lock");
        peaks.iter().map(|kib| *kib as f64 / 1024.0).collect()
    }
}

/// CPU time (user + system) a process has used so far.
pub(crate) fn process_cpu(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|index| fields.get(*index)?.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

/// Busy and total CPU time of the whole machine so far (from /proc/stat).
fn machine_cpu() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let values: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|value| value.parse().ok())
        .collect();
    let total: u64 = values.iter().sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Sends `count` messages of `data_model` with `senders` concurrent senders; returns how many
/// were accepted. Each sender takes a fresh access token when its token expires (tokens live
/// five minutes; a large backlog takes longer to send). Refusals are counted by status and
/// printed: a benchmark that silently sent less would measure something else.
async fn send_many(
    api: &Api,
    source: &SourceCredentials,
    data_model: &str,
    count: usize,
    senders: usize,
) -> usize {
    let next = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let refused: Arc<Mutex<HashMap<u16, usize>>> = Arc::default();
    let mut tasks = Vec::new();
    for _ in 0..senders {
        let api = api.clone();
        let source = source.clone();
        let data_model = data_model.to_string();
        let next = next.clone();
        let accepted = accepted.clone();
        let refused = refused.clone();
        tasks.push(tokio::spawn(async move {
            let mut token = api.token(&source).await;
            loop {
                let sequence = next.fetch_add(1, Ordering::Relaxed);
                if sequence >= count {
                    break;
                }
                let body = json!({ "Meta": { "DataModel": data_model, "EventType": "New" }, "Sequence": sequence, "Padding": "x".repeat(900) });
                let mut status = api.send(&token, &body).await.0;
                if status == 401 {
                    token = api.token(&source).await;
                    status = api.send(&token, &body).await.0;
                }
                if status == 200 {
                    accepted.fetch_add(1, Ordering::Relaxed);
                } else {
                    *refused.lock().expect("lock").entry(status).or_default() += 1;
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let refused = refused.lock().expect("lock").clone();
    if !refused.is_empty() {
        println!("refused while sending {data_model}: {refused:?} (status: count)");
    }
    accepted.load(Ordering::Relaxed)
}

async fn wait_for(counters: &[Arc<PathCounter>], total: usize, timeout: Duration) -> Option<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        let arrived: usize = counters.iter().map(|c| c.count.load(Ordering::Relaxed)).sum();
        if arrived >= total {
            return counters
                .iter()
                .filter_map(|c| *c.last.lock().expect("lock"))
                .max();
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Healthy deliveries/s: delivery stopped, messages queued, delivery resumed, all delivered.
async fn healthy_rate(
    api: &Api,
    source: &SourceCredentials,
    delivery_pid: &str,
    healthy: &[Arc<PathCounter>],
    messages: usize,
) -> f64 {
    let before: usize = healthy.iter().map(|c| c.count.load(Ordering::Relaxed)).sum();
    signal(delivery_pid, "-STOP").await;
    let accepted = send_many(api, source, "Healthy", messages, 32).await;
    // Let the router write the tasks while delivery is stopped (briefly: a stopped worker
    // misses heartbeats, and past the session timeout its group would rebalance).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    signal(delivery_pid, "-CONT").await;
    let expected = before + accepted * healthy.len();
    match wait_for(healthy, expected, Duration::from_secs(300)).await {
        Some(last) => (accepted * healthy.len()) as f64 / last.duration_since(started).as_secs_f64(),
        None => f64::NAN,
    }
}

pub async fn run(
    ingress: &str,
    admin_token: &str,
    brokers: &str,
    delivery_pid: &str,
    output: &str,
) -> anyhow::Result<()> {
    let backlog: usize = std::env::var("CARRIER_BENCH_BACKLOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let healthy_messages = 5_000;
    // How long the receiver takes per request (0: as fast as loopback allows).
    let receiver_delay = Duration::from_millis(
        std::env::var("CARRIER_BENCH_RECEIVER_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    );
    let counters = Arc::new(Counters::default());
    let receiver_counters = counters.clone();
    let app = axum::Router::new().route(
        "/{*path}",
        post(move |uri: axum::http::Uri, _body: Bytes| {
            let counter = receiver_counters.path(uri.path());
            async move {
                if !receiver_delay.is_zero() {
                    tokio::time::sleep(receiver_delay).await;
                }
                counter.count.fetch_add(1, Ordering::Relaxed);
                *counter.last.lock().expect("lock") = Some(Instant::now());
                r#"{"Meta":{"Errors":[]}}"#
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let receiver = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    let api = Api::new(ingress, admin_token);
    let organization = api.create_organization("Isolation benchmark").await;
    let source = api.create_source(&organization, "production").await;
    let topic = format!(
        "{}deliveries",
        std::env::var("CARRIER_KAFKA__TOPIC_PREFIX").unwrap_or_else(|_| "carrier.".into())
    );
    let settings = carrier_config::KafkaSettings {
        brokers: brokers.to_string(),
        ..Default::default()
    };
    let partitions = carrier_kafka::admin::partition_count(&settings, &topic)
        .await?
        .max(1);
    // The producers' own mapping of a destination (the task key) to its partition.
    let partition_of = |id: &str| carrier_kafka::partitioner::partition_for(id.as_bytes(), partitions as i32);

    let paused = api
        .create_destination(&organization, &format!("http://{receiver}/p"), "production")
        .await;
    let paused_id = paused["id"].as_str().unwrap_or_default().to_string();
    api.subscribe(&source.id, &paused_id, "Backlog").await;
    let mut healthy_ids = Vec::new();
    for attempt in 0..500 {
        let candidate = api
            .create_destination(
                &organization,
                &format!("http://{receiver}/h{attempt}"),
                "production",
            )
            .await;
        let id = candidate["id"].as_str().unwrap_or_default().to_string();
        if partition_of(&id) == partition_of(&paused_id) {
            api.subscribe(&source.id, &id, "Healthy").await;
            healthy_ids.push(format!("/h{attempt}"));
            if healthy_ids.len() == 2 {
                break;
            }
        }
    }
    anyhow::ensure!(
        healthy_ids.len() == 2,
        "no destinations share the paused one's partition"
    );
    let healthy: Vec<Arc<PathCounter>> = healthy_ids.iter().map(|path| counters.path(path)).collect();
    println!(
        "partition {} of {partitions}: paused destination and two healthy ones",
        partition_of(&paused_id)
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_kib = memory_kib(delivery_pid, "VmRSS:");
    // Phases: 0 healthy, 1 parking, 2 healthy with the backlog, 3 drain, 4 plain client.
    let rss = RssByPhase::start(delivery_pid, 5);
    println!("healthy throughput without a held destination");
    let baseline = healthy_rate(&api, &source, delivery_pid, &healthy, healthy_messages).await;

    println!("pausing one destination and queueing {backlog} messages for it");
    let (status, _) = api
        .admin(
            reqwest::Method::POST,
            &format!("/v1/destinations/{paused_id}/pause"),
            None,
        )
        .await;
    anyhow::ensure!(status == 200, "pause refused: {status}");
    rss.enter(1);
    let queued = send_many(&api, &source, "Backlog", backlog, 32).await;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (_, queue) = api
            .admin(
                reqwest::Method::GET,
                &format!("/v1/destinations/{paused_id}/queue"),
                None,
            )
            .await;
        if queue["depth"].as_i64().unwrap_or(0) as usize >= queued || Instant::now() > deadline {
            println!("parked: {}", queue["depth"]);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let parked_rss_kib = memory_kib(delivery_pid, "VmRSS:");
    rss.enter(2);
    println!("healthy throughput with {queued} parked behind a paused destination in the same partition");
    let with_backlog = healthy_rate(&api, &source, delivery_pid, &healthy, healthy_messages).await;

    println!("resuming: draining {queued} messages");
    let p = counters.path("/p");
    rss.enter(3);
    let resumed = Instant::now();
    let drain_cpu_before = process_cpu(delivery_pid);
    let machine_before = machine_cpu();
    let (status, _) = api
        .admin(
            reqwest::Method::POST,
            &format!("/v1/destinations/{paused_id}/resume"),
            None,
        )
        .await;
    anyhow::ensure!(status == 200, "resume refused: {status}");
    let drained = wait_for(std::slice::from_ref(&p), queued, Duration::from_secs(1_800)).await;
    let drain_rate = drained
        .map(|last| queued as f64 / last.duration_since(resumed).as_secs_f64())
        .unwrap_or(f64::NAN);
    // Where the drain's time goes: the worker's own CPU per message, and how busy the machine
    // (broker, notifier, Postgres, this receiver) was meanwhile.
    let drain_cpu_us = (process_cpu(delivery_pid) - drain_cpu_before).as_secs_f64() * 1e6 / queued as f64;
    let machine_after = machine_cpu();
    let machine_busy =
        (machine_after.0 - machine_before.0) as f64 / (machine_after.1 - machine_before.1).max(1) as f64;

    rss.enter(4);
    // The reference: one keep-alive connection posting the same body in sequence.
    let client = reqwest::Client::new();
    let body = serde_json::to_vec(
        &json!({ "Meta": { "DataModel": "Backlog", "EventType": "New" }, "Sequence": 0, "Padding": "x".repeat(900) }),
    )?;
    let sequential = 5_000;
    let started = Instant::now();
    for _ in 0..sequential {
        client
            .post(format!("http://{receiver}/plain"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await?
            .bytes()
            .await?;
    }
    let plain_rate = sequential as f64 / started.elapsed().as_secs_f64();
    let peak_kib = memory_kib(delivery_pid, "VmHWM:");
    let phase_peaks = rss.peaks_mib();

    let report = format!(
        "# Carrier delivery benchmark — {} (receiver delay {} ms)\n\n\
         | measure | value |\n|---|---|\n\
         | healthy deliveries/s, no held destination | {baseline:.0} |\n\
         | healthy deliveries/s, {queued} parked behind a paused destination in the same partition | {with_backlog:.0} |\n\
         | ratio (target ≥ 0.95) | **{:.2}** |\n\
         | drain after resume, one destination (deliveries/s) | {drain_rate:.0} |\n\
         | plain sequential keep-alive client, same receiver (requests/s) | {plain_rate:.0} |\n\
         | drain ratio (target ≥ 0.80) | **{:.2}** |\n\
         | delivery CPU per drained message (µs) / machine busy during the drain | {drain_cpu_us:.0} / {:.0} % |\n\
         | delivery RSS idle / with backlog parked / peak (MiB) | {:.1} / {:.1} / {:.1} |\n\
         | peak ÷ idle (target ≤ 2) | **{:.2}** |\n\
         | delivery RSS highest while healthy / parking / healthy with backlog / draining (MiB, sampled every 100 ms) | {:.1} / {:.1} / {:.1} / {:.1} |\n",
        chrono::Utc::now().to_rfc3339(),
        receiver_delay.as_millis(),
        with_backlog / baseline,
        drain_rate / plain_rate,
        machine_busy * 100.0,
        idle_kib as f64 / 1024.0,
        parked_rss_kib as f64 / 1024.0,
        peak_kib as f64 / 1024.0,
        peak_kib as f64 / idle_kib.max(1) as f64,
        phase_peaks[0],
        phase_peaks[1],
        phase_peaks[2],
        phase_peaks[3],
    );
    println!("\n{report}");
    if let Some(parent) = std::path::Path::new(output).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(output, &report)?;
    println!("written to {output}");
    Ok(())
}
