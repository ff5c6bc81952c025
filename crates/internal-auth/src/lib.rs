//! Authentication between Carrier's own services. Ingress calls the router (configuration,
//! routing, credentials) and the delivery workers' control services; delivery calls the router
//! (destination settings, signing secrets). None of those calls may come from anyone else.
//!
//! - `settings`: the `[internal_auth]` section (`CARRIER_INTERNAL_AUTH__*`) and its start-up
//!   checks: a shared service token (required in production, a public dev default otherwise)
//!   and, optionally, mutual TLS files.
//! - `token`: the interceptors that put the token on every call and refuse calls without it
//!   (`Unauthenticated`, a WARN log with the peer address, `carrier_internal_auth_refused_total`).
//!
//! [`InternalAuth`] turns the settings into what a service uses: [`InternalAuth::server`] is
//! the `tonic` server builder of every internal server (token check, and TLS requiring a client
//! certificate signed by the CA), [`InternalAuth::channel`] the channel of every internal client.
#![forbid(unsafe_code)]

mod settings;
mod status;
mod token;

use std::sync::Arc;
use std::time::Duration;

use carrier_config::Profile;
use tonic::service::interceptor::InterceptedService;
use tonic::service::InterceptorLayer;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Server, ServerTlsConfig};

pub use settings::{InternalAuthError, InternalAuthSettings, DEV_SERVICE_TOKEN, MIN_SERVICE_TOKEN_BYTES};
pub use token::{is_refusal, judge, AddServiceToken, CheckServiceToken, Refusal, REFUSAL_METADATA};

/// A channel to an internal server whose every call carries the service token.
pub type AuthenticatedChannel = InterceptedService<Channel, AddServiceToken>;

/// The server builder of an internal gRPC server: every service added to it checks the token.
pub type AuthenticatedServer = Server<
    tower::layer::util::Stack<
        InterceptorLayer<CheckServiceToken>,
        tower::layer::util::Stack<status::RecordStatusLayer, tower::layer::util::Identity>,
    >,
>;

/// The SERVER span of one call to an internal gRPC server (OpenTelemetry's RPC conventions:
/// `rpc.system`, `rpc.service`, `rpc.method`; named `service/method`), a child of the caller's
/// span when its metadata carries a W3C `traceparent`.
fn server_span(request: &tonic::codegen::http::Request<()>) -> tracing::Span {
    if !carrier_telemetry::trace::enabled() {
        return tracing::Span::none();
    }
    let path = request.uri().path().trim_start_matches('/');
    let (service, method) = path.split_once('/').unwrap_or((path, ""));
    let span = tracing::info_span!(
        "grpc.server",
        otel.name = path,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let headers = request.headers();
    let parent =
        carrier_telemetry::trace::extract(|name| headers.get(name).and_then(|value| value.to_str().ok()));
    carrier_telemetry::trace::set_parent(&span, parent);
    span
}

/// The PEM files of mutual TLS, read once at start.
struct TlsFiles {
    certificate: Vec<u8>,
    key: Vec<u8>,
    ca: Vec<u8>,
    server_name: Option<String>,
}

impl TlsFiles {
    fn server_config(&self) -> ServerTlsConfig {
        // A client certificate signed by the CA is required (not optional).
        ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(&self.certificate, &self.key))
            .client_ca_root(Certificate::from_pem(&self.ca))
    }

    fn client_config(&self) -> ClientTlsConfig {
        let config = ClientTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(&self.certificate, &self.key))
            .ca_certificate(Certificate::from_pem(&self.ca));
        match &self.server_name {
            Some(name) => config.domain_name(name.clone()),
            None => config,
        }
    }
}

/// One service's internal credentials: its token (and TLS identity), ready for its servers and
/// clients. Cheap to clone.
#[derive(Clone)]
pub struct InternalAuth {
    service: &'static str,
    add_token: AddServiceToken,
    check_token: CheckServiceToken,
    tls: Option<Arc<TlsFiles>>,
}

