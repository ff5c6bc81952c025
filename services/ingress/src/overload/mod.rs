//! Overload protection: how much of ingress one client, one source or the whole crowd can hold.
//!
//! - `connections` serves HTTP on the listener: at most `max_connections` open at once (past it
//!   new connections wait in the kernel's backlog), and a connection that does not send a
//!   request's headers within `header_read_timeout_ms` is closed. The same timer closes a
//!   keep-alive connection that stays idle that long.
//! - `in_flight` is the first layer every public request meets: at most `max_in_flight`
//!   requests at once per replica and `max_in_flight_per_source` per source (by its access
//!   token); past either, 503 with `Retry-After` at once, before anything is read or asked of
//!   Redis, the router or the broker. Each admitted request must have its whole body within
//!   `body_read_timeout_ms` (408 otherwise) and its answer within `request_timeout_ms` (504).
//!   Manual retries, which read the broker, are capped on their own (`max_retries_in_flight`).
//! - `adaptive` caps the messages being written (router, log store, the broker's
//!   acknowledgement) at a limit that follows how fast the broker acknowledges, so an accepted
//!   message waits about `admission_target_latency_ms` however slow the broker is today; past
//!   it, 503 with `Retry-After` (its module says why a fixed cap cannot do this).
//!
//! Why shed instead of queueing: a queued request still holds its connection and its memory,
//! and a sender whose request waits behind thousands of others times out anyway and sends it
//! again. A 503 with `Retry-After` is an answer the sender can act on now (SPEC: "overloaded,
//! with Retry-After"); nothing was accepted, so nothing is lost.

pub(crate) mod adaptive;
pub(crate) mod connections;
pub(crate) mod in_flight;

use carrier_config::ConfigError;
use serde::{Deserialize, Serialize};

/// The `[limits]` section of ingress (`CARRIER_LIMITS__*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LimitSettings {
    /// Connections open at once per replica; past it, new connections wait to be accepted.
    pub max_connections: usize,
    /// Time a connection has to send a request's headers (also the longest idle keep-alive).
    pub header_read_timeout_ms: u64,
    /// Time an admitted request has to send its whole body: 408 past it. 60 s carries the
    /// largest body (10 MiB) at 1.4 Mbit/s.
    pub body_read_timeout_ms: u64,
    /// Time an admitted request has to be answered, body included: 504 past it. Longer than the
    /// body timeout plus `produce_timeout_ms`, so those answer first with their own status.
    pub request_timeout_ms: u64,
    /// Requests in progress at once per replica, every route but the probes: 503 past it.
    pub max_in_flight: usize,
    /// Requests in progress at once per source (by its access token), so one busy or slow
    /// sender cannot take every slot: 503 past it.
    pub max_in_flight_per_source: usize,
    /// The mean time a message's write (route lookup, large-body store, the broker's
    /// acknowledgement) should take; the adaptive limit on writes in progress follows the broker
    /// to keep it there (`overload::adaptive`), between 16 and `max_in_flight`. 250 ms keeps the
    /// p99 of an overloaded Tansu under 1 s. 0 turns the adaptive limit off (fixed caps only).
    pub admission_target_latency_ms: u64,
    /// Manual retry requests (`POST /v1/logs/{id}/retry`, `POST /v1/logs/retry`) in progress at
    /// once per replica; each reads the broker. 503 past it.
    pub max_retries_in_flight: usize,
    /// How long one bulk retry keeps requeueing before it answers with what it did and a
    /// `next_cursor` for the rest.
    pub bulk_retry_budget_ms: u64,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 60_000,
            request_timeout_ms: 90_000,
            max_in_flight: 2_048,
            max_in_flight_per_source: 256,
            admission_target_latency_ms: 250,
            max_retries_in_flight: 8,
            bulk_retry_budget_ms: 20_000,
        }
    }
}

impl LimitSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("limits.max_connections", self.max_connections as u64),
            ("limits.header_read_timeout_ms", self.header_read_timeout_ms),
            ("limits.body_read_timeout_ms", self.body_read_timeout_ms),
            ("limits.request_timeout_ms", self.request_timeout_ms),
            ("limits.max_in_flight", self.max_in_flight as u64),
            (
                "limits.max_in_flight_per_source",
                self.max_in_flight_per_source as u64,
            ),
            ("limits.max_retries_in_flight", self.max_retries_in_flight as u64),
            ("limits.bulk_retry_budget_ms", self.bulk_retry_budget_ms),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(ConfigError::Invalid(format!("{field} must be positive")));
            }
        }
        if self.admission_target_latency_ms >= self.request_timeout_ms {
            return Err(ConfigError::Invalid(
                "limits.admission_target_latency_ms must be shorter than limits.request_timeout_ms \
                 (0 turns the adaptive limit off)"
                    .into(),
            ));
        }
        if self.bulk_retry_budget_ms >= self.request_timeout_ms {
            return Err(ConfigError::Invalid(
                "limits.bulk_retry_budget_ms must be shorter than limits.request_timeout_ms".into(),
            ));
        }
        Ok(())
    }
}
