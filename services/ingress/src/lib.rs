//! Ingress: where senders and operators talk to Carrier over HTTP.
//!
//! - `api::oauth`    `POST /oauth/token` — client credentials → short-lived Bearer token (`auth`).
//! - `api::endpoint` `POST /endpoint` — the Data Model API, and `api::fhir`
//!   `POST /fhir/R4/{type}` — the FHIR API: each validates its own request, then both take the
//!   one pipeline of `api::accept`: ask the router where the message goes (`routes`), write it
//!   to `carrier.inbound` and answer 200 only once the broker acknowledged the write (acks=all).
//! - `api::logs`     `GET /v1/logs/{id}`, `GET /v1/logs` (search: `api::log_search`) — read
//!   from the log store (Postgres); `api::retry` `POST /v1/logs/{id}/retry` and
//!   `POST /v1/logs/retry` (every log a search finds) — manual retry.
//!   `POST /endpoint` and `/fhir/R4/{type}` with an `Idempotency-Key` header: a retried POST
//!   gets the original answer instead (`api::idempotency`, keys in Postgres for 24 h).
//! - `api::admin`    `/v1/organizations|sources|destinations|subscriptions` — forwarded to the
//!   router, which owns the configuration.
//! - `auth`          access tokens, the operator token, and the disabled sources (polled from the
//!   router) whose tokens are refused.
//! - `overload`      the first thing every public request meets: caps on connections and on
//!   requests in progress (globally, per source, manual retries), 503 with `Retry-After` past
//!   them; header, body and request deadlines.
//! - `rate_limit`    every public route: at most `limit` requests per client IP in any rolling
//!   window, counted in Redis and shared by all replicas; 429 with `Retry-After` past it. Fails
//!   open when Redis is away (Redis holds only what may be lost).
//!
//! - `delivery_control`, `routes`, `auth` call the router and the delivery workers over gRPC,
//!   every call carrying the internal service token (`carrier-internal-auth`: `[internal_auth]`,
//!   optionally mutual TLS).
//!
//! - `openapi`       `GET /openapi.json` — the OpenAPI 3 document generated from the handlers;
//!   `api::router` registers and documents every public route from one list (committed at
//!   `docs/openapi.json`; a test keeps the two equal).
//!
//! Every error answer is an `error::ApiError`: one status table, rendered in the shape of the API
//! the request used (`{"Meta": {"Errors": [{"Text": ...}]}}`, or a FHIR `OperationOutcome`
//! under `/fhir/`).
#![forbid(unsafe_code)]

mod api;
/// Access tokens and callers; public for the benchmark of authentication's cost.
pub mod auth;
mod console;
mod delivery_control;
mod error;
mod http_metrics;
mod http_trace;
mod metrics;
pub mod openapi;
pub mod overload;
#[doc(hidden)] // the request parsers, for the fuzz targets in fuzz/; not an API
pub mod parsers;
pub mod rate_limit;
mod routes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use carrier_config::{ConfigError, KafkaSettings, Profile};
use carrier_internal_auth::{AuthenticatedChannel, InternalAuth, InternalAuthSettings};
use carrier_kafka::producer::{self, Ordering};
use carrier_kafka::rdkafka::producer::FutureProducer;
use carrier_kafka::Topics;
use carrier_proto::config_v1::config_service_client::ConfigServiceClient;
use carrier_store::sqlx::PgPool;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use auth::SOURCE_DISABLED;
pub use error::ApiError;
pub use overload::LimitSettings;
pub use rate_limit::RateLimitSettings;

/// The default operator token of the dev profile. Production refuses to start without its own.
pub const DEV_ADMIN_TOKEN: &str = "dev-admin-token";
/// The token signing key of the dev profile. Production refuses to start without its own.
pub const DEV_TOKEN_SIGNING_KEY: &str = "dev-token-signing-key-not-for-production-use";

