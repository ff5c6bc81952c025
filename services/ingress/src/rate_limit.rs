//! The per-client rate limit of the public API (SPEC §2: 429 past 7,500 requests from one client
//! IP in any rolling 5 minutes), shared by every ingress replica through Redis.
//!
//! - **What is counted**: every request to the public API that the limiter admits, whatever its
//!   answer afterwards (a 400 or 401 costs capacity too). Refused requests (429) are not counted,
//!   so a client that keeps calling while limited gets back in as soon as its own earlier
//!   requests leave the window. Probes (`/healthz`, `/readyz`, `/metrics`) are never counted.
//! - **Exact sliding window**: one sorted set per client (`{key_prefix}rl:{client}`, the client
//!   being an IPv4 address or an IPv6 /64 prefix, [`client_ip::window_key`]), one member per
//!   admitted request scored by its admission time in ms; trimmed, counted and added to in one
//!   Lua script (`sliding_window.lua`, one round trip), with a TTL of one window. A 429 carries
//!   `Retry-After`: the seconds until the counted request that blocks the client leaves the window.
//! - **One clock**: the script reads the Redis server's clock (`TIME`), not the replica's, so
//!   replicas whose clocks disagree still count one window the same way.
//! - **Fail open**: Redis holds only what may be lost (SPEC §4). When Redis is unreachable or
//!   slower than `timeout_ms`, the request goes through: the limit protects capacity, the
//!   durable path (Kafka) never depends on it, and losing Redis must never refuse or lose a
//!   message. Such requests are counted in `carrier_ingress_rate_limit_unavailable_total`, and a
//!   warning is logged at most every [`WARN_INTERVAL`]. After a timeout or an error, requests
//!   skip Redis for [`SKIP_AFTER_FAILURE`] (through at once instead of each waiting out
//!   `timeout_ms`), then the next one tries it again. Ingress starts without Redis; the
//!   connection is made in the background and remade by itself after Redis returns.
//! - **Client IP**: the TCP peer, or from `X-Forwarded-For` when the peer is a trusted proxy
//!   (`client_ip`).

pub(crate) mod client_ip;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use carrier_config::ConfigError;
use carrier_proto::ErrorKind;
use ipnet::IpNet;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;

pub use client_ip::{client_ip, parse_trusted_proxy, window_key};

/// Shortest interval between two "rate-limit store unavailable" warnings.
pub const WARN_INTERVAL: Duration = Duration::from_secs(5);

/// After Redis timed out or failed, how long requests go through without asking it.
pub const SKIP_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// The `[rate_limit]` section of ingress (`CARRIER_RATE_LIMIT__*`). Its `Debug` shows the Redis
/// URL without its password.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RateLimitSettings {
    /// Limit requests per client IP. When off, nothing is counted and Redis is not used.
    pub enabled: bool,
    /// Redis holding the windows; every ingress replica must use the same one.
    /// `redis://host:6379`, or `rediss://host:6380` for TLS (the server's certificate must
    /// name `host` and be signed by `redis_ca_path`'s CA, or by one the system trusts). A
    /// password goes in the URL (`rediss://:password@host:6380`, or
    /// `CARRIER_RATE_LIMIT__REDIS_URL_FILE`).
    pub redis_url: String,
    /// PEM file of the CA that signs the Redis server's certificate, with a `rediss://` URL;
    /// unset: the system's CA store.
    pub redis_ca_path: Option<PathBuf>,
    /// Requests admitted per client IP in any rolling window.
    pub limit: u64,
    /// Length of the rolling window.
    pub window_secs: u64,
    /// Peers whose `X-Forwarded-For` is believed: addresses or CIDR networks (`10.0.0.0/8`), as a
    /// list or a comma-separated string (`CARRIER_RATE_LIMIT__TRUSTED_PROXIES=10.0.0.0/8,::1`).
    /// Empty (default): the TCP peer is always the client.
    #[serde(deserialize_with = "carrier_config::list_or_comma_separated")]
    pub trusted_proxies: Vec<String>,
    /// Prefix of the Redis keys (`{key_prefix}rl:{client}`: an IPv4 address, or an IPv6 /64
    /// such as `2001:db8:1:2::/64`).
    pub key_prefix: String,
    /// Longest wait for Redis per request; past it the request goes through unlimited.
    pub timeout_ms: u64,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_ca_path: None,
            limit: 7_500,
            window_secs: 300,
            trusted_proxies: Vec::new(),
            key_prefix: "carrier:".into(),
            timeout_ms: 200,
        }
    }
}

