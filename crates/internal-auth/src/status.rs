//! The gRPC status of each call an internal server answers, on its SERVER span
//! (`rpc.grpc.status_code`; a non-OK code marks the span as an error). `trace_fn` builds the span
//! before the call and never sees the answer, so this layer, inside the span, reads it.
//!
//! Tonic answers a refused or failed call "trailers-only": `grpc-status` is in the response
//! headers. A unary success carries it in the trailers, after the body: a response without it in
//! the headers is counted as OK (0). Carrier's internal services are all unary.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::codegen::http;

/// Wraps an internal server's services (outside the service-token check, so a refusal is
/// recorded too).
#[derive(Clone, Copy, Debug, Default)]
pub struct RecordStatusLayer;

impl<S> tower::Layer<S> for RecordStatusLayer {
    type Service = RecordStatus<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RecordStatus(inner)
    }
}

#[derive(Clone, Debug)]
pub struct RecordStatus<S>(S);

impl<S, B, R> tower::Service<http::Request<B>> for RecordStatus<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let answer = self.0.call(request);
        Box::pin(async move {
            let response = answer.await?;
            let code = status_code(response.headers());
            carrier_telemetry::trace::record_grpc_status(&tracing::Span::current(), code);
            Ok(response)
        })
    }
}

/// The `grpc-status` of a trailers-only answer; 0 (OK) when the headers carry none.
fn status_code(headers: &http::HeaderMap) -> i32 {
    headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trailers_only_answer_names_its_code_and_otherwise_it_is_ok() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(status_code(&headers), 0);
        headers.insert("grpc-status", http::HeaderValue::from_static("16"));
        assert_eq!(status_code(&headers), 16, "Unauthenticated");
    }
}
