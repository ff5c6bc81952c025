//! `POST /endpoint`: the Data Model API.
//!
//! This module reads the request (`Meta`, [`parse_meta`]) and shapes the answer; the durable
//! write is the shared pipeline of `accept`. The answer is 200 only after `carrier.inbound`
//! acknowledged the message with acks=all. The message and log IDs are assigned before the
//! write, so the sender learns every log ID in the answer.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::submission::Submission;
use crate::error::{Api, ApiError, ErrorText};
use crate::AppState;

/// The fields of a Data Model API request that Carrier reads (`Meta.DataModel`,
/// `Meta.EventType`, `Meta.Test`, `Meta.Destinations`); the rest of the body is carried to the
/// destinations untouched (the original bytes, not a re-serialisation).
pub type Meta = Submission;

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "Meta")]
    meta: Option<Value>,
}

/// The most destinations one message may name in `Meta.Destinations`.
const MAX_DESTINATIONS: usize = 100;

/// Validates the body of a Data Model API request. Every error names the field.
pub fn parse_meta(body: &[u8]) -> Result<Meta, ApiError> {
    super::body::require_json_object(body)?;
    let envelope: Envelope = serde_json::from_slice(body)
        .map_err(|error| ApiError::bad_request(format!("Request body is not valid JSON: {error}")))?;
    let meta = match envelope.meta {
        Some(Value::Object(meta)) => meta,
        Some(_) => return Err(ApiError::bad_request("Meta must be an object")),
        None => return Err(ApiError::bad_request("Required field missing - Meta")),
    };
    let required_string = |field: &str| -> Result<String, ApiError> {
        match meta.get(field) {
            Some(Value::String(value)) if !value.trim().is_empty() => Ok(value.clone()),
            None | Some(Value::Null) => Err(ApiError::bad_request(format!(
                "Required field missing - Meta.{field}"
            ))),
            Some(Value::String(_)) => Err(ApiError::bad_request(format!(
                "Required field missing - Meta.{field}"
            ))),
            Some(_) => Err(ApiError::bad_request(format!("Meta.{field} must be a string"))),
        }
    };
    let data_model = required_string("DataModel")?;
    super::submission::check_routing_field("Meta.DataModel", &data_model)?;
    let event_type = required_string("EventType")?;
    super::submission::check_routing_field("Meta.EventType", &event_type)?;
    let test = match meta.get("Test") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(test)) => *test,
        Some(_) => return Err(ApiError::bad_request("Meta.Test must be a boolean")),
    };
    let mut destination_ids = Vec::new();
    match meta.get("Destinations") {
        None | Some(Value::Null) => {}
        Some(Value::Array(destinations)) => {
            if destinations.len() > MAX_DESTINATIONS {
                return Err(ApiError::bad_request(format!(
                    "Meta.Destinations may name at most {MAX_DESTINATIONS} destinations"
                )));
            }
            for (index, destination) in destinations.iter().enumerate() {
                let id = match destination.get("ID") {
                    Some(Value::String(id)) if !id.is_empty() => id.clone(),
                    Some(Value::Number(id)) => id.to_string(),
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "Required field missing - Meta.Destinations[{index}].ID"
                        )))
                    }
                };
                super::submission::check_routing_field(&format!("Meta.Destinations[{index}].ID"), &id)?;
                // Named twice is sent once (and a long repeated list cannot grow the route cache).
                if !destination_ids.contains(&id) {
                    destination_ids.push(id);
                }
            }
        }
        Some(_) => return Err(ApiError::bad_request("Meta.Destinations must be an array")),
    }
    Ok(Meta {
        data_model,
        event_type,
        test,
        destination_ids,
    })
}

/// The answer once the broker acknowledged the message (acks=all).
#[derive(Serialize, ToSchema)]
pub struct DataModelAccepted {
    #[serde(rename = "Meta")]
    meta: DataModelAcceptedMeta,
}

#[derive(Serialize, ToSchema)]
pub struct DataModelAcceptedMeta {
    #[serde(rename = "DataModel")]
    data_model: String,
    #[serde(rename = "EventType")]
    event_type: String,
    #[serde(rename = "Test")]
    test: bool,
    #[serde(rename = "Message")]
    message: MessageRef,
    /// One log per destination.
    #[serde(rename = "Logs")]
    logs: Vec<LogRef>,
    /// Always empty on success.
    #[serde(rename = "Errors")]
    errors: Vec<ErrorText>,
}

#[derive(Serialize, ToSchema)]
pub struct MessageRef {
    #[serde(rename = "ID")]
    id: String,
}

#[derive(Serialize, ToSchema)]
pub struct LogRef {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "DestinationID")]
    destination_id: String,
}

#[utoipa::path(
    post,
    path = "/endpoint",
    operation_id = "post_data_model_message",
    tag = "Data Model API",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key within 24 h gets the original answer (same IDs) instead of sending twice"),
    ),
    request_body(content = crate::openapi::DataModelMessage, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Written to Kafka with acks=all", body = DataModelAccepted),
        (status = 400, description = "Malformed or missing required data", body = crate::error::DataModelError),
        (status = 401, description = "Missing, invalid or expired token", body = crate::error::DataModelError),
        (status = 403, description = "Not allowed", body = crate::error::DataModelError),
        (status = 404, description = "Unknown route, data model, destination or resource", body = crate::error::DataModelError),
        (status = 405, description = "Method not allowed", body = crate::error::DataModelError),
        (status = 409, description = "A request with the same Idempotency-Key is in progress (with Retry-After)", body = crate::error::DataModelError),
        (status = 500, description = "Unknown internal error", body = crate::error::DataModelError),
        (status = 502, description = "The queue rejected or dropped the write, or a peer is unreachable", body = crate::error::DataModelError),
        crate::openapi::BodyErrors,
        crate::openapi::EveryRouteErrors,
    )
)]
pub async fn post(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let result = accept(&state, &headers, body).await;
    super::accept::record_outcome(Api::DataModel, started, &result);
    result
}

