//! `carrier-bench records`: what one delivered message costs the broker, counted rather than
//! timed (so the figures hold on a noisy machine).
//!
//! For each fan-out of `CARRIER_BENCH_RECORDS_FANOUTS` ("1 10"): a source whose data model goes
//! to that many destinations (served by a receiver in this process) sends
//! `CARRIER_BENCH_RECORDS_MESSAGES` (1000) messages at `CARRIER_BENCH_RECORDS_RATE` (100) msg/s;
//! once every delivery has arrived and every log is `delivered` in the log store, it reports
//! - **records written** per message, per topic: the growth of each Carrier topic's end offsets
//!   (every writer counted, whichever service it is);
//! - **fetch requests** per message, per consuming service and topic: the growth of
//!   `carrier_consumer_fetch_requests_total` on each service's `/metrics`
//!   (`CARRIER_BENCH_METRICS`, `name=url ...`). librdkafka reports it every 5 s, so the counters
//!   are read after a settling wait on both sides; the fetches of the waits themselves (idle
//!   peeks) are included, which is why the rate is fixed: fetches per message fall as traffic
//!   rises and batches fill;
//! - **CPU time** per message of each process of `CARRIER_BENCH_PIDS` (`name=pid ...`, from
//!   `/proc`), from the first send until the last log is in the store ("gross": at a low rate
//!   mostly what a flowing pipeline costs per second, every consumer fetching every
//!   `fetch_wait_max_ms`, shared out over the messages of that second); with
//!   `CARRIER_BENCH_RECORDS_SECOND_RATE`, a second span as long at that rate, and the
//!   **marginal** cost: the difference of the two spans' use over the difference of their
//!   messages, what one more message costs (the per-second costs cancel out). Each process, and
//!   the four Carrier services together (every name but `tansu`);
//! - **instructions** per message, gross and marginal the same way, when the services run under
//!   callgrind (`CARRIER_CALLGRIND_DIR`, `instructions.rs`; `bash scripts/bench.sh
//!   instructions`).
//!
//! The JSON of the run goes to `CARRIER_BENCH_OUT`, and the table to `CARRIER_BENCH_REPORT`
//! (`.run/bench/records.md`).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use carrier_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use carrier_kafka::Topics;
use carrier_store::sqlx::{self, PgPool};
use carrier_testkit::client::Api;
use serde_json::{json, Value};

use crate::delivery::process_cpu;
use crate::instructions::Callgrind;
use crate::{env_number, env_or, env_pairs, kilobyte_message, start_receiver, write_results, Arrivals};

/// librdkafka's statistics interval (5 s) and a margin: the counters read after this long
/// include every fetch made before.
const SETTLE: Duration = Duration::from_millis(6_500);

/// Each Carrier topic's records: the sum of its partitions' end offsets.
async fn topic_ends(settings: &carrier_config::KafkaSettings) -> anyhow::Result<BTreeMap<String, f64>> {
    let topics = Topics::new(settings);
    let names = [
        topics.inbound,
        topics.deliveries,
        topics.log_events,
        topics.notifications,
    ];
    let consumer: BaseConsumer =
        carrier_kafka::client::builder(settings, carrier_kafka::client::Role::Admin).create()?;
    tokio::task::spawn_blocking(move || {
        let timeout = Duration::from_secs(10);
        let mut ends = BTreeMap::new();
        for name in names {
            let metadata = consumer.fetch_metadata(Some(&name), timeout)?;
            let mut sum = 0;
            for topic in metadata.topics() {
                for partition in topic.partitions() {
                    let (_, high) = consumer.fetch_watermarks(&name, partition.id(), timeout)?;
                    sum += high;
                }
            }
            ends.insert(name, sum as f64);
        }
        Ok(ends)
    })
    .await?
}

/// `carrier_consumer_fetch_requests_total` of each service, by `service topic`.
async fn fetch_requests(services: &[(String, String)]) -> anyhow::Result<BTreeMap<String, f64>> {
    let client = reqwest::Client::new();
    let mut counts = BTreeMap::new();
    for (service, url) in services {
        let text = client
            .get(url)
            .send()
            .await
            .and_then(|response| response.error_for_status())
            .with_context(|| format!("reading {service}'s metrics at {url}"))?
            .text()
            .await?;
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("carrier_consumer_fetch_requests_total{") else {
                continue;
            };
            let Some((labels, value)) = rest.split_once("} ") else {
                continue;
            };
            let topic = labels
                .split(',')
                .find_map(|label| label.strip_prefix("topic=\""))
                .map(|topic| topic.trim_end_matches('"'))
                .unwrap_or("?");
            *counts.entry(format!("{service} {topic}")).or_default() +=
                value.trim().parse::<f64>().unwrap_or(0.0);
        }
    }
    Ok(counts)
}

