//! The service token on the wire: the client interceptor that adds it to every call, and the
//! server interceptor that refuses calls without it (constant-time comparison of SHA-256
//! digests, so neither the token's bytes nor its length leak through timing).

use std::sync::{Arc, OnceLock};

use carrier_telemetry::prometheus::IntCounterVec;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Metadata a refusal carries, so a caller can tell "this service's credentials were refused"
/// (a misconfiguration an operator must fix) from a peer's own `Unauthenticated` answers (say,
/// a sender's wrong client secret).
pub const REFUSAL_METADATA: &str = "carrier-internal-auth";

/// Adds `authorization: Bearer <service token>` to every call of a client.
#[derive(Clone)]
pub struct AddServiceToken {
    header: MetadataValue<Ascii>,
}

impl AddServiceToken {
    /// `token` must be header-safe (checked by `InternalAuthSettings::validated`).
    pub(crate) fn new(token: &str) -> Option<Self> {
        let mut header: MetadataValue<Ascii> = format!("Bearer {token}").parse().ok()?;
        // Never indexed by HPACK, never printed by header dumps.
        header.set_sensitive(true);
        Some(Self { header })
    }
}

impl Interceptor for AddServiceToken {
    /// Adds the token, and the W3C trace context of the calling span (`traceparent`,
    /// `tracestate`): the server's span continues the caller's trace.
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let metadata = request.metadata_mut();
        metadata.insert("authorization", self.header.clone());
        for (key, value) in carrier_telemetry::trace::current_headers() {
            if let Ok(value) = value.parse() {
                metadata.insert(key, value);
            }
        }
        Ok(request)
    }
}

/// Why a call was refused (the `reason` label of `carrier_internal_auth_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `authorization` metadata at all.
    Missing,
    /// `authorization` present but not `Bearer <token>`.
    Malformed,
    /// A token, not the shared one.
    Wrong,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Malformed => "malformed",
            Refusal::Wrong => "wrong",
        }
    }

    fn status(self) -> Status {
        let message = match self {
            Refusal::Missing => {
                "internal call without credentials: Carrier's internal services need 'authorization: Bearer <internal_auth.service_token>'"
            }
            Refusal::Malformed => {
                "internal call with a malformed authorization header (expected 'Bearer <internal_auth.service_token>')"
            }
            Refusal::Wrong => {
                "internal call with a wrong service token: every Carrier service must share internal_auth.service_token"
            }
        };
        let mut status = Status::unauthenticated(message);
        status
            .metadata_mut()
            .insert(REFUSAL_METADATA, MetadataValue::from_static(self.as_str()));
        status
    }
}

/// Whether `status` is an internal server refusing this service's own credentials.
pub fn is_refusal(status: &Status) -> bool {
    status.code() == tonic::Code::Unauthenticated && status.metadata().contains_key(REFUSAL_METADATA)
}

/// The digest a presented token is compared with.
fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// Judges the `authorization` value of a call against the expected token's digest.
pub fn judge(expected: &[u8; 32], authorization: Option<&[u8]>) -> Result<(), Refusal> {
    let value = authorization.ok_or(Refusal::Missing)?;
    let token = value
        .strip_prefix(b"Bearer ")
        .or_else(|| value.strip_prefix(b"bearer "))
        .ok_or(Refusal::Malformed)?;
    if bool::from(digest(token).ct_eq(expected)) {
        Ok(())
    } else {
        Err(Refusal::Wrong)
    }
}

/// Refuses, with `Unauthenticated`, every call that does not carry the service token.
#[derive(Clone)]
pub struct CheckServiceToken {
    expected: Arc<[u8; 32]>,
    service: &'static str,
}

impl CheckServiceToken {
    pub(crate) fn new(token: &str, service: &'static str) -> Self {
        Self {
            expected: Arc::new(digest(token.as_bytes())),
            service,
        }
    }
}

fn refused_total() -> &'static IntCounterVec {
    static REFUSED: OnceLock<IntCounterVec> = OnceLock::new();
    REFUSED.get_or_init(|| {
        carrier_telemetry::counter_vec(
            "carrier_internal_auth_refused_total",
            "Internal gRPC calls refused for want of the service token, by serving service and reason (missing, malformed, wrong)",
            &["service", "reason"],
        )
    })
}

impl Interceptor for CheckServiceToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|value| value.as_bytes());
        match judge(&self.expected, authorization) {
            Ok(()) => Ok(request),
            Err(refusal) => {
                let peer = request
                    .remote_addr()
                    .map(|address| address.to_string())
                    .unwrap_or_else(|| "unknown".into());
                tracing::warn!(
                    service = self.service,
                    %peer,
                    reason = refusal.as_str(),
                    "internal grpc call refused: no valid service token"
                );
                refused_total()
                    .with_label_values(&[self.service, refusal.as_str()])
                    .inc();
                Err(refusal.status())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn only_the_shared_token_passes() {
        let expected = digest(TOKEN.as_bytes());
        assert_eq!(
            judge(&expected, Some(format!("Bearer {TOKEN}").as_bytes())),
            Ok(())
        );
        assert_eq!(
            judge(&expected, Some(format!("bearer {TOKEN}").as_bytes())),
            Ok(())
        );
        assert_eq!(judge(&expected, None), Err(Refusal::Missing));
        assert_eq!(judge(&expected, Some(TOKEN.as_bytes())), Err(Refusal::Malformed));
        assert_eq!(judge(&expected, Some(b"Basic abc")), Err(Refusal::Malformed));
        assert_eq!(judge(&expected, Some(b"Bearer ")), Err(Refusal::Wrong));
        // A prefix, an extension and a one-byte change of the token are all wrong.
        let prefix = format!("Bearer {}", &TOKEN[..31]);
        assert_eq!(judge(&expected, Some(prefix.as_bytes())), Err(Refusal::Wrong));
        let longer = format!("Bearer {TOKEN}0");
        assert_eq!(judge(&expected, Some(longer.as_bytes())), Err(Refusal::Wrong));
        let changed = format!("Bearer {}g", &TOKEN[..31]);
        assert_eq!(judge(&expected, Some(changed.as_bytes())), Err(Refusal::Wrong));
    }

    #[test]
    fn the_client_header_is_what_the_server_accepts() {
        let mut client = AddServiceToken::new(TOKEN).expect("header-safe token");
        let request = client.call(Request::new(())).expect("never refuses");
        let value = request.metadata().get("authorization").expect("header set");
        assert!(value.is_sensitive());
        let mut server = CheckServiceToken::new(TOKEN, "test");
        assert!(server.call(request).is_ok());

        let mut other = CheckServiceToken::new("ffffffffffffffffffffffffffffffff", "test");
        let request = client.call(Request::new(())).expect("never refuses");
        let status = other.call(request).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(is_refusal(&status));
        assert!(status.message().contains("wrong service token"), "{status:?}");
        assert!(!status.message().contains(TOKEN));
    }
}
