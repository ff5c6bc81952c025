//! `carrierctl logs get|retry`: a delivered log read by the operator and by its source, a
//! manual retry, and an unknown log.

use std::time::Duration;

use carrier_testkit::client::{message, Sender};
use carrier_testkit::receiver::Receiver;
use carrier_testkit::stack::{Stack, StackOptions};

use crate::{carrierctl, operator, operator_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logs_get_shows_a_delivered_log_and_retry_sends_it_again() {
    let stack = Stack::start(StackOptions::default()).await;
    let api = &stack.api;
    let receiver = Receiver::start().await;
    let Sender {
        destination, token, ..
    } = api
        .sender("Logged Hospital", "production", &receiver.url("d"), "Results")
        .await;
    let (status, response) = api.send(&token, &message("Results", 0)).await;
    assert_eq!(status, 200);
    let log_id = response["Meta"]["Logs"][0]["ID"].as_str().unwrap().to_string();

    let log = operator_until(&stack, &["logs", "get", &log_id], "the log delivered", |log| {
        log["status"] == "delivered"
    })
    .await;
    assert_eq!(log["id"], log_id.as_str());
    assert_eq!(log["destination_id"], destination["id"]);
    assert_eq!(log["data_model"], "Results");
    assert_eq!(log["attempts"][0]["outcome"], "success", "{log}");

    // The source reads its own log; people get a field list and an attempts table.
    let run = carrierctl(
        &[("CARRIER_URL", &stack.ingress_url), ("CARRIER_TOKEN", &token)],
        &["logs", "get", &log_id],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("Status        delivered"), "{run:?}");
    assert!(
        run.stdout.contains("OUTCOME") && run.stdout.contains("success"),
        "{run:?}"
    );

    // A manual retry: a second attempt on the same log.
    let retried = operator(&stack, &["logs", "retry", &log_id]).await.json();
    assert_eq!(retried["log_id"], log_id.as_str(), "{retried}");
    assert_eq!(retried["attempting_now"], false, "{retried}");
    assert!(retried["retry_id"].is_string(), "{retried}");
    let again = carrier_testkit::eventually(Duration::from_secs(30), "the retried attempt", || {
        let received = receiver.received();
        async move { received.get(1).cloned() }
    })
    .await;
    assert_eq!(again.header("webhook-id"), log_id);
    assert_eq!(again.header("carrier-attempt"), "2");

    // An unknown log: exit 1 and Carrier's text.
    let unknown = uuid::Uuid::new_v4().to_string();
    let run = operator(&stack, &["logs", "get", &unknown]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("Log {unknown} not found (HTTP 404)")),
        "{run:?}"
    );
    assert!(run.stdout.is_empty(), "{run:?}");
    stack.stop().await;
}

/// Waits until `carrierctl logs search` finds three logs of `destination_id` with `status`.
async fn three_logs(stack: &Stack, destination_id: &str, status: &str) {
    operator_until(
        stack,
        &[
            "logs",
            "search",
            "--destination",
            destination_id,
            "--status",
            status,
        ],
        &format!("three {status} logs"),
        |page| page["logs"].as_array().is_some_and(|logs| logs.len() == 3),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logs_search_pages_through_matches_and_retry_requeues_failed_ones_oldest_first() {
    let stack = Stack::start(StackOptions::default()).await;
    let api = &stack.api;
    let receiver = Receiver::start().await;
    receiver.respond_with(500, "down");
    let Sender {
        destination, token, ..
    } = api
        .sender("Searched Clinic", "staging", &receiver.url("d"), "Results")
        .await;
    let destination_id = destination["id"].as_str().unwrap().to_string();
    let mut log_ids = Vec::new();
    for sequence in 0..3 {
        let (status, response) = api.send(&token, &message("Results", sequence)).await;
        assert_eq!(status, 200);
        log_ids.push(response["Meta"]["Logs"][0]["ID"].as_str().unwrap().to_string());
    }
    let ids = |page: &serde_json::Value| -> Vec<String> {
        page["logs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|log| log["id"].as_str().unwrap().to_string())
            .collect()
    };

    // A staging destination gives up after one retry: three failed logs.
    three_logs(&stack, &destination_id, "failed").await;
    let page = operator(
        &stack,
        &["logs", "search", "--destination", &destination_id, "--limit", "2"],
    )
    .await
    .json();
    assert_eq!(
        ids(&page),
        vec![log_ids[2].clone(), log_ids[1].clone()],
        "newest first: {page}"
    );
    assert!(page["next_cursor"].is_string(), "{page}");
    let all = operator(
        &stack,
        &[
            "logs",
            "search",
            "--destination",
            &destination_id,
            "--limit",
            "1",
            "--all",
        ],
    )
    .await
    .json();
    let mut newest_first = log_ids.clone();
    newest_first.reverse();
    assert_eq!(ids(&all), newest_first, "--all follows every page: {all}");
    assert!(all["next_cursor"].is_null(), "{all}");

    // A bulk retry without filters is refused before anything is sent.
    let run = operator(&stack, &["logs", "retry"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("at least one filter"), "{run:?}");

    // The receiver is back: retry every failed log of the last 10 minutes, two per request.
    receiver.respond_with(200, r#"{"Meta":{"Errors":[]}}"#);
    let failures = receiver.received().len();
    let retried = operator(
        &stack,
        &[
            "logs",
            "retry",
            "--status",
            "failed",
            "--since",
            "10m",
            "--destination",
            &destination_id,
            "--limit",
            "2",
        ],
    )
    .await
    .json();
    assert_eq!(retried["retried"], 3, "{retried}");
    assert_eq!(
        retried["log_ids"],
        serde_json::json!(log_ids),
        "oldest first: {retried}"
    );
    assert_eq!(retried["not_retried"], serde_json::json!([]), "{retried}");
    three_logs(&stack, &destination_id, "delivered").await;
    let again = crate::sequences(&receiver.received()[failures..]);
    assert_eq!(again, vec![0, 1, 2], "retried in the order received");
    stack.stop().await;
}
