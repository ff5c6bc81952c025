//! What the unit tests against the real Redis of the test environment share: its URL
//! (`CARRIER_TEST_REDIS`, default `redis://127.0.0.1:6379`), settings under a key prefix of each
//! test's own, and a limiter that has made its connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::settings::RateLimitSettings;
use super::window::RateLimiter;

fn test_redis() -> String {
    std::env::var("CARRIER_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub(super) fn settings(limit: u64, window_secs: u64) -> RateLimitSettings {
    RateLimitSettings {
        redis_url: test_redis(),
        limit,
        window_secs,
        key_prefix: format!("test-{}:", uuid::Uuid::new_v4().simple()),
        ..Default::default()
    }
}

pub(super) async fn connected(settings: RateLimitSettings) -> Arc<RateLimiter> {
    let limiter = RateLimiter::start(settings, CancellationToken::new()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while limiter.connection.get().is_none() {
        assert!(Instant::now() < deadline, "Redis at {} answers", test_redis());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    limiter
}
