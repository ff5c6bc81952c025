//! Idle partitions (`kafka.idle_after_ms`, on in the tests' stacks as in `make up`): left out of
//! fetches while nothing is written to them, woken by their producers' doorbells.

use std::time::Duration;

use carrier_testkit::client::message;
use carrier_testkit::receiver::Receiver;
use carrier_testkit::stack::{Stack, StackOptions};

/// The sum of a metric's series whose labels include each of `labels` (e.g. `topic="t.inbound"`).
async fn metric(admin_url: &str, name: &str, labels: &[&str]) -> f64 {
    let text = reqwest::get(format!("{admin_url}/metrics"))
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|line| {
            line.starts_with(&format!("{name}{{")) && labels.iter().all(|label| line.contains(label))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quiet_stack_stops_fetching_and_the_first_message_after_rings_its_way_through() {
    let stack = Stack::start(StackOptions::default()).await;
    let receiver = Receiver::start().await;
    let api = &stack.api;
    let organization = api.create_organization("Quiet Hospital").await;
    let source = api.create_source(&organization, "production").await;
    api.subscribed_destination(
        &organization,
        &source,
        &receiver.url("quiet"),
        "production",
        "PatientAdmin",
    )
    .await;
    let token = api.token(&source).await;
    let metrics_url = stack.router_admin_url.clone();
    let inbound = format!("topic=\"{}inbound\"", stack.kafka.topic_prefix);
    let deliveries = format!("topic=\"{}deliveries\"", stack.kafka.topic_prefix);

    // Nothing written yet: every partition of the router's and delivery's topics goes idle.
    for (topic, label) in [("inbound", &inbound), ("deliveries", &deliveries)] {
        carrier_testkit::eventually(Duration::from_secs(60), &format!("{topic} idle"), || {
            let metrics_url = metrics_url.clone();
            let label = label.clone();
            async move {
                let owned = metric(&metrics_url, "carrier_consumer_partitions_owned", &[&label]).await;
                let idle = metric(&metrics_url, "carrier_consumer_idle_partitions", &[&label]).await;
                (owned > 0.0 && idle == owned).then_some(())
            }
        })
        .await;
    }

    for sequence in 1..=3 {
        let (status, body) = api.send(&token, &message("PatientAdmin", sequence)).await;
        assert_eq!(status, 200, "{body}");
        carrier_testkit::eventually(Duration::from_secs(60), "the delivery", || {
            let count = receiver.received().len();
            async move { (count >= sequence).then_some(()) }
        })
        .await;
        // Quiet again before the next one, so each starts from idle partitions.
        carrier_testkit::eventually(Duration::from_secs(60), "inbound idle again", || {
            let metrics_url = metrics_url.clone();
            let inbound = inbound.clone();
            async move {
                let owned = metric(&metrics_url, "carrier_consumer_partitions_owned", &[&inbound]).await;
                let idle = metric(&metrics_url, "carrier_consumer_idle_partitions", &[&inbound]).await;
                (idle == owned).then_some(())
            }
        })
        .await;
    }

    // Ingress rang the router's doorbell, the router delivery's: heard by their consumers.
    for label in [&inbound, &deliveries] {
        let rang = metric(
            &metrics_url,
            "carrier_consumer_doorbells_total",
            &[label, "outcome=\"rang\""],
        )
        .await;
        assert!(rang >= 3.0, "{label}: doorbells heard {rang}");
    }
    let received: Vec<u64> = receiver
        .received()
        .iter()
        .map(|request| request.arrival().expect("a sequence").sequence)
        .collect();
    assert_eq!(received, vec![1, 2, 3], "each once, in order");
    stack.stop().await;
}