async fn accept(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    let (source_id, body) = super::accept::authenticated_body(state, headers, body).await?;
    let meta = parse_meta(&body)?;
    let accepted = super::accept::submit(state, headers, &source_id, &meta, body).await?;
    let logs = accepted
        .routes
        .iter()
        .map(|route| LogRef {
            id: route.log_id.clone(),
            destination_id: route.destination_id.clone(),
        })
        .collect();
    let mut response = Json(DataModelAccepted {
        meta: DataModelAcceptedMeta {
            data_model: meta.data_model,
            event_type: meta.event_type,
            test: meta.test,
            message: MessageRef {
                id: accepted.message_id.clone(),
            },
            logs,
            errors: Vec::new(),
        },
    })
    .into_response();
    super::accept::mark_replayed(&accepted, &mut response);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_text(body: &str) -> String {
        parse_meta(body.as_bytes()).unwrap_err().text
    }

    #[test]
    fn routing_fields_are_printable_ascii_of_bounded_length() {
        assert_eq!(
            error_text(r#"{"Meta": {"DataModel": "Results", "EventType": "Arr\u0000ival"}}"#),
            "Meta.EventType must be 1 to 64 printable ASCII characters"
        );
        assert_eq!(
            error_text(r#"{"Meta": {"DataModel": "Résultats", "EventType": "New"}}"#),
            "Meta.DataModel must be 1 to 64 printable ASCII characters"
        );
        let long = "x".repeat(65);
        assert_eq!(
            error_text(&format!(
                r#"{{"Meta": {{"DataModel": "Results", "EventType": "{long}"}}}}"#
            )),
            "Meta.EventType must be 1 to 64 printable ASCII characters"
        );
        assert_eq!(
            error_text(
                r#"{"Meta": {"DataModel": "Results", "EventType": "New", "Destinations": [{"ID": "a\nb"}]}}"#
            ),
            "Meta.Destinations[0].ID must be 1 to 64 printable ASCII characters"
        );
        let many: Vec<String> = (0..101).map(|n| format!(r#"{{"ID": "d{n}"}}"#)).collect();
        assert_eq!(
            error_text(&format!(
                r#"{{"Meta": {{"DataModel": "Results", "EventType": "New", "Destinations": [{}]}}}}"#,
                many.join(",")
            )),
            "Meta.Destinations may name at most 100 destinations"
        );
        let twice = parse_meta(
            br#"{"Meta": {"DataModel": "Results", "EventType": "Admission Notice", "Destinations": [{"ID": "d1"}, {"ID": "d1"}, {"ID": 7}]}}"#,
        )
        .unwrap();
        assert_eq!(twice.destination_ids, ["d1", "7"], "named twice, routed once");
    }

    #[test]
    fn required_fields_are_named() {
        assert_eq!(
            error_text(r#"{"Meta": {"EventType": "New"}}"#),
            "Required field missing - Meta.DataModel"
        );
        assert_eq!(
            error_text(r#"{"Meta": {"DataModel": "Results"}}"#),
            "Required field missing - Meta.EventType"
        );
        assert_eq!(error_text(r#"{"Patient": {}}"#), "Required field missing - Meta");
        assert_eq!(
            error_text(r#"{"Meta": {"DataModel": 3, "EventType": "New"}}"#),
            "Meta.DataModel must be a string"
        );
        assert_eq!(
            error_text(r#"{"Meta": {"DataModel": "R", "EventType": "New", "Test": "yes"}}"#),
            "Meta.Test must be a boolean"
        );
        assert!(error_text("{not json").starts_with("Request body is not valid JSON"));
        assert_eq!(error_text("[1, 2]"), "Request body must be a JSON object");
        assert_eq!(error_text("  \"Meta\""), "Request body must be a JSON object");
        assert_eq!(error_text(r#"{"Meta": []}"#), "Meta must be an object");
        assert_eq!(
            error_text(r#"{"Meta": {"DataModel": "R", "EventType": "New", "Destinations": {"ID": "x"}}}"#),
            "Meta.Destinations must be an array"
        );
        assert_eq!(
            error_text(
                r#"{"Meta": {"DataModel": "R", "EventType": "New", "Destinations": [{"Name": "x"}]}}"#
            ),
            "Required field missing - Meta.Destinations[0].ID"
        );
    }

    #[test]
    fn a_valid_request_yields_its_meta() {
        let meta = parse_meta(
            br#"{"Meta": {"DataModel": "Results", "EventType": "New", "Test": true, "Destinations": [{"ID": "d1"}]}, "Patient": {"x": 1}}"#,
        )
        .unwrap();
        assert_eq!(
            meta,
            Meta {
                data_model: "Results".into(),
                event_type: "New".into(),
                test: true,
                destination_ids: vec!["d1".into()]
            }
        );
    }
}
