//! The destinations, receivers and sources every scenario runs with, configured through the
//! admin API as an operator would.
//!
//! Eight destinations share the (few) partitions of `carrier.deliveries`; each has a testkit
//! [`Receiver`] of its own, so each can answer differently:
//!
//! | destination | environment | behaviour |
//! |---|---|---|
//! | `healthy-1`, `healthy-2` | production | always 200 |
//! | `slow` | production | 200 after 20 ms (keeps requests in flight, to catch overlaps) |
//! | `flaky` | production | 500 for about 1.5 s every 5 s, else 200 (retries with backoff) |
//! | `outage` | production | behind a fault proxy: the "receiver down" scenario cuts it |
//! | `paused` | production | paused by the operator during every scenario, resumed at the end |
//! | `staging-500` | staging | always 500 (one retry, then `failed`; never lost, never pauses) |
//! | `staging-ok` | staging | always 200 |
//!
//! Production sources are subscribed to the six production destinations, the staging source to
//! the two staging ones (a subscription joins one environment).

use std::time::Duration;

use carrier_testkit::client::{Api, SourceCredentials};
use carrier_testkit::fault_proxy::FaultProxy;
use carrier_testkit::receiver::Receiver;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

/// The data model every message is sent as.
pub const DATA_MODEL: &str = "Results";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Healthy,
    Slow,
    Flaky,
    Outage,
    Paused,
    StagingFailing,
    StagingHealthy,
}

impl Role {
    pub fn production(self) -> bool {
        !matches!(self, Role::StagingFailing | Role::StagingHealthy)
    }

    /// Counted in the longest-gap column: production destinations nothing is done to.
    pub fn healthy(self) -> bool {
        matches!(self, Role::Healthy | Role::Slow)
    }
}

pub struct Destination {
    pub name: String,
    pub id: String,
    pub role: Role,
    pub receiver: Receiver,
    /// Between delivery and the receiver (the `outage` destination only).
    pub proxy: Option<FaultProxy>,
}

impl Destination {
    /// The path the receiver records this destination's requests under.
    pub fn path(&self) -> String {
        format!("/{}", self.name)
    }
}

/// A source that sends one message after the other.
#[derive(Clone)]
pub struct Stream {
    pub name: String,
    pub source: SourceCredentials,
}

pub struct Topology {
    pub destinations: Vec<Destination>,
    pub streams: Vec<Stream>,
    flaky_stop: CancellationToken,
}

impl Topology {
    /// Creates the organization, sources, destinations and subscriptions through `api`.
    pub async fn create(api: &Api, production_streams: usize, seed: u64) -> anyhow::Result<Topology> {
        let organization = api.create_organization("Chaos General").await;
        let mut destinations = Vec::new();
        let roles = [
            ("healthy-1", Role::Healthy),
            ("healthy-2", Role::Healthy),
            ("slow", Role::Slow),
            ("flaky", Role::Flaky),
            ("outage", Role::Outage),
            ("paused", Role::Paused),
            ("staging-500", Role::StagingFailing),
            ("staging-ok", Role::StagingHealthy),
        ];
        for (name, role) in roles {
            let receiver = Receiver::start().await;
            let proxy = match role {
                Role::Outage => Some(FaultProxy::start(receiver.addr).await?),
                _ => None,
            };
            let url = match &proxy {
                Some(proxy) => format!("http://{}/{name}", proxy.addr()),
                None => receiver.url(name),
            };
            match role {
                Role::Slow => receiver.respond_after(Duration::from_millis(20)),
                Role::StagingFailing => receiver.respond_with(500, r#"{"error":"staging is broken"}"#),
                _ => {}
            }
            let environment = if role.production() {
                "production"
            } else {
                "staging"
            };
            let created = api.create_destination(&organization, &url, environment).await;
            let id = created["id"].as_str().unwrap_or_default().to_string();
            anyhow::ensure!(!id.is_empty(), "destination {name} was not created: {created}");
            destinations.push(Destination {
                name: name.to_string(),
                id,
                role,
                receiver,
                proxy,
            });
        }
        let mut streams = Vec::new();
        for index in 0..production_streams + 1 {
            let staging = index == production_streams;
            let environment = if staging { "staging" } else { "production" };
            let source = api.create_source(&organization, environment).await;
            for destination in &destinations {
                if destination.role.production() != staging {
                    api.subscribe(&source.id, &destination.id, DATA_MODEL).await;
                }
            }
            let name = if staging {
                "staging".to_string()
            } else {
                format!("production-{}", index + 1)
            };
            streams.push(Stream { name, source });
        }
        let flaky_stop = CancellationToken::new();
        if let Some(flaky) = destinations
            .iter()
            .find(|destination| destination.role == Role::Flaky)
        {
            tokio::spawn(flap(flaky.receiver.clone(), flaky_stop.clone(), seed));
        }
        Ok(Topology {
            destinations,
            streams,
            flaky_stop,
        })
    }

    /// The flaky destination answers 200 from now on (so the settle can finish).
    pub fn heal_flaky(&self) {
        self.flaky_stop.cancel();
    }

    pub fn by_role(&self, role: Role) -> &Destination {
        self.destinations
            .iter()
            .find(|destination| destination.role == role)
            .expect("every role has a destination")
    }
}

/// The flaky receiver: 500 for 1–2 s, then 200 for 3–5 s, until `stop`; then 200.
async fn flap(receiver: Receiver, stop: CancellationToken, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xf1a4);
    let ok = r#"{"Meta":{"Errors":[]}}"#;
    loop {
        let healthy_for = Duration::from_millis(rng.random_range(3_000..5_000));
        let failing_for = Duration::from_millis(rng.random_range(1_000..2_000));
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(healthy_for) => {}
        }
        receiver.respond_with(500, r#"{"error":"flaky"}"#);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(failing_for) => {}
        }
        receiver.respond_with(200, ok);
    }
    receiver.respond_with(200, ok);
}
