//! The path every inbound message takes, whichever API it came by (`endpoint` for the Data
//! Model API, `fhir` for the FHIR API):
//!
//! 1. [`authenticated_body`]: the source's token, then the body, refused with 413 as it streams
//!    past `max_body_bytes` (a declared `Content-Length` over it is refused before reading).
//! 2. The API parses its own request into a [`Submission`] (data model, event type, test flag,
//!    chosen destinations) and keeps the original bytes.
//! 3. [`submit`]: a slot under the adaptive limit on writes in progress (503 past it:
//!    `overload::adaptive`), the router's `Resolve` (cached), one log ID per destination, the record to
//!    `carrier.inbound` keyed by source, and an answer only once the broker acknowledged it
//!    with acks=all (a body over `inline_body_bytes` is stored in Postgres first and the record
//!    carries a reference: `carrier_store::bodies`). Produce failures become 502 / 503 / 504 ([`produce_error`]). With an
//!    `Idempotency-Key`, a key seen before answers with the original IDs instead (`idempotency`).

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use carrier_kafka::producer::ProduceError;
use carrier_proto::config_v1::ResolveRequest;
use carrier_proto::records_v1::{InboundMessage, Route};
use carrier_proto::ErrorKind;
use prost::Message;
use tracing::Instrument as _;
use uuid::Uuid;

use super::idempotency::{self, Claim};
use super::submission::{Accepted, Submission};
use crate::auth;
use crate::error::{Api, ApiError};
use crate::metrics::{metrics, NO_LABELS};
use crate::AppState;

/// The calling source (`source_id`) and the whole body, at most `max_body_bytes`.
pub async fn authenticated_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(String, Bytes), ApiError> {
    let source_id = auth::source(headers, &state.tokens)?.source_id;
    let limit = state.config.max_body_bytes;
    super::body::check_declared_length(headers, limit)?;
    let body = super::body::read_body(body, limit).await?;
    Ok((source_id, body))
}

/// Routes `submission` and writes it durably; `Ok` only after the broker's acknowledgement.
pub async fn submit(
    state: &AppState,
    headers: &HeaderMap,
    source_id: &str,
    submission: &Submission,
    body: Bytes,
) -> Result<Accepted, ApiError> {
    // Taken after the body arrived, so slow uploads do not count as a slow broker.
    let _write_slot = state.gate.write_slot()?;
    let Some(key) = idempotency::key(headers)? else {
        return write(state, headers, source_id, submission, body, None).await;
    };
    let store = &state.idempotency;
    let fingerprint = idempotency::fingerprint(submission, &body);
    let previous = match store.claim(source_id, &key, &fingerprint).await? {
        Claim::Replay(accepted) => {
            tracing::debug!(message_id = accepted.message_id, "idempotent request replayed");
            return Ok(Accepted {
                replayed: true,
                ..accepted
            });
        }
        Claim::Held { previous } => previous,
    };
    let claim = Some(HeldKey {
        store,
        key: &key,
        previous,
    });
    let result = write(state, headers, source_id, submission, body, claim).await;
    store.finish(source_id, &key, result.is_ok()).await;
    result
}

/// The message ID and one log per destination. A retry of a write that failed or was abandoned
/// (`previous`, under the same `Idempotency-Key`) keeps the earlier message ID and, for each
/// destination the earlier attempt routed to, its log ID: that write may have landed after all,
/// and a copy reaching a destination twice must carry one `webhook-id`. A destination subscribed
/// since gets a log of its own; one unsubscribed since is not routed to again.
fn ids_for(previous: Option<&Accepted>, destination_ids: &[String]) -> (String, Vec<Route>) {
    let message_id = previous.map_or_else(
        || Uuid::now_v7().to_string(),
        |previous| previous.message_id.clone(),
    );
    let routes = destination_ids
        .iter()
        .map(|destination_id| {
            let earlier = previous.and_then(|previous| {
                previous
                    .routes
                    .iter()
                    .find(|route| &route.destination_id == destination_id)
            });
            Route {
                log_id: earlier.map_or_else(|| Uuid::now_v7().to_string(), |route| route.log_id.clone()),
                destination_id: destination_id.clone(),
            }
        })
        .collect();
    (message_id, routes)
}

