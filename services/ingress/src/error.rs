//! The one error answer of ingress. Its status comes from [`ErrorKind`] (one table, in
//! `carrier-proto`); its body follows the API the request used ([`Api`]):
//!
//! - Data Model API (and every other route): `{"Meta": {"Errors": [{"Text": "..."}]}}`.
//! - FHIR API (`/fhir/...`): an `OperationOutcome` whose `issue[0]` carries `severity` and
//!   `code` from [`fhir_issue`], `details.text` (the same text) and `diagnostics`.
//!
//! Both bodies come from the same [`ApiError`] with the same status and headers
//! (`Retry-After` on 429/503, `WWW-Authenticate` on 401): only the rendering differs.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use carrier_proto::ErrorKind;
use serde::Serialize;
use utoipa::ToSchema;

/// Which API a request used, so its errors come back in that API's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Api {
    /// `POST /endpoint`, and every route that is not FHIR.
    #[default]
    DataModel,
    /// `/fhir/...`: errors are `OperationOutcome`s.
    Fhir,
}

impl Api {
    /// The API a path belongs to (for answers made before a handler runs: unknown routes,
    /// methods, the rate limit).
    pub fn of_path(path: &str) -> Api {
        if path == "/fhir" || path.starts_with("/fhir/") {
            Api::Fhir
        } else {
            Api::DataModel
        }
    }
}

/// The FHIR `OperationOutcome.issue` severity and issue-type code
/// (<https://hl7.org/fhir/R4/valueset-issue-type.html>) of each kind of error.
pub fn fhir_issue(kind: ErrorKind) -> (&'static str, &'static str) {
    match kind {
        ErrorKind::BadRequest => ("error", "invalid"),
        ErrorKind::Unauthorized => ("error", "security"),
        ErrorKind::Forbidden => ("error", "forbidden"),
        ErrorKind::NotFound => ("error", "not-found"),
        ErrorKind::MethodNotAllowed => ("error", "not-supported"),
        ErrorKind::Conflict => ("error", "conflict"),
        ErrorKind::PayloadTooLarge => ("error", "too-costly"),
        ErrorKind::RequestTimeout => ("error", "timeout"),
        ErrorKind::RateLimited => ("error", "throttled"),
        ErrorKind::Internal => ("fatal", "exception"),
        ErrorKind::QueueRejected => ("error", "transient"),
        ErrorKind::Overloaded => ("error", "transient"),
        ErrorKind::Timeout => ("error", "timeout"),
    }
}

/// The body of every error outside `/fhir/` (and in the OAuth errors, beside RFC 6749's fields).
#[derive(Serialize, ToSchema)]
pub struct DataModelError {
    #[serde(rename = "Meta")]
    pub meta: DataModelErrors,
}

