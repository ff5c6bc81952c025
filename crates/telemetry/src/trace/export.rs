//! OTLP export, configured by the standard OpenTelemetry variables and off without them.
//!
//! - `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`): where the
//!   collector listens. Unset: no exporter at all (the default).
//! - `OTEL_EXPORTER_OTLP_PROTOCOL` (or `..._TRACES_PROTOCOL`): `grpc` or `http/protobuf`
//!   (the default, as the specification says). `http/json` is not supported.
//! - `OTEL_SERVICE_NAME`: default `carrier-<service>`; `OTEL_RESOURCE_ATTRIBUTES` adds
//!   attributes (`deployment.environment.name=prod,...`).
//! - `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`: e.g. `parentbased_traceidratio` and
//!   `0.1` (default `parentbased_always_on`).
//! - `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`: read by the exporter.
//! - `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, `OTEL_BSP_SCHEDULE_DELAY`: the
//!   bounded export queue (`queue.rs`).
//! - `OTEL_SDK_DISABLED=true` turns it off whatever else is set.

use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

use super::queue::{QueueLimits, QueueProcessor};

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// The export settings read from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSettings {
    pub endpoint: String,
    pub protocol: Protocol,
    pub service_name: String,
}

/// A variable that cannot be used, named with its value.
#[derive(Debug, thiserror::Error)]
pub enum ExportSettingsError {
    #[error("{name}={value:?} is not supported: use grpc or http/protobuf")]
    Protocol { name: &'static str, value: String },
    #[error("the OTLP span exporter cannot be built: {0}")]
    Exporter(String),
}

fn variable(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|value| value.trim().to_string())
        .filter(|value| !value.is_empty())
}

impl ExportSettings {
    /// `None` when no endpoint is configured (or `OTEL_SDK_DISABLED=true`): tracing is off.
    /// `service` is the short name (`ingress`); the default service name is `carrier-ingress`.
    pub fn from_env(service: &str) -> Result<Option<Self>, ExportSettingsError> {
        Self::from_lookup(service, variable)
    }

    /// [`ExportSettings::from_env`] with variables from `lookup` (tests).
    pub fn from_lookup(
        service: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ExportSettingsError> {
        if lookup("OTEL_SDK_DISABLED").is_some_and(|value| value.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let Some(endpoint) =
            lookup("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| lookup("OTEL_EXPORTER_OTLP_ENDPOINT"))
        else {
            return Ok(None);
        };
        let (name, value) = match lookup("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") {
            Some(value) => ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", value),
            None => (
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                lookup("OTEL_EXPORTER_OTLP_PROTOCOL").unwrap_or_else(|| "http/protobuf".into()),
            ),
        };
        let protocol = match value.as_str() {
            "grpc" => Protocol::Grpc,
            "http/protobuf" => Protocol::HttpProtobuf,
            _ => return Err(ExportSettingsError::Protocol { name, value }),
        };
        let service_name = lookup("OTEL_SERVICE_NAME")
            .or_else(|| {
                lookup("OTEL_RESOURCE_ATTRIBUTES").and_then(|attributes| {
                    attributes.split(',').find_map(|pair| {
                        let (key, value) = pair.split_once('=')?;
                        (key.trim() == "service.name").then(|| value.trim().to_string())
                    })
                })
            })
            .unwrap_or_else(|| format!("carrier-{service}"));
        Ok(Some(Self {
            endpoint,
            protocol,
            service_name,
        }))
    }

    /// The tracer provider: the exporter behind Carrier's bounded queue, the resource (service
    /// name and version, `OTEL_RESOURCE_ATTRIBUTES`), the sampler of `OTEL_TRACES_SAMPLER`.
    /// Call on the tokio runtime (the gRPC exporter's client lives there).
    pub fn provider(&self) -> Result<SdkTracerProvider, ExportSettingsError> {
        let built = match self.protocol {
            // The endpoint, headers and timeout come from the standard variables (the exporter
            // reads them itself, appending `/v1/traces` to a base HTTP endpoint).
            Protocol::Grpc => opentelemetry_otlp::SpanExporter::builder().with_tonic().build(),
            Protocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .build(),
        };
        let exporter = built.map_err(|error| ExportSettingsError::Exporter(error.to_string()))?;
        let runtime = tokio::runtime::Handle::try_current().ok();
        let processor = QueueProcessor::new(exporter, QueueLimits::from_env(), runtime);
        // The SDK's detectors read OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; the name
        // set here is what they found, or Carrier's default.
        let resource = Resource::builder()
            .with_service_name(self.service_name.clone())
            .with_attribute(opentelemetry::KeyValue::new("service.version", crate::VERSION))
            .build();
        Ok(SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource)
            .build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Option<ExportSettings>, ExportSettingsError> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ExportSettings::from_lookup("ingress", |name| {
            pairs
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        })
    }

    #[test]
    fn no_endpoint_means_no_export() {
        assert_eq!(settings(&[]).unwrap(), None);
        assert_eq!(settings(&[("OTEL_SERVICE_NAME", "x")]).unwrap(), None);
        let disabled = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ]);
        assert_eq!(disabled.unwrap(), None);
    }

    #[test]
    fn defaults_and_overrides() {
        let default = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")])
            .unwrap()
            .unwrap();
        assert_eq!(default.protocol, Protocol::HttpProtobuf);
        assert_eq!(default.service_name, "carrier-ingress");
        let grpc = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_RESOURCE_ATTRIBUTES", "team=edi, service.name=edge"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(grpc.protocol, Protocol::Grpc);
        assert_eq!(grpc.service_name, "edge");
        let named = settings(&[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://collector:4318/v1/traces",
            ),
            ("OTEL_SERVICE_NAME", "ingress-eu"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(named.service_name, "ingress-eu");
        let json = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ]);
        assert!(json.unwrap_err().to_string().contains("http/json"));
    }
}
