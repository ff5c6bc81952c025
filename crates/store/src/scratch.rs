//! A throwaway database for the unit tests of crates that `carrier-testkit` itself depends on
//! (delivery, notifier): created on `CARRIER_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432`), migrated, and dropped by [`ScratchDatabase::drop`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::{Connection, PgPool};

pub struct ScratchDatabase {
    pub pool: PgPool,
    admin_url: String,
    name: String,
}

impl ScratchDatabase {
    /// A new migrated database named `{prefix}_<unique>`. Panics when Postgres is unreachable.
    pub async fn create(prefix: &str) -> ScratchDatabase {
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
        let pool = crate::connect_and_migrate(&format!("{server}/{name}"), 4, Duration::from_secs(10))
            .await
            .expect("test Postgres (CARRIER_TEST_POSTGRES)");
        ScratchDatabase {
            pool,
            admin_url: format!("{server}/postgres"),
            name,
        }
    }

    /// Closes the pool and drops the database.
    pub async fn drop(self) {
        self.pool.close().await;
        if let Ok(mut connection) = sqlx::PgConnection::connect(&self.admin_url).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name))
                .execute(&mut connection)
                .await;
        }
    }
}
