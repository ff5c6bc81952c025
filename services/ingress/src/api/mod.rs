//! The HTTP routes of ingress, one module per area. `endpoint` (Data Model API) and `fhir`
//! (FHIR API) parse their own requests and share the pipeline of `accept`.

mod accept;
pub(crate) mod admin;
pub(crate) mod body;
pub(crate) mod endpoint;
pub(crate) mod fhir;
pub(crate) mod idempotency;
pub(crate) mod log_access;
pub(crate) mod log_search;
pub(crate) mod logs;
pub(crate) mod oauth;
#[cfg(test)]
mod parsers_fuzz;
pub(crate) mod queues;
pub(crate) mod retry;
pub(crate) mod submission;

use std::sync::Arc;

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
