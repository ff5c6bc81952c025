//! What an inbound message asks for, whichever API it came by: the [`Submission`] each API
//! parses its request into, and the [`Accepted`] answer of the pipeline.
//!
//! A module of its own because three others need these types and none of them should need the
//! others: the APIs (`endpoint`, `fhir`) build a `Submission`, `accept` writes it, and
//! `idempotency` fingerprints it and stores the `Accepted` IDs of a key.

use carrier_proto::records_v1::Route;

use crate::error::ApiError;

/// What an API extracted from a request: enough to route it, and the body to carry.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    pub data_model: String,
    pub event_type: String,
    pub test: bool,
    /// Empty: every subscribed destination.
    pub destination_ids: Vec<String>,
}

/// A message the broker acknowledged.
pub struct Accepted {
    pub message_id: String,
    /// One log per destination, in routing order.
    pub routes: Vec<Route>,
    /// The answer of an earlier request with the same `Idempotency-Key` (nothing was written).
    pub replayed: bool,
}

/// The longest routing field a sender may name (a data model, an event type, a destination ID).
pub(crate) const MAX_ROUTING_FIELD_CHARS: usize = 64;

/// Checks a routing field a sender names (`field` is its name in errors): it is sent to
/// receivers as an HTTP header value and stored in the log store's text columns, so it must be
/// 1 to 64 printable ASCII characters (a NUL stopped the log store; a character a header cannot
/// carry failed every attempt).
pub(crate) fn check_routing_field(field: &str, value: &str) -> Result<(), ApiError> {
    let printable = value.chars().all(|c| c.is_ascii_graphic() || c == ' ');
    if printable && !value.is_empty() && value.len() <= MAX_ROUTING_FIELD_CHARS {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{field} must be 1 to {MAX_ROUTING_FIELD_CHARS} printable ASCII characters"
        )))
    }
}
