//! The configuration in Postgres, and the routing question answered from it.
//!
//! [`ConfigStore`] is one struct with its methods spread by entity, each file an
//! `impl ConfigStore` block: `organizations`, `sources`, `destinations` and `subscriptions` (their
//! CRUD and how their rows read), `credentials` (client secrets, client assertions and their
//! replay protection), `routing` ([`ConfigStore::resolve`]). The rules a request's fields must
//! follow are pure functions in `validation`.

mod credentials;
mod destinations;
mod organizations;
mod routing;
mod sources;
mod subscriptions;
mod validation;

use carrier_proto::config_v1 as pb;
// The answer to a disabled source, wherever it shows up (token, routing, logs).
use carrier_proto::error::SOURCE_DISABLED;
use carrier_proto::ErrorKind;
use carrier_store::sqlx::types::chrono::{DateTime, Utc};
use carrier_store::sqlx::{self, PgPool, Row};

/// Why a configuration request failed. Each variant maps to one [`ErrorKind`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("invalid client credentials")]
    BadCredentials,
    /// Credentials that fail for a reason the client may hear (a client assertion's claims).
    #[error("{0}")]
    Unauthorized(String),
    #[error("configuration store failed: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Invalid(_) => ErrorKind::BadRequest,
            StoreError::NotFound(_) => ErrorKind::NotFound,
            StoreError::Forbidden(_) => ErrorKind::Forbidden,
            StoreError::BadCredentials | StoreError::Unauthorized(_) => ErrorKind::Unauthorized,
            StoreError::Database(_) => ErrorKind::Internal,
        }
    }
}

impl From<StoreError> for tonic::Status {
    fn from(error: StoreError) -> Self {
        if let StoreError::Database(source) = &error {
            tracing::warn!(error = %source, "configuration query failed");
        }
        error.kind().status(error.to_string())
    }
}

type Result<T> = std::result::Result<T, StoreError>;

/// The configuration store.
pub struct ConfigStore {
    pool: PgPool,
    default_timeout_ms: u32,
}

impl ConfigStore {
    pub fn new(pool: PgPool, default_timeout_ms: u32) -> Self {
        Self {
            pool,
            default_timeout_ms,
        }
    }
}

fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

/// The backlog-alert thresholds of an organization or destination row.
fn backlog_from_row(row: &sqlx::postgres::PgRow) -> pb::BacklogAlert {
    pb::BacklogAlert {
        after_secs: row
            .get::<Option<i32>, _>("backlog_alert_after_secs")
            .map(|v| v as u32),
        depth: row.get::<Option<i32>, _>("backlog_alert_depth").map(|v| v as u32),
    }
}
