//! Postgres going away under delivery: what could not be parked is parked once it is back, so a
//! held destination never keeps its backlog in memory and stalls its partition.

use std::time::Duration;

use carrier_testkit::client::message;
use carrier_testkit::fault_proxy::FaultMode;
use carrier_testkit::receiver::Receiver;
use carrier_testkit::stack::{Stack, StackOptions};

use crate::assert_raw_order;
use crate::operator::control;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pause_that_cannot_park_during_a_postgres_outage_is_parked_once_postgres_is_back() {
    const PAUSED_MESSAGES: usize = 40;
    const HEALTHY_MESSAGES: usize = 30;
    // One partition for both destinations, and room for only 20 unfinished tasks in memory: the
    // paused destination's backlog must leave memory for the healthy one to get its messages.
    let mut stack = Stack::start(StackOptions {
        delivery_in_process: false,
        delivery_partitions: 1,
        delivery_max_pending: 20,
        ..StackOptions::default()
    })
    .await;
    let (proxy, proxied_url) = stack.database_behind_proxy().await;
    stack
        .start_delivery_with(|config| config.database_url = proxied_url)
        .await;

    let api = &stack.api;
    let paused_receiver = Receiver::start().await;
    let healthy = Receiver::start().await;
    let organization = api.create_organization("Outage Pause Hospital").await;
    let source = api.create_source(&organization, "production").await;
    let paused = api
        .subscribed_destination(
            &organization,
            &source,
            &paused_receiver.url("a"),
            "production",
            "Lab",
        )
        .await;
    let paused_id = paused["id"].as_str().unwrap().to_string();
    api.subscribed_destination(&organization, &source, &healthy.url("b"), "production", "Results")
        .await;
    let token = api.token(&source).await;
    let (status, body) = control(api, &paused_id, "pause").await;
    assert_eq!(status, 200, "{body}");

    // Delivery loses Postgres; the paused destination's messages arrive and cannot be parked.
    proxy.set_mode(FaultMode::Cut);
    for sequence in 0..PAUSED_MESSAGES {
        let (status, response) = api.send(&token, &message("Lab", sequence)).await;
        assert_eq!(status, 200, "{response}");
    }
    for sequence in 0..HEALTHY_MESSAGES {
        let (status, response) = api.send(&token, &message("Results", sequence)).await;
        assert_eq!(status, 200, "{response}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.set_mode(FaultMode::Pass);

    carrier_testkit::eventually(
        Duration::from_secs(60),
        "the healthy destination's messages, behind the paused backlog in the same partition",
        || {
            let count = healthy.received_on("b").len();
            async move { (count >= HEALTHY_MESSAGES).then_some(()) }
        },
    )
    .await;
    assert_raw_order(&healthy, "b", &(0..HEALTHY_MESSAGES as u64).collect::<Vec<_>>());
    let parked = carrier_testkit::eventually(Duration::from_secs(30), "the paused backlog parked", || {
        let stack = &stack;
        let sql = format!("SELECT count(*) FROM parked_tasks WHERE destination_id = '{paused_id}'");
        async move {
            let parked = stack.count(&sql).await;
            (parked == PAUSED_MESSAGES as i64).then_some(parked)
        }
    })
    .await;
    assert_eq!(parked, PAUSED_MESSAGES as i64);
    assert!(
        paused_receiver.received().is_empty(),
        "nothing is sent while paused"
    );

    let (status, body) = control(api, &paused_id, "resume").await;
    assert_eq!(status, 200, "{body}");
    carrier_testkit::eventually(Duration::from_secs(60), "the paused backlog after resume", || {
        let count = paused_receiver.received_on("a").len();
        async move { (count >= PAUSED_MESSAGES).then_some(()) }
    })
    .await;
    assert_raw_order(
        &paused_receiver,
        "a",
        &(0..PAUSED_MESSAGES as u64).collect::<Vec<_>>(),
    );
    stack.stop().await;
}
