//! Organizations: who owns sources and destinations, and where their alerts go.

use carrier_proto::config_v1 as pb;
use carrier_store::sqlx::{self, Row};
use uuid::Uuid;

use super::validation::{backlog_columns, check_alert_emails, check_slack_webhook_url, parse_id, required};
use super::{backlog_from_row, millis, ConfigStore, Result, StoreError};

impl ConfigStore {
    pub async fn create_organization(
        &self,
        request: pb::CreateOrganizationRequest,
    ) -> Result<pb::Organization> {
        required("name", &request.name)?;
        check_alert_emails(&request.alert_emails)?;
        if let Some(url) = &request.slack_webhook_url {
            check_slack_webhook_url(url)?;
        }
        let (after_secs, depth) = backlog_columns(request.backlog_alert.as_ref())?;
        let row = sqlx::query(&format!(
            "INSERT INTO organizations (id, name, alert_emails, slack_webhook_url, backlog_alert_after_secs, backlog_alert_depth)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING {ORGANIZATION_COLUMNS}"
        ))
        .bind(Uuid::now_v7())
        .bind(&request.name)
        .bind(&request.alert_emails)
        .bind(&request.slack_webhook_url)
        .bind(after_secs)
        .bind(depth)
        .fetch_one(&self.pool)
        .await?;
        Ok(organization_from_row(&row))
    }

    /// Renames an organization or changes where its alerts go (alerts still waiting to be sent
    /// use the new addresses).
    pub async fn update_organization(
        &self,
        request: pb::UpdateOrganizationRequest,
    ) -> Result<pb::Organization> {
        let id = parse_id("organization", &request.id)?;
        if let Some(name) = &request.name {
            required("name", name)?;
        }
        let alert_emails = request.alert_emails.map(|emails| emails.addresses);
        if let Some(emails) = &alert_emails {
            check_alert_emails(emails)?;
        }
        if let Some(url) = request.slack_webhook_url.as_deref().filter(|url| !url.is_empty()) {
            check_slack_webhook_url(url)?;
        }
        let replace_backlog = request.backlog_alert.is_some();
        let (after_secs, depth) = backlog_columns(request.backlog_alert.as_ref())?;
        let row = sqlx::query(&format!(
            "UPDATE organizations SET name = COALESCE($2, name), alert_emails = COALESCE($3, alert_emails),
                slack_webhook_url = CASE WHEN $4::text IS NULL THEN slack_webhook_url ELSE NULLIF($4, '') END,
                backlog_alert_after_secs = CASE WHEN $5 THEN $6 ELSE backlog_alert_after_secs END,
                backlog_alert_depth = CASE WHEN $5 THEN $7 ELSE backlog_alert_depth END
             WHERE id = $1 RETURNING {ORGANIZATION_COLUMNS}"
        ))
        .bind(id)
        .bind(&request.name)
        .bind(&alert_emails)
        .bind(&request.slack_webhook_url)
        .bind(replace_backlog)
        .bind(after_secs)
        .bind(depth)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("organization {id} does not exist")))?;
        Ok(organization_from_row(&row))
    }

    pub async fn get_organization(&self, id: &str) -> Result<pb::Organization> {
        let id = parse_id("organization", id)?;
        let row = sqlx::query(&format!(
            "SELECT {ORGANIZATION_COLUMNS} FROM organizations WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("organization {id} does not exist")))?;
        Ok(organization_from_row(&row))
    }

    pub(super) async fn require_organization(&self, id: Uuid) -> Result<()> {
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM organizations WHERE id = $1)")
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        if exists {
            Ok(())
        } else {
            Err(StoreError::Invalid(format!("organization {id} does not exist")))
        }
    }
}

/// What `organization_from_row` reads.
const ORGANIZATION_COLUMNS: &str =
    "id, name, alert_emails, slack_webhook_url, created_at, backlog_alert_after_secs, backlog_alert_depth";

fn organization_from_row(row: &sqlx::postgres::PgRow) -> pb::Organization {
    pb::Organization {
        id: row.get::<Uuid, _>("id").to_string(),
        name: row.get("name"),
        alert_emails: row.get("alert_emails"),
        slack_webhook_url: row.get("slack_webhook_url"),
        created_at_ms: millis(row.get("created_at")),
        backlog_alert: Some(backlog_from_row(row)),
    }
}
