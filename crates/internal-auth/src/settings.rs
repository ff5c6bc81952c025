//! The `[internal_auth]` section every service with an internal gRPC server or client shares,
//! and the checks that decide whether it may start with it.

use std::path::PathBuf;

use carrier_config::Profile;
use serde::{Deserialize, Serialize};

/// The service token of the dev profile, shared by `make up`, the tests and every service
/// started with `CARRIER_PROFILE=dev`. Production refuses it.
pub const DEV_SERVICE_TOKEN: &str = "dev-internal-service-token-not-for-production-use";

/// The shortest service token accepted, in bytes.
pub const MIN_SERVICE_TOKEN_BYTES: usize = 32;

/// How Carrier's services prove to each other who they are: the `[internal_auth]` section
/// (`CARRIER_INTERNAL_AUTH__SERVICE_TOKEN`, `CARRIER_INTERNAL_AUTH__TLS_CERT_PATH`, ...). Every
/// service that serves or calls internal gRPC (ingress, router, delivery) must hold the same
/// token and, with TLS, certificates signed by the same CA.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct InternalAuthSettings {
    /// The shared secret every internal gRPC call carries (`authorization: Bearer <token>`) and
    /// every internal gRPC server checks: at least 32 bytes of visible ASCII (e.g.
    /// `openssl rand -hex 32`). Required in production; the dev profile uses
    /// [`DEV_SERVICE_TOKEN`] when unset.
    pub service_token: Option<String>,
    /// PEM certificate chain this service presents, both as a server and as a client (it needs
    /// the `serverAuth` and `clientAuth` extended key usages). Set together with
    /// `tls_key_path` and `tls_ca_path` to turn on mutual TLS; unset: plaintext gRPC.
    pub tls_cert_path: Option<PathBuf>,
    /// PEM private key of `tls_cert_path`.
    pub tls_key_path: Option<PathBuf>,
    /// PEM certificate of the CA that signs every internal certificate: servers refuse clients
    /// without a certificate it signed, and clients refuse servers without one.
    pub tls_ca_path: Option<PathBuf>,
    /// The name clients expect in the servers' certificates (a DNS name among their subject
    /// alternative names), e.g. `carrier-internal`; unset: the host of the URL dialled. Set it
    /// when servers are dialled by IP address (delivery workers advertise their pod IP).
    pub tls_server_name: Option<String>,
}

/// Never shows the token (a `Config` printed with `{:?}` must not leak it).
impl std::fmt::Debug for InternalAuthSettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("InternalAuthSettings")
            .field(
                "service_token",
                &self.service_token.as_ref().map(|_| "<redacted>"),
            )
            .field("tls_cert_path", &self.tls_cert_path)
            .field("tls_key_path", &self.tls_key_path)
            .field("tls_ca_path", &self.tls_ca_path)
            .field("tls_server_name", &self.tls_server_name)
            .finish()
    }
}

