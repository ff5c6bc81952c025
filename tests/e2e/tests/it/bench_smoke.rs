//! A CI-sized run of the benchmark harness (issue 14 §7): `carrier-bench records` and
//! `carrier-bench sustained` against the four services as child processes. It shows the harness
//! runs and writes its files. Timing is never asserted here (`make bench` measures, on a
//! quiet stack); what is asserted are counts, which hold on any machine:
//! - the broker records one message costs: 3 at fan-out 1 (inbound, task, attempt event) and 21
//!   at fan-out 10, with no creation event of the router's own;
//! - nothing an overloaded ingress accepted is lost.

use std::time::Duration;

use carrier_testkit::processes::ProcessStack;
use carrier_testkit::stack::binary_path;
use serde_json::Value;

/// Runs `carrier-bench <part>` against `stack` with `env`; its JSON result.
async fn bench(stack: &ProcessStack, part: &str, dir: &std::path::Path, env: &[(&str, String)]) -> Value {
    let out = dir.join(format!("{part}.json"));
    let report = dir.join(format!("{part}.md"));
    let metrics: Vec<String> = stack
        .metrics_urls
        .iter()
        .map(|(name, url)| format!("{name}={url}"))
        .collect();
    let pids: Vec<String> = stack
        .pids()
        .iter()
        .map(|(name, pid)| format!("{name}={pid}"))
        .collect();
    let status = tokio::time::timeout(
        Duration::from_secs(600),
        tokio::process::Command::new(binary_path("carrier-bench"))
            .arg(part)
            .env("CARRIER_URL", &stack.ingress_url)
            .env("CARRIER_BENCH_BROKERS", carrier_testkit::test_brokers())
            .env("CARRIER_BENCH_TOPIC_PREFIX", format!("{}.", stack.prefix))
            .env("CARRIER_BENCH_DATABASE_URL", &stack.database_url)
            .env("CARRIER_BENCH_METRICS", metrics.join(" "))
            .env("CARRIER_BENCH_PIDS", pids.join(" "))
            .env("CARRIER_BENCH_OUT", &out)
            .env("CARRIER_BENCH_REPORT", &report)
            .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
            .kill_on_drop(true)
            .status(),
    )
    .await
    .expect("carrier-bench finishes within 10 minutes")
    .expect("carrier-bench starts (make test builds it)");
    assert!(status.success(), "carrier-bench {part}: {status}");
    let report = std::fs::read_to_string(&report).expect("the report file");
    assert!(report.starts_with("# "), "{report}");
    serde_json::from_str(&std::fs::read_to_string(&out).expect("the results file")).expect("JSON results")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmark_harness_runs_and_counts_the_records_each_message_costs() {
    let stack = ProcessStack::start(|_| Vec::new()).await;
    let dir = std::env::temp_dir().join(carrier_testkit::unique("carrier-bench-smoke-"));
    std::fs::create_dir_all(&dir).expect("results directory");

    let records = bench(
        &stack,
        "records",
        &dir,
        &[
            ("CARRIER_BENCH_RECORDS_MESSAGES", "20".into()),
            ("CARRIER_BENCH_RECORDS_RATE", "20".into()),
            ("CARRIER_BENCH_RECORDS_SECOND_RATE", "40".into()),
        ],
    )
    .await;
    let runs = records["runs"].as_array().expect("runs");
    let prefix = &stack.prefix;
    for (run, fan_out) in runs.iter().zip([1.0, 10.0]) {
        assert_eq!(run["fan_out"].as_f64(), Some(fan_out), "{run}");
        let written = |topic: &str| run["records_per_message"][format!("{prefix}.{topic}")].as_f64();
        assert_eq!(written("inbound"), Some(1.0), "{run}");
        assert_eq!(
            written("deliveries"),
            Some(fan_out),
            "one task per destination: {run}"
        );
        assert_eq!(
            written("log-events"),
            Some(fan_out),
            "one attempt event per log, no creation event: {run}"
        );
        assert_eq!(
            run["records_per_message_total"].as_f64(),
            Some(1.0 + 2.0 * fan_out),
            "{run}"
        );
        assert!(
            run["fetches_per_message_total"].as_f64().unwrap_or(0.0) > 0.0,
            "fetches are counted: {run}"
        );
        for service in ["ingress", "router", "delivery", "notifier"] {
            for figure in ["gross_cpu_micros_per_message", "marginal_cpu_micros_per_message"] {
                assert!(
                    run[figure][service].as_f64().is_some(),
                    "{service}'s {figure}: {run}"
                );
            }
        }
        assert_eq!(
            run["second_span"]["messages"].as_u64(),
            Some(40),
            "the second span is as long as the first, at its rate: {run}"
        );
        assert!(
            run["services_gross_instructions_per_message"].is_null(),
            "no instructions without callgrind: {run}"
        );
    }

    let sustained = bench(
        &stack,
        "sustained",
        &dir,
        &[
            ("CARRIER_BENCH_SUSTAINED_FANOUTS", "1".into()),
            ("CARRIER_BENCH_SUSTAINED_RATES", "10 20".into()),
            ("CARRIER_BENCH_STEP_SECONDS", "2".into()),
            ("CARRIER_BENCH_OVERLOAD_SECONDS", "3".into()),
        ],
    )
    .await;
    let run = &sustained["runs"][0];
    if run["sustained_messages_per_s"].as_u64().unwrap_or(0) > 0 {
        assert_eq!(
            run["overload"]["accepted_not_delivered"].as_u64(),
            Some(0),
            "every accepted message is delivered: {run}"
        );
        assert_eq!(
            run["overload"]["shed_without_retry_after"].as_u64(),
            Some(0),
            "{run}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    stack.stop().await;
}
