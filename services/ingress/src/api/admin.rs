//! The admin REST API (operator token only). The router owns the configuration; these handlers
//! check the caller, translate JSON to the router's gRPC requests and back.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use carrier_proto::config_v1 as pb;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::auth;
use crate::error::ApiError;
use crate::AppState;

type Created<T> = (StatusCode, Json<T>);

async fn operator_json<T: DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    auth::operator(headers, state.config.admin_token.as_deref().expect("validated"))?;
    let body = super::body::read_body(body, 1024 * 1024).await?;
    serde_json::from_slice(&body)
        .map_err(|error| ApiError::bad_request(format!("Invalid request body: {error}")))
}

/// An organization, as every admin route answers it.
#[derive(Serialize, ToSchema)]
pub struct Organization {
    id: String,
    name: String,
    /// Where its alerts are e-mailed.
    alert_emails: Vec<String>,
    /// The Slack-compatible webhook its alerts are posted to; `null` when none.
    slack_webhook_url: Option<String>,
    /// The default backlog-alert thresholds of its destinations.
    backlog_alert: BacklogThresholds,
    /// Milliseconds since the Unix epoch.
    created_at_ms: i64,
}

impl From<pb::Organization> for Organization {
    fn from(organization: pb::Organization) -> Self {
        Self {
            id: organization.id,
            name: organization.name,
            alert_emails: organization.alert_emails,
            slack_webhook_url: organization.slack_webhook_url,
            backlog_alert: organization.backlog_alert.unwrap_or_default().into(),
            created_at_ms: organization.created_at_ms,
        }
    }
}

/// Backlog-alert thresholds (`null` fields inherit: a destination's from its organization, an
/// organization's from the notifier's configuration; 0 turns a criterion off).
///
/// The same shape in requests and answers (answers always carry both fields, `null` when
/// inherited).
#[derive(Deserialize, Serialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct BacklogThresholds {
    /// A held head older than this many seconds raises the alert.
    after_secs: Option<u32>,
    /// More parked tasks than this raises the alert.
    depth: Option<u32>,
}

impl From<BacklogThresholds> for pb::BacklogAlert {
    fn from(thresholds: BacklogThresholds) -> Self {
        pb::BacklogAlert {
            after_secs: thresholds.after_secs,
            depth: thresholds.depth,
        }
    }
}

impl From<pb::BacklogAlert> for BacklogThresholds {
    fn from(alert: pb::BacklogAlert) -> Self {
        BacklogThresholds {
            after_secs: alert.after_secs,
            depth: alert.depth,
        }
    }
}

/// A source, as every admin route answers it (without its client secret).
#[derive(Serialize, ToSchema)]
pub struct Source {
    id: String,
    organization_id: String,
    name: String,
    environment: String,
    /// The `client_id` of `POST /oauth/token`.
    client_id: String,
    /// A disabled source gets no tokens, and its tokens are refused.
    enabled: bool,
    /// The public key (JWK) of its `private_key_jwt` client assertions; `null` when none.
    #[schema(value_type = Option<Object>)]
    public_jwk: Option<Value>,
    /// Milliseconds since the Unix epoch.
    created_at_ms: i64,
}

impl From<pb::Source> for Source {
    fn from(source: pb::Source) -> Self {
        Self {
            // The JSON text the router checked; empty when none is registered.
            public_jwk: serde_json::from_str(&source.public_jwk).ok(),
            id: source.id,
            organization_id: source.organization_id,
            name: source.name,
            environment: source.environment,
            client_id: source.client_id,
            enabled: source.enabled,
            created_at_ms: source.created_at_ms,
        }
    }
}

/// A new source with its client secret: the only time the secret is shown (only its hash is
/// kept).
#[derive(Serialize, ToSchema)]
pub struct CreatedSource {
    #[serde(flatten)]
    source: Source,
    client_secret: String,
}

/// A source with its new client secret (shown once).
#[derive(Serialize, ToSchema)]
pub struct RotatedSecret {
    #[serde(flatten)]
    source: Source,
    client_secret: String,
    /// Until when the replaced secret keeps working (RFC 3339); `null` when it stopped at once.
    #[schema(format = DateTime)]
    previous_secret_valid_until: Option<String>,
}

