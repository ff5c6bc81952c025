//! Carrier's four services as child processes of the harness, configured only through their
//! `CARRIER_*` variables: one ingress, one router, one notifier, and delivery replicas that can
//! be added, removed, killed, frozen and restarted. Every service talks to the scenario's own
//! broker, Postgres and Redis; delivery reaches the broker and Postgres through fault proxies.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::process::{free_port, Process, Signal, Spec};
use crate::settings::Settings;

/// Topic prefix of every scenario (each scenario has a broker of its own).
pub const TOPIC_PREFIX: &str = "chaos.";

/// The four services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceKind {
    Ingress,
    Router,
    Delivery,
    Notifier,
}

impl ServiceKind {
    pub fn name(self) -> &'static str {
        match self {
            ServiceKind::Ingress => "ingress",
            ServiceKind::Router => "router",
            ServiceKind::Delivery => "delivery",
            ServiceKind::Notifier => "notifier",
        }
    }

    fn binary(self) -> String {
        format!("carrier-{}", self.name())
    }
}

/// Where the services find the infrastructure.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// The broker's own address (bootstrap of ingress, router, notifier).
    pub brokers: String,
    /// Delivery's bootstrap: its broker fault proxy.
    pub delivery_brokers: String,
    pub database_url: String,
    /// Delivery's database: through its Postgres fault proxy.
    pub delivery_database_url: String,
    pub redis_url: String,
}

/// One running (or killed) service.
pub struct Service {
    pub kind: ServiceKind,
    pub process: Process,
    /// Port of the service's HTTP server: ingress's public API; the others' `/healthz`,
    /// `/readyz` and `/metrics`.
    pub http_port: u16,
    /// Port of `/healthz`, `/readyz` and `/metrics` (ingress's operator port, else `http_port`).
    pub admin_port: u16,
    /// A delivery replica's `CARRIER_KAFKA__INSTANCE_ID`.
    pub instance_id: Option<String>,
}

impl Service {
    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let url = format!("http://127.0.0.1:{}/readyz", self.admin_port);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(response) = client.get(&url).send().await {
                if response.status().is_success() {
                    return Ok(());
                }
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{} not ready within {timeout:?}",
                self.process.spec.name
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// kill -9, then the same command again; waits for readiness up to `ready_within`.
    pub async fn kill_and_restart(&mut self, ready_within: Duration) -> anyhow::Result<()> {
        self.process.kill().await;
        self.process.start()?;
        self.wait_ready(ready_within).await
    }
}

pub struct Stack {
    pub ingress: Service,
    pub router: Service,
    pub notifier: Service,
    pub delivery: Vec<Service>,
    pub ingress_url: String,
    endpoints: Endpoints,
    settings: Settings,
    log_dir: PathBuf,
    router_grpc: u16,
    /// Replicas started so far (names stay unique across scale-downs).
    delivery_started: usize,
}

/// How long a freshly started service may take to be ready.
pub const READY_WITHIN: Duration = Duration::from_secs(90);

impl Stack {
    /// Starts router, notifier, the delivery replicas and ingress, and waits until all are ready.
    pub async fn start(settings: &Settings, endpoints: Endpoints, log_dir: &Path) -> anyhow::Result<Stack> {
        let router_grpc = free_port()?;
        let mut router = service(
            settings,
            &endpoints,
            log_dir,
            ServiceKind::Router,
            "router",
            router_grpc,
        )?;
        router.process.start()?;
        // The router creates the database and migrates it; the others wait for it.
        router.wait_ready(READY_WITHIN).await?;
        let mut notifier = service(
            settings,
            &endpoints,
            log_dir,
            ServiceKind::Notifier,
            "notifier",
            router_grpc,
        )?;
        notifier.process.start()?;
        let mut ingress = service(
            settings,
            &endpoints,
            log_dir,
            ServiceKind::Ingress,
            "ingress",
            router_grpc,
        )?;
        ingress.process.start()?;
        let ingress_url = format!("http://127.0.0.1:{}", ingress.http_port);
        let mut stack = Stack {
            ingress,
            router,
            notifier,
            delivery: Vec::new(),
            ingress_url,
            endpoints,
            settings: settings.clone(),
            log_dir: log_dir.to_path_buf(),
            router_grpc,
            delivery_started: 0,
        };
        for _ in 0..settings.delivery_replicas {
            stack.add_delivery().await?;
        }
        stack.notifier.wait_ready(READY_WITHIN).await?;
        stack.ingress.wait_ready(READY_WITHIN).await?;
        Ok(stack)
    }

    /// Starts one more delivery replica under a new name (its instance id too) and waits
    /// until it is ready.
    pub async fn add_delivery(&mut self) -> anyhow::Result<String> {
        let name = self.next_delivery_name();
        self.add_delivery_named(&name, &name).await?;
        Ok(name)
    }

    /// The name of the next new delivery replica.
    pub fn next_delivery_name(&mut self) -> String {
        self.delivery_started += 1;
        format!("delivery-{}", self.delivery_started)
    }

    /// Starts a delivery replica named `name` (a new one, or a removed one again: its log goes
    /// on in the same file) with `CARRIER_KAFKA__INSTANCE_ID` `instance` (what a pod would set from its
    /// name), and waits until it is ready.
    pub async fn add_delivery_named(&mut self, name: &str, instance: &str) -> anyhow::Result<()> {
        let mut replica = service(
            &self.settings,
            &self.endpoints,
            &self.log_dir,
            ServiceKind::Delivery,
            name,
            self.router_grpc,
        )?;
        replica
            .process
            .spec
            .env
            .push(("CARRIER_KAFKA__INSTANCE_ID".into(), instance.into()));
        replica.instance_id = Some(instance.to_string());
        replica.process.start()?;
        // Counted among the replicas at once: a replica that never gets ready is killed with
        // the others at the end.
        self.delivery.push(replica);
        self.delivery
            .last()
            .expect("just pushed")
            .wait_ready(READY_WITHIN)
            .await
    }

