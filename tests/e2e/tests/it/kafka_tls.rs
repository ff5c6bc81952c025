//! Kafka over TLS and SASL against a real broker: a Tansu broker of the test's own behind
//! stunnel (Tansu 0.6 speaks no TLS itself: its `--cert`/`--key` options are parsed but not
//! used), advertising the TLS address, with a CA and certificates made by the test. Every
//! client Carrier builds goes through `carrier_kafka::client`, so these show the settings of
//! `[kafka]` reach producers, consumers, readers and admin clients alike, in the services and
//! as a child process that loads them from `CARRIER_KAFKA__*` variables.
//!
//! SASL: Tansu 0.6 implements SaslHandshake/SaslAuthenticate (`--authentication`) with SCRAM
//! checked against the users it stores (`tansu user create`). Its build offers SCRAM-SHA-512,
//! SCRAM-SHA-256 and OAUTHBEARER (which it then refuses as an unknown mechanism), not PLAIN: PLAIN
//! and OAUTHBEARER are covered by `carrier_kafka::client`'s unit tests only.

use std::time::Duration;

use carrier_config::{EndpointIdentification, KafkaSettings, SaslMechanism, Secret, SecurityProtocol};
use carrier_kafka::admin::{self, ConnectionError};
use carrier_kafka::producer::{self, Ordering, WhenFull};
use carrier_testkit::broker::{Scram, TlsBroker};
use carrier_testkit::client::message;
use carrier_testkit::receiver::Receiver;
use carrier_testkit::stack::{Stack, StackOptions};
use carrier_testkit::stunnel::Stunnel;

/// How long a client that cannot get in is given before its failure is read.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);

/// What a client that should not get in reports: the error, with librdkafka's reason.
async fn refusal(settings: &KafkaSettings) -> ConnectionError {
    match admin::check_connection(settings, REFUSAL_TIMEOUT).await {
        Ok(brokers) => panic!("the client got in ({brokers} broker(s)) with {settings:?}"),
        Err(error) => {
            println!("refused as expected: {error}");
            error
        }
    }
}

