//! `carrierctl admin`: migrations against a real Postgres, topics against the real broker, and
//! a production service refusing a schema that was not migrated.

use std::time::Duration;

use carrier_store::scratch::ScratchDatabase;
use serde_json::Value;

use crate::carrierctl;

/// The findings `topics --json` reports for `topic`.
fn findings(document: &Value, topic: &str) -> Vec<String> {
    document["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .find(|entry| entry["topic"] == topic)
        .unwrap_or_else(|| panic!("{topic} in {document}"))["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|finding| finding.as_str().expect("text").to_string())
        .collect()
}

#[tokio::test]
async fn migrate_brings_a_new_database_to_the_schema_a_production_service_requires() {
    let database = ScratchDatabase::empty("carrierctl_migrate").await;
    let url = database.url();
    let env = [("CARRIER_DATABASE_URL", url.as_str())];

    let schema = carrierctl(&env, &["--json", "admin", "schema"]).await;
    assert_eq!(schema.code, 1, "a new database is not current: {schema:?}");
    let pending = schema.document()["pending"].as_array().unwrap().len();
    assert!(pending >= 18, "every migration pending: {schema:?}");

    // A production service refuses it, and says what to run.
    let notifier = std::path::Path::new(env!("CARGO_BIN_EXE_carrierctl")).with_file_name("carrier-notifier");
    let refused = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(&notifier)
            .env_clear()
            .env("CARRIER_DATABASE_URL", &url)
            .env("CARRIER_KAFKA__BROKERS", carrier_testkit::test_brokers())
            .env("CARRIER_HTTP_ADDR", "127.0.0.1:0")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the notifier exits on an unmigrated schema")
    .expect("carrier-notifier runs (cargo build --workspace --bins)");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    let stdout = String::from_utf8_lossy(&refused.stdout);
    assert!(!refused.status.success(), "{stdout}{stderr}");
    assert!(
        format!("{stdout}{stderr}").contains("Run `carrierctl admin migrate` first"),
        "the refusal names the command: {stdout}{stderr}"
    );

    let migrated = carrierctl(&env, &["--json", "admin", "migrate"]).await.json();
    assert_eq!(migrated["applied"].as_array().unwrap().len(), pending);
    assert_eq!(migrated["schema"]["current"], true);
    let again = carrierctl(&env, &["--json", "admin", "migrate"]).await.json();
    assert_eq!(again["applied"], serde_json::json!([]), "nothing left to apply");
    let schema = carrierctl(&env, &["admin", "schema"]).await;
    assert_eq!(schema.code, 0, "{schema:?}");
    assert!(schema.stdout.contains("current"), "{schema:?}");

    // Postgres away: exit status 3, and the URL (which may hold a password) is not printed.
    let away = "postgres://carrier:s3cret-password@127.0.0.1:1/carrier";
    let unreachable = carrierctl(
        &[("CARRIER_DATABASE_URL", away)],
        &["admin", "migrate", "--wait-secs", "1"],
    )
    .await;
    assert_eq!(unreachable.code, 3, "{unreachable:?}");
    assert!(unreachable.stderr.contains("cannot reach"), "{unreachable:?}");
    assert!(!unreachable.stderr.contains("s3cret"), "{unreachable:?}");
    database.drop().await;
}

#[tokio::test]
async fn topics_ensure_creates_the_layout_and_check_reports_every_drift() {
    let prefix = format!("{}.", carrier_testkit::unique("ctl"));
    let brokers = carrier_testkit::test_brokers();
    // Small counts and one replica: the test broker is a single Tansu.
    let base = [
        ("CARRIER_KAFKA__BROKERS", brokers.as_str()),
        ("CARRIER_KAFKA__TOPIC_PREFIX", prefix.as_str()),
        ("CARRIER_TOPICS__INBOUND_PARTITIONS", "2"),
        ("CARRIER_TOPICS__DELIVERIES_PARTITIONS", "3"),
        ("CARRIER_TOPICS__LOG_EVENTS_PARTITIONS", "2"),
        ("CARRIER_TOPICS__NOTIFICATIONS_PARTITIONS", "1"),
        ("CARRIER_TOPICS__REPLICATION_FACTOR", "1"),
        ("CARRIER_TOPICS__MIN_INSYNC_REPLICAS", "1"),
    ];
    let with = |changes: &[(&'static str, &'static str)]| {
        let mut env: Vec<(&str, &str)> = base
            .iter()
            .filter(|(name, _)| !changes.iter().any(|(changed, _)| changed == name))
            .copied()
            .collect();
        env.extend_from_slice(changes);
        env
    };
    let deliveries = format!("{prefix}deliveries");
    let inbound = format!("{prefix}inbound");

    let check = carrierctl(&base, &["--json", "admin", "topics", "check"]).await;
    assert_eq!(check.code, 1, "{check:?}");
    assert_eq!(findings(&check.document(), &deliveries), vec!["missing"]);

    let ensure = carrierctl(&base, &["--json", "admin", "topics", "ensure"])
        .await
        .json();
    for topic in ["inbound", "deliveries", "log-events", "notifications"] {
        assert_eq!(
            findings(&ensure, &format!("{prefix}{topic}")),
            vec!["created"],
            "created as configured: {ensure}"
        );
    }
    let check = carrierctl(&base, &["admin", "topics", "check"]).await;
    assert_eq!(check.code, 0, "no drift right after ensure: {check:?}");
    assert!(check.stdout.contains("as configured"), "{check:?}");

    // Another partition count of deliveries: refused by ensure, whatever else it would do.
    let refused = carrierctl(
        &with(&[("CARRIER_TOPICS__DELIVERIES_PARTITIONS", "6")]),
        &["--json", "admin", "topics", "ensure"],
    )
    .await;
    assert_eq!(refused.code, 1, "{refused:?}");
    let text = findings(&refused.document(), &deliveries).join(" ");
    assert!(text.contains("has 3 partitions, the settings say 6"), "{text}");
    assert!(text.contains("never changes"), "{text}");

    // Drift elsewhere: ensure reports it and succeeds; check fails on it.
    let drifted = with(&[
        ("CARRIER_TOPICS__INBOUND_PARTITIONS", "4"),
        ("CARRIER_TOPICS__RETENTION_MS", "3600000"),
    ]);
    let ensure = carrierctl(&drifted, &["--json", "admin", "topics", "ensure"])
        .await
        .json();
    let text = findings(&ensure, &inbound).join(" ");
    assert!(text.contains("has 2 partitions, the settings say 4"), "{text}");
    assert!(
        text.contains("retention.ms is 604800000, the settings say 3600000"),
        "{text}"
    );
    let check = carrierctl(&drifted, &["admin", "topics", "check"]).await;
    assert_eq!(check.code, 1, "{check:?}");

    // Settings no cluster could hold: usage error before any call.
    let impossible = carrierctl(
        &with(&[("CARRIER_TOPICS__MIN_INSYNC_REPLICAS", "2")]),
        &["admin", "topics", "check"],
    )
    .await;
    assert_eq!(impossible.code, 2, "{impossible:?}");
    assert!(
        impossible.stderr.contains("min_insync_replicas"),
        "{impossible:?}"
    );
}
