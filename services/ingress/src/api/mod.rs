//! The HTTP routes of ingress, one module per area, registered and documented from the one list
//! in `router`. `endpoint` (Data Model API) and `fhir` (FHIR API) parse their own requests into
//! a `submission` and share the pipeline of `accept`.
//!
//! Imports point one way: `router` → the handler modules (`oauth`, `endpoint`, `fhir`, `logs`,
//! `retry`, `admin`, `queues`) → what they share (`accept`, `idempotency`, `submission`,
//! `log_access`, `log_search`, `body`) → the crate's `error`, `openapi`, `auth`. No handler
//! module uses another.

mod accept;
pub(crate) mod admin;
pub(crate) mod body;
pub(crate) mod endpoint;
pub(crate) mod fhir;
pub(crate) mod idempotency;
pub(crate) mod log_access;
pub(crate) mod log_search;
pub(crate) mod logs;
pub(crate) mod oauth;
#[cfg(test)]
mod parsers_fuzz;
pub(crate) mod queues;
pub(crate) mod retry;
mod router;
pub(crate) mod submission;

pub(crate) use router::router;
