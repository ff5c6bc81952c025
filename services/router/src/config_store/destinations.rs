//! Destinations: the receivers' endpoints, and the operator's controls over their queues (pause,
//! skip the head, retry the head now).

use carrier_proto::config_v1 as pb;
use carrier_store::sqlx::types::chrono::{DateTime, Utc};
use carrier_store::sqlx::{self, Row};
use uuid::Uuid;

use super::credentials::random_token;
use super::validation::{
    backlog_columns, check_timeout, check_url, check_verification_token, parse_environment, parse_id,
    required,
};
use super::{backlog_from_row, millis, ConfigStore, Result, StoreError};

impl ConfigStore {
    pub async fn create_destination(&self, request: pb::CreateDestinationRequest) -> Result<pb::Destination> {
        required("name", &request.name)?;
        required("url", &request.url)?;
        required("environment", &request.environment)?;
        check_url(&request.url)?;
        let environment = parse_environment(&request.environment)?;
        let organization_id = parse_id("organization_id", &request.organization_id)?;
        self.require_organization(organization_id).await?;
        let timeout_ms = check_timeout(request.timeout_ms.unwrap_or(self.default_timeout_ms))?;
        if let Some(token) = &request.verification_token {
            check_verification_token(token)?;
        }
        let token = request.verification_token.unwrap_or_else(|| random_token(24));
        let (after_secs, depth) = backlog_columns(request.backlog_alert.as_ref())?;
        let row = sqlx::query(
            "INSERT INTO destinations (id, organization_id, name, url, environment, verification_token, signing_secret, timeout_ms,
                                       backlog_alert_after_secs, backlog_alert_depth)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING *",
        )
        .bind(Uuid::now_v7())
        .bind(organization_id)
        .bind(&request.name)
        .bind(&request.url)
        .bind(environment.as_str())
        .bind(&token)
        .bind(carrier_signature::generate_secret())
        .bind(timeout_ms as i32)
        .bind(after_secs)
        .bind(depth)
        .fetch_one(&self.pool)
        .await?;
        Ok(destination_from_row(&row))
    }

    pub async fn get_destination(&self, id: &str) -> Result<pb::Destination> {
        let id = parse_id("destination", id)?;
        let row = sqlx::query("SELECT * FROM destinations WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("destination {id} does not exist")))?;
        Ok(destination_from_row(&row))
    }

    pub async fn update_destination(&self, request: pb::UpdateDestinationRequest) -> Result<pb::Destination> {
        let id = parse_id("destination", &request.id)?;
        if let Some(name) = &request.name {
            required("name", name)?;
        }
        if let Some(url) = &request.url {
            check_url(url)?;
        }
        if let Some(timeout_ms) = request.timeout_ms {
            check_timeout(timeout_ms)?;
        }
        if let Some(token) = &request.verification_token {
            check_verification_token(token)?;
        }
        let replace_backlog = request.backlog_alert.is_some();
        let (after_secs, depth) = backlog_columns(request.backlog_alert.as_ref())?;
        let row = sqlx::query(
            "UPDATE destinations SET
                name = COALESCE($2, name),
                url = COALESCE($3, url),
                verification_token = COALESCE($4, verification_token),
                timeout_ms = COALESCE($5, timeout_ms),
                backlog_alert_after_secs = CASE WHEN $6 THEN $7 ELSE backlog_alert_after_secs END,
                backlog_alert_depth = CASE WHEN $6 THEN $8 ELSE backlog_alert_depth END,
                updated_at = now()
             WHERE id = $1 RETURNING *",
        )
        .bind(id)
        .bind(&request.name)
        .bind(&request.url)
        .bind(&request.verification_token)
        .bind(request.timeout_ms.map(|t| t as i32))
        .bind(replace_backlog)
        .bind(after_secs)
        .bind(depth)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("destination {id} does not exist")))?;
        Ok(destination_from_row(&row))
    }

    /// Holds (or releases) a destination's queue by operator decision.
    pub async fn set_destination_paused(&self, id: &str, paused: bool) -> Result<pb::Destination> {
        let sql = "UPDATE destinations SET
                paused_by_operator = $2,
                paused_at = CASE WHEN $2 THEN COALESCE(paused_at, now()) ELSE NULL END,
                updated_at = now()
             WHERE id = $1 RETURNING *";
        let id = parse_id("destination", id)?;
        self.update_destination_row(id, sqlx::query(sql).bind(id).bind(paused))
            .await
    }

    /// Asks delivery to cancel the destination's head: task `retry_id` (empty: the original
    /// task) of log `log_id`.
    pub async fn skip_head(&self, id: &str, log_id: &str, retry_id: &str) -> Result<pb::Destination> {
        let sql = "UPDATE destinations SET skip_log_id = $2, skip_retry_id = $3, updated_at = now()
             WHERE id = $1 RETURNING *";
        let (id, log_id) = (parse_id("destination", id)?, parse_id("log", log_id)?);
        self.update_destination_row(id, sqlx::query(sql).bind(id).bind(log_id).bind(retry_id))
            .await
    }

    /// Asks delivery to attempt the held head (task `retry_id` of log `log_id`) now.
    pub async fn retry_head_now(&self, id: &str, log_id: &str, retry_id: &str) -> Result<pb::Destination> {
        let sql = "UPDATE destinations SET retry_log_id = $2, retry_now_retry_id = $3,
                retry_requested_at = now(), updated_at = now()
             WHERE id = $1 RETURNING *";
        let (id, log_id) = (parse_id("destination", id)?, parse_id("log", log_id)?);
        self.update_destination_row(id, sqlx::query(sql).bind(id).bind(log_id).bind(retry_id))
            .await
    }

    /// Runs an `UPDATE destinations ... RETURNING *` of destination `id`.
    async fn update_destination_row(
        &self,
        id: Uuid,
        query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<pb::Destination> {
        let row = query
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("destination {id} does not exist")))?;
        Ok(destination_from_row(&row))
    }
}

fn destination_from_row(row: &sqlx::postgres::PgRow) -> pb::Destination {
    pb::Destination {
        id: row.get::<Uuid, _>("id").to_string(),
        organization_id: row.get::<Uuid, _>("organization_id").to_string(),
        name: row.get("name"),
        url: row.get("url"),
        environment: row.get("environment"),
        verification_token: row.get("verification_token"),
        signing_secret: row.get("signing_secret"),
        timeout_ms: row.get::<i32, _>("timeout_ms") as u32,
        created_at_ms: millis(row.get("created_at")),
        updated_at_ms: millis(row.get("updated_at")),
        paused_by_operator: row.get("paused_by_operator"),
        paused_at_ms: row
            .get::<Option<DateTime<Utc>>, _>("paused_at")
            .map(millis)
            .unwrap_or(0),
        skip_log_id: row
            .get::<Option<Uuid>, _>("skip_log_id")
            .map(|id| id.to_string())
            .unwrap_or_default(),
        retry_log_id: row
            .get::<Option<Uuid>, _>("retry_log_id")
            .map(|id| id.to_string())
            .unwrap_or_default(),
        retry_requested_at_ms: row
            .get::<Option<DateTime<Utc>>, _>("retry_requested_at")
            .map(millis)
            .unwrap_or(0),
        skip_retry_id: row.get::<Option<String>, _>("skip_retry_id").unwrap_or_default(),
        retry_now_retry_id: row
            .get::<Option<String>, _>("retry_now_retry_id")
            .unwrap_or_default(),
        backlog_alert: Some(backlog_from_row(row)),
    }
}
