//! The HTTP routes of ingress, one module per area.

mod admin;
mod endpoint;
mod logs;
mod oauth;
mod queues;
mod retry;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::routing::{get, patch, post};
use axum::Router;

use crate::error::ApiError;
use crate::AppState;

/// Every public route, behind the per-client rate limit when it is on. The probes are merged
/// in by the caller, outside the limit.
pub fn router(state: Arc<AppState>) -> Router {
    let routes = public_routes(state.clone());
    match &state.rate_limiter {
        Some(limiter) => routes.layer(axum::middleware::from_fn_with_state(
            limiter.clone(),
            crate::rate_limit::enforce,
        )),
        None => routes,
    }
}

fn public_routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/oauth/token", post(oauth::token))
        .route("/endpoint", post(endpoint::post))
        .route("/v1/logs/{id}", get(logs::get_one))
        .route("/v1/logs/{id}/retry", post(retry::retry))
        .route("/v1/organizations", post(admin::create_organization))
        .route("/v1/organizations/{id}", get(admin::get_organization))
        .route("/v1/sources", post(admin::create_source))
        .route(
            "/v1/sources/{id}",
            patch(admin::update_source).get(admin::get_source),
        )
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
        .with_state(state)
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(format!(
        "Unknown route {} {}",
        request.method(),
        request.uri().path()
    ))
}

async fn method_not_allowed(request: Request) -> axum::response::Response {
    use axum::response::IntoResponse;
    let body = serde_json::json!({ "Meta": { "Errors": [ { "Text": format!("Method {} is not allowed on {}", request.method(), request.uri().path()) } ] } });
    (axum::http::StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}

/// Reads a whole body of at most `limit` bytes. A larger body is refused as it streams in
/// (413), without being buffered whole; a `Content-Length` over the limit is refused at once.
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        let error = error.into_inner();
        if error.is::<http_body_util::LengthLimitError>() {
            ApiError::new(
                carrier_proto::ErrorKind::PayloadTooLarge,
                format!("Request body exceeds the limit of {limit} bytes"),
            )
        } else {
            ApiError::bad_request(format!("Request body could not be read: {error}"))
        }
    })
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