/// A JWK given in a request body, as the JSON text the router stores (`null` removes it).
fn jwk_text(jwk: Option<Value>) -> Option<String> {
    jwk.map(|jwk| {
        if jwk.is_null() {
            String::new()
        } else {
            jwk.to_string()
        }
    })
}

/// A destination, as every admin route answers it.
#[derive(Serialize, ToSchema)]
pub struct Destination {
    id: String,
    organization_id: String,
    name: String,
    url: String,
    environment: String,
    /// Sent to the receiver in the `verification-token` header.
    verification_token: String,
    /// The secret that signs its deliveries (Standard Webhooks `webhook-signature`).
    signing_secret: String,
    /// Per-attempt timeout.
    timeout_ms: u32,
    /// Its own backlog-alert thresholds (a `null` field inherits the organization's).
    backlog_alert: BacklogThresholds,
    /// Held by an operator (`POST /v1/destinations/{id}/pause`).
    paused_by_operator: bool,
    /// Milliseconds since the Unix epoch.
    created_at_ms: i64,
    /// Milliseconds since the Unix epoch.
    updated_at_ms: i64,
}

impl From<pb::Destination> for Destination {
    fn from(destination: pb::Destination) -> Self {
        Self {
            id: destination.id,
            organization_id: destination.organization_id,
            name: destination.name,
            url: destination.url,
            environment: destination.environment,
            verification_token: destination.verification_token,
            signing_secret: destination.signing_secret,
            timeout_ms: destination.timeout_ms,
            backlog_alert: destination.backlog_alert.unwrap_or_default().into(),
            paused_by_operator: destination.paused_by_operator,
            created_at_ms: destination.created_at_ms,
            updated_at_ms: destination.updated_at_ms,
        }
    }
}

/// A subscription: `source_id`'s messages of `data_model` (and of `event_types`, when not
/// empty) go to `destination_id`.
#[derive(Serialize, ToSchema)]
pub struct Subscription {
    id: String,
    source_id: String,
    destination_id: String,
    data_model: String,
    /// Empty: every event type.
    event_types: Vec<String>,
    /// Milliseconds since the Unix epoch.
    created_at_ms: i64,
}

impl From<pb::Subscription> for Subscription {
    fn from(subscription: pb::Subscription) -> Self {
        Self {
            id: subscription.id,
            source_id: subscription.source_id,
            destination_id: subscription.destination_id,
            data_model: subscription.data_model,
            event_types: subscription.event_types,
            created_at_ms: subscription.created_at_ms,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrganization {
    name: String,
    #[serde(default)]
    alert_emails: Vec<String>,
    slack_webhook_url: Option<String>,
    backlog_alert: Option<BacklogThresholds>,
}

/// `POST /v1/organizations`: `name`, `alert_emails`, `slack_webhook_url`, `backlog_alert`
/// (`{"after_secs": s, "depth": n}`: the default backlog-alert thresholds of its destinations; a
/// field left out or `null` takes the notifier's, 0 turns that criterion off).
#[utoipa::path(
    post,
    path = "/v1/organizations",
    tag = "Admin",
    request_body(content = NewOrganization, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The organization", body = Organization),
        (status = 400, description = "Malformed or missing required data", body = crate::error::DataModelError),
        (status = 401, description = "Missing, invalid or expired token", body = crate::error::DataModelError),
        (status = 403, description = "Not allowed", body = crate::error::DataModelError),
        (status = 404, description = "Unknown route, data model, destination or resource", body = crate::error::DataModelError),
        crate::openapi::BodyErrors,
        crate::openapi::EveryRouteErrors,
    )
)]
pub async fn create_organization(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Created<Organization>, ApiError> {
    let request: NewOrganization = operator_json(&state, &headers, body).await?;
    let organization = state
        .router
        .clone()
        .create_organization(pb::CreateOrganizationRequest {
            name: request.name,
            alert_emails: request.alert_emails,
            slack_webhook_url: request.slack_webhook_url,
            backlog_alert: request.backlog_alert.map(Into::into),
        })
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, Json(organization.into())))
}

