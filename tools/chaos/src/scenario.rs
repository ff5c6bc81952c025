//! The fault matrix: every scenario's name and the fault it injects while the load runs.

use std::time::Duration;

use carrier_testkit::fault_proxy::FaultMode;

use crate::settings::Settings;
use crate::stack::ServiceKind;

/// Which link a network fault is put on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Delivery ↔ the broker.
    Broker,
    /// Delivery ↔ Postgres.
    Postgres,
}

impl Link {
    pub fn name(self) -> &'static str {
        match self {
            Link::Broker => "broker",
            Link::Postgres => "postgres",
        }
    }
}

/// How a rolling restart replaces each delivery replica (a Kubernetes controller's way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollout {
    /// A Deployment with `maxSurge: 1, maxUnavailable: 0` (Kubernetes' default of 25 % each
    /// rounds to that for 3 replicas; the chart runs delivery as a Deployment): a replacement
    /// under a new name (a new pod, a new instance id) starts; once it is ready and `hold` has
    /// passed, the old replica gets SIGTERM, and the next step starts after its exit.
    Deployment,
    /// A StatefulSet: the replica gets SIGTERM, and after its exit it starts again under the
    /// same name (the same pod name, the same instance id).
    StatefulSet,
    /// A replacement under the old replica's name starts before the old one stops, as a
    /// Deployment would with static names: two live processes claim one instance id for a
    /// while (the duplicate case of static membership).
    SurgeSameName,
}

impl Rollout {
    pub fn name(self) -> &'static str {
        match self {
            Rollout::Deployment => "like a Deployment (maxSurge=1, maxUnavailable=0): a replacement under a new name starts, is ready, then the old one gets SIGTERM",
            Rollout::StatefulSet => "like a StatefulSet: SIGTERM, then the replica starts again under its own name",
            Rollout::SurgeSameName => "a replacement under the old one's name (its instance id) starts and is ready, then the old one gets SIGTERM",
        }
    }
}

/// What happens to the running system during a scenario.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Nothing (the control row).
    None,
    /// kill -9 of the service `times` times at random moments, each restarted at once (for
    /// delivery, a random replica).
    Kill { service: ServiceKind, times: u32 },
    /// SIGSTOP of one delivery replica for `stopped_for` (past the session timeout), then SIGCONT.
    FreezeDelivery { stopped_for: Duration },
    /// kill -9 of the broker, down for `down_for`, restarted on the same SQLite storage.
    KillBroker { times: u32, down_for: Duration },
    /// Postgres fast shutdown, down for `down_for`, started again.
    RestartPostgres { down_for: Duration },
    /// Redis killed and started again empty.
    RestartRedis { down_for: Duration },
    /// The `outage` destination's receiver unreachable for `down_for`.
    ReceiverDown { down_for: Duration },
    /// Delivery replicas added one by one, then removed (SIGTERM) back to the start.
    ScaleDelivery { extra: usize, hold: Duration },
    /// Every delivery replica replaced in turn (`rollout`), `hold` between the steps.
    RollingRestartDelivery { rollout: Rollout, hold: Duration },
    /// The fault proxy on `link` in `mode` for `lasting`; a cut is repeated (5 s cut, 3 s pass).
    Network {
        link: Link,
        mode: FaultMode,
        lasting: Duration,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub fault: Fault,
    /// Delivery replicas at the start, when not the matrix's (`Settings::delivery_replicas`).
    pub delivery_replicas: Option<usize>,
}

impl Scenario {
    fn new(name: &str, fault: Fault) -> Self {
        Self {
            name: name.to_string(),
            fault,
            delivery_replicas: None,
        }
    }

    fn with_delivery_replicas(mut self, replicas: usize) -> Self {
        self.delivery_replicas = Some(replicas);
        self
    }

    /// The matrix's settings as this scenario runs them.
    pub fn settings(&self, settings: &Settings) -> Settings {
        let mut settings = settings.clone();
        if let Some(replicas) = self.delivery_replicas {
            settings.delivery_replicas = replicas;
        }
        settings
    }

    /// One line for the report.
    pub fn description(&self) -> String {
        match &self.fault {
            Fault::None => "no fault".into(),
            Fault::Kill { service, times } => {
                format!(
                    "kill -9 of {} ×{times} at random moments, restarted at once",
                    service.name()
                )
            }
            Fault::FreezeDelivery { stopped_for } => {
                format!(
                    "SIGSTOP of one delivery replica for {} s, then SIGCONT",
                    stopped_for.as_secs()
                )
            }
            Fault::KillBroker { times, down_for } => format!(
                "kill -9 of Tansu ×{times}, down {} s each, restarted on its SQLite storage",
                down_for.as_secs()
            ),
            Fault::RestartPostgres { down_for } => {
                format!(
                    "Postgres fast shutdown, down {} s, started again",
                    down_for.as_secs()
                )
            }
            Fault::RestartRedis { down_for } => {
                format!("Redis killed, down {} s, started again empty", down_for.as_secs())
            }
            Fault::ReceiverDown { down_for } => {
                format!("the `outage` receiver unreachable for {} s", down_for.as_secs())
            }
            Fault::ScaleDelivery { extra, hold } => format!(
                "delivery scaled up by {extra} one replica at a time ({} s apart), then back down (SIGTERM)",
                hold.as_secs()
            ),
            Fault::RollingRestartDelivery { rollout, hold } => format!(
                "{} delivery replicas restarted one at a time, {} ({} s between steps)",
                self.delivery_replicas
                    .map_or_else(|| "the".to_string(), |replicas| replicas.to_string()),
                rollout.name(),
                hold.as_secs()
            ),
            Fault::Network { link, mode, lasting } => match mode {
                FaultMode::Cut => format!(
                    "delivery↔{} connections cut repeatedly (5 s cut, 3 s up) for {} s",
                    link.name(),
                    lasting.as_secs()
                ),
                _ => format!("delivery↔{}: {mode} for {} s", link.name(), lasting.as_secs()),
            },
        }
    }
}

