//! One scenario from start to verdict:
//!
//! 1. a fresh world (own Postgres, Redis, Tansu, proxies, services, destinations);
//! 2. steady load; the warm-up waits for the first deliveries, then runs `warm_up`;
//! 3. the operator pauses the `paused` destination, and the fault runs;
//! 4. `recovery` more load; then the load stops, every fault is undone and the paused
//!    destination resumed;
//! 5. the settle: up to `settle_timeout` for every accepted message to reach every subscribed
//!    production destination, then a short quiet time for late duplicates;
//! 6. each destination's raw arrivals judged (`analysis`), the world torn down (logs kept).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::analysis::{judge, window, Expected};
use crate::load::{Ledger, Load};
use crate::observe::{all_arrivals, Progress};
use crate::report::{DestinationRow, ScenarioReport};
use crate::scenario::Scenario;
use crate::settings::Settings;
use crate::topology::Role;
use crate::world::World;

/// How long the first deliveries may take after the load starts (consumer groups forming).
const FIRST_DELIVERIES_WITHIN: Duration = Duration::from_secs(120);
/// After the settle, how long to keep listening for late duplicates.
const QUIET_TIME: Duration = Duration::from_secs(2);

/// Runs `scenario` and judges it. A harness failure is reported in the result, not returned.
pub async fn run_scenario(settings: &Settings, scenario: &Scenario) -> ScenarioReport {
    let settings = &scenario.settings(settings);
    let started = Instant::now();
    let dir = settings.run_dir.join(&scenario.name);
    let mut report = ScenarioReport {
        name: scenario.name.clone(),
        description: scenario.description(),
        log_dir: dir.clone(),
        ..ScenarioReport::default()
    };
    tracing::info!(scenario = %scenario.name, "scenario starting");
    match World::start(settings, &dir).await {
        Ok(mut world) => {
            let mut rng = StdRng::seed_from_u64(settings.seed ^ name_hash(&scenario.name));
            if let Err(error) = drive(&mut world, settings, scenario, &mut rng, &mut report).await {
                report.harness_error = Some(format!("{error:#}"));
            }
            report.timeline = world.timeline.events.clone();
            if !report.passed() {
                let mut files = world.stack.log_files();
                files.push(("tansu".into(), dir.join("tansu").join("tansu.log")));
                let kafka = carrier_config::KafkaSettings {
                    brokers: format!("127.0.0.1:{}", world.tansu.port),
                    ..carrier_config::KafkaSettings::default()
                };
                report.evidence = crate::lag::lag_lines(&kafka).await;
                report.evidence.extend(crate::logs::evidence(&files));
            }
            world.stop().await;
        }
        Err(error) => report.harness_error = Some(format!("{error:#}")),
    }
    report.duration = started.elapsed();
    tracing::info!(scenario = %scenario.name, passed = report.passed(), "scenario done");
    report
}