impl std::fmt::Debug for RateLimitSettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RateLimitSettings")
            .field("enabled", &self.enabled)
            .field("redis_url", &carrier_config::RedactedUrl(&self.redis_url))
            .field("redis_ca_path", &self.redis_ca_path)
            .field("limit", &self.limit)
            .field("window_secs", &self.window_secs)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("key_prefix", &self.key_prefix)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

impl RateLimitSettings {
    /// Checks every field; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |text: String| Err(ConfigError::Invalid(text));
        if self.limit == 0 {
            return invalid(
                "rate_limit.limit must be positive (disable with rate_limit.enabled = false)".into(),
            );
        }
        if self.window_secs == 0 {
            return invalid("rate_limit.window_secs must be positive".into());
        }
        if self.timeout_ms == 0 {
            return invalid("rate_limit.timeout_ms must be positive".into());
        }
        self.redis_client()?;
        self.trusted_proxy_networks()?;
        Ok(())
    }

    /// The Redis client of `redis_url`, trusting `redis_ca_path`'s CA for a `rediss://` URL.
    pub fn redis_client(&self) -> Result<redis::Client, ConfigError> {
        let tls = self.redis_url.starts_with("rediss://");
        if let (Some(path), false) = (&self.redis_ca_path, tls) {
            let path = path.display();
            return Err(ConfigError::Invalid(format!(
                "rate_limit.redis_ca_path ({path}) is set but rate_limit.redis_url is not a rediss:// (TLS) URL"
            )));
        }
        let client = match &self.redis_ca_path {
            Some(path) => {
                let ca = std::fs::read(path).map_err(|error| {
                    ConfigError::Invalid(format!(
                        "rate_limit.redis_ca_path: cannot read {}: {error}",
                        path.display()
                    ))
                })?;
                redis::Client::build_with_tls(
                    self.redis_url.as_str(),
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(ca),
                    },
                )
            }
            None => redis::Client::open(self.redis_url.as_str()),
        };
        client.map_err(|error| {
            ConfigError::Invalid(format!("rate_limit.redis_url is not a usable Redis URL: {error}"))
        })
    }

    /// The parsed `trusted_proxies`.
    pub fn trusted_proxy_networks(&self) -> Result<Vec<IpNet>, ConfigError> {
        let mut networks = Vec::with_capacity(self.trusted_proxies.len());
        for entry in &self.trusted_proxies {
            let network = parse_trusted_proxy(entry)
                .map_err(|error| ConfigError::Invalid(format!("rate_limit.trusted_proxies: {error}")))?;
            networks.push(network);
        }
        Ok(networks)
    }
}

/// What the limiter says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Counted; `count` requests of this client are now in the window.
    Admitted { count: u64 },
    /// Over the limit: come back in `retry_after_secs`. Not counted.
    Limited { retry_after_secs: u64 },
    /// Redis did not answer in time (or is not connected): let it through uncounted.
    Unavailable,
}

/// Seconds for `Retry-After` from the milliseconds until a slot frees: rounded up, at least 1.
pub fn retry_after_secs(retry_ms: i64) -> u64 {
    let retry_ms = retry_ms.max(1) as u64;
    retry_ms.div_ceil(1000).max(1)
}

