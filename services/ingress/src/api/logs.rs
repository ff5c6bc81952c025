//! The log store's read routes: `GET /v1/logs/{id}` (one log with its attempts) and
//! `GET /v1/logs` (a search, newest first, cursor-paginated; the filters are in `log_search`).
//! The operator sees every log; a source sees only its organization's logs of its own
//! environment (another's log answers 404, so a log's existence is not revealed across
//! organizations or environments, and a search never returns it).

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use carrier_store::sqlx::postgres::PgRow;
use carrier_store::sqlx::{self, Row};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::log_access::{caller_scope, visible_log};
use super::log_search::{Limits, LogFilter, Order};
use crate::error::ApiError;
use crate::AppState;

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A log: one message's delivery to one destination, as every logs route answers it.
#[derive(Serialize, ToSchema)]
pub struct Log {
    id: String,
    message_id: String,
    destination_id: String,
    source_id: String,
    organization_id: String,
    data_model: String,
    event_type: String,
    environment: String,
    test: bool,
    /// `queued`, `delivered`, `failed` or `cancelled`.
    #[schema(pattern = "^(queued|delivered|failed|cancelled)$")]
    status: String,
    attempt_count: i32,
    #[schema(format = DateTime)]
    received_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

impl Log {
    fn of_row(row: &PgRow) -> Log {
        Log {
            id: row.get::<Uuid, _>("id").to_string(),
            message_id: row.get::<Uuid, _>("message_id").to_string(),
            destination_id: row.get::<Uuid, _>("destination_id").to_string(),
            source_id: row.get::<Uuid, _>("source_id").to_string(),
            organization_id: row.get::<Uuid, _>("organization_id").to_string(),
            data_model: row.get("data_model"),
            event_type: row.get("event_type"),
            environment: row.get("environment"),
            test: row.get("test"),
            status: row.get("status"),
            attempt_count: row.get("attempts"),
            received_at: rfc3339(row.get("received_at")),
            updated_at: rfc3339(row.get("updated_at")),
        }
    }
}

/// One log with its delivery attempts, oldest first.
#[derive(Serialize, ToSchema)]
pub struct LogWithAttempts {
    #[serde(flatten)]
    log: Log,
    attempts: Vec<Attempt>,
}

/// One delivery attempt of a log.
#[derive(Serialize, ToSchema)]
pub struct Attempt {
    /// 1 for the first attempt.
    number: i32,
    #[schema(format = DateTime)]
    started_at: String,
    duration_ms: i32,
    /// `success` or `failure`.
    #[schema(pattern = "^(success|failure)$")]
    outcome: String,
    /// The receiver's HTTP status; `null` when none came back.
    status_code: Option<i32>,
    error: Option<String>,
    /// The start of the receiver's answer.
    response_excerpt: Option<String>,
}

impl Attempt {
    fn of_row(row: &PgRow) -> Attempt {
        Attempt {
            number: row.get("number"),
            started_at: rfc3339(row.get("started_at")),
            duration_ms: row.get("duration_ms"),
            outcome: row.get("outcome"),
            status_code: row.get("status_code"),
            error: row.get("error"),
            response_excerpt: row.get("response_excerpt"),
        }
    }
}

/// One page of a search, newest first.
#[derive(Serialize, ToSchema)]
pub struct LogPage {
    logs: Vec<Log>,
    /// The `cursor` of the next page; `null` on the last page.
    next_cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/logs/{id}",
    operation_id = "get_log",
    tag = "Logs",
    params(("id" = String, Path, description = "Log ID")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The log with its attempts", body = LogWithAttempts),
        (status = 401, description = "Missing, invalid or expired token", body = crate::error::DataModelError),
        (status = 404, description = "Unknown route, data model, destination or resource", body = crate::error::DataModelError),
        crate::openapi::EveryRouteErrors,
    )
)]
pub async fn get_one(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<LogWithAttempts>, ApiError> {
    let (log_id, row) = visible_log(&state, &headers, &id).await?;
    let attempts = sqlx::query("SELECT * FROM attempts WHERE log_id = $1 ORDER BY number")
        .bind(log_id)
        .fetch_all(&state.log_store)
        .await?;
    Ok(Json(LogWithAttempts {
        log: Log::of_row(&row),
        attempts: attempts.iter().map(Attempt::of_row).collect(),
    }))
}

/// Page sizes of `GET /v1/logs`.
const SEARCH_LIMITS: Limits = Limits {
    default: 50,
    max: 500,
};

#[utoipa::path(
    get,
    path = "/v1/logs",
    operation_id = "search_logs",
    tag = "Logs",
    params(
        ("organization_id" = Option<String>, Query, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", description = "Only this organization's logs (a source's token sees only its own organization's logs of its own environment anyway)"),
        ("destination_id" = Option<String>, Query, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", description = "Only logs of this destination"),
        ("source_id" = Option<String>, Query, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", description = "Only logs of messages from this source"),
        ("status" = Option<String>, Query, pattern = "^(queued|delivered|failed|cancelled)$", description = "queued, delivered, failed or cancelled"),
        ("data_model" = Option<String>, Query, pattern = "\\S", description = "Only this data model (a FHIR resource type for the FHIR API)"),
        ("test" = Option<bool>, Query, description = "true: only test messages; false: only real ones"),
        ("since" = Option<String>, Query, format = DateTime, description = "Received at or after this time (RFC 3339)"),
        ("until" = Option<String>, Query, format = DateTime, description = "Received before this time (RFC 3339)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Logs per page, 1 to 500 (default 50)"),
        ("cursor" = Option<String>, Query, description = "The next_cursor of the previous page"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of matching logs, newest first, and next_cursor (null on the last page)", body = LogPage),
        (status = 400, description = "A query parameter is unknown or malformed (the text names it)", body = crate::error::DataModelError),
        (status = 401, description = "Missing, invalid or expired token", body = crate::error::DataModelError),
        crate::openapi::EveryRouteErrors,
    )
)]
pub async fn search(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<LogPage>, ApiError> {
    let scope = caller_scope(&state, &headers)?;
    let filter = LogFilter::parse(query, Order::NewestFirst, SEARCH_LIMITS)?;
    let (rows, next) = filter
        .page(&state.log_store, scope.as_ref(), Order::NewestFirst)
        .await?;
    Ok(Json(LogPage {
        logs: rows.iter().map(Log::of_row).collect(),
        next_cursor: next.map(|cursor| cursor.encode(Order::NewestFirst)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::router::assert_matches_schema;

    fn log() -> Log {
        Log {
            id: Uuid::now_v7().to_string(),
            message_id: Uuid::now_v7().to_string(),
            destination_id: Uuid::now_v7().to_string(),
            source_id: Uuid::now_v7().to_string(),
            organization_id: Uuid::now_v7().to_string(),
            data_model: "Results".into(),
            event_type: "New".into(),
            environment: "production".into(),
            test: false,
            status: "failed".into(),
            attempt_count: 2,
            received_at: rfc3339(Utc::now()),
            updated_at: rfc3339(Utc::now()),
        }
    }

    /// What the logs routes send is what the document says they send.
    #[test]
    fn every_logs_answer_matches_its_documented_schema() {
        let attempts = vec![
            Attempt {
                number: 1,
                started_at: rfc3339(Utc::now()),
                duration_ms: 12,
                outcome: "failure".into(),
                status_code: None,
                error: Some("connection refused".into()),
                response_excerpt: None,
            },
            Attempt {
                number: 2,
                started_at: rfc3339(Utc::now()),
                duration_ms: 30,
                outcome: "success".into(),
                status_code: Some(200),
                error: None,
                response_excerpt: Some("ok".into()),
            },
        ];
        assert_matches_schema("LogWithAttempts", &LogWithAttempts { log: log(), attempts });
        for next_cursor in [None, Some("bjE3.x".to_string())] {
            let page = LogPage {
                logs: vec![log(), log()],
                next_cursor,
            };
            assert_matches_schema("LogPage", &page);
        }
    }
}
