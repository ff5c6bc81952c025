//! Injects a scenario's fault into the running world, noting each step on its timeline. A step
//! that does not come back (a service not ready again in time) is noted, not fatal: the verdict
//! on what was delivered decides the scenario.

use std::time::Duration;

use carrier_testkit::fault_proxy::FaultMode;
use rand::rngs::StdRng;
use rand::Rng;

use crate::scenario::{Fault, Link, Rollout};
use crate::settings::Settings;
use crate::stack::{ServiceKind, READY_WITHIN};
use crate::topology::Role;
use crate::world::World;

/// Runs `fault` to its end.
pub async fn inject(
    world: &mut World,
    fault: &Fault,
    settings: &Settings,
    rng: &mut StdRng,
) -> anyhow::Result<()> {
    match fault {
        Fault::None => tokio::time::sleep(settings.network_fault).await,
        Fault::Kill { service, times } => {
            for round in 1..=*times {
                tokio::time::sleep(random_between(rng, settings.kill_interval)).await;
                kill_service(world, *service, round, rng).await;
            }
        }
        Fault::FreezeDelivery { stopped_for } => {
            let index = rng.random_range(0..world.stack.delivery.len());
            let name = world.stack.delivery[index].process.spec.name.clone();
            world.stack.delivery[index].process.freeze().await;
            world.note(format!("SIGSTOP {name}"));
            tokio::time::sleep(*stopped_for).await;
            world.stack.delivery[index].process.thaw().await;
            world.note(format!("SIGCONT {name}"));
        }
        Fault::KillBroker { times, down_for } => {
            for round in 1..=*times {
                tokio::time::sleep(random_between(rng, settings.kill_interval)).await;
                world.note(format!("kill -9 tansu (#{round})"));
                world.tansu.kill_and_restart(*down_for).await?;
                world.note("tansu restarted");
            }
        }
        Fault::RestartPostgres { down_for } => {
            world.note("postgres fast shutdown");
            world.postgres.restart(*down_for).await?;
            world.note("postgres accepting connections again");
        }
        Fault::RestartRedis { down_for } => {
            world.note("kill -9 redis");
            world.redis.restart(*down_for).await?;
            world.note("redis restarted, empty");
        }
        Fault::ReceiverDown { down_for } => {
            let proxy = world
                .topology
                .by_role(Role::Outage)
                .proxy
                .clone()
                .expect("the outage destination has a proxy");
            proxy.set_mode(FaultMode::Cut);
            world.note("outage receiver down");
            tokio::time::sleep(*down_for).await;
            proxy.set_mode(FaultMode::Pass);
            world.note("outage receiver back");
        }
        Fault::ScaleDelivery { extra, hold } => {
            for _ in 0..*extra {
                match world.stack.add_delivery().await {
                    Ok(name) => world.note(format!("{name} started and ready")),
                    Err(error) => world.note(format!("a new delivery replica failed: {error:#}")),
                }
                tokio::time::sleep(*hold).await;
            }
            for _ in 0..*extra {
                let index = rng.random_range(0..world.stack.delivery.len());
                let (name, clean) = world.stack.remove_delivery(index).await;
                let ending = if clean {
                    "exited"
                } else {
                    "was killed after the grace period"
                };
                world.note(format!("SIGTERM {name}: {ending}"));
                tokio::time::sleep(*hold).await;
            }
        }
        Fault::RollingRestartDelivery { rollout, hold } => {
            let replicas: Vec<String> = world
                .stack
                .delivery
                .iter()
                .map(|replica| replica.process.spec.name.clone())
                .collect();
            for old in replicas {
                rolling_step(world, *rollout, &old, *hold).await;
            }
        }
        Fault::Network { link, mode, lasting } => {
            let proxy = match link {
                Link::Broker => world.broker_proxy.clone(),
                Link::Postgres => world.postgres_proxy.clone(),
            };
            if *mode == FaultMode::Cut {
                let end = tokio::time::Instant::now() + *lasting;
                let mut round = 0;
                while tokio::time::Instant::now() < end {
                    round += 1;
                    proxy.set_mode(FaultMode::Cut);
                    world.note(format!("delivery↔{} cut (#{round})", link.name()));
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    proxy.set_mode(FaultMode::Pass);
                    world.note(format!("delivery↔{} up", link.name()));
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
            } else {
                proxy.set_mode(*mode);
                world.note(format!("delivery↔{}: {mode}", link.name()));
                tokio::time::sleep(*lasting).await;
                proxy.set_mode(FaultMode::Pass);
                world.note(format!("delivery↔{}: pass", link.name()));
            }
        }
    }
    Ok(())
}

/// Replaces the delivery replica named `old` as `rollout` does, noting each step. A replica
/// that is ready is given `hold` (a fixed wait, like `minReadySeconds`: ready is not yet
/// working) to take its share before the step goes on.
async fn rolling_step(world: &mut World, rollout: Rollout, old: &str, hold: Duration) {
    let instance = world
        .stack
        .delivery_index(old)
        .and_then(|index| world.stack.delivery[index].instance_id.clone())
        .unwrap_or_else(|| old.to_string());
    match rollout {
        Rollout::Deployment | Rollout::SurgeSameName => {
            let name = world.stack.next_delivery_name();
            let instance = match rollout {
                Rollout::Deployment => name.clone(),
                _ => instance,
            };
            match world.stack.add_delivery_named(&name, &instance).await {
                Ok(()) => world.note(format!(
                    "{name} (instance {instance}) started and ready, replacing {old}"
                )),
                Err(error) => world.note(format!("{name}, replacing {old}: {error:#}")),
            }
            tokio::time::sleep(hold).await;
            terminate_delivery(world, old).await;
        }
        Rollout::StatefulSet => {
            terminate_delivery(world, old).await;
            match world.stack.add_delivery_named(old, &instance).await {
                Ok(()) => world.note(format!("{old} (instance {instance}) started again and ready")),
                Err(error) => world.note(format!("{old} started again: {error:#}")),
            }
            tokio::time::sleep(hold).await;
        }
    }
}

/// SIGTERM to the running delivery replica named `name`; notes how it ended.
async fn terminate_delivery(world: &mut World, name: &str) {
    let Some(index) = world.stack.delivery_index(name) else {
        world.note(format!("{name} is not running"));
        return;
    };
    let (name, clean) = world.stack.remove_delivery(index).await;
    let ending = if clean {
        "exited"
    } else {
        "was killed after the grace period"
    };
    world.note(format!("SIGTERM {name}: {ending}"));
}

async fn kill_service(world: &mut World, kind: ServiceKind, round: u32, rng: &mut StdRng) {
    let index = match kind {
        ServiceKind::Delivery => rng.random_range(0..world.stack.delivery.len()),
        _ => 0,
    };
    let name = world.stack.service_mut(kind, index).process.spec.name.clone();
    world.note(format!("kill -9 {name} (#{round})"));
    let outcome = world
        .stack
        .service_mut(kind, index)
        .kill_and_restart(READY_WITHIN)
        .await;
    match outcome {
        Ok(()) => world.note(format!("{name} restarted and ready")),
        Err(error) => world.note(format!("{name} restarted: {error:#}")),
    }
}

fn random_between(rng: &mut StdRng, (low, high): (Duration, Duration)) -> Duration {
    if high <= low {
        return low;
    }
    Duration::from_millis(rng.random_range(low.as_millis() as u64..high.as_millis() as u64))
}
