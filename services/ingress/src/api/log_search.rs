//! The filters of a log search, shared by `GET /v1/logs` (newest first) and
//! `POST /v1/logs/retry` (oldest first): parsing the query string, the keyset cursor, and the
//! one SQL query that reads a page.
//!
//! Pages are keyset ranges over `(received_at, id)`, never `OFFSET`s: a page costs the same at
//! any depth, and logs written meanwhile neither repeat nor shift later pages. The cursor is
//! opaque to callers (base64url of the last log's position and the page order), so it can change
//! without breaking them. Every filter column has an index ending in `(received_at, id)`
//! (migration `0008_log_search.sql`); `status` and `test` come from fixed sets and are written
//! into the SQL as literals, so Postgres can use the partial indexes for them even when it
//! reuses a generic plan.

use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use carrier_store::sqlx::postgres::PgRow;
use carrier_store::sqlx::{self, PgPool, Postgres, QueryBuilder, Row};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::ApiError;

/// The order of a page, and so the direction a cursor continues in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// `GET /v1/logs`: newest first.
    NewestFirst,
    /// `POST /v1/logs/retry`: oldest first, so each destination's logs are retried in the order
    /// they were received.
    OldestFirst,
}

impl Order {
    fn cursor_tag(self) -> char {
        match self {
            Order::NewestFirst => 'n',
            Order::OldestFirst => 'o',
        }
    }
}

/// A position in a page order: the last log a page returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub received_at: DateTime<Utc>,
    pub id: Uuid,
}

impl Cursor {
    pub fn of_row(row: &PgRow) -> Cursor {
        Cursor {
            received_at: row.get("received_at"),
            id: row.get("id"),
        }
    }

    pub fn encode(&self, order: Order) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "{}{}.{}",
            order.cursor_tag(),
            self.received_at.timestamp_micros(),
            self.id
        ))
    }

    /// `None` for anything [`Cursor::encode`] did not make for `order`.
    pub fn decode(text: &str, order: Order) -> Option<Cursor> {
        let decoded = String::from_utf8(URL_SAFE_NO_PAD.decode(text).ok()?).ok()?;
        let rest = decoded.strip_prefix(order.cursor_tag())?;
        let (micros, id) = rest.split_once('.')?;
        Some(Cursor {
            received_at: DateTime::from_timestamp_micros(micros.parse().ok()?)?,
            id: Uuid::parse_str(id).ok()?,
        })
    }
}

/// The statuses a log can have, as the API and the store spell them.
pub(crate) const STATUSES: [&str; 4] = ["queued", "delivered", "failed", "cancelled"];

const PARAMETERS: &str =
    "organization_id, destination_id, source_id, status, data_model, test, since, until, limit, cursor";

/// What a source's caller may see of the log store (the operator sees everything): its
/// organization's logs of its own environment, so a staging source can neither read nor retry
/// production deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub organization_id: Uuid,
    pub environment: String,
}

impl Scope {
    /// Whether the log in `row` is within the scope.
    pub fn covers(&self, row: &PgRow) -> bool {
        row.get::<Uuid, _>("organization_id") == self.organization_id
            && row.get::<String, _>("environment") == self.environment
    }
}

/// A search's filters, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LogFilter {
    pub organization_id: Option<Uuid>,
    pub destination_id: Option<Uuid>,
    pub source_id: Option<Uuid>,
    /// One of [`STATUSES`].
    pub status: Option<&'static str>,
    pub data_model: Option<String>,
    pub test: Option<bool>,
    /// Received at or after.
    pub since: Option<DateTime<Utc>>,
    /// Received before.
    pub until: Option<DateTime<Utc>>,
    pub limit: i64,
    /// Continue after this position.
    pub cursor: Option<Cursor>,
}

/// The page size rules of a route.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub default: i64,
    pub max: i64,
}

fn uuid_parameter(name: &str, value: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(value)
        .map_err(|_| ApiError::bad_request(format!("Query parameter {name} must be a UUID, not '{value}'")))
}

fn time_parameter(name: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(value)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::bad_request(format!(
                "Query parameter {name} must be an RFC 3339 time such as 2026-11-26T10:00:00Z, not '{value}'"
            ))
        })
}