/// The shared limiter of one ingress process.
pub struct RateLimiter {
    settings: RateLimitSettings,
    trusted_proxies: Vec<IpNet>,
    timeout: Duration,
    script: redis::Script,
    /// Set once the first connection is made; the manager reconnects by itself afterwards.
    connection: Arc<OnceLock<ConnectionManager>>,
    /// Makes members unique across replicas: a random ID of this process and a counter.
    replica_id: String,
    sequence: AtomicU64,
    warnings: WarnThrottle,
    degraded: AtomicBool,
    skip: SkipAfterFailure,
}

impl RateLimiter {
    /// Creates the limiter and starts connecting to Redis in the background (until `shutdown`);
    /// returns at once, whether or not Redis is reachable. `settings` must be validated.
    pub fn start(settings: RateLimitSettings, shutdown: CancellationToken) -> Result<Arc<Self>, ConfigError> {
        settings.validate()?;
        let client = settings.redis_client()?;
        let limiter = Arc::new(RateLimiter {
            trusted_proxies: settings.trusted_proxy_networks()?,
            timeout: Duration::from_millis(settings.timeout_ms),
            script: redis::Script::new(include_str!("rate_limit/sliding_window.lua")),
            connection: Arc::new(OnceLock::new()),
            replica_id: uuid::Uuid::new_v4().simple().to_string()[..16].to_string(),
            sequence: AtomicU64::new(0),
            warnings: WarnThrottle::new(WARN_INTERVAL),
            degraded: AtomicBool::new(false),
            skip: SkipAfterFailure::new(SKIP_AFTER_FAILURE),
            settings,
        });
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(limiter.timeout.max(Duration::from_secs(1)))
            .set_response_timeout(limiter.timeout)
            // Reconnect attempts 1 s apart at most, so a returning Redis is used again promptly.
            .set_factor(2)
            .set_max_delay(1_000)
            .set_number_of_retries(3);
        tokio::spawn(connect(
            client,
            config,
            limiter.connection.clone(),
            limiter.settings.redis_url.clone(),
            shutdown,
        ));
        Ok(limiter)
    }

    pub fn settings(&self) -> &RateLimitSettings {
        &self.settings
    }

    /// Counts a request of `client` if it fits in its window (its address's for IPv4, its /64's
    /// for IPv6: [`window_key`]).
    pub async fn check(&self, client: IpAddr) -> Decision {
        self.check_at(client, None).await
    }

    /// [`check`](Self::check) at a given time in ms instead of the Redis server's clock (tests).
    async fn check_at(&self, client: IpAddr, now_ms: Option<i64>) -> Decision {
        let Some(connection) = self.connection.get() else {
            return self.unavailable("not_connected", None);
        };
        if self.skip.is_skipping(Instant::now()) {
            return self.unavailable("skipped_after_failure", None);
        }
        let mut connection = connection.clone();
        let key = format!("{}rl:{}", self.settings.key_prefix, window_key(client));
        let member = format!(
            "{}-{}",
            self.replica_id,
            self.sequence.fetch_add(1, Ordering::Relaxed)
        );
        let mut invocation = self.script.key(key);
        invocation
            .arg(self.settings.limit)
            .arg(self.settings.window_secs * 1000)
            .arg(member);
        if let Some(now_ms) = now_ms {
            invocation.arg(now_ms);
        }
        let answer = tokio::time::timeout(
            self.timeout,
            invocation.invoke_async::<(i64, i64, i64)>(&mut connection),
        )
        .await;
        let decision = match answer {
            Ok(Ok((1, count, _))) => Decision::Admitted { count: count as u64 },
            Ok(Ok((_, _, retry_ms))) => Decision::Limited {
                retry_after_secs: retry_after_secs(retry_ms),
            },
            Ok(Err(error)) => {
                self.skip.failed(Instant::now());
                return self.unavailable("error", Some(&error));
            }
            Err(_) => {
                self.skip.failed(Instant::now());
                return self.unavailable("timeout", None);
            }
        };
        if self.degraded.swap(false, Ordering::Relaxed) {
            tracing::info!("rate-limit store reachable again; counting requests");
        }
        decision
    }