async fn drive(
    world: &mut World,
    settings: &Settings,
    scenario: &Scenario,
    rng: &mut StdRng,
    report: &mut ScenarioReport,
) -> anyhow::Result<()> {
    let streams = world
        .topology
        .streams
        .iter()
        .map(|stream| {
            let rate = if stream.name == "staging" {
                settings.staging_rate
            } else {
                settings.stream_rate
            };
            (stream.clone(), rate)
        })
        .collect();
    let load = Load::start(&world.stack.ingress_url, streams);
    world.note("load started");
    let mut progress = Progress::new(&world.topology);
    if wait_for_first_deliveries(world, &mut progress).await {
        world.note("first deliveries at every healthy destination");
    } else {
        world.note(format!(
            "a healthy destination had no delivery within {} s of the load's start",
            FIRST_DELIVERIES_WITHIN.as_secs()
        ));
    }
    tokio::time::sleep(settings.warm_up).await;

    let fault_start = world.now();
    world.note(format!("fault: {}", scenario.description()));
    let paused = world.topology.by_role(Role::Paused).id.clone();
    let status = operator(world, &paused, "pause").await;
    world.note(format!("operator pause of `paused`: {status}"));
    let assignments_before = deliveries_assignments(world);
    if let Err(error) = crate::faults::inject(world, &scenario.fault, settings, rng).await {
        world.note(format!("fault step failed: {error:#}"));
    }
    let moved = deliveries_assignments(world).saturating_sub(assignments_before);
    world.note(format!(
        "fault over; {moved} partitions of the deliveries topic were assigned to a member during it"
    ));
    tokio::time::sleep(settings.recovery).await;

    let ledger = load.stop().await;
    world.note(format!(
        "load stopped: {} sent, {} accepted",
        ledger.sent(),
        ledger.accepted.len()
    ));
    world.heal();
    let status = operator(world, &paused, "resume").await;
    world.note(format!(
        "every fault undone; operator resume of `paused`: {status}"
    ));

    let expected = expected_deliveries(world, &ledger);
    let settle_started = Instant::now();
    let deadline = settle_started + settings.settle_timeout;
    loop {
        progress.update(&world.topology, world.started);
        let missing = progress.missing(&expected);
        if missing == 0 {
            report.settled_after = Some(settle_started.elapsed());
            world.note("every accepted message delivered");
            break;
        }
        if Instant::now() >= deadline {
            world.note(format!("settle time over: {missing} deliveries missing"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(QUIET_TIME).await;

    report.sent = ledger.sent();
    report.accepted = ledger.accepted.len();
    report.refused = ledger.refused.clone();
    report.expected_deliveries = expected.values().map(HashSet::len).sum();
    let arrivals = all_arrivals(&world.topology, world.started);
    for (index, destination) in world.topology.destinations.iter().enumerate() {
        let accepted: HashMap<u64, String> = ledger
            .accepted
            .iter()
            .filter_map(|message| {
                let (_, log_id) = message.logs.iter().find(|(id, _)| *id == destination.id)?;
                Some((message.sequence, log_id.clone()))
            })
            .collect();
        let expected = Expected {
            accepted,
            must_deliver: destination.role.production(),
            gap_from: destination.role.healthy().then_some(fault_start),
        };
        let verdict = judge(&arrivals[index], &expected);
        let reorder_window = match verdict.reorders.first() {
            Some((stream, reorder)) => window(&arrivals[index], &expected.accepted, stream, reorder, 12, 4)
                .iter()
                .map(|arrival| {
                    format!(
                        "{stream} {} a{} {} {:.3} {}",
                        arrival.sequence,
                        arrival.attempt,
                        if arrival.succeeded { "2xx" } else { "failed" },
                        arrival.at.as_secs_f64(),
                        arrival.webhook_id
                    )
                })
                .collect(),
            None => Vec::new(),
        };
        report.destinations.push(DestinationRow {
            name: destination.name.clone(),
            role: destination.role,
            partition: carrier_kafka::partitioner::partition_for(
                destination.id.as_bytes(),
                settings.deliveries_partitions,
            ),
            verdict,
            max_in_flight: destination.receiver.max_in_flight(&destination.name),
            reorder_window,
        });
    }
    Ok(())
}

/// How many partitions of `carrier.deliveries` delivery's members took so far (each take after
/// the first is a hand-over: the partition's destinations paused), from their logs.
fn deliveries_assignments(world: &World) -> usize {
    let topic = format!("topic={}deliveries", crate::stack::TOPIC_PREFIX);
    let files: Vec<_> = world
        .stack
        .log_files()
        .into_iter()
        .filter(|(name, _)| name.starts_with("delivery-"))
        .collect();
    crate::logs::count(&files, &["partitions assigned", &topic])
}

/// Waits until every always-healthy destination has a delivery.
async fn wait_for_first_deliveries(world: &World, progress: &mut Progress) -> bool {
    let deadline = Instant::now() + FIRST_DELIVERIES_WITHIN;
    while Instant::now() < deadline {
        progress.update(&world.topology, world.started);
        let all = world
            .topology
            .destinations
            .iter()
            .enumerate()
            .filter(|(_, destination)| destination.role.healthy())
            .all(|(index, _)| progress.delivered(index) > 0);
        if all {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Destination index → accepted messages it must receive (production destinations).
fn expected_deliveries(world: &World, ledger: &Ledger) -> HashMap<usize, HashSet<u64>> {
    let mut expected: HashMap<usize, HashSet<u64>> = HashMap::new();
    for (index, destination) in world.topology.destinations.iter().enumerate() {
        if !destination.role.production() {
            continue;
        }
        let messages = expected.entry(index).or_default();
        for message in &ledger.accepted {
            if message.logs.iter().any(|(id, _)| *id == destination.id) {
                messages.insert(message.sequence);
            }
        }
    }
    expected
}

/// `POST /v1/destinations/{id}/{action}` as the operator, retried for up to a minute (a
/// fault may have the service answering it down); the final status, as text.
async fn operator(world: &World, destination_id: &str, action: &str) -> String {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client");
    let url = format!(
        "{}/v1/destinations/{destination_id}/{action}",
        world.stack.ingress_url
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        match client
            .post(&url)
            .bearer_auth(carrier_ingress::DEV_ADMIN_TOKEN)
            .send()
            .await
        {
            Ok(response) if response.status().is_success() => return response.status().as_u16().to_string(),
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                last = format!("{status} {}", body.chars().take(200).collect::<String>());
            }
            Err(error) => last = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    format!("gave up after 60 s: {last}")
}

fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3)
    })
}
