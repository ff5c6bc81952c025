//! The sliding window in Redis: [`RateLimiter`] runs `sliding_window.lua` (trim, count and add in
//! one round trip, on the Redis server's clock) for each request and says what it decided; the
//! connection is made in the background by [`connect`].

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use carrier_config::ConfigError;
use ipnet::IpNet;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio_util::sync::CancellationToken;

use super::breaker::{SkipAfterFailure, WarnThrottle, SKIP_AFTER_FAILURE, WARN_INTERVAL};
use super::client_ip::window_key;
use super::settings::RateLimitSettings;

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
fn retry_after_secs(retry_ms: i64) -> u64 {
    let retry_ms = retry_ms.max(1) as u64;
    retry_ms.div_ceil(1000).max(1)
}

/// The shared limiter of one ingress process.
pub struct RateLimiter {
    pub(super) settings: RateLimitSettings,
    pub(super) trusted_proxies: Vec<IpNet>,
    timeout: Duration,
    script: redis::Script,
    /// Set once the first connection is made; the manager reconnects by itself afterwards.
    pub(super) connection: Arc<OnceLock<ConnectionManager>>,
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
            script: redis::Script::new(include_str!("sliding_window.lua")),
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

    /// Tests against the real Redis of the test environment (`CARRIER_TEST_REDIS`), each under
    /// a key prefix of its own.
    mod with_redis {
        use super::*;
        use crate::rate_limit::test_redis::{connected, settings};

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
