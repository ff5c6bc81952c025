//! The TLS and SASL settings of the `[kafka]` section, and their checks: a setting that cannot
//! work (a SASL mechanism without a SASL protocol, a CA file that is not there, a password
//! without a user) stops start-up with a message naming the field. Which librdkafka properties
//! they become, and which raw properties `[kafka.client]`, `[kafka.producer]` and
//! `[kafka.consumer]` may add, is `carrier_kafka::client`'s business.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};

use crate::{ConfigError, KafkaSettings};

/// `security.protocol`: how clients talk to the brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    /// No TLS, no authentication.
    #[default]
    #[serde(alias = "PLAINTEXT")]
    Plaintext,
    /// TLS.
    #[serde(alias = "SSL")]
    Ssl,
    /// SASL authentication without TLS: credentials and records travel in clear.
    #[serde(alias = "SASL_PLAINTEXT")]
    SaslPlaintext,
    /// SASL authentication over TLS.
    #[serde(alias = "SASL_SSL")]
    SaslSsl,
}

impl SecurityProtocol {
    /// librdkafka's name.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(self, SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl)
    }
}

/// `sasl.mechanism`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN", alias = "plain")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256", alias = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512", alias = "scram-sha-512")]
    ScramSha512,
    /// OAuth 2 bearer tokens from an OIDC provider (client credentials grant).
    #[serde(rename = "OAUTHBEARER", alias = "oauthbearer")]
    OauthBearer,
}

impl SaslMechanism {
    /// librdkafka's (and Kafka's) name.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::OauthBearer => "OAUTHBEARER",
        }
    }
}

/// `ssl.endpoint.identification.algorithm`: whether a broker's certificate must name the host
/// dialled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EndpointIdentification {
    /// Check the host name (RFC 2818).
    #[default]
    Https,
    /// Accept any certificate the CA signed, whatever name it carries.
    None,
}

impl EndpointIdentification {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointIdentification::Https => "https",
            EndpointIdentification::None => "none",
        }
    }
}

/// Words in a librdkafka property name whose value is a secret (kept out of `Debug`).
const SECRET_PROPERTY_WORDS: [&str; 5] = ["password", "secret", "passphrase", "key.pem", "token"];

/// Whether the librdkafka property `name` holds a secret (`ssl.keystore.password`, ...).
pub fn is_secret_property(name: &str) -> bool {
    SECRET_PROPERTY_WORDS.iter().any(|word| name.contains(word))
}

/// The property name as librdkafka spells it: names from the environment cannot hold dots, so
/// `socket_keepalive_enable` means `socket.keepalive.enable` (librdkafka's settable names use
/// dots, `log_level` aside).
pub fn property_name(name: &str) -> String {
    let name = name.trim();
    if name.contains('.') || name == "log_level" {
        name.to_string()
    } else {
        name.replace('_', ".")
    }
}

/// Deserializes a `[kafka.client]`-style table of librdkafka properties: values may be strings,
/// numbers or booleans (all become strings); names are normalized by [`property_name`].
pub fn properties<'de, D: Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum PropertyValue {
        Text(String),
        Bool(bool),
        Unsigned(u64),
        Signed(i64),
        Float(f64),
    }
    let table = BTreeMap::<String, PropertyValue>::deserialize(deserializer)?;
    Ok(table
        .into_iter()
        .map(|(name, value)| {
            let value = match value {
                PropertyValue::Text(text) => text,
                PropertyValue::Bool(flag) => flag.to_string(),
                PropertyValue::Unsigned(number) => number.to_string(),
                PropertyValue::Signed(number) => number.to_string(),
                PropertyValue::Float(number) => number.to_string(),
            };
            (property_name(&name), value)
        })
        .collect())
}

/// `Debug` of a properties table: secret values redacted.
pub(crate) struct RedactedProperties<'a>(pub &'a BTreeMap<String, String>);

impl std::fmt::Debug for RedactedProperties<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut map = formatter.debug_map();
        for (name, value) in self.0 {
            if is_secret_property(name) {
                map.entry(name, &crate::REDACTED);
            } else {
                map.entry(name, value);
            }
        }
        map.finish()
    }
}

