//! The axum middleware in front of the public routes: finds the request's client, asks the
//! [`RateLimiter`] and answers 429 with `Retry-After` when the client is over its limit.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use carrier_proto::ErrorKind;

use super::client_ip::{client_ip, window_key};
use super::window::{Decision, RateLimiter};
use crate::error::ApiError;

/// The axum middleware: counts the request against its client, answers 429 when over the limit.
/// A request without a peer address (a server not started with connect info) is not limited.
pub async fn enforce(State(limiter): State<Arc<RateLimiter>>, request: Request, next: Next) -> Response {
    let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>().copied() else {
        return next.run(request).await;
    };
    let client = client_ip(
        peer.ip(),
        request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .map(|value| value.as_bytes()),
        &limiter.trusted_proxies,
    );
    let decision = limiter.check(client).await;
    let counted = match decision {
        Decision::Admitted { .. } => "allowed",
        Decision::Unavailable => "unlimited",
        Decision::Limited { .. } => "limited",
    };
    crate::metrics::metrics()
        .rate_limit_decisions
        .with_label_values(&[counted])
        .inc();
    match decision {
        Decision::Admitted { .. } | Decision::Unavailable => next.run(request).await,
        Decision::Limited { retry_after_secs } => {
            crate::metrics::metrics().rate_limited.inc();
            tracing::debug!(%client, retry_after_secs, "rate limited");
            let settings = &limiter.settings;
            let window = window_key(client);
            ApiError::new(
                ErrorKind::RateLimited,
                format!(
                    "Rate limit exceeded: more than {} requests from {window} in {} seconds; retry after {retry_after_secs} seconds",
                    settings.limit, settings.window_secs
                ),
            )
            .with_retry_after(retry_after_secs)
            .for_api(crate::error::Api::of_path(request.uri().path()))
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tests against the real Redis of the test environment (`CARRIER_TEST_REDIS`), each under
    /// a key prefix of its own.
    mod with_redis {
        use super::*;
        use crate::rate_limit::settings::RateLimitSettings;
        use crate::rate_limit::test_redis::{connected, settings};

        #[tokio::test]
        async fn the_middleware_answers_429_with_the_computed_retry_after_and_the_data_model_body() {
            use axum::body::Body;
            use tower::ServiceExt;

            let limiter = connected(RateLimitSettings {
                trusted_proxies: vec!["10.0.0.0/8".into()],
                ..settings(1, 120)
            })
            .await;
            let app = axum::Router::new()
                .route("/endpoint", axum::routing::post(|| async { "accepted" }))
                .layer(axum::middleware::from_fn_with_state(limiter.clone(), enforce));
            let request = |peer: &str, forwarded_for: Option<&str>| {
                let mut request = axum::http::Request::post("/endpoint");
                if let Some(forwarded_for) = forwarded_for {
                    request = request.header("x-forwarded-for", forwarded_for);
                }
                let mut request = request.body(Body::empty()).unwrap();
                let peer: SocketAddr = peer.parse().unwrap();
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            };
            let send = |request: axum::http::Request<Body>| async {
                let response = app.clone().oneshot(request).await.unwrap();
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .map(|value| value.to_str().unwrap().to_string());
                let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
                (status, retry_after, body)
            };

            let (status, _, body) = send(request("198.51.100.20:4000", None)).await;
            assert_eq!((status, &body[..]), (200, &b"accepted"[..]));
            // Another port of the same address is the same client.
            let (status, retry_after, body) = send(request("198.51.100.20:4001", None)).await;
            assert_eq!(status, 429);
            let retry_after: u64 = retry_after.expect("Retry-After").parse().unwrap();
            assert!(
                (110..=120).contains(&retry_after),
                "the first request leaves the 120 s window in about 120 s: {retry_after}"
            );
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let text = body["Meta"]["Errors"][0]["Text"]
                .as_str()
                .expect("Data Model error body");
            assert!(
                text.contains("Rate limit exceeded") && text.contains("198.51.100.20"),
                "{text}"
            );
            // A spoofed X-Forwarded-For from an untrusted peer changes nothing.
            let (status, _, _) = send(request("198.51.100.20:4002", Some("203.0.113.50"))).await;
            assert_eq!(status, 429);
            // Through a trusted proxy, the forwarded client has a window of its own.
            let (status, _, _) = send(request("10.1.1.1:5000", Some("203.0.113.51"))).await;
            assert_eq!(status, 200);
            let (status, _, _) = send(request("10.1.1.2:5000", Some("198.51.100.20"))).await;
            assert_eq!(status, 429, "the same client through the proxy shares its window");
            // Without a peer address (not served with connect info) nothing is limited.
            let no_peer = axum::http::Request::post("/endpoint")
                .body(Body::empty())
                .unwrap();
            assert_eq!(send(no_peer).await.0, 200);
        }
    }
}
