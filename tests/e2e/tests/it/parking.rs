//! Parking: a held destination's backlog leaves worker memory for Postgres, the partition keeps
//! moving for everyone else, and the backlog drains first, in order, when the destination
//! recovers — also after the worker that parked it was killed.

use std::time::Duration;

use carrier_testkit::broker::Broker;
use carrier_testkit::client::{message, Sender};
use carrier_testkit::receiver::Receiver;
use carrier_testkit::stack::{Stack, StackOptions};

use crate::{assert_raw_order, first_arrivals, sequences};

const PARKED_ROWS: &str = "SELECT count(*) FROM parked_tasks";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_destination_is_parked_so_its_partition_keeps_moving_and_it_drains_in_order() {
    const MESSAGES: usize = 200;
    // One partition and a memory cap far below the backlog: without parking, the failing
    // destination's backlog would pause the partition and starve the healthy one.
    let options = StackOptions {
        delivery_partitions: 1,
        delivery_max_pending: 20,
        ..StackOptions::default()
    };
    let stack = Stack::start(options).await;
    let api = &stack.api;
    let failing = Receiver::start().await;
    failing.respond_with(500, "down");
    let healthy = Receiver::start().await;
    let organization = api.create_organization("Parking Hospital").await;
    let source = api.create_source(&organization, "production").await;
    for url in [failing.url("a"), healthy.url("b")] {
        api.subscribed_destination(&organization, &source, &url, "production", "Results")
            .await;
    }
    let token = api.token(&source).await;
    for sequence in 0..MESSAGES {
        let (status, response) = api.send(&token, &message("Results", sequence)).await;
        assert_eq!(status, 200, "{response}");
    }

    carrier_testkit::eventually(
        Duration::from_secs(90),
        "the healthy destination to get everything",
        || {
            let count = healthy.received().len();
            async move { (count >= MESSAGES).then_some(()) }
        },
    )
    .await;
    assert_eq!(
        sequences(&healthy.received(), None),
        (0..MESSAGES as u64).collect::<Vec<_>>()
    );
    let parked = carrier_testkit::eventually(Duration::from_secs(30), "the backlog to be parked", || {
        let stack = &stack;
        async move {
            let parked = stack.count(PARKED_ROWS).await;
            (parked == MESSAGES as i64).then_some(parked)
        }
    })
    .await;
    assert_eq!(
        parked, MESSAGES as i64,
        "the failing head and everything behind it are parked"
    );
    assert!(sequences(&failing.received(), None).iter().all(|s| *s == 0));

    failing.respond_with(200, r#"{"Meta":{"Errors":[]}}"#);
    carrier_testkit::eventually(Duration::from_secs(90), "the parked backlog to drain", || {
        let arrivals = first_arrivals(&sequences(&failing.received(), None));
        async move { (arrivals.len() >= MESSAGES).then_some(()) }
    })
    .await;
    let arrivals = sequences(&failing.received(), None);
    let successes: Vec<u64> = arrivals.iter().copied().skip_while(|s| *s == 0).collect();
    assert_eq!(
        successes,
        (1..MESSAGES as u64).collect::<Vec<_>>(),
        "after the head, the backlog in order, once each"
    );

    // Live traffic after the drain goes straight through.
    let (status, _) = api.send(&token, &message("Results", MESSAGES)).await;
    assert_eq!(status, 200);
    carrier_testkit::eventually(Duration::from_secs(30), "a live message after the drain", || {
        let last = sequences(&failing.received(), None).last().copied();
        async move { (last == Some(MESSAGES as u64)).then_some(()) }
    })
    .await;
    carrier_testkit::eventually(Duration::from_secs(30), "parked rows to be removed", || {
        let stack = &stack;
        async move { (stack.count(PARKED_ROWS).await == 0).then_some(()) }
    })
    .await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_parked_backlog_survives_a_killed_worker_and_new_traffic_waits_behind_it() {
    const MESSAGES: usize = 100;
    let options = StackOptions {
        delivery_in_process: false,
        ..StackOptions::default()
    };
    let stack = Stack::start(options).await;
    let api = &stack.api;
    let receiver = Receiver::start().await;
    receiver.respond_with(503, "down");
    let Sender { token, .. } = api
        .sender("Restart Hospital", "production", &receiver.url("a"), "Results")
        .await;
    for sequence in 0..MESSAGES {
        let (status, _) = api.send(&token, &message("Results", sequence)).await;
        assert_eq!(status, 200);
    }

    let mut worker = stack.spawn_delivery_process();
    carrier_testkit::eventually(Duration::from_secs(60), "the backlog to be parked", || {
        let stack = &stack;
        async move { (stack.count(PARKED_ROWS).await == MESSAGES as i64).then_some(()) }
    })
    .await;
    // The head has been retried a few times when the worker dies.
    let attempts_before = carrier_testkit::eventually(Duration::from_secs(60), "the head retried", || {
        let attempts = max_attempt(&receiver.received());
        async move { attempts.filter(|attempts| *attempts >= 3) }
    })
    .await;
    worker.start_kill().expect("SIGKILL");
    worker.wait().await.expect("exit");
    let attempts_before = attempts_before.max(max_attempt(&receiver.received()).unwrap_or(0));
    let requests_before = receiver.received().len();

    // New traffic arrives while no worker runs; the destination recovers.
    for sequence in MESSAGES..MESSAGES + 20 {
        let (status, _) = api.send(&token, &message("Results", sequence)).await;
        assert_eq!(status, 200);
    }
    receiver.respond_with(200, r#"{"Meta":{"Errors":[]}}"#);
    let mut replacement = stack.spawn_delivery_process();
    carrier_testkit::eventually(Duration::from_secs(90), "every message delivered", || {
        let arrivals = first_arrivals(&sequences(&receiver.received(), None));
        async move { (arrivals.len() >= MESSAGES + 20).then_some(()) }
    })
    .await;
    let arrivals = first_arrivals(&sequences(&receiver.received(), None));
    assert_eq!(
        arrivals,
        (0..(MESSAGES + 20) as u64).collect::<Vec<_>>(),
        "parked first, in order, then the new ones"
    );
    // The new owner went on with the head's attempts where the killed one left them (the last
    // attempt may be repeated if the worker died before storing it), not from 1 again.
    let resumed = &receiver.received()[requests_before];
    let resumed_attempt: u32 = resumed.header("carrier-attempt").parse().unwrap();
    assert!(
        resumed_attempt >= attempts_before && resumed_attempt > 1,
        "attempt {resumed_attempt} after the restart; {attempts_before} before it"
    );
    let _ = replacement.start_kill();
    let _ = replacement.wait().await;
    stack.stop().await;
}

/// The highest `carrier-attempt` among `requests`.
fn max_attempt(requests: &[carrier_testkit::receiver::Received]) -> Option<u32> {
    requests
        .iter()
        .filter_map(|request| request.header("carrier-attempt").parse().ok())
        .max()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn draining_a_parked_backlog_while_the_broker_is_down_stops_at_the_memory_bound() {
    const MESSAGES: usize = 400;
    // Each partition may hold 20 tasks in memory, and as many final events awaiting the broker.
    const BOUND: usize = 20;
    let mut broker = Broker::start().await;
    let stack = Stack::start(StackOptions {
        brokers: broker.brokers(),
        // Idempotence off: Tansu 0.6 panics when an idempotent producer writes after a restart.
        enable_idempotence: false,
        delivery_partitions: 1,
        delivery_max_pending: BOUND,
        ..StackOptions::default()
    })
    .await;
    let api = &stack.api;
    let receiver = Receiver::start().await;
    receiver.respond_with(503, "down");
    let Sender { token, .. } = api
        .sender(
            "Outage Drain Hospital",
            "production",
            &receiver.url("a"),
            "Results",
        )
        .await;
    for sequence in 0..MESSAGES {
        let (status, response) = api.send(&token, &message("Results", sequence)).await;
        assert_eq!(status, 200, "{response}");
    }
    carrier_testkit::eventually(Duration::from_secs(90), "the backlog to be parked", || {
        let stack = &stack;
        async move { (stack.count(PARKED_ROWS).await == MESSAGES as i64).then_some(()) }
    })
    .await;

    // The broker goes away; the destination recovers. Every task the lane sends now is final
    // but cannot have its log event acknowledged: it must stay in memory until then, so the
    // lane stops after a bounded number instead of draining the whole backlog into memory.
    broker.kill().await;
    let failures = receiver.received().len();
    receiver.respond_with(200, r#"{"Meta":{"Errors":[]}}"#);
    let mut sent = 0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        sent = receiver.received().len() - failures;
    }
    println!("sent during the broker outage: {sent}");
    assert!(
        sent <= BOUND + 1,
        "{sent} tasks sent while their log events could not be acknowledged (bound {BOUND})"
    );

    broker.restart().await;
    carrier_testkit::eventually(Duration::from_secs(120), "the backlog to drain", || {
        let delivered = first_arrivals(&sequences(&receiver.received(), None)).len();
        async move { (delivered >= MESSAGES).then_some(()) }
    })
    .await;
    assert_raw_order(&receiver, "a", &(0..MESSAGES as u64).collect::<Vec<_>>());
    stack.stop().await;
}

/// Issue 10 §9c: parked rows were keyed by (destination, offset) alone. When the topic is deleted
/// and created again, offsets start again at 0: the new stream's tasks collided with the old
/// parked rows (and were dropped as already parked) or waited behind them forever. Parked rows
/// now belong to a generation of the partition's stream; the old generation's come first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_parked_backlog_survives_its_topic_created_again_and_drains_before_the_new_tasks() {
    const BEFORE: usize = 30;
    const AFTER: usize = 20;
    let mut broker = Broker::start().await;
    let mut stack = Stack::start(StackOptions {
        brokers: broker.brokers(),
        // Idempotence off: Tansu 0.6 panics when an idempotent producer writes after a restart.
        enable_idempotence: false,
        delivery_partitions: 1,
        ..StackOptions::default()
    })
    .await;
    let api = stack.api.clone();
    let receiver = Receiver::start().await;
    receiver.respond_with(503, "down");
    let Sender { token, .. } = api
        .sender(
            "Recreated Topic Hospital",
            "production",
            &receiver.url("a"),
            "Results",
        )
        .await;
    for sequence in 0..BEFORE {
        let (status, response) = api.send(&token, &message("Results", sequence)).await;
        assert_eq!(status, 200, "{response}");
    }
    carrier_testkit::eventually(Duration::from_secs(90), "the backlog to be parked", || {
        let stack = &stack;
        async move { (stack.count(PARKED_ROWS).await == BEFORE as i64).then_some(()) }
    })
    .await;

    // Every topic deleted and created again (on Tansu, deleting one deletes all), as the
    // production notes say: the services stopped first (librdkafka 2.12 can crash when a topic
    // it knows comes back with another topic ID). The new stream's offsets start at 0, where the
    // parked rows' offsets lie too.
    stack.stop_services().await;
    broker.wipe().await;
    carrier_testkit::stack::create_topics(&stack.kafka, 1).await;
    stack.start_services().await;
    for sequence in BEFORE..BEFORE + AFTER {
        let (status, response) = api.send(&token, &message("Results", sequence)).await;
        assert_eq!(status, 200, "{response}");
    }
    carrier_testkit::eventually(
        Duration::from_secs(90),
        "the new tasks to be parked behind the old",
        || {
            let stack = &stack;
            async move {
                let new = stack
                    .count("SELECT count(*) FROM parked_tasks WHERE generation > 0")
                    .await;
                (new == AFTER as i64).then_some(())
            }
        },
    )
    .await;

    receiver.respond_with(200, r#"{"Meta":{"Errors":[]}}"#);
    let expected: Vec<u64> = (0..(BEFORE + AFTER) as u64).collect();
    carrier_testkit::eventually(Duration::from_secs(120), "everything to be delivered", || {
        let delivered = first_arrivals(&sequences(&receiver.received(), None)).len();
        async move { (delivered >= BEFORE + AFTER).then_some(()) }
    })
    .await;
    assert_raw_order(&receiver, "a", &expected);
    carrier_testkit::eventually(Duration::from_secs(30), "the parked rows to be removed", || {
        let stack = &stack;
        async move { (stack.count(PARKED_ROWS).await == 0).then_some(()) }
    })
    .await;
    stack.stop().await;
}
