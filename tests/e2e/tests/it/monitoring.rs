//! A real Prometheus scrapes the four services and evaluates Carrier's own alert rules
//! (`deploy/prometheus/carrier-rules.yml`, with every `for:` shortened to nothing): while a
//! production destination keeps failing, `CarrierDestinationsFailing` fires for the delivery job
//! with the destination counted; once the receiver accepts again, it ends. The consumer lag
//! series exist for every partition the delivery process works on.
//!
//! Ingress, router and notifier run in this process and share its metrics registry; delivery
//! runs as a process of its own, so the held-destination series come from the delivery job only.

use std::time::Duration;

use carrier_testkit::client::message;
use carrier_testkit::prometheus::{Prometheus, Target};
use carrier_testkit::receiver::Receiver;
use carrier_testkit::stack::{Stack, StackOptions};
use serde_json::Value;

/// The rules file with every `for:` set to 0s (the expressions as they ship), in `dir`.
fn rules_without_waits(dir: &std::path::Path) -> std::path::PathBuf {
    let shipped = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/prometheus/carrier-rules.yml"
    );
    let rules = std::fs::read_to_string(shipped).expect("deploy/prometheus/carrier-rules.yml");
    let shortened: String = rules
        .lines()
        .map(|line| match line.trim_start().strip_prefix("for: ") {
            Some(_) => format!("{}for: 0s", &line[..line.len() - line.trim_start().len()]),
            None => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(rules, shortened, "the rules have `for:` clauses to shorten");
    let path = dir.join("carrier-rules.yml");
    std::fs::write(&path, shortened).expect("rules copy");
    path
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

/// The firing `CarrierDestinationsFailing` alerts.
fn failing_alerts(alerts: &[Value]) -> Vec<&Value> {
    alerts
        .iter()
        .filter(|alert| {
            alert["labels"]["alertname"] == "CarrierDestinationsFailing" && alert["state"] == "firing"
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_failing_destinations_alert_fires_while_a_production_destination_is_held() {
    let stack = Stack::start(StackOptions {
        delivery_in_process: false,
        ..Default::default()
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.respond_with(500, "down for maintenance");
    let sender = stack
        .api
        .sender("monitoring", "production", &receiver.url("/hook"), "HL7v2")
        .await;

    let (dir, delivery_port) = carrier_testkit::scratch_dir_and_port("carrier-monitoring-");
    let _delivery = stack.spawn_delivery_process_serving(&format!("127.0.0.1:{delivery_port}"));
    let rules = rules_without_waits(&dir);
    let prometheus = Prometheus::start(
        &[
            Target {
                job: "carrier-ingress",
                address: host_port(&stack.ingress_admin_url),
            },
            Target {
                job: "carrier-router",
                address: host_port(&stack.router_admin_url),
            },
            Target {
                job: "carrier-delivery",
                address: format!("127.0.0.1:{delivery_port}"),
            },
            Target {
                job: "carrier-notifier",
                address: host_port(&stack.notifier_admin_url),
            },
        ],
        &rules,
    )
    .await;
    carrier_testkit::eventually(Duration::from_secs(60), "all four targets scraped", || async {
        let jobs = prometheus.healthy_jobs().await;
        (jobs
            == [
                "carrier-delivery",
                "carrier-ingress",
                "carrier-notifier",
                "carrier-router",
            ])
        .then_some(())
    })
    .await;
    // Quiet while nothing is held: the gauge is scraped (0) and the rule has been evaluated.
    carrier_testkit::eventually(Duration::from_secs(30), "the held gauge scraped at 0", || async {
        let held = prometheus
            .query_value(
                r#"job:carrier_delivery_held_destinations:sum{job="carrier-delivery",reason="failing"}"#,
            )
            .await?;
        (held == 0.0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        failing_alerts(&prometheus.alerts().await).is_empty(),
        "nothing is held yet: {:?}",
        prometheus.alerts().await
    );

    let (status, answer) = stack.api.send(&sender.token, &message("HL7v2", 1)).await;
    assert_eq!(status, 200, "{answer}");
    let alert = carrier_testkit::eventually(
        Duration::from_secs(90),
        "CarrierDestinationsFailing to fire",
        || async {
            failing_alerts(&prometheus.alerts().await)
                .first()
                .map(|alert| (*alert).clone())
        },
    )
    .await;
    assert_eq!(alert["labels"]["job"], "carrier-delivery", "{alert}");
    assert_eq!(alert["labels"]["reason"], "failing", "{alert}");
    assert_eq!(alert["labels"]["severity"], "warning", "{alert}");
    assert_eq!(
        alert["value"].as_str().and_then(|v| v.parse::<f64>().ok()),
        Some(1.0),
        "{alert}"
    );
    assert!(
        alert["annotations"]["runbook_url"]
            .as_str()
            .is_some_and(|url| url.ends_with("docs/runbooks/CarrierDestinationsFailing.md")),
        "{alert}"
    );
    let firing = failing_alerts(&prometheus.alerts().await).len();
    assert_eq!(firing, 1, "one alert, for the delivery job only");

    // The consumer gauges the lag alerts read: every partition of the deliveries topic worked on
    // by the delivery process has a lag series (from librdkafka's statistics, every 5 s), and the
    // topic's partition count is known.
    carrier_testkit::eventually(Duration::from_secs(60), "the delivery lag series", || async {
        let partitions = prometheus
            .query_value(r#"max(carrier_consumer_topic_partitions{job="carrier-delivery"})"#)
            .await?;
        let series = prometheus
            .query_value(r#"count(carrier_consumer_lag_records{job="carrier-delivery"})"#)
            .await?;
        (partitions > 0.0 && series == partitions).then_some(())
    })
    .await;

    // The receiver accepts again: the held head is delivered and the alert ends.
    receiver.respond_with(200, r#"{"Meta":{"Errors":[]}}"#);
    carrier_testkit::eventually(Duration::from_secs(90), "the alert to end", || async {
        failing_alerts(&prometheus.alerts().await)
            .is_empty()
            .then_some(())
    })
    .await;
    drop(prometheus);
    let _ = std::fs::remove_dir_all(dir);
}
