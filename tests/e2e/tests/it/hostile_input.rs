//! Issue 11 §1–2: odd bytes from a sender or a receiver must not stop the platform. A NUL byte
//! in a routing field or a receiver's answer once froze the log store for every destination of
//! its log-events partition (Postgres refuses NUL in text, and the notifier retried the batch
//! forever); a value no HTTP header can carry failed every attempt.

use std::time::Duration;

use carrier_kafka::producer::{self, Ordering, WhenFull};
use carrier_proto::records_v1::{Attempt, AttemptOutcome, LogEvent, LogStatus};
use carrier_testkit::client::{message, Api, Sender};
use carrier_testkit::receiver::Receiver;
use carrier_testkit::stack::{Stack, StackOptions};
use prost::Message;
use serde_json::json;

/// Sends message 1 from `token`'s source and waits until its (first) log has `status`; the log.
async fn send_and_wait_for(api: &Api, token: &str, status: &str) -> serde_json::Value {
    let (code, answer) = api.send(token, &message("Results", 1)).await;
    assert_eq!(code, 200, "{answer}");
    let log_id = answer["Meta"]["Logs"][0]["ID"].as_str().unwrap().to_string();
    carrier_testkit::eventually(Duration::from_secs(60), &format!("the log, {status}"), || {
        let log_id = log_id.clone();
        async move {
            let (code, log) = api.log(token, &log_id).await;
            (code == 200 && log["status"] == status).then_some(log)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn routing_fields_that_no_header_or_log_store_can_carry_are_refused_where_they_enter() {
    let stack = Stack::start(StackOptions::default()).await;
    let api = &stack.api;
    let receiver = Receiver::start().await;
    let Sender {
        token, organization, ..
    } = api
        .sender("Odd Bytes Hospital", "production", &receiver.url("a"), "Results")
        .await;

    let mut nul = message("Results", 1);
    nul["Meta"]["EventType"] = json!("Arr\u{0}ival");
    let (status, body) = api.send(&token, &nul).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["Meta"]["Errors"][0]["Text"],
        "Meta.EventType must be 1 to 64 printable ASCII characters"
    );
    let bundle = json!({ "resourceType": "Bundle", "type": "mess\u{0}age" });
    let answer = api.fhir(&token, "Bundle", &bundle, &[]).await;
    assert_eq!(answer.status, 400, "{answer:?}");

    // An operator-set verification token goes out as a header on every attempt.
    let (status, body) = api
        .admin(
            reqwest::Method::POST,
            "/v1/destinations",
            Some(&json!({
                "organization_id": organization, "name": "r", "url": receiver.url("b"),
                "environment": "production", "verification_token": "tok\u{7}en",
            })),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_log_event_the_log_store_refuses_is_set_aside_and_the_partition_goes_on() {
    let stack = Stack::start(StackOptions::default()).await;
    let api = &stack.api;
    let receiver = Receiver::start().await;
    let Sender {
        token, destination, ..
    } = api
        .sender("Poison Hospital", "production", &receiver.url("a"), "Results")
        .await;
    let destination_id = destination["id"].as_str().unwrap().to_string();

    // A log event with a NUL in its error text, as a producer that did not clean a receiver's
    // answer wrote it, on the destination's log-events partition.
    let poison = LogEvent {
        log_id: uuid::Uuid::now_v7().to_string(),
        message_id: uuid::Uuid::now_v7().to_string(),
        destination_id: destination_id.clone(),
        organization_id: uuid::Uuid::nil().to_string(),
        source_id: uuid::Uuid::nil().to_string(),
        data_model: "Results".into(),
        event_type: "New".into(),
        status: LogStatus::Failed as i32,
        environment: "production".into(),
        at_ms: chrono::Utc::now().timestamp_millis(),
        attempt: Some(Attempt {
            number: 1,
            outcome: AttemptOutcome::Failure as i32,
            error: "destination answered: bad\u{0}input".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let writer = producer::create(&stack.kafka, "poison-test", Ordering::Strict).unwrap();
    producer::send(
        &writer,
        &carrier_kafka::Topics::new(&stack.kafka).log_events,
        &destination_id,
        &poison.encode_to_vec(),
        None,
        WhenFull::Wait,
    )
    .await
    .unwrap();

    // The next message's log reaches the log store, and the poison is set aside.
    send_and_wait_for(api, &token, "delivered").await;
    let set_aside = format!(
        "SELECT count(*) FROM dead_letter_events WHERE log_id = '{}' AND error LIKE '%0x00%'",
        poison.log_id
    );
    assert_eq!(
        stack.count(&set_aside).await,
        1,
        "the refused event is kept, with why"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receivers_nul_and_control_bytes_are_cleaned_before_they_reach_the_log_store() {
    let stack = Stack::start(StackOptions::default()).await;
    let api = &stack.api;
    let receiver = Receiver::start().await;
    receiver.respond_with(500, "bad\u{0}input \u{1b}[31mred");
    let Sender { token, .. } = api
        .sender(
            "Odd Receiver Hospital",
            "production",
            &receiver.url("a"),
            "Results",
        )
        .await;
    let waiting = send_and_wait_for(api, &token, "delivered");
    let recovery = async {
        carrier_testkit::eventually(Duration::from_secs(30), "a failed attempt", || {
            let count = receiver.received().len();
            async move { (count >= 2).then_some(()) }
        })
        .await;
        receiver.respond_with(200, r#"{"Meta":{"Errors":[]}}"#);
    };
    let (log, ()) = tokio::join!(waiting, recovery);
    assert_eq!(
        log["attempts"][0]["response_excerpt"], "bad\u{FFFD}input \u{FFFD}[31mred",
        "{log}"
    );
    stack.stop().await;
}

/// A destination stored before its verification token was checked (or changed in the database)
/// holds a value no header can carry: every attempt would fail the same way, and a production
/// queue would hold forever. The log fails at once, saying why, and the queue moves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_no_request_can_be_made_for_fails_its_log_at_once_with_the_reason() {
    let stack = Stack::start(StackOptions::default()).await;
    let api = &stack.api;
    let receiver = Receiver::start().await;
    let Sender {
        token, destination, ..
    } = api
        .sender("Unsendable Hospital", "production", &receiver.url("a"), "Results")
        .await;
    let destination_id = destination["id"].as_str().unwrap();
    let set = format!(
        "WITH changed AS (UPDATE destinations SET verification_token = E'tok\\x07en' WHERE id = '{destination_id}' RETURNING 1) SELECT count(*) FROM changed"
    );
    assert_eq!(stack.count(&set).await, 1);
    let log = send_and_wait_for(api, &token, "failed").await;
    assert_eq!(log["attempts"].as_array().map(Vec::len), Some(1), "{log}");
    let error = log["attempts"][0]["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("the request cannot be built"), "{error}");
    assert!(receiver.received().is_empty(), "nothing was sent");
    stack.stop().await;
}
