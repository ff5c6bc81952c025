//! `carrier-bench sustained`: the highest rate the whole pipeline keeps up with, and what 2× that
//! does to it.
//!
//! For each fan-out of `CARRIER_BENCH_SUSTAINED_FANOUTS` ("1 10"), against the running stack, with
//! a receiver in this process that records which messages arrived (by their `Sequence`):
//! 1. **Sustained**: open-loop steps of `CARRIER_BENCH_STEP_SECONDS` (20) s at rising rates
//!    (`CARRIER_BENCH_SUSTAINED_RATES`, deliveries/s, so a tenth the messages at fan-out 10:
//!    "100 200 400 600 800 1000 1300 1600 2000 2600 3200 4000 5000 6000", up to SPEC's 6,000); a
//!    step holds when every message was accepted and, a second after it, the messages not yet
//!    delivered are no more than one second of its deliveries (the backlog did not grow). The
//!    sustained rate is the last step that held, in deliveries/s (messages/s × fan-out). The
//!    backlog of a failed step drains before the next part.
//! 2. **Overload**: an open loop at twice the sustained message rate for
//!    `CARRIER_BENCH_OVERLOAD_SECONDS` (60) s: the answers by status, whether every 503/429
//!    carried `Retry-After`, the p99 of the accepted (200) answers (target ≤ 1 s); then that
//!    every accepted message was delivered (nothing lost: each sequence arrived at least once)
//!    and that a 10 s run at half the sustained rate is all accepted again (the stack recovered
//!    by itself).
//!
//! `CARRIER_BENCH_OVERLOAD_RATE` (msg/s) skips step 1 and runs the overload at that rate (the
//! sustained column then reads 0): for comparing overload behaviour across builds or settings.
//!
//! The JSON goes to `CARRIER_BENCH_OUT`, the table to `CARRIER_BENCH_REPORT`
//! (`.run/bench/sustained.md`). No assertions: the figures are the result.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Bytes;
use axum::routing::post;
use carrier_testkit::client::{Api, SourceCredentials};
use serde_json::{json, Value};

use crate::{env_number, env_or, kilobyte_message, percentile, write_results};

/// The sequences that arrived (each counted once, whatever the retries).
#[derive(Default)]
struct Arrived(Mutex<HashSet<u64>>);

impl Arrived {
    fn count(&self) -> usize {
        self.0.lock().expect("lock").len()
    }

    fn missing(&self, sequences: &[u64]) -> usize {
        let arrived = self.0.lock().expect("lock");
        sequences
            .iter()
            .filter(|sequence| !arrived.contains(sequence))
            .count()
    }
}