    /// The index of the running delivery replica named `name`.
    pub fn delivery_index(&self, name: &str) -> Option<usize> {
        self.delivery
            .iter()
            .position(|replica| replica.process.spec.name == name)
    }

    /// SIGTERM to the replica at `index` (it drains and leaves the group), and forgets it.
    pub async fn remove_delivery(&mut self, index: usize) -> (String, bool) {
        let mut replica = self.delivery.remove(index);
        let grace = Duration::from_secs(90);
        let clean = replica.process.stop(Signal::Term, grace).await;
        (replica.process.spec.name.clone(), clean)
    }

    /// The service of `kind` (for delivery, replica `index`).
    pub fn service_mut(&mut self, kind: ServiceKind, index: usize) -> &mut Service {
        match kind {
            ServiceKind::Ingress => &mut self.ingress,
            ServiceKind::Router => &mut self.router,
            ServiceKind::Notifier => &mut self.notifier,
            ServiceKind::Delivery => &mut self.delivery[index],
        }
    }

    /// Every service's log file, by process name.
    pub fn log_files(&self) -> Vec<(String, PathBuf)> {
        let mut files = Vec::new();
        for service in [&self.router, &self.notifier, &self.ingress]
            .into_iter()
            .chain(self.delivery.iter())
        {
            files.push((
                service.process.spec.name.clone(),
                service.process.spec.log.clone(),
            ));
        }
        // Removed replicas keep their logs.
        for index in 1..=self.delivery_started {
            let name = format!("delivery-{index}");
            if !files.iter().any(|(known, _)| *known == name) {
                files.push((name.clone(), self.log_dir.join(format!("{name}.log"))));
            }
        }
        files
    }

    /// Kills everything (the scenario is over; nothing needs a graceful end).
    pub async fn kill_all(&mut self) {
        self.ingress.process.kill().await;
        for replica in &mut self.delivery {
            replica.process.kill().await;
        }
        self.notifier.process.kill().await;
        self.router.process.kill().await;
    }
}

/// A service's command: its binary and its `CARRIER_*` settings, on fixed ports so a restart
/// comes back where the others expect it.
fn service(
    settings: &Settings,
    endpoints: &Endpoints,
    log_dir: &Path,
    kind: ServiceKind,
    name: &str,
    router_grpc: u16,
) -> anyhow::Result<Service> {
    let http_port = free_port()?;
    let admin_port = match kind {
        ServiceKind::Ingress => free_port()?,
        _ => http_port,
    };
    let (brokers, database_url) = match kind {
        ServiceKind::Delivery => (&endpoints.delivery_brokers, &endpoints.delivery_database_url),
        _ => (&endpoints.brokers, &endpoints.database_url),
    };
    let mut spec = Spec::new(
        name,
        settings.bin_dir.join(kind.binary()),
        log_dir.join(format!("{name}.log")),
    )
    .env("RUST_LOG", settings.log_filter.clone())
    .env("NO_COLOR", "1")
    // The dev profile: development secrets, among them the internal service token every
    // service shares.
    .env("CARRIER_PROFILE", "dev")
    .env("CARRIER_HTTP_ADDR", format!("127.0.0.1:{http_port}"))
    .env("CARRIER_DATABASE_URL", database_url.clone())
    .env("CARRIER_ROUTER_URL", format!("http://127.0.0.1:{router_grpc}"))
    .env("CARRIER_KAFKA__BROKERS", brokers.clone())
    .env("CARRIER_KAFKA__TOPIC_PREFIX", TOPIC_PREFIX)
    // Tansu 0.6 panics on idempotent producers that outlive a broker restart.
    .env("CARRIER_KAFKA__ENABLE_IDEMPOTENCE", "false")
    .env(
        "CARRIER_KAFKA__SESSION_TIMEOUT_MS",
        settings.session_timeout_ms.to_string(),
    );
    match kind {
        ServiceKind::Ingress => {
            spec = spec
                .env("CARRIER_ADMIN_ADDR", format!("127.0.0.1:{admin_port}"))
                .env("CARRIER_RATE_LIMIT__REDIS_URL", endpoints.redis_url.clone())
                // One client address sends everything: a limit the load never reaches.
                .env("CARRIER_RATE_LIMIT__LIMIT", "1000000000");
        }
        ServiceKind::Router => {
            spec = spec.env("CARRIER_GRPC_ADDR", format!("127.0.0.1:{router_grpc}"));
        }
        ServiceKind::Delivery => {
            spec = spec
                .env("CARRIER_CONTROL_ADDR", format!("127.0.0.1:{}", free_port()?))
                .env("CARRIER_OUTBOUND__ALLOW_LOOPBACK", "true")
                .env("CARRIER_RETRY__BASE_MS", settings.retry_base_ms.to_string())
                .env("CARRIER_RETRY__CAP_MS", settings.retry_cap_ms.to_string())
                .env(
                    "CARRIER_RETRY__NON_PRODUCTION_RETRY_MS",
                    settings.non_production_retry_ms.to_string(),
                );
        }
        ServiceKind::Notifier => {}
    }
    Ok(Service {
        kind,
        process: Process::new(spec),
        http_port,
        admin_port,
        instance_id: None,
    })
}
