//! Everything one scenario runs on, brought up in order and torn down at the end: its own
//! Postgres, Redis and Tansu, the fault proxies on delivery's links, the topics, the four
//! services, and the destinations and sources. Plus the scenario's timeline of what was done
//! when.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use carrier_config::KafkaSettings;
use carrier_testkit::client::Api;
use carrier_testkit::fault_proxy::{FaultMode, FaultProxy};

use crate::infra::{Postgres, Redis, Tansu};
use crate::kafka_split::KafkaSplit;
use crate::process::free_port;
use crate::settings::Settings;
use crate::stack::{Endpoints, Stack, TOPIC_PREFIX};
use crate::topology::Topology;

/// The client ID prefix of delivery's Kafka clients (consumer and producer).
const DELIVERY_CLIENT_PREFIX: &str = "carrier-delivery";

/// What was done to the system, and when (since the scenario started).
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    pub events: Vec<(Duration, String)>,
}

pub struct World {
    pub started: Instant,
    pub dir: PathBuf,
    pub postgres: Postgres,
    pub redis: Redis,
    pub tansu: Tansu,
    /// Between delivery and the broker (its bootstrap, and its connections via the split).
    pub broker_proxy: FaultProxy,
    /// Between delivery and Postgres.
    pub postgres_proxy: FaultProxy,
    _split: KafkaSplit,
    pub stack: Stack,
    pub topology: Topology,
    pub api: Api,
    pub timeline: Timeline,
}

impl World {
    /// Brings everything up in `dir` (emptied first).
    pub async fn start(settings: &Settings, dir: &Path) -> anyhow::Result<World> {
        let started = Instant::now();
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir)?;
        let postgres = Postgres::start(dir).await.context("starting Postgres")?;
        let redis = Redis::start(dir).await.context("starting Redis")?;

        // Tansu advertises the split; the split sends delivery's connections through its proxy.
        let tansu_port = free_port()?;
        let tansu_addr: SocketAddr = format!("127.0.0.1:{tansu_port}").parse()?;
        let broker_proxy = FaultProxy::start(tansu_addr).await?;
        let split = KafkaSplit::start(tansu_addr, broker_proxy.addr(), DELIVERY_CLIENT_PREFIX).await?;
        let tansu = Tansu::start(dir, tansu_port, &split.addr().to_string())
            .await
            .context("starting Tansu")?;
        let postgres_proxy = FaultProxy::start(format!("127.0.0.1:{}", postgres.port).parse()?).await?;

        let brokers = tansu_addr.to_string();
        create_topics(&brokers, settings.deliveries_partitions).await?;
        let endpoints = Endpoints {
            brokers,
            delivery_brokers: broker_proxy.addr().to_string(),
            database_url: postgres.url("carrier"),
            delivery_database_url: format!("postgres://postgres@{}/carrier", postgres_proxy.addr()),
            redis_url: redis.url(),
        };
        let stack = Stack::start(settings, endpoints, dir)
            .await
            .context("starting Carrier")?;
        let api = Api::new(&stack.ingress_url, carrier_ingress::DEV_ADMIN_TOKEN);
        let topology = Topology::create(&api, settings.production_streams, settings.seed).await?;
        let mut world = World {
            started,
            dir: dir.to_path_buf(),
            postgres,
            redis,
            tansu,
            broker_proxy,
            postgres_proxy,
            _split: split,
            stack,
            topology,
            api,
            timeline: Timeline::default(),
        };
        let through_proxies = format!(
            "infrastructure, services and destinations up; delivery's connections through its proxies: {} to the broker, {} to Postgres",
            world.broker_proxy.open_connections(),
            world.postgres_proxy.open_connections()
        );
        world.note(through_proxies);
        Ok(world)
    }

    /// Time since the scenario started.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Adds a timeline entry (and logs it).
    pub fn note(&mut self, event: impl Into<String>) {
        let event = event.into();
        let at = self.now();
        tracing::info!(at_s = at.as_secs_f64(), "{event}");
        self.timeline.events.push((at, event));
    }

    /// Undoes every fault that can be undone: proxies back to pass, the receiver reachable, the
    /// flaky receiver answering 200.
    pub fn heal(&mut self) {
        self.broker_proxy.set_mode(FaultMode::Pass);
        self.postgres_proxy.set_mode(FaultMode::Pass);
        for destination in &self.topology.destinations {
            if let Some(proxy) = &destination.proxy {
                proxy.set_mode(FaultMode::Pass);
            }
        }
        self.topology.heal_flaky();
    }

    /// Stops everything; keeps the logs, removes the data (Postgres, Tansu).
    pub async fn stop(mut self) {
        self.stack.kill_all().await;
        self.tansu.process.kill().await;
        self.redis.process.kill().await;
        self.postgres.stop().await;
        let _ = std::fs::remove_dir_all(self.dir.join("postgres"));
        let _ = std::fs::remove_dir_all(self.dir.join("tansu").join("tansu.db"));
        for entry in std::fs::read_dir(self.dir.join("tansu"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry.file_name().to_string_lossy().starts_with("tansu.db") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

async fn create_topics(brokers: &str, deliveries_partitions: i32) -> anyhow::Result<()> {
    let kafka = KafkaSettings {
        brokers: brokers.to_string(),
        topic_prefix: TOPIC_PREFIX.to_string(),
        ..KafkaSettings::default()
    };
    let topics = carrier_kafka::Topics::new(&kafka);
    carrier_kafka::admin::ensure_topics(
        &kafka,
        &[
            (&topics.inbound, 4),
            (&topics.deliveries, deliveries_partitions),
            (&topics.log_events, 4),
            (&topics.notifications, 1),
        ],
    )
    .await
    .context("creating topics")?;
    Ok(())
}
