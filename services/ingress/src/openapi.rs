//! The OpenAPI 3 document of ingress's public routes, generated from the handlers'
//! `#[utoipa::path]` annotations and the schemas below. Served at `GET /openapi.json` and
//! committed at `docs/openapi.json`; a unit test fails when the committed file differs from
//! what the code generates (`CARRIER_UPDATE_OPENAPI=1 cargo test -p carrier-ingress openapi`
//! rewrites it).
//!
//! The schemas document the wire format only: the handlers read bodies with their own parsers
//! (`api::endpoint::parse_meta`, `api::fhir::parse`), which keep unknown fields untouched.
#![allow(dead_code)] // schema types are never built; they describe JSON

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Carrier ingress",
        description = "Inbound messages (Data Model API and FHIR API), OAuth tokens, logs and the admin API. Error bodies follow the API the request used: `Meta.Errors` or a FHIR OperationOutcome."
    ),
    paths(
        crate::api::oauth::token,
        crate::api::endpoint::post,
        crate::api::fhir::post,
        crate::api::logs::search,
        crate::api::logs::get_one,
        crate::api::retry::retry_matching,
        crate::api::retry::retry,
        crate::api::admin::create_organization,
        crate::api::admin::get_organization,
        crate::api::admin::update_organization,
        crate::api::admin::create_source,
        crate::api::admin::get_source,
        crate::api::admin::rotate_secret,
        crate::api::admin::update_source,
        crate::api::admin::create_destination,
        crate::api::admin::get_destination,
        crate::api::admin::update_destination,
        crate::api::admin::create_subscription,
        crate::api::queues::get,
        crate::api::queues::pause,
        crate::api::queues::resume,
        crate::api::queues::skip,
        openapi_json,
    ),
    components(schemas(
        DataModelMessage,
        DataModelMeta,
        DestinationRef,
        DataModelAccepted,
        DataModelAcceptedMeta,
        MessageRef,
        LogRef,
        DataModelError,
        DataModelErrors,
        ErrorText,
        OperationOutcome,
        Issue,
        IssueDetails,
        TokenRequest,
        TokenResponse,
    )),
    modifiers(&BearerToken),
    tags(
        (name = "Data Model API", description = "`POST /endpoint`"),
        (name = "FHIR API", description = "`POST /fhir/R4/{ResourceType}`"),
        (name = "OAuth"),
        (name = "Logs"),
        (name = "Admin", description = "operator token only"),
    )
)]
pub struct ApiDoc;

struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as pretty JSON.
pub fn document() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes")
}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "OAuth",
    responses(
        (status = 200, description = "This document", body = serde_json::Value, content_type = "application/json"),
        EveryRouteErrors,
    )
)]
pub async fn openapi_json() -> axum::response::Response {
    ([(CONTENT_TYPE, "application/json")], document()).into_response()
}

/// What every public route can answer besides its own statuses: the per-client rate limit, the
/// requests shed at ingress's caps, and the request deadline.
#[derive(IntoResponses)]
pub enum EveryRouteErrors {
    /// Rate limited: too many requests from this client (with Retry-After)
    #[response(status = 429, headers(("Retry-After" = u64, description = "Seconds to wait")))]
    RateLimited(DataModelError),
    /// Overloaded: shed at a capacity limit, or the producer queue is full (with Retry-After)
    #[response(status = 503, headers(("Retry-After" = u64, description = "Seconds to wait")))]
    Overloaded(DataModelError),
    /// Timeout: the request deadline passed, or the durable write did not complete in time
    #[response(status = 504)]
    Timeout(DataModelError),
}

/// What every public route that reads a request body can answer besides [`EveryRouteErrors`].
#[derive(IntoResponses)]
pub enum BodyErrors {
    /// The request body was not received in time
    #[response(status = 408)]
    BodyTimeout(DataModelError),
    /// Body over the limit
    #[response(status = 413)]
    TooLarge(DataModelError),
}

/// [`EveryRouteErrors`] and [`BodyErrors`] as the FHIR API renders them.
#[derive(IntoResponses)]
pub enum FhirEveryRouteErrors {
    /// The request body was not received in time
    #[response(status = 408, content_type = "application/fhir+json")]
    BodyTimeout(OperationOutcome),
    /// Body over the limit (10 MiB)
    #[response(status = 413, content_type = "application/fhir+json")]
    TooLarge(OperationOutcome),
    /// Rate limited: too many requests from this client (with Retry-After)
    #[response(
        status = 429,
        content_type = "application/fhir+json",
        headers(("Retry-After" = u64, description = "Seconds to wait"))
    )]
    RateLimited(OperationOutcome),
    /// Overloaded: shed at a capacity limit, or the producer queue is full (with Retry-After)
    #[response(
        status = 503,
        content_type = "application/fhir+json",
        headers(("Retry-After" = u64, description = "Seconds to wait"))
    )]
    Overloaded(OperationOutcome),
    /// Timeout: the request deadline passed, or the durable write did not complete in time
    #[response(status = 504, content_type = "application/fhir+json")]
    Timeout(OperationOutcome),
}

/// A Data Model API message. Every field besides `Meta` is carried to the destinations as sent.
#[derive(Serialize, ToSchema)]
pub struct DataModelMessage {
    #[serde(rename = "Meta")]
    meta: DataModelMeta,
}

