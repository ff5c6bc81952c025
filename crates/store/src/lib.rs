//! Carrier's Postgres database: one schema, owned here. Production migrates it with
//! `carrierctl admin migrate` (the Helm chart's pre-install/pre-upgrade Job, the compose file's
//! `carrier-init`), and each service only checks at start that the schema is exactly the one it
//! was built for ([`Schema::Require`]); the dev profile (`make up`, the tests) migrates at start
//! ([`Schema::Migrate`]; sqlx takes an advisory lock, so replicas starting together are safe).
//!
//! Why services do not migrate in production: every pod of every service would race to change
//! the schema during a rolling upgrade, an old pod restarting mid-upgrade would run against a
//! schema it does not know, and a failed migration would crash-loop the whole fleet instead of
//! failing one Job that the operator can read.
//!
//! Tables: `organizations`, `sources`, `destinations`, `subscriptions` (configuration, written by
//! the router) and `logs`, `attempts` (the log store, written by the notifier, read by ingress);
//! `parked_tasks`, `destination_queues` (held backlogs and their state) and `delivery_workers`
//! (which worker owns which partitions), written by delivery; `consumer_members`,
//! `partition_leases` (which member of each stage works on which partition, and its committed
//! offset, [`leases`]), written by every consumer; `destination_incidents`, `alerts`
//! and `alert_deliveries` (incident state and the alert outbox), written by the notifier;
//! `idempotency_keys` (ingress) and `message_bodies` (large bodies kept out of Kafka, [`bodies`]).
#![forbid(unsafe_code)]

pub mod bodies;
pub mod leases;
pub mod scratch;

use std::time::Duration;

use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgPool, PgPoolOptions};

pub use sqlx;

/// A delivery worker whose `delivery_workers` row is older than this is taken for gone (rows
/// are refreshed every 2 s).
pub const LIVE_WORKER_SECS: i64 = 10;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot reach or create the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Schema(String),
}

/// What a service does with the schema when it connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// Apply pending migrations (development and tests).
    Migrate,
    /// Refuse to run unless every migration this build knows is applied, unchanged, and none
    /// it does not know (production: `carrierctl admin migrate` migrates).
    Require,
}

impl Schema {
    /// What a service of `profile` does at start: dev migrates, production requires.
    pub fn at_start(profile: carrier_config::Profile) -> Schema {
        match profile {
            carrier_config::Profile::Dev => Schema::Migrate,
            carrier_config::Profile::Production => Schema::Require,
        }
    }
}

/// Where a database's schema stands against this build's migrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatus {
    /// The newest migration this build knows.
    pub expected: i64,
    /// Migrations applied successfully, oldest first.
    pub applied: Vec<i64>,
    /// Known migrations not applied yet.
    pub pending: Vec<i64>,
    /// Applied migrations this build does not know (a newer Carrier migrated the database).
    pub unknown: Vec<i64>,
    /// Those of `unknown` that older builds must not run on (`schema_compatibility`; a newer
    /// migration is additive unless it says so there).
    pub incompatible: Vec<i64>,
    /// Applied migrations whose text differs from this build's (an edited migration).
    pub changed: Vec<i64>,
    /// Migrations that started and did not finish (a failed `migrate`).
    pub failed: Vec<i64>,
}

impl SchemaStatus {
    pub fn is_current(&self) -> bool {
        self.pending.is_empty()
            && self.unknown.is_empty()
            && self.changed.is_empty()
            && self.failed.is_empty()
    }

    /// Why a service must not run on this schema, for its start-up error; `None` when current.
    pub fn refusal(&self, service: &str) -> Option<String> {
        let list = list_versions;
        if !self.failed.is_empty() {
            return Some(format!(
                "database schema: migration {} failed part-way; read the migrate Job's log, fix \
                 the cause and run `carrierctl admin migrate` again",
                list(&self.failed)
            ));
        }
        if !self.incompatible.is_empty() {
            return Some(format!(
                "database schema has migration {} that this {service} (version {}, schema {}) \
                 does not know and must not run on: a newer Carrier migrated it. Run that newer \
                 version (a rollback of the deployment does not roll the schema back; see \
                 docs/production.md)",
                list(&self.incompatible),
                env!("CARGO_PKG_VERSION"),
                self.expected
            ));
        }
        if !self.changed.is_empty() {
            return Some(format!(
                "database schema: applied migration {} differs from this build's; the migrations \
                 of a released version never change",
                list(&self.changed)
            ));
        }
        if !self.pending.is_empty() {
            return Some(format!(
                "database schema is not migrated for this {service} (version {}): migration {} \
                 pending. Run `carrierctl admin migrate` first (the Helm chart's pre-install and \
                 pre-upgrade Job and the compose file's carrier-init service do)",
                env!("CARGO_PKG_VERSION"),
                list(&self.pending)
            ));
        }
        None
    }
}

