//! The HTTP routes of ingress, one module per area. `endpoint` (Data Model API) and `fhir`
//! (FHIR API) parse their own requests and share the pipeline of `accept`.

mod accept;
pub(crate) mod admin;
pub(crate) mod endpoint;
pub(crate) mod fhir;
pub(crate) mod idempotency;
pub(crate) mod log_search;
pub(crate) mod logs;
pub(crate) mod oauth;
#[cfg(test)]
mod parsers_fuzz;
pub(crate) mod queues;
pub(crate) mod retry;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::routing::{get, patch, post};
use axum::Router;

use crate::error::{Api, ApiError};
use crate::AppState;

/// Every public route, behind the per-client rate limit when it is on. The probes are merged
/// in by the caller, outside the limit.
pub fn router(state: Arc<AppState>) -> Router {
    let routes = public_routes(state.clone());
    let routes = match &state.rate_limiter {
        Some(limiter) => routes.layer(axum::middleware::from_fn_with_state(
            limiter.clone(),
            crate::rate_limit::enforce,
        )),
        None => routes,
    };
    // Outermost: shedding costs nothing, so it comes before the rate limit's Redis call.
    let routes = routes.layer(axum::middleware::from_fn_with_state(
        state,
        crate::overload::in_flight::admit,
    ));
    // Around everything: a shed or rate-limited request has its span too.
    routes.layer(axum::middleware::from_fn(crate::http_trace::server_span))
}

fn public_routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/openapi.json", get(crate::openapi::openapi_json))
        .route("/oauth/token", post(oauth::token))
        .route("/endpoint", post(endpoint::post))
        .route("/fhir/R4/{resource_type}", post(fhir::post))
        .route("/v1/logs", get(logs::search))
        .route("/v1/logs/retry", post(retry::retry_matching))
        .route("/v1/logs/{id}", get(logs::get_one))
        .route("/v1/logs/{id}/retry", post(retry::retry))
        .route("/v1/organizations", post(admin::create_organization))
        .route(
            "/v1/organizations/{id}",
            patch(admin::update_organization).get(admin::get_organization),
        )
        .route("/v1/sources", post(admin::create_source))
        .route(
            "/v1/sources/{id}",
            patch(admin::update_source).get(admin::get_source),
        )
        .route("/v1/sources/{id}/rotate-secret", post(admin::rotate_secret))
        .route("/v1/destinations", post(admin::create_destination))
        .route(
            "/v1/destinations/{id}",
            patch(admin::update_destination).get(admin::get_destination),
        )
        .route("/v1/destinations/{id}/queue", get(queues::get))
        .route("/v1/destinations/{id}/pause", post(queues::pause))
        .route("/v1/destinations/{id}/resume", post(queues::resume))
        .route("/v1/destinations/{id}/skip", post(queues::skip))
        .route("/v1/subscriptions", post(admin::create_subscription))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // A layer over the routes runs after routing: the matched route template is known.
        .layer(axum::middleware::from_fn(crate::http_metrics::record))
        .layer(axum::middleware::from_fn(crate::http_trace::record_route))
        .with_state(state)
}

async fn not_found(request: Request) -> ApiError {
    let path = request.uri().path();
    ApiError::not_found(format!("Unknown route {} {path}", request.method())).for_api(Api::of_path(path))
}

async fn method_not_allowed(request: Request) -> ApiError {
    let path = request.uri().path();
    ApiError::new(
        carrier_proto::ErrorKind::MethodNotAllowed,
        format!("Method {} is not allowed on {path}", request.method()),
    )
    .for_api(Api::of_path(path))
}

/// Refuses a body that is not a JSON object before parsing it (the parsers would otherwise
/// report a type mismatch in serde's words).
pub(crate) fn require_json_object(body: &[u8]) -> Result<(), ApiError> {
    match body.iter().find(|byte| !byte.is_ascii_whitespace()) {
        Some(b'{') => Ok(()),
        None => Err(ApiError::bad_request("Request body is empty")),
        Some(_) => Err(ApiError::bad_request("Request body must be a JSON object")),
    }
}

/// The longest routing field a sender may name (a data model, an event type, a destination ID).
pub(crate) const MAX_ROUTING_FIELD_CHARS: usize = 64;

/// Checks a routing field a sender names (`field` is its name in errors): it is sent to
/// receivers as an HTTP header value and stored in the log store's text columns, so it must be
/// 1 to 64 printable ASCII characters (a NUL stopped the log store; a character a header cannot
/// carry failed every attempt).
pub(crate) fn check_routing_field(field: &str, value: &str) -> Result<(), ApiError> {
    let printable = value.chars().all(|c| c.is_ascii_graphic() || c == ' ');
    if printable && !value.is_empty() && value.len() <= MAX_ROUTING_FIELD_CHARS {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{field} must be 1 to {MAX_ROUTING_FIELD_CHARS} printable ASCII characters"
        )))
    }
}

/// Reads a whole body of at most `limit` bytes. A larger body is refused as it streams in
/// (413), without being buffered whole; a `Content-Length` over the limit is refused at once.
/// A body still arriving at its deadline (`limits.body_read_timeout_ms`) is refused with 408.
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        let error = error.into_inner();
        if error.is::<http_body_util::LengthLimitError>() {
            return ApiError::new(
                carrier_proto::ErrorKind::PayloadTooLarge,
                format!("Request body exceeds the limit of {limit} bytes"),
            );
        }
        if let Some(deadline) = find_cause::<crate::overload::in_flight::BodyDeadline>(&*error) {
            deadline.record();
            return ApiError::new(
                carrier_proto::ErrorKind::RequestTimeout,
                format!("Request body was not received in time ({deadline})"),
            );
        }
        ApiError::bad_request(format!("Request body could not be read: {error}"))
    })
}

/// The first error of type `T` in `error`'s chain of sources (the body's own error arrives
/// wrapped by axum once or twice).
fn find_cause<'a, T: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<T>() {
            return Some(found);
        }
        current = error.source();
    }
    None
}

/// Refuses a declared `Content-Length` over the limit before reading anything.
pub(crate) fn check_declared_length(headers: &axum::http::HeaderMap, limit: usize) -> Result<(), ApiError> {
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    match declared {
        Some(length) if length > limit as u64 => Err(ApiError::new(
            carrier_proto::ErrorKind::PayloadTooLarge,
            format!("Request body of {length} bytes exceeds the limit of {limit} bytes"),
        )),
        _ => Ok(()),
    }
}
