//! Manual retry of a log: a new attempt on the same log, behind the destination's queue, or at
//! once for the held head.

use std::time::{Duration, Instant};

use carrier_delivery::retry::RetryPolicy;
use carrier_testkit::client::{message, Api, Sender};
use carrier_testkit::receiver::Receiver;
use carrier_testkit::stack::{Stack, StackOptions};
use serde_json::Value;

use crate::sequences;

pub(crate) async fn log_until(
    api: &Api,
    token: &str,
    log_id: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    carrier_testkit::eventually(Duration::from_secs(30), what, || {
        let api = api.clone();
        let token = token.to_string();
        let log_id = log_id.to_string();
        let check = &check;
        async move {
            let (status, log) = api.log(&token, &log_id).await;
            (status == 200 && check(&log)).then_some(log)
        }
    })
    .await
}

pub(crate) async fn retry(api: &Api, token: &str, log_id: &str) -> (u16, Value) {
    api.call(
        reqwest::Method::POST,
        &format!("/v1/logs/{log_id}/retry"),
        Some(token),
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retrying_logs_sends_them_again_behind_the_queue_and_a_held_head_at_once() {
    // A long backoff, so "attempted now" is distinguishable from the next scheduled retry.
    let retry_policy = RetryPolicy {
        base_ms: 20_000,
        cap_ms: 20_000,
        jitter: 0.0,
        non_production_retry_ms: 200,
    };
    let stack = Stack::start(StackOptions {
        retry: retry_policy,
        ..StackOptions::default()
    })
    .await;
    let api = &stack.api;
    let receiver = Receiver::start().await;
    let Sender {
        destination, token, ..
    } = api
        .sender("Retry Clinic", "production", &receiver.url("d"), "Results")
        .await;

    // A delivered log, retried: a second attempt with the same webhook-id.
    let (_, response) = api.send(&token, &message("Results", 0)).await;
    let delivered = response["Meta"]["Logs"][0]["ID"].as_str().unwrap().to_string();
    log_until(api, &token, &delivered, "delivered", |log| {
        log["status"] == "delivered"
    })
    .await;
    let (status, body) = retry(api, &token, &delivered).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["attempting_now"], false);
    let log = log_until(api, &token, &delivered, "a second attempt", |log| {
        log["attempt_count"] == 2
    })
    .await;
    assert_eq!(log["status"], "delivered");
    let requests = receiver.received();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].header("webhook-id"), delivered);
    assert_eq!(requests[1].header("carrier-attempt"), "2");

    // Another organization cannot retry it.
    let other_organization = api.create_organization("Elsewhere").await;
    let other = api.create_source(&other_organization, "production").await;
    let other_token = api.token(&other).await;
    assert_eq!(retry(api, &other_token, &delivered).await.0, 404);

    // The destination fails: message 1 is the held head, 2 waits behind it.
    receiver.respond_with(500, "down");
    let mut held = Vec::new();
    for sequence in 1..=2 {
        let (_, response) = api.send(&token, &message("Results", sequence)).await;
        held.push(response["Meta"]["Logs"][0]["ID"].as_str().unwrap().to_string());
    }
    carrier_testkit::eventually(Duration::from_secs(30), "the head to be held", || {
        let api = api.clone();
        let destination_id = destination["id"].as_str().unwrap().to_string();
        let head = held[0].clone();
        async move {
            let (_, queue) = api
                .admin(
                    reqwest::Method::GET,
                    &format!("/v1/destinations/{destination_id}/queue"),
                    None,
                )
                .await;
            (queue["head_log_id"] == head.as_str()).then_some(())
        }
    })
    .await;
    // The log store learns of the head from the notifier, after the worker holds it: a retry
    // before its log is written is answered 404 (seen once in CI).
    log_until(
        api,
        &token,
        &held[0],
        "the head's log with its first attempt",
        |log| log["attempt_count"].as_u64() >= Some(1),
    )
    .await;
    // Retrying an older log queues it behind 1 and 2.
    let (status, _) = retry(api, &token, &delivered).await;
    assert_eq!(status, 202);
    // Retrying the held head attempts it now, not after the 20 s backoff.
    let attempts_before = receiver.received().len();
    receiver.respond_with(200, r#"{"Meta":{"Errors":[]}}"#);
    let asked = Instant::now();
    let (status, body) = retry(api, &token, &held[0]).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["attempting_now"], true);
    carrier_testkit::eventually(Duration::from_secs(10), "the head attempted now", || {
        let count = receiver.received().len();
        async move { (count > attempts_before).then_some(()) }
    })
    .await;
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "attempted well before the scheduled retry"
    );
    carrier_testkit::eventually(
        Duration::from_secs(30),
        "the queue and the retry delivered",
        || {
            let count = sequences(&receiver.received(), None).len();
            async move { (count >= attempts_before + 3).then_some(()) }
        },
    )
    .await;
    let after: Vec<u64> = sequences(&receiver.received(), None)
        .into_iter()
        .skip(attempts_before)
        .collect();
    assert_eq!(
        after,
        vec![1, 2, 0],
        "the retried older log comes behind the queued messages"
    );
    stack.stop().await;
}
