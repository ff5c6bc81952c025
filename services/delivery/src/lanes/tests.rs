//! Unit tests of the lanes' pure parts and waits, on tokio's paused clock.

use std::time::Duration;

use carrier_config::Environment;
use carrier_proto::records_v1::{DeliveryTask, LogStatus};
use tokio_util::sync::CancellationToken;

use super::hold::{sleep_unless_released, wait_or_wakeup};
use super::partition::{finished_key, RecentLogs, REMEMBERED_DESTINATIONS, REMEMBERED_LOGS_PER_DESTINATION};
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
}

#[test]
fn each_destination_remembers_its_own_finished_logs_however_busy_the_others_are() {
    let mut recent = RecentLogs::default();
    recent.insert("quiet", "quiet-log".into());
    // A busy destination of the same partition finishes far more logs than one window.
    for index in 0..REMEMBERED_LOGS_PER_DESTINATION * 10 {
        recent.insert("busy", format!("busy-{index}"));
    }
    assert!(
        recent.contains("quiet", "quiet-log"),
        "a busy neighbour does not push a quiet destination's logs out"
    );
    assert!(!recent.contains("busy", "busy-0"), "each window is bounded");
    assert!(recent.contains(
        "busy",
        &format!("busy-{}", REMEMBERED_LOGS_PER_DESTINATION * 10 - 1)
    ));
    assert!(
        !recent.contains("busy", "quiet-log"),
        "windows are per destination"
    );

    // Past the destination bound, the least recently active are forgotten first.
    for index in 0..REMEMBERED_DESTINATIONS {
        recent.insert(&format!("d{index}"), "log".into());
    }
    recent.insert("busy", "busy-again".into());
    assert!(
        !recent.contains("quiet", "quiet-log"),
        "the least active destination went first"
    );
    assert!(recent.contains("busy", "busy-again"));
    assert!(recent.contains(&format!("d{}", REMEMBERED_DESTINATIONS - 1), "log"));
}

#[test]
fn operator_markers_act_on_the_task_they_name_and_a_used_retry_now_does_not_act_again() {
    use carrier_proto::config_v1::Destination;

    use super::deliver::{retry_requested, skip_requested};

    let original = DeliveryTask {
        log_id: "log".into(),
        ..Default::default()
    };
    let manual_retry = DeliveryTask {
        log_id: "log".into(),
        retry_id: "r1".into(),
        ..Default::default()
    };
    let skipped = Destination {
        skip_log_id: "log".into(),
        ..Default::default()
    };
    assert!(skip_requested(&skipped, &original));
    assert!(
        !skip_requested(&skipped, &manual_retry),
        "a manual retry of a skipped log is sent"
    );

    let retried_now = Destination {
        retry_log_id: "log".into(),
        retry_now_retry_id: "r1".into(),
        retry_requested_at_ms: 1_000,
        ..Default::default()
    };
    assert!(retry_requested(&retried_now, &manual_retry, 999));
    assert!(
        !retry_requested(&retried_now, &manual_retry, 1_001),
        "used by the attempt that started after it"
    );
    assert!(
        !retry_requested(&retried_now, &original, 0),
        "another task of the log"
    );
}

/// The parking race: a task handed to the parker while its lane is parked must keep the lane
/// parked until the task is in the store, or the lane would go live, read past it, and the task
/// would sit in the store unread (a loss until the next assignment, then a reorder).
#[test]
fn a_lane_cannot_leave_parked_mode_while_a_task_of_it_is_on_its_way_to_the_store() {
    use std::sync::Arc;

    use carrier_kafka::consumer::OffsetTracker;

    use super::lane::Lane;
    use super::parker::leave_parked_mode;
    use super::partition::{Limits, Origin, PartitionState, Queued};

    let partition = PartitionState::new(
        Arc::new(OffsetTracker::new(0)),
        Limits {
            queued_per_destination: 10,
            partition_pressure: 100,
            unacknowledged_events: 10,
        },
    );
    partition.book().lanes.insert("d".into(), Lane::parked());
    let writes = partition.book().lanes["d"].park_writes;
    // `process` hands a new task of the parked destination to the parker (under the lanes lock).
    partition.book().park(Queued {
        position: crate::parking::Position {
            generation: 0,
            offset: 7,
        },
        task: DeliveryTask {
            destination_id: "d".into(),
            ..Default::default()
        },
        origin: Origin::Live,
        trace: Default::default(),
    });
    assert!(
        !leave_parked_mode(&partition, "d", writes),
        "the store looked empty, but a task is on its way into it"
    );
    // The parker takes the batch: the task is still counted until it is written.
    let batch = std::mem::take(&mut partition.book().to_park);
    assert_eq!(batch.len(), 1);
    assert!(!leave_parked_mode(&partition, "d", writes));
    // Written: the lane must read the store again (the write count moved) before going live.
    {
        let mut book = partition.book();
        let lane = book.lanes.get_mut("d").unwrap();
        lane.parking -= 1;
        lane.park_writes += 1;
    }
    assert!(!leave_parked_mode(&partition, "d", writes), "read again first");
    assert!(leave_parked_mode(&partition, "d", writes + 1));
    assert!(!partition.book().lanes["d"].parked);
}

#[test]
fn rows_of_an_earlier_stream_generation_come_first_and_this_ones_wait_for_the_stream() {
    use super::lane::in_final_order;
    use crate::parking::Position;
    let at = |generation, offset| Position { generation, offset };
    // The topic was created again: this owner reads generation 1 from offset 0.
    assert!(
        in_final_order(at(0, 500), 1, None),
        "the old stream is over: its rows go first"
    );
    assert!(in_final_order(at(0, 500), 1, Some(3)));
    assert!(
        !in_final_order(at(1, 2), 1, None),
        "nothing of this stream read yet"
    );
    assert!(in_final_order(at(1, 2), 1, Some(3)));
    assert!(
        !in_final_order(at(1, 3), 1, Some(3)),
        "lower offsets may still join it"
    );
    assert!(
        !in_final_order(at(2, 0), 1, Some(3)),
        "a later generation than this owner's"
    );
    assert!(
        at(0, 500) < at(1, 0),
        "a destination's rows are ordered by generation first"
    );
}
