//! The parts of ingress's OpenAPI 3 document that no one route owns: its title, tags and
//! security scheme ([`ApiDoc`]), the answers every route can give ([`EveryRouteErrors`],
//! [`BodyErrors`]), and the request schemas of the inbound APIs. The routes add their own
//! operations on top (`api::router`, which registers and documents every route from one list);
//! the whole document is served at `GET /openapi.json` and committed at `docs/openapi.json`
//! (`CARRIER_UPDATE_OPENAPI=1 cargo test -p carrier-ingress openapi` rewrites it).
//!
//! This module imports no handler: the handlers use its types, and the document is assembled
//! where the routes are listed.
//!
//! The request schemas document the wire format only: the handlers read bodies with their own
//! parsers (`api::endpoint::parse_meta`, `api::fhir::parse`), which keep unknown fields
//! untouched. Response bodies are the types the handlers serialize, beside each handler.
#![allow(dead_code)] // request schema types are never built; they describe JSON

use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

use crate::error::{DataModelError, DataModelErrors, ErrorText, Issue, IssueDetails, OperationOutcome};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Carrier ingress",
        description = "Inbound messages (Data Model API and FHIR API), OAuth tokens, logs and the admin API. Error bodies follow the API the request used: `Meta.Errors` or a FHIR OperationOutcome."
    ),
    // The error bodies are named by the response sets below, whose schemas utoipa does not
    // collect by itself.
    components(schemas(DataModelError, DataModelErrors, ErrorText, OperationOutcome, Issue, IssueDetails)),
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

/// Client-credentials grant, as a form (`application/x-www-form-urlencoded`) or JSON.
#[derive(Serialize, ToSchema)]
pub struct TokenRequest {
    /// `client_credentials`.
    #[schema(pattern = "^client_credentials$")]
    grant_type: String,
    client_id: String,
    client_secret: String,
}
