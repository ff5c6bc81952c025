//! The one error answer of ingress: a status from [`ErrorKind`] and the Data Model API body
//! `{"Meta": {"Errors": [{"Text": "..."}]}}`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use carrier_proto::ErrorKind;

#[derive(Debug)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub text: String,
    /// Seconds, for 429 and 503.
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, text: impl Into<String>) -> Self {
        let retry_after_secs = match kind {
            ErrorKind::Overloaded => Some(1),
            _ => None,
        };
        Self {
            kind,
            text: text.into(),
            retry_after_secs,
        }
    }

    /// Sets `Retry-After` (seconds) on a 429 or 503.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_secs = Some(seconds);
        self
    }

    pub fn bad_request(text: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, text)
    }

    pub fn unauthorized(text: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthorized, text)
    }

    pub fn not_found(text: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, text)
    }

    pub fn internal(text: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, text)
    }
}

/// A peer's gRPC status becomes the same kind of HTTP answer; an unreachable router is a 502.
impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        let kind = ErrorKind::from_grpc_code(status.code());
        let text = match kind {
            ErrorKind::QueueRejected | ErrorKind::Timeout => {
                tracing::warn!(code = ?status.code(), message = status.message(), "router call failed");
                "Carrier could not reach its routing service; retry with backoff".to_string()
            }
            ErrorKind::Internal => {
                tracing::warn!(code = ?status.code(), message = status.message(), "router call failed");
                "Internal error".to_string()
            }
            _ => status.message().to_string(),
        };
        ApiError::new(kind, text)
    }
}

impl From<carrier_store::sqlx::Error> for ApiError {
    fn from(error: carrier_store::sqlx::Error) -> Self {
        tracing::warn!(%error, "log store query failed");
        ApiError::internal("Internal error reading the log store")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({ "Meta": { "Errors": [ { "Text": self.text } ] } });
        let mut response = (status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after_secs {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(seconds));
        }
        if self.kind == ErrorKind::Unauthorized {
            response
                .headers_mut()
                .insert("www-authenticate", HeaderValue::from_static("Bearer"));
        }
        response
    }
}