/// Ingress configuration. Every field can be set as `CARRIER_<FIELD>`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Address of the public HTTP API.
    pub http_addr: SocketAddr,
    /// Address of the operator's port: `/healthz`, `/readyz` and `/metrics`, kept off the public
    /// port so that the internet sees neither the metrics nor the probes (and the rate limit and
    /// overload caps of the public port never fail a probe).
    pub admin_addr: SocketAddr,
    /// `production` (default) or `dev`.
    pub profile: Profile,
    /// Bearer token of the operator (admin API, every log). Required in production;
    /// `dev-admin-token` in the dev profile when unset.
    pub admin_token: Option<String>,
    /// Key that signs access tokens (at least 32 bytes). Required in production; every ingress
    /// replica must share it.
    pub token_signing_key: Option<String>,
    /// Keys whose tokens are accepted besides `token_signing_key`'s, during a rotation (see
    /// README "Rotating secrets"): a list, or comma-separated in the environment.
    #[serde(deserialize_with = "carrier_config::list_or_comma_separated")]
    pub accepted_token_signing_keys: Vec<String>,
    /// Lifetime of an access token.
    pub token_ttl_secs: u64,
    /// The URL senders request tokens at, as they address it (e.g.
    /// `https://carrier.example.org/oauth/token`): the audience (`aud`) a `private_key_jwt`
    /// client assertion must name. Unset: client assertions are refused (client secrets only).
    pub token_url: Option<String>,
    /// How often the list of disabled sources is fetched from the router: a source disabled
    /// through another replica has its tokens refused here within this long.
    pub source_status_refresh_ms: u64,
    /// gRPC URL of the router (configuration and routing).
    pub router_url: String,
    /// The `[internal_auth]` section (`CARRIER_INTERNAL_AUTH__*`): the service token ingress
    /// presents to the router and the delivery workers (all three share it), and optional
    /// mutual TLS. The token is required in production.
    pub internal_auth: InternalAuthSettings,
    /// Postgres URL of the log store.
    pub database_url: String,
    /// Connections to Postgres per replica. Requests with an `Idempotency-Key` (two or three
    /// statements each) and large bodies wait for one; 8 held keyed requests to ~600/s.
    pub database_max_connections: u32,
    /// The `[kafka]` section (`CARRIER_KAFKA__*`).
    pub kafka: KafkaSettings,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Bodies larger than this are stored in Postgres and travel through Kafka by reference,
    /// so Kafka records stay small (Tansu cannot serve records of 5 MiB or more at all).
    pub inline_body_bytes: usize,
    /// How long stored (large) bodies are kept: a retry needs the body, so keep it as long as
    /// the logs (30 days by default).
    pub stored_body_retention_days: u64,
    /// How long routing answers are reused before the router is asked again.
    pub route_cache_ttl_ms: u64,
    /// Upper bound on waiting for the broker's acknowledgement before answering 504.
    pub produce_timeout_ms: u64,
    /// How long an `Idempotency-Key` is remembered (its retry answers with the original IDs).
    pub idempotency_window_secs: u64,
    /// The `[rate_limit]` section (`CARRIER_RATE_LIMIT__*`): per-client-IP limit in Redis.
    pub rate_limit: RateLimitSettings,
    /// The `[limits]` section (`CARRIER_LIMITS__*`): connections, requests in progress and
    /// deadlines (see `overload`).
    pub limits: LimitSettings,
}

/// Never shows a secret: the database URL without its password, tokens and keys redacted.
impl std::fmt::Debug for Config {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Config")
            .field("http_addr", &self.http_addr)
            .field("admin_addr", &self.admin_addr)
            .field("profile", &self.profile)
            .field("admin_token", &carrier_config::RedactedOption(&self.admin_token))
            .field(
                "token_signing_key",
                &carrier_config::RedactedOption(&self.token_signing_key),
            )
            .field(
                "accepted_token_signing_keys",
                &format_args!(
                    "[{} key(s), {}]",
                    self.accepted_token_signing_keys.len(),
                    carrier_config::REDACTED
                ),
            )
            .field("token_ttl_secs", &self.token_ttl_secs)
            .field("token_url", &self.token_url)
            .field("source_status_refresh_ms", &self.source_status_refresh_ms)
            .field("router_url", &self.router_url)
            .field("internal_auth", &self.internal_auth)
            .field("database_url", &carrier_config::RedactedUrl(&self.database_url))
            .field("database_max_connections", &self.database_max_connections)
            .field("kafka", &self.kafka)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("inline_body_bytes", &self.inline_body_bytes)
            .field("stored_body_retention_days", &self.stored_body_retention_days)
            .field("route_cache_ttl_ms", &self.route_cache_ttl_ms)
            .field("produce_timeout_ms", &self.produce_timeout_ms)
            .field("idempotency_window_secs", &self.idempotency_window_secs)
            .field("rate_limit", &self.rate_limit)
            .field("limits", &self.limits)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http_addr: "127.0.0.1:8080".parse().expect("valid address"),
            admin_addr: "127.0.0.1:8084".parse().expect("valid address"),
            profile: Profile::Production,
            admin_token: None,
            token_signing_key: None,
            accepted_token_signing_keys: Vec::new(),
            token_ttl_secs: 300,
            token_url: None,
            source_status_refresh_ms: 1_000,
            router_url: "http://127.0.0.1:50051".into(),
            internal_auth: InternalAuthSettings::default(),
            database_url: "postgres://postgres@127.0.0.1:5432/carrier".into(),
            database_max_connections: 32,
            kafka: KafkaSettings::default(),
            max_body_bytes: 10 * 1024 * 1024,
            inline_body_bytes: 512 * 1024,
            stored_body_retention_days: 30,
            route_cache_ttl_ms: 1_000,
            produce_timeout_ms: 15_000,
            idempotency_window_secs: 24 * 60 * 60,
            rate_limit: RateLimitSettings::default(),
            limits: LimitSettings::default(),
        }
    }
}