/// How much each counter grew.
fn growth(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(name, now)| (name.clone(), now - before.get(name).copied().unwrap_or(0.0)))
        .collect()
}

async fn wait_for(
    what: &str,
    timeout: Duration,
    mut done: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !done().await? {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what}: not done in {} s",
            timeout.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

struct Run<'a> {
    api: &'a Api,
    pool: &'a PgPool,
    kafka: &'a carrier_config::KafkaSettings,
    services: &'a [(String, String)],
    pids: &'a [(String, String)],
    receiver: std::net::SocketAddr,
    arrivals: &'a Arrivals,
    callgrind: Option<&'a Callgrind>,
    messages: usize,
    rate: u64,
    /// A second span at this rate, as long as the first: the marginal cost per message is the
    /// difference of the two spans' use over the difference of their messages.
    second_rate: Option<u64>,
}

/// What one span of messages used: CPU seconds and instructions by process.
struct Used {
    messages: usize,
    cpu: BTreeMap<String, f64>,
    instructions: BTreeMap<String, f64>,
}

/// The four Carrier services together (null when nothing was counted).
fn four_services(per_message: &BTreeMap<String, f64>) -> Value {
    let mut services = per_message.iter().filter(|(name, _)| name.as_str() != "tansu");
    match services.next() {
        None => Value::Null,
        Some((_, first)) => json!(first + services.map(|(_, value)| value).sum::<f64>()),
    }
}

/// `(high - low) × scale / messages` for each name.
fn per_message(
    high: &BTreeMap<String, f64>,
    low: &BTreeMap<String, f64>,
    messages: f64,
    scale: f64,
) -> BTreeMap<String, f64> {
    growth(low, high)
        .into_iter()
        .map(|(name, used)| (name, used * scale / messages))
        .collect()
}