/// Runs `batch` (one short DELETE transaction) until one deletes fewer than `full` rows, and
/// returns how many rows all of them deleted. Purges delete in batches so that none holds many
/// row locks or a long transaction while the services keep writing.
pub async fn in_batches<F, Fut>(full: u64, mut batch: F) -> Result<u64, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, sqlx::Error>>,
{
    let mut total = 0;
    loop {
        let deleted = batch().await?;
        total += deleted;
        if deleted < full {
            return Ok(total);
        }
    }
}

/// Runs `pass` (a purge returning how many rows it deleted) every `every` until `shutdown`,
/// the first at once; logs what it deleted or why it failed, and counts both by `what` (a short
/// name: `carrier_purged_rows_total{what}`, `carrier_purge_failures_total{what}`). A failed pass
/// is retried at the next tick. Every periodic purge of every service runs through here.
pub async fn purge_every<F, Fut>(
    what: &'static str,
    every: Duration,
    shutdown: tokio_util::sync::CancellationToken,
    mut pass: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, sqlx::Error>>,
{
    let purged_rows = carrier_telemetry::counter_vec(
        "carrier_purged_rows_total",
        "Rows deleted by the periodic purges, by purge",
        &["what"],
    )
    .with_label_values(&[what]);
    let failures = carrier_telemetry::counter_vec(
        "carrier_purge_failures_total",
        "Periodic purge passes that failed (retried at the next pass), by purge",
        &["what"],
    )
    .with_label_values(&[what]);
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let result = tokio::select! {
            result = pass() => result,
            _ = shutdown.cancelled() => return,
        };
        match result {
            Ok(0) => tracing::debug!(what, "purge found nothing to delete"),
            Ok(purged) => {
                purged_rows.inc_by(purged);
                tracing::info!(purged, what, "purged");
            }
            Err(error) => {
                failures.inc();
                tracing::warn!(%error, what, "purge failed; retried at the next pass");
            }
        }
    }
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Migration versions as people read them: `17, 18`.
pub fn list_versions(versions: &[i64]) -> String {
    versions.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
}

/// Where `pool`'s schema stands against this build's migrations (sqlx's `_sqlx_migrations`; a
/// database never migrated has every migration pending).
pub async fn schema_status(pool: &PgPool) -> Result<SchemaStatus, sqlx::Error> {
    let table: Option<String> = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
        .fetch_one(pool)
        .await?;
    let rows: Vec<(i64, bool, Vec<u8>)> = if table.is_some() {
        sqlx::query_as("SELECT version, success, checksum FROM _sqlx_migrations ORDER BY version")
            .fetch_all(pool)
            .await?
    } else {
        Vec::new()
    };
    let known: Vec<&sqlx::migrate::Migration> = MIGRATOR
        .iter()
        .filter(|migration| !migration.migration_type.is_down_migration())
        .collect();
    let mut status = SchemaStatus {
        expected: known.iter().map(|m| m.version).max().unwrap_or(0),
        applied: Vec::new(),
        pending: Vec::new(),
        unknown: Vec::new(),
        incompatible: Vec::new(),
        changed: Vec::new(),
        failed: Vec::new(),
    };
    for (version, success, checksum) in &rows {
        match known.iter().find(|m| m.version == *version) {
            _ if !success => status.failed.push(*version),
            None => status.unknown.push(*version),
            Some(migration) if migration.checksum.as_ref() != checksum.as_slice() => {
                status.changed.push(*version)
            }
            Some(_) => status.applied.push(*version),
        }
    }
    for migration in &known {
        if !rows.iter().any(|(version, ..)| *version == migration.version) {
            status.pending.push(migration.version);
        }
    }
    if !status.unknown.is_empty() {
        let compatibility: Option<String> =
            sqlx::query_scalar("SELECT to_regclass('schema_compatibility')::text")
                .fetch_one(pool)
                .await?;
        if compatibility.is_some() {
            status.incompatible = sqlx::query_scalar(
                "SELECT version FROM schema_compatibility
                  WHERE version = ANY($1) AND oldest_compatible > $2 ORDER BY version",
            )
            .bind(&status.unknown)
            .bind(status.expected)
            .fetch_all(pool)
            .await?;
        }
    }
    Ok(status)
}

/// Connects (creating the database if it does not exist, retrying for up to `wait` while
/// Postgres is not answering yet) and applies every pending migration: `carrierctl admin
/// migrate`. Returns the schema before and after.
pub async fn migrate(url: &str, wait: Duration) -> Result<(SchemaStatus, SchemaStatus), StoreError> {
    let pool = connect_retrying(url, 2, wait).await?;
    let before = schema_status(&pool).await.map_err(StoreError::Connect)?;
    MIGRATOR.run(&pool).await.map_err(StoreError::Migrate)?;
    let after = schema_status(&pool).await.map_err(StoreError::Connect)?;
    pool.close().await;
    Ok((before, after))
}

/// A service's connection: with [`Schema::Migrate`] pending migrations are applied; with
/// [`Schema::Require`] the service refuses to start (with a message saying what to run) unless
/// the schema is exactly this build's. `service` names it in that message.
pub async fn connect(
    service: &str,
    url: &str,
    max_connections: u32,
    wait: Duration,
    schema: Schema,
) -> Result<PgPool, StoreError> {
    match schema {
        Schema::Migrate => connect_and_migrate(url, max_connections, wait).await,
        Schema::Require => {
            let pool = connect_retrying(url, max_connections, wait).await?;
            let status = schema_status(&pool).await.map_err(StoreError::Connect)?;
            match status.refusal(service) {
                None if !status.unknown.is_empty() => {
                    tracing::warn!(
                        service,
                        newer = %list_versions(&status.unknown),
                        schema = status.expected,
                        "the database schema is newer than this build; running, since its newer \
                         migrations are additive (a rolling upgrade in progress, or a rollback)"
                    );
                    Ok(pool)
                }
                None => Ok(pool),
                Some(refusal) => {
                    pool.close().await;
                    Err(StoreError::Schema(refusal))
                }
            }
        }
    }
}

/// Connects (creating the database if it does not exist) and applies pending migrations.
/// Retries for up to `wait` while Postgres is not answering yet, then gives up.
pub async fn connect_and_migrate(
    url: &str,
    max_connections: u32,
    wait: Duration,
) -> Result<PgPool, StoreError> {
    let pool = connect_retrying(url, max_connections, wait).await?;
    MIGRATOR.run(&pool).await.map_err(StoreError::Migrate)?;
    Ok(pool)
}

/// Connects, creating the database if it does not exist; retries for up to `wait` while
/// Postgres is not answering yet.
async fn connect_retrying(url: &str, max_connections: u32, wait: Duration) -> Result<PgPool, StoreError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match try_connect(url, max_connections).await {
            Ok(pool) => return Ok(pool),
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(%error, "postgres not reachable yet, retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

async fn try_connect(url: &str, max_connections: u32) -> Result<PgPool, StoreError> {
    if !sqlx::Postgres::database_exists(url)
        .await
        .map_err(StoreError::Connect)?
    {
        // Two services may race to create it; the loser's error is harmless.
        if let Err(error) = sqlx::Postgres::create_database(url).await {
            if !sqlx::Postgres::database_exists(url).await.unwrap_or(false) {
                return Err(StoreError::Connect(error));
            }
        }
    }
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(StoreError::Connect)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch::ScratchDatabase;

    const WAIT: Duration = Duration::from_secs(10);

    async fn refusal(url: &str) -> String {
        connect("carrier-router", url, 2, WAIT, Schema::Require)
            .await
            .map(|_| ())
            .unwrap_err()
            .to_string()
    }

    #[tokio::test]
    async fn a_service_runs_only_on_the_schema_it_was_built_for() {
        let database = ScratchDatabase::empty("carrier_schema").await;
        let url = database.url();

        // Never migrated: refused, saying what to run.
        let error = refusal(&url).await;
        assert!(error.contains("carrierctl admin migrate"), "{error}");
        assert!(error.contains("carrier-router"), "{error}");

        let (before, after) = migrate(&url, WAIT).await.unwrap();
        assert_eq!(before.pending.len(), MIGRATOR.iter().count());
        assert!(before.applied.is_empty());
        assert!(after.is_current(), "{after:?}");
        assert_eq!(after.applied.last(), Some(&after.expected));
        connect("carrier-router", &url, 2, WAIT, Schema::Require)
            .await
            .expect("a migrated schema is accepted")
            .close()
            .await;
        let (again, _) = migrate(&url, WAIT).await.unwrap();
        assert!(again.pending.is_empty(), "a second migrate has nothing to do");

        // A newer Carrier migrated the database: this build does not know its migration. It is
        // additive (no schema_compatibility row): this build still runs (a rolling upgrade, a
        // rollback), but the schema is not current.
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (99990101000000, 'from a newer version', true, '\\x00', 1)",
        )
        .execute(&database.pool)
        .await
        .unwrap();
        let status = schema_status(&database.pool).await.unwrap();
        assert_eq!(status.unknown, vec![99990101000000]);
        assert!(status.incompatible.is_empty() && !status.is_current());
        connect("carrier-router", &url, 2, WAIT, Schema::Require)
            .await
            .expect("an additive newer migration is run on")
            .close()
            .await;

        // The newer migration says older builds must not run on it.
        sqlx::query("INSERT INTO schema_compatibility (version, oldest_compatible) VALUES ($1, $1)")
            .bind(99990101000000_i64)
            .execute(&database.pool)
            .await
            .unwrap();
        let error = refusal(&url).await;
        assert!(error.contains("99990101000000"), "{error}");
        assert!(error.contains("newer Carrier"), "{error}");

        // A migration that failed part-way comes first: it is what the operator must fix.
        sqlx::query("UPDATE _sqlx_migrations SET success = false WHERE version = $1")
            .bind(after.expected)
            .execute(&database.pool)
            .await
            .unwrap();
        let error = refusal(&url).await;
        assert!(error.contains("failed part-way"), "{error}");

        // The dev profile migrates at start instead.
        assert_eq!(Schema::at_start(carrier_config::Profile::Dev), Schema::Migrate);
        assert_eq!(
            Schema::at_start(carrier_config::Profile::Production),
            Schema::Require
        );
        database.drop().await;
    }
}
