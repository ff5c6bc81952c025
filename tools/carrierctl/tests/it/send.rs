//! `carrierctl send`: one message, a file of messages in order with its summary, the FHIR API,
//! and refusals in Carrier's words.

use std::time::Duration;

use carrier_testkit::client::{message, Sender};
use carrier_testkit::receiver::Receiver;
use carrier_testkit::stack::{Stack, StackOptions};
use serde_json::json;

use crate::{carrierctl, client_credentials, sequences};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn send_posts_one_message_or_a_file_in_order_and_sums_it_up() {
    let stack = Stack::start(StackOptions::default()).await;
    let api = &stack.api;
    let receiver = Receiver::start().await;
    let Sender {
        source,
        destination,
        token,
        ..
    } = api
        .sender("Sending Hospital", "production", &receiver.url("d"), "Results")
        .await;
    let destination_id = destination["id"].as_str().unwrap();
    let credentials = client_credentials(&stack, &source);

    // One message: its message ID and one log per destination.
    let one = message("Results", 0).to_string();
    let sent = carrierctl(&credentials, &["send", "--json", &one]).await.json();
    assert!(sent["message_id"].is_string(), "{sent}");
    assert_eq!(sent["logs"].as_array().unwrap().len(), 1, "{sent}");
    assert_eq!(sent["logs"][0]["destination_id"], destination_id);
    assert!(sent["logs"][0]["id"].is_string(), "{sent}");

    // A file, going on after a refused line: every other line is accepted, in order.
    let directory = std::env::temp_dir().join(carrier_testkit::unique("carrierctl-send-"));
    std::fs::create_dir_all(&directory).unwrap();
    let file = directory.join("messages.jsonl");
    let lines = [
        message("Results", 1).to_string(),
        message("Results", 2).to_string(),
        json!({"Meta": {"EventType": "New"}}).to_string(),
        String::new(),
        message("Results", 3).to_string(),
        message("Results", 4).to_string(),
    ];
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let run = carrierctl(
        &credentials,
        &[
            "send",
            "--json",
            "--continue-on-error",
            "--file",
            file.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(run.code, 1, "a refused line makes the run fail: {run:?}");
    let summary = run.document();
    assert_eq!(summary["sent"], 5, "the blank line is skipped: {summary}");
    assert_eq!(summary["accepted"], 4, "{summary}");
    assert_eq!(summary["refused"], 1, "{summary}");
    assert_eq!(summary["refused_by_status"], json!({"400": 1}), "{summary}");
    assert_eq!(
        summary["refusals"],
        json!([{"line": 3, "status": 400, "error": "Required field missing - Meta.DataModel"}])
    );
    assert!(summary["stopped_at_line"].is_null(), "{summary}");
    assert!(
        summary["elapsed_ms"].is_u64() && summary["rate_per_sec"].is_number(),
        "{summary}"
    );

    // By default sending stops at the first refusal (with a ready access token this time).
    std::fs::write(
        &file,
        [
            message("Results", 5).to_string(),
            r#"{"Meta":"#.to_string(),
            message("Results", 6).to_string(),
        ]
        .join("\n"),
    )
    .unwrap();
    let run = carrierctl(
        &[("CARRIER_URL", &stack.ingress_url), ("CARRIER_TOKEN", &token)],
        &["send", "--json", "--file", file.to_str().unwrap()],
    )
    .await;
    assert_eq!(run.code, 1, "{run:?}");
    let summary = run.document();
    assert_eq!(summary["accepted"], 1, "{summary}");
    assert_eq!(summary["stopped_at_line"], 2, "{summary}");
    assert!(
        summary["refusals"][0]["error"]
            .as_str()
            .unwrap()
            .starts_with("Request body is not valid JSON"),
        "{summary}"
    );
    std::fs::remove_dir_all(&directory).unwrap();

    // Everything accepted arrives, in the order of the lines; line 3 of the second file never left.
    carrier_testkit::eventually(Duration::from_secs(30), "six messages delivered", || {
        let count = receiver.received().len();
        async move { (count >= 6).then_some(()) }
    })
    .await;
    assert_eq!(sequences(&receiver.received()), vec![0, 1, 2, 3, 4, 5]);

    // A refused single message: exit 1 and Carrier's text on stderr.
    let run = carrierctl(&credentials, &["send", r#"{"Meta":{"DataModel":"Results"}}"#]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("Required field missing - Meta.EventType (HTTP 400)"),
        "{run:?}"
    );

    // A wrong secret: the token request's refusal, in its words.
    let run = carrierctl(
        &[
            ("CARRIER_URL", stack.ingress_url.as_str()),
            ("CARRIER_CLIENT_ID", source.client_id.as_str()),
            ("CARRIER_CLIENT_SECRET", "wrong"),
        ],
        &["send", &one],
    )
    .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("(HTTP 401)"), "{run:?}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn send_fhir_posts_each_resource_under_its_type() {
    let stack = Stack::start(StackOptions::default()).await;
    let api = &stack.api;
    let receiver = Receiver::start().await;
    let Sender { source, .. } = api
        .sender("FHIR Clinic", "production", &receiver.url("fhir"), "Patient")
        .await;
    let patient = json!({"resourceType": "Patient", "name": [{"family": "Chalmers"}]}).to_string();
    let sent = carrierctl(
        &client_credentials(&stack, &source),
        &["send", "--json", "--fhir", "--test", &patient],
    )
    .await
    .json();
    assert!(sent["message_id"].is_string(), "{sent}");
    let log_id = sent["logs"][0]["id"].as_str().expect("a log ID").to_string();
    let arrived = carrier_testkit::eventually(Duration::from_secs(30), "the resource delivered", || {
        let received = receiver.received();
        async move { received.into_iter().next() }
    })
    .await;
    assert_eq!(arrived.header("carrier-log-id"), log_id);
    assert_eq!(arrived.header("carrier-data-model"), "Patient");
    assert_eq!(arrived.header("carrier-test"), "true");
    assert_eq!(arrived.body, patient.as_bytes());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn send_renews_an_expired_token_from_the_client_credentials() {
    let stack = Stack::start(StackOptions {
        token_ttl_secs: 1,
        ..StackOptions::default()
    })
    .await;
    let api = &stack.api;
    let receiver = Receiver::start().await;
    let Sender { source, .. } = api
        .sender("Slow Sender", "production", &receiver.url("d"), "Results")
        .await;

    // Messages from standard input, the second one after the first token has expired.
    let mut send = crate::command(
        &client_credentials(&stack, &source),
        &["send", "--json", "--file", "-"],
    )
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .spawn()
    .expect("carrierctl starts");
    let mut stdin = send.stdin.take().unwrap();
    use tokio::io::AsyncWriteExt;
    stdin
        .write_all(format!("{}\n", message("Results", 0)).as_bytes())
        .await
        .unwrap();
    carrier_testkit::eventually(Duration::from_secs(30), "the first message delivered", || {
        let count = receiver.received().len();
        async move { (count == 1).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    stdin
        .write_all(format!("{}\n", message("Results", 1)).as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let output = send.wait_with_output().await.unwrap();
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).expect("a JSON summary");
    assert!(output.status.success(), "{summary}");
    assert_eq!(summary["accepted"], 2, "{summary}");
    assert_eq!(summary["refused"], 0, "{summary}");
    carrier_testkit::eventually(Duration::from_secs(30), "both messages delivered", || {
        let arrived = sequences(&receiver.received());
        async move { (arrived == vec![0, 1]).then_some(()) }
    })
    .await;
    stack.stop().await;
}
