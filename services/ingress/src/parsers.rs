//! The request parsers of ingress, callable from outside the crate for the coverage-guided
//! fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer). Not an API: thin wrappers over what the
//! handlers call, in the order they call it, so that `mod api` stays private.
//!
//! What a caller may rely on is the property the fuzz targets and the proptests of
//! `api::parsers_fuzz` check: for any input a parser returns (never panics), and a refusal is a
//! 4xx ([`status_of`]).

use std::collections::HashMap;

use axum::extract::Query;
#[doc(hidden)]
pub use axum::http;
use axum::http::{HeaderMap, Uri};

use crate::api;
use crate::api::log_search::{Cursor, Limits, LogFilter, Order};
use crate::error::ApiError;

/// What a Data Model or FHIR request routes by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    pub data_model: String,
    pub event_type: String,
    pub test: bool,
    pub destination_ids: Vec<String>,
}

/// The HTTP status an error is answered with.
pub fn status_of(error: &ApiError) -> u16 {
    error.status().as_u16()
}

/// `POST /endpoint`: the body's `Meta`.
pub fn data_model_meta(body: &[u8]) -> Result<Routing, ApiError> {
    let meta = api::endpoint::parse_meta(body)?;
    Ok(Routing {
        data_model: meta.data_model,
        event_type: meta.event_type,
        test: meta.test,
        destination_ids: meta.destination_ids,
    })
}

/// `POST /fhir/R4/{path_type}`: the path's resource type, then the `Carrier-Test` header and the
/// body (`resourceType`, `Bundle.type`).
pub fn fhir_resource(path_type: &str, headers: &HeaderMap, body: &[u8]) -> Result<Routing, ApiError> {
    api::fhir::check_resource_type(path_type)?;
    let submission = api::fhir::parse(path_type, headers, body)?;
    Ok(Routing {
        data_model: submission.data_model,
        event_type: submission.event_type,
        test: submission.test,
        destination_ids: submission.destination_ids,
    })
}

/// The FHIR R4 resource types a path may name.
pub const FHIR_RESOURCE_TYPES: &[&str] = api::fhir::R4_RESOURCE_TYPES;

/// The name of the FHIR API's test header.
pub const FHIR_TEST_HEADER: &str = api::fhir::TEST_HEADER;

/// `POST /oauth/token`: the grant's parameters (form or JSON, by `Content-Type`), or the status
/// of the answer that refuses them.
pub fn token_request(headers: &HeaderMap, body: &[u8]) -> Result<HashMap<String, String>, u16> {
    api::oauth::parameters(headers, body).map_err(|response| response.status().as_u16())
}

/// The two routes that search logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogRoute {
    /// `GET /v1/logs`: newest first, pages of 1 to 500.
    Search,
    /// `POST /v1/logs/retry`: oldest first, pages of 1 to 1,000.
    RetryMatching,
}

impl LogRoute {
    fn order(self) -> Order {
        match self {
            LogRoute::Search => Order::NewestFirst,
            LogRoute::RetryMatching => Order::OldestFirst,
        }
    }

    /// The largest page the route serves.
    pub fn max_limit(self) -> i64 {
        match self {
            LogRoute::Search => 500,
            LogRoute::RetryMatching => 1_000,
        }
    }

    fn limits(self) -> Limits {
        match self {
            LogRoute::Search => Limits {
                default: 50,
                max: self.max_limit(),
            },
            LogRoute::RetryMatching => Limits {
                default: 100,
                max: self.max_limit(),
            },
        }
    }
}

/// A parsed log search: what the fuzz targets check of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    pub limit: i64,
    pub status: Option<&'static str>,
    /// The `cursor` parameter as given, when it decoded.
    pub cursor: Option<LogCursor>,
    /// `since` and `until`, in Unix microseconds.
    pub since_micros: Option<i64>,
    pub until_micros: Option<i64>,
}

/// A decoded page cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogCursor(Cursor);

impl LogCursor {
    /// `None` for anything the route did not hand out as a `next_cursor`.
    pub fn decode(text: &str, route: LogRoute) -> Option<LogCursor> {
        Cursor::decode(text, route.order()).map(LogCursor)
    }

    /// The `next_cursor` text of this position on `route`.
    pub fn encode(&self, route: LogRoute) -> String {
        self.0.encode(route.order())
    }
}

/// The query string of `uri` as `route` reads it (the handler's `Query` extractor, then
/// `LogFilter::parse`).
pub fn log_query(uri: &Uri, route: LogRoute) -> Result<LogQuery, ApiError> {
    let filter = LogFilter::parse(Query::try_from_uri(uri), route.order(), route.limits())?;
    Ok(LogQuery {
        limit: filter.limit,
        status: filter.status,
        cursor: filter.cursor.map(LogCursor),
        since_micros: filter.since.map(|at| at.timestamp_micros()),
        until_micros: filter.until.map(|at| at.timestamp_micros()),
    })
}

/// The `Idempotency-Key` header, if sent.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    api::idempotency::key(headers)
}

/// The longest accepted `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = api::idempotency::MAX_KEY_LEN;

/// Refuses a declared `Content-Length` over `limit` (413) before the body is read.
pub fn declared_length(headers: &HeaderMap, limit: usize) -> Result<(), ApiError> {
    api::body::check_declared_length(headers, limit)
}
