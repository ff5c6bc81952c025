//! The SERVER span of every public HTTP request (OpenTelemetry's HTTP conventions:
//! `http.request.method`, `url.path`, `url.scheme`, `http.route`, `http.response.status_code`;
//! named `POST /endpoint` by the matched route template). A sender's own W3C `traceparent`
//! (and `tracestate`) is honoured: the request's span is its child, so everything the message
//! causes — up to the receiver's request — is in the sender's trace. Without one it is a new
//! trace. A 5xx answer marks the span as an error (a 4xx is the client's).
//!
//! [`server_span`] wraps everything (also requests shed or rate limited before routing);
//! [`record_route`] runs after routing and names the span by its template. Tracing off, both
//! pass the request through untouched.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

/// The outermost middleware of the public routes.
pub async fn server_span(request: Request, next: Next) -> Response {
    if !carrier_telemetry::trace::enabled() {
        return next.run(request).await;
    }
    let method = request.method().as_str().to_string();
    let span = tracing::info_span!(
        "http.server",
        otel.name = %method,
        otel.kind = "server",
        http.request.method = %method,
        url.path = request.uri().path(),
        url.scheme = "http",
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let headers = request.headers();
    let parent =
        carrier_telemetry::trace::extract(|name| headers.get(name).and_then(|value| value.to_str().ok()));
    carrier_telemetry::trace::set_parent(&span, parent);
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
    response
}

/// After routing: the span is named by the route template (`POST /v1/logs/{id}`), never by the
/// path (which holds IDs).
pub async fn record_route(request: Request, next: Next) -> Response {
    if carrier_telemetry::trace::enabled() {
        if let Some(route) = request.extensions().get::<MatchedPath>() {
            let span = tracing::Span::current();
            span.record("http.route", route.as_str());
            carrier_telemetry::trace::rename(&span, format!("{} {}", request.method(), route.as_str()));
        }
    }
    next.run(request).await
}
