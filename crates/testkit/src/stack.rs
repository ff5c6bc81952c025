//! The whole pipeline for one test: its own topics (random prefix), consumer groups and
//! database, on the shared broker and Postgres. Services run in this process; delivery can also
//! run as a child process, so a test can kill it with SIGKILL.

use std::path::PathBuf;
use std::time::Duration;

use carrier_config::{KafkaSettings, Profile};
use carrier_store::sqlx::{self, Connection};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::Api;

/// Partitions of a test's topics (small: tests are about order and completeness, not scale).
pub const TEST_PARTITIONS: i32 = 4;

#[derive(Debug, Clone)]
pub struct StackOptions {
    pub brokers: String,
    /// Start delivery in this process (otherwise the test starts it, e.g. as a child process).
    pub delivery_in_process: bool,
    pub retry: carrier_delivery::retry::RetryPolicy,
    /// Partitions of `deliveries` (all other topics use [`TEST_PARTITIONS`]).
    pub delivery_partitions: i32,
    /// Idempotent producers; off for tests that restart Tansu (see `KafkaSettings`).
    pub enable_idempotence: bool,
    /// Delivery's in-memory cap per partition (small values show that parking keeps it moving).
    pub delivery_max_pending: usize,
    /// Ingress rate limit: by default a limit no test reaches, on the shared test Redis under a
    /// key prefix of the stack's own.
    pub rate_limit: carrier_ingress::RateLimitSettings,
    /// Lifetime of ingress access tokens (`token_ttl_secs`).
    pub token_ttl_secs: u64,
    /// The outbound policy of delivery and of the notifier's Slack webhooks: by default loopback
    /// is allowed (the test receivers listen on 127.0.0.1); `outbound.rs` runs a stack with the
    /// production default instead.
    pub outbound: carrier_outbound::OutboundSettings,
    /// The notifier's alert settings: by default quick polls and retries.
    pub alerts: carrier_notifier::AlertSettings,
    /// The notifier's SMTP server (none by default: e-mail alerts are skipped); see
    /// [`crate::smtp::SmtpServer`].
    pub smtp: carrier_notifier::SmtpSettings,
    /// The largest record the router writes (`kafka.max_record_bytes`; the default when `None`):
    /// a small value makes a task write fail for good, as a broker refusing its size would.
    pub router_max_record_bytes: Option<usize>,
    /// The `[internal_auth]` section of every service of the stack: by default a random service
    /// token of the stack's own (not the dev default, so a service that did not get it shows),
    /// without TLS.
    pub internal_auth: carrier_internal_auth::InternalAuthSettings,
    /// The rest of every service's `[kafka]` section: the connection's TLS and SASL settings
    /// and the raw librdkafka tables come from here (the default: plaintext); brokers, topic
    /// prefix, timeouts and idempotence are the stack's own.
    pub kafka: KafkaSettings,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            brokers: crate::test_brokers(),
            delivery_in_process: true,
            retry: carrier_delivery::retry::RetryPolicy {
                base_ms: 200,
                cap_ms: 1_000,
                jitter: 0.1,
                non_production_retry_ms: 200,
            },
            delivery_partitions: TEST_PARTITIONS,
            enable_idempotence: true,
            delivery_max_pending: 10_000,
            rate_limit: carrier_ingress::RateLimitSettings {
                redis_url: crate::test_redis(),
                limit: 1_000_000,
                key_prefix: format!("{}:", crate::unique("carrier-test-")),
                ..Default::default()
            },
            token_ttl_secs: 300,
            outbound: carrier_outbound::OutboundSettings {
                allow_loopback: true,
                ..Default::default()
            },
            alerts: carrier_notifier::AlertSettings {
                poll_interval_ms: 200,
                retry_base_ms: 200,
                retry_cap_ms: 2_000,
                ..Default::default()
            },
            smtp: carrier_notifier::SmtpSettings::default(),
            router_max_record_bytes: None,
            internal_auth: carrier_internal_auth::InternalAuthSettings {
                service_token: Some(format!("test-service-token-{}", uuid::Uuid::new_v4().simple())),
                ..Default::default()
            },
            kafka: KafkaSettings::default(),
        }
    }
}

