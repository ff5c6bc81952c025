//! Sources: the senders of messages, each with its client credentials and environment.

use carrier_proto::config_v1 as pb;
use carrier_store::sqlx::{self, Row};
use uuid::Uuid;

use super::credentials::{random_token, secret_hash};
use super::validation::{parse_environment, parse_id, required};
use super::{millis, ConfigStore, Result, StoreError};
use crate::client_assertion;

impl ConfigStore {
    pub async fn create_source(&self, request: pb::CreateSourceRequest) -> Result<pb::CreatedSource> {
        required("name", &request.name)?;
        required("environment", &request.environment)?;
        let environment = parse_environment(&request.environment)?;
        let organization_id = parse_id("organization_id", &request.organization_id)?;
        if let Some(public_jwk) = &request.public_jwk {
            client_assertion::check_public_jwk(public_jwk).map_err(StoreError::Invalid)?;
        }
        self.require_organization(organization_id).await?;
        let client_id = format!("cl_{}", random_token(12));
        let client_secret = format!("cs_{}", random_token(32));
        let row = sqlx::query(
            "INSERT INTO sources (id, organization_id, name, environment, client_id, client_secret_hash, public_jwk)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
        )
        .bind(Uuid::now_v7())
        .bind(organization_id)
        .bind(&request.name)
        .bind(environment.as_str())
        .bind(&client_id)
        .bind(secret_hash(&client_secret))
        .bind(&request.public_jwk)
        .fetch_one(&self.pool)
        .await?;
        Ok(pb::CreatedSource {
            source: Some(source_from_row(&row)),
            client_secret,
        })
    }

    pub async fn get_source(&self, id: &str) -> Result<pb::Source> {
        let id = parse_id("source", id)?;
        let row = sqlx::query("SELECT * FROM sources WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("source {id} does not exist")))?;
        Ok(source_from_row(&row))
    }

    /// Renames, disables or re-enables a source.
    pub async fn update_source(&self, request: pb::UpdateSourceRequest) -> Result<pb::Source> {
        let id = parse_id("source", &request.id)?;
        if let Some(name) = &request.name {
            required("name", name)?;
        }
        if let Some(public_jwk) = request.public_jwk.as_deref().filter(|jwk| !jwk.is_empty()) {
            client_assertion::check_public_jwk(public_jwk).map_err(StoreError::Invalid)?;
        }
        let row = sqlx::query(
            "UPDATE sources SET name = COALESCE($2, name), enabled = COALESCE($3, enabled),
                public_jwk = CASE WHEN $4::text IS NULL THEN public_jwk ELSE NULLIF($4, '') END
             WHERE id = $1 RETURNING *",
        )
        .bind(id)
        .bind(&request.name)
        .bind(request.enabled)
        .bind(&request.public_jwk)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("source {id} does not exist")))?;
        let source = source_from_row(&row);
        if request.enabled.is_some() {
            tracing::info!(source_id = %source.id, enabled = source.enabled, "source updated");
        }
        Ok(source)
    }

    /// The IDs of every disabled source.
    pub async fn disabled_sources(&self) -> Result<Vec<String>> {
        let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM sources WHERE NOT enabled ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        Ok(ids.into_iter().map(|id| id.to_string()).collect())
    }
}

pub(super) fn source_from_row(row: &sqlx::postgres::PgRow) -> pb::Source {
    pb::Source {
        id: row.get::<Uuid, _>("id").to_string(),
        organization_id: row.get::<Uuid, _>("organization_id").to_string(),
        name: row.get("name"),
        environment: row.get("environment"),
        client_id: row.get("client_id"),
        enabled: row.get("enabled"),
        created_at_ms: millis(row.get("created_at")),
        public_jwk: row.get::<Option<String>, _>("public_jwk").unwrap_or_default(),
    }
}
