//! The configuration in Postgres, and the routing question answered from it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use carrier_config::Environment;
use carrier_proto::config_v1 as pb;
use carrier_proto::ErrorKind;
use carrier_store::sqlx::types::chrono::{DateTime, Utc};
use carrier_store::sqlx::{self, PgPool, Row};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::client_assertion;

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

fn parse_id(what: &str, id: &str) -> Result<Uuid> {
    Uuid::parse_str(id).map_err(|_| StoreError::Invalid(format!("{what} '{id}' is not a valid ID")))
}

fn parse_environment(value: &str) -> Result<Environment> {
    value.parse().map_err(StoreError::Invalid)
}

fn check_url(url: &str) -> Result<()> {
    match url::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => Ok(()),
        _ => Err(StoreError::Invalid(format!(
            "url '{url}' is not an absolute http(s) URL"
        ))),
    }
}

fn check_timeout(timeout_ms: u32) -> Result<u32> {
    if (100..=60_000).contains(&timeout_ms) {
        Ok(timeout_ms)
    } else {
        Err(StoreError::Invalid(format!(
            "timeout_ms {timeout_ms} is outside 100..=60000"
        )))
    }
}

/// The verification token goes out as a header value with every attempt: a character a header
/// cannot carry would fail every attempt, and the destination's queue would hold forever.
fn check_verification_token(token: &str) -> Result<()> {
    if (1..=256).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(StoreError::Invalid(
            "verification_token must be 1 to 256 visible ASCII characters (it is sent as a header value)"
                .into(),
        ))
    }
}

fn check_alert_emails(emails: &[String]) -> Result<()> {
    for email in emails {
        if !email.contains('@') {
            return Err(StoreError::Invalid(format!(
                "alert_emails: '{email}' is not an e-mail address"
            )));
        }
    }
    Ok(())
}

fn check_slack_webhook_url(url: &str) -> Result<()> {
    check_url(url).map_err(|_| {
        StoreError::Invalid(format!(
            "slack_webhook_url '{url}' is not an absolute http(s) URL"
        ))
    })
}

fn required(field: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        Err(StoreError::Invalid(format!("Required field missing - {field}")))
    } else {
        Ok(())
    }
}

fn random_token(bytes: usize) -> String {
    let raw: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    URL_SAFE_NO_PAD.encode(raw)
}

/// How a client secret is stored: its SHA-256. The secret is 32 random bytes made here (never
/// chosen by a person), so no dictionary or brute force reaches it through the hash, and a slow
/// password hash would only make `/oauth/token` an easy way to burn the router's CPU.
/// The longest a replaced client secret may stay valid.
pub const MAX_SECRET_OVERLAP_SECS: u32 = 7 * 24 * 60 * 60;

fn secret_hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The answer to a disabled source, wherever it shows up (token, routing, logs).
pub const SOURCE_DISABLED: &str = "Source is disabled";

fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

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

    /// Forgets the IDs of client assertions that can no longer be used (past their `exp` and the
    /// leeway); run periodically (`PURGE_EVERY` in lib.rs), not at every token request.
    pub async fn purge_used_assertion_ids(&self) -> std::result::Result<u64, sqlx::Error> {
        Ok(
            sqlx::query("DELETE FROM client_assertion_jtis WHERE expires_at < now() - interval '5 minutes'")
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

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

    /// Gives the source a new client secret. The replaced one stays valid for `overlap_secs`
    /// (at most [`MAX_SECRET_OVERLAP_SECS`]); a second rotation within the window ends the
    /// first secret's overlap at once (only one previous secret is kept).
    pub async fn rotate_client_secret(&self, id: &str, overlap_secs: u32) -> Result<pb::RotatedSecret> {
        let id = parse_id("source", id)?;
        if overlap_secs > MAX_SECRET_OVERLAP_SECS {
            return Err(StoreError::Invalid(format!(
                "overlap_secs must be at most {MAX_SECRET_OVERLAP_SECS} (7 days)"
            )));
        }
        let client_secret = format!("cs_{}", random_token(32));
        let row = sqlx::query(
            "UPDATE sources SET
                 previous_client_secret_hash = CASE WHEN $3 > 0 THEN client_secret_hash END,
                 previous_secret_expires_at = CASE WHEN $3 > 0 THEN now() + $3 * interval '1 second' END,
                 client_secret_hash = $2
             WHERE id = $1 RETURNING *",
        )
        .bind(id)
        .bind(secret_hash(&client_secret))
        .bind(i64::from(overlap_secs))
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("source {id} does not exist")))?;
        let previous_valid_until_ms = row
            .get::<Option<DateTime<Utc>>, _>("previous_secret_expires_at")
            .map_or(0, |until| until.timestamp_millis());
        tracing::info!(source_id = %id, overlap_secs, "client secret rotated");
        Ok(pb::RotatedSecret {
            source: Some(source_from_row(&row)),
            client_secret,
            previous_valid_until_ms,
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

    /// Checks client credentials. Unknown client and wrong secret answer the same error, so the
    /// answer reveals nothing about which was wrong; a disabled source is named as such only to
    /// a caller that knows its secret.
    pub async fn authenticate(&self, client_id: &str, client_secret: &str) -> Result<pb::Source> {
        let row = sqlx::query("SELECT * FROM sources WHERE client_id = $1")
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::BadCredentials)?;
        let offered = secret_hash(client_secret);
        let stored: Vec<u8> = row.get("client_secret_hash");
        // The secret a rotation replaced, until its overlap window ends.
        let previous = row
            .get::<Option<Vec<u8>>, _>("previous_client_secret_hash")
            .zip(row.get::<Option<DateTime<Utc>>, _>("previous_secret_expires_at"))
            .filter(|(_, until)| *until > Utc::now());
        let current_matches = constant_time_eq(&stored, &offered);
        let previous_matches = previous.is_some_and(|(hash, _)| constant_time_eq(&hash, &offered));
        if !current_matches && !previous_matches {
            return Err(StoreError::BadCredentials);
        }
        if !row.get::<bool, _>("enabled") {
            return Err(StoreError::Forbidden(SOURCE_DISABLED.into()));
        }
        Ok(source_from_row(&row))
    }

    /// Checks a `private_key_jwt` client assertion (see `client_assertion`) for `audience`, and
    /// records its `jti` so it is never accepted again. Replay protection lives in Postgres with
    /// the rest of the configuration, so it holds across replicas and restarts; when Postgres is
    /// away no assertion is accepted (fail closed: no source can be looked up either).
    pub async fn authenticate_assertion(
        &self,
        client_id: &str,
        assertion: &str,
        audience: &str,
    ) -> Result<pb::Source> {
        let refused = |error: client_assertion::AssertionError| StoreError::Unauthorized(error.to_string());
        let claimed = client_assertion::claimed_client(assertion).map_err(refused)?;
        if !client_id.is_empty() && client_id != claimed {
            return Err(StoreError::Unauthorized(
                "client_assertion: iss must be the client_id".into(),
            ));
        }
        if audience.is_empty() {
            return Err(StoreError::Invalid(
                "audience is required with client_assertion".into(),
            ));
        }
        // An unknown client and one without a key are refused like a bad signature.
        let not_verified = || refused(client_assertion::AssertionError::NotVerified);
        let row = sqlx::query("SELECT * FROM sources WHERE client_id = $1")
            .bind(&claimed)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(not_verified)?;
        let Some(public_jwk) = row.get::<Option<String>, _>("public_jwk") else {
            return Err(not_verified());
        };
        let now_unix = Utc::now().timestamp().max(0) as u64;
        let verified = client_assertion::verify(assertion, &claimed, &public_jwk, audience, now_unix)
            .map_err(refused)?;
        if !row.get::<bool, _>("enabled") {
            return Err(StoreError::Forbidden(SOURCE_DISABLED.into()));
        }
        let inserted = sqlx::query(
            "INSERT INTO client_assertion_jtis (client_id, jti, expires_at)
             VALUES ($1, $2, to_timestamp($3)) ON CONFLICT DO NOTHING",
        )
        .bind(&claimed)
        .bind(&verified.jti)
        .bind(verified.expires_unix as f64)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(StoreError::Unauthorized(
                "client_assertion: its jti was already used; sign a new assertion for every token request"
                    .into(),
            ));
        }
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

    pub async fn create_subscription(
        &self,
        request: pb::CreateSubscriptionRequest,
    ) -> Result<pb::Subscription> {
        required("data_model", &request.data_model)?;
        let source = self
            .get_source(&request.source_id)
            .await
            .map_err(not_found_is_invalid)?;
        let destination = self
            .get_destination(&request.destination_id)
            .await
            .map_err(not_found_is_invalid)?;
        if source.organization_id != destination.organization_id {
            return Err(StoreError::Invalid(format!(
                "source {} and destination {} belong to different organizations",
                source.id, destination.id
            )));
        }
        if source.environment != destination.environment {
            return Err(StoreError::Invalid(format!(
                "source {} is in {} but destination {} is in {}: a subscription joins one environment",
                source.id, source.environment, destination.id, destination.environment
            )));
        }
        for event_type in &request.event_types {
            required("event_types[]", event_type)?;
        }
        let row = sqlx::query(
            "INSERT INTO subscriptions (id, source_id, destination_id, data_model, event_types)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (source_id, destination_id, data_model) DO UPDATE SET event_types = EXCLUDED.event_types
             RETURNING *",
        )
        .bind(Uuid::now_v7())
        .bind(parse_id("source_id", &source.id)?)
        .bind(parse_id("destination_id", &destination.id)?)
        .bind(&request.data_model)
        .bind(&request.event_types)
        .fetch_one(&self.pool)
        .await?;
        Ok(pb::Subscription {
            id: row.get::<Uuid, _>("id").to_string(),
            source_id: row.get::<Uuid, _>("source_id").to_string(),
            destination_id: row.get::<Uuid, _>("destination_id").to_string(),
            data_model: row.get("data_model"),
            event_types: row.get("event_types"),
            created_at_ms: millis(row.get("created_at")),
        })
    }

    /// Where a message goes: the subscribed destinations of the source for this data model and
    /// event type, narrowed to `destination_ids` when the sender named some.
    pub async fn resolve(&self, request: &pb::ResolveRequest) -> Result<pb::ResolveResponse> {
        let source_id = parse_id("source", &request.source_id)?;
        let source = sqlx::query("SELECT organization_id, environment, enabled FROM sources WHERE id = $1")
            .bind(source_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::BadCredentials)?;
        if !source.get::<bool, _>("enabled") {
            return Err(StoreError::Forbidden(SOURCE_DISABLED.into()));
        }
        let rows = sqlx::query(
            "SELECT destination_id, event_types FROM subscriptions
             WHERE source_id = $1 AND data_model = $2 ORDER BY created_at, id",
        )
        .bind(source_id)
        .bind(&request.data_model)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Err(StoreError::NotFound(format!(
                "No destination is subscribed to data model {} from this source",
                request.data_model
            )));
        }
        let subscribed: Vec<String> = rows
            .iter()
            .filter(|row| {
                let event_types: Vec<String> = row.get("event_types");
                event_types.is_empty() || event_types.iter().any(|t| t == &request.event_type)
            })
            .map(|row| row.get::<Uuid, _>("destination_id").to_string())
            .collect();
        let destination_ids = if request.destination_ids.is_empty() {
            if subscribed.is_empty() {
                return Err(StoreError::NotFound(format!(
                    "No destination is subscribed to event type {} of data model {}",
                    request.event_type, request.data_model
                )));
            }
            subscribed
        } else {
            let mut chosen = Vec::with_capacity(request.destination_ids.len());
            for id in &request.destination_ids {
                if chosen.contains(id) {
                    continue;
                }
                if !subscribed.contains(id) {
                    // One of the source's organization's destinations, not subscribed: 403.
                    // Unknown, or another organization's: the same 404, so a sender cannot
                    // learn which destination IDs exist outside its organization.
                    let organization_id = source.get::<Uuid, _>("organization_id").to_string();
                    let own = match self.get_destination(id).await {
                        Ok(destination) => destination.organization_id == organization_id,
                        Err(StoreError::Invalid(_) | StoreError::NotFound(_)) => false,
                        Err(other) => return Err(other),
                    };
                    if !own {
                        return Err(StoreError::NotFound(format!("Destination {id} does not exist")));
                    }
                    return Err(StoreError::Forbidden(format!(
                        "Destination {id} is not subscribed to {} {} from this source",
                        request.data_model, request.event_type
                    )));
                }
                chosen.push(id.clone());
            }
            chosen
        };
        Ok(pb::ResolveResponse {
            organization_id: source.get::<Uuid, _>("organization_id").to_string(),
            environment: source.get("environment"),
            destination_ids,
        })
    }

    async fn require_organization(&self, id: Uuid) -> Result<()> {
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

/// A subscription naming a missing source or destination is a bad request, not a missing route.
fn not_found_is_invalid(error: StoreError) -> StoreError {
    match error {
        StoreError::NotFound(text) => StoreError::Invalid(text),
        other => other,
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

/// The backlog-alert thresholds of an organization or destination row.
fn backlog_from_row(row: &sqlx::postgres::PgRow) -> pb::BacklogAlert {
    pb::BacklogAlert {
        after_secs: row
            .get::<Option<i32>, _>("backlog_alert_after_secs")
            .map(|v| v as u32),
        depth: row.get::<Option<i32>, _>("backlog_alert_depth").map(|v| v as u32),
    }
}

/// The columns' values for `thresholds` (none given: both inherit).
fn backlog_columns(thresholds: Option<&pb::BacklogAlert>) -> Result<(Option<i32>, Option<i32>)> {
    let column = |name: &str, value: Option<u32>| -> Result<Option<i32>> {
        value
            .map(|value| {
                i32::try_from(value).map_err(|_| {
                    StoreError::Invalid(format!("backlog_alert.{name} must be at most {}", i32::MAX))
                })
            })
            .transpose()
    };
    let thresholds = thresholds.cloned().unwrap_or_default();
    Ok((
        column("after_secs", thresholds.after_secs)?,
        column("depth", thresholds.depth)?,
    ))
}

fn source_from_row(row: &sqlx::postgres::PgRow) -> pb::Source {
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