struct Service {
    name: &'static str,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

/// An extra ingress replica of a [`Stack`].
pub struct IngressReplica {
    /// Its public API.
    pub url: String,
    /// Its operator port (`/readyz`, `/metrics`).
    pub admin_url: String,
}

pub struct Stack {
    pub prefix: String,
    pub kafka: KafkaSettings,
    pub database_url: String,
    pub router_url: String,
    pub ingress_url: String,
    /// Ingress's operator port: `/healthz`, `/readyz`, `/metrics`.
    pub ingress_admin_url: String,
    /// The router's and the notifier's probe and metrics ports. The services of a stack run in
    /// this process and share its metrics registry: each of these shows every in-process
    /// service's metrics (a delivery worker started with `spawn_delivery_process` has its own).
    pub router_admin_url: String,
    pub notifier_admin_url: String,
    pub api: Api,
    pub options: StackOptions,
    services: Vec<Service>,
}

/// Tansu's fetches always wait their whole time: the stacks of the tests leave idle partitions
/// out of their fetches after this long, as `make up` does (`kafka.idle_after_ms`), so every
/// test also runs the doorbells and peeks.
pub(crate) const IDLE_AFTER_MS: u32 = 2_000;

impl Stack {
    pub async fn start(options: StackOptions) -> Stack {
        crate::init_test_logging();
        let prefix = crate::unique("t");
        let kafka = KafkaSettings {
            brokers: options.brokers.clone(),
            topic_prefix: format!("{prefix}."),
            session_timeout_ms: 6_000,
            message_timeout_ms: 5_000,
            linger_ms: 2,
            fetch_wait_max_ms: 10,
            idle_after_ms: IDLE_AFTER_MS,
            enable_idempotence: options.enable_idempotence,
            ..options.kafka.clone()
        };
        create_topics(&kafka, options.delivery_partitions).await;
        let database_url = format!("{}/carrier_{prefix}", crate::test_postgres());

        let router_grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let router_url = format!("http://{}", router_grpc.local_addr().expect("addr"));
        let ingress = carrier_ingress::Listeners::loopback().await.expect("bind");
        let ingress_url = format!("http://{}", ingress.api.local_addr().expect("addr"));
        let ingress_admin_url = format!("http://{}", ingress.admin.local_addr().expect("addr"));
        let mut stack = Stack {
            api: Api::new(&ingress_url, carrier_ingress::DEV_ADMIN_TOKEN),
            prefix,
            kafka,
            database_url,
            router_url,
            ingress_url,
            ingress_admin_url,
            router_admin_url: String::new(),
            notifier_admin_url: String::new(),
            options: options.clone(),
            services: Vec::new(),
        };
        stack.spawn_services(router_grpc, ingress).await;
        stack
    }

    /// Starts router, notifier, ingress and (if in process) a delivery worker, serving on the
    /// given listeners, and waits until ingress is ready.
    async fn spawn_services(&mut self, router_grpc: TcpListener, ingress: carrier_ingress::Listeners) {
        let (prefix, database_url, kafka, options) =
            (&self.prefix, &self.database_url, &self.kafka, &self.options);
        let router_http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let router_admin_url = format!("http://{}", router_http.local_addr().expect("addr"));
        let mut router_kafka = kafka.clone();
        if let Some(bytes) = options.router_max_record_bytes {
            router_kafka.max_record_bytes = bytes;
        }
        let router_config = carrier_router::Config {
            profile: Profile::Dev,
            internal_auth: options.internal_auth.clone(),
            database_url: database_url.clone(),
            kafka: router_kafka,
            consumer_group: format!("{prefix}-router"),
            ..Default::default()
        };
        let listeners = carrier_router::Listeners {
            http: router_http,
            grpc: router_grpc,
        };
        self.services.push(spawn("router", |shutdown| {
            carrier_router::run(router_config, listeners, shutdown)
        }));

        let notifier_config = notifier_config(prefix, database_url, kafka, options);
        let notifier_http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let notifier_admin_url = format!("http://{}", notifier_http.local_addr().expect("addr"));
        self.services.push(spawn("notifier", |shutdown| {
            carrier_notifier::run(notifier_config, notifier_http, shutdown)
        }));

        let ingress_config = carrier_ingress::Config {
            profile: Profile::Dev,
            internal_auth: options.internal_auth.clone(),
            router_url: self.router_url.clone(),
            database_url: database_url.clone(),
            kafka: kafka.clone(),
            rate_limit: options.rate_limit.clone(),
            token_ttl_secs: options.token_ttl_secs,
            token_url: Some(format!("{}/oauth/token", self.ingress_url)),
            ..Default::default()
        };
        self.services.push(spawn("ingress", |shutdown| {
            carrier_ingress::run(ingress_config, ingress, shutdown)
        }));
        self.router_admin_url = router_admin_url;
        self.notifier_admin_url = notifier_admin_url;
        if self.options.delivery_in_process {
            self.start_delivery().await;
        }
        self.wait_ready().await;
    }