impl Config {
    /// Loads and validates; fills the dev profile's defaults for unset secrets.
    pub fn load() -> Result<Self, ConfigError> {
        carrier_config::load::<Config>()?.validate()
    }

    /// Checks the configuration and fills what the profile supplies (called by both `load` and
    /// `run`, so a configuration built in code is checked too).
    pub fn validate(mut self) -> Result<Self, ConfigError> {
        if self.profile == Profile::Dev {
            self.admin_token.get_or_insert_with(|| DEV_ADMIN_TOKEN.into());
            self.token_signing_key
                .get_or_insert_with(|| DEV_TOKEN_SIGNING_KEY.into());
        }
        match &self.admin_token {
            None => {
                return Err(ConfigError::Invalid(
                    "admin_token (CARRIER_ADMIN_TOKEN) is required in production".into(),
                ))
            }
            Some(token) if token.len() < 12 => {
                return Err(ConfigError::Invalid(
                    "admin_token must be at least 12 characters".into(),
                ))
            }
            Some(_) => {}
        }
        match &self.token_signing_key {
            None => {
                return Err(ConfigError::Invalid(
                    "token_signing_key (CARRIER_TOKEN_SIGNING_KEY) is required in production".into(),
                ))
            }
            Some(key) if key.len() < 32 => {
                return Err(ConfigError::Invalid(
                    "token_signing_key must be at least 32 bytes".into(),
                ))
            }
            Some(_) => {}
        }
        for key in &self.accepted_token_signing_keys {
            if key.len() < 32 {
                return Err(ConfigError::Invalid(
                    "accepted_token_signing_keys: every key must be at least 32 bytes".into(),
                ));
            }
        }
        if self.profile == Profile::Production {
            let known = [
                DEV_ADMIN_TOKEN,
                DEV_TOKEN_SIGNING_KEY,
                // What docker-compose.yml and the Helm chart's notes showed before they required
                // generated values.
                "change-me-operator-token",
                "change-me-to-32-or-more-random-bytes-please",
            ];
            let admin_token = self.admin_token.as_deref().expect("checked above");
            carrier_config::check_not_placeholder("admin_token (CARRIER_ADMIN_TOKEN)", admin_token, &known)?;
            let signing_key = self.token_signing_key.as_deref().expect("checked above");
            carrier_config::check_not_placeholder(
                "token_signing_key (CARRIER_TOKEN_SIGNING_KEY)",
                signing_key,
                &known,
            )?;
            for key in &self.accepted_token_signing_keys {
                carrier_config::check_not_placeholder("accepted_token_signing_keys", key, &known)?;
            }
        }
        if self.token_ttl_secs == 0 {
            return Err(ConfigError::Invalid("token_ttl_secs must be positive".into()));
        }
        if self.stored_body_retention_days == 0 {
            return Err(ConfigError::Invalid(
                "stored_body_retention_days must be positive".into(),
            ));
        }
        if self.database_max_connections == 0 {
            return Err(ConfigError::Invalid(
                "database_max_connections must be at least 1".into(),
            ));
        }
        if self.idempotency_window_secs == 0 {
            return Err(ConfigError::Invalid(
                "idempotency_window_secs must be positive".into(),
            ));
        }
        if self.source_status_refresh_ms == 0 {
            return Err(ConfigError::Invalid(
                "source_status_refresh_ms must be positive".into(),
            ));
        }
        carrier_kafka::client::validate(&self.kafka)?;
        self.rate_limit.validate()?;
        self.limits.validate()?;
        self.internal_auth = self
            .internal_auth
            .validated(self.profile)
            .map_err(|error| ConfigError::Invalid(error.to_string()))?;
        Ok(self)
    }
}

