//! Carrier's wire types: the gRPC services between the services and the protobuf records they
//! write to Kafka. Generated at build time from `proto/`; nothing generated is committed.
#![forbid(unsafe_code)]

pub mod config {
    pub mod v1 {
        tonic::include_proto!("carrier.config.v1");
    }
}

pub mod records {
    pub mod v1 {
        tonic::include_proto!("carrier.records.v1");
    }
}

pub mod error;

pub use config::v1 as config_v1;
pub use error::ErrorKind;
pub use records::v1 as records_v1;

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