/// Never shows a password or secret, also in the pass-through tables.
impl std::fmt::Debug for KafkaSettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("KafkaSettings")
            .field("brokers", &self.brokers)
            .field("topic_prefix", &self.topic_prefix)
            .field("session_timeout_ms", &self.session_timeout_ms)
            .field("message_timeout_ms", &self.message_timeout_ms)
            .field("linger_ms", &self.linger_ms)
            .field("fetch_wait_max_ms", &self.fetch_wait_max_ms)
            .field("idle_after_ms", &self.idle_after_ms)
            .field("idle_peek_interval_ms", &self.idle_peek_interval_ms)
            .field("enable_idempotence", &self.enable_idempotence)
            .field("consumer_queue_kbytes", &self.consumer_queue_kbytes)
            .field("producer_queue_kbytes", &self.producer_queue_kbytes)
            .field("max_record_bytes", &self.max_record_bytes)
            .field("instance_id", &self.instance_id)
            .field("security_protocol", &self.security_protocol)
            .field("ssl_ca_location", &self.ssl_ca_location)
            .field("ssl_certificate_location", &self.ssl_certificate_location)
            .field("ssl_key_location", &self.ssl_key_location)
            .field("ssl_key_password", &self.ssl_key_password)
            .field("ssl_endpoint_identification", &self.ssl_endpoint_identification)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("sasl_username", &self.sasl_username)
            .field("sasl_password", &self.sasl_password)
            .field(
                "sasl_oauthbearer_token_endpoint_url",
                &self.sasl_oauthbearer_token_endpoint_url,
            )
            .field("sasl_oauthbearer_client_id", &self.sasl_oauthbearer_client_id)
            .field(
                "sasl_oauthbearer_client_secret",
                &self.sasl_oauthbearer_client_secret,
            )
            .field("sasl_oauthbearer_scope", &self.sasl_oauthbearer_scope)
            .field("client", &RedactedProperties(&self.client))
            .field("producer", &RedactedProperties(&self.producer))
            .field("consumer", &RedactedProperties(&self.consumer))
            .finish()
    }
}

fn invalid(text: String) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid(text))
}

/// Checks that the file (or, for a CA, directory) `path` of `field` can be read.
fn check_readable(field: &str, path: &Path, directory_allowed: bool) -> Result<(), ConfigError> {
    let metadata = std::fs::metadata(path)
        .map_err(|error| ConfigError::Invalid(format!("{field}: cannot read {}: {error}", path.display())))?;
    if metadata.is_dir() {
        if directory_allowed {
            return std::fs::read_dir(path).map(|_| ()).map_err(|error| {
                ConfigError::Invalid(format!("{field}: cannot read {}: {error}", path.display()))
            });
        }
        return invalid(format!("{field}: {} is a directory, not a file", path.display()));
    }
    std::fs::File::open(path)
        .map(|_| ())
        .map_err(|error| ConfigError::Invalid(format!("{field}: cannot read {}: {error}", path.display())))
}