/// A claimed `Idempotency-Key`: the IDs are stored with it before the write.
struct HeldKey<'a> {
    store: &'a idempotency::Store,
    key: &'a str,
    /// The IDs of an earlier holder whose write failed or was abandoned.
    previous: Option<Accepted>,
}

async fn write(
    state: &AppState,
    headers: &HeaderMap,
    source_id: &str,
    submission: &Submission,
    body: Bytes,
    claim: Option<HeldKey<'_>>,
) -> Result<Accepted, ApiError> {
    let lookup_span = route_lookup_span(source_id, submission);
    let route = state
        .routes
        .resolve(
            &state.router,
            ResolveRequest {
                source_id: source_id.to_string(),
                data_model: submission.data_model.clone(),
                event_type: submission.event_type.clone(),
                destination_ids: submission.destination_ids.clone(),
            },
        )
        .instrument(lookup_span.clone())
        .await?;
    lookup_span.record("carrier.destinations", route.destination_ids.len());
    drop(lookup_span);

    let received_at_ms = chrono::Utc::now().timestamp_millis();
    let previous = claim.as_ref().and_then(|claim| claim.previous.as_ref());
    let (message_id, routes) = ids_for(previous, &route.destination_ids);
    let accepted = Accepted {
        message_id,
        routes,
        replayed: false,
    };
    if let Some(claim) = &claim {
        claim.store.record_ids(source_id, claim.key, &accepted).await?;
    }
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    // A body over `inline_body_bytes` goes to Postgres and the record carries a reference
    // (carrier_store::bodies explains why).
    let body_stored = body.len() > state.config.inline_body_bytes;
    if body_stored {
        carrier_store::bodies::store(&state.log_store, &accepted.message_id, &body)
            .await
            .map_err(|error| {
                tracing::warn!(%error, bytes = body.len(), "cannot store a large message body; refusing with 503");
                ApiError::new(
                    ErrorKind::Overloaded,
                    "The message body cannot be stored right now; retry after the Retry-After delay",
                )
            })?;
    }
    let record = InboundMessage {
        message_id: accepted.message_id.clone(),
        received_at_ms,
        organization_id: route.organization_id.clone(),
        source_id: source_id.to_string(),
        environment: route.environment.clone(),
        data_model: submission.data_model.clone(),
        event_type: submission.event_type.clone(),
        test: submission.test,
        content_type,
        body: if body_stored { Vec::new() } else { Vec::from(body) },
        routes: accepted.routes.clone(),
        body_stored,
    };
    let payload = record.encode_to_vec();
    drop(record);
    // The durable write's PRODUCER span; its context travels in the record's headers.
    let write_span = carrier_kafka::spans::send_span(&state.topics.inbound, Some(source_id));
    write_span.record("carrier.message_id", accepted.message_id.as_str());
    let write = carrier_kafka::producer::send(
        &state.producer,
        &state.topics.inbound,
        source_id,
        &payload,
        None,
        carrier_kafka::producer::WhenFull::Fail,
    )
    .instrument(write_span.clone());
    let written = tokio::time::timeout(Duration::from_millis(state.config.produce_timeout_ms), write).await;
    if let Ok(result) = &written {
        carrier_kafka::spans::record_sent(&write_span, result);
    } else {
        write_span.record("error.type", "timeout");
        write_span.record("otel.status_code", "error");
    }
    drop(write_span);
    match written {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => return Err(produce_error(&error)),
        Err(_elapsed) => {
            tracing::warn!(
                timeout_ms = state.config.produce_timeout_ms,
                "durable write timed out"
            );
            return Err(ApiError::new(ErrorKind::Timeout, TIMEOUT_TEXT));
        }
    }
    tracing::debug!(
        message_id = accepted.message_id,
        logs = accepted.routes.len(),
        "message accepted"
    );
    Ok(accepted)
}