impl Run<'_> {
    /// CPU seconds so far of each process of `pids`, by name.
    fn cpu(&self) -> BTreeMap<String, f64> {
        self.pids
            .iter()
            .map(|(name, pid)| (name.clone(), process_cpu(pid).as_secs_f64()))
            .collect()
    }

    /// One span of `messages` at `rate` msg/s through `fan_out` destinations: its JSON, and
    /// what it used.
    async fn fan_out(&self, fan_out: usize, rate: u64, messages: usize) -> anyhow::Result<(Value, Used)> {
        let organization = self
            .api
            .create_organization(&format!("Records fan-out {fan_out}"))
            .await;
        let source = self.api.create_source(&organization, "production").await;
        let data_model = format!("Records{fan_out}");
        for destination in 0..fan_out {
            self.api
                .subscribed_destination(
                    &organization,
                    &source,
                    &format!(
                        "http://{}/load?fan-out={fan_out}&destination={destination}",
                        self.receiver
                    ),
                    "production",
                    &data_model,
                )
                .await;
        }
        let token = self.api.token(&source).await;
        let mut body: Value = serde_json::from_slice(&kilobyte_message())?;
        body["Meta"]["DataModel"] = json!(data_model);

        let delivered_logs = || async {
            let count: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM logs WHERE source_id::text = $1 AND status = 'delivered'",
            )
            .bind(&source.id)
            .fetch_one(self.pool)
            .await?;
            anyhow::Ok(count as usize)
        };
        // One message first: routes cached, every stage past its first record.
        let arrived_before = self.arrivals.load.load(Ordering::Relaxed);
        let (status, answer) = self.api.send(&token, &body).await;
        anyhow::ensure!(
            status == 200,
            "the warm-up message was refused: {status} {answer}"
        );
        wait_for(
            "the warm-up message's logs",
            Duration::from_secs(60),
            async || Ok(delivered_logs().await? >= fan_out),
        )
        .await?;
        let warm = delivered_logs().await?;
        tokio::time::sleep(SETTLE).await;

        let records_before = topic_ends(self.kafka).await?;
        let fetches_before = fetch_requests(self.services).await?;
        println!("fan-out {fan_out}: {} messages at {} msg/s", messages, rate);
        let started = Instant::now();
        let cpu_before = self.cpu();
        if let Some(callgrind) = self.callgrind {
            callgrind.zero()?;
        }
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut sends = Vec::with_capacity(messages);
        for _ in 0..messages {
            ticker.tick().await;
            let api = self.api.clone();
            let token = token.clone();
            let body = body.clone();
            sends.push(tokio::spawn(async move { api.send(&token, &body).await.0 }));
        }
        for send in sends {
            let status = send.await?;
            anyhow::ensure!(status == 200, "a message was refused: {status}");
        }
        let deliveries = messages * fan_out;
        wait_for("the deliveries", Duration::from_secs(600), async || {
            Ok(self.arrivals.load.load(Ordering::Relaxed) - arrived_before >= deliveries + fan_out)
        })
        .await?;
        wait_for("the delivered logs", Duration::from_secs(600), async || {
            Ok(delivered_logs().await? >= warm + deliveries)
        })
        .await?;
        let elapsed = started.elapsed().as_secs_f64();
        let used = Used {
            messages,
            cpu: growth(&cpu_before, &self.cpu()),
            instructions: match self.callgrind {
                Some(callgrind) => callgrind.read().await?,
                None => BTreeMap::new(),
            },
        };
        tokio::time::sleep(SETTLE).await;
        let records = growth(&records_before, &topic_ends(self.kafka).await?);
        let fetches = growth(&fetches_before, &fetch_requests(self.services).await?);
        let counted = |counts: &BTreeMap<String, f64>| -> serde_json::Map<String, Value> {
            counts
                .iter()
                .map(|(name, count)| (name.clone(), json!(count / messages as f64)))
                .collect()
        };
        let gross_cpu = per_message(&used.cpu, &BTreeMap::new(), messages as f64, 1e6);
        let gross_instructions = per_message(&used.instructions, &BTreeMap::new(), messages as f64, 1.0);
        let records_total: f64 = records.values().sum();
        let fetches_total: f64 = fetches.values().sum();
        Ok((
            json!({
                "fan_out": fan_out,
                "messages": messages,
                "rate": rate,
                "seconds": elapsed,
                "records_per_message": counted(&records),
                "records_per_message_total": records_total / messages as f64,
                "fetches_per_message": counted(&fetches),
                "fetches_per_message_total": fetches_total / messages as f64,
                "gross_cpu_micros_per_message": gross_cpu,
                "services_gross_cpu_micros_per_message": four_services(&gross_cpu),
                "gross_instructions_per_message": gross_instructions,
                "services_gross_instructions_per_message": four_services(&gross_instructions),
            }),
            used,
        ))
    }
}

pub async fn run(ingress: &str, admin_token: &str, output: &str) -> anyhow::Result<()> {
    let fan_outs: Vec<usize> = env_or("CARRIER_BENCH_RECORDS_FANOUTS", "1 10")
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("CARRIER_BENCH_RECORDS_FANOUTS: numbers")?;
    let services = env_pairs(
        "CARRIER_BENCH_METRICS",
        "router=http://127.0.0.1:8081/metrics delivery=http://127.0.0.1:8082/metrics notifier=http://127.0.0.1:8083/metrics",
    );
    let pids = env_pairs("CARRIER_BENCH_PIDS", "");
    let kafka = carrier_config::KafkaSettings {
        brokers: env_or("CARRIER_BENCH_BROKERS", "127.0.0.1:9092"),
        topic_prefix: env_or("CARRIER_BENCH_TOPIC_PREFIX", "carrier."),
        ..Default::default()
    };
    let pool = PgPool::connect(&env_or(
        "CARRIER_BENCH_DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/carrier",
    ))
    .await
    .context("the log store")?;
    let arrivals = Arc::new(Arrivals::default());
    let receiver = start_receiver(arrivals.clone()).await?;
    let api = Api::new(ingress, admin_token);
    let callgrind = Callgrind::from_env(&pids);
    let run = Run {
        api: &api,
        pool: &pool,
        kafka: &kafka,
        services: &services,
        pids: &pids,
        receiver,
        arrivals: &arrivals,
        callgrind: callgrind.as_ref(),
        messages: env_number("CARRIER_BENCH_RECORDS_MESSAGES", 1_000),
        rate: env_number("CARRIER_BENCH_RECORDS_RATE", 100),
        second_rate: std::env::var("CARRIER_BENCH_RECORDS_SECOND_RATE")
            .ok()
            .map(|rate| rate.parse())
            .transpose()
            .context("CARRIER_BENCH_RECORDS_SECOND_RATE: msg/s")?
            .filter(|rate| *rate > 0),
    };
    let mut results = Vec::new();
    for fan_out in fan_outs {
        let (mut result, low) = run.fan_out(fan_out, run.rate, run.messages).await?;
        if let Some(second_rate) = run.second_rate {
            // As long as the first span: the per-second costs of a flowing pipeline (each
            // consumer's fetch loop, timers) are the same in both and cancel out.
            let messages = (run.messages as u64 * second_rate / run.rate) as usize;
            let (second, high) = run.fan_out(fan_out, second_rate, messages).await?;
            let more = high.messages as f64 - low.messages as f64;
            anyhow::ensure!(
                more > 0.0,
                "CARRIER_BENCH_RECORDS_SECOND_RATE must be above the first rate"
            );
            let cpu = per_message(&high.cpu, &low.cpu, more, 1e6);
            let instructions = per_message(&high.instructions, &low.instructions, more, 1.0);
            result["second_span"] = second;
            result["marginal_cpu_micros_per_message"] = json!(cpu);
            result["services_marginal_cpu_micros_per_message"] = four_services(&cpu);
            result["marginal_instructions_per_message"] = json!(instructions);
            result["services_marginal_instructions_per_message"] = four_services(&instructions);
        }
        println!("{result}");
        results.push(result);
    }
    let result = json!({ "label": env_or("CARRIER_BENCH_RECORDS_LABEL", "this stack"), "runs": results });
    write_results(output, &result, ".run/bench/records.md", &report(&result))
}