impl KafkaSettings {
    /// Checks the connection settings (brokers, TLS, SASL); the error names the field. The
    /// pass-through tables are checked by `carrier_kafka::client::validate`, which knows
    /// librdkafka's properties.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.brokers.split(',').all(|broker| broker.trim().is_empty()) {
            return invalid("kafka.brokers must name at least one broker (host:port)".into());
        }
        let protocol = self.security_protocol;
        let tls_fields = [
            ("kafka.ssl_ca_location", self.ssl_ca_location.is_some()),
            (
                "kafka.ssl_certificate_location",
                self.ssl_certificate_location.is_some(),
            ),
            ("kafka.ssl_key_location", self.ssl_key_location.is_some()),
            ("kafka.ssl_key_password", self.ssl_key_password.is_some()),
        ];
        if !protocol.uses_tls() {
            if let Some((field, _)) = tls_fields.iter().find(|(_, set)| *set) {
                return invalid(format!(
                    "{field} is set but kafka.security_protocol is {}, which does not use TLS \
                     (use ssl or sasl_ssl)",
                    protocol.as_str()
                ));
            }
        }
        if let Some(path) = &self.ssl_ca_location {
            check_readable("kafka.ssl_ca_location", path, true)?;
        }
        match (&self.ssl_certificate_location, &self.ssl_key_location) {
            (Some(certificate), Some(key)) => {
                check_readable("kafka.ssl_certificate_location", certificate, false)?;
                check_readable("kafka.ssl_key_location", key, false)?;
            }
            (Some(_), None) => {
                return invalid(
                    "kafka.ssl_certificate_location needs kafka.ssl_key_location (the client \
                     certificate's private key)"
                        .into(),
                )
            }
            (None, Some(_)) => {
                return invalid(
                    "kafka.ssl_key_location needs kafka.ssl_certificate_location (the client \
                     certificate)"
                        .into(),
                )
            }
            (None, None) => {}
        }
        if self.ssl_key_password.is_some() && self.ssl_key_location.is_none() {
            return invalid("kafka.ssl_key_password is set without kafka.ssl_key_location".into());
        }
        self.validate_sasl()
    }

    fn validate_sasl(&self) -> Result<(), ConfigError> {
        let protocol = self.security_protocol;
        let password_fields = [
            ("kafka.sasl_username", self.sasl_username.is_some()),
            ("kafka.sasl_password", self.sasl_password.is_some()),
        ];
        let oauth_fields = [
            (
                "kafka.sasl_oauthbearer_token_endpoint_url",
                self.sasl_oauthbearer_token_endpoint_url.is_some(),
            ),
            (
                "kafka.sasl_oauthbearer_client_id",
                self.sasl_oauthbearer_client_id.is_some(),
            ),
            (
                "kafka.sasl_oauthbearer_client_secret",
                self.sasl_oauthbearer_client_secret.is_some(),
            ),
            (
                "kafka.sasl_oauthbearer_scope",
                self.sasl_oauthbearer_scope.is_some(),
            ),
        ];
        let Some(mechanism) = self.sasl_mechanism else {
            if protocol.uses_sasl() {
                return invalid(format!(
                    "kafka.security_protocol {} needs kafka.sasl_mechanism (PLAIN, SCRAM-SHA-256, \
                     SCRAM-SHA-512 or OAUTHBEARER)",
                    protocol.as_str()
                ));
            }
            let stray = password_fields
                .iter()
                .chain(oauth_fields.iter())
                .find(|(_, set)| *set);
            if let Some((field, _)) = stray {
                return invalid(format!("{field} is set but kafka.sasl_mechanism is not"));
            }
            return Ok(());
        };
        if !protocol.uses_sasl() {
            return invalid(format!(
                "kafka.sasl_mechanism {} needs kafka.security_protocol sasl_ssl (or \
                 sasl_plaintext); it is {}",
                mechanism.as_str(),
                protocol.as_str()
            ));
        }
        let (needed, unused) = match mechanism {
            SaslMechanism::OauthBearer => (&oauth_fields[..3], &password_fields[..]),
            _ => (&password_fields[..], &oauth_fields[..]),
        };
        if let Some((field, _)) = needed.iter().find(|(_, set)| !set) {
            return invalid(format!(
                "kafka.sasl_mechanism {} needs {field}",
                mechanism.as_str()
            ));
        }
        if let Some((field, _)) = unused.iter().find(|(_, set)| *set) {
            return invalid(format!(
                "{field} is not used with kafka.sasl_mechanism {}",
                mechanism.as_str()
            ));
        }
        if let Some(url) = &self.sasl_oauthbearer_token_endpoint_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return invalid("kafka.sasl_oauthbearer_token_endpoint_url must be an http(s):// URL".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Secret;

    fn tls(ca: &Path) -> KafkaSettings {
        KafkaSettings {
            security_protocol: SecurityProtocol::Ssl,
            ssl_ca_location: Some(ca.to_path_buf()),
            ..KafkaSettings::default()
        }
    }

    fn error_of(settings: &KafkaSettings) -> String {
        settings.validate().unwrap_err().to_string()
    }

    #[test]
    fn plaintext_defaults_pass() {
        KafkaSettings::default().validate().unwrap();
    }

    #[test]
    fn tls_files_must_exist_and_come_in_pairs() {
        let dir = std::env::temp_dir().join(format!("carrier-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.crt");
        std::fs::write(&ca, "PEM").unwrap();
        tls(&ca).validate().unwrap();

        let missing = tls(&dir.join("nowhere.crt"));
        let error = error_of(&missing);
        assert!(error.contains("kafka.ssl_ca_location: cannot read"), "{error}");
        assert!(error.contains("nowhere.crt"), "{error}");

        let certificate_only = KafkaSettings {
            ssl_certificate_location: Some(ca.clone()),
            ..tls(&ca)
        };
        assert!(error_of(&certificate_only).contains("needs kafka.ssl_key_location"));

        let plaintext_with_ca = KafkaSettings {
            security_protocol: SecurityProtocol::Plaintext,
            ..tls(&ca)
        };
        let error = error_of(&plaintext_with_ca);
        assert!(
            error.contains("kafka.ssl_ca_location is set but kafka.security_protocol is plaintext"),
            "{error}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sasl_needs_its_protocol_and_credentials() {
        let scram = KafkaSettings {
            security_protocol: SecurityProtocol::SaslSsl,
            sasl_mechanism: Some(SaslMechanism::ScramSha512),
            sasl_username: Some("carrier".into()),
            sasl_password: Some(Secret::from("s3cr3t-password")),
            ..KafkaSettings::default()
        };
        scram.validate().unwrap();

        let without_protocol = KafkaSettings {
            security_protocol: SecurityProtocol::Ssl,
            ..scram.clone()
        };
        let error = error_of(&without_protocol);
        assert!(
            error.contains("kafka.sasl_mechanism SCRAM-SHA-512 needs kafka.security_protocol sasl_ssl"),
            "{error}"
        );

        let without_password = KafkaSettings {
            sasl_password: None,
            ..scram.clone()
        };
        assert!(error_of(&without_password).contains("needs kafka.sasl_password"));

        let without_mechanism = KafkaSettings {
            sasl_mechanism: None,
            ..scram.clone()
        };
        assert!(error_of(&without_mechanism).contains("sasl_ssl needs kafka.sasl_mechanism"));

        let password_without_mechanism = KafkaSettings {
            security_protocol: SecurityProtocol::Plaintext,
            sasl_mechanism: None,
            ..scram.clone()
        };
        assert!(error_of(&password_without_mechanism)
            .contains("kafka.sasl_username is set but kafka.sasl_mechanism is not"));

        let oauth = KafkaSettings {
            sasl_mechanism: Some(SaslMechanism::OauthBearer),
            sasl_username: None,
            sasl_password: None,
            sasl_oauthbearer_token_endpoint_url: Some("https://idp.example/oauth2/token".into()),
            sasl_oauthbearer_client_id: Some("carrier".into()),
            sasl_oauthbearer_client_secret: Some(Secret::from("client-s3cr3t")),
            ..scram.clone()
        };
        oauth.validate().unwrap();
        let oauth_with_password = KafkaSettings {
            sasl_password: Some(Secret::from("x")),
            ..oauth.clone()
        };
        assert!(error_of(&oauth_with_password)
            .contains("kafka.sasl_password is not used with kafka.sasl_mechanism OAUTHBEARER"));
        let oauth_without_secret = KafkaSettings {
            sasl_oauthbearer_client_secret: None,
            ..oauth
        };
        assert!(error_of(&oauth_without_secret).contains("needs kafka.sasl_oauthbearer_client_secret"));
    }

    #[test]
    fn debug_shows_no_password_nor_secret_property() {
        let settings = KafkaSettings {
            security_protocol: SecurityProtocol::SaslSsl,
            sasl_mechanism: Some(SaslMechanism::Plain),
            sasl_username: Some("carrier".into()),
            sasl_password: Some(Secret::from("sasl-s3cr3t")),
            ssl_key_password: Some(Secret::from("key-s3cr3t")),
            sasl_oauthbearer_client_secret: Some(Secret::from("oauth-s3cr3t")),
            client: BTreeMap::from([
                ("ssl.keystore.password".to_string(), "keystore-s3cr3t".to_string()),
                ("socket.keepalive.enable".to_string(), "true".to_string()),
            ]),
            ..KafkaSettings::default()
        };
        let printed = format!("{settings:?}");
        assert!(!printed.contains("s3cr3t"), "{printed}");
        assert!(printed.contains("carrier"), "{printed}");
        assert!(printed.contains("socket.keepalive.enable"), "{printed}");
    }

    #[test]
    fn property_names_from_the_environment_get_their_dots() {
        assert_eq!(
            property_name("socket_keepalive_enable"),
            "socket.keepalive.enable"
        );
        assert_eq!(
            property_name("socket.keepalive.enable"),
            "socket.keepalive.enable"
        );
        assert_eq!(property_name("log_level"), "log_level");
    }
}
