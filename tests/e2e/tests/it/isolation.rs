//! Isolation: a destination that is slow or failing holds only its own line, also when it
//! shares a partition of `carrier.deliveries` with healthy destinations and its backlog is
//! larger than what a partition may hold in memory.

use std::time::Duration;

use carrier_testkit::client::{message, Api};
use carrier_testkit::receiver::Receiver;
use carrier_testkit::stack::{Stack, StackOptions, TEST_PARTITIONS};

use crate::assert_raw_order;

/// A destination of `organization` at `url` whose tasks land in `partition`: destinations are
/// created until one hashes there (the producers' murmur2 of the destination ID).
async fn destination_in_partition(
    api: &Api,
    organization: &str,
    url: &str,
    environment: &str,
    partition: i32,
) -> String {
    loop {
        let destination = api.create_destination(organization, url, environment).await;
        let id = destination["id"].as_str().unwrap().to_string();
        if carrier_kafka::partitioner::partition_for(id.as_bytes(), TEST_PARTITIONS) == partition {
            return id;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_staging_destination_does_not_hold_production_destinations_of_its_partition() {
    const STAGING_MESSAGES: usize = 200;
    const PRODUCTION_MESSAGES: usize = 30;
    // A partition holds at most 50 unfinished tasks in memory: far fewer than the staging backlog.
    let stack = Stack::start(StackOptions {
        delivery_max_pending: 50,
        ..StackOptions::default()
    })
    .await;
    let api = &stack.api;
    let failing = Receiver::start().await;
    failing.respond_with(500, r#"{"Meta":{"Errors":[{"Text":"staging is down"}]}}"#);
    let healthy = Receiver::start().await;
    let organization = api.create_organization("Shared Partition Hospital").await;

    let staging_source = api.create_source(&organization, "staging").await;
    let staging = api
        .create_destination(&organization, &failing.url("staging"), "staging")
        .await;
    let staging_id = staging["id"].as_str().unwrap().to_string();
    api.subscribe(&staging_source.id, &staging_id, "Lab").await;
    let partition = carrier_kafka::partitioner::partition_for(staging_id.as_bytes(), TEST_PARTITIONS);
    let production_source = api.create_source(&organization, "production").await;
    let production_id = destination_in_partition(
        api,
        &organization,
        &healthy.url("production"),
        "production",
        partition,
    )
    .await;
    api.subscribe(&production_source.id, &production_id, "Results")
        .await;

    // Each staging message fails twice (one retry) before the next goes: a slow drain.
    let staging_token = api.token(&staging_source).await;
    for sequence in 0..STAGING_MESSAGES {
        let (status, response) = api.send(&staging_token, &message("Lab", sequence)).await;
        assert_eq!(status, 200, "{response}");
    }
    let production_token = api.token(&production_source).await;
    for sequence in 0..PRODUCTION_MESSAGES {
        let (status, response) = api.send(&production_token, &message("Results", sequence)).await;
        assert_eq!(status, 200, "{response}");
    }

    carrier_testkit::eventually(
        Duration::from_secs(120),
        "every production message, behind the staging backlog in the same partition",
        || {
            let count = healthy.received_on("production").len();
            async move { (count >= PRODUCTION_MESSAGES).then_some(()) }
        },
    )
    .await;
    let staging_tried = failing.received_on("staging").len() / 2;
    println!("staging messages tried when production was done: {staging_tried} of {STAGING_MESSAGES}");
    assert!(
        staging_tried < STAGING_MESSAGES * 3 / 4,
        "the production destination waited for the failing staging one to drain \
         ({staging_tried} of {STAGING_MESSAGES} staging messages tried first)"
    );
    let expected: Vec<u64> = (0..PRODUCTION_MESSAGES as u64).collect();
    assert_raw_order(&healthy, "production", &expected);
    stack.stop().await;
}

/// A failing staging head waits out its retry delay (5 s by default) while its destination's
/// later tasks queue behind it. Unparked, it held its partition's committed offset the whole
/// time, and a crash redid everything the partition delivered since (the fault matrix's
/// kill-delivery: 3,555 duplicates at a healthy destination sharing a partition with an
/// always-failing staging one). Its head is parked at its first failure now, so the partition's
/// commits move past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_staging_head_waiting_for_its_retry_does_not_hold_its_partitions_commits() {
    const MESSAGES: usize = 20;
    let mut options = StackOptions {
        delivery_partitions: 1,
        ..StackOptions::default()
    };
    options.retry.non_production_retry_ms = 60_000;
    let stack = Stack::start(options).await;
    let api = &stack.api;
    let failing = Receiver::start().await;
    failing.respond_with(500, "down");
    let healthy = Receiver::start().await;
    let organization = api.create_organization("Commit Hospital").await;
    let staging = api.create_source(&organization, "staging").await;
    let production = api.create_source(&organization, "production").await;
    api.subscribed_destination(&organization, &staging, &failing.url("s"), "staging", "Results")
        .await;
    api.subscribed_destination(
        &organization,
        &production,
        &healthy.url("p"),
        "production",
        "Results",
    )
    .await;
    let (staging_token, production_token) = (api.token(&staging).await, api.token(&production).await);
    for sequence in 0..MESSAGES {
        for token in [&staging_token, &production_token] {
            let (status, body) = api.send(token, &message("Results", sequence)).await;
            assert_eq!(status, 200, "{body}");
        }
    }
    // Every task is either delivered or parked: the committed offset reaches the partition's end
    // long before the staging head's retry (60 s) comes.
    let tasks = (2 * MESSAGES) as i64;
    let sql = format!(
        "SELECT COALESCE((SELECT committed_offset FROM partition_leases WHERE group_id = '{}-delivery' AND partition = 0), -1)",
        stack.prefix
    );
    carrier_testkit::eventually(
        Duration::from_secs(30),
        "the commit past the failing head",
        || {
            let (stack, sql) = (&stack, &sql);
            async move { (stack.count(sql).await >= tasks).then_some(()) }
        },
    )
    .await;
    assert_eq!(
        crate::first_arrivals(&crate::sequences(&healthy.received(), None)).len(),
        MESSAGES
    );
    stack.stop().await;
}
