//! The whole pipeline on a real broker, Postgres and HTTP receivers on loopback.
//! `make test` starts the infrastructure; `CARRIER_TEST_BROKERS` points at the broker.

mod alerts;
mod auth;
mod chaos;
mod client_assertion;
mod faults;
mod fhir;
mod idempotency;
mod logs;
mod manual_retry;
mod operator;
mod outbound;
mod parking;
mod pipeline;
mod rate_limit;
mod retries;
mod statuses;

use std::collections::HashSet;

use carrier_testkit::receiver::Received;

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
