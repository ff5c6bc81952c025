//! Operator control of a destination's queue through the REST API: queue state, skip, pause,
//! resume.

use std::time::Duration;

use carrier_testkit::client::{message, Api, Sender};
use carrier_testkit::receiver::Receiver;
use carrier_testkit::stack::{Stack, StackOptions};
use serde_json::Value;

use crate::sequences;

/// The queue's state. A 502/503 (no delivery worker reachable yet, e.g. while one starts or
/// partitions move) is retried for a while; anything else must be a 200.
pub(crate) async fn queue(api: &Api, destination_id: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = api
            .admin(
                reqwest::Method::GET,
                &format!("/v1/destinations/{destination_id}/queue"),
                None,
            )
            .await;
        if (status == 502 || status == 503) && std::time::Instant::now() < deadline {
            println!("queue state not available yet ({status}): {body}");
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        assert_eq!(status, 200, "{body}");
        return body;
    }
}

/// `POST /v1/destinations/{id}/{action}` (pause, resume, skip) with the operator token.
pub(crate) async fn control(api: &Api, destination_id: &str, action: &str) -> (u16, Value) {
    api.admin(
        reqwest::Method::POST,
        &format!("/v1/destinations/{destination_id}/{action}"),
        None,
    )
    .await
}

pub(crate) async fn queue_until(
    api: &Api,
    destination_id: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    carrier_testkit::eventually(Duration::from_secs(30), what, || {
        let api = api.clone();
        let destination_id = destination_id.to_string();
        let check = &check;
        async move {
            let state = queue(&api, &destination_id).await;
            check(&state).then_some(state)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_sees_a_held_queue_skips_its_head_pauses_and_resumes_it() {
    let stack = Stack::start(StackOptions::default()).await;
    let api = &stack.api;
    let receiver = Receiver::start().await;
    receiver.respond_with(500, r#"{"Meta":{"Errors":[{"Text":"interface engine down"}]}}"#);
    let Sender {
        destination, token, ..
    } = api
        .sender("Operated Hospital", "production", &receiver.url("d"), "Results")
        .await;
    let destination_id = destination["id"].as_str().unwrap().to_string();

    let state = queue(api, &destination_id).await;
    assert_eq!(state["paused"], false, "{state}");
    let (status, body) = control(api, &destination_id, "skip").await;
    assert_eq!(status, 409, "nothing to skip on a flowing queue: {body}");

    let mut log_ids = Vec::new();
    for sequence in 0..5 {
        let (status, response) = api.send(&token, &message("Results", sequence)).await;
        assert_eq!(status, 200);
        log_ids.push(response["Meta"]["Logs"][0]["ID"].as_str().unwrap().to_string());
    }
    let state = queue_until(
        api,
        &destination_id,
        "a failing, held queue with its backlog",
        |state| state["paused_reason"] == "failing" && state["depth"] == 5,
    )
    .await;
    assert_eq!(state["paused"], true);
    assert_eq!(state["head_log_id"], log_ids[0].as_str());
    assert!(state["head_attempts"].as_i64().unwrap() >= 1);
    assert!(state["last_error"].as_str().unwrap().contains("500"), "{state}");
    assert!(
        state["paused_since"].is_string() && state["next_attempt_at"].is_string(),
        "{state}"
    );
    assert!(
        state["owner_worker_id"].is_string(),
        "the worker owning the lane answered: {state}"
    );
    // Ingress found that worker by computing the destination's partition; the broker put the
    // destination's tasks in that same partition (the log records where its task is).
    let recorded = carrier_testkit::eventually(Duration::from_secs(30), "the head's task position", || {
        let stack = &stack;
        let sql = format!(
            // One row even before the notifier wrote the log.
            "SELECT COALESCE((SELECT task_partition FROM logs WHERE id = '{}'), -1)::bigint",
            log_ids[0]
        );
        async move { Some(stack.count(&sql).await).filter(|partition| *partition >= 0) }
    })
    .await;
    assert_eq!(state["partition"].as_i64(), Some(recorded), "{state}");

    // A skip that names another log than the head is refused: nothing is cancelled.
    let (status, body) = control(api, &destination_id, &format!("skip?log_id={}", log_ids[1])).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["Meta"]["Errors"][0]["Text"]
            .as_str()
            .is_some_and(|text| text.contains(&format!("the head is {}", log_ids[0]))),
        "{body}"
    );
    // Skip the failing head (named, as the console does): it is cancelled and the next message
    // becomes the head.
    let (status, body) = control(api, &destination_id, &format!("skip?log_id={}", log_ids[0])).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["skipped_log_id"], log_ids[0].as_str());
    queue_until(api, &destination_id, "the next message to be the head", |state| {
        state["head_log_id"] == log_ids[1].as_str()
    })
    .await;
    carrier_testkit::eventually(Duration::from_secs(30), "the skipped log to be cancelled", || {
        let api = api.clone();
        let token = token.clone();
        let log_id = log_ids[0].clone();
        async move {
            let (_, log) = api.log(&token, &log_id).await;
            (log["status"] == "cancelled").then_some(())
        }
    })
    .await;

    // Pause: no attempts while paused, even once the receiver is healthy again.
    let (status, state) = control(api, &destination_id, "pause").await;
    assert_eq!(status, 200);
    assert_eq!(state["paused_reason"], "operator", "{state}");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    receiver.respond_with(200, r#"{"Meta":{"Errors":[]}}"#);
    let before = receiver.received().len();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        receiver.received().len(),
        before,
        "an operator pause stops attempts"
    );

    let (status, _) = control(api, &destination_id, "resume").await;
    assert_eq!(status, 200);
    carrier_testkit::eventually(Duration::from_secs(30), "the rest delivered after resume", || {
        let last = sequences(&receiver.received(), None).last().copied();
        async move { (last == Some(4)).then_some(()) }
    })
    .await;
    let successes: Vec<u64> = sequences(&receiver.received(), None)
        .into_iter()
        .skip(before)
        .collect();
    assert_eq!(
        successes,
        vec![1, 2, 3, 4],
        "resumed in order, the skipped one never delivered"
    );
    let state = queue_until(api, &destination_id, "a flowing queue", |state| {
        state["paused"] == false && state["depth"] == 0
    })
    .await;
    assert!(state["head_log_id"].is_null(), "{state}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_control_reaches_the_worker_that_owns_the_destination() {
    let mut stack = Stack::start(StackOptions::default()).await;
    stack.start_delivery().await;
    carrier_testkit::eventually(
        Duration::from_secs(60),
        "two workers sharing the partitions",
        || {
            let stack = &stack;
            async move {
                let sql = "SELECT count(*) FROM delivery_workers WHERE cardinality(partitions) > 0";
                (stack.count(sql).await == 2).then_some(())
            }
        },
    )
    .await;
    let api = &stack.api;
    let receiver = Receiver::start().await;
    receiver.respond_with(503, "down");
    let organization = api.create_organization("Two Workers Hospital").await;
    let source = api.create_source(&organization, "production").await;
    let mut destinations = Vec::new();
    for name in ["a", "b", "c", "d"] {
        let destination = api
            .subscribed_destination(
                &organization,
                &source,
                &receiver.url(name),
                "production",
                "Results",
            )
            .await;
        destinations.push(destination["id"].as_str().unwrap().to_string());
    }
    let token = api.token(&source).await;
    let (status, _) = api.send(&token, &message("Results", 0)).await;
    assert_eq!(status, 200);

    let mut owners = std::collections::HashSet::new();
    for destination_id in &destinations {
        let state = queue_until(api, destination_id, "a held queue", |state| {
            state["paused_reason"] == "failing" && state["owner_worker_id"].is_string()
        })
        .await;
        let owner = state["owner_worker_id"].as_str().unwrap().to_string();
        let partition = state["partition"].as_i64().unwrap();
        let sql = format!(
            "SELECT count(*) FROM delivery_workers WHERE worker_id = '{owner}' AND {partition} = ANY(partitions)"
        );
        assert_eq!(stack.count(&sql).await, 1, "{owner} owns partition {partition}");

        // The owner acts on it at once: a pause answers with the operator's reason.
        let (status, state) = control(api, destination_id, "pause").await;
        assert_eq!(status, 200, "{state}");
        assert_eq!(state["paused_reason"], "operator", "{state}");
        assert_eq!(state["owner_worker_id"].as_str(), Some(owner.as_str()), "{state}");
        owners.insert(owner);
    }
    println!("destinations answered by {} worker(s)", owners.len());

    // Resumed and healthy: every queue flows again.
    receiver.respond_with(200, r#"{"Meta":{"Errors":[]}}"#);
    for destination_id in &destinations {
        let (status, _) = control(api, destination_id, "resume").await;
        assert_eq!(status, 200);
    }
    for destination_id in &destinations {
        queue_until(api, destination_id, "a flowing queue", |state| {
            state["paused"] == false && state["depth"] == 0
        })
        .await;
    }
    stack.stop().await;
}