#[utoipa::path(
    get,
    path = "/v1/organizations/{id}",
    tag = "Admin",
    params(("id" = String, Path, description = "Organization ID")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The organization", body = Organization),
        (status = 400, description = "Malformed or missing required data", body = crate::error::DataModelError),
        (status = 401, description = "Missing, invalid or expired token", body = crate::error::DataModelError),
        (status = 403, description = "Not allowed", body = crate::error::DataModelError),
        (status = 404, description = "Unknown route, data model, destination or resource", body = crate::error::DataModelError),
        crate::openapi::EveryRouteErrors,
    )
)]
pub async fn get_organization(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Organization>, ApiError> {
    auth::operator(&headers, state.config.admin_token.as_deref().expect("validated"))?;
    let organization = state
        .router
        .clone()
        .get_organization(pb::GetByIdRequest { id })
        .await?
        .into_inner();
    Ok(Json(organization.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrganizationChanges {
    name: Option<String>,
    /// Replaces the alert addresses (`[]` removes them all).
    alert_emails: Option<Vec<String>>,
    /// Replaces the Slack-compatible webhook URL; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    slack_webhook_url: Option<Value>,
    /// Replaces both thresholds (a field left out or `null` inherits again).
    backlog_alert: Option<BacklogThresholds>,
}

/// `PATCH /v1/organizations/{id}`: `name`, `alert_emails`, `slack_webhook_url` (`null` removes
/// it), `backlog_alert` (replaces both thresholds). Alerts still waiting to be sent go to the new
/// addresses.
#[utoipa::path(
    patch,
    path = "/v1/organizations/{id}",
    tag = "Admin",
    params(("id" = String, Path, description = "Organization ID")),
    request_body(content = OrganizationChanges, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The updated organization", body = Organization),
        (status = 400, description = "Malformed or missing required data", body = crate::error::DataModelError),
        (status = 401, description = "Missing, invalid or expired token", body = crate::error::DataModelError),
        (status = 403, description = "Not allowed", body = crate::error::DataModelError),
        (status = 404, description = "Unknown route, data model, destination or resource", body = crate::error::DataModelError),
        crate::openapi::BodyErrors,
        crate::openapi::EveryRouteErrors,
    )
)]
pub async fn update_organization(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Organization>, ApiError> {
    let changes: OrganizationChanges = operator_json(&state, &headers, body).await?;
    let slack_webhook_url = match changes.slack_webhook_url {
        None => None,
        Some(Value::Null) => Some(String::new()),
        Some(Value::String(url)) if !url.is_empty() => Some(url),
        Some(_) => {
            return Err(ApiError::bad_request(
                "slack_webhook_url must be a URL string or null",
            ))
        }
    };
    let organization = state
        .router
        .clone()
        .update_organization(pb::UpdateOrganizationRequest {
            id,
            name: changes.name,
            alert_emails: changes
                .alert_emails
                .map(|addresses| pb::AlertEmails { addresses }),
            slack_webhook_url,
            backlog_alert: changes.backlog_alert.map(Into::into),
        })
        .await?
        .into_inner();
    Ok(Json(organization.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSource {
    organization_id: String,
    name: String,
    environment: String,
    /// The public key (JWK) of `private_key_jwt` client assertions.
    #[schema(value_type = Option<Object>)]
    public_jwk: Option<Value>,
}

#[utoipa::path(
    post,
    path = "/v1/sources",
    tag = "Admin",
    request_body(content = NewSource, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The source with its client secret (shown once)", body = CreatedSource),
        (status = 400, description = "Malformed or missing required data", body = crate::error::DataModelError),
        (status = 401, description = "Missing, invalid or expired token", body = crate::error::DataModelError),
        (status = 403, description = "Not allowed", body = crate::error::DataModelError),
        (status = 404, description = "Unknown route, data model, destination or resource", body = crate::error::DataModelError),
        crate::openapi::BodyErrors,
        crate::openapi::EveryRouteErrors,
    )
)]
pub async fn create_source(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Created<CreatedSource>, ApiError> {
    let request: NewSource = operator_json(&state, &headers, body).await?;
    let created = state
        .router
        .clone()
        .create_source(pb::CreateSourceRequest {
            organization_id: request.organization_id,
            name: request.name,
            environment: request.environment,
            public_jwk: jwk_text(request.public_jwk).filter(|jwk| !jwk.is_empty()),
        })
        .await?
        .into_inner();
    Ok((
        StatusCode::CREATED,
        Json(CreatedSource {
            source: created.source.unwrap_or_default().into(),
            client_secret: created.client_secret,
        }),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/sources/{id}",
    tag = "Admin",
    params(("id" = String, Path, description = "Source ID")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The source", body = Source),
        (status = 400, description = "Malformed or missing required data", body = crate::error::DataModelError),
        (status = 401, description = "Missing, invalid or expired token", body = crate::error::DataModelError),
        (status = 403, description = "Not allowed", body = crate::error::DataModelError),
        (status = 404, description = "Unknown route, data model, destination or resource", body = crate::error::DataModelError),
        crate::openapi::EveryRouteErrors,
    )
)]
pub async fn get_source(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Source>, ApiError> {
    auth::operator(&headers, state.config.admin_token.as_deref().expect("validated"))?;
    let source = state
        .router
        .clone()
        .get_source(pb::GetByIdRequest { id })
        .await?
        .into_inner();
    Ok(Json(source.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceChanges {
    name: Option<String>,
    enabled: Option<bool>,
    /// A public JWK to register for client assertions; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Object>)]
    public_jwk: Option<Value>,
}

/// A field that is present, even as `null`, is `Some` (`Some(Value::Null)` for `null`).
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// `PATCH /v1/sources/{id}`: `name`, `enabled`, `public_jwk`. Disabling takes effect at once on this replica
/// and within `source_status_refresh_ms` on the others: tokens, `POST /endpoint` and the logs
/// API refuse the source with 403 `Source is disabled`, and `/oauth/token` issues it none.
#[utoipa::path(
    patch,
    path = "/v1/sources/{id}",
    tag = "Admin",
    params(("id" = String, Path, description = "Source ID")),
    request_body(content = SourceChanges, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The updated source", body = Source),
        (status = 400, description = "Malformed or missing required data", body = crate::error::DataModelError),
        (status = 401, description = "Missing, invalid or expired token", body = crate::error::DataModelError),
        (status = 403, description = "Not allowed", body = crate::error::DataModelError),
        (status = 404, description = "Unknown route, data model, destination or resource", body = crate::error::DataModelError),
        crate::openapi::BodyErrors,
        crate::openapi::EveryRouteErrors,
    )
)]
pub async fn update_source(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Source>, ApiError> {
    let changes: SourceChanges = operator_json(&state, &headers, body).await?;
    let source = state
        .router
        .clone()
        .update_source(pb::UpdateSourceRequest {
            id,
            name: changes.name,
            enabled: changes.enabled,
            public_jwk: jwk_text(changes.public_jwk),
        })
        .await?
        .into_inner();
    state.tokens.disabled_sources().set(&source.id, !source.enabled);
    Ok(Json(source.into()))
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretRotation {
    /// How long the replaced secret keeps working, at most 604800 (7 days); 0 ends it now.
    /// Default 86400.
    #[schema(maximum = 604800)]
    overlap_secs: Option<u32>,
}

/// How long a replaced client secret keeps working when the request does not say.
const DEFAULT_SECRET_OVERLAP_SECS: u32 = 24 * 60 * 60;

/// `POST /v1/sources/{id}/rotate-secret`: a new client secret, shown once. The secret it
/// replaces stays valid for `overlap_secs` (24 h by default), so senders can switch to the new
/// one without a refused token request. Tokens already issued stay valid until they expire.
#[utoipa::path(
    post,
    path = "/v1/sources/{id}/rotate-secret",
    operation_id = "rotate_client_secret",
    tag = "Admin",
    params(("id" = String, Path, description = "Source ID")),
    request_body(content = SecretRotation, content_type = "application/json", description = "Optional: an empty body takes the default overlap"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The source, its new client_secret (shown once) and previous_secret_valid_until (RFC 3339, or null)", body = RotatedSecret),
        (status = 400, description = "Malformed or missing required data", body = crate::error::DataModelError),
        (status = 401, description = "Missing, invalid or expired token", body = crate::error::DataModelError),
        (status = 403, description = "Not allowed", body = crate::error::DataModelError),
        (status = 404, description = "Unknown route, data model, destination or resource", body = crate::error::DataModelError),
        crate::openapi::BodyErrors,
        crate::openapi::EveryRouteErrors,
    )
)]
pub async fn rotate_secret(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<RotatedSecret>, ApiError> {
    auth::operator(&headers, state.config.admin_token.as_deref().expect("validated"))?;
    let body = super::body::read_body(body, 64 * 1024).await?;
    let rotation: SecretRotation = if body.iter().all(u8::is_ascii_whitespace) {
        SecretRotation::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|error| ApiError::bad_request(format!("Invalid request body: {error}")))?
    };
    let rotated = state
        .router
        .clone()
        .rotate_client_secret(pb::RotateClientSecretRequest {
            source_id: id,
            overlap_secs: rotation.overlap_secs.unwrap_or(DEFAULT_SECRET_OVERLAP_SECS),
        })
        .await?
        .into_inner();
    let previous_secret_valid_until = match rotated.previous_valid_until_ms {
        0 => None,
        until => chrono::DateTime::from_timestamp_millis(until)
            .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    };
    Ok(Json(RotatedSecret {
        source: rotated.source.unwrap_or_default().into(),
        client_secret: rotated.client_secret,
        previous_secret_valid_until,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDestination {
    organization_id: String,
    name: String,
    url: String,
    environment: String,
    verification_token: Option<String>,
    timeout_ms: Option<u32>,
    backlog_alert: Option<BacklogThresholds>,
}

#[utoipa::path(
    post,
    path = "/v1/destinations",
    tag = "Admin",
    request_body(content = NewDestination, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The destination with its signing secret", body = Destination),
        (status = 400, description = "Malformed or missing required data", body = crate::error::DataModelError),
        (status = 401, description = "Missing, invalid or expired token", body = crate::error::DataModelError),
        (status = 403, description = "Not allowed", body = crate::error::DataModelError),
        (status = 404, description = "Unknown route, data model, destination or resource", body = crate::error::DataModelError),
        crate::openapi::BodyErrors,
        crate::openapi::EveryRouteErrors,
    )
)]
pub async fn create_destination(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Created<Destination>, ApiError> {
    let request: NewDestination = operator_json(&state, &headers, body).await?;
    let destination = state
        .router
        .clone()
        .create_destination(pb::CreateDestinationRequest {
            organization_id: request.organization_id,
            name: request.name,
            url: request.url,
            environment: request.environment,
            verification_token: request.verification_token,
            timeout_ms: request.timeout_ms,
            backlog_alert: request.backlog_alert.map(Into::into),
        })
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, Json(destination.into())))
}

#[utoipa::path(
    get,
    path = "/v1/destinations/{id}",
    tag = "Admin",
    params(("id" = String, Path, description = "Destination ID")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The destination", body = Destination),
        (status = 400, description = "Malformed or missing required data", body = crate::error::DataModelError),
        (status = 401, description = "Missing, invalid or expired token", body = crate::error::DataModelError),
        (status = 403, description = "Not allowed", body = crate::error::DataModelError),
        (status = 404, description = "Unknown route, data model, destination or resource", body = crate::error::DataModelError),
        crate::openapi::EveryRouteErrors,
    )
)]
pub async fn get_destination(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Destination>, ApiError> {
    auth::operator(&headers, state.config.admin_token.as_deref().expect("validated"))?;
    let destination = state
        .router
        .clone()
        .get_destination(pb::GetByIdRequest { id })
        .await?
        .into_inner();
    Ok(Json(destination.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DestinationChanges {
    name: Option<String>,
    url: Option<String>,
    verification_token: Option<String>,
    timeout_ms: Option<u32>,
    /// Replaces both thresholds (a field left out or `null` inherits again).
    backlog_alert: Option<BacklogThresholds>,
}

/// `PATCH /v1/destinations/{id}`: `name`, `url`, `verification_token`, `timeout_ms`,
/// `backlog_alert` (`{"after_secs": s, "depth": n}`, replacing both backlog-alert thresholds; a
/// field left out or `null` inherits the organization's, 0 turns that criterion off).
#[utoipa::path(
    patch,
    path = "/v1/destinations/{id}",
    tag = "Admin",
    params(("id" = String, Path, description = "Destination ID")),
    request_body(content = DestinationChanges, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The updated destination", body = Destination),
        (status = 400, description = "Malformed or missing required data", body = crate::error::DataModelError),
        (status = 401, description = "Missing, invalid or expired token", body = crate::error::DataModelError),
        (status = 403, description = "Not allowed", body = crate::error::DataModelError),
        (status = 404, description = "Unknown route, data model, destination or resource", body = crate::error::DataModelError),
        crate::openapi::BodyErrors,
        crate::openapi::EveryRouteErrors,
    )
)]
pub async fn update_destination(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Destination>, ApiError> {
    let changes: DestinationChanges = operator_json(&state, &headers, body).await?;
    let destination = state
        .router
        .clone()
        .update_destination(pb::UpdateDestinationRequest {
            id,
            name: changes.name,
            url: changes.url,
            verification_token: changes.verification_token,
            timeout_ms: changes.timeout_ms,
            backlog_alert: changes.backlog_alert.map(Into::into),
        })
        .await?
        .into_inner();
    Ok(Json(destination.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSubscription {
    source_id: String,
    destination_id: String,
    data_model: String,
    #[serde(default)]
    event_types: Vec<String>,
}

#[utoipa::path(
    post,
    path = "/v1/subscriptions",
    tag = "Admin",
    request_body(content = NewSubscription, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The subscription", body = Subscription),
        (status = 400, description = "Malformed or missing required data", body = crate::error::DataModelError),
        (status = 401, description = "Missing, invalid or expired token", body = crate::error::DataModelError),
        (status = 403, description = "Not allowed", body = crate::error::DataModelError),
        (status = 404, description = "Unknown route, data model, destination or resource", body = crate::error::DataModelError),
        crate::openapi::BodyErrors,
        crate::openapi::EveryRouteErrors,
    )
)]
pub async fn create_subscription(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Created<Subscription>, ApiError> {
    let request: NewSubscription = operator_json(&state, &headers, body).await?;
    let subscription = state
        .router
        .clone()
        .create_subscription(pb::CreateSubscriptionRequest {
            source_id: request.source_id,
            destination_id: request.destination_id,
            data_model: request.data_model,
            event_types: request.event_types,
        })
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, Json(subscription.into())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::router::assert_matches_schema;

    fn source(public_jwk: &str) -> pb::Source {
        pb::Source {
            id: "s1".into(),
            organization_id: "o1".into(),
            name: "Clinic".into(),
            environment: "production".into(),
            client_id: "c1".into(),
            enabled: true,
            created_at_ms: 1,
            public_jwk: public_jwk.into(),
        }
    }

    /// What the admin routes send is what the document says they send.
    #[test]
    fn every_admin_answer_matches_its_documented_schema() {
        let organization = pb::Organization {
            slack_webhook_url: Some("https://hooks.example/x".into()),
            alert_emails: vec!["ops@example.org".into()],
            backlog_alert: Some(pb::BacklogAlert {
                after_secs: Some(60),
                depth: None,
            }),
            ..Default::default()
        };
        assert_matches_schema("Organization", &Organization::from(organization));
        assert_matches_schema("Organization", &Organization::from(pb::Organization::default()));
        for jwk in ["", r#"{"kty":"OKP","crv":"Ed25519","x":"abc"}"#] {
            assert_matches_schema("Source", &Source::from(source(jwk)));
            let created = CreatedSource {
                source: source(jwk).into(),
                client_secret: "secret".into(),
            };
            assert_matches_schema("CreatedSource", &created);
        }
        for valid_until in [None, Some("2026-12-05T10:00:00Z".to_string())] {
            let rotated = RotatedSecret {
                source: source("").into(),
                client_secret: "secret".into(),
                previous_secret_valid_until: valid_until,
            };
            assert_matches_schema("RotatedSecret", &rotated);
        }
        let destination = pb::Destination {
            timeout_ms: 5_000,
            paused_by_operator: true,
            ..Default::default()
        };
        assert_matches_schema("Destination", &Destination::from(destination));
        let subscription = pb::Subscription {
            event_types: vec!["Arrival".into()],
            ..Default::default()
        };
        assert_matches_schema("Subscription", &Subscription::from(subscription));
    }
}