/// Every scenario, sized by `settings` (the full and the short matrix differ only there).
pub fn matrix(settings: &Settings) -> Vec<Scenario> {
    let mut scenarios = vec![Scenario::new("baseline", Fault::None)];
    for service in [
        ServiceKind::Ingress,
        ServiceKind::Router,
        ServiceKind::Delivery,
        ServiceKind::Notifier,
    ] {
        scenarios.push(Scenario::new(
            &format!("kill-{}", service.name()),
            Fault::Kill {
                service,
                times: settings.kills,
            },
        ));
    }
    let session = Duration::from_millis(u64::from(settings.session_timeout_ms));
    scenarios.extend([
        Scenario::new(
            "freeze-delivery",
            Fault::FreezeDelivery {
                stopped_for: session * 2,
            },
        ),
        Scenario::new(
            "kill-broker",
            Fault::KillBroker {
                times: settings.broker_kills,
                down_for: settings.broker_down,
            },
        ),
        Scenario::new(
            "restart-postgres",
            Fault::RestartPostgres {
                down_for: settings.restart_down,
            },
        ),
        Scenario::new(
            "restart-redis",
            Fault::RestartRedis {
                down_for: settings.restart_down,
            },
        ),
        Scenario::new(
            "receiver-down",
            Fault::ReceiverDown {
                down_for: settings.receiver_outage,
            },
        ),
        Scenario::new(
            "scale-delivery",
            Fault::ScaleDelivery {
                extra: 2,
                hold: settings.network_fault / 2,
            },
        ),
    ]);
    // Issue 12 §6: a rolling restart of three replicas under load, the way each Kubernetes
    // controller does it. `hold` lets a new member take its share before the next step.
    for (name, rollout) in [
        ("rolling-restart-delivery", Rollout::Deployment),
        ("rolling-restart-delivery-static", Rollout::StatefulSet),
        ("rolling-restart-delivery-surge-same-name", Rollout::SurgeSameName),
    ] {
        scenarios.push(
            Scenario::new(
                name,
                Fault::RollingRestartDelivery {
                    rollout,
                    hold: session,
                },
            )
            .with_delivery_replicas(3),
        );
    }
    for link in [Link::Broker, Link::Postgres] {
        for (name, mode) in [
            ("delay", FaultMode::Delay(settings.network_delay)),
            ("drop", FaultMode::Drop),
            ("cut", FaultMode::Cut),
        ] {
            scenarios.push(Scenario::new(
                &format!("{}-{name}", link.name()),
                Fault::Network {
                    link,
                    mode,
                    // A partition outlasts the session timeout: the group moves on without the
                    // partitioned worker.
                    lasting: if mode == FaultMode::Drop {
                        settings.network_fault.max(session + Duration::from_secs(6))
                    } else {
                        settings.network_fault
                    },
                },
            ));
        }
    }
    scenarios
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matrix_names_each_scenario_once_and_covers_every_fault() {
        let settings = Settings::short("bin".into(), "run".into());
        let scenarios = matrix(&settings);
        let mut names: Vec<&str> = scenarios.iter().map(|scenario| scenario.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), scenarios.len());
        for expected in [
            "kill-ingress",
            "kill-router",
            "kill-delivery",
            "kill-notifier",
            "freeze-delivery",
            "kill-broker",
            "restart-postgres",
            "restart-redis",
            "receiver-down",
            "scale-delivery",
            "rolling-restart-delivery",
            "rolling-restart-delivery-static",
            "rolling-restart-delivery-surge-same-name",
            "broker-delay",
            "broker-drop",
            "broker-cut",
            "postgres-delay",
            "postgres-drop",
            "postgres-cut",
        ] {
            assert!(names.contains(&expected), "{expected} missing");
        }
        let full = matrix(&Settings::full("bin".into(), "run".into()));
        assert!(full.contains(&Scenario::new(
            "kill-router",
            Fault::Kill {
                service: ServiceKind::Router,
                times: 10
            }
        )));
    }

    #[test]
    fn a_frozen_worker_and_a_partition_outlast_the_session_timeout() {
        let settings = Settings::short("bin".into(), "run".into());
        let session = Duration::from_millis(u64::from(settings.session_timeout_ms));
        for scenario in matrix(&settings) {
            match scenario.fault {
                Fault::FreezeDelivery { stopped_for } => assert!(stopped_for > session),
                Fault::Network {
                    mode: FaultMode::Drop,
                    lasting,
                    ..
                } => assert!(lasting > session, "{}", scenario.name),
                _ => {}
            }
        }
    }
}
