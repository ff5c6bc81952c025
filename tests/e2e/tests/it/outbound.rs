//! Outbound safety: destinations on loopback are refused at connect time when the policy does
//! not allow them, whether named by an IP literal or by a host name that resolves to loopback,
//! and redirects are never followed. The notifier's Slack webhooks follow the same policy.
//!
//! That the `webhook-signature` verifies with the destination's `signing_secret` is asserted by
//! `pipeline::one_message_reaches_three_destinations_with_its_headers_and_logs`.

use std::time::Duration;

use carrier_outbound::OutboundSettings;
use carrier_testkit::client::{message, Api, Sender};
use carrier_testkit::receiver::Receiver;
use carrier_testkit::stack::{Stack, StackOptions};
use serde_json::{json, Value};

const POLICY_TEXT: &str = "is loopback; refused by outbound policy";

async fn log_when(api: &Api, token: &str, log_id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let done = &done;
    carrier_testkit::eventually(Duration::from_secs(60), what, move || {
        let api = api.clone();
        let token = token.to_string();
        let log_id = log_id.to_string();
        async move {
            let (status, log) = api.log(&token, &log_id).await;
            (status == 200 && done(&log)).then_some(log)
        }
    })
    .await
}

fn attempt_errors(log: &Value) -> Vec<String> {
    log["attempts"]
        .as_array()
        .map(|attempts| {
            attempts
                .iter()
                .map(|attempt| attempt["error"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The refusals delivery counted in this process, by address class.
fn refused_count(class: &str) -> f64 {
    carrier_telemetry::prometheus::gather()
        .iter()
        .filter(|family| family.name() == "carrier_delivery_outbound_refused_total")
        .flat_map(|family| family.get_metric().iter())
        .filter(|metric| {
            metric
                .get_label()
                .iter()
                .any(|label| label.name() == "class" && label.value() == class)
        })
        .map(|metric| metric.get_counter().get_value())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn loopback_destinations_are_refused_when_the_policy_does_not_allow_them() {
    let stack = Stack::start(StackOptions {
        // The production default: only public addresses.
        outbound: OutboundSettings::default(),
        ..StackOptions::default()
    })
    .await;
    let api = &stack.api;
    let receiver = Receiver::start().await;
    let port = receiver.addr.port();
    let organization = api.create_organization("Outbound Hospital").await;

    // Staging: one attempt, one retry, then `failed`, for an IP literal and for a name.
    let staging = api.create_source(&organization, "staging").await;
    let literal = api
        .subscribed_destination(
            &organization,
            &staging,
            &receiver.url("literal"),
            "staging",
            "PatientAdmin",
        )
        .await;
    let named = api
        .subscribed_destination(
            &organization,
            &staging,
            &format!("http://localhost:{port}/named"),
            "staging",
            "PatientAdmin",
        )
        .await;
    let staging_token = api.token(&staging).await;
    let (status, response) = api.send(&staging_token, &message("PatientAdmin", 1)).await;
    assert_eq!(status, 200, "{response}");
    for log in response["Meta"]["Logs"].as_array().unwrap() {
        let log_id = log["ID"].as_str().unwrap();
        let log = log_when(api, &staging_token, log_id, "a final staging log", |log| {
            log["status"] != "queued"
        })
        .await;
        assert_eq!(log["status"], "failed", "{log}");
        let errors = attempt_errors(&log);
        assert_eq!(errors.len(), 2, "one attempt and one retry: {log}");
        for error in &errors {
            assert!(error.contains(POLICY_TEXT), "{log}");
        }
        if log["destination_id"] == literal["id"] {
            assert_eq!(errors[0], format!("destination address 127.0.0.1 {POLICY_TEXT}"));
        } else {
            assert_eq!(log["destination_id"], named["id"], "{log}");
        }
    }

    // Production: refused like a connect error, so it retries and holds its queue.
    let production = api.create_source(&organization, "production").await;
    let held = api
        .subscribed_destination(
            &organization,
            &production,
            &receiver.url("production"),
            "production",
            "PatientAdmin",
        )
        .await;
    let held_id = held["id"].as_str().unwrap();
    let production_token = api.token(&production).await;
    let (status, response) = api.send(&production_token, &message("PatientAdmin", 2)).await;
    assert_eq!(status, 200, "{response}");
    let log_id = response["Meta"]["Logs"][0]["ID"].as_str().unwrap();
    let log = log_when(api, &production_token, log_id, "two refused attempts", |log| {
        attempt_errors(log).len() >= 2
    })
    .await;
    assert_eq!(log["status"], "queued", "production keeps retrying: {log}");
    assert!(attempt_errors(&log)
        .iter()
        .all(|error| error.contains(POLICY_TEXT)));
    let (status, queue) = api
        .admin(
            reqwest::Method::GET,
            &format!("/v1/destinations/{held_id}/queue"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{queue}");
    assert_eq!(queue["paused"], true, "{queue}");
    assert!(
        queue["last_error"].as_str().unwrap_or("").contains(POLICY_TEXT),
        "{queue}"
    );

    assert!(receiver.received().is_empty(), "no request reached the receiver");
    assert!(refused_count("loopback") >= 6.0, "refusals are counted");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redirect_is_a_failure_and_its_location_is_not_requested() {
    let stack = Stack::start(StackOptions::default()).await;
    let api = &stack.api;
    let receiver = Receiver::start().await;
    receiver.redirect_to(302, &receiver.url("elsewhere"));
    let Sender { token, .. } = api
        .sender(
            "Redirect Clinic",
            "staging",
            &receiver.url("moved"),
            "PatientAdmin",
        )
        .await;
    let (status, response) = api.send(&token, &message("PatientAdmin", 1)).await;
    assert_eq!(status, 200, "{response}");
    let log_id = response["Meta"]["Logs"][0]["ID"].as_str().unwrap();
    let log = log_when(api, &token, log_id, "a final log", |log| {
        log["status"] != "queued"
    })
    .await;
    assert_eq!(log["status"], "failed", "{log}");
    assert_eq!(log["attempts"][0]["status_code"], 302, "{log}");
    assert_eq!(
        attempt_errors(&log),
        vec!["destination answered HTTP 302"; 2],
        "{log}"
    );
    assert_eq!(receiver.received_on("moved").len(), 2);
    assert!(
        receiver.received_on("elsewhere").is_empty(),
        "the Location is never requested"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slack_webhook_on_loopback_is_refused_when_the_policy_does_not_allow_it() {
    let stack = Stack::start(StackOptions {
        // The production default for delivery and the notifier: only public addresses.
        outbound: OutboundSettings::default(),
        ..StackOptions::default()
    })
    .await;
    let api = &stack.api;
    let slack = Receiver::start().await;
    let (status, organization) = api
        .admin(
            reqwest::Method::POST,
            "/v1/organizations",
            Some(&json!({ "name": "Refused Slack", "slack_webhook_url": slack.url("hook") })),
        )
        .await;
    assert_eq!(status, 201, "{organization}");
    let organization_id = organization["id"].as_str().unwrap();
    // A production destination on loopback: its refused attempts fail like connect errors and
    // raise the destination's failing alert.
    let receiver = Receiver::start().await;
    let source = api.create_source(organization_id, "production").await;
    api.subscribed_destination(
        organization_id,
        &source,
        &receiver.url("lab"),
        "production",
        "PatientAdmin",
    )
    .await;
    let token = api.token(&source).await;
    let (status, response) = api.send(&token, &message("PatientAdmin", 1)).await;
    assert_eq!(status, 200, "{response}");

    // The alert reaches Kafka; its Slack send is refused at connect time, and retried.
    for (sql, what) in [
        (
            "SELECT count(*) FROM alert_deliveries WHERE channel = 'kafka' AND status = 'sent'",
            "the failing alert on Kafka",
        ),
        (
            "SELECT count(*) FROM alert_deliveries WHERE channel = 'slack' AND status = 'pending' AND attempts >= 2 \
             AND last_error LIKE 'slack webhook: destination address 127.0.0.1 is loopback; refused by outbound policy%'",
            "the Slack send refused twice",
        ),
    ] {
        let stack = &stack;
        carrier_testkit::eventually(Duration::from_secs(90), what, || async move {
            (stack.count(sql).await >= 1).then_some(())
        })
        .await;
    }
    assert!(
        slack.received().is_empty(),
        "no request reached the Slack receiver"
    );
    assert!(receiver.received().is_empty(), "nor the destination");
    stack.stop().await;
}
