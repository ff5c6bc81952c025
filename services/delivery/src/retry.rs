//! What happens after an attempt, by the destination's environment and the message's test flag.
//!
//! - success: the log is `delivered`.
//! - test message, any environment: failures are ignored: the log is `failed`, no retry.
//! - staging / development: one retry after `non_production_retry_ms`; then `failed`, and the
//!   destination's next message proceeds.
//! - production: retried forever with exponential backoff (`base_ms` doubling up to
//!   `cap_ms`, ± `jitter`), while later messages of that destination wait.

use std::time::Duration;

use carrier_config::Environment;
use carrier_proto::records_v1::LogStatus;
use serde::{Deserialize, Serialize};

/// Retry settings: the `[retry]` section of delivery (`CARRIER_RETRY__BASE_MS`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryPolicy {
    /// Delay before the first production retry.
    pub base_ms: u64,
    /// The fixed delay production retries grow to.
    pub cap_ms: u64,
    /// Random spread of each delay, as a fraction of it (0.2 = ±20 %).
    pub jitter: f64,
    /// Delay before the single retry of a staging or development destination.
    pub non_production_retry_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base_ms: 2_000,
            cap_ms: 120_000,
            jitter: 0.2,
            non_production_retry_ms: 5_000,
        }
    }
}

/// What to do with a log after an attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// The log is final with this status; the destination's next message may go.
    Final(LogStatus),
    /// Attempt the same message again after this delay.
    RetryAfter(Duration),
}

impl RetryPolicy {
    pub fn validate(&self) -> Result<(), String> {
        if self.base_ms == 0 || self.cap_ms < self.base_ms {
            return Err("base_ms must be positive and at most cap_ms".into());
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return Err("jitter must be in [0, 1)".into());
        }
        Ok(())
    }

    /// The production delay after failed attempt number `attempt` (1-based). `unit` is a random
    /// number in [0, 1) that places the delay inside its jitter band.
    pub fn production_delay(&self, attempt: u32, unit: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(32);
        let nominal = self.base_ms.saturating_mul(1u64 << exponent).min(self.cap_ms) as f64;
        let spread = nominal * self.jitter;
        let delay = nominal - spread + 2.0 * spread * unit.clamp(0.0, 1.0);
        Duration::from_millis(delay.round() as u64)
    }

    /// The decision after attempt number `attempt` (1-based) of a log.
    pub fn decide(
        &self,
        environment: Environment,
        test: bool,
        attempt: u32,
        success: bool,
        unit: f64,
    ) -> Decision {
        if success {
            return Decision::Final(LogStatus::Delivered);
        }
        if test {
            return Decision::Final(LogStatus::Failed);
        }
        match environment {
            Environment::Production => Decision::RetryAfter(self.production_delay(attempt, unit)),
            Environment::Staging | Environment::Development if attempt < 2 => {
                Decision::RetryAfter(Duration::from_millis(self.non_production_retry_ms))
            }
            Environment::Staging | Environment::Development => Decision::Final(LogStatus::Failed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_backoff_starts_in_seconds_and_settles_at_the_cap() {
        let policy = RetryPolicy::default();
        let midpoint: Vec<u64> = (1..=9)
            .map(|n| policy.production_delay(n, 0.5).as_millis() as u64)
            .collect();
        assert_eq!(
            midpoint,
            vec![2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 120_000, 120_000, 120_000]
        );
        assert_eq!(
            policy.production_delay(1_000, 0.5),
            Duration::from_secs(120),
            "no overflow far out"
        );
        assert_eq!(policy.production_delay(1, 0.0), Duration::from_millis(1_600));
        assert_eq!(policy.production_delay(1, 1.0), Duration::from_millis(2_400));
        assert!(policy.production_delay(20, 1.0) <= Duration::from_secs(144));
    }

    #[test]
    fn environments_and_test_messages_follow_their_rules() {
        let policy = RetryPolicy::default();
        let prod = Environment::Production;
        assert_eq!(
            policy.decide(prod, false, 1, true, 0.5),
            Decision::Final(LogStatus::Delivered)
        );
        assert_eq!(
            policy.decide(prod, false, 50, false, 0.5),
            Decision::RetryAfter(Duration::from_secs(120))
        );
        assert_eq!(
            policy.decide(prod, true, 1, false, 0.5),
            Decision::Final(LogStatus::Failed)
        );
        for environment in [Environment::Staging, Environment::Development] {
            assert_eq!(
                policy.decide(environment, false, 1, false, 0.5),
                Decision::RetryAfter(Duration::from_secs(5))
            );
            assert_eq!(
                policy.decide(environment, false, 2, false, 0.5),
                Decision::Final(LogStatus::Failed)
            );
            assert_eq!(
                policy.decide(environment, true, 1, false, 0.5),
                Decision::Final(LogStatus::Failed)
            );
            assert_eq!(
                policy.decide(environment, false, 2, true, 0.5),
                Decision::Final(LogStatus::Delivered)
            );
        }
    }

    #[test]
    fn bad_settings_are_refused() {
        let policy = RetryPolicy {
            cap_ms: 10,
            ..RetryPolicy::default()
        };
        assert!(policy.validate().is_err());
        assert!(RetryPolicy {
            jitter: 1.5,
            ..RetryPolicy::default()
        }
        .validate()
        .is_err());
        assert!(RetryPolicy::default().validate().is_ok());
    }
}
