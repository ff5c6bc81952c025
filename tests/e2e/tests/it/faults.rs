//! Faults: the broker stopping, a delivery worker killed mid-stream.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use carrier_testkit::broker::Broker;
use carrier_testkit::client::{message, Sender};
use carrier_testkit::receiver::Receiver;
use carrier_testkit::stack::{Stack, StackOptions};

use crate::{first_arrivals, sequences};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_200_while_the_broker_is_down_and_traffic_flows_once_it_is_back() {
    let mut broker = Broker::start().await;
    // Idempotence off: Tansu 0.6 panics when an idempotent producer writes after a restart.
    let stack = Stack::start(StackOptions {
        brokers: broker.brokers(),
        enable_idempotence: false,
        ..StackOptions::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let api = &stack.api;
    let Sender { token, .. } = api
        .sender("Outage Hospital", "production", &receiver.url("d"), "Results")
        .await;

    let (status, response) = api.send(&token, &message("Results", 0)).await;
    assert_eq!(status, 200, "{response}");
    carrier_testkit::eventually(Duration::from_secs(60), "the first delivery", || {
        let count = receiver.received().len();
        async move { (count >= 1).then_some(()) }
    })
    .await;

    broker.kill().await;
    let started = Instant::now();
    let (status, response) = api.send(&token, &message("Results", 1)).await;
    assert!(
        (502..=504).contains(&status),
        "no 200 without the broker, got {status}: {response}"
    );
    assert!(response["Meta"]["Errors"][0]["Text"].is_string(), "{response}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the answer comes in bounded time"
    );

    broker.restart().await;
    let mut accepted = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut sequence = 2;
    while accepted.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "ingress accepts messages again after the broker returns"
        );
        let (status, _) = api.send(&token, &message("Results", sequence)).await;
        if status == 200 {
            accepted.push(sequence as u64);
        } else {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        sequence += 1;
    }
    carrier_testkit::eventually(Duration::from_secs(90), "deliveries after the restart", || {
        let received = first_arrivals(&sequences(&receiver.received(), None));
        let accepted = accepted.clone();
        async move { accepted.iter().all(|s| received.contains(s)).then_some(()) }
    })
    .await;
    let received = first_arrivals(&sequences(&receiver.received(), None));
    assert_eq!(received[0], 0);
    assert!(
        !received.contains(&1),
        "a message that was refused is never delivered"
    );
    let mut expected = vec![0];
    expected.extend(&accepted);
    let delivered_accepted: Vec<u64> = received
        .iter()
        .copied()
        .filter(|s| expected.contains(s))
        .collect();
    assert_eq!(delivered_accepted, expected, "accepted messages arrive in order");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_delivery_worker_mid_stream_loses_nothing_and_keeps_order() {
    const MESSAGES: usize = 300;
    let stack = Stack::start(StackOptions {
        delivery_in_process: false,
        ..StackOptions::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let api = &stack.api;
    let organization = api.create_organization("Crash Clinic").await;
    let source = api.create_source(&organization, "production").await;
    for path in ["a", "b"] {
        api.subscribed_destination(
            &organization,
            &source,
            &receiver.url(path),
            "production",
            "Results",
        )
        .await;
    }
    let token = api.token(&source).await;
    for sequence in 0..MESSAGES {
        let (status, response) = api.send(&token, &message("Results", sequence)).await;
        assert_eq!(status, 200, "{response}");
    }

    let mut worker = stack.spawn_delivery_process();
    carrier_testkit::eventually(Duration::from_secs(60), "deliveries to start", || {
        let count = receiver.received().len();
        async move { (count >= 40).then_some(()) }
    })
    .await;
    worker.start_kill().expect("SIGKILL");
    worker.wait().await.expect("worker exits");
    let at_kill = receiver.received().len();
    assert!(
        at_kill < MESSAGES * 2,
        "the worker was killed mid-stream ({at_kill} delivered)"
    );

    let mut replacement = stack.spawn_delivery_process();
    let expected: Vec<u64> = (0..MESSAGES as u64).collect();
    carrier_testkit::eventually(
        Duration::from_secs(120),
        "every message at both destinations",
        || {
            let done = ["a", "b"]
                .iter()
                .all(|path| first_arrivals(&sequences(&receiver.received_on(path), None)).len() == MESSAGES);
            async move { done.then_some(()) }
        },
    )
    .await;
    for path in ["a", "b"] {
        crate::assert_raw_order(&receiver, path, &expected);
    }
    let _ = replacement.start_kill();
    let _ = replacement.wait().await;
    stack.stop().await;
}

/// Issue 10 §0: on Tansu's group coordinator a member killed with SIGKILL kept its partitions
/// (the survivor went on with its own half only, the dead member's destinations got nothing).
/// With leases the survivor takes the dead member's partitions once their leases expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_of_two_delivery_replicas_killed_for_good_its_partitions_go_to_the_other() {
    const MESSAGES: usize = 200;
    const DESTINATIONS: usize = 6;
    let stack = Stack::start(StackOptions {
        delivery_in_process: false,
        ..StackOptions::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let api = &stack.api;
    let organization = api.create_organization("Two Replica Clinic").await;
    let source = api.create_source(&organization, "production").await;
    let paths: Vec<String> = (0..DESTINATIONS).map(|n| format!("d{n}")).collect();
    for path in &paths {
        api.subscribed_destination(
            &organization,
            &source,
            &receiver.url(path),
            "production",
            "Results",
        )
        .await;
    }
    let token = api.token(&source).await;
    let mut first = stack.spawn_delivery_process();
    let mut second = stack.spawn_delivery_process();
    for sequence in 0..MESSAGES / 2 {
        let (status, response) = api.send(&token, &message("Results", sequence)).await;
        assert_eq!(status, 200, "{response}");
    }
    carrier_testkit::eventually(Duration::from_secs(60), "both halves flowing", || {
        let started = paths.iter().all(|path| !receiver.received_on(path).is_empty());
        async move { started.then_some(()) }
    })
    .await;
    // Each replica owns part of the partitions (so the one killed leaves some behind).
    let pool = carrier_store::connect_and_migrate(&stack.database_url, 2, Duration::from_secs(30))
        .await
        .expect("database");
    let group = format!("{}-delivery", stack.prefix);
    let topic = format!("{}deliveries", stack.kafka.topic_prefix);
    carrier_testkit::eventually(Duration::from_secs(60), "two owners of the partitions", || {
        let (pool, group, topic) = (pool.clone(), group.clone(), topic.clone());
        async move {
            let owners = carrier_store::leases::owners(&pool, &group, &topic).await.ok()?;
            let distinct: HashSet<String> = owners.into_iter().filter_map(|(_, owner, _)| owner).collect();
            (distinct.len() == 2).then_some(())
        }
    })
    .await;
    first.start_kill().expect("SIGKILL");
    first.wait().await.expect("worker exits");
    for sequence in MESSAGES / 2..MESSAGES {
        let (status, response) = api.send(&token, &message("Results", sequence)).await;
        assert_eq!(status, 200, "{response}");
    }
    let expected: Vec<u64> = (0..MESSAGES as u64).collect();
    carrier_testkit::eventually(
        Duration::from_secs(90),
        "every message at every destination, through the survivor",
        || {
            let done = paths
                .iter()
                .all(|path| first_arrivals(&sequences(&receiver.received_on(path), None)).len() == MESSAGES);
            async move { done.then_some(()) }
        },
    )
    .await;
    for path in &paths {
        crate::assert_raw_order(&receiver, path, &expected);
    }
    let _ = second.start_kill();
    let _ = second.wait().await;
    stack.stop().await;
}

/// SIGTERM: the worker drains its in-flight requests, commits, and leaves the group.
pub(crate) async fn terminate(child: &mut tokio::process::Child) {
    let pid = child.id().expect("running").to_string();
    let status = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill runs");
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("graceful exit in time");
    assert!(
        exit.expect("exit status").success(),
        "a SIGTERM'd worker exits cleanly"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_joining_and_leaving_keep_one_request_in_flight_per_destination_and_order() {
    const MESSAGES: usize = 150;
    const DESTINATIONS: usize = 4;
    let stack = Stack::start(StackOptions {
        delivery_in_process: false,
        ..StackOptions::default()
    })
    .await;
    let receiver = Receiver::start().await;
    // Slow answers keep requests in flight while partitions move.
    receiver.respond_after(Duration::from_millis(30));
    let api = &stack.api;
    let organization = api.create_organization("Scaling Hospital").await;
    let source = api.create_source(&organization, "production").await;
    for index in 0..DESTINATIONS {
        api.subscribed_destination(
            &organization,
            &source,
            &receiver.url(&format!("d{index}")),
            "production",
            "Results",
        )
        .await;
    }
    let token = api.token(&source).await;
    for sequence in 0..MESSAGES {
        let (status, _) = api.send(&token, &message("Results", sequence)).await;
        assert_eq!(status, 200);
    }

    let mut first = stack.spawn_delivery_process();
    carrier_testkit::eventually(Duration::from_secs(60), "deliveries to start", || {
        let count = receiver.received().len();
        async move { (count >= 40).then_some(()) }
    })
    .await;
    // A second worker joins: partitions are split between the two mid-stream.
    let mut second = stack.spawn_delivery_process();
    carrier_testkit::eventually(Duration::from_secs(60), "progress with two workers", || {
        let count = receiver.received().len();
        async move { (count >= 250).then_some(()) }
    })
    .await;
    // The first leaves: the second takes every partition.
    terminate(&mut first).await;

    let expected: Vec<u64> = (0..MESSAGES as u64).collect();
    carrier_testkit::eventually(
        Duration::from_secs(120),
        "every message at every destination",
        || {
            let done = (0..DESTINATIONS).all(|index| {
                first_arrivals(&sequences(&receiver.received_on(&format!("d{index}")), None)).len()
                    == MESSAGES
            });
            async move { done.then_some(()) }
        },
    )
    .await;
    for index in 0..DESTINATIONS {
        let path = format!("d{index}");
        let arrivals = sequences(&receiver.received_on(&path), None);
        assert_eq!(
            first_arrivals(&arrivals),
            expected,
            "{path}: complete and in order"
        );
        assert_eq!(arrivals.len(), MESSAGES, "{path}: no duplicates without a crash");
        assert_eq!(
            receiver.max_in_flight(&path),
            1,
            "{path}: never two requests at once"
        );
    }
    terminate(&mut second).await;
    stack.stop().await;
}

/// The value of `carrier_router_halted_partitions` in this process's registry (the stack's
/// services run in the test's process).
fn halted_partitions() -> f64 {
    carrier_telemetry::prometheus::gather()
        .iter()
        .find(|family| family.name() == "carrier_router_halted_partitions")
        .and_then(|family| family.get_metric().first().map(|m| m.get_gauge().get_value()))
        .unwrap_or(0.0)
}

/// Issue 10 §9a: a delivery task write that fails for good (here a record over the router's
/// `max_record_bytes`, as a broker refusing its size would) used to be skipped while the router
/// went on routing the source's later messages: they reached the destination ahead of it. The
/// inbound partition now halts at the failed message, and a router started again once the cause
/// is fixed routes from it, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_write_that_fails_for_good_halts_its_partition_until_fixed_then_resumes_in_order() {
    let mut stack = Stack::start(StackOptions {
        router_max_record_bytes: Some(64 * 1024),
        ..StackOptions::default()
    })
    .await;
    let api = stack.api.clone();
    let receiver = Receiver::start().await;
    let Sender { token, .. } = api
        .sender("Halting Hospital", "production", &receiver.url("a"), "Results")
        .await;
    // Small enough for ingress's records, too large for the router's.
    let mut large = message("Results", 0);
    large["Padding"] = serde_json::Value::String("x".repeat(100 * 1024));
    let (status, response) = api.send(&token, &large).await;
    assert_eq!(status, 200, "{response}");
    for sequence in 1..5 {
        let (status, response) = api.send(&token, &message("Results", sequence)).await;
        assert_eq!(status, 200, "{response}");
    }
    carrier_testkit::eventually(
        Duration::from_secs(30),
        "the router to halt the partition",
        || async { (halted_partitions() >= 1.0).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        receiver.received().is_empty(),
        "nothing may overtake the failed message: {:?}",
        sequences(&receiver.received(), None)
    );

    // The operator fixes the cause (the size limit) and starts the router again.
    stack.stop_services().await;
    stack.options.router_max_record_bytes = None;
    stack.start_services().await;
    carrier_testkit::eventually(Duration::from_secs(60), "all five to arrive", || {
        let delivered = first_arrivals(&sequences(&receiver.received(), None)).len();
        async move { (delivered >= 5).then_some(()) }
    })
    .await;
    crate::assert_raw_order(&receiver, "a", &[0, 1, 2, 3, 4]);
    stack.stop().await;
}

/// Issue 10 §4: a destination may take longer to answer (timeouts up to 60 s) than a hand-over
/// waits for work in flight (`drain_timeout`, 10 s in the tests' stack). The leaving worker must
/// not go on with that request while the next owner starts: its lease is left to expire, which
/// abandons the request first, and only then does the other worker take the partition and send
/// the task again. Counted at the receiver: never two requests in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_outliving_the_hand_over_drain_is_abandoned_before_the_next_owner_sends() {
    const MESSAGES: usize = 5;
    let stack = Stack::start(StackOptions {
        delivery_in_process: false,
        delivery_partitions: 1,
        ..StackOptions::default()
    })
    .await;
    let api = &stack.api;
    let receiver = Receiver::start().await;
    let Sender {
        token, destination, ..
    } = api
        .sender(
            "Slow Receiver Hospital",
            "production",
            &receiver.url("a"),
            "Results",
        )
        .await;
    let destination_id = destination["id"].as_str().expect("destination id");
    let (status, body) = api
        .admin(
            reqwest::Method::PATCH,
            &format!("/v1/destinations/{destination_id}"),
            Some(&serde_json::json!({ "timeout_ms": 60_000 })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Longer than the drain, and than the lease (6 s): only abandoning it ends it in time.
    receiver.respond_after(Duration::from_secs(30));

    let mut leaving = stack.spawn_delivery_process();
    for sequence in 0..MESSAGES {
        let (status, response) = api.send(&token, &message("Results", sequence)).await;
        assert_eq!(status, 200, "{response}");
    }
    carrier_testkit::eventually(Duration::from_secs(60), "the first request in flight", || {
        let count = receiver.received().len();
        async move { (count >= 1).then_some(()) }
    })
    .await;
    let mut staying = stack.spawn_delivery_process();
    tokio::time::sleep(Duration::from_secs(2)).await;
    receiver.respond_after(Duration::ZERO);
    // Shut down with the request in flight: the drain gives up after 10 s, the lease expires.
    let started = Instant::now();
    terminate(&mut leaving).await;
    println!("the leaving worker exited after {:?}", started.elapsed());

    let expected: Vec<u64> = (0..MESSAGES as u64).collect();
    carrier_testkit::eventually(Duration::from_secs(90), "every message", || {
        let delivered = first_arrivals(&sequences(&receiver.received(), None)).len();
        async move { (delivered >= MESSAGES).then_some(()) }
    })
    .await;
    crate::assert_raw_order(&receiver, "a", &expected);
    terminate(&mut staying).await;
    stack.stop().await;
}
