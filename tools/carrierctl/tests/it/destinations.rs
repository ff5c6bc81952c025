//! `carrierctl destinations queue|pause|resume|skip` on a failing production destination.

use std::time::Duration;

use carrier_testkit::client::{message, Sender};
use carrier_testkit::receiver::Receiver;
use carrier_testkit::stack::{Stack, StackOptions};

use crate::{operator, operator_until, sequences};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_reads_skips_pauses_and_resumes_a_held_queue() {
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

    // A flowing queue has nothing to skip: Carrier's 409, in its words.
    let state = operator_until(
        &stack,
        &["destinations", "queue", &destination_id],
        "the queue state",
        |_| true,
    )
    .await;
    assert_eq!(state["paused"], false, "{state}");
    let run = operator(&stack, &["destinations", "skip", &destination_id]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("(HTTP 409)"), "{run:?}");

    let mut log_ids = Vec::new();
    for sequence in 0..3 {
        let (status, response) = api.send(&token, &message("Results", sequence)).await;
        assert_eq!(status, 200);
        log_ids.push(response["Meta"]["Logs"][0]["ID"].as_str().unwrap().to_string());
    }
    let state = operator_until(
        &stack,
        &["destinations", "queue", &destination_id],
        "a failing, held queue with its backlog",
        |state| state["paused_reason"] == "failing" && state["depth"] == 3,
    )
    .await;
    assert_eq!(state["paused"], true, "{state}");
    assert_eq!(state["head_log_id"], log_ids[0].as_str(), "{state}");
    assert!(state["last_error"].as_str().unwrap().contains("500"), "{state}");

    // The human view of the same queue.
    let run = crate::carrierctl(
        &[
            ("CARRIER_URL", &stack.ingress_url),
            ("CARRIER_TOKEN", &stack.api.admin_token),
        ],
        &["destinations", "queue", &destination_id],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("paused (failing)"), "{run:?}");
    assert!(run.stdout.contains(&log_ids[0]), "{run:?}");

    let skipped = operator(&stack, &["destinations", "skip", &destination_id])
        .await
        .json();
    assert_eq!(skipped["skipped_log_id"], log_ids[0].as_str(), "{skipped}");
    operator_until(
        &stack,
        &["destinations", "queue", &destination_id],
        "the next message to be the head",
        |state| state["head_log_id"] == log_ids[1].as_str(),
    )
    .await;

    let paused = operator(&stack, &["destinations", "pause", &destination_id])
        .await
        .json();
    assert_eq!(paused["paused"], true, "{paused}");
    assert_eq!(paused["paused_reason"], "operator", "{paused}");

    receiver.respond_with(200, r#"{"Meta":{"Errors":[]}}"#);
    let resumed = operator(&stack, &["destinations", "resume", &destination_id])
        .await
        .json();
    assert_eq!(resumed["destination_id"], destination_id.as_str(), "{resumed}");
    assert_ne!(resumed["paused_reason"], "operator", "{resumed}");
    carrier_testkit::eventually(Duration::from_secs(30), "the rest delivered after resume", || {
        let last = sequences(&receiver.received()).last().copied();
        async move { (last == Some(2)).then_some(()) }
    })
    .await;
    let arrived = sequences(&receiver.received());
    let first_of_the_next = arrived.iter().position(|sequence| *sequence == 1).unwrap();
    assert!(
        arrived[first_of_the_next..].iter().all(|sequence| *sequence != 0),
        "the skipped head is never attempted again: {arrived:?}"
    );
    operator_until(
        &stack,
        &["destinations", "queue", &destination_id],
        "a flowing queue",
        |state| state["paused"] == false && state["depth"] == 0,
    )
    .await;
    stack.stop().await;
}
