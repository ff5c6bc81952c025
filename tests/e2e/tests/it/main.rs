//! The whole pipeline on a real broker, Postgres and HTTP receivers on loopback.
//! `make test` starts the infrastructure; `CARRIER_TEST_BROKERS` points at the broker.

mod access;
mod alerts;
mod auth;
mod bench_smoke;
mod chaos;
mod client_assertion;
mod console;
mod datastore_tls;
mod faults;
mod fhir;
mod generations;
mod hostile_input;
mod idempotency;
mod idle;
mod internal_auth;
mod isolation;
mod kafka_tls;
mod leases;
mod logs;
mod manual_retry;
mod markers;
mod monitoring;
mod openapi_conformance;
mod operator;
mod outbound;
mod overload;
mod parking;
mod pipeline;
mod postgres_outage;
mod probes;
mod rate_limit;
mod retries;
mod statuses;
mod tracing;

use std::collections::HashSet;

use carrier_testkit::order::OrderReport;
use carrier_testkit::receiver::{Received, Receiver};

/// The `Sequence` numbers of requests, in arrival order.
pub fn sequences(requests: &[Received], source: Option<&str>) -> Vec<u64> {
    requests
        .iter()
        .filter_map(|request| {
            let body: serde_json::Value = serde_json::from_slice(&request.body).ok()?;
            if let Some(source) = source {
                if body["Source"].as_str() != Some(source) {
                    return None;
                }
            }
            body["Sequence"].as_u64()
        })
        .collect()
}

/// Arrival order with repeats removed (a repeat may follow a crash; it never reorders).
pub fn first_arrivals(sequence: &[u64]) -> Vec<u64> {
    let mut seen = HashSet::new();
    sequence
        .iter()
        .copied()
        .filter(|value| seen.insert(*value))
        .collect()
}

/// Checks what `path` of `receiver` saw, on its raw arrival sequence: every message of `expected`
/// arrived, in order (first and last arrivals; see `carrier_testkit::order`), any repeat under
/// its original `webhook-id`, and never two requests at once. Returns the report (duplicates).
pub fn assert_raw_order(receiver: &Receiver, path: &str, expected: &[u64]) -> OrderReport {
    let arrivals = receiver.arrivals_on(path);
    let report = carrier_testkit::order::judge(&arrivals, expected);
    let raw: Vec<u64> = arrivals.iter().map(|arrival| arrival.sequence).collect();
    assert!(
        report.is_clean(),
        "{path}: {report:?}; raw arrival sequence: {raw:?}"
    );
    assert_eq!(
        receiver.max_in_flight(path),
        1,
        "{path}: never two requests in flight at once"
    );
    report
}
