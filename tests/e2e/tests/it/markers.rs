//! Operator markers (skip, retry now) act once, on the task they were given for: a later manual
//! retry of the same log is not skipped, and a retry-now that was used does not cut the stored
//! backoff short when another worker takes the destination over.

use std::time::Duration;

use carrier_delivery::retry::RetryPolicy;
use carrier_testkit::client::{message, Sender};
use carrier_testkit::receiver::Receiver;
use carrier_testkit::stack::{Stack, StackOptions};

use crate::faults::terminate;
use crate::manual_retry::{log_until, retry};
use crate::operator::{control, queue_until};

const FAILING: &str = r#"{"Meta":{"Errors":[{"Text":"interface engine down"}]}}"#;
const HEALTHY: &str = r#"{"Meta":{"Errors":[]}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_manual_retry_of_a_skipped_log_is_sent_and_delivered() {
    let stack = Stack::start(StackOptions::default()).await;
    let api = &stack.api;
    let receiver = Receiver::start().await;
    receiver.respond_with(500, FAILING);
    let Sender {
        destination, token, ..
    } = api
        .sender("Skipping Hospital", "production", &receiver.url("d"), "Results")
        .await;
    let destination_id = destination["id"].as_str().unwrap().to_string();
    let (status, response) = api.send(&token, &message("Results", 0)).await;
    assert_eq!(status, 200, "{response}");
    let log_id = response["Meta"]["Logs"][0]["ID"].as_str().unwrap().to_string();
    queue_until(api, &destination_id, "the message to hold the queue", |state| {
        state["head_log_id"] == log_id.as_str()
    })
    .await;

    let (status, body) = control(api, &destination_id, "skip").await;
    assert_eq!(status, 202, "{body}");
    log_until(api, &token, &log_id, "the skipped log to be cancelled", |log| {
        log["status"] == "cancelled"
    })
    .await;

    // The receiver is fixed; the operator sends the skipped message after all.
    receiver.respond_with(200, HEALTHY);
    let before = receiver.received_on("d").len();
    let (status, body) = retry(api, &token, &log_id).await;
    assert_eq!(status, 202, "{body}");
    log_until(api, &token, &log_id, "the retried log to be delivered", |log| {
        log["status"] == "delivered"
    })
    .await;
    let sent_again = receiver.received_on("d");
    assert_eq!(
        sent_again.len(),
        before + 1,
        "the manual retry reached the receiver once"
    );
    assert_eq!(sent_again[before].header("webhook-id"), log_id);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_used_retry_now_does_not_cut_the_stored_backoff_short_on_the_next_owner() {
    // One fixed backoff long enough to tell "at its scheduled time" from "at once".
    const BACKOFF: Duration = Duration::from_secs(20);
    let stack = Stack::start(StackOptions {
        delivery_in_process: false,
        retry: RetryPolicy {
            base_ms: BACKOFF.as_millis() as u64,
            cap_ms: BACKOFF.as_millis() as u64,
            jitter: 0.0,
            non_production_retry_ms: 200,
        },
        ..StackOptions::default()
    })
    .await;
    let api = &stack.api;
    let receiver = Receiver::start().await;
    receiver.respond_with(500, FAILING);
    let Sender {
        destination, token, ..
    } = api
        .sender("Backoff Hospital", "production", &receiver.url("d"), "Results")
        .await;
    let destination_id = destination["id"].as_str().unwrap().to_string();
    let mut first_worker = stack.spawn_delivery_process();
    let (status, response) = api.send(&token, &message("Results", 0)).await;
    assert_eq!(status, 200, "{response}");
    let log_id = response["Meta"]["Logs"][0]["ID"].as_str().unwrap().to_string();
    queue_until(api, &destination_id, "the head to fail once", |state| {
        state["head_log_id"] == log_id.as_str() && state["head_attempts"] == 1
    })
    .await;

    // Retry now: attempted at once (and failing again, its next attempt a full backoff away).
    // The log store is written by the notifier, apart from delivery's queue state: the log must
    // be there before it can be retried.
    carrier_testkit::eventually(Duration::from_secs(30), "the log in the log store", || {
        let (api, token, log_id) = (api.clone(), token.clone(), log_id.clone());
        async move { (api.log(&token, &log_id).await.0 == 200).then_some(()) }
    })
    .await;
    let (status, body) = retry(api, &token, &log_id).await;
    assert_eq!(status, 202, "{body}");
    queue_until(
        api,
        &destination_id,
        "the retried-now attempt to be recorded",
        |state| state["head_attempts"] == 2 && state["next_attempt_at"].is_string(),
    )
    .await;
    let second_attempt = receiver.received_on("d")[1].at;

    // Another worker takes the destination over (a rolling restart).
    terminate(&mut first_worker).await;
    let mut second_worker = stack.spawn_delivery_process();
    carrier_testkit::eventually(BACKOFF * 4, "the next owner's attempt of the held head", || {
        let count = receiver.received_on("d").len();
        async move { (count >= 3).then_some(()) }
    })
    .await;
    let third_attempt = receiver.received_on("d")[2].at;
    let waited = third_attempt - second_attempt;
    assert!(
        waited >= BACKOFF - Duration::from_secs(2),
        "the next owner kept the stored backoff ({waited:?} after the last attempt, backoff {BACKOFF:?}): \
         a retry-now that was used must not apply again"
    );
    let attempts: Vec<String> = receiver
        .received_on("d")
        .iter()
        .map(|request| request.header("carrier-attempt").to_string())
        .collect();
    assert_eq!(attempts, ["1", "2", "3"], "attempt numbering continues");
    terminate(&mut second_worker).await;
    stack.stop().await;
}