/// Why the `[internal_auth]` section (or a file it names) is not usable.
#[derive(Debug, thiserror::Error)]
pub enum InternalAuthError {
    #[error("internal_auth.service_token (CARRIER_INTERNAL_AUTH__SERVICE_TOKEN) is required in production: every internal gRPC server refuses calls without it; set the same random value (at least 32 bytes, e.g. `openssl rand -hex 32`) on ingress, router and delivery")]
    MissingToken,
    #[error("internal_auth.service_token (CARRIER_INTERNAL_AUTH__SERVICE_TOKEN) must be at least {MIN_SERVICE_TOKEN_BYTES} bytes (it is {0})")]
    TokenTooShort(usize),
    #[error("internal_auth.service_token (CARRIER_INTERNAL_AUTH__SERVICE_TOKEN) is the public development token; production needs a secret of its own")]
    DevTokenInProduction,
    #[error("internal_auth.service_token (CARRIER_INTERNAL_AUTH__SERVICE_TOKEN) must be visible ASCII without spaces (it travels in a gRPC header)")]
    TokenNotHeaderSafe,
    #[error("internal_auth: mutual TLS needs tls_cert_path, tls_key_path and tls_ca_path together (CARRIER_INTERNAL_AUTH__TLS_CERT_PATH, __TLS_KEY_PATH, __TLS_CA_PATH); missing: {0}")]
    IncompleteTls(String),
    #[error("internal_auth.tls_server_name is set but mutual TLS is not (tls_cert_path, tls_key_path, tls_ca_path)")]
    ServerNameWithoutTls,
    #[error("internal_auth: cannot read {field} {path}")]
    ReadFile {
        field: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("internal_auth: the TLS settings are not usable")]
    Tls(#[source] tonic::transport::Error),
    #[error("internal gRPC URL {url} is not valid")]
    Url {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
}

impl InternalAuthSettings {
    /// Fills the dev profile's token when unset, then checks the section: production needs a
    /// token of its own, at least [`MIN_SERVICE_TOKEN_BYTES`] long; TLS paths come all together.
    pub fn validated(mut self, profile: Profile) -> Result<Self, InternalAuthError> {
        if profile == Profile::Dev && self.service_token.is_none() {
            self.service_token = Some(DEV_SERVICE_TOKEN.to_string());
        }
        let token = self
            .service_token
            .as_deref()
            .ok_or(InternalAuthError::MissingToken)?;
        if profile == Profile::Production && token == DEV_SERVICE_TOKEN {
            return Err(InternalAuthError::DevTokenInProduction);
        }
        if token.len() < MIN_SERVICE_TOKEN_BYTES {
            return Err(InternalAuthError::TokenTooShort(token.len()));
        }
        if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(InternalAuthError::TokenNotHeaderSafe);
        }
        let paths = [
            ("tls_cert_path", self.tls_cert_path.is_some()),
            ("tls_key_path", self.tls_key_path.is_some()),
            ("tls_ca_path", self.tls_ca_path.is_some()),
        ];
        let missing: Vec<&str> = paths
            .iter()
            .filter(|(_, set)| !set)
            .map(|(name, _)| *name)
            .collect();
        if !missing.is_empty() && missing.len() < paths.len() {
            return Err(InternalAuthError::IncompleteTls(missing.join(", ")));
        }
        if missing.len() == paths.len() && self.tls_server_name.is_some() {
            return Err(InternalAuthError::ServerNameWithoutTls);
        }
        Ok(self)
    }

    /// Whether mutual TLS is configured (all three paths; see [`Self::validated`]).
    pub fn tls_enabled(&self) -> bool {
        self.tls_cert_path.is_some() && self.tls_key_path.is_some() && self.tls_ca_path.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_token(token: &str) -> InternalAuthSettings {
        InternalAuthSettings {
            service_token: Some(token.to_string()),
            ..Default::default()
        }
    }

    #[test]
    fn production_needs_a_token_of_its_own() {
        let error = InternalAuthSettings::default()
            .validated(Profile::Production)
            .unwrap_err()
            .to_string();
        assert!(error.contains("CARRIER_INTERNAL_AUTH__SERVICE_TOKEN"), "{error}");
        assert!(error.contains("required in production"), "{error}");

        let error = with_token(DEV_SERVICE_TOKEN)
            .validated(Profile::Production)
            .unwrap_err();
        assert!(
            matches!(error, InternalAuthError::DevTokenInProduction),
            "{error}"
        );

        let error = with_token("short-token-of-31-bytes-long-xx")
            .validated(Profile::Production)
            .unwrap_err();
        assert!(matches!(error, InternalAuthError::TokenTooShort(31)), "{error}");

        let error = with_token("a token with spaces that is long enough")
            .validated(Profile::Production)
            .unwrap_err();
        assert!(matches!(error, InternalAuthError::TokenNotHeaderSafe), "{error}");

        let token = "0123456789abcdef0123456789abcdef";
        let settings = with_token(token).validated(Profile::Production).unwrap();
        assert_eq!(settings.service_token.as_deref(), Some(token));
        let printed = format!("{settings:?}");
        assert!(
            !printed.contains(token) && printed.contains("<redacted>"),
            "{printed}"
        );
    }

    #[test]
    fn the_dev_profile_fills_the_dev_token_but_keeps_a_configured_one() {
        let dev = InternalAuthSettings::default().validated(Profile::Dev).unwrap();
        assert_eq!(dev.service_token.as_deref(), Some(DEV_SERVICE_TOKEN));
        assert!(DEV_SERVICE_TOKEN.len() >= MIN_SERVICE_TOKEN_BYTES);
        let own = "ffffffffffffffffffffffffffffffffffff";
        let dev = with_token(own).validated(Profile::Dev).unwrap();
        assert_eq!(dev.service_token.as_deref(), Some(own));
        // A short token is refused in dev as well: the other services would refuse it anyway
        // if they run with another profile.
        assert!(with_token("short").validated(Profile::Dev).is_err());
    }

    #[test]
    fn tls_paths_come_together() {
        let token = "0123456789abcdef0123456789abcdef";
        let partial = InternalAuthSettings {
            tls_cert_path: Some("/etc/carrier/tls/tls.crt".into()),
            ..with_token(token)
        };
        let error = partial.validated(Profile::Production).unwrap_err().to_string();
        assert!(error.contains("missing: tls_key_path, tls_ca_path"), "{error}");

        let name_only = InternalAuthSettings {
            tls_server_name: Some("carrier-internal".into()),
            ..with_token(token)
        };
        assert!(matches!(
            name_only.validated(Profile::Production).unwrap_err(),
            InternalAuthError::ServerNameWithoutTls
        ));

        let complete = InternalAuthSettings {
            tls_cert_path: Some("/etc/carrier/tls/tls.crt".into()),
            tls_key_path: Some("/etc/carrier/tls/tls.key".into()),
            tls_ca_path: Some("/etc/carrier/tls/ca.crt".into()),
            tls_server_name: Some("carrier-internal".into()),
            ..with_token(token)
        };
        let complete = complete.validated(Profile::Production).unwrap();
        assert!(complete.tls_enabled());
        assert!(!with_token(token).tls_enabled());
    }

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default)]
    struct Sample {
        internal_auth: InternalAuthSettings,
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail closure returns figment::Error
    fn the_section_comes_from_carrier_internal_auth_variables() {
        figment::Jail::expect_with(|jail| {
            let defaults: Sample = carrier_config::load().map_err(|e| e.to_string())?;
            assert_eq!(defaults.internal_auth, InternalAuthSettings::default());
            jail.set_env(
                "CARRIER_INTERNAL_AUTH__SERVICE_TOKEN",
                "0123456789abcdef0123456789abcdef",
            );
            jail.set_env("CARRIER_INTERNAL_AUTH__TLS_CA_PATH", "/etc/carrier/tls/ca.crt");
            let sample: Sample = carrier_config::load().map_err(|e| e.to_string())?;
            assert_eq!(
                sample.internal_auth.service_token.as_deref(),
                Some("0123456789abcdef0123456789abcdef")
            );
            assert_eq!(
                sample.internal_auth.tls_ca_path,
                Some(PathBuf::from("/etc/carrier/tls/ca.crt"))
            );
            Ok(())
        });
    }
}
