//! What happens when a destination fails, by environment and test flag, and what it must not
//! do to other destinations. Receivers fail on command; retry delays are shortened by config.

use std::time::Duration;

use carrier_testkit::client::{message, Api, SourceCredentials};
use carrier_testkit::receiver::Receiver;
use carrier_testkit::stack::{Stack, StackOptions};
use serde_json::{json, Value};

use crate::sequences;

struct Setup {
    source: SourceCredentials,
    token: String,
    organization: String,
}

async fn setup(api: &Api, environment: &str) -> Setup {
    let organization = api.create_organization("Retry Hospital").await;
    let source = api.create_source(&organization, environment).await;
    let token = api.token(&source).await;
    Setup {
        source,
        token,
        organization,
    }
}

async fn destination(api: &Api, setup: &Setup, url: &str, environment: &str, data_model: &str) -> String {
    let destination = api
        .create_destination(&setup.organization, url, environment)
        .await;
    let id = destination["id"].as_str().unwrap().to_string();
    api.subscribe(&setup.source.id, &id, data_model).await;
    id
}

async fn send_all(api: &Api, token: &str, data_model: &str, count: usize) -> Vec<String> {
    let mut log_ids = Vec::new();
    for sequence in 0..count {
        let (status, response) = api.send(token, &message(data_model, sequence)).await;
        assert_eq!(status, 200, "{response}");
        log_ids.push(response["Meta"]["Logs"][0]["ID"].as_str().unwrap().to_string());
    }
    log_ids
}

async fn wait_for_requests(receiver: &Receiver, count: usize, what: &str) {
    carrier_testkit::eventually(Duration::from_secs(60), what, || {
        let received = receiver.received().len();
        async move { (received >= count).then_some(()) }
    })
    .await;
}

