//! Reading request bodies: the size limit as a body streams in, the declared
//! `Content-Length`, the body deadline, and the JSON-object check every JSON API makes first.

use axum::body::Body;

use crate::error::ApiError;

/// Refuses a body that is not a JSON object before parsing it (the parsers would otherwise
/// report a type mismatch in serde's words).
pub(crate) fn require_json_object(body: &[u8]) -> Result<(), ApiError> {
    match body.iter().find(|byte| !byte.is_ascii_whitespace()) {
        Some(b'{') => Ok(()),
        None => Err(ApiError::bad_request("Request body is empty")),
        Some(_) => Err(ApiError::bad_request("Request body must be a JSON object")),
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