/// Writes a record through a Carrier producer and reads it back through the reader the
/// consumers use, on a topic created by the admin client: all three over `settings`.
async fn produce_and_read_back(settings: &KafkaSettings) {
    let topic = carrier_testkit::unique("tls-");
    admin::ensure_topics(settings, &[(&topic, 2)])
        .await
        .expect("the admin client creates a topic");
    assert_eq!(
        admin::partition_count(settings, &topic).await.expect("metadata"),
        2
    );
    let producer = producer::create(settings, "carrier-tls-test", Ordering::Strict).expect("a producer");
    let (partition, offset) = producer::send(&producer, &topic, "key", b"over tls", None, WhenFull::Wait)
        .await
        .expect("the broker acknowledges the record");
    let read = admin::fetch_one(settings, &topic, partition, offset, Duration::from_secs(10))
        .await
        .expect("the reader fetches");
    assert_eq!(read.as_deref(), Some(&b"over tls"[..]));
    let records = carrier_testkit::topic::read_all(settings, &topic).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].payload, b"over tls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_client_and_service_works_over_tls_with_the_ca() {
    let broker = TlsBroker::start(Vec::new(), false).await;
    let settings = broker.settings();
    carrier_kafka::client::validate(&settings).expect("the settings are valid");
    assert_eq!(
        admin::check_connection(&settings, Duration::from_secs(10))
            .await
            .expect("the broker answers over TLS"),
        1
    );
    produce_and_read_back(&settings).await;

    // The whole pipeline on TLS: router, notifier and ingress in this process, delivery as a
    // child process that reads its TLS settings from CARRIER_KAFKA__* variables.
    let stack = Stack::start(StackOptions {
        brokers: settings.brokers.clone(),
        kafka: settings.clone(),
        delivery_in_process: false,
        ..StackOptions::default()
    })
    .await;
    assert_eq!(stack.kafka.security_protocol, SecurityProtocol::Ssl);
    let mut worker = stack.spawn_delivery_process();
    let receiver = Receiver::start().await;
    let sender = stack
        .api
        .sender("TLS Clinic", "production", &receiver.url("d"), "Results")
        .await;
    let (status, response) = stack.api.send(&sender.token, &message("Results", 1)).await;
    assert_eq!(status, 200, "{response}");
    let log_id = response["Meta"]["Logs"][0]["ID"]
        .as_str()
        .expect("a log ID")
        .to_string();
    carrier_testkit::eventually(Duration::from_secs(60), "the message to arrive", || {
        let arrived = receiver.received_on("/d").len();
        async move { (arrived == 1).then_some(()) }
    })
    .await;
    // The notifier read the delivery's log event (over TLS) into the log store.
    let api = stack.api.clone();
    carrier_testkit::eventually(Duration::from_secs(60), "the log to be delivered", || {
        let (api, token, log_id) = (api.clone(), sender.token.clone(), log_id.clone());
        async move {
            let (status, log) = api.log(&token, &log_id).await;
            (status == 200 && log["status"] == "delivered").then_some(())
        }
    })
    .await;
    let _ = worker.start_kill();
    let _ = worker.wait().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_certificate_for_another_name_or_from_another_ca_is_refused() {
    let broker = TlsBroker::start(Vec::new(), false).await;
    // The same broker behind a second TLS listener whose certificate (from the same CA) names
    // another host.
    let elsewhere = broker.pki.issue("elsewhere", &["kafka.elsewhere.example"]);
    let misnamed = Stunnel::start(&elsewhere.cert_path, &elsewhere.key_path, broker.broker.port).await;
    let to_misnamed = KafkaSettings {
        brokers: format!("localhost:{}", misnamed.port),
        ..broker.settings()
    };
    let error = refusal(&to_misnamed).await;
    let reason = error.reason.clone().unwrap_or_default();
    // librdkafka words it as its log line ("SSL handshake failed: ...") or as the global error
    // that races it ("... certificate verify failed (after 4ms in state SSL_HANDSHAKE)").
    assert!(
        reason.contains("SSL handshake failed") || reason.contains("SSL_HANDSHAKE"),
        "{error}"
    );
    assert!(reason.contains("certificate verify failed"), "{error}");

    // Only the name is wrong: without hostname verification the same listener lets the client
    // in (which is why `ssl_endpoint_identification` stays `https`).
    let unchecked = KafkaSettings {
        ssl_endpoint_identification: EndpointIdentification::None,
        ..to_misnamed.clone()
    };
    admin::check_connection(&unchecked, Duration::from_secs(10))
        .await
        .expect("the CA's certificate is accepted when names are not checked");

    // The right name but a CA the client does not trust (the system's store instead of ours).
    let unknown_ca = KafkaSettings {
        ssl_ca_location: None,
        ..broker.settings()
    };
    let error = refusal(&unknown_ca).await;
    assert!(
        error
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("certificate verify failed"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_to_the_tls_listener_fails() {
    let broker = TlsBroker::start(Vec::new(), false).await;
    let plaintext = KafkaSettings {
        brokers: broker.brokers(),
        ..KafkaSettings::default()
    };
    // The TLS listener drops the plaintext request; librdkafka says no more than that the
    // broker is down (no hint at security.protocol in this case).
    let error = refusal(&plaintext).await;
    assert!(error.to_string().contains("brokers are down"), "{error}");
    let producer =
        producer::create(&plaintext, "carrier-tls-test", Ordering::PerRequest).expect("a producer");
    let topic = carrier_testkit::unique("tls-");
    let sent = producer::send(&producer, &topic, "key", b"x", None, WhenFull::Fail).await;
    assert!(sent.is_err(), "a plaintext produce to a TLS port succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_presents_the_client_certificate_with_an_encrypted_key() {
    let broker = TlsBroker::start(Vec::new(), true).await;
    let client = broker.pki.issue("carrier-client", &["carrier"]);
    // The client key encrypted with a passphrase (PKCS#8, AES-256), as `ssl_key_password` reads.
    let encrypted_key = client.key_path.with_extension("encrypted.key");
    let status = std::process::Command::new("openssl")
        .args([
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-passout",
            "pass:key-passphrase",
            "-in",
        ])
        .arg(&client.key_path)
        .arg("-out")
        .arg(&encrypted_key)
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl pkcs8");
    let without_certificate = broker.settings();
    refusal(&without_certificate).await;
    let with_certificate = KafkaSettings {
        ssl_certificate_location: Some(client.cert_path.clone()),
        ssl_key_location: Some(encrypted_key),
        ssl_key_password: Some(Secret::from("key-passphrase")),
        ..without_certificate
    };
    carrier_kafka::client::validate(&with_certificate).expect("the settings are valid");
    produce_and_read_back(&with_certificate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scram_over_tls_logs_in_and_a_wrong_password_or_none_is_refused() {
    let password_512 = carrier_testkit::unique("scram-512-");
    let password_256 = carrier_testkit::unique("scram-256-");
    let broker = TlsBroker::start(
        vec![
            ("carrier".into(), password_512.clone(), Scram::Sha512),
            ("carrier256".into(), password_256.clone(), Scram::Sha256),
        ],
        false,
    )
    .await;
    let scram_512 = KafkaSettings {
        security_protocol: SecurityProtocol::SaslSsl,
        sasl_mechanism: Some(SaslMechanism::ScramSha512),
        sasl_username: Some("carrier".into()),
        sasl_password: Some(Secret::from(password_512.as_str())),
        ..broker.settings()
    };
    carrier_kafka::client::validate(&scram_512).expect("the settings are valid");
    produce_and_read_back(&scram_512).await;

    let scram_256 = KafkaSettings {
        sasl_mechanism: Some(SaslMechanism::ScramSha256),
        sasl_username: Some("carrier256".into()),
        sasl_password: Some(Secret::from(password_256.as_str())),
        ..scram_512.clone()
    };
    produce_and_read_back(&scram_256).await;

    let wrong_password = KafkaSettings {
        sasl_password: Some(Secret::from("not-the-password")),
        ..scram_512.clone()
    };
    let error = refusal(&wrong_password).await;
    let reason = error.reason.clone().unwrap_or_default();
    assert!(reason.contains("SASL"), "{error}");
    assert!(!error.to_string().contains("not-the-password"), "{error}");

    // TLS without SASL to a broker that requires it.
    refusal(&broker.settings()).await;

    // The whole pipeline on SASL_SSL with SCRAM-SHA-512.
    let stack = Stack::start(StackOptions {
        brokers: scram_512.brokers.clone(),
        kafka: scram_512.clone(),
        ..StackOptions::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let sender = stack
        .api
        .sender("SCRAM Clinic", "production", &receiver.url("d"), "Results")
        .await;
    let (status, response) = stack.api.send(&sender.token, &message("Results", 1)).await;
    assert_eq!(status, 200, "{response}");
    carrier_testkit::eventually(Duration::from_secs(60), "the message to arrive", || {
        let arrived = receiver.received_on("/d").len();
        async move { (arrived == 1).then_some(()) }
    })
    .await;
    stack.stop().await;
}