/// The span of a message's route lookup (the router's `Resolve`, or ingress's cache of it).
fn route_lookup_span(source_id: &str, submission: &Submission) -> tracing::Span {
    if !carrier_telemetry::trace::enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "route lookup",
        carrier.source_id = source_id,
        carrier.data_model = submission.data_model.as_str(),
        carrier.event_type = submission.event_type.as_str(),
        carrier.route.cached = tracing::field::Empty,
        carrier.destinations = tracing::field::Empty,
    )
}

/// Marks a replayed answer (`Idempotent-Replayed: true`).
pub fn mark_replayed(accepted: &Accepted, response: &mut axum::response::Response) {
    if accepted.replayed {
        response.headers_mut().insert(
            idempotency::REPLAYED_HEADER,
            axum::http::HeaderValue::from_static("true"),
        );
    }
}

const TIMEOUT_TEXT: &str = "The durable write did not complete in time; the message was not accepted";

/// The answer to a failed durable write: 503 (queue full, with `Retry-After`), 504 (no
/// acknowledgement in time) or 502 (the queue rejected or dropped it).
pub fn produce_error(error: &ProduceError) -> ApiError {
    let source = std::error::Error::source(error)
        .map(|source| source.to_string())
        .unwrap_or_default();
    tracing::warn!(%error, %source, "durable write failed");
    let text = match error.kind() {
        ErrorKind::Overloaded => {
            "Carrier is overloaded (producer queue full); retry after the Retry-After delay"
        }
        ErrorKind::Timeout => TIMEOUT_TEXT,
        _ => "The queue rejected the write; the message was not accepted",
    };
    ApiError::new(error.kind(), text)
}

/// Counts one inbound request by API and status; times the accepted ones.
pub fn record_outcome<T>(api: Api, started: Instant, result: &Result<T, ApiError>) {
    let status = match result {
        Ok(_) => 200,
        Err(error) => error.kind.http_status(),
    };
    let api = match api {
        Api::DataModel => "data_model",
        Api::Fhir => "fhir",
    };
    metrics()
        .requests
        .with_label_values(&[api, status.to_string().as_str()])
        .inc();
    if result.is_ok() {
        metrics()
            .durable_write_seconds
            .with_label_values(NO_LABELS)
            .observe(started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(destination_id: &str, log_id: &str) -> Route {
        Route {
            destination_id: destination_id.into(),
            log_id: log_id.into(),
        }
    }

    #[test]
    fn a_takeover_keeps_the_message_id_and_each_earlier_destinations_log_id() {
        let previous = Accepted {
            message_id: "m1".into(),
            routes: vec![route("a", "log-a"), route("b", "log-b")],
            replayed: false,
        };
        // Since the failed attempt, "b" was unsubscribed and "c" subscribed.
        let (message_id, routes) = ids_for(Some(&previous), &["a".into(), "c".into()]);
        assert_eq!(message_id, "m1");
        assert_eq!(
            routes[0],
            route("a", "log-a"),
            "the same webhook-id if the first copy landed"
        );
        assert_eq!(routes[1].destination_id, "c");
        assert!(
            !["log-a", "log-b"].contains(&routes[1].log_id.as_str()),
            "a log of its own"
        );
        assert_eq!(routes.len(), 2);
    }

    #[test]
    fn a_first_attempt_gets_new_ids() {
        let (first, routes) = ids_for(None, &["a".into(), "b".into()]);
        let (second, _) = ids_for(None, &["a".into()]);
        assert_ne!(first, second);
        assert_ne!(routes[0].log_id, routes[1].log_id);
    }
}
