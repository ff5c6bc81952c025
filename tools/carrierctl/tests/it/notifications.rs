//! `carrierctl notifications tail`: alerts on the notifications topic, printed as JSON lines,
//! from the beginning or only those published after the tail started.

use std::process::Stdio;
use std::time::Duration;

use carrier_config::KafkaSettings;
use carrier_kafka::producer::{self, Ordering, WhenFull};
use carrier_kafka::Topics;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{carrierctl, command};

fn alert(kind: &str, destination_id: &str) -> Value {
    json!({
        "schema": "carrier.notification.v1",
        "id": uuid::Uuid::new_v4().to_string(),
        "kind": kind,
        "destination_id": destination_id,
        "destination_name": "ADT feed",
        "since": "2026-11-26T10:00:00.000Z",
        "attempts": 3,
        "last_error": "destination answered HTTP 500",
        "head_log_id": uuid::Uuid::new_v4().to_string(),
        "occurred_at": "2026-11-26T10:00:07.000Z",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tail_prints_alerts_from_the_beginning_or_from_now_on() {
    let kafka = KafkaSettings {
        brokers: carrier_testkit::test_brokers(),
        topic_prefix: format!("{}.", carrier_testkit::unique("t")),
        ..KafkaSettings::default()
    };
    carrier_testkit::stack::create_topics(&kafka, 1).await;
    let topic = Topics::new(&kafka).notifications;
    let producer = producer::create(&kafka, "carrierctl-test", Ordering::PerRequest).expect("a producer");
    let publish = |alert: Value| {
        let producer = producer.clone();
        let topic = topic.clone();
        async move {
            let key = alert["destination_id"].as_str().unwrap().to_string();
            producer::send(
                &producer,
                &topic,
                &key,
                alert.to_string().as_bytes(),
                None,
                WhenFull::Wait,
            )
            .await
            .expect("the alert is written");
        }
    };
    let env = [
        ("CARRIER_KAFKA__BROKERS", kafka.brokers.as_str()),
        ("CARRIER_KAFKA__TOPIC_PREFIX", kafka.topic_prefix.as_str()),
    ];

    let failing = alert("failing", "d1");
    publish(failing.clone()).await;
    let run = carrierctl(
        &env,
        &[
            "notifications",
            "tail",
            "--json",
            "--from-beginning",
            "--max",
            "1",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let printed: Vec<Value> = run
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert_eq!(printed, vec![failing.clone()]);

    // The same alert for people: one line with its fields.
    let run = carrierctl(&env, &["notifications", "tail", "--from-beginning", "--max", "1"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("FAILING")
            && run.stdout.contains("ADT feed (d1)")
            && run.stdout.contains("attempts=3")
            && run
                .stdout
                .contains(r#"last_error="destination answered HTTP 500""#),
        "{run:?}"
    );

    // From the end (the default): only what is published once the tail says it is ready.
    let mut tail = command(&env, &["notifications", "tail", "--json", "--max", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("carrierctl starts");
    let mut stderr = BufReader::new(tail.stderr.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), stderr.next_line())
        .await
        .expect("the tail reports itself ready")
        .unwrap()
        .unwrap_or_default();
    assert!(ready.starts_with(&format!("tailing {topic}")), "{ready}");
    let recovered = alert("recovered", "d2");
    publish(recovered.clone()).await;
    let output = tokio::time::timeout(Duration::from_secs(30), tail.wait_with_output())
        .await
        .expect("the tail exits after one alert")
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let printed: Value = serde_json::from_slice(&output.stdout).expect("one JSON line");
    assert_eq!(
        printed, recovered,
        "the alert published before the tail started is not printed"
    );
}

/// The tail reads the deployment's `[kafka]` TLS settings from `CARRIER_KAFKA__*` (here a broker
/// behind TLS with a CA of the test's own), and says why it cannot connect without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tail_connects_with_the_tls_settings_of_the_environment_and_says_why_it_cannot_without() {
    let broker = carrier_testkit::broker::TlsBroker::start(Vec::new(), false).await;
    let kafka = KafkaSettings {
        topic_prefix: format!("{}.", carrier_testkit::unique("t")),
        ..broker.settings()
    };
    carrier_testkit::stack::create_topics(&kafka, 1).await;
    let topic = Topics::new(&kafka).notifications;
    let producer = producer::create(&kafka, "carrierctl-test", Ordering::PerRequest).expect("a producer");
    let failing = alert("failing", "d1");
    producer::send(
        &producer,
        &topic,
        "d1",
        failing.to_string().as_bytes(),
        None,
        WhenFull::Wait,
    )
    .await
    .expect("the alert is written over TLS");

    let ca = broker.pki.ca_path().display().to_string();
    let with_ca = [
        ("CARRIER_KAFKA__BROKERS", kafka.brokers.as_str()),
        ("CARRIER_KAFKA__TOPIC_PREFIX", kafka.topic_prefix.as_str()),
        ("CARRIER_KAFKA__SECURITY_PROTOCOL", "ssl"),
        ("CARRIER_KAFKA__SSL_CA_LOCATION", ca.as_str()),
    ];
    let tail = [
        "notifications",
        "tail",
        "--json",
        "--from-beginning",
        "--max",
        "1",
    ];
    let run = carrierctl(&with_ca, &tail).await;
    assert_eq!(run.code, 0, "{run:?}");
    let printed: Value = serde_json::from_str(run.stdout.trim()).expect("a JSON line");
    assert_eq!(printed, failing);

    // Without the CA: exit 3 (unreachable) with the handshake's reason.
    let run = carrierctl(&with_ca[..3], &tail).await;
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("cannot reach Kafka at localhost:"), "{run:?}");
    assert!(run.stderr.contains("certificate verify failed"), "{run:?}");

    // A setting that cannot work: exit 2, naming it.
    let mut scram_without_sasl = with_ca.to_vec();
    scram_without_sasl.push(("CARRIER_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512"));
    let run = carrierctl(&scram_without_sasl, &tail).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("kafka.sasl_mechanism SCRAM-SHA-512 needs kafka.security_protocol sasl_ssl"),
        "{run:?}"
    );
}
