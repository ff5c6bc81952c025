//! Kafka as Carrier uses it.
//!
//! - [`Topics`]: the topic names, all under one configurable prefix.
//! - [`client`]: where every client's librdkafka configuration starts — brokers, TLS and SASL,
//!   then the raw `[kafka.client]` / `[kafka.producer]` / `[kafka.consumer]` properties,
//!   guarded; [`client::validate`] checks the `[kafka]` section at start-up.
//! - [`producer`]: durable producers (`acks=all`, idempotence on) and the mapping of produce
//!   failures to the statuses ingress answers with.
//! - [`consumer`]: a consumer-group member that hands each assigned partition to a processor and
//!   commits, per partition, only offsets below the oldest unfinished record
//!   (see `consumer/design.md`).
//! - [`doorbell`]: producers tell idle consumers they wrote (for Tansu, whose fetches always
//!   wait their whole time; off with Apache Kafka).
//! - [`admin`]: topic creation for tests and first start-up, and reading single records back.
//! - [`provisioning`]: the production topics (`carrierctl admin topics ensure|check`).
//! - [`partitioner`]: which partition a key lands in (the producers' own mapping).
//! - [`spans`]: the PRODUCER and CONSUMER spans of writes and reads (the W3C trace context
//!   travels in record headers: `producer` writes it, [`consumer::Record::trace_context`] reads it).
#![forbid(unsafe_code)]

pub mod admin;
pub mod client;
pub mod consumer;
pub mod doorbell;
pub mod partitioner;
pub mod producer;
pub mod provisioning;
pub mod spans;

pub use rdkafka;

use carrier_config::KafkaSettings;

/// The names of Carrier's topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// Accepted messages, keyed by source ID.
    pub inbound: String,
    /// One task per (message, destination), keyed by destination ID.
    pub deliveries: String,
    /// Log creation and attempt events, keyed by destination ID.
    pub log_events: String,
    /// Alerts for internal teams (JSON), keyed by destination ID.
    pub notifications: String,
}

impl Topics {
    pub fn new(settings: &KafkaSettings) -> Self {
        let prefix = &settings.topic_prefix;
        Self {
            inbound: format!("{prefix}inbound"),
            deliveries: format!("{prefix}deliveries"),
            log_events: format!("{prefix}log-events"),
            notifications: format!("{prefix}notifications"),
        }
    }
}

/// Records may carry bodies of up to 10 MiB plus envelope: every client allows this much.
pub const MAX_RECORD_BYTES: usize = 12 * 1024 * 1024;
