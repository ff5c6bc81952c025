//! The FHIR API end to end: a resource routes by its type (event type `create`), a Bundle as
//! data model `Bundle` with its `Bundle.type` as event type, and `Carrier-Test: true` marks a
//! test message; receivers get the original bytes and content type.

use std::time::Duration;

use carrier_testkit::receiver::Receiver;
use carrier_testkit::stack::{Stack, StackOptions};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fhir_resources_and_bundles_are_routed_by_type_and_delivered_unchanged() {
    let stack = Stack::start(StackOptions::default()).await;
    let receiver = Receiver::start().await;
    let api = &stack.api;
    let organization = api.create_organization("FHIR Hospital").await;
    let source = api.create_source(&organization, "production").await;
    let patients = api
        .subscribed_destination(
            &organization,
            &source,
            &receiver.url("patients"),
            "production",
            "Patient",
        )
        .await;
    let bundles = api
        .subscribed_destination(
            &organization,
            &source,
            &receiver.url("bundles"),
            "production",
            "Bundle",
        )
        .await;
    let token = api.token(&source).await;

    let patient = json!({ "resourceType": "Patient", "id": "p1", "name": [ { "family": "Chalmers" } ] });
    let answer = api
        .fhir(&token, "Patient", &patient, &[("carrier-test", "true")])
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.body,
        json!({ "resourceType": "OperationOutcome", "issue": [] })
    );
    assert_eq!(answer.header("content-type"), "application/fhir+json");
    let patient_message = answer.header("carrier-message-id").to_string();
    let patient_log = answer.header("carrier-log-ids").to_string();
    assert!(
        !patient_message.is_empty() && !patient_log.is_empty(),
        "{:?}",
        answer.headers
    );
    assert!(
        !patient_log.contains(','),
        "one destination, one log: {patient_log}"
    );

    let bundle = json!({
        "resourceType": "Bundle",
        "type": "message",
        "entry": [
            { "resource": { "resourceType": "MessageHeader", "eventCoding": { "code": "admit" } } },
            { "resource": { "resourceType": "Patient", "id": "p2" } },
        ],
    });
    let answer = api.fhir(&token, "Bundle", &bundle, &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let bundle_log = answer.header("carrier-log-ids").to_string();

    carrier_testkit::eventually(Duration::from_secs(60), "both deliveries", || {
        let count = receiver.received().len();
        async move { (count >= 2).then_some(()) }
    })
    .await;
    let received = receiver.received_on("patients");
    assert_eq!(
        received.len(),
        1,
        "the Patient goes to the Patient subscriber only"
    );
    let request = &received[0];
    assert_eq!(
        request.body.as_ref(),
        serde_json::to_vec(&patient).unwrap().as_slice()
    );
    assert_eq!(request.header("content-type"), "application/fhir+json");
    assert_eq!(request.header("carrier-data-model"), "Patient");
    assert_eq!(request.header("carrier-event-type"), "create");
    assert_eq!(request.header("carrier-test"), "true");
    assert_eq!(request.header("carrier-message-id"), patient_message);
    assert_eq!(request.header("carrier-log-id"), patient_log);
    assert_eq!(
        request.header("verification-token"),
        patients["verification_token"].as_str().unwrap()
    );

    let received = receiver.received_on("bundles");
    assert_eq!(received.len(), 1, "the Bundle goes to the Bundle subscriber only");
    let request = &received[0];
    assert_eq!(
        request.body.as_ref(),
        serde_json::to_vec(&bundle).unwrap().as_slice()
    );
    assert_eq!(request.header("carrier-data-model"), "Bundle");
    assert_eq!(request.header("carrier-event-type"), "message");
    assert_eq!(request.header("carrier-test"), "false");
    assert_eq!(request.header("carrier-log-id"), bundle_log);
    assert_eq!(
        request.header("verification-token"),
        bundles["verification_token"].as_str().unwrap()
    );

    let log = carrier_testkit::eventually(Duration::from_secs(60), "the Patient's log", || {
        let api = api.clone();
        let token = token.clone();
        let log_id = patient_log.clone();
        async move {
            let (status, log) = api.log(&token, &log_id).await;
            (status == 200).then_some(log)
        }
    })
    .await;
    assert_eq!(log["test"], true, "a test message's log says so: {log}");
    assert_eq!(log["data_model"], "Patient", "{log}");
    stack.stop().await;
}