async fn start_receiver(arrived: Arc<Arrived>) -> anyhow::Result<std::net::SocketAddr> {
    let app = axum::Router::new().route(
        "/{*path}",
        post(move |uri: axum::http::Uri, body: Bytes| {
            let arrived = arrived.clone();
            async move {
                // Only the first destination of a fan-out counts: one entry per message.
                if uri.query() == Some("first") {
                    if let Some(sequence) = serde_json::from_slice::<Value>(&body)
                        .ok()
                        .and_then(|value| value["Sequence"].as_u64())
                    {
                        arrived.0.lock().expect("lock").insert(sequence);
                    }
                }
                r#"{"Meta":{"Errors":[]}}"#
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// The answers of one open-loop run.
#[derive(Default)]
struct Answers {
    /// Accepted sequences.
    accepted: Vec<u64>,
    accepted_latencies: Vec<Duration>,
    by_status: BTreeMap<String, usize>,
    /// 503 and 429 answers without `Retry-After`.
    shed_without_retry_after: usize,
}

struct Sender {
    client: reqwest::Client,
    url: String,
    api: Api,
    source: SourceCredentials,
    /// The 1 KiB message, split where its sequence goes.
    body: (String, String),
    next: std::sync::atomic::AtomicU64,
}

impl Sender {
    /// Open loop: one request every 1/`rate` s for `seconds`, whatever the answers take (at most
    /// 4096 unanswered; past that a send is counted as `client-limit` and not made).
    async fn run(self: &Arc<Self>, rate: u64, seconds: u64) -> Answers {
        // A token per run: they live five minutes.
        let token = Arc::new(self.api.token(&self.source).await);
        let answers = Arc::new(Mutex::new(Answers::default()));
        let unanswered = Arc::new(tokio::sync::Semaphore::new(4096));
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut requests = Vec::with_capacity((rate * seconds) as usize);
        for _ in 0..rate * seconds {
            ticker.tick().await;
            let Ok(permit) = unanswered.clone().try_acquire_owned() else {
                *answers
                    .lock()
                    .expect("lock")
                    .by_status
                    .entry("client-limit".into())
                    .or_default() += 1;
                continue;
            };
            let sequence = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let body = format!("{}{sequence}{}", self.body.0, self.body.1);
            let sender = self.clone();
            let token = token.clone();
            let answers = answers.clone();
            requests.push(tokio::spawn(async move {
                let started = Instant::now();
                let response = sender
                    .client
                    .post(&sender.url)
                    .bearer_auth(token.as_str())
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                let elapsed = started.elapsed();
                let mut answers = answers.lock().expect("lock");
                match response {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        if status == 200 {
                            answers.accepted.push(sequence);
                            answers.accepted_latencies.push(elapsed);
                        }
                        if (status == 503 || status == 429) && !response.headers().contains_key("retry-after")
                        {
                            answers.shed_without_retry_after += 1;
                        }
                        *answers.by_status.entry(status.to_string()).or_default() += 1;
                    }
                    Err(_) => *answers.by_status.entry("connection error".into()).or_default() += 1,
                }
                drop(permit);
            }));
        }
        for request in requests {
            let _ = request.await;
        }
        let mut answers = std::mem::take(&mut *answers.lock().expect("lock"));
        answers.accepted_latencies.sort();
        answers
    }
}

async fn wait_delivered(arrived: &Arrived, sequences: &[u64], timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let missing = arrived.missing(sequences);
        if missing == 0 || Instant::now() > deadline {
            return missing;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn fan_out(
    api: &Api,
    ingress: &str,
    receiver: std::net::SocketAddr,
    arrived: &Arc<Arrived>,
    fan_out: usize,
    rates: &[u64],
) -> anyhow::Result<Value> {
    let step_seconds: u64 = env_number("CARRIER_BENCH_STEP_SECONDS", 20);
    let overload_seconds: u64 = env_number("CARRIER_BENCH_OVERLOAD_SECONDS", 60);
    let organization = api
        .create_organization(&format!("Sustained fan-out {fan_out}"))
        .await;
    let source = api.create_source(&organization, "production").await;
    let data_model = format!("Sustained{fan_out}");
    for destination in 0..fan_out {
        let query = if destination == 0 {
            "first".to_string()
        } else {
            format!("other={destination}")
        };
        api.subscribed_destination(
            &organization,
            &source,
            &format!("http://{receiver}/load?{query}"),
            "production",
            &data_model,
        )
        .await;
    }
    let mut message: Value = serde_json::from_slice(&kilobyte_message())?;
    message["Meta"]["DataModel"] = json!(data_model);
    message["Sequence"] = json!(0u64);
    let text = serde_json::to_string(&message)?;
    let (before, after) = text
        .split_once("\"Sequence\":0")
        .context("the sequence's place")?;
    let sender = Arc::new(Sender {
        client: reqwest::Client::builder().pool_max_idle_per_host(4096).build()?,
        url: format!("{ingress}/endpoint"),
        api: api.clone(),
        source,
        body: (format!("{before}\"Sequence\":"), after.to_string()),
        next: std::sync::atomic::AtomicU64::new((fan_out as u64) << 40),
    });

    // A fixed overload rate skips the search: overload runs compared across builds or settings
    // then load the broker the same, whatever step a noisy machine would have held.
    let fixed_overload: u64 = env_number("CARRIER_BENCH_OVERLOAD_RATE", 0);
    let mut steps = Vec::new();
    let mut sustained = 0u64;
    for &rate in rates.iter().filter(|_| fixed_overload == 0) {
        println!("fan-out {fan_out}: {rate} msg/s for {step_seconds} s");
        let answers = sender.run(rate, step_seconds).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let behind = arrived.missing(&answers.accepted);
        let sent = (rate * step_seconds) as usize;
        let held = answers.accepted.len() == sent && behind as u64 <= rate;
        steps.push(json!({
            "rate": rate,
            "accepted": answers.accepted.len(),
            "sent": sent,
            "behind_after_1s": behind,
            "held": held,
            "p99_ms": percentile(&answers.accepted_latencies, 0.99),
        }));
        // Drain before the next step, so each step starts from an empty pipeline.
        let missing = wait_delivered(arrived, &answers.accepted, Duration::from_secs(300)).await;
        if !held || missing > 0 {
            break;
        }
        sustained = rate;
    }
    if sustained == 0 && fixed_overload == 0 {
        println!("fan-out {fan_out}: not even the first step held; no overload run");
        return Ok(
            json!({ "fan_out": fan_out, "steps": steps, "sustained_messages_per_s": 0, "sustained_deliveries_per_s": 0 }),
        );
    }

    let overload_rate = if fixed_overload > 0 {
        fixed_overload
    } else {
        sustained * 2
    };
    println!("fan-out {fan_out}: overload, {overload_rate} msg/s for {overload_seconds} s");
    let overload = sender.run(overload_rate, overload_seconds).await;
    let drain_started = Instant::now();
    let lost = wait_delivered(arrived, &overload.accepted, Duration::from_secs(900)).await;
    let drained_in = drain_started.elapsed().as_secs_f64();
    let recovery_rate = (overload_rate / 4).max(1);
    println!("fan-out {fan_out}: recovery, {recovery_rate} msg/s for 10 s");
    let recovery = sender.run(recovery_rate, 10).await;
    let recovery_lost = wait_delivered(arrived, &recovery.accepted, Duration::from_secs(120)).await;
    Ok(json!({
        "fan_out": fan_out,
        "steps": steps,
        "sustained_messages_per_s": sustained,
        "sustained_deliveries_per_s": sustained * fan_out as u64,
        "overload": {
            "rate": overload_rate,
            "seconds": overload_seconds,
            "by_status": overload.by_status,
            "shed_without_retry_after": overload.shed_without_retry_after,
            "accepted": overload.accepted.len(),
            "accepted_p50_ms": percentile(&overload.accepted_latencies, 0.5),
            "accepted_p99_ms": percentile(&overload.accepted_latencies, 0.99),
            "accepted_not_delivered": lost,
            "drained_in_s": drained_in,
        },
        "recovery": {
            "rate": recovery_rate,
            "sent": recovery_rate * 10,
            "accepted": recovery.accepted.len(),
            "accepted_not_delivered": recovery_lost,
        },
        "arrived_total": arrived.count(),
    }))
}

pub async fn run(ingress: &str, admin_token: &str, output: &str) -> anyhow::Result<()> {
    let numbers = |name: &str, default: &str| -> anyhow::Result<Vec<u64>> {
        env_or(name, default)
            .split_whitespace()
            .map(|n| n.parse().with_context(|| format!("{name}: numbers")))
            .collect()
    };
    let fan_outs = numbers("CARRIER_BENCH_SUSTAINED_FANOUTS", "1 10")?;
    let rates = numbers(
        "CARRIER_BENCH_SUSTAINED_RATES",
        "100 200 400 600 800 1000 1300 1600 2000 2600 3200 4000 5000 6000",
    )?;
    let arrived = Arc::new(Arrived::default());
    let receiver = start_receiver(arrived.clone()).await?;
    let api = Api::new(ingress, admin_token);
    let mut runs = Vec::new();
    for fan in fan_outs {
        // At fan-out 10 each message is ten deliveries: the same delivery rates, a tenth the messages.
        let rates: Vec<u64> = rates.iter().map(|rate| (rate / fan).max(1)).collect();
        let result = fan_out(&api, ingress, receiver, &arrived, fan as usize, &rates).await?;
        println!("{result}");
        runs.push(result);
    }
    let result = json!({ "runs": runs });
    write_results(output, &result, ".run/bench/sustained.md", &report(&result))
}

fn report(result: &Value) -> String {
    let mut report = format!(
        "# Sustained throughput and overload — {}\n\nWhole pipeline, 1 KiB messages, open loop. Sustained: the highest step at which every message was accepted and the undelivered backlog a second later was under one second of deliveries.\n\n| fan-out | sustained deliveries/s (msg/s) | overload msg/s, 60 s | answers | 503/429 without Retry-After | accepted p50 / p99 ms (target p99 ≤ 1000) | accepted not delivered | drained in s | recovery: accepted / sent |\n|---|---|---|---|---|---|---|---|---|\n",
        chrono::Utc::now().to_rfc3339()
    );
    for run in result["runs"].as_array().into_iter().flatten() {
        let overload = &run["overload"];
        if overload.is_null() {
            report.push_str(&format!(
                "| {} | none of the steps held | | | | | | | |\n",
                run["fan_out"]
            ));
            continue;
        }
        let answers: Vec<String> = overload["by_status"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(status, count)| format!("{status}: {count}"))
            .collect();
        report.push_str(&format!(
            "| {} | {} ({}) | {} | {} | {} | {:.1} / {:.1} | {} | {:.1} | {} / {} |\n",
            run["fan_out"],
            run["sustained_deliveries_per_s"],
            run["sustained_messages_per_s"],
            overload["rate"],
            answers.join(", "),
            overload["shed_without_retry_after"],
            overload["accepted_p50_ms"].as_f64().unwrap_or(f64::NAN),
            overload["accepted_p99_ms"].as_f64().unwrap_or(f64::NAN),
            overload["accepted_not_delivered"],
            overload["drained_in_s"].as_f64().unwrap_or(f64::NAN),
            run["recovery"]["accepted"],
            run["recovery"]["sent"],
        ));
    }
    report.push_str("\nSteps (msg/s: accepted / sent, behind 1 s after, held):\n\n");
    for run in result["runs"].as_array().into_iter().flatten() {
        let steps: Vec<String> = run["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|step| {
                format!(
                    "{}: {}/{}, {} behind, {}",
                    step["rate"], step["accepted"], step["sent"], step["behind_after_1s"], step["held"]
                )
            })
            .collect();
        report.push_str(&format!("- fan-out {}: {}\n", run["fan_out"], steps.join("; ")));
    }
    report
}