#[derive(Serialize, ToSchema)]
pub struct DataModelErrors {
    #[serde(rename = "Errors")]
    pub errors: Vec<ErrorText>,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorText {
    /// What went wrong, naming the field (e.g. `Required field missing - Meta.DataModel`).
    #[serde(rename = "Text")]
    pub text: String,
}

/// Every answer of the FHIR API: `issue` is empty on success, one issue on an error.
#[derive(Serialize, ToSchema)]
pub struct OperationOutcome {
    /// Always `OperationOutcome`.
    #[serde(rename = "resourceType")]
    pub resource_type: String,
    pub issue: Vec<Issue>,
}

#[derive(Serialize, ToSchema)]
pub struct Issue {
    /// `error`, or `fatal` for 500.
    pub severity: String,
    /// FHIR issue type: `invalid`, `security`, `forbidden`, `not-found`, `not-supported`,
    /// `conflict`, `too-costly`, `throttled`, `exception`, `transient`, `timeout`.
    pub code: String,
    pub details: IssueDetails,
    /// `HTTP <status> <reason>`.
    pub diagnostics: String,
}

#[derive(Serialize, ToSchema)]
pub struct IssueDetails {
    /// The same text the Data Model API gives.
    pub text: String,
}

impl OperationOutcome {
    /// The FHIR API's answer to an accepted message: no issues.
    pub fn success() -> Self {
        Self {
            resource_type: "OperationOutcome".into(),
            issue: Vec::new(),
        }
    }
}

#[derive(Debug)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub text: String,
    /// Seconds, for 429 and 503.
    pub retry_after_secs: Option<u64>,
    /// The shape of the body; [`Api::DataModel`] unless [`ApiError::for_api`] says otherwise.
    pub api: Api,
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
            api: Api::DataModel,
        }
    }

    /// Renders this error in `api`'s shape.
    pub fn for_api(mut self, api: Api) -> Self {
        self.api = api;
        self
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
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
        // The peer refused ingress's own service token: a misconfiguration, not the caller's
        // fault (and not a 401 for a sender's credentials).
        if carrier_internal_auth::is_refusal(&status) {
            tracing::warn!(message = status.message(), "an internal service refused ingress's credentials; check internal_auth.service_token (CARRIER_INTERNAL_AUTH__SERVICE_TOKEN) on every service");
            return ApiError::internal("Internal error");
        }
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
        let status = self.status();
        let mut response = match self.api {
            Api::DataModel => {
                let body = DataModelError {
                    meta: DataModelErrors {
                        errors: vec![ErrorText { text: self.text }],
                    },
                };
                (status, Json(body)).into_response()
            }
            Api::Fhir => {
                let (severity, code) = fhir_issue(self.kind);
                let body = OperationOutcome {
                    resource_type: "OperationOutcome".into(),
                    issue: vec![Issue {
                        severity: severity.into(),
                        code: code.into(),
                        details: IssueDetails { text: self.text },
                        diagnostics: format!(
                            "HTTP {} {}",
                            status.as_u16(),
                            status.canonical_reason().unwrap_or("")
                        ),
                    }],
                };
                fhir_json(status, &body)
            }
        };
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

/// A FHIR JSON answer (`application/fhir+json`).
pub fn fhir_json(status: StatusCode, body: &impl Serialize) -> Response {
    let body = serde_json::to_string(body).expect("an answer serializes");
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/fhir+json"),
        )],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn rendered(error: ApiError) -> (u16, axum::http::HeaderMap, serde_json::Value) {
        let response = error.into_response();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, headers, serde_json::from_slice(&bytes).expect("json"))
    }

    /// Every kind, both shapes: one status, the same text, the FHIR issue code of the table.
    #[tokio::test]
    async fn every_kind_renders_the_same_status_in_both_apis() {
        let table = [
            (ErrorKind::BadRequest, 400, "invalid"),
            (ErrorKind::Unauthorized, 401, "security"),
            (ErrorKind::Forbidden, 403, "forbidden"),
            (ErrorKind::NotFound, 404, "not-found"),
            (ErrorKind::MethodNotAllowed, 405, "not-supported"),
            (ErrorKind::Conflict, 409, "conflict"),
            (ErrorKind::PayloadTooLarge, 413, "too-costly"),
            (ErrorKind::RequestTimeout, 408, "timeout"),
            (ErrorKind::RateLimited, 429, "throttled"),
            (ErrorKind::Internal, 500, "exception"),
            (ErrorKind::QueueRejected, 502, "transient"),
            (ErrorKind::Overloaded, 503, "transient"),
            (ErrorKind::Timeout, 504, "timeout"),
        ];
        for (kind, status, code) in table {
            let text = format!("text of {kind:?}");
            let (data_model_status, data_model_headers, body) = rendered(ApiError::new(kind, &text)).await;
            assert_eq!(data_model_status, status, "{kind:?}");
            assert_eq!(
                body,
                serde_json::json!({ "Meta": { "Errors": [ { "Text": text.clone() } ] } })
            );

            let (fhir_status, fhir_headers, outcome) =
                rendered(ApiError::new(kind, &text).for_api(Api::Fhir)).await;
            assert_eq!(fhir_status, status, "{kind:?}");
            assert_eq!(fhir_headers["content-type"], "application/fhir+json");
            assert_eq!(outcome["resourceType"], "OperationOutcome");
            let issue = &outcome["issue"][0];
            let severity = if kind == ErrorKind::Internal {
                "fatal"
            } else {
                "error"
            };
            assert_eq!(issue["severity"], severity, "{kind:?}");
            assert_eq!(issue["code"], code, "{kind:?}");
            assert_eq!(issue["details"]["text"], text.as_str());
            assert!(
                issue["diagnostics"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("HTTP {status}")),
                "{outcome}"
            );
            for headers in [&data_model_headers, &fhir_headers] {
                assert_eq!(
                    headers.contains_key("retry-after"),
                    kind == ErrorKind::Overloaded,
                    "{kind:?}"
                );
                assert_eq!(
                    headers.contains_key("www-authenticate"),
                    kind == ErrorKind::Unauthorized,
                    "{kind:?}"
                );
            }
        }
    }

    #[test]
    fn produce_failures_map_to_502_503_504() {
        use carrier_kafka::producer::ProduceError;
        use carrier_kafka::rdkafka::error::{KafkaError, RDKafkaErrorCode};
        let cases = [
            (RDKafkaErrorCode::QueueFull, 503),
            (RDKafkaErrorCode::MessageTimedOut, 504),
            (RDKafkaErrorCode::RequestTimedOut, 504),
            (RDKafkaErrorCode::MessageSizeTooLarge, 502),
            (RDKafkaErrorCode::NotEnoughReplicas, 502),
        ];
        for (code, status) in cases {
            let error = ProduceError::from(KafkaError::MessageProduction(code));
            assert_eq!(error.kind().http_status(), status, "{code:?}");
        }
    }

    #[test]
    fn paths_choose_the_api() {
        assert_eq!(Api::of_path("/fhir/R4/Patient"), Api::Fhir);
        assert_eq!(Api::of_path("/fhir"), Api::Fhir);
        assert_eq!(Api::of_path("/fhirish"), Api::DataModel);
        assert_eq!(Api::of_path("/endpoint"), Api::DataModel);
    }
}
