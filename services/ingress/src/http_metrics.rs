//! Every public HTTP request counted by route, method and status, with its duration by route:
//! `carrier_ingress_http_requests_total{route,method,status}` and
//! `carrier_ingress_http_request_seconds{route}`. The route is the matched template
//! (`/v1/logs/{id}`), never the path, so the labels stay bounded; anything unrouted is
//! `unmatched`, and a method outside the standard ones `other`. Requests refused before routing
//! (shed with 503 by the in-flight caps, refused with 429 by the rate limit) are counted by
//! `carrier_ingress_requests_shed_total` and `carrier_ingress_rate_limit_decisions_total`.

use std::time::Instant;

use crate::metrics::metrics;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

/// The middleware (a layer over every route, so the matched route is known).
pub async fn record(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |path| path.as_str().to_string());
    let method = method_label(request.method());
    let response = next.run(request).await;
    let status = response.status();
    metrics()
        .http_requests
        .with_label_values(&[&route, method, status.as_str()])
        .inc();
    metrics()
        .http_request_seconds
        .with_label_values(&[&route])
        .observe(started.elapsed().as_secs_f64());
    response
}

fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusual_methods_share_one_label() {
        assert_eq!(method_label(&axum::http::Method::GET), "GET");
        let odd = axum::http::Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&odd), "other");
    }
}