    /// Stops every in-process service the way SIGTERM would, keeping the database and topics:
    /// nothing of the stack talks to the broker until [`Stack::start_services`].
    pub async fn stop_services(&mut self) {
        for service in self.services.iter().rev() {
            service.shutdown.cancel();
        }
        for service in std::mem::take(&mut self.services).into_iter().rev() {
            match tokio::time::timeout(Duration::from_secs(60), service.task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(error))) => panic!("{} failed: {error:#}", service.name),
                Ok(Err(error)) => panic!("{} panicked: {error}", service.name),
                Err(_) => panic!("{} did not shut down within 60 s", service.name),
            }
        }
    }

    /// Starts the services again after [`Stack::stop_services`], at the same addresses.
    pub async fn start_services(&mut self) {
        let address = |url: &str| url.trim_start_matches("http://").to_string();
        let router_grpc = TcpListener::bind(address(&self.router_url)).await.expect("bind");
        let ingress = carrier_ingress::Listeners {
            api: TcpListener::bind(address(&self.ingress_url)).await.expect("bind"),
            admin: TcpListener::bind(address(&self.ingress_admin_url))
                .await
                .expect("bind"),
        };
        self.spawn_services(router_grpc, ingress).await;
    }

    /// Starts one more notifier replica (same consumer group, database and settings).
    pub async fn start_notifier(&mut self) {
        let config = notifier_config(&self.prefix, &self.database_url, &self.kafka, &self.options);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        self.services.push(spawn("notifier", |shutdown| {
            carrier_notifier::run(config, listener, shutdown)
        }));
    }

    /// Stops the oldest running notifier the way SIGTERM would (its in-flight batches and alert
    /// sends finish first) and starts a new one in its place.
    pub async fn restart_notifier(&mut self) {
        let index = self
            .services
            .iter()
            .position(|service| service.name == "notifier")
            .expect("a notifier is running");
        let service = self.services.remove(index);
        service.shutdown.cancel();
        match tokio::time::timeout(Duration::from_secs(60), service.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => panic!("notifier failed: {error:#}"),
            Ok(Err(error)) => panic!("notifier panicked: {error}"),
            Err(_) => panic!("notifier did not shut down within 60 s"),
        }
        self.start_notifier().await;
    }

    /// The token URL client assertions name as their audience (`aud`).
    /// A proxy in front of the test Postgres and the stack's database URL through it, for a
    /// service started with it (`start_delivery_with`, `start_extra_ingress_with`) whose
    /// Postgres a test then slows, partitions or cuts.
    pub async fn database_behind_proxy(&self) -> (crate::fault_proxy::FaultProxy, String) {
        let postgres: std::net::SocketAddr = "127.0.0.1:5432".parse().expect("addr");
        let proxy = crate::fault_proxy::FaultProxy::start(postgres)
            .await
            .expect("proxy starts");
        let url = self
            .database_url
            .replace("127.0.0.1:5432", &proxy.addr().to_string());
        (proxy, url)
    }

    pub fn token_url(&self) -> String {
        format!("{}/oauth/token", self.ingress_url)
    }

    /// The configuration a delivery worker of this stack runs with.
    pub fn delivery_config(&self) -> carrier_delivery::Config {
        carrier_delivery::Config {
            profile: Profile::Dev,
            internal_auth: self.options.internal_auth.clone(),
            http_addr: "127.0.0.1:0".parse().expect("addr"),
            router_url: self.router_url.clone(),
            database_url: self.database_url.clone(),
            kafka: self.kafka.clone(),
            consumer_group: format!("{}-delivery", self.prefix),
            drain_timeout_ms: 10_000,
            max_pending_per_partition: self.options.delivery_max_pending,
            retry: self.options.retry.clone(),
            outbound: self.options.outbound.clone(),
            ..Default::default()
        }
    }

    /// Starts a delivery worker in this process.
    pub async fn start_delivery(&mut self) {
        self.start_delivery_with(|_| {}).await;
    }

    /// Starts a delivery worker in this process, configured like the others and then changed
    /// by `adjust` (e.g. its Postgres behind a [`crate::fault_proxy::FaultProxy`]).
    pub async fn start_delivery_with(&mut self, adjust: impl FnOnce(&mut carrier_delivery::Config)) {
        let mut config = self.delivery_config();
        adjust(&mut config);
        let listeners = carrier_delivery::Listeners {
            http: TcpListener::bind("127.0.0.1:0").await.expect("bind"),
            control: TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        };
        let before = self.registered_workers().await.unwrap_or(0);
        self.services.push(spawn("delivery", |shutdown| {
            carrier_delivery::run(config, listeners, shutdown)
        }));
        // Operator requests find workers in the registry: the worker is usable once it is there.
        crate::eventually(
            Duration::from_secs(60),
            "the delivery worker to register",
            || async {
                self.registered_workers()
                    .await
                    .filter(|workers| *workers > before)
                    .map(|_| ())
            },
        )
        .await;
    }

    /// Delivery workers in the registry; `None` while the database or table does not exist yet.
    async fn registered_workers(&self) -> Option<i64> {
        let mut connection = sqlx::PgConnection::connect(&self.database_url).await.ok()?;
        sqlx::query_scalar("SELECT count(*) FROM delivery_workers")
            .fetch_one(&mut connection)
            .await
            .ok()
    }

    /// Starts a delivery worker as a child process of the built `carrier-delivery` binary.
    pub fn spawn_delivery_process(&self) -> tokio::process::Child {
        self.spawn_delivery_process_serving("127.0.0.1:0")
    }

    /// [`Stack::spawn_delivery_process`] with its probes and metrics on `http_addr`.
    pub fn spawn_delivery_process_serving(&self, http_addr: &str) -> tokio::process::Child {
        let config = self.delivery_config();
        let binary = binary_path("carrier-delivery");
        let mut command = tokio::process::Command::new(&binary);
        let internal_auth = &config.internal_auth;
        let path_env = [
            (
                "CARRIER_INTERNAL_AUTH__TLS_CERT_PATH",
                &internal_auth.tls_cert_path,
            ),
            ("CARRIER_INTERNAL_AUTH__TLS_KEY_PATH", &internal_auth.tls_key_path),
            ("CARRIER_INTERNAL_AUTH__TLS_CA_PATH", &internal_auth.tls_ca_path),
        ];
        for (name, path) in path_env {
            if let Some(path) = path {
                command.env(name, path);
            }
        }
        if let Some(name) = &internal_auth.tls_server_name {
            command.env("CARRIER_INTERNAL_AUTH__TLS_SERVER_NAME", name);
        }
        if let Some(token) = &internal_auth.service_token {
            command.env("CARRIER_INTERNAL_AUTH__SERVICE_TOKEN", token);
        }
        command
            .env("CARRIER_PROFILE", "dev")
            .env("CARRIER_HTTP_ADDR", http_addr)
            .env("CARRIER_CONTROL_ADDR", "127.0.0.1:0")
            .env("CARRIER_ROUTER_URL", &config.router_url)
            .env("CARRIER_DATABASE_URL", &config.database_url)
            .env("CARRIER_KAFKA__BROKERS", &config.kafka.brokers)
            .env("CARRIER_KAFKA__TOPIC_PREFIX", &config.kafka.topic_prefix)
            .env(
                "CARRIER_KAFKA__SESSION_TIMEOUT_MS",
                config.kafka.session_timeout_ms.to_string(),
            )
            .envs(kafka_connection_env(&config.kafka))
            .env("CARRIER_CONSUMER_GROUP", &config.consumer_group)
            .env("CARRIER_DRAIN_TIMEOUT_MS", config.drain_timeout_ms.to_string())
            .env(
                "CARRIER_MAX_PENDING_PER_PARTITION",
                config.max_pending_per_partition.to_string(),
            )
            .env("CARRIER_RETRY__BASE_MS", config.retry.base_ms.to_string())
            .env("CARRIER_RETRY__CAP_MS", config.retry.cap_ms.to_string())
            .env("CARRIER_RETRY__JITTER", config.retry.jitter.to_string())
            .env(
                "CARRIER_RETRY__NON_PRODUCTION_RETRY_MS",
                config.retry.non_production_retry_ms.to_string(),
            )
            .env(
                "CARRIER_OUTBOUND__ALLOW_LOOPBACK",
                config.outbound.allow_loopback.to_string(),
            )
            .env(
                "CARRIER_OUTBOUND__ALLOW_PRIVATE",
                config.outbound.allow_private.to_string(),
            )
            .env(
                "CARRIER_OUTBOUND__ALLOWED_NETWORKS",
                config.outbound.allowed_networks.join(","),
            )
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start {}: {error} (run `cargo build --bins` first; `make test` does)",
                    binary.display()
                )
            })
    }

    /// Starts one more ingress replica in this process, with the same router, topics, database
    /// and rate-limit settings as the first; returns its URL once it is ready.
    pub async fn start_extra_ingress(&mut self) -> String {
        self.start_extra_ingress_with(|_| {}).await
    }

    /// Starts one more ingress replica configured like the first, then changed by `adjust`
    /// (e.g. a closed broker port, a tiny producer queue, a short token lifetime); returns its
    /// URL once it is ready. It shares the first replica's token signing key (dev profile).
    pub async fn start_extra_ingress_with(
        &mut self,
        adjust: impl FnOnce(&mut carrier_ingress::Config),
    ) -> String {
        self.start_extra_ingress_replica(adjust).await.url
    }

    /// [`Stack::start_extra_ingress_with`], also returning the replica's operator port.
    pub async fn start_extra_ingress_replica(
        &mut self,
        adjust: impl FnOnce(&mut carrier_ingress::Config),
    ) -> IngressReplica {
        let listeners = carrier_ingress::Listeners::loopback().await.expect("bind");
        let replica = IngressReplica {
            url: format!("http://{}", listeners.api.local_addr().expect("addr")),
            admin_url: format!("http://{}", listeners.admin.local_addr().expect("addr")),
        };
        let mut config = carrier_ingress::Config {
            profile: Profile::Dev,
            internal_auth: self.options.internal_auth.clone(),
            router_url: self.router_url.clone(),
            database_url: self.database_url.clone(),
            kafka: self.kafka.clone(),
            rate_limit: self.options.rate_limit.clone(),
            token_ttl_secs: self.options.token_ttl_secs,
            // One token URL for all replicas, as behind a load balancer.
            token_url: Some(self.token_url()),
            ..Default::default()
        };
        adjust(&mut config);
        self.services.push(spawn("ingress", |shutdown| {
            carrier_ingress::run(config, listeners, shutdown)
        }));
        ingress_ready(&replica.admin_url).await;
        replica
    }

    async fn wait_ready(&self) {
        let http = reqwest::Client::new();
        crate::eventually(Duration::from_secs(60), "ingress /readyz", || {
            let http = http.clone();
            let url = format!("{}/readyz", self.ingress_admin_url);
            async move {
                http.get(url)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ())
            }
        })
        .await;
    }

    /// Runs one SQL query returning a count on the stack's database.
    pub async fn count(&self, sql: &str) -> i64 {
        let mut connection = sqlx::PgConnection::connect(&self.database_url)
            .await
            .expect("database");
        sqlx::query_scalar(sql)
            .fetch_one(&mut connection)
            .await
            .expect("count query")
    }

    /// Stops every in-process service (SIGTERM-like graceful shutdown) and drops the database.
    pub async fn stop(mut self) {
        self.stop_services().await;
        let admin_url = format!("{}/postgres", crate::test_postgres());
        if let Ok(mut connection) = sqlx::PgConnection::connect(&admin_url).await {
            let name = self
                .database_url
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string();
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut connection)
                .await;
        }
    }
}

