//! Internal trust: the router's `ConfigService` and the delivery workers' `DeliveryControl`
//! answer only callers holding the stack's service token (and, with mutual TLS, a certificate
//! signed by the stack's CA), while ingress and delivery, which hold both, work as usual.

use std::time::Duration;

use carrier_internal_auth::InternalAuthSettings;
use carrier_proto::config_v1::config_service_client::ConfigServiceClient;
use carrier_proto::config_v1::ListDisabledSourcesRequest;
use carrier_proto::delivery_v1::delivery_control_client::DeliveryControlClient;
use carrier_proto::delivery_v1::QueueRequest;
use carrier_testkit::client::{message, Sender};
use carrier_testkit::pki::Pki;
use carrier_testkit::receiver::Receiver;
use carrier_testkit::stack::{Stack, StackOptions};
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};

/// The name in the test servers' certificates; URLs name 127.0.0.1, as pod IPs would.
const SERVER_NAME: &str = "carrier-internal";

/// A client interceptor sending `authorization: Bearer <token>`, or nothing with `None`.
fn bearer(token: Option<String>) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |mut request: Request<()>| {
        if let Some(token) = &token {
            let value: MetadataValue<_> = format!("Bearer {token}").parse().expect("header-safe");
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

async fn plain_channel(url: &str) -> Channel {
    Endpoint::from_shared(url.to_string())
        .expect("url")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("the server accepts connections")
}

/// `ListDisabledSources` at the router over `channel`, with `token` (or none).
async fn list_disabled_sources(channel: Channel, token: Option<String>) -> Result<Vec<String>, Status> {
    ConfigServiceClient::with_interceptor(channel, bearer(token))
        .list_disabled_sources(ListDisabledSourcesRequest {})
        .await
        .map(|response| response.into_inner().source_ids)
}

/// `GetQueue` of `destination_id` at a delivery worker over `channel`, with `token` (or none).
async fn get_queue(channel: Channel, token: Option<String>, destination_id: &str) -> Result<String, Status> {
    DeliveryControlClient::with_interceptor(channel, bearer(token))
        .get_queue(QueueRequest {
            destination_id: destination_id.to_string(),
        })
        .await
        .map(|response| response.into_inner().destination_id)
}

/// Asserts `result` is the refusal of a call without the right token, saying why.
fn assert_refused<T: std::fmt::Debug>(result: Result<T, Status>, says: &str) {
    let status = result.expect_err("an unauthenticated call must be refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains(says), "{status:?}");
    assert!(carrier_internal_auth::is_refusal(&status), "{status:?}");
}

/// The control URL the stack's (only) delivery worker registered.
async fn control_url(stack: &Stack) -> String {
    let mut connection =
        <carrier_store::sqlx::PgConnection as carrier_store::sqlx::Connection>::connect(&stack.database_url)
            .await
            .expect("database");
    carrier_store::sqlx::query_scalar("SELECT control_url FROM delivery_workers LIMIT 1")
        .fetch_one(&mut connection)
        .await
        .expect("a registered delivery worker")
}

/// Refusals counted by the serving service's `carrier_internal_auth_refused_total` (the
/// services run in this process, so they share its registry).
fn refused(service: &str, reason: &str) -> u64 {
    carrier_telemetry::prometheus::gather()
        .iter()
        .filter(|family| family.name() == "carrier_internal_auth_refused_total")
        .flat_map(|family| family.get_metric().iter())
        .filter(|metric| {
            let labels: Vec<(&str, &str)> = metric
                .get_label()
                .iter()
                .map(|label| (label.name(), label.value()))
                .collect();
            labels.contains(&("service", service)) && labels.contains(&("reason", reason))
        })
        .map(|metric| metric.get_counter().get_value() as u64)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn internal_grpc_servers_refuse_calls_without_the_shared_service_token() {
    let stack = Stack::start(StackOptions::default()).await;
    let token = stack
        .options
        .internal_auth
        .service_token
        .clone()
        .expect("the stack's token");
    let receiver = Receiver::start().await;
    let Sender {
        destination,
        token: source_token,
        ..
    } = stack
        .api
        .sender(
            "Internal Trust Clinic",
            "production",
            &receiver.url("d"),
            "Results",
        )
        .await;
    let destination_id = destination["id"].as_str().expect("destination id").to_string();

    // The router: no token, a malformed header, a wrong token (the dev default among them:
    // this stack has a token of its own), then the right one.
    let router = plain_channel(&stack.router_url).await;
    let missing_before = refused("router", "missing");
    assert_refused(
        list_disabled_sources(router.clone(), None).await,
        "internal call without credentials",
    );
    assert!(
        refused("router", "missing") > missing_before,
        "the refusal is counted"
    );
    let mut malformed = ConfigServiceClient::with_interceptor(router.clone(), |mut request: Request<()>| {
        let value: MetadataValue<_> = "Basic c2VjcmV0".parse().expect("header");
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    });
    assert_refused(
        malformed
            .list_disabled_sources(ListDisabledSourcesRequest {})
            .await,
        "malformed authorization header",
    );
    for wrong in [
        format!("{token}x"),
        token[..token.len() - 1].to_string(),
        carrier_internal_auth::DEV_SERVICE_TOKEN.to_string(),
    ] {
        assert_refused(
            list_disabled_sources(router.clone(), Some(wrong)).await,
            "wrong service token",
        );
    }
    let disabled = list_disabled_sources(router.clone(), Some(token.clone()))
        .await
        .expect("the right token is accepted");
    assert!(disabled.is_empty(), "{disabled:?}");

    // A delivery worker's control service, at the URL it registered for ingress.
    let control = plain_channel(&control_url(&stack).await).await;
    assert_refused(
        get_queue(control.clone(), None, &destination_id).await,
        "internal call without credentials",
    );
    assert_refused(
        get_queue(control.clone(), Some(format!("{token}x")), &destination_id).await,
        "wrong service token",
    );
    let answered = get_queue(control.clone(), Some(token.clone()), &destination_id)
        .await
        .expect("the right token is accepted");
    assert_eq!(answered, destination_id);

    // Ingress and delivery hold the token: the queue state through the REST API (ingress →
    // delivery control) and a message end to end (ingress → router, delivery → router).
    let state = crate::operator::queue(&stack.api, &destination_id).await;
    assert_eq!(state["paused"], false, "{state}");
    let (status, body) = stack.api.send(&source_token, &message("Results", 0)).await;
    assert_eq!(status, 200, "{body}");
    carrier_testkit::eventually(Duration::from_secs(30), "the message to arrive", || {
        let arrived = receiver.received_on("/d").len();
        async move { (arrived == 1).then_some(()) }
    })
    .await;
    stack.stop().await;
}

/// A TLS channel to `url` (dialled as `https://`) trusting `ca_pem`, presenting `identity`.
async fn tls_channel(
    url: &str,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(SERVER_NAME);
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(url.replacen("http://", "https://", 1))
        .expect("url")
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
}

/// What a call over a channel that may not even connect answers.
async fn list_over(
    channel: Result<Channel, tonic::transport::Error>,
    token: Option<String>,
) -> Result<Vec<String>, String> {
    match channel {
        Err(error) => Err(format!("connect: {error:?}")),
        Ok(channel) => list_disabled_sources(channel, token)
            .await
            .map_err(|status| format!("{status:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_mutual_tls_only_clients_with_a_certificate_from_the_ca_get_in() {
    let dir = std::env::temp_dir().join(carrier_testkit::unique("carrier-mtls-"));
    let pki = Pki::new(&dir, "carrier");
    let service = pki.issue("carrier-service", &[SERVER_NAME]);
    let (cert_path, key_path) = (service.cert_path, service.key_path);
    let test_client = pki.issue("test-client", &[SERVER_NAME]);
    let (test_cert, test_key) = (test_client.cert_pem, test_client.key_pem);
    let rogue = Pki::new(&dir, "rogue");
    let rogue_client = rogue.issue("rogue-client", &[SERVER_NAME]);
    let (rogue_cert, rogue_key) = (rogue_client.cert_pem, rogue_client.key_pem);

    let token = format!("tls-test-token-{}", uuid::Uuid::new_v4().simple());
    let stack = Stack::start(StackOptions {
        internal_auth: InternalAuthSettings {
            service_token: Some(token.clone()),
            tls_cert_path: Some(cert_path),
            tls_key_path: Some(key_path),
            tls_ca_path: Some(pki.ca_path()),
            tls_server_name: Some(SERVER_NAME.to_string()),
        },
        ..StackOptions::default()
    })
    .await;

    // The services talk over mutual TLS: a message goes through (ingress → router,
    // delivery → router) and the queue state answers (ingress → delivery control).
    let receiver = Receiver::start().await;
    let Sender {
        destination,
        token: source_token,
        ..
    } = stack
        .api
        .sender("Mutual TLS Clinic", "production", &receiver.url("d"), "Results")
        .await;
    let destination_id = destination["id"].as_str().expect("destination id").to_string();
    let (status, body) = stack.api.send(&source_token, &message("Results", 0)).await;
    assert_eq!(status, 200, "{body}");
    carrier_testkit::eventually(Duration::from_secs(30), "the message to arrive", || {
        let arrived = receiver.received_on("/d").len();
        async move { (arrived == 1).then_some(()) }
    })
    .await;
    let state = crate::operator::queue(&stack.api, &destination_id).await;
    assert_eq!(state["paused"], false, "{state}");
    let control = control_url(&stack).await;
    assert!(control.starts_with("https://"), "{control}");

    // Plaintext: refused (the server speaks only TLS).
    let plaintext = Endpoint::from_shared(stack.router_url.clone())
        .expect("url")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect()
        .await;
    let answer = list_over(plaintext, Some(token.clone())).await;
    println!("plaintext call: {answer:?}");
    assert!(answer.is_err(), "a plaintext call got in: {answer:?}");

    // TLS without a client certificate, or with one from another CA: refused at the handshake,
    // even with the right token.
    let anonymous = list_over(
        tls_channel(&stack.router_url, &pki.ca_pem, None).await,
        Some(token.clone()),
    )
    .await;
    println!("call without a client certificate: {anonymous:?}");
    assert!(
        anonymous.is_err(),
        "a client without a certificate got in: {anonymous:?}"
    );
    let foreign = list_over(
        tls_channel(&stack.router_url, &pki.ca_pem, Some((&rogue_cert, &rogue_key))).await,
        Some(token.clone()),
    )
    .await;
    println!("call with another CA's certificate: {foreign:?}");
    assert!(
        foreign.is_err(),
        "a certificate of another CA got in: {foreign:?}"
    );

    // A certificate from the CA, but no token: still refused, by the token check.
    let channel = tls_channel(&stack.router_url, &pki.ca_pem, Some((&test_cert, &test_key)))
        .await
        .expect("a client with the CA's certificate connects");
    assert_refused(
        list_disabled_sources(channel.clone(), None).await,
        "internal call without credentials",
    );
    // Certificate and token: in, at the router and at the delivery worker.
    list_disabled_sources(channel, Some(token.clone()))
        .await
        .expect("certificate and token are accepted");
    let control_channel = tls_channel(&control, &pki.ca_pem, Some((&test_cert, &test_key)))
        .await
        .expect("the control service accepts the CA's certificate");
    let answered = get_queue(control_channel, Some(token.clone()), &destination_id)
        .await
        .expect("certificate and token are accepted");
    assert_eq!(answered, destination_id);
    let foreign_control = match tls_channel(&control, &pki.ca_pem, Some((&rogue_cert, &rogue_key))).await {
        Err(error) => Err(format!("connect: {error:?}")),
        Ok(channel) => get_queue(channel, Some(token.clone()), &destination_id)
            .await
            .map_err(|status| format!("{status:?}")),
    };
    assert!(foreign_control.is_err(), "{foreign_control:?}");

    stack.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
