//! An OTLP trace receiver for tests: the OpenTelemetry trace service over gRPC (the
//! `opentelemetry-proto` crate's tonic server) and over HTTP/protobuf (`POST /v1/traces`), on
//! loopback. It keeps every span it is sent, flattened with the `service.name` of its resource,
//! so a test can check the traces a pipeline of real processes produced.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message as _;
use tokio_util::sync::CancellationToken;

/// One span as the collector received it.
#[derive(Debug, Clone)]
pub struct CollectedSpan {
    pub service_name: String,
    /// Hex, as in a `traceparent`.
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// OTLP's span kind: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i32,
    pub attributes: HashMap<String, String>,
    /// (trace ID, span ID) of each link.
    pub links: Vec<(String, String)>,
}

pub const KIND_SERVER: i32 = 2;
pub const KIND_CLIENT: i32 = 3;
pub const KIND_PRODUCER: i32 = 4;
pub const KIND_CONSUMER: i32 = 5;

impl CollectedSpan {
    pub fn attribute(&self, key: &str) -> &str {
        self.attributes.get(key).map(String::as_str).unwrap_or("")
    }
}

#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<CollectedSpan>>>);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn text(value: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.as_ref().and_then(|value| value.value.as_ref()) {
        Some(Value::StringValue(text)) => text.clone(),
        Some(Value::IntValue(number)) => number.to_string(),
        Some(Value::BoolValue(flag)) => flag.to_string(),
        Some(Value::DoubleValue(number)) => number.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(pairs: &[KeyValue]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|pair| (pair.key.clone(), text(&pair.value)))
        .collect()
}

impl Spans {
    fn add(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.0.lock().expect("spans lock");
        for resource_spans in request.resource_spans {
            let resource = resource_spans
                .resource
                .map(|resource| attributes(&resource.attributes))
                .unwrap_or_default();
            let service_name = resource.get("service.name").cloned().unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(CollectedSpan {
                        service_name: service_name.clone(),
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        name: span.name,
                        kind: span.kind,
                        attributes: attributes(&span.attributes),
                        links: span
                            .links
                            .iter()
                            .map(|link| (hex(&link.trace_id), hex(&link.span_id)))
                            .collect(),
                    });
                }
            }
        }
    }
}

#[tonic::async_trait]
impl TraceService for Spans {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.add(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// The running receiver; stopped when dropped.
pub struct Collector {
    /// `http://127.0.0.1:<port>`: for `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`.
    pub grpc_endpoint: String,
    /// `http://127.0.0.1:<port>`: for `http/protobuf` (the exporter adds `/v1/traces`).
    pub http_endpoint: String,
    spans: Spans,
    shutdown: CancellationToken,
}

impl Collector {
    pub async fn start() -> Collector {
        let spans = Spans::default();
        let shutdown = CancellationToken::new();
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let grpc_endpoint = format!("http://{}", grpc.local_addr().expect("addr"));
        let http_endpoint = format!("http://{}", http.local_addr().expect("addr"));
        let service = TraceServiceServer::new(spans.clone());
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc);
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                .await;
        });
        let http_spans = spans.clone();
        let router = axum::Router::new().route(
            "/v1/traces",
            post(move |body: Bytes| {
                let spans = http_spans.clone();
                async move {
                    match ExportTraceServiceRequest::decode(body) {
                        Ok(request) => {
                            spans.add(request);
                            let answer = ExportTraceServiceResponse {
                                partial_success: None,
                            }
                            .encode_to_vec();
                            (
                                axum::http::StatusCode::OK,
                                [("content-type", "application/x-protobuf")],
                                answer,
                            )
                        }
                        Err(_) => (
                            axum::http::StatusCode::BAD_REQUEST,
                            [("content-type", "text/plain")],
                            b"not an ExportTraceServiceRequest".to_vec(),
                        ),
                    }
                }
            }),
        );
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(http, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
        Collector {
            grpc_endpoint,
            http_endpoint,
            spans,
            shutdown,
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<CollectedSpan> {
        self.spans.0.lock().expect("spans lock").clone()
    }

    /// Waits (up to `timeout`) until `done` holds for the spans received, and returns them.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[CollectedSpan]) -> bool,
    ) -> Vec<CollectedSpan> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            if tokio::time::Instant::now() >= deadline {
                let names: Vec<String> = spans
                    .iter()
                    .map(|span| format!("{}:{}", span.service_name, span.name))
                    .collect();
                panic!("{what}: not there within {timeout:?}; spans received: {names:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
