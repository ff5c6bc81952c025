//! OpenTelemetry traces (issue 13 §1–4): the four services as processes of their own, each
//! exporting over OTLP to a real receiver, and one message seen as one trace from the sender's
//! span to the receiver's request.

use std::collections::HashMap;
use std::time::Duration;

use carrier_testkit::client::message;
use carrier_testkit::otlp::{
    CollectedSpan, Collector, KIND_CLIENT, KIND_CONSUMER, KIND_PRODUCER, KIND_SERVER,
};
use carrier_testkit::processes::ProcessStack;
use carrier_testkit::receiver::Receiver;

fn random_hex(bytes: usize) -> String {
    let mut text = String::new();
    while text.len() < bytes * 2 {
        text.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    text.truncate(bytes * 2);
    text
}

/// Sends one message with the sender's own `traceparent`; returns the receiver's request.
async fn send_traced_message(
    stack: &ProcessStack,
    receiver: &Receiver,
    traceparent: &str,
) -> carrier_testkit::receiver::Received {
    let api = &stack.api;
    let organization = api.create_organization("Traced Hospital").await;
    let source = api.create_source(&organization, "production").await;
    api.subscribed_destination(
        &organization,
        &source,
        &receiver.url("traced?secret=not-in-spans"),
        "production",
        "PatientAdmin",
    )
    .await;
    let token = api.token(&source).await;
    let body = serde_json::to_vec(&message("PatientAdmin", 1)).unwrap();
    let answer = api
        .request(
            reqwest::Method::POST,
            "/endpoint",
            Some(&token),
            &[("content-type", "application/json"), ("traceparent", traceparent)],
            Some(body),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    carrier_testkit::eventually(Duration::from_secs(60), "the delivery", || {
        let received = receiver.received();
        async move { received.into_iter().next() }
    })
    .await
}

/// The span's ancestors within `spans` (parent first).
fn ancestors<'a>(spans: &'a [CollectedSpan], span: &CollectedSpan) -> Vec<&'a CollectedSpan> {
    let by_id: HashMap<&str, &CollectedSpan> =
        spans.iter().map(|span| (span.span_id.as_str(), span)).collect();
    let mut chain = Vec::new();
    let mut parent = span.parent_span_id.as_str();
    while let Some(found) = by_id.get(parent) {
        chain.push(*found);
        parent = found.parent_span_id.as_str();
    }
    chain
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_message_is_one_trace_from_the_senders_span_to_the_receivers_request() {
    let collector = Collector::start().await;
    let (grpc, http) = (collector.grpc_endpoint.clone(), collector.http_endpoint.clone());
    // The router exports over HTTP/protobuf, the others over gRPC: both exporters are used.
    let stack = ProcessStack::start(move |service| {
        let (endpoint, protocol) = match service {
            "router" => (http.clone(), "http/protobuf"),
            _ => (grpc.clone(), "grpc"),
        };
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), protocol.into()),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()),
            (
                "OTEL_RESOURCE_ATTRIBUTES".into(),
                "deployment.environment.name=test".into(),
            ),
            ("CARRIER_LOG_FORMAT".into(), "json".into()),
            ("RUST_LOG".into(), "info".into()),
        ]
    })
    .await;
    let receiver = Receiver::start().await;
    let trace_id = random_hex(16);
    let sender_span = random_hex(8);
    let received = send_traced_message(&stack, &receiver, &format!("00-{trace_id}-{sender_span}-01")).await;

    // The receiver's request is in the sender's trace.
    let traceparent = received.header("traceparent").to_string();
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {traceparent:?}");
    assert_eq!(parts[1], trace_id, "the receiver got the sender's trace ID");
    let attempt_span_id = parts[2].to_string();

    let spans = collector
        .wait_for(
            Duration::from_secs(60),
            "the spans of all four services",
            |spans| {
                let in_trace: Vec<&CollectedSpan> =
                    spans.iter().filter(|span| span.trace_id == trace_id).collect();
                let has = |service: &str, kind: i32| {
                    in_trace
                        .iter()
                        .any(|span| span.service_name == service && span.kind == kind)
                };
                // The notifier consumes twice: the inbound message (its queued log) and
                // delivery's attempt event.
                let notifier_consumed = |topic: &str| {
                    in_trace.iter().any(|span| {
                        span.service_name == "carrier-notifier"
                            && span.kind == KIND_CONSUMER
                            && span.name.ends_with(topic)
                    })
                };
                in_trace.iter().any(|span| span.span_id == attempt_span_id)
                    && has("carrier-ingress", KIND_SERVER)
                    && has("carrier-router", KIND_CONSUMER)
                    && has("carrier-router", KIND_SERVER)
                    && has("carrier-delivery", KIND_CONSUMER)
                    && notifier_consumed(".inbound")
                    && notifier_consumed(".log-events")
            },
        )
        .await;
    let in_trace: Vec<CollectedSpan> = spans
        .iter()
        .filter(|span| span.trace_id == trace_id)
        .cloned()
        .collect();
    let find = |service: &str, kind: i32, name: &str| -> &CollectedSpan {
        in_trace
            .iter()
            .find(|span| span.service_name == service && span.kind == kind && span.name.starts_with(name))
            .unwrap_or_else(|| panic!("no {service} span {name} (kind {kind}) in {in_trace:#?}"))
    };

    // Ingress: the SERVER span is the child of the sender's span, named by its route.
    let server = find("carrier-ingress", KIND_SERVER, "POST /endpoint");
    assert_eq!(
        server.parent_span_id, sender_span,
        "the sender's traceparent is honoured"
    );
    assert_eq!(server.attribute("http.request.method"), "POST");
    assert_eq!(server.attribute("http.route"), "/endpoint");
    assert_eq!(server.attribute("http.response.status_code"), "200");
    let write = find(
        "carrier-ingress",
        KIND_PRODUCER,
        &format!("send {}.inbound", stack.prefix),
    );
    assert_eq!(write.attribute("messaging.system"), "kafka");
    assert_eq!(write.attribute("messaging.operation.type"), "send");
    // The route lookup called the router: its gRPC SERVER span is the child of ingress's CLIENT span.
    let resolve_client = find(
        "carrier-ingress",
        KIND_CLIENT,
        "carrier.config.v1.ConfigService/Resolve",
    );
    let resolve_server = find(
        "carrier-router",
        KIND_SERVER,
        "carrier.config.v1.ConfigService/Resolve",
    );
    assert_eq!(resolve_server.parent_span_id, resolve_client.span_id);
    assert_eq!(resolve_server.attribute("rpc.system"), "grpc");
    assert_eq!(resolve_server.attribute("rpc.method"), "Resolve");
    assert_eq!(
        resolve_server.attribute("rpc.grpc.status_code"),
        "0",
        "{resolve_server:?}"
    );
    assert_eq!(
        resolve_client.attribute("rpc.grpc.status_code"),
        "0",
        "{resolve_client:?}"
    );

    // Router: consumes ingress's write and writes the task.
    let consume = find(
        "carrier-router",
        KIND_CONSUMER,
        &format!("process {}.inbound", stack.prefix),
    );
    assert_eq!(consume.parent_span_id, write.span_id);
    assert_eq!(
        consume.attribute("messaging.consumer.group.name"),
        format!("{}-router", stack.prefix)
    );
    assert_eq!(consume.attribute("messaging.operation.type"), "process");
    let fanout = find(
        "carrier-router",
        KIND_PRODUCER,
        &format!("send {}.deliveries", stack.prefix),
    );
    assert_eq!(fanout.parent_span_id, consume.span_id);

    // Delivery: consumes the task; the attempt's CLIENT span is what the receiver's traceparent names.
    let task = find(
        "carrier-delivery",
        KIND_CONSUMER,
        &format!("process {}.deliveries", stack.prefix),
    );
    assert_eq!(task.parent_span_id, fanout.span_id);
    let attempt = in_trace
        .iter()
        .find(|span| span.span_id == attempt_span_id)
        .expect("the attempt's span");
    assert_eq!(attempt.service_name, "carrier-delivery");
    assert_eq!(attempt.kind, KIND_CLIENT);
    assert_eq!(attempt.parent_span_id, task.span_id);
    assert_eq!(attempt.attribute("http.request.method"), "POST");
    assert_eq!(attempt.attribute("http.response.status_code"), "200");
    let url = attempt.attribute("url.full");
    assert!(
        url.ends_with("/traced") && !url.contains("secret"),
        "url.full {url:?}"
    );

    // One chain: the attempt's ancestors lead back through router to ingress's server span.
    let chain: Vec<(String, String)> = ancestors(&in_trace, attempt)
        .iter()
        .map(|span| (span.service_name.clone(), span.name.clone()))
        .collect();
    assert_eq!(
        chain.last().map(|(service, _)| service.as_str()),
        Some("carrier-ingress"),
        "{chain:?}"
    );
    assert!(
        chain.iter().any(|(service, _)| service == "carrier-router"),
        "{chain:?}"
    );

    // The notifier consumed the log events of this trace, and made the log from ingress's
    // write itself (no stage writes a creation event).
    let event = find(
        "carrier-notifier",
        KIND_CONSUMER,
        &format!("process {}.log-events", stack.prefix),
    );
    assert_eq!(event.attribute("messaging.system"), "kafka");
    let created = find(
        "carrier-notifier",
        KIND_CONSUMER,
        &format!("process {}.inbound", stack.prefix),
    );
    assert_eq!(created.parent_span_id, write.span_id);
    assert_eq!(
        created.attribute("messaging.consumer.group.name"),
        format!("{}-notifier-inbound", stack.prefix)
    );
    assert!(
        !in_trace.iter().any(|span| span.service_name == "carrier-router"
            && span.name == format!("send {}.log-events", stack.prefix)),
        "the router writes no log events"
    );
    // Every span of the trace came from one of the four services, with the resource's attributes.
    for span in &in_trace {
        assert!(span.service_name.starts_with("carrier-"), "{span:?}");
    }

    // A manual retry is a trace of its own (the retry request's, here with the operator's own
    // traceparent), not a continuation of the delivery's: its write links to the original trace,
    // and the receiver's second request is in the retry's trace.
    let log_id = received.header("carrier-log-id").to_string();
    let retry_trace = random_hex(16);
    let answer = stack
        .api
        .request(
            reqwest::Method::POST,
            &format!("/v1/logs/{log_id}/retry"),
            Some(carrier_ingress::DEV_ADMIN_TOKEN),
            &[("traceparent", &format!("00-{retry_trace}-{}-01", random_hex(8)))],
            None,
        )
        .await;
    assert!(answer.status < 300, "{} {}", answer.status, answer.body);
    let again = carrier_testkit::eventually(Duration::from_secs(60), "the retried delivery", || {
        let received = receiver.received();
        async move { received.into_iter().nth(1) }
    })
    .await;
    let retried: Vec<&str> = again.header("traceparent").split('-').collect();
    assert_eq!(retried.get(1).copied(), Some(retry_trace.as_str()), "{retried:?}");
    let spans = collector
        .wait_for(Duration::from_secs(60), "the retry's linked write", |spans| {
            spans.iter().any(|span| {
                span.trace_id == retry_trace && span.links.iter().any(|(linked, _)| *linked == trace_id)
            })
        })
        .await;
    let linked = spans
        .iter()
        .find(|span| span.trace_id == retry_trace && span.links.iter().any(|(linked, _)| *linked == trace_id))
        .expect("found above");
    assert_eq!(linked.service_name, "carrier-ingress", "{linked:?}");
    assert_eq!(linked.kind, KIND_PRODUCER, "the retry's write: {linked:?}");

    // An operator's queue request reaches the owning delivery worker over gRPC: ingress's CLIENT
    // span, the worker's SERVER span its child, both with the status.
    let log = stack
        .api
        .request(
            reqwest::Method::GET,
            &format!("/v1/logs/{log_id}"),
            Some(carrier_ingress::DEV_ADMIN_TOKEN),
            &[],
            None,
        )
        .await;
    let log = log.body;
    let destination_id = log["destination_id"]
        .as_str()
        .expect("destination_id")
        .to_string();
    let queue_trace = random_hex(16);
    let answer = stack
        .api
        .request(
            reqwest::Method::GET,
            &format!("/v1/destinations/{destination_id}/queue"),
            Some(carrier_ingress::DEV_ADMIN_TOKEN),
            &[("traceparent", &format!("00-{queue_trace}-{}-01", random_hex(8)))],
            None,
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let spans = collector
        // Both sides: each process exports on its own schedule, and the worker's SERVER span
        // ends (and may be exported) before ingress's CLIENT span does.
        .wait_for(Duration::from_secs(60), "the control call's spans", |spans| {
            let seen = |service: &str, kind| {
                spans.iter().any(|span| {
                    span.trace_id == queue_trace && span.service_name == service && span.kind == kind
                })
            };
            seen("carrier-ingress", KIND_CLIENT) && seen("carrier-delivery", KIND_SERVER)
        })
        .await;
    let control_client = spans
        .iter()
        .find(|span| span.trace_id == queue_trace && span.kind == KIND_CLIENT)
        .expect("ingress's control CLIENT span");
    let control_server = spans
        .iter()
        .find(|span| {
            span.trace_id == queue_trace
                && span.kind == KIND_SERVER
                && span.service_name == "carrier-delivery"
        })
        .expect("found above");
    assert_eq!(control_client.service_name, "carrier-ingress");
    assert_eq!(
        control_client.name,
        "carrier.delivery.v1.DeliveryControl/GetQueue"
    );
    assert_eq!(control_client.attribute("rpc.grpc.status_code"), "0");
    assert_eq!(control_server.parent_span_id, control_client.span_id);
    assert_eq!(control_server.attribute("rpc.grpc.status_code"), "0");

    // JSON log lines written inside traced work name their trace and span.
    let traced: Vec<serde_json::Value> = ["ingress", "router", "delivery", "notifier"]
        .iter()
        .flat_map(|service| stack.log(service).lines().map(str::to_string).collect::<Vec<_>>())
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(&line).ok())
        .filter(|line| line["trace_id"] == trace_id.as_str() || line["trace_id"] == retry_trace.as_str())
        .collect();
    assert!(!traced.is_empty(), "no JSON log line names the traces");
    for line in &traced {
        assert_eq!(line["span_id"].as_str().map(str::len), Some(16), "{line}");
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_an_endpoint_nothing_is_exported_and_delivery_is_unchanged() {
    // A service name but no endpoint: tracing stays off.
    let stack = ProcessStack::start(|_| vec![("OTEL_SERVICE_NAME".into(), "not-exported".into())]).await;
    let receiver = Receiver::start().await;
    let trace_id = random_hex(16);
    let received =
        send_traced_message(&stack, &receiver, &format!("00-{trace_id}-{}-01", random_hex(8))).await;
    assert_eq!(
        received.header("traceparent"),
        "",
        "no trace context is sent on when tracing is off"
    );
    let metrics = carrier_testkit::metrics_page(&stack.ingress_admin_url).await;
    assert!(
        !metrics.contains("carrier_trace_spans_dropped_total"),
        "no export queue exists without an endpoint"
    );
    stack.stop().await;
}

/// An attempt that starts later than `trace_continue_within_ms` after its task's write (here 1 s;
/// 5 minutes by default) is the root of a new trace with a span link to the task's original
/// trace, and the receiver gets that new trace; the first, timely attempt stayed in the sender's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_attempt_is_a_new_trace_linked_to_the_original() {
    let collector = Collector::start().await;
    let endpoint = collector.grpc_endpoint.clone();
    let stack = ProcessStack::start(move |service| {
        let mut env = vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint.clone()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "grpc".into()),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()),
        ];
        if service == "delivery" {
            env.push(("CARRIER_TRACE_CONTINUE_WITHIN_MS".into(), "1000".into()));
        }
        env
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.respond_with(500, "not yet");
    let trace_id = random_hex(16);
    let first = send_traced_message(&stack, &receiver, &format!("00-{trace_id}-{}-01", random_hex(8))).await;
    let first_trace: Vec<&str> = first.header("traceparent").split('-').collect();
    assert_eq!(
        first_trace.get(1).copied(),
        Some(trace_id.as_str()),
        "the timely attempt"
    );
    // The retry comes after the production backoff (2 s), past the 1 s continuation.
    receiver.respond_with(200, r#"{"Meta":{"Errors":[]}}"#);
    let late = carrier_testkit::eventually(Duration::from_secs(60), "the late attempt", || {
        let received = receiver.received();
        async move { received.into_iter().nth(1) }
    })
    .await;
    let late_trace: Vec<String> = late
        .header("traceparent")
        .split('-')
        .map(str::to_string)
        .collect();
    assert_eq!(late_trace.len(), 4, "{late_trace:?}");
    assert_ne!(late_trace[1], trace_id, "a new trace");
    let (new_trace, late_span) = (late_trace[1].clone(), late_trace[2].clone());
    let spans = collector
        .wait_for(Duration::from_secs(60), "the late attempt's span", |spans| {
            spans.iter().any(|span| span.span_id == late_span)
        })
        .await;
    let attempt = spans
        .iter()
        .find(|span| span.span_id == late_span)
        .expect("found above");
    assert_eq!(attempt.service_name, "carrier-delivery");
    assert_eq!(attempt.kind, KIND_CLIENT);
    assert_eq!(attempt.trace_id, new_trace);
    assert_eq!(attempt.parent_span_id, "", "the root of its trace: {attempt:?}");
    assert!(
        attempt.links.iter().any(|(linked, _)| *linked == trace_id),
        "linked to the original trace: {attempt:?}"
    );
    assert_eq!(attempt.attribute("carrier.attempt"), "2");
    stack.stop().await;
}