impl Drop for Stack {
    /// A test that panics never reaches `stop`: cancel the services anyway, so their consumer
    /// threads end and the test's runtime can shut down.
    fn drop(&mut self) {
        for service in &self.services {
            service.shutdown.cancel();
        }
    }
}

/// The configuration of a notifier of the stack.
fn notifier_config(
    prefix: &str,
    database_url: &str,
    kafka: &KafkaSettings,
    options: &StackOptions,
) -> carrier_notifier::Config {
    carrier_notifier::Config {
        profile: Profile::Dev,
        database_url: database_url.to_string(),
        kafka: kafka.clone(),
        consumer_group: format!("{prefix}-notifier"),
        alerts: options.alerts.clone(),
        smtp: options.smtp.clone(),
        outbound: options.outbound.clone(),
        ..Default::default()
    }
}

/// The `CARRIER_KAFKA__*` variables of `kafka`'s connection settings (TLS, SASL, raw tables),
/// for a service started as a child process.
pub fn kafka_connection_env(kafka: &KafkaSettings) -> Vec<(String, String)> {
    let mut env = vec![(
        "CARRIER_KAFKA__SECURITY_PROTOCOL".to_string(),
        kafka.security_protocol.as_str().to_string(),
    )];
    let mut optional = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            env.push((format!("CARRIER_KAFKA__{name}"), value));
        }
    };
    let path = |path: &Option<PathBuf>| path.as_ref().map(|path| path.display().to_string());
    optional("SSL_CA_LOCATION", path(&kafka.ssl_ca_location));
    optional("SSL_CERTIFICATE_LOCATION", path(&kafka.ssl_certificate_location));
    optional("SSL_KEY_LOCATION", path(&kafka.ssl_key_location));
    optional(
        "SSL_KEY_PASSWORD",
        kafka
            .ssl_key_password
            .as_ref()
            .map(|secret| secret.expose().to_string()),
    );
    optional(
        "SSL_ENDPOINT_IDENTIFICATION",
        Some(kafka.ssl_endpoint_identification.as_str().to_string()),
    );
    optional(
        "SASL_MECHANISM",
        kafka
            .sasl_mechanism
            .map(|mechanism| mechanism.as_str().to_string()),
    );
    optional("SASL_USERNAME", kafka.sasl_username.clone());
    optional(
        "SASL_PASSWORD",
        kafka
            .sasl_password
            .as_ref()
            .map(|secret| secret.expose().to_string()),
    );
    for (table, properties) in [
        ("CLIENT", &kafka.client),
        ("PRODUCER", &kafka.producer),
        ("CONSUMER", &kafka.consumer),
    ] {
        for (name, value) in properties {
            optional(
                &format!("{table}__{}", name.replace('.', "_").to_uppercase()),
                Some(value.clone()),
            );
        }
    }
    env
}

/// Waits until the ingress whose operator port is `admin_url` answers `/readyz` (an extra
/// replica's `wait_ready`).
async fn ingress_ready(admin_url: &str) {
    let http = reqwest::Client::new();
    crate::eventually(Duration::from_secs(60), "ingress /readyz", || {
        let http = http.clone();
        let url = format!("{admin_url}/readyz");
        async move {
            http.get(url)
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        }
    })
    .await;
}

fn spawn<F, Fut>(name: &'static str, run: F) -> Service
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(shutdown.clone()));
    Service { name, shutdown, task }
}

/// Creates the stack's topics.
pub async fn create_topics(kafka: &KafkaSettings, delivery_partitions: i32) {
    let topics = carrier_kafka::Topics::new(kafka);
    carrier_kafka::admin::ensure_topics(
        kafka,
        &[
            (&topics.inbound, TEST_PARTITIONS),
            (&topics.deliveries, delivery_partitions),
            (&topics.log_events, TEST_PARTITIONS),
            (&topics.notifications, 1),
        ],
    )
    .await
    .expect("test topics can be created");
}

/// The path of a workspace binary next to the running test executable
/// (`target/<profile>/deps/<test>` → `target/<profile>/<name>`).
pub fn binary_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    profile_dir.join(name)
}