/// How often expired idempotency keys and stored bodies past retention are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(600);

/// What every handler shares.
pub(crate) struct AppState {
    pub config: Config,
    pub tokens: auth::TokenSigner,
    pub router: ConfigServiceClient<AuthenticatedChannel>,
    pub routes: routes::RouteCache,
    pub producer: FutureProducer,
    pub topics: Topics,
    pub log_store: PgPool,
    /// `Idempotency-Key`s, in the same Postgres.
    pub idempotency: api::idempotency::Store,
    pub delivery_control: delivery_control::DeliveryControl,
    /// `None` when `rate_limit.enabled` is off.
    pub rate_limiter: Option<Arc<rate_limit::RateLimiter>>,
    /// The caps on requests in progress.
    pub gate: overload::in_flight::Gate,
    /// Reads delivery tasks back from `carrier.deliveries` for manual retries: one client for
    /// every retry (creating one per request cost a broker connection each time).
    pub task_reader: carrier_kafka::admin::RecordReader,
}

/// Runs ingress on `listener` until `shutdown` is cancelled; in-flight requests finish first.
/// Ingress's bound sockets (tests bind `127.0.0.1:0`).
pub struct Listeners {
    /// The public API.
    pub api: TcpListener,
    /// Probes and metrics.
    pub admin: TcpListener,
}

impl Listeners {
    pub async fn bind(config: &Config) -> std::io::Result<Self> {
        Ok(Self {
            api: carrier_telemetry::bind(config.http_addr).await?,
            admin: carrier_telemetry::bind(config.admin_addr).await?,
        })
    }

    /// Both on `127.0.0.1`, at ports the system picks (tests, benchmarks).
    pub async fn loopback() -> std::io::Result<Self> {
        Ok(Self {
            api: TcpListener::bind("127.0.0.1:0").await?,
            admin: TcpListener::bind("127.0.0.1:0").await?,
        })
    }
}

