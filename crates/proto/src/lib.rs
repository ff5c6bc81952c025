//! Carrier's wire types: the gRPC services between the services and the protobuf records they
//! write to Kafka. Generated at build time from `proto/`; nothing generated is committed.
#![forbid(unsafe_code)]

pub mod config {
    pub mod v1 {
        tonic::include_proto!("carrier.config.v1");
    }
}

pub mod delivery {
    pub mod v1 {
        tonic::include_proto!("carrier.delivery.v1");
    }
}

pub mod records {
    pub mod v1 {
        tonic::include_proto!("carrier.records.v1");
    }
}

pub mod error;

pub use config::v1 as config_v1;
pub use delivery::v1 as delivery_v1;
pub use error::ErrorKind;
pub use records::v1 as records_v1;

impl records_v1::LogEvent {
    /// The creation of a route's log, `queued`, at the message's arrival: how the notifier turns
    /// an inbound message into its logs. No task position yet (delivery's events carry it).
    pub fn queued(message: &records_v1::InboundMessageHeader, route: &records_v1::Route) -> Self {
        Self {
            log_id: route.log_id.clone(),
            message_id: message.message_id.clone(),
            destination_id: route.destination_id.clone(),
            organization_id: message.organization_id.clone(),
            source_id: message.source_id.clone(),
            data_model: message.data_model.clone(),
            event_type: message.event_type.clone(),
            test: message.test,
            received_at_ms: message.received_at_ms,
            status: records_v1::LogStatus::Queued as i32,
            attempt: None,
            at_ms: message.received_at_ms,
            environment: message.environment.clone(),
            sequence: 0,
            task_partition: None,
            task_offset: None,
        }
    }

    /// An event about the log of `task`, with `status`, and no attempt, sequence or task
    /// position yet (the writer sets what applies): how delivery's events (attempts, skips)
    /// start, so a log's identifying fields are copied in one place.
    pub fn for_task(
        task: &records_v1::DeliveryTask,
        environment: &str,
        status: records_v1::LogStatus,
        at_ms: i64,
    ) -> Self {
        Self {
            log_id: task.log_id.clone(),
            message_id: task.message_id.clone(),
            destination_id: task.destination_id.clone(),
            organization_id: task.organization_id.clone(),
            source_id: task.source_id.clone(),
            data_model: task.data_model.clone(),
            event_type: task.event_type.clone(),
            test: task.test,
            received_at_ms: task.received_at_ms,
            status: status as i32,
            attempt: None,
            at_ms,
            environment: environment.to_string(),
            sequence: 0,
            task_partition: None,
            task_offset: None,
        }
    }
}

impl records_v1::LogStatus {
    /// The name used in the REST API and the log store.
    pub fn as_api_str(self) -> &'static str {
        match self {
            records_v1::LogStatus::Unspecified | records_v1::LogStatus::Queued => "queued",
            records_v1::LogStatus::Delivered => "delivered",
            records_v1::LogStatus::Failed => "failed",
            records_v1::LogStatus::Cancelled => "cancelled",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::records_v1::{InboundMessage, InboundMessageHeader, Route};
    use prost::Message;

    /// An `InboundMessage` read as its header keeps every field but the body: re-encoded, it is
    /// the message without its body, byte for byte. Every field is set here; a field added to
    /// `InboundMessage` and not to the header fails this once it is set below.
    #[test]
    fn the_header_is_the_message_without_its_body() {
        let message = InboundMessage {
            message_id: "m-1".into(),
            received_at_ms: 1_700_000_000_000,
            organization_id: "o-1".into(),
            source_id: "s-1".into(),
            environment: "production".into(),
            data_model: "Results".into(),
            event_type: "New".into(),
            test: true,
            content_type: "application/json".into(),
            body: vec![7; 512 * 1024],
            routes: vec![Route {
                log_id: "l-1".into(),
                destination_id: "d-1".into(),
            }],
            body_stored: true,
        };
        let header = InboundMessageHeader::decode(message.encode_to_vec().as_slice())
            .expect("an inbound message decodes as its header");
        let without_body = InboundMessage {
            body: Vec::new(),
            ..message
        };
        assert_eq!(header.encode_to_vec(), without_body.encode_to_vec());
    }
}
