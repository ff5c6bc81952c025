//! What every service's `debug_output_shows_no_secret` test uses: settings holding recognisable
//! secrets (each contains `s3cr3t`), and the check that a printed configuration shows none of them.

use crate::{KafkaSettings, SaslMechanism, SecurityProtocol};

/// A database URL with a password.
pub const DATABASE_URL: &str = "postgres://carrier:db-s3cr3t@db:5432/carrier";

/// Kafka settings with a SASL password.
pub fn kafka_with_secrets() -> KafkaSettings {
    KafkaSettings {
        security_protocol: SecurityProtocol::SaslSsl,
        sasl_mechanism: Some(SaslMechanism::ScramSha512),
        sasl_username: Some("carrier".into()),
        sasl_password: Some("kafka-s3cr3t".into()),
        ..KafkaSettings::default()
    }
}

/// Panics when `printed` (a configuration's `{:?}`) shows a secret, or not the redacted
/// [`DATABASE_URL`].
pub fn assert_no_secret(printed: &str) {
    assert!(!printed.contains("s3cr3t"), "{printed}");
    assert!(
        printed.contains("postgres://carrier:<redacted>@db:5432/carrier"),
        "{printed}"
    );
}