pub async fn run(config: Config, listeners: Listeners, shutdown: CancellationToken) -> anyhow::Result<()> {
    let config = config.validate()?;
    let readiness = carrier_telemetry::Readiness::default();
    // Not ready from the first moment of a shutdown: the load balancer stops sending new
    // requests while the ones in progress drain (the Helm chart's preStop delay gives it time to
    // notice before SIGTERM arrives and the API port closes).
    let admin = tokio::spawn(carrier_telemetry::serve_probes(
        "ingress",
        listeners.admin,
        readiness.clone(),
        shutdown.clone(),
    ));
    let internal_auth =
        InternalAuth::new("ingress", &config.internal_auth, config.profile).context("internal_auth")?;
    let channel = internal_auth
        .channel(
            &config.router_url,
            Duration::from_secs(2),
            Duration::from_secs(10),
        )
        .context("router_url")?;
    let log_store = carrier_store::connect(
        "carrier-ingress",
        &config.database_url,
        config.database_max_connections,
        Duration::from_secs(30),
        carrier_store::Schema::at_start(config.profile),
    )
    .await
    .context("postgres")?;
    let producer =
        producer::create(&config.kafka, "carrier-ingress", Ordering::PerRequest).context("kafka producer")?;
    // Its writes wake the router's idle partitions (Tansu only: kafka.idle_after_ms).
    carrier_kafka::doorbell::install(&config.kafka, &log_store);
    // Connects in the background: ingress starts and serves (unlimited) while Redis is away.
    let rate_limiter = if config.rate_limit.enabled {
        Some(rate_limit::RateLimiter::start(
            config.rate_limit.clone(),
            shutdown.clone(),
        )?)
    } else {
        tracing::warn!("rate limit disabled (rate_limit.enabled = false)");
        None
    };
    let state = Arc::new(AppState {
        tokens: auth::TokenSigner::new(
            config.token_signing_key.as_deref().expect("validated"),
            config.token_ttl_secs,
        )
        .accepting(&config.accepted_token_signing_keys),
        router: ConfigServiceClient::new(channel),
        routes: routes::RouteCache::new(Duration::from_millis(config.route_cache_ttl_ms)),
        producer,
        topics: Topics::new(&config.kafka),
        idempotency: api::idempotency::Store::new(
            log_store.clone(),
            Duration::from_secs(config.idempotency_window_secs),
            Duration::from_millis(config.produce_timeout_ms),
        ),
        log_store,
        delivery_control: delivery_control::DeliveryControl::new(internal_auth),
        rate_limiter,
        gate: overload::in_flight::Gate::new(&config.limits),
        task_reader: carrier_kafka::admin::RecordReader::new(&config.kafka).context("kafka reader")?,
        config,
    });
    let source_status = tokio::spawn(state.tokens.disabled_sources().clone().refresh(
        state.router.clone(),
        Duration::from_millis(state.config.source_status_refresh_ms),
        shutdown.clone(),
    ));
    // Every replica purges; deleting rows another replica already deleted costs nothing.
    let idempotency = state.idempotency.clone();
    let purge = tokio::spawn(carrier_store::purge_every(
        "idempotency_keys",
        PURGE_EVERY,
        shutdown.clone(),
        move || {
            let idempotency = idempotency.clone();
            async move { idempotency.purge_once().await }
        },
    ));
    let (pool, retention) = (
        state.log_store.clone(),
        Duration::from_secs(state.config.stored_body_retention_days * 24 * 60 * 60),
    );
    let body_purge = tokio::spawn(carrier_store::purge_every(
        "stored_bodies",
        PURGE_EVERY,
        shutdown.clone(),
        move || {
            let pool = pool.clone();
            async move { carrier_store::bodies::purge_older_than(&pool, retention).await }
        },
    ));
    // The console's files beside the API, outside its limits (see console.rs).
    let app = api::router(state.clone()).merge(console::router());
    readiness.set_ready(true);
    tracing::info!(addr = %listeners.api.local_addr()?, "ingress ready");
    overload::connections::serve(listeners.api, app, &state.config.limits, shutdown.clone())
        .await
        .context("http server")?;
    admin
        .await
        .context("admin server task")?
        .context("admin server")?;
    source_status.await.context("source status task")?;
    purge.await.context("idempotency purge task")?;
    body_purge.await.context("stored body purge task")?;
    tracing::info!("ingress stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration printed with `{:?}` (a panic, a debug log) shows none of its secrets.
    #[test]
    fn debug_output_shows_no_secret() {
        let config = Config {
            admin_token: Some("admin-s3cr3t-token".into()),
            token_signing_key: Some("signing-s3cr3t-key-0123456789abcdef".into()),
            accepted_token_signing_keys: vec!["old-s3cr3t-key-0123456789abcdef0123".into()],
            database_url: "postgres://carrier:db-s3cr3t@db.internal:5432/carrier?sslmode=verify-full".into(),
            internal_auth: InternalAuthSettings {
                service_token: Some("internal-s3cr3t-token-0123456789abcdef".into()),
                ..Default::default()
            },
            kafka: carrier_config::redaction_check::kafka_with_secrets(),
            rate_limit: RateLimitSettings {
                redis_url: "rediss://:redis-s3cr3t@cache:6380".into(),
                ..Default::default()
            },
            ..Config::default()
        };
        let printed = format!("{config:?}");
        assert!(!printed.contains("s3cr3t"), "{printed}");
        assert!(
            printed.contains("postgres://carrier:<redacted>@db.internal:5432/carrier?sslmode=verify-full"),
            "{printed}"
        );
        assert!(printed.contains("sasl_username: Some(\"carrier\")"), "{printed}");
    }

    #[test]
    fn production_refuses_to_start_without_its_secrets() {
        let error = Config::default().validate().unwrap_err().to_string();
        assert!(error.contains("admin_token"), "{error}");
        let error = Config {
            admin_token: Some("operator-token-123".into()),
            ..Config::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(error.contains("token_signing_key"), "{error}");
        let dev = Config {
            profile: Profile::Dev,
            ..Config::default()
        }
        .validate()
        .unwrap();
        assert_eq!(dev.admin_token.as_deref(), Some(DEV_ADMIN_TOKEN));
    }

    #[test]
    fn production_refuses_the_compose_files_example_secrets() {
        let error = Config {
            admin_token: Some("change-me-operator-token".into()),
            token_signing_key: Some("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b".into()),
            ..Config::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("admin_token (CARRIER_ADMIN_TOKEN) is a placeholder"),
            "{error}"
        );
        let error = Config {
            admin_token: Some("4d967a30111bf29f0eba01c448b375c1".into()),
            token_signing_key: Some(DEV_TOKEN_SIGNING_KEY.into()),
            ..Config::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("token_signing_key (CARRIER_TOKEN_SIGNING_KEY) is a placeholder"),
            "{error}"
        );
        Config {
            admin_token: Some("4d967a30111bf29f0eba01c448b375c1".into()),
            token_signing_key: Some("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b".into()),
            internal_auth: InternalAuthSettings {
                service_token: Some("c4ca4238a0b923820dcc509a6f75849bc81e728d".into()),
                ..Default::default()
            },
            ..Config::default()
        }
        .validate()
        .expect("generated secrets pass");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail closure returns figment::Error
    fn rate_limit_settings_come_from_the_environment_and_bad_ones_name_the_field() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CARRIER_PROFILE", "dev");
            let defaults = Config::load().map_err(|e| e.to_string())?.rate_limit;
            assert_eq!(defaults, RateLimitSettings::default());
            assert!(defaults.enabled);
            assert_eq!((defaults.limit, defaults.window_secs), (7_500, 300));
            assert_eq!(defaults.redis_url, "redis://127.0.0.1:6379");
            assert_eq!(defaults.key_prefix, "carrier:");
            assert!(defaults.trusted_proxies.is_empty());

            jail.set_env("CARRIER_RATE_LIMIT__LIMIT", "100");
            jail.set_env("CARRIER_RATE_LIMIT__WINDOW_SECS", "60");
            jail.set_env("CARRIER_RATE_LIMIT__TIMEOUT_MS", "50");
            jail.set_env("CARRIER_RATE_LIMIT__KEY_PREFIX", "edge:");
            jail.set_env("CARRIER_RATE_LIMIT__TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.1");
            let settings = Config::load().map_err(|e| e.to_string())?.rate_limit;
            assert_eq!(
                (settings.limit, settings.window_secs, settings.timeout_ms),
                (100, 60, 50)
            );
            assert_eq!(settings.key_prefix, "edge:");
            assert_eq!(settings.trusted_proxies, vec!["10.0.0.0/8", "192.0.2.1"]);

            jail.create_file(
                "ingress.toml",
                "[rate_limit]\nenabled = false\ntrusted_proxies = [\"fd00::/8\", \"::1\"]\n",
            )?;
            jail.set_env("CARRIER_CONFIG_FILE", "ingress.toml");
            jail.set_env("CARRIER_RATE_LIMIT__TRUSTED_PROXIES", "");
            let settings = Config::load().map_err(|e| e.to_string())?.rate_limit;
            assert!(!settings.enabled);
            assert!(
                settings.trusted_proxies.is_empty(),
                "the environment overrides the file"
            );

            jail.set_env("CARRIER_RATE_LIMIT__LIMIT", "0");
            let error = Config::load().unwrap_err().to_string();
            assert!(error.contains("rate_limit.limit"), "{error}");
            jail.set_env("CARRIER_RATE_LIMIT__LIMIT", "lots");
            let error = Config::load().unwrap_err().to_string().to_lowercase();
            assert!(error.contains("rate_limit.limit"), "{error}");
            jail.set_env("CARRIER_RATE_LIMIT__LIMIT", "10");
            jail.set_env("CARRIER_RATE_LIMIT__TRUSTED_PROXIES", "10.0.0.0/8,10.0.0.0/99");
            let error = Config::load().unwrap_err().to_string();
            assert!(
                error.contains("rate_limit.trusted_proxies: '10.0.0.0/99'"),
                "{error}"
            );
            Ok(())
        });
    }
}
