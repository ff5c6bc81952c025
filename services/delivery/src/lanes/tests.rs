//! Unit tests of the lanes' pure parts and waits, on tokio's paused clock.

use std::time::Duration;

use carrier_config::Environment;
use carrier_proto::records_v1::{DeliveryTask, LogStatus};
use tokio_util::sync::CancellationToken;

use super::hold::{sleep_unless_released, wait_or_wakeup};
use super::partition::{finished_key, RecentLogs, REMEMBERED_LOGS};
use crate::retry::{Decision, RetryPolicy};

#[tokio::test(start_paused = true)]
async fn backoff_sleeps_run_on_the_tokio_clock_and_end_when_the_partition_is_released() {
    let released = CancellationToken::new();
    let started = tokio::time::Instant::now();
    assert!(sleep_unless_released(&released, Duration::from_secs(120)).await);
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(120),
        "the full backoff, on the paused clock"
    );

    let started = tokio::time::Instant::now();
    let releaser = released.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        releaser.cancel();
    });
    assert!(
        !sleep_unless_released(&released, Duration::from_secs(120)).await,
        "released: no retry"
    );
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(5),
        "a revoke ends the wait at once"
    );
}

/// When a head that keeps failing is attempted, on the paused clock: the retry rules decide
/// the delay and the lane's own wait sleeps it (jitter off, so the times are exact).
async fn attempt_times(
    policy: &RetryPolicy,
    environment: Environment,
    test: bool,
    failures: u32,
    wakeup: &tokio::sync::Notify,
) -> (Vec<Duration>, Option<LogStatus>) {
    let released = CancellationToken::new();
    let started = tokio::time::Instant::now();
    let mut times = Vec::new();
    for attempt in 1.. {
        times.push(started.elapsed());
        let success = attempt > failures;
        match policy.decide(environment, test, attempt, success, 0.5) {
            Decision::Final(status) => return (times, Some(status)),
            Decision::RetryAfter(delay) => {
                assert!(wait_or_wakeup(&released, wakeup, delay).await);
            }
        }
    }
    unreachable!()
}

#[tokio::test(start_paused = true)]
async fn a_failing_head_is_retried_on_the_backoff_schedule_by_environment() {
    let policy = RetryPolicy {
        jitter: 0.0,
        ..RetryPolicy::default()
    };
    let idle = tokio::sync::Notify::new();
    let secs = |list: &[u64]| list.iter().map(|s| Duration::from_secs(*s)).collect::<Vec<_>>();

    // Production: 2 s, doubling, settling at the 120 s cap; delivered on the 10th attempt.
    let (times, status) = attempt_times(&policy, Environment::Production, false, 9, &idle).await;
    assert_eq!(
        times,
        secs(&[0, 2, 6, 14, 30, 62, 126, 246, 366, 486]),
        "2, 4, 8, 16, 32, 64 s, then 120 s apart"
    );
    assert_eq!(status, Some(LogStatus::Delivered));

    // Staging and development: one retry after 5 s, then failed (the queue moves on).
    for environment in [Environment::Staging, Environment::Development] {
        let (times, status) = attempt_times(&policy, environment, false, 5, &idle).await;
        assert_eq!(times, secs(&[0, 5]), "{environment:?}");
        assert_eq!(status, Some(LogStatus::Failed));
    }

    // Test messages: one attempt, in every environment.
    for environment in [Environment::Production, Environment::Staging] {
        let (times, status) = attempt_times(&policy, environment, true, 5, &idle).await;
        assert_eq!(times, secs(&[0]), "{environment:?}");
        assert_eq!(status, Some(LogStatus::Failed));
    }

    // An operator's "retry now" (the control service wakes the lane) ends the wait at once.
    let wakeup = std::sync::Arc::new(tokio::sync::Notify::new());
    let operator = wakeup.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        operator.notify_one();
    });
    let started = tokio::time::Instant::now();
    assert!(wait_or_wakeup(&CancellationToken::new(), &wakeup, Duration::from_secs(120)).await);
    assert_eq!(started.elapsed(), Duration::from_secs(1));
}

#[test]
fn a_manual_retry_is_a_task_of_its_own_for_duplicate_detection() {
    let task = DeliveryTask {
        log_id: "log".into(),
        ..Default::default()
    };
    let retry = DeliveryTask {
        log_id: "log".into(),
        retry_id: "r1".into(),
        ..Default::default()
    };
    assert_eq!(finished_key(&task), "log");
    assert_ne!(finished_key(&task), finished_key(&retry));
    let mut recent = RecentLogs::default();
    for index in 0..=REMEMBERED_LOGS {
        recent.insert(format!("log-{index}"));
    }
    assert!(
        !recent.contains("log-0"),
        "the oldest is forgotten past the bound"
    );
    assert!(recent.contains(&format!("log-{REMEMBERED_LOGS}")));
}