fn report(result: &Value) -> String {
    let mut report = format!(
        "# Broker records, fetches and the services' work per delivered message — {}\n\n{}. Records: growth of each topic's end offsets; fetches: `carrier_consumer_fetch_requests_total` of each consumer, both divided by the messages sent.\n\n",
        chrono::Utc::now().to_rfc3339(),
        result["label"].as_str().unwrap_or("?"),
    );
    for run in result["runs"].as_array().into_iter().flatten() {
        let counted_instructions = run["gross_instructions_per_message"]
            .as_object()
            .is_some_and(|counts| !counts.is_empty());
        report.push_str(&format!(
            "## Fan-out {} ({} messages at {} msg/s, {:.1} s to the last log{})\n\n| counted | per message |\n|---|---|\n",
            run["fan_out"],
            run["messages"],
            run["rate"],
            run["seconds"].as_f64().unwrap_or(f64::NAN),
            match run["second_span"].as_object() {
                Some(second) => format!(
                    "; then {} at {} msg/s, {:.1} s",
                    second["messages"],
                    second["rate"],
                    second["seconds"].as_f64().unwrap_or(f64::NAN)
                ),
                None => String::new(),
            }
        ));
        for (kind, key) in [
            ("records written to", "records_per_message"),
            ("fetch requests of", "fetches_per_message"),
        ] {
            for (name, value) in run[key].as_object().into_iter().flatten() {
                report.push_str(&format!(
                    "| {kind} {name} | {:.2} |\n",
                    value.as_f64().unwrap_or(f64::NAN)
                ));
            }
            let total = format!("{key}_total");
            report.push_str(&format!(
                "| **{kind} all** | **{:.2}** |\n",
                run[&total].as_f64().unwrap_or(f64::NAN)
            ));
        }
        for (what, key, scale, goal) in [
            (
                "CPU µs, first send to last log,",
                "gross_cpu_micros_per_message",
                1.0,
                "",
            ),
            (
                "marginal CPU µs (second span less the first),",
                "marginal_cpu_micros_per_message",
                1.0,
                " (goal at fan-out 1: < 100)",
            ),
            (
                "thousand instructions, first send to last log,",
                "gross_instructions_per_message",
                1e-3,
                "",
            ),
            (
                "marginal thousand instructions (second span less the first),",
                "marginal_instructions_per_message",
                1e-3,
                "",
            ),
        ] {
            let Some(values) = run[key].as_object().filter(|values| !values.is_empty()) else {
                continue;
            };
            // Under valgrind the CPU times are valgrind's; the instruction counts are the figure.
            if key.contains("cpu") && counted_instructions {
                continue;
            }
            for (name, value) in values {
                report.push_str(&format!(
                    "| {what} {name} | {:.0} |\n",
                    value.as_f64().unwrap_or(f64::NAN) * scale
                ));
            }
            report.push_str(&format!(
                "| **{what} the four services**{goal} | **{:.0}** |\n",
                run[&format!("services_{key}")].as_f64().unwrap_or(f64::NAN) * scale
            ));
        }
        report.push('\n');
    }
    report
}