impl LogFilter {
    /// Parses a query string's `(name, value)` pairs. An unknown name, a repeated one, or a bad
    /// value is a 400 naming the parameter.
    pub fn parse(
        query: Result<Query<Vec<(String, String)>>, QueryRejection>,
        order: Order,
        limits: Limits,
    ) -> Result<LogFilter, ApiError> {
        let Query(pairs) = query.map_err(|rejection| {
            ApiError::bad_request(format!(
                "The query string could not be read: {}",
                rejection.body_text()
            ))
        })?;
        let mut filter = LogFilter {
            limit: limits.default,
            ..LogFilter::default()
        };
        let mut seen = std::collections::HashSet::new();
        for (name, value) in &pairs {
            if !seen.insert(name.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "Query parameter {name} is given more than once"
                )));
            }
            match name.as_str() {
                "organization_id" => filter.organization_id = Some(uuid_parameter(name, value)?),
                "destination_id" => filter.destination_id = Some(uuid_parameter(name, value)?),
                "source_id" => filter.source_id = Some(uuid_parameter(name, value)?),
                "status" => {
                    let status = STATUSES
                        .iter()
                        .find(|status| **status == value.as_str())
                        .ok_or_else(|| {
                            ApiError::bad_request(format!(
                                "Query parameter status must be one of {}, not '{value}'",
                                STATUSES.join(", ")
                            ))
                        })?;
                    filter.status = Some(*status);
                }
                "data_model" => {
                    if value.trim().is_empty() {
                        return Err(ApiError::bad_request(
                            "Query parameter data_model must not be empty",
                        ));
                    }
                    filter.data_model = Some(value.clone());
                }
                "test" => {
                    filter.test = Some(match value.as_str() {
                        "true" => true,
                        "false" => false,
                        _ => {
                            return Err(ApiError::bad_request(format!(
                                "Query parameter test must be true or false, not '{value}'"
                            )))
                        }
                    })
                }
                "since" => filter.since = Some(time_parameter(name, value)?),
                "until" => filter.until = Some(time_parameter(name, value)?),
                "limit" => {
                    filter.limit = value
                        .parse::<i64>()
                        .ok()
                        .filter(|limit| (1..=limits.max).contains(limit))
                        .ok_or_else(|| {
                            ApiError::bad_request(format!(
                                "Query parameter limit must be an integer from 1 to {}, not '{value}'",
                                limits.max
                            ))
                        })?
                }
                "cursor" => {
                    filter.cursor = Some(Cursor::decode(value, order).ok_or_else(|| {
                        ApiError::bad_request(
                            "Query parameter cursor is not a next_cursor this route returned",
                        )
                    })?)
                }
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "Unknown query parameter {name} (expected one of {PARAMETERS})"
                    )))
                }
            }
        }
        if let (Some(since), Some(until)) = (filter.since, filter.until) {
            if since >= until {
                return Err(ApiError::bad_request(
                    "Query parameter since must be earlier than until",
                ));
            }
        }
        Ok(filter)
    }

    /// One page of matching logs in `order`, and the cursor of the next page (`None` on the
    /// last). `scope` restricts the search to what a source's caller may see.
    pub async fn page(
        &self,
        pool: &PgPool,
        scope: Option<&Scope>,
        order: Order,
    ) -> Result<(Vec<PgRow>, Option<Cursor>), sqlx::Error> {
        let mut query = self.query(scope, order);
        let mut rows = query.build().fetch_all(pool).await?;
        let more = rows.len() as i64 > self.limit;
        rows.truncate(self.limit as usize);
        let next = if more {
            rows.last().map(Cursor::of_row)
        } else {
            None
        };
        Ok((rows, next))
    }

    /// The SQL of [`LogFilter::page`] (one more row than the limit: it tells whether a next
    /// page exists).
    fn query(&self, scope: Option<&Scope>, order: Order) -> QueryBuilder<'static, Postgres> {
        let mut query = QueryBuilder::new("SELECT * FROM logs WHERE TRUE");
        if let Some(scope) = scope {
            query
                .push(" AND environment = ")
                .push_bind(scope.environment.clone());
        }
        for (column, value) in [
            ("organization_id", scope.map(|scope| scope.organization_id)),
            ("organization_id", self.organization_id),
            ("destination_id", self.destination_id),
            ("source_id", self.source_id),
        ] {
            if let Some(value) = value {
                query.push(format_args!(" AND {column} = ")).push_bind(value);
            }
        }
        if let Some(status) = self.status {
            // A literal from STATUSES (never caller text), so partial indexes apply.
            query.push(format_args!(" AND status = '{status}'"));
        }
        if let Some(data_model) = &self.data_model {
            query.push(" AND data_model = ").push_bind(data_model.clone());
        }
        match self.test {
            Some(true) => query.push(" AND test"),
            Some(false) => query.push(" AND NOT test"),
            None => &mut query,
        };
        if let Some(since) = self.since {
            query.push(" AND received_at >= ").push_bind(since);
        }
        if let Some(until) = self.until {
            query.push(" AND received_at < ").push_bind(until);
        }
        let (after, direction) = match order {
            Order::NewestFirst => ("<", "DESC"),
            Order::OldestFirst => (">", "ASC"),
        };
        if let Some(cursor) = self.cursor {
            query
                .push(format_args!(" AND (received_at, id) {after} ("))
                .push_bind(cursor.received_at)
                .push(", ")
                .push_bind(cursor.id)
                .push(")");
        }
        query
            .push(format_args!(
                " ORDER BY received_at {direction}, id {direction} LIMIT "
            ))
            .push_bind(self.limit + 1);
        query
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str, order: Order) -> Result<LogFilter, ApiError> {
        let uri: axum::http::Uri = format!("/v1/logs?{query}").parse().unwrap();
        LogFilter::parse(
            Query::try_from_uri(&uri),
            order,
            Limits {
                default: 50,
                max: 500,
            },
        )
    }

    #[test]
    fn filters_parse_and_bad_values_name_their_parameter() {
        let filter = parse(
            "destination_id=0192f1d4-0000-7000-8000-000000000001&status=failed&data_model=Results&test=false\
             &since=2026-11-01T00:00:00Z&until=2026-11-02T00:00:00%2B01:00&limit=7",
            Order::NewestFirst,
        )
        .unwrap();
        assert_eq!(filter.status, Some("failed"));
        assert_eq!(filter.test, Some(false));
        assert_eq!(filter.limit, 7);
        assert_eq!(filter.data_model.as_deref(), Some("Results"));
        assert_eq!(
            filter.until.unwrap().to_rfc3339(),
            "2026-11-01T23:00:00+00:00",
            "offsets are honoured"
        );
        assert_eq!(parse("", Order::NewestFirst).unwrap().limit, 50);

        for (query, text) in [
            ("destination_id=42", "Query parameter destination_id must be a UUID, not '42'"),
            ("source_id=x", "Query parameter source_id must be a UUID, not 'x'"),
            (
                "status=lost",
                "Query parameter status must be one of queued, delivered, failed, cancelled, not 'lost'",
            ),
            ("test=yes", "Query parameter test must be true or false, not 'yes'"),
            (
                "since=yesterday",
                "Query parameter since must be an RFC 3339 time such as 2026-11-26T10:00:00Z, not 'yesterday'",
            ),
            ("limit=0", "Query parameter limit must be an integer from 1 to 500, not '0'"),
            ("limit=501", "Query parameter limit must be an integer from 1 to 500, not '501'"),
            ("cursor=abc", "Query parameter cursor is not a next_cursor this route returned"),
            ("data_model=", "Query parameter data_model must not be empty"),
            ("status=failed&status=queued", "Query parameter status is given more than once"),
            (
                "since=2026-11-02T00:00:00Z&until=2026-11-01T00:00:00Z",
                "Query parameter since must be earlier than until",
            ),
        ] {
            let error = parse(query, Order::NewestFirst).unwrap_err();
            assert_eq!(error.status(), 400, "{query}");
            assert_eq!(error.text, text, "{query}");
        }
        let error = parse("destination=x", Order::NewestFirst).unwrap_err();
        assert!(
            error
                .text
                .starts_with("Unknown query parameter destination (expected one of"),
            "{}",
            error.text
        );
    }

    #[test]
    fn a_cursor_round_trips_and_only_continues_its_own_order() {
        let cursor = Cursor {
            received_at: DateTime::from_timestamp_micros(1_764_150_000_123_456).unwrap(),
            id: Uuid::now_v7(),
        };
        let text = cursor.encode(Order::NewestFirst);
        assert_eq!(Cursor::decode(&text, Order::NewestFirst), Some(cursor));
        assert_eq!(Cursor::decode(&text, Order::OldestFirst), None);
        let filter = parse(&format!("cursor={text}"), Order::NewestFirst).unwrap();
        assert_eq!(filter.cursor, Some(cursor));
        assert!(parse(&format!("cursor={text}"), Order::OldestFirst).is_err());
    }

    #[test]
    fn the_query_restricts_a_source_to_its_organization_and_environment_and_inlines_only_fixed_values() {
        let filter = LogFilter {
            status: Some("failed"),
            test: Some(true),
            data_model: Some("x' OR TRUE --".into()),
            limit: 10,
            ..LogFilter::default()
        };
        let scope = Scope {
            organization_id: Uuid::now_v7(),
            environment: "staging".into(),
        };
        let sql = filter.query(Some(&scope), Order::OldestFirst).sql().to_string();
        assert_eq!(
            sql,
            "SELECT * FROM logs WHERE TRUE AND environment = $1 AND organization_id = $2 \
             AND status = 'failed' AND data_model = $3 AND test ORDER BY received_at ASC, id ASC LIMIT $4"
        );
    }
}
