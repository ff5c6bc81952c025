//! A message's way through all four services, and order at scale.

use std::collections::HashMap;
use std::time::Duration;

use carrier_testkit::client::message;
use carrier_testkit::receiver::Receiver;
use carrier_testkit::stack::{Stack, StackOptions};
use serde_json::{json, Value};

use crate::sequences;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_message_reaches_three_destinations_with_its_headers_and_logs() {
    let stack = Stack::start(StackOptions::default()).await;
    let receiver = Receiver::start().await;
    let api = &stack.api;
    let organization = api.create_organization("General Hospital").await;
    let source = api.create_source(&organization, "production").await;
    let mut destinations: Vec<Value> = Vec::new();
    for index in 0..3 {
        let destination = api
            .subscribed_destination(
                &organization,
                &source,
                &receiver.url(&format!("d{index}")),
                "production",
                "PatientAdmin",
            )
            .await;
        destinations.push(destination);
    }
    let token = api.token(&source).await;

    let body = serde_json::to_vec(&message("PatientAdmin", 7)).unwrap();
    let (status, response) = api.send_raw(&token, body.clone()).await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["Meta"]["Errors"], json!([]));
    let message_id = response["Meta"]["Message"]["ID"]
        .as_str()
        .expect("message ID")
        .to_string();
    let logs = response["Meta"]["Logs"].as_array().expect("logs");
    assert_eq!(logs.len(), 3, "one log per destination: {response}");
    let log_of: HashMap<String, String> = logs
        .iter()
        .map(|log| {
            (
                log["DestinationID"].as_str().unwrap().to_string(),
                log["ID"].as_str().unwrap().to_string(),
            )
        })
        .collect();

    carrier_testkit::eventually(Duration::from_secs(60), "three deliveries", || {
        let count = receiver.received().len();
        async move { (count >= 3).then_some(()) }
    })
    .await;
    for (index, destination) in destinations.iter().enumerate() {
        let requests = receiver.received_on(&format!("d{index}"));
        assert_eq!(requests.len(), 1, "exactly one request at d{index}");
        let request = &requests[0];
        let destination_id = destination["id"].as_str().unwrap();
        let log_id = &log_of[destination_id];
        assert_eq!(
            request.body.as_ref(),
            body.as_slice(),
            "the body arrives unchanged"
        );
        assert_eq!(request.header("content-type"), "application/json");
        assert_eq!(
            request.header("verification-token"),
            destination["verification_token"].as_str().unwrap()
        );
        assert_eq!(request.header("carrier-message-id"), message_id);
        assert_eq!(request.header("carrier-log-id"), log_id);
        assert_eq!(request.header("webhook-id"), log_id);
        assert_eq!(request.header("carrier-attempt"), "1");
        assert_eq!(request.header("carrier-test"), "false");
        assert_eq!(request.header("carrier-environment"), "production");
        let received_at = request.header("carrier-received-at");
        assert!(
            received_at.ends_with('Z') && received_at.contains('.'),
            "RFC 3339 with ms: {received_at}"
        );
        let timestamp: i64 = request.header("webhook-timestamp").parse().expect("unix seconds");
        carrier_signature::verify(
            destination["signing_secret"].as_str().unwrap(),
            log_id,
            timestamp,
            &request.body,
            request.header("webhook-signature"),
        )
        .expect("the signature verifies with the destination's signing secret");
    }

    for log_id in log_of.values() {
        let log = carrier_testkit::eventually(Duration::from_secs(60), "the log to be delivered", || {
            let api = api.clone();
            let token = token.clone();
            let log_id = log_id.clone();
            async move {
                let (status, log) = api.log(&token, &log_id).await;
                (status == 200 && log["status"] == "delivered").then_some(log)
            }
        })
        .await;
        assert_eq!(log["message_id"], message_id.as_str());
        assert_eq!(log["test"], false);
        assert_eq!(log["attempts"].as_array().unwrap().len(), 1, "{log}");
        assert_eq!(log["attempts"][0]["status_code"], 200);
        assert_eq!(log["attempts"][0]["outcome"], "success");
        let (status, _) = api
            .admin(reqwest::Method::GET, &format!("/v1/logs/{log_id}"), None)
            .await;
        assert_eq!(status, 200, "the operator sees every log");
    }

    // Another organization's source cannot see these logs.
    let other_organization = api.create_organization("Elsewhere Clinic").await;
    let other_source = api.create_source(&other_organization, "production").await;
    // ... nor subscribe to this organization's destinations, and environments do not mix.
    let (status, body) = api
        .admin(
            reqwest::Method::POST,
            "/v1/subscriptions",
            Some(&json!({ "source_id": other_source.id, "destination_id": destinations[0]["id"], "data_model": "PatientAdmin" })),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["Meta"]["Errors"][0]["Text"]
            .as_str()
            .unwrap()
            .contains("different organizations"),
        "{body}"
    );
    let staging = api
        .create_destination(&organization, &receiver.url("staging"), "staging")
        .await;
    let (status, body) = api
        .admin(
            reqwest::Method::POST,
            "/v1/subscriptions",
            Some(&json!({ "source_id": source.id, "destination_id": staging["id"], "data_model": "PatientAdmin" })),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["Meta"]["Errors"][0]["Text"]
            .as_str()
            .unwrap()
            .contains("staging"),
        "{body}"
    );
    let other_token = api.token(&other_source).await;
    let (status, body) = api.log(&other_token, log_of.values().next().unwrap()).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = api.log("not-a-token", log_of.values().next().unwrap()).await;
    assert_eq!(status, 401);

    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_messages_from_two_sources_arrive_complete_and_in_order() {
    const PER_SOURCE: usize = 500;
    let stack = Stack::start(StackOptions::default()).await;
    let receiver = Receiver::start().await;
    let api = &stack.api;
    let organization = api.create_organization("Regional Health").await;
    let sources = [
        api.create_source(&organization, "production").await,
        api.create_source(&organization, "production").await,
    ];
    let mut destination_ids = Vec::new();
    for index in 0..5 {
        let destination = api
            .create_destination(&organization, &receiver.url(&format!("d{index}")), "production")
            .await;
        destination_ids.push(destination["id"].as_str().unwrap().to_string());
    }
    // Source A → d0, d1, d2; source B → d2, d3, d4 (d2 receives both, interleaved).
    let subscriptions: [&[usize]; 2] = [&[0, 1, 2], &[2, 3, 4]];
    for (source, targets) in sources.iter().zip(subscriptions) {
        for target in targets {
            api.subscribe(&source.id, &destination_ids[*target], "Results")
                .await;
        }
    }

    let mut senders = Vec::new();
    for (index, source) in sources.iter().enumerate() {
        let api = api.clone();
        let token = api.token(source).await;
        let name = format!("S{index}");
        senders.push(tokio::spawn(async move {
            for sequence in 0..PER_SOURCE {
                let mut body = message("Results", sequence);
                body["Source"] = json!(name);
                let (status, response) = api.send(&token, &body).await;
                assert_eq!(status, 200, "message {sequence} of {name}: {response}");
            }
        }));
    }
    for sender in senders {
        sender.await.expect("sender finished");
    }

    let expected_total = PER_SOURCE * 6;
    carrier_testkit::eventually(Duration::from_secs(180), "every delivery", || {
        let count = receiver.received().len();
        async move { (count >= expected_total).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.received().len(),
        expected_total,
        "no duplicates without a crash"
    );
    let in_order: Vec<u64> = (0..PER_SOURCE as u64).collect();
    for (index, _) in destination_ids.iter().enumerate() {
        let requests = receiver.received_on(&format!("d{index}"));
        for (source_index, targets) in subscriptions.iter().enumerate() {
            let from_source = sequences(&requests, Some(&format!("S{source_index}")));
            if targets.contains(&index) {
                assert_eq!(
                    from_source, in_order,
                    "d{index} receives every message of S{source_index}, in order"
                );
            } else {
                assert!(
                    from_source.is_empty(),
                    "d{index} is not subscribed to S{source_index}"
                );
            }
        }
    }
    stack.stop().await;
}