impl InternalAuth {
    /// Validates `settings` for `profile` (see [`InternalAuthSettings::validated`]) and reads
    /// the TLS files, if any; a file that is missing or does not parse fails here, at start.
    /// `service` names this service in logs and metrics.
    pub fn new(
        service: &'static str,
        settings: &InternalAuthSettings,
        profile: Profile,
    ) -> Result<Self, InternalAuthError> {
        let settings = settings.clone().validated(profile)?;
        let token = settings.service_token.as_deref().expect("validated");
        let add_token = AddServiceToken::new(token).ok_or(InternalAuthError::TokenNotHeaderSafe)?;
        let tls = if settings.tls_enabled() {
            let read = |field: &'static str, path: &std::path::PathBuf| {
                std::fs::read(path).map_err(|source| InternalAuthError::ReadFile {
                    field,
                    path: path.clone(),
                    source,
                })
            };
            let files = TlsFiles {
                certificate: read("tls_cert_path", settings.tls_cert_path.as_ref().expect("set"))?,
                key: read("tls_key_path", settings.tls_key_path.as_ref().expect("set"))?,
                ca: read("tls_ca_path", settings.tls_ca_path.as_ref().expect("set"))?,
                server_name: settings.tls_server_name.clone(),
            };
            // Both sides parse now, so bad PEM stops start-up instead of the first call.
            Server::builder()
                .tls_config(files.server_config())
                .map_err(InternalAuthError::Tls)?;
            Endpoint::from_static("https://carrier-internal")
                .tls_config(files.client_config())
                .map_err(InternalAuthError::Tls)?;
            Some(Arc::new(files))
        } else {
            None
        };
        Ok(Self {
            service,
            add_token,
            check_token: CheckServiceToken::new(token, service),
            tls,
        })
    }

    /// Whether internal calls use mutual TLS.
    pub fn tls_enabled(&self) -> bool {
        self.tls.is_some()
    }

    /// The scheme of this service's internal URLs: `https` with TLS, else `http` (e.g. the
    /// default URL a delivery worker advertises for its control service).
    pub fn scheme(&self) -> &'static str {
        if self.tls_enabled() {
            "https"
        } else {
            "http"
        }
    }

    /// The builder of an internal gRPC server: calls without the service token are refused
    /// with `Unauthenticated`; with TLS, connections without a client certificate signed by
    /// the CA are refused at the handshake.
    pub fn server(&self) -> Result<AuthenticatedServer, InternalAuthError> {
        let mut builder = Server::builder();
        if let Some(tls) = &self.tls {
            builder = builder
                .tls_config(tls.server_config())
                .map_err(InternalAuthError::Tls)?;
        }
        tracing::debug!(
            service = self.service,
            tls = self.tls_enabled(),
            "internal grpc server authenticates its callers"
        );
        Ok(builder
            .trace_fn(server_span)
            // Added first, so it wraps the token check (tonic stacks later layers inside).
            .layer(status::RecordStatusLayer)
            .layer(InterceptorLayer::new(self.check_token.clone())))
    }

    /// A lazily connecting channel to the internal server at `url`, carrying the service token
    /// on every call. With TLS every connection uses it, whatever the URL's scheme says
    /// (`http://` is dialled as `https://`), presenting this service's certificate.
    pub fn channel(
        &self,
        url: &str,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<AuthenticatedChannel, InternalAuthError> {
        let url = match (&self.tls, url.strip_prefix("http://")) {
            (Some(_), Some(rest)) => format!("https://{rest}"),
            _ => url.to_string(),
        };
        let invalid = |source| InternalAuthError::Url {
            url: url.clone(),
            source,
        };
        let mut endpoint = Endpoint::from_shared(url.clone()).map_err(invalid)?;
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.client_config()).map_err(invalid)?;
        }
        let channel = endpoint
            .connect_timeout(connect_timeout)
            .timeout(timeout)
            .connect_lazy();
        Ok(InterceptedService::new(channel, self.add_token.clone()))
    }

    /// The interceptor that adds the token, for a client built over a channel of its own.
    pub fn client_interceptor(&self) -> AddServiceToken {
        self.add_token.clone()
    }
}
