//! A throwaway database for the unit tests of crates that `carrier-testkit` itself depends on
//! (delivery, notifier): created on `CARRIER_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432`), migrated, and dropped by [`ScratchDatabase::drop`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::migrate::MigrateDatabase;
use sqlx::{Connection, PgPool};

pub struct ScratchDatabase {
    pub pool: PgPool,
    server: String,
    name: String,
}

impl ScratchDatabase {
    /// A new migrated database named `{prefix}_<unique>`. Panics when Postgres is unreachable.
    pub async fn create(prefix: &str) -> ScratchDatabase {
        let (server, name) = unique_name(prefix);
        let pool = crate::connect_and_migrate(&format!("{server}/{name}"), 4, Duration::from_secs(10))
            .await
            .expect("test Postgres (CARRIER_TEST_POSTGRES)");
        ScratchDatabase { pool, server, name }
    }

    /// A new database without any migration applied (tests of the schema check).
    pub async fn empty(prefix: &str) -> ScratchDatabase {
        let (server, name) = unique_name(prefix);
        let url = format!("{server}/{name}");
        sqlx::Postgres::create_database(&url)
            .await
            .expect("test Postgres (CARRIER_TEST_POSTGRES)");
        let pool = PgPool::connect(&url).await.expect("the new database");
        ScratchDatabase { pool, server, name }
    }

    /// The database's URL.
    pub fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }

    /// Closes the pool and drops the database.
    pub async fn drop(self) {
        self.pool.close().await;
        if let Ok(mut connection) = sqlx::PgConnection::connect(&format!("{}/postgres", self.server)).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name))
                .execute(&mut connection)
                .await;
        }
    }
}

/// The test server (`CARRIER_TEST_POSTGRES`) and a database name no other test uses.
fn unique_name(prefix: &str) -> (String, String) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let server = std::env::var("CARRIER_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or_default();
    let name = format!(
        "{prefix}_{}_{nanos}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    (server, name)
}