    fn unavailable(&self, reason: &'static str, error: Option<&redis::RedisError>) -> Decision {
        crate::metrics::metrics()
            .rate_limit_unavailable
            .with_label_values(&[reason])
            .inc();
        self.degraded.store(true, Ordering::Relaxed);
        if let Some(suppressed) = self.warnings.should_warn(Instant::now()) {
            let error = error.map(ToString::to_string).unwrap_or_default();
            tracing::warn!(
                reason,
                %error,
                also_unlimited_since_last_warning = suppressed,
                timeout_ms = self.settings.timeout_ms,
                "rate-limit store unavailable; letting requests through unlimited"
            );
        }
        Decision::Unavailable
    }
}

/// Makes the first connection, retrying until it succeeds or `shutdown`. Later losses are
/// repaired by the connection manager itself.
async fn connect(
    client: redis::Client,
    config: ConnectionManagerConfig,
    slot: Arc<OnceLock<ConnectionManager>>,
    redis_url: String,
    shutdown: CancellationToken,
) {
    let warnings = WarnThrottle::new(WARN_INTERVAL);
    loop {
        let attempt = ConnectionManager::new_with_config(client.clone(), config.clone());
        let result = tokio::select! {
            result = attempt => result,
            _ = shutdown.cancelled() => return,
        };
        match result {
            Ok(connection) => {
                let _ = slot.set(connection);
                tracing::info!(redis_url = %carrier_config::redact_url(&redis_url), "rate-limit store connected");
                return;
            }
            Err(error) => {
                if warnings.should_warn(Instant::now()).is_some() {
                    tracing::warn!(
                        %error,
                        redis_url = %carrier_config::redact_url(&redis_url),
                        "cannot connect to the rate-limit store; requests go through unlimited until it answers"
                    );
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// After a failure, tells requests to leave Redis alone for a while: while it is down or hung,
/// one request per interval waits on it instead of every one.
struct SkipAfterFailure {
    epoch: Instant,
    interval: Duration,
    /// Milliseconds after `epoch` until which requests skip Redis.
    until_ms: AtomicU64,
}

impl SkipAfterFailure {
    fn new(interval: Duration) -> Self {
        Self {
            epoch: Instant::now(),
            interval,
            until_ms: AtomicU64::new(0),
        }
    }

    fn millis(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    fn is_skipping(&self, now: Instant) -> bool {
        self.millis(now) < self.until_ms.load(Ordering::Relaxed)
    }

    fn failed(&self, now: Instant) {
        let until = self.millis(now) + self.interval.as_millis() as u64;
        self.until_ms.fetch_max(until, Ordering::Relaxed);
    }
}

/// Lets a warning through at most once per interval; counts what it held back.
struct WarnThrottle {
    interval: Duration,
    state: std::sync::Mutex<(Option<Instant>, u64)>,
}

impl WarnThrottle {
    fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: std::sync::Mutex::new((None, 0)),
        }
    }

    /// `Some(suppressed since the last warning)` when a warning may be logged at `now`.
    fn should_warn(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (last, suppressed) = &mut *state;
        match last {
            Some(last) if now.saturating_duration_since(*last) < self.interval => {
                *suppressed += 1;
                None
            }
            _ => {
                *last = Some(now);
                Some(std::mem::take(suppressed))
            }
        }
    }
}

/// The axum middleware: counts the request against its client, answers 429 when over the limit.
/// A request without a peer address (a server not started with connect info) is not limited.
pub async fn enforce(State(limiter): State<Arc<RateLimiter>>, request: Request, next: Next) -> Response {
    let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>().copied() else {
        return next.run(request).await;
    };
    let client = client_ip(
        peer.ip(),
        request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .map(|value| value.as_bytes()),
        &limiter.trusted_proxies,
    );
    let decision = limiter.check(client).await;
    let counted = match decision {
        Decision::Admitted { .. } => "allowed",
        Decision::Unavailable => "unlimited",
        Decision::Limited { .. } => "limited",
    };
    crate::metrics::metrics()
        .rate_limit_decisions
        .with_label_values(&[counted])
        .inc();
    match decision {
        Decision::Admitted { .. } | Decision::Unavailable => next.run(request).await,
        Decision::Limited { retry_after_secs } => {
            crate::metrics::metrics().rate_limited.inc();
            tracing::debug!(%client, retry_after_secs, "rate limited");
            let settings = &limiter.settings;
            let window = window_key(client);
            ApiError::new(
                ErrorKind::RateLimited,
                format!(
                    "Rate limit exceeded: more than {} requests from {window} in {} seconds; retry after {retry_after_secs} seconds",
                    settings.limit, settings.window_secs
                ),
            )
            .with_retry_after(retry_after_secs)
            .for_api(crate::error::Api::of_path(request.uri().path()))
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_at_least_one() {
        assert_eq!(retry_after_secs(1), 1);
        assert_eq!(retry_after_secs(999), 1);
        assert_eq!(retry_after_secs(1_000), 1);
        assert_eq!(retry_after_secs(1_001), 2);
        assert_eq!(retry_after_secs(299_999), 300);
        assert_eq!(retry_after_secs(0), 1);
        assert_eq!(retry_after_secs(-5), 1);
    }

    #[test]
    fn warnings_are_throttled_and_count_what_they_held_back() {
        let throttle = WarnThrottle::new(Duration::from_secs(5));
        let start = Instant::now();
        assert_eq!(throttle.should_warn(start), Some(0));
        for millis in [1, 100, 4_999] {
            assert_eq!(throttle.should_warn(start + Duration::from_millis(millis)), None);
        }
        assert_eq!(throttle.should_warn(start + Duration::from_secs(5)), Some(3));
        assert_eq!(throttle.should_warn(start + Duration::from_secs(6)), None);
        assert_eq!(throttle.should_warn(start + Duration::from_secs(11)), Some(1));
    }

    #[test]
    fn after_a_failure_redis_is_skipped_for_one_interval_then_tried_again() {
        let skip = SkipAfterFailure::new(Duration::from_secs(1));
        let start = skip.epoch;
        assert!(!skip.is_skipping(start));
        skip.failed(start + Duration::from_millis(100));
        assert!(skip.is_skipping(start + Duration::from_millis(100)));
        assert!(skip.is_skipping(start + Duration::from_millis(1_099)));
        assert!(!skip.is_skipping(start + Duration::from_millis(1_100)));
        // A late report of an older failure does not shorten a newer skip.
        skip.failed(start + Duration::from_millis(2_000));
        skip.failed(start + Duration::from_millis(1_500));
        assert!(skip.is_skipping(start + Duration::from_millis(2_999)));
        assert!(!skip.is_skipping(start + Duration::from_millis(3_000)));
    }

    #[test]
    fn invalid_settings_name_their_field() {
        let cases = [
            (
                RateLimitSettings {
                    limit: 0,
                    ..Default::default()
                },
                "rate_limit.limit",
            ),
            (
                RateLimitSettings {
                    window_secs: 0,
                    ..Default::default()
                },
                "rate_limit.window_secs",
            ),
            (
                RateLimitSettings {
                    timeout_ms: 0,
                    ..Default::default()
                },
                "rate_limit.timeout_ms",
            ),
            (
                RateLimitSettings {
                    redis_url: "http://127.0.0.1:6379".into(),
                    ..Default::default()
                },
                "rate_limit.redis_url",
            ),
            (
                RateLimitSettings {
                    trusted_proxies: vec!["10.0.0.0/8".into(), "10.0.0.0/40".into()],
                    ..Default::default()
                },
                "rate_limit.trusted_proxies: '10.0.0.0/40'",
            ),
        ];
        for (settings, field) in cases {
            let error = settings.validate().unwrap_err().to_string();
            assert!(error.contains(field), "expected {field} in: {error}");
        }
        RateLimitSettings::default().validate().unwrap();
    }

    #[test]
    fn redis_passwords_stay_out_of_logs() {
        assert_eq!(
            carrier_config::redact_url("redis://:secret@cache:6379/0"),
            "redis://:<redacted>@cache:6379/0"
        );
        assert_eq!(
            carrier_config::redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        let settings = RateLimitSettings {
            redis_url: "rediss://:s3cr3t-redis@cache:6380/0".into(),
            ..Default::default()
        };
        let printed = format!("{settings:?}");
        assert!(!printed.contains("s3cr3t"), "{printed}");
        assert!(printed.contains("rediss://:<redacted>@cache:6380/0"), "{printed}");
    }

    #[test]
    fn a_ca_needs_a_tls_url_and_a_readable_file() {
        let plain = RateLimitSettings {
            redis_ca_path: Some("/etc/carrier/redis-ca.crt".into()),
            ..Default::default()
        };
        let error = plain.validate().unwrap_err().to_string();
        assert!(error.contains("rate_limit.redis_ca_path"), "{error}");
        assert!(error.contains("not a rediss:// (TLS) URL"), "{error}");
        let missing = RateLimitSettings {
            redis_url: "rediss://cache:6380".into(),
            ..plain
        };
        let error = missing.validate().unwrap_err().to_string();
        assert!(
            error.contains("rate_limit.redis_ca_path: cannot read /etc/carrier/redis-ca.crt"),
            "{error}"
        );
    }

    /// Tests against the real Redis of the test environment (`CARRIER_TEST_REDIS`), each under
    /// a key prefix of its own.
    mod with_redis {
        use super::*;

        fn test_redis() -> String {
            std::env::var("CARRIER_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
        }

        fn settings(limit: u64, window_secs: u64) -> RateLimitSettings {
            RateLimitSettings {
                redis_url: test_redis(),
                limit,
                window_secs,
                key_prefix: format!("test-{}:", uuid::Uuid::new_v4().simple()),
                ..Default::default()
            }
        }

        async fn connected(settings: RateLimitSettings) -> Arc<RateLimiter> {
            let limiter = RateLimiter::start(settings, CancellationToken::new()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while limiter.connection.get().is_none() {
                assert!(Instant::now() < deadline, "Redis at {} answers", test_redis());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            limiter
        }

        #[tokio::test]
        async fn the_window_slides_by_each_request_s_own_time_and_is_exact_at_its_edges() {
            // 3 requests per 10 s; times in ms on the script's clock.
            let limiter = connected(settings(3, 10)).await;
            let client: IpAddr = "198.51.100.7".parse().unwrap();
            let at = |ms: i64| limiter.check_at(client, Some(ms));
            assert_eq!(at(1_000).await, Decision::Admitted { count: 1 });
            assert_eq!(at(4_000).await, Decision::Admitted { count: 2 });
            assert_eq!(at(7_000).await, Decision::Admitted { count: 3 });
            // Full: the request of 1 000 leaves at 11 000 (exclusive end of its window).
            assert_eq!(at(8_000).await, Decision::Limited { retry_after_secs: 3 });
            assert_eq!(at(10_999).await, Decision::Limited { retry_after_secs: 1 });
            // Refused requests were not counted: exactly at 11 000 one slot is free again.
            assert_eq!(at(11_000).await, Decision::Admitted { count: 3 });
            // Now 4 000, 7 000 and 11 000 are in; a fixed 10 s bucket [10 000, 20 000) would
            // hold only one request here and admit two more.
            assert_eq!(at(12_000).await, Decision::Limited { retry_after_secs: 2 });
            assert_eq!(at(14_000).await, Decision::Admitted { count: 3 });
            assert_eq!(at(16_999).await, Decision::Limited { retry_after_secs: 1 });
            assert_eq!(at(17_000).await, Decision::Admitted { count: 3 });
            // Other clients have windows of their own.
            let other: IpAddr = "2001:db8::7".parse().unwrap();
            assert_eq!(
                limiter.check_at(other, Some(17_000)).await,
                Decision::Admitted { count: 1 }
            );
        }

        #[tokio::test]
        async fn two_addresses_of_one_ipv6_64_share_a_window_and_the_next_64_has_its_own() {
            let limiter = connected(settings(2, 10)).await;
            let at = |client: &str, ms: i64| {
                let client: IpAddr = client.parse().unwrap();
                let limiter = limiter.clone();
                async move { limiter.check_at(client, Some(ms)).await }
            };
            assert_eq!(
                at("2001:db8:1:2::1", 1_000).await,
                Decision::Admitted { count: 1 }
            );
            // Another address of the same /64 (a new privacy address) counts in the same window.
            assert_eq!(
                at("2001:db8:1:2:a1b2:c3d4:e5f6:789", 2_000).await,
                Decision::Admitted { count: 2 }
            );
            assert_eq!(
                at("2001:db8:1:2::3", 3_000).await,
                Decision::Limited { retry_after_secs: 8 }
            );
            // The neighbouring /64 is another client.
            assert_eq!(
                at("2001:db8:1:3::1", 3_000).await,
                Decision::Admitted { count: 1 }
            );
            // IPv4 stays per address, and a mapped address is its IPv4 client.
            assert_eq!(at("198.51.100.7", 3_000).await, Decision::Admitted { count: 1 });
            assert_eq!(
                at("::ffff:198.51.100.7", 3_000).await,
                Decision::Admitted { count: 2 }
            );
            assert_eq!(
                at("198.51.100.7", 3_000).await,
                Decision::Limited { retry_after_secs: 10 }
            );
            assert_eq!(at("198.51.100.8", 3_000).await, Decision::Admitted { count: 1 });
            // The window lives under the /64's key.
            let mut connection = limiter.connection.get().unwrap().clone();
            let counted: i64 = redis::cmd("ZCARD")
                .arg(format!("{}rl:2001:db8:1:2::/64", limiter.settings.key_prefix))
                .query_async(&mut connection)
                .await
                .unwrap();
            assert_eq!(counted, 2);
        }

        #[tokio::test]
        async fn on_the_redis_clock_a_full_window_refuses_with_a_retry_after_within_the_window() {
            let limiter = connected(settings(2, 30)).await;
            let client: IpAddr = "203.0.113.9".parse().unwrap();
            assert_eq!(limiter.check(client).await, Decision::Admitted { count: 1 });
            assert_eq!(limiter.check(client).await, Decision::Admitted { count: 2 });
            match limiter.check(client).await {
                Decision::Limited { retry_after_secs } => {
                    assert!((1..=30).contains(&retry_after_secs), "{retry_after_secs}")
                }
                other => panic!("expected a refusal, got {other:?}"),
            }
            // The key expires with the window.
            let mut connection = limiter.connection.get().unwrap().clone();
            let ttl_ms: i64 = redis::cmd("PTTL")
                .arg(format!("{}rl:{client}", limiter.settings.key_prefix))
                .query_async(&mut connection)
                .await
                .unwrap();
            assert!((1..=30_000).contains(&ttl_ms), "{ttl_ms}");
        }

        #[tokio::test]
        async fn the_middleware_answers_429_with_the_computed_retry_after_and_the_data_model_body() {
            use axum::body::Body;
            use tower::ServiceExt;

            let limiter = connected(RateLimitSettings {
                trusted_proxies: vec!["10.0.0.0/8".into()],
                ..settings(1, 120)
            })
            .await;
            let app = axum::Router::new()
                .route("/endpoint", axum::routing::post(|| async { "accepted" }))
                .layer(axum::middleware::from_fn_with_state(limiter.clone(), enforce));
            let request = |peer: &str, forwarded_for: Option<&str>| {
                let mut request = axum::http::Request::post("/endpoint");
                if let Some(forwarded_for) = forwarded_for {
                    request = request.header("x-forwarded-for", forwarded_for);
                }
                let mut request = request.body(Body::empty()).unwrap();
                let peer: SocketAddr = peer.parse().unwrap();
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            };
            let send = |request: axum::http::Request<Body>| async {
                let response = app.clone().oneshot(request).await.unwrap();
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .map(|value| value.to_str().unwrap().to_string());
                let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
                (status, retry_after, body)
            };

            let (status, _, body) = send(request("198.51.100.20:4000", None)).await;
            assert_eq!((status, &body[..]), (200, &b"accepted"[..]));
            // Another port of the same address is the same client.
            let (status, retry_after, body) = send(request("198.51.100.20:4001", None)).await;
            assert_eq!(status, 429);
            let retry_after: u64 = retry_after.expect("Retry-After").parse().unwrap();
            assert!(
                (110..=120).contains(&retry_after),
                "the first request leaves the 120 s window in about 120 s: {retry_after}"
            );
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let text = body["Meta"]["Errors"][0]["Text"]
                .as_str()
                .expect("Data Model error body");
            assert!(
                text.contains("Rate limit exceeded") && text.contains("198.51.100.20"),
                "{text}"
            );
            // A spoofed X-Forwarded-For from an untrusted peer changes nothing.
            let (status, _, _) = send(request("198.51.100.20:4002", Some("203.0.113.50"))).await;
            assert_eq!(status, 429);
            // Through a trusted proxy, the forwarded client has a window of its own.
            let (status, _, _) = send(request("10.1.1.1:5000", Some("203.0.113.51"))).await;
            assert_eq!(status, 200);
            let (status, _, _) = send(request("10.1.1.2:5000", Some("198.51.100.20"))).await;
            assert_eq!(status, 429, "the same client through the proxy shares its window");
            // Without a peer address (not served with connect info) nothing is limited.
            let no_peer = axum::http::Request::post("/endpoint")
                .body(Body::empty())
                .unwrap();
            assert_eq!(send(no_peer).await.0, 200);
        }

        #[tokio::test]
        async fn an_unreachable_redis_lets_requests_through_without_waiting_for_it() {
            let closed_port = {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                listener.local_addr().unwrap().port()
            };
            let limiter = RateLimiter::start(
                RateLimitSettings {
                    redis_url: format!("redis://127.0.0.1:{closed_port}"),
                    limit: 1,
                    ..Default::default()
                },
                CancellationToken::new(),
            )
            .unwrap();
            let unavailable = || {
                crate::metrics::metrics()
                    .rate_limit_unavailable
                    .with_label_values(&["not_connected"])
                    .get()
            };
            let before = unavailable();
            let client: IpAddr = "198.51.100.8".parse().unwrap();
            for _ in 0..5 {
                assert_eq!(limiter.check(client).await, Decision::Unavailable);
            }
            let after = unavailable();
            assert!(after >= before + 5, "each one is counted: {before} → {after}");
        }

        #[tokio::test]
        async fn a_redis_that_accepts_connections_but_never_answers_does_not_hold_requests() {
            // A server that accepts connections and never answers: the connection attempt hangs
            // in the background; requests do not wait for it. (A Redis that hangs after the
            // connection is made is the e2e fault test's SIGSTOP.)
            let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = silent.local_addr().unwrap();
            tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((socket, _)) = silent.accept().await {
                    held.push(socket);
                }
            });
            let limiter = RateLimiter::start(
                RateLimitSettings {
                    redis_url: format!("redis://{address}"),
                    timeout_ms: 100,
                    ..Default::default()
                },
                CancellationToken::new(),
            )
            .unwrap();
            let client: IpAddr = "198.51.100.9".parse().unwrap();
            let started = Instant::now();
            assert_eq!(limiter.check(client).await, Decision::Unavailable);
            // Bounded by the timeout (nothing waits on the connection attempt), with slack for
            // a busy machine.
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{:?}",
                started.elapsed()
            );
        }
    }
}
