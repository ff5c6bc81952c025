//! How big and how long a matrix run is: the full matrix (`make chaos`, release binaries) and
//! the shortened one (`make test`, debug binaries), and the Carrier settings both run with.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Settings {
    /// `short` or `full` (for the report).
    pub matrix: &'static str,
    /// Where `carrier-ingress`, `carrier-router`, `carrier-delivery` and `carrier-notifier` are.
    pub bin_dir: PathBuf,
    /// Each scenario gets `run_dir/<scenario>/` (logs, and its infrastructure's data while it runs).
    pub run_dir: PathBuf,
    /// Production sources sending at once, each one message after the other.
    pub production_streams: usize,
    /// Messages per second of each production source (each fans out to 6 destinations).
    pub stream_rate: f64,
    /// Messages per second of the staging source (2 destinations).
    pub staging_rate: f64,
    /// Delivery replicas at the start of every scenario.
    pub delivery_replicas: usize,
    /// Partitions of `carrier.deliveries` (8 destinations share them).
    pub deliveries_partitions: i32,
    /// `CARRIER_KAFKA__SESSION_TIMEOUT_MS` of every service.
    pub session_timeout_ms: u32,
    /// Delivery's `[retry]`: production backoff from `retry_base_ms` to `retry_cap_ms`, and the
    /// pause before a staging destination's single retry (short, so a settle is bounded).
    pub retry_base_ms: u64,
    pub retry_cap_ms: u64,
    pub non_production_retry_ms: u64,
    /// Load before the fault starts (after the first deliveries arrived).
    pub warm_up: Duration,
    /// Load after the fault ended.
    pub recovery: Duration,
    /// How long, after the load stopped and every fault was undone, every accepted message has
    /// to reach every subscribed production destination.
    pub settle_timeout: Duration,
    /// kill -9 of a service: how many times, and the random wait before each kill.
    pub kills: u32,
    pub kill_interval: (Duration, Duration),
    /// kill -9 of the broker: how many times, and how long it stays down.
    pub broker_kills: u32,
    pub broker_down: Duration,
    /// Postgres and Redis restarts: how long each stays down.
    pub restart_down: Duration,
    /// How long the receiver is down.
    pub receiver_outage: Duration,
    /// How long a network fault (delay, drop) lasts; cuts repeat over this window.
    pub network_fault: Duration,
    /// Added latency of the delay fault.
    pub network_delay: Duration,
    /// The seed of every random choice (moments, replicas), printed in the report.
    pub seed: u64,
    /// `RUST_LOG` of the services.
    pub log_filter: String,
}

impl Settings {
    /// The full matrix: 10 kills of each service, a receiver down for 3 minutes, release builds.
    pub fn full(bin_dir: PathBuf, run_dir: PathBuf) -> Self {
        Self {
            matrix: "full",
            bin_dir,
            run_dir,
            production_streams: 2,
            stream_rate: 20.0,
            staging_rate: 2.0,
            delivery_replicas: 2,
            deliveries_partitions: 4,
            session_timeout_ms: 6_000,
            retry_base_ms: 500,
            retry_cap_ms: 5_000,
            non_production_retry_ms: 500,
            warm_up: Duration::from_secs(10),
            recovery: Duration::from_secs(15),
            settle_timeout: Duration::from_secs(180),
            kills: 10,
            kill_interval: (Duration::from_secs(3), Duration::from_secs(12)),
            broker_kills: 3,
            broker_down: Duration::from_secs(5),
            restart_down: Duration::from_secs(5),
            receiver_outage: Duration::from_secs(180),
            network_fault: Duration::from_secs(20),
            network_delay: Duration::from_millis(200),
            seed: seed_from_clock(),
            log_filter: "info".into(),
        }
    }

    /// The shortened matrix of `make test`: one fault of each kind, short outages, a light
    /// load for debug builds on 2 cores.
    pub fn short(bin_dir: PathBuf, run_dir: PathBuf) -> Self {
        Self {
            matrix: "short",
            stream_rate: 5.0,
            staging_rate: 1.0,
            warm_up: Duration::from_secs(4),
            recovery: Duration::from_secs(5),
            settle_timeout: Duration::from_secs(90),
            kills: 1,
            kill_interval: (Duration::from_secs(1), Duration::from_secs(4)),
            broker_kills: 1,
            broker_down: Duration::from_secs(3),
            restart_down: Duration::from_secs(3),
            receiver_outage: Duration::from_secs(20),
            network_fault: Duration::from_secs(10),
            ..Self::full(bin_dir, run_dir)
        }
    }
}

fn seed_from_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}
