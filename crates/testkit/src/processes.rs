//! The four services as child processes of the built binaries, on the shared broker and
//! Postgres, isolated like a [`crate::stack::Stack`] (topic prefix, consumer groups, database
//! of their own). For what one process cannot show: each process has its own global state
//! (e.g. its OpenTelemetry tracer provider and `service.name`), as in production.

use std::time::Duration;

use carrier_config::KafkaSettings;

use crate::client::Api;
use crate::stack::{binary_path, create_topics, kafka_connection_env, TEST_PARTITIONS};

/// The running processes; stopped with SIGTERM by [`ProcessStack::stop`] (killed if dropped).
pub struct ProcessStack {
    pub prefix: String,
    pub database_url: String,
    pub ingress_url: String,
    pub ingress_admin_url: String,
    /// `/metrics` of router, notifier and delivery (ingress's is on `ingress_admin_url`).
    pub metrics_urls: Vec<(&'static str, String)>,
    pub api: Api,
    children: Vec<(&'static str, tokio::process::Child)>,
    /// Each process's stdout and stderr, `<service>.log` (see [`ProcessStack::log`]).
    log_dir: std::path::PathBuf,
}

/// A loopback port free now (bound and released: the child binds it right after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

impl ProcessStack {
    /// Starts router, notifier, delivery and ingress; `env_of(service)` adds variables to one
    /// service's environment (`service`: `router`, `notifier`, `delivery`, `ingress`). Returns
    /// once ingress is ready.
    pub async fn start(env_of: impl Fn(&str) -> Vec<(String, String)>) -> ProcessStack {
        crate::init_test_logging();
        let prefix = crate::unique("p");
        let kafka = KafkaSettings {
            brokers: crate::test_brokers(),
            topic_prefix: format!("{prefix}."),
            session_timeout_ms: 6_000,
            ..Default::default()
        };
        create_topics(&kafka, TEST_PARTITIONS).await;
        let database_url = format!("{}/carrier_{prefix}", crate::test_postgres());
        let token = format!("test-service-token-{}", uuid::Uuid::new_v4().simple());
        let router_grpc = format!("127.0.0.1:{}", free_port());
        let ingress_http = format!("127.0.0.1:{}", free_port());
        let ingress_admin = format!("127.0.0.1:{}", free_port());
        let common = |service: &str| {
            let mut env: Vec<(String, String)> = vec![
                ("CARRIER_PROFILE".into(), "dev".into()),
                ("CARRIER_INTERNAL_AUTH__SERVICE_TOKEN".into(), token.clone()),
                ("CARRIER_DATABASE_URL".into(), database_url.clone()),
                ("CARRIER_KAFKA__BROKERS".into(), kafka.brokers.clone()),
                ("CARRIER_KAFKA__TOPIC_PREFIX".into(), kafka.topic_prefix.clone()),
                ("CARRIER_KAFKA__SESSION_TIMEOUT_MS".into(), "6000".into()),
                ("CARRIER_KAFKA__LINGER_MS".into(), "2".into()),
                ("CARRIER_KAFKA__FETCH_WAIT_MAX_MS".into(), "10".into()),
                (
                    "CARRIER_KAFKA__IDLE_AFTER_MS".into(),
                    crate::stack::IDLE_AFTER_MS.to_string(),
                ),
                ("CARRIER_CONSUMER_GROUP".into(), format!("{prefix}-{service}")),
                (
                    "RUST_LOG".into(),
                    std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
                ),
            ];
            env.extend(kafka_connection_env(&kafka));
            env.extend(env_of(service));
            env
        };
        let mut stack = ProcessStack {
            api: Api::new(
                &format!("http://{ingress_http}"),
                carrier_ingress::DEV_ADMIN_TOKEN,
            ),
            prefix: prefix.clone(),
            database_url: database_url.clone(),
            ingress_url: format!("http://{ingress_http}"),
            ingress_admin_url: format!("http://{ingress_admin}"),
            metrics_urls: Vec::new(),
            children: Vec::new(),
            log_dir: {
                let dir = std::env::temp_dir().join(crate::unique("carrier-processes-"));
                std::fs::create_dir_all(&dir).expect("log directory");
                dir
            },
        };
        let mut router = common("router");
        router.push(("CARRIER_HTTP_ADDR".into(), stack.metrics_addr("router")));
        router.push(("CARRIER_GRPC_ADDR".into(), router_grpc.clone()));
        stack.spawn("router", "carrier-router", router);
        let mut notifier = common("notifier");
        notifier.push(("CARRIER_HTTP_ADDR".into(), stack.metrics_addr("notifier")));
        notifier.push(("CARRIER_OUTBOUND__ALLOW_LOOPBACK".into(), "true".into()));
        stack.spawn("notifier", "carrier-notifier", notifier);
        let mut delivery = common("delivery");
        delivery.push(("CARRIER_HTTP_ADDR".into(), stack.metrics_addr("delivery")));
        delivery.push(("CARRIER_CONTROL_ADDR".into(), "127.0.0.1:0".into()));
        delivery.push(("CARRIER_ROUTER_URL".into(), format!("http://{router_grpc}")));
        delivery.push(("CARRIER_OUTBOUND__ALLOW_LOOPBACK".into(), "true".into()));
        stack.spawn("delivery", "carrier-delivery", delivery);
        let mut ingress = common("ingress");
        ingress.push(("CARRIER_HTTP_ADDR".into(), ingress_http.clone()));
        ingress.push(("CARRIER_ADMIN_ADDR".into(), ingress_admin.clone()));
        ingress.push(("CARRIER_ROUTER_URL".into(), format!("http://{router_grpc}")));
        ingress.push(("CARRIER_RATE_LIMIT__REDIS_URL".into(), crate::test_redis()));
        ingress.push((
            "CARRIER_RATE_LIMIT__KEY_PREFIX".into(),
            format!("{}:", crate::unique("carrier-test-")),
        ));
        stack.spawn("ingress", "carrier-ingress", ingress);
        let http = reqwest::Client::new();
        let ready = format!("{}/readyz", stack.ingress_admin_url);
        crate::eventually(Duration::from_secs(90), "ingress /readyz (child process)", || {
            let http = http.clone();
            let ready = ready.clone();
            async move {
                http.get(ready)
                    .send()
                    .await
                    .ok()
                    .filter(|response| response.status().is_success())
                    .map(|_| ())
            }
        })
        .await;
        stack
    }

    /// A free address for `service`'s probes and `/metrics`, remembered in `metrics_urls`.
    fn metrics_addr(&mut self, service: &'static str) -> String {
        let addr = format!("127.0.0.1:{}", free_port());
        self.metrics_urls
            .push((service, format!("http://{addr}/metrics")));
        addr
    }

    /// The process IDs of the running services, by name.
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        self.children
            .iter()
            .filter_map(|(name, child)| Some((*name, child.id()?)))
            .collect()
    }

    fn spawn(&mut self, name: &'static str, binary: &str, env: Vec<(String, String)>) {
        let path = binary_path(binary);
        let log = std::fs::File::create(self.log_dir.join(format!("{name}.log"))).expect("log file");
        let child = tokio::process::Command::new(&path)
            .envs(env)
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start {}: {error} (run `cargo build --bins` first; `make test` does)",
                    path.display()
                )
            });
        self.children.push((name, child));
    }

    /// What `service` wrote to stdout and stderr so far.
    pub fn log(&self, service: &str) -> String {
        std::fs::read_to_string(self.log_dir.join(format!("{service}.log"))).unwrap_or_default()
    }

    /// Stops every process with SIGTERM (as Kubernetes does: they drain and flush their spans),
    /// ingress first; waits up to 30 s for each, then kills it. Drops the database.
    pub async fn stop(mut self) {
        for (name, mut child) in std::mem::take(&mut self.children).into_iter().rev() {
            if let Some(pid) = child.id() {
                let _ = tokio::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()
                    .await;
            }
            if tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .is_err()
            {
                eprintln!("{name} did not stop within 30 s of SIGTERM; killed");
                let _ = child.kill().await;
            }
        }
        let admin_url = format!("{}/postgres", crate::test_postgres());
        use carrier_store::sqlx::Connection as _;
        if let Ok(mut connection) = carrier_store::sqlx::PgConnection::connect(&admin_url).await {
            let name = format!("carrier_{}", self.prefix);
            let _ = carrier_store::sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut connection)
                .await;
        }
        let _ = std::fs::remove_dir_all(&self.log_dir);
    }
}
