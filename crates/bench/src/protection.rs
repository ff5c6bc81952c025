//! `carrier-bench protection`: what ingress's protections cost in throughput.
//!
//! Two ingress processes of the same stack, identical but for the rate limiter: `limited_url`
//! (limiter on, a Redis round trip per request) and `unlimited_url` (`rate_limit.enabled =
//! false`). Delivery and notifier are stopped meanwhile, so ingress, router and broker have the
//! machine as in the ingress benchmark's "stopped" run. Runs alternate (on, off, on + key, ...)
//! so drift of the shared machine falls on every configuration alike:
//!
//! - **limiter on** / **limiter off**: the difference is the limiter's cost;
//! - **limiter on + `Idempotency-Key`** (a new key per request): the Postgres claim of a keyed
//!   request (not a protection, but the cost a sender opting in pays).
//!
//! Authentication cannot be switched off (there is no unauthenticated ingress to compare with),
//! so its cost is measured directly: the CPU time of verifying a request's token
//! (`auth::source`, the exact code on the request path), set against ingress's per-request time.

use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue};
use carrier_testkit::client::{Api, Sender};

use crate::{kilobyte_message, load, signal, LoadResult};

pub struct Options<'a> {
    pub limited_url: &'a str,
    pub unlimited_url: &'a str,
    pub admin_token: &'a str,
    pub receiver_url: &'a str,
    pub pause_pids: Option<String>,
    pub connections: usize,
    pub seconds: u64,
    pub rounds: usize,
    pub output: &'a str,
}

pub async fn run(options: Options<'_>) -> anyhow::Result<()> {
    let api = Api::new(options.limited_url, options.admin_token);
    let Sender { token, .. } = api
        .sender(
            "Protection benchmark",
            "production",
            options.receiver_url,
            "Results",
        )
        .await;
    let body = kilobyte_message();

    if let Some(pids) = &options.pause_pids {
        signal(pids, "-STOP").await;
    }
    let configurations = [
        ("limiter on", options.limited_url, false),
        ("limiter off", options.unlimited_url, false),
        ("limiter on + Idempotency-Key", options.limited_url, true),
    ];
    let mut runs: Vec<Vec<LoadResult>> = vec![Vec::new(); configurations.len()];
    for round in 1..=options.rounds {
        for (index, (label, url, keyed)) in configurations.iter().enumerate() {
            println!("round {round}/{}: {label}", options.rounds);
            let result = load(
                label,
                &format!("{url}/endpoint"),
                Some(&token),
                body.clone(),
                options.connections,
                options.seconds,
                *keyed,
            )
            .await;
            runs[index].push(result);
        }
    }
    if let Some(pids) = &options.pause_pids {
        signal(pids, "-CONT").await;
    }

    let auth_micros = auth_cost_micros(&token);
    let rate =
        |results: &[LoadResult]| results.iter().map(LoadResult::rate).sum::<f64>() / results.len() as f64;
    let (on, off, keyed) = (rate(&runs[0]), rate(&runs[1]), rate(&runs[2]));

    let mut report = format!(
        "# Carrier ingress protections — {}\n\n{} connections, {} s per run, {} rounds, 1 KiB body, delivery and notifier stopped\n\n",
        chrono::Utc::now().to_rfc3339(),
        options.connections,
        options.seconds,
        options.rounds,
    );
    report.push_str("| configuration | accepted msg/s (each round) | mean | p50 ms | p99 ms | failed |\n|---|---|---|---|---|---|\n");
    for ((label, _, _), results) in configurations.iter().zip(&runs) {
        let rounds: Vec<String> = results.iter().map(|r| format!("{:.0}", r.rate())).collect();
        let last = results.last().expect("one round at least");
        report.push_str(&format!(
            "| {label} | {} | {:.0} | {:.2} | {:.2} | {} |\n",
            rounds.join(" / "),
            rate(results),
            last.p50_ms,
            last.p99_ms,
            results.iter().map(|r| r.failed).sum::<usize>(),
        ));
    }
    report.push_str(&format!(
        "\nrate limiter: {:.1} % of throughput ({on:.0} vs {off:.0} msg/s without it)\n",
        (1.0 - on / off) * 100.0
    ));
    report.push_str(&format!(
        "Idempotency-Key on every request: {:.1} % of throughput ({keyed:.0} vs {on:.0} msg/s)\n",
        (1.0 - keyed / on) * 100.0
    ));
    report.push_str(&format!(
        "authentication (`auth::source`: Bearer parse, HMAC-SHA256 verify, expiry, disabled check): {auth_micros:.2} µs of CPU per request, {:.1} % of one core at {off:.0} msg/s\n",
        auth_micros * off / 1e6 * 100.0
    ));
    println!("\n{report}");
    if let Some(parent) = std::path::Path::new(options.output).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(options.output, &report)?;
    println!("written to {}", options.output);
    Ok(())
}

/// Mean CPU time of authenticating one request, in microseconds (single thread, warm).
fn auth_cost_micros(token: &str) -> f64 {
    let signer = carrier_ingress::auth::TokenSigner::new(carrier_ingress::DEV_TOKEN_SIGNING_KEY, 300);
    // The stack's own token was signed with the dev key: verify a fresh one of the same shape.
    let source = signer
        .verify(token, carrier_ingress::auth::now_unix())
        .unwrap_or_else(|_| carrier_ingress::auth::SourceToken {
            source_id: "source".into(),
            organization_id: "organization".into(),
            environment: "production".into(),
        });
    let token = signer.issue(&source, carrier_ingress::auth::now_unix());
    let mut headers = HeaderMap::new();
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    let iterations = 200_000;
    for _ in 0..10_000 {
        std::hint::black_box(carrier_ingress::auth::source(&headers, &signer).is_ok());
    }
    let started = Instant::now();
    for _ in 0..iterations {
        std::hint::black_box(carrier_ingress::auth::source(std::hint::black_box(&headers), &signer).is_ok());
    }
    let elapsed: Duration = started.elapsed();
    elapsed.as_secs_f64() * 1e6 / iterations as f64
}