#[derive(Serialize, ToSchema)]
pub struct DataModelMeta {
    /// Routes the message: destinations subscribe to data models. 1 to 64 printable ASCII
    /// characters, not all blank.
    #[serde(rename = "DataModel")]
    #[schema(min_length = 1, max_length = 64, pattern = "^[ -~]*[!-~][ -~]*$")]
    data_model: String,
    /// 1 to 64 printable ASCII characters, not all blank.
    #[serde(rename = "EventType")]
    #[schema(min_length = 1, max_length = 64, pattern = "^[ -~]*[!-~][ -~]*$")]
    event_type: String,
    /// A test message (never retried). Default false.
    #[serde(rename = "Test")]
    test: Option<bool>,
    /// Only these destinations (each must be subscribed); default: every subscribed one.
    #[serde(rename = "Destinations")]
    destinations: Option<Vec<DestinationRef>>,
}

#[derive(Serialize, ToSchema)]
pub struct DestinationRef {
    #[serde(rename = "ID")]
    id: String,
}

/// The answer once the broker acknowledged the message (acks=all).
#[derive(Serialize, ToSchema)]
pub struct DataModelAccepted {
    #[serde(rename = "Meta")]
    meta: DataModelAcceptedMeta,
}

#[derive(Serialize, ToSchema)]
pub struct DataModelAcceptedMeta {
    #[serde(rename = "DataModel")]
    data_model: String,
    #[serde(rename = "EventType")]
    event_type: String,
    #[serde(rename = "Test")]
    test: bool,
    #[serde(rename = "Message")]
    message: MessageRef,
    /// One log per destination.
    #[serde(rename = "Logs")]
    logs: Vec<LogRef>,
    /// Always empty on success.
    #[serde(rename = "Errors")]
    errors: Vec<ErrorText>,
}

#[derive(Serialize, ToSchema)]
pub struct MessageRef {
    #[serde(rename = "ID")]
    id: String,
}

#[derive(Serialize, ToSchema)]
pub struct LogRef {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "DestinationID")]
    destination_id: String,
}

/// Every error outside `/fhir/`.
#[derive(Serialize, ToSchema)]
pub struct DataModelError {
    #[serde(rename = "Meta")]
    meta: DataModelErrors,
}

#[derive(Serialize, ToSchema)]
pub struct DataModelErrors {
    #[serde(rename = "Errors")]
    errors: Vec<ErrorText>,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorText {
    /// What went wrong, naming the field (e.g. `Required field missing - Meta.DataModel`).
    #[serde(rename = "Text")]
    text: String,
}

/// Every answer of the FHIR API: `issue` is empty on success, one issue on an error.
#[derive(Serialize, ToSchema)]
pub struct OperationOutcome {
    /// Always `OperationOutcome`.
    #[serde(rename = "resourceType")]
    resource_type: String,
    issue: Vec<Issue>,
}

#[derive(Serialize, ToSchema)]
pub struct Issue {
    /// `error`, or `fatal` for 500.
    severity: String,
    /// FHIR issue type: `invalid`, `security`, `forbidden`, `not-found`, `not-supported`,
    /// `too-costly`, `throttled`, `exception`, `transient`, `timeout`.
    code: String,
    details: IssueDetails,
    /// `HTTP <status> <reason>`.
    diagnostics: String,
}

#[derive(Serialize, ToSchema)]
pub struct IssueDetails {
    /// The same text the Data Model API gives.
    text: String,
}

/// Client-credentials grant, as a form (`application/x-www-form-urlencoded`) or JSON.
#[derive(Serialize, ToSchema)]
pub struct TokenRequest {
    /// `client_credentials`.
    #[schema(pattern = "^client_credentials$")]
    grant_type: String,
    client_id: String,
    client_secret: String,
}

#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    access_token: String,
    /// `Bearer`.
    token_type: String,
    /// Seconds.
    expires_in: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/openapi.json` is what the code generates: the committed document cannot drift.
    #[test]
    fn the_committed_openapi_document_matches_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let generated = format!("{}\n", document());
        if std::env::var_os("CARRIER_UPDATE_OPENAPI").is_some() {
            std::fs::write(path, &generated).expect("write docs/openapi.json");
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json differs from the code; regenerate it with \
             CARRIER_UPDATE_OPENAPI=1 cargo test -p carrier-ingress openapi"
        );
    }

    #[test]
    fn every_inbound_route_is_documented() {
        let document: serde_json::Value = serde_json::from_str(&document()).unwrap();
        for path in [
            "/endpoint",
            "/fhir/R4/{resource_type}",
            "/oauth/token",
            "/v1/logs/{id}",
        ] {
            assert!(
                document["paths"][path]["post"].is_object() || document["paths"][path]["get"].is_object(),
                "{path}"
            );
        }
        let fhir_success = &document["paths"]["/fhir/R4/{resource_type}"]["post"]["responses"]["200"];
        assert!(
            fhir_success["headers"]["Carrier-Log-Ids"].is_object(),
            "{fhir_success}"
        );
        assert!(
            fhir_success["content"]["application/fhir+json"].is_object(),
            "{fhir_success}"
        );
    }
}