async fn final_log(api: &Api, token: &str, log_id: &str) -> Value {
    carrier_testkit::eventually(Duration::from_secs(60), "a final log status", || {
        let api = api.clone();
        let token = token.to_string();
        let log_id = log_id.to_string();
        async move {
            let (status, log) = api.log(&token, &log_id).await;
            (status == 200 && log["status"] != "queued").then_some(log)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_production_destination_is_retried_until_it_succeeds_and_order_holds() {
    let stack = Stack::start(StackOptions::default()).await;
    let api = &stack.api;
    let receiver = Receiver::start().await;
    receiver.respond_with(500, r#"{"Meta":{"Errors":[{"Text":"down for maintenance"}]}}"#);
    let setup = setup(api, "production").await;
    destination(api, &setup, &receiver.url("prod"), "production", "Results").await;
    let log_ids = send_all(api, &setup.token, "Results", 5).await;

    wait_for_requests(&receiver, 3, "three attempts of the first message").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let while_failing = sequences(&receiver.received(), None);
    assert!(
        while_failing.iter().all(|s| *s == 0),
        "later messages wait while the head fails: {while_failing:?}"
    );
    receiver.respond_with(200, r#"{"Meta":{"Errors":[]}}"#);

    carrier_testkit::eventually(Duration::from_secs(60), "every message delivered", || {
        let delivered = sequences(&receiver.received(), None);
        async move { (delivered.iter().filter(|s| **s == 4).count() == 1).then_some(()) }
    })
    .await;
    let arrivals = sequences(&receiver.received(), None);
    let failures = arrivals.iter().take_while(|s| **s == 0).count();
    assert!(
        failures >= 4,
        "at least three failures and the success of message 0: {arrivals:?}"
    );
    assert_eq!(
        arrivals[failures..],
        [1, 2, 3, 4],
        "the queue resumes in the original order"
    );
    let attempts: Vec<String> = receiver
        .received()
        .iter()
        .take(failures)
        .map(|r| r.header("carrier-attempt").to_string())
        .collect();
    let expected: Vec<String> = (1..=failures).map(|n| n.to_string()).collect();
    assert_eq!(attempts, expected, "carrier-attempt counts the tries");

    let head = final_log(api, &setup.token, &log_ids[0]).await;
    assert_eq!(head["status"], "delivered");
    let recorded = head["attempts"].as_array().unwrap();
    assert_eq!(recorded.len(), failures, "every attempt is in the log: {head}");
    assert_eq!(recorded[0]["status_code"], 500);
    assert_eq!(recorded[0]["outcome"], "failure");
    assert!(recorded[0]["response_excerpt"]
        .as_str()
        .unwrap()
        .contains("down for maintenance"));
    assert_eq!(recorded[failures - 1]["outcome"], "success");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn staging_retries_once_then_fails_and_test_messages_never_retry() {
    let stack = Stack::start(StackOptions::default()).await;
    let api = &stack.api;
    let receiver = Receiver::start().await;
    receiver.respond_with(503, "unavailable");
    let setup = setup(api, "staging").await;
    destination(api, &setup, &receiver.url("staging"), "staging", "Results").await;
    let log_ids = send_all(api, &setup.token, "Results", 3).await;
    let mut test_message = message("Results", 3);
    test_message["Meta"]["Test"] = json!(true);
    let (status, response) = api.send(&setup.token, &test_message).await;
    assert_eq!(status, 200, "{response}");
    let test_log = response["Meta"]["Logs"][0]["ID"].as_str().unwrap().to_string();

    wait_for_requests(
        &receiver,
        7,
        "two attempts of each message and one of the test message",
    )
    .await;
    for log_id in &log_ids {
        let log = final_log(api, &setup.token, log_id).await;
        assert_eq!(log["status"], "failed", "{log}");
        assert_eq!(
            log["attempts"].as_array().unwrap().len(),
            2,
            "one retry in staging: {log}"
        );
    }
    let log = final_log(api, &setup.token, &test_log).await;
    assert_eq!(log["status"], "failed");
    assert_eq!(log["test"], true);
    assert_eq!(
        log["attempts"].as_array().unwrap().len(),
        1,
        "a test message is never retried: {log}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        sequences(&receiver.received(), None),
        vec![0, 0, 1, 1, 2, 2, 3],
        "the queue never pauses"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_2xx_with_errors_in_the_body_is_a_failure_and_a_failing_test_message_does_not_hold_production() {
    let stack = Stack::start(StackOptions::default()).await;
    let api = &stack.api;
    let receiver = Receiver::start().await;
    receiver.respond_with(200, r#"{"Meta":{"Errors":[{"Text":"unknown patient"}]}}"#);
    let setup = setup(api, "production").await;
    destination(api, &setup, &receiver.url("prod"), "production", "Results").await;
    let mut test_message = message("Results", 0);
    test_message["Meta"]["Test"] = json!(true);
    let (_, response) = api.send(&setup.token, &test_message).await;
    let test_log = response["Meta"]["Logs"][0]["ID"].as_str().unwrap().to_string();
    let log = final_log(api, &setup.token, &test_log).await;
    assert_eq!(log["status"], "failed");
    assert!(
        log["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("unknown patient"),
        "{log}"
    );

    receiver.respond_with(200, r#"{"Meta":{"Errors":[]}}"#);
    let log_ids = send_all(api, &setup.token, "Results", 1).await;
    assert_eq!(
        final_log(api, &setup.token, &log_ids[0]).await["status"],
        "delivered"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_destination_does_not_delay_another_on_the_same_partition() {
    // One partition: both destinations' tasks share it.
    let stack = Stack::start(StackOptions {
        delivery_partitions: 1,
        ..StackOptions::default()
    })
    .await;
    let api = &stack.api;
    let failing = Receiver::start().await;
    failing.respond_with(500, "down");
    let healthy = Receiver::start().await;
    let setup = setup(api, "production").await;
    destination(api, &setup, &failing.url("a"), "production", "Results").await;
    destination(api, &setup, &healthy.url("b"), "production", "Results").await;
    send_all(api, &setup.token, "Results", 50).await;

    wait_for_requests(&healthy, 50, "every message at the healthy destination").await;
    assert_eq!(
        sequences(&healthy.received(), None),
        (0..50).collect::<Vec<u64>>()
    );
    assert!(
        sequences(&failing.received(), None).iter().all(|s| *s == 0),
        "the failing one holds its head"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fixing_a_wrong_url_unblocks_the_queue_without_losing_its_place() {
    let stack = Stack::start(StackOptions::default()).await;
    let api = &stack.api;
    let receiver = Receiver::start().await;
    let setup = setup(api, "production").await;
    // Nothing listens on port 9 of loopback (discard): connections are refused.
    let destination_id = destination(api, &setup, "http://127.0.0.1:9/wrong", "production", "Results").await;
    let log_ids = send_all(api, &setup.token, "Results", 3).await;
    carrier_testkit::eventually(Duration::from_secs(30), "failed attempts in the log", || {
        let api = api.clone();
        let token = setup.token.clone();
        let log_id = log_ids[0].clone();
        async move {
            let (_, log) = api.log(&token, &log_id).await;
            (log["attempts"].as_array().map(Vec::len).unwrap_or(0) >= 2).then_some(())
        }
    })
    .await;
    let (_, log) = api.log(&setup.token, &log_ids[0]).await;
    assert!(
        log["attempts"][0]["error"].as_str().unwrap().contains("connect"),
        "{log}"
    );

    let (status, body) = api
        .admin(
            reqwest::Method::PATCH,
            &format!("/v1/destinations/{destination_id}"),
            Some(&json!({ "url": receiver.url("fixed") })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    wait_for_requests(&receiver, 3, "the queue to drain to the fixed URL").await;
    assert_eq!(sequences(&receiver.received(), None), vec![0, 1, 2]);
    assert_eq!(
        final_log(api, &setup.token, &log_ids[0]).await["status"],
        "delivered"
    );
    stack.stop().await;
}
