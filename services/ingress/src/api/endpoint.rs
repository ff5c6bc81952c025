//! `POST /endpoint`: the Data Model API.
//!
//! The answer is 200 only after `carrier.inbound` acknowledged the message with acks=all. The
//! message and log IDs are assigned here, so the sender learns every log ID in the answer.

const NO_LABELS: &[&str] = &[];

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use carrier_proto::config_v1::ResolveRequest;
use carrier_proto::records_v1::{InboundMessage, Route};
use carrier_proto::ErrorKind;
use prost::Message;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::auth;
use crate::error::ApiError;
use crate::AppState;

/// The fields of a Data Model API request that Carrier reads; the rest of the body is carried
/// to the destinations untouched (the original bytes, not a re-serialisation).
#[derive(Debug, PartialEq)]
pub struct Meta {
    pub data_model: String,
    pub event_type: String,
    pub test: bool,
    pub destination_ids: Vec<String>,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "Meta")]
    meta: Option<Value>,
}

/// Validates the body of a Data Model API request. Every error names the field.
pub fn parse_meta(body: &[u8]) -> Result<Meta, ApiError> {
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
    let event_type = required_string("EventType")?;
    let test = match meta.get("Test") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(test)) => *test,
        Some(_) => return Err(ApiError::bad_request("Meta.Test must be a boolean")),
    };
    let mut destination_ids = Vec::new();
    match meta.get("Destinations") {
        None | Some(Value::Null) => {}
        Some(Value::Array(destinations)) => {
            for (index, destination) in destinations.iter().enumerate() {
                match destination.get("ID") {
                    Some(Value::String(id)) if !id.is_empty() => destination_ids.push(id.clone()),
                    Some(Value::Number(id)) => destination_ids.push(id.to_string()),
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "Required field missing - Meta.Destinations[{index}].ID"
                        )))
                    }
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

fn metrics() -> &'static (
    carrier_telemetry::prometheus::IntCounterVec,
    carrier_telemetry::prometheus::HistogramVec,
) {
    static METRICS: std::sync::OnceLock<(
        carrier_telemetry::prometheus::IntCounterVec,
        carrier_telemetry::prometheus::HistogramVec,
    )> = std::sync::OnceLock::new();
    METRICS.get_or_init(|| {
        (
            carrier_telemetry::counter_vec(
                "carrier_ingress_requests_total",
                "Data Model API requests by HTTP status",
                &["status"],
            ),
            carrier_telemetry::histogram_vec(
                "carrier_ingress_durable_write_seconds",
                "Time from request to the broker's acknowledgement",
                &[],
            ),
        )
    })
}

pub async fn post(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let started = std::time::Instant::now();
    let result = accept(&state, &headers, body).await;
    let status = match &result {
        Ok(_) => 200,
        Err(error) => error.kind.http_status(),
    };
    let status = status.to_string();
    metrics().0.with_label_values(&[status.as_str()]).inc();
    if result.is_ok() {
        metrics()
            .1
            .with_label_values(NO_LABELS)
            .observe(started.elapsed().as_secs_f64());
    }
    result
}

async fn accept(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Json<Value>, ApiError> {
    let (source_id, _organization_id) = auth::source(headers, &state.tokens)?;
    let limit = state.config.max_body_bytes;
    super::check_declared_length(headers, limit)?;
    let body = super::read_body(body, limit).await?;
    let meta = parse_meta(&body)?;
    let route = state
        .routes
        .resolve(
            &state.router,
            ResolveRequest {
                source_id: source_id.clone(),
                data_model: meta.data_model.clone(),
                event_type: meta.event_type.clone(),
                destination_ids: meta.destination_ids.clone(),
            },
        )
        .await?;

    let received_at_ms = chrono::Utc::now().timestamp_millis();
    let message_id = Uuid::now_v7().to_string();
    let routes: Vec<Route> = route
        .destination_ids
        .iter()
        .map(|destination_id| Route {
            log_id: Uuid::now_v7().to_string(),
            destination_id: destination_id.clone(),
        })
        .collect();
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let record = InboundMessage {
        message_id: message_id.clone(),
        received_at_ms,
        organization_id: route.organization_id.clone(),
        source_id: source_id.clone(),
        environment: route.environment.clone(),
        data_model: meta.data_model.clone(),
        event_type: meta.event_type.clone(),
        test: meta.test,
        content_type,
        body: body.to_vec(),
        routes: routes.clone(),
    };
    let payload = record.encode_to_vec();
    let write = carrier_kafka::producer::send(
        &state.producer,
        &state.topics.inbound,
        &source_id,
        &payload,
        None,
        carrier_kafka::producer::WhenFull::Fail,
    );
    match tokio::time::timeout(Duration::from_millis(state.config.produce_timeout_ms), write).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            tracing::warn!(error = %error, source = %error_source(&error), "durable write failed");
            let text = match error.kind() {
                ErrorKind::Overloaded => "Carrier is overloaded; retry after the Retry-After delay",
                ErrorKind::Timeout => {
                    "The durable write did not complete in time; the message was not accepted"
                }
                _ => "The queue rejected the write; the message was not accepted",
            };
            return Err(ApiError::new(error.kind(), text));
        }
        Err(_elapsed) => {
            tracing::warn!(
                timeout_ms = state.config.produce_timeout_ms,
                "durable write timed out"
            );
            return Err(ApiError::new(
                ErrorKind::Timeout,
                "The durable write did not complete in time; the message was not accepted",
            ));
        }
    }
    tracing::debug!(message_id, logs = routes.len(), "message accepted");
    let logs: Vec<Value> = routes
        .iter()
        .map(|route| json!({ "ID": route.log_id, "DestinationID": route.destination_id }))
        .collect();
    Ok(Json(json!({
        "Meta": {
            "DataModel": meta.data_model,
            "EventType": meta.event_type,
            "Test": meta.test,
            "Message": { "ID": message_id },
            "Logs": logs,
            "Errors": [],
        }
    })))
}

fn error_source(error: &carrier_kafka::producer::ProduceError) -> String {
    std::error::Error::source(error)
        .map(|source| source.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_text(body: &str) -> String {
        parse_meta(body.as_bytes()).unwrap_err().text
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
