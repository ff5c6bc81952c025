//! Configuration loading shared by every Carrier service.
//!
//! Each service owns a typed `Config` struct with documented defaults (`Default`). [`load`] layers,
//! in order: the defaults, the TOML file named by `CARRIER_CONFIG_FILE` (if set), then every
//! `CARRIER_<FIELD>` environment variable. Sections nest with a double underscore:
//! `CARRIER_HTTP_ADDR` sets `http_addr`, `CARRIER_KAFKA__BROKERS` sets `brokers` of the
//! `[kafka]` section. A value that does not parse ends start-up with a message naming the field,
//! never a panic.
//!
//! Any `CARRIER_<FIELD>` can instead be given as `CARRIER_<FIELD>_FILE`, naming a file whose
//! content is the value ([`files`]: secrets mounted as files). [`secret`] keeps secrets out of
//! `Debug` output and logs; [`kafka_security`] checks the `[kafka]` section's TLS and SASL
//! settings.
#![forbid(unsafe_code)]

mod files;
pub mod kafka_security;
#[doc(hidden)]
pub mod redaction_check;
pub mod secret;

use std::collections::BTreeMap;
use std::path::PathBuf;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{de::DeserializeOwned, Deserialize, Deserializer, Serialize};

pub use kafka_security::{EndpointIdentification, SaslMechanism, SecurityProtocol};
pub use secret::{redact_url, RedactedOption, RedactedUrl, Secret, REDACTED};

/// Why a configuration could not be loaded or is not acceptable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Load(#[source] Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Loads `T` from its defaults, the optional `CARRIER_CONFIG_FILE`, then `CARRIER_*` variables
/// and the files of `CARRIER_*_FILE` variables (a value and its `_FILE` both set is an error).
pub fn load<T: Serialize + DeserializeOwned + Default>() -> Result<T, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Ok(path) = std::env::var("CARRIER_CONFIG_FILE") {
        if !std::path::Path::new(&path).exists() {
            return Err(ConfigError::Invalid(format!(
                "CARRIER_CONFIG_FILE {path} does not exist"
            )));
        }
        figment = figment.merge(Toml::file(path));
    }
    let variables: Vec<(String, String)> = std::env::vars_os()
        .map(|(name, value)| {
            (
                name.to_string_lossy().into_owned(),
                value.to_string_lossy().into_owned(),
            )
        })
        .collect();
    let file_values = files::FileValues::read(&variables)?;
    figment = figment.merge(
        Env::prefixed("CARRIER_")
            .split("__")
            .ignore(&["config_file"])
            // `CARRIER_<X>_FILE` names a file, read by `file_values`.
            .filter(|key| files::file_variable_target(&format!("CARRIER_{key}")).is_none()),
    );
    figment = figment.merge(file_values);
    figment
        .extract()
        .map_err(|error| ConfigError::Load(Box::new(error)))
}

/// Deserializes a list given either as a list (TOML) or as one comma-separated string (the
/// environment: `CARRIER_X=10.0.0.0/8,::1`); entries are trimmed and empty ones dropped. Use with
/// `#[serde(deserialize_with = "carrier_config::list_or_comma_separated")]`.
pub fn list_or_comma_separated<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrString {
        List(Vec<String>),
        String(String),
    }
    let entries = match ListOrString::deserialize(deserializer)? {
        ListOrString::List(entries) => entries,
        ListOrString::String(text) => text.split(',').map(str::to_string).collect(),
    };
    Ok(entries
        .into_iter()
        .map(|entry| entry.trim().to_string())
        .filter(|entry| !entry.is_empty())
        .collect())
}

/// How a deployment behaves where safety and convenience pull apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Refuses to start without secrets.
    #[default]
    Production,
    /// Local development and tests: default secrets. (Which destination and webhook addresses
    /// delivery and the notifier may dial is their `[outbound]` setting; `make up` and the tests
    /// allow loopback there.)
    Dev,
}

/// Words that mark a value copied from an example instead of generated (`change-me-...`).
const PLACEHOLDER_MARKS: [&str; 6] = [
    "changeme",
    "change-me",
    "change_me",
    "replace-me",
    "placeholder",
    "example",
];

/// Checks that a production secret (`field` names it in the error) is not one of the values
/// Carrier's own files show as examples or use in development (`known`), nor marked as a
/// placeholder (`change-me...`), nor one character repeated: such a value passes a length
/// check but is known to everyone who read the compose file.
pub fn check_not_placeholder(field: &str, value: &str, known: &[&str]) -> Result<(), ConfigError> {
    let lowered = value.to_ascii_lowercase();
    let marked = PLACEHOLDER_MARKS.iter().any(|mark| lowered.contains(mark));
    let repeated = value.chars().all(|c| value.starts_with(c));
    if marked || repeated || known.contains(&value) {
        return Err(ConfigError::Invalid(format!(
            "{field} is a placeholder or example value; generate a secret of your own \
             (e.g. `openssl rand -hex 32`)"
        )));
    }
    Ok(())
}

/// Settings every service that talks to Kafka shares: the `[kafka]` section
/// (`CARRIER_KAFKA__BROKERS`, `CARRIER_KAFKA__TOPIC_PREFIX`, ...). Its `Debug` never shows a
/// password or secret ([`kafka_security`]).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list of bootstrap brokers.
    pub brokers: String,
    /// Prefix of every topic name: `carrier.` gives `carrier.inbound`, `carrier.deliveries`, ...
    pub topic_prefix: String,
    /// How long a consumer's partition lease lasts (renewed every quarter of it): a member that
    /// died or is cut off from Postgres loses its partitions after this long, and stops its own
    /// work on them a fifth of it earlier. Partitions are assigned by leases in Postgres, not by
    /// Kafka's group coordinator (`crates/kafka/src/consumer/design.md`).
    pub session_timeout_ms: u32,
    /// How long a produce may take (queueing, retries and the broker's ack) before it fails.
    pub message_timeout_ms: u32,
    /// Producer batching delay; small values favour latency.
    pub linger_ms: u32,
    /// Longest a consumer's fetch waits at the broker for new records. Small values cut
    /// end-to-end latency (each hop of the pipeline waits up to this long on a quiet topic).
    pub fetch_wait_max_ms: u32,
    /// For brokers that answer a fetch only after its whole wait, records or not (Tansu 0.6):
    /// a partition a consumer has seen no record of for this long stops being fetched, and is
    /// looked at again every `idle_peek_interval_ms`, or at once when a Carrier producer rings
    /// its doorbell (a Postgres `NOTIFY` after each write, at most one per partition every
    /// 20 ms; see `crates/kafka/src/doorbell.rs`). Without it every consumer fetches every
    /// partition every `fetch_wait_max_ms`, and an idle Tansu spends a core answering.
    /// `0` (the default) fetches always: what Apache Kafka needs, whose fetches return as soon
    /// as a record arrives (there, raise `fetch_wait_max_ms` instead; docs/production.md).
    pub idle_after_ms: u32,
    /// With `idle_after_ms`: how often an idle partition is fetched anyway, the longest a
    /// record waits when its doorbell was not heard (a producer outside Carrier, a lost
    /// Postgres connection).
    pub idle_peek_interval_ms: u32,
    /// Idempotent producers (`enable.idempotence`). Keep it on with Apache Kafka, Redpanda or
    /// MSK. Turn it off against Tansu 0.6: its SQLite engine panics when an idempotent producer
    /// that outlived a broker restart writes again (Carrier's ordering does not depend on it).
    pub enable_idempotence: bool,
    /// Records a consumer prefetches, in KiB (`queued.max.messages.kbytes`): memory a worker
    /// holds beyond its own caps. 16 MiB keeps the fetch pipeline full; against Tansu, 4 MiB
    /// delivered 14-22 % less and 8 MiB peaked no lower with 1,000,000 parked
    /// (`carrier-bench delivery`, docs/benchmarks.md).
    pub consumer_queue_kbytes: u32,
    /// Room of a producer's local queue, in KiB (`queue.buffering.max.kbytes`): records waiting
    /// to be sent or acknowledged. Ingress answers 503 when a message does not fit.
    pub producer_queue_kbytes: u32,
    /// The largest record Carrier's producers write (`message.max.bytes`), at most 12 MiB (what
    /// its consumers fetch). Set it to the cluster's `message.max.bytes` (1 MiB by default on
    /// Kafka) and a record too large fails at once, before it reaches the broker: at ingress a
    /// 502, at the router a halted partition (see the runbook).
    pub max_record_bytes: usize,
    /// How clients talk to the brokers (`security.protocol`): `plaintext` (default), `ssl`
    /// (TLS), `sasl_plaintext` (SASL without TLS: passwords and records travel in clear) or
    /// `sasl_ssl` (SASL over TLS).
    pub security_protocol: SecurityProtocol,
    /// PEM file (or directory) of the CA certificate(s) that sign the brokers' certificates
    /// (`ssl.ca.location`), e.g. Strimzi's `<cluster>-cluster-ca-cert` secret's `ca.crt`.
    /// Unset: the system's CA store (enough for brokers with publicly trusted certificates,
    /// such as Amazon MSK's).
    pub ssl_ca_location: Option<PathBuf>,
    /// PEM certificate this client presents to brokers that require client certificates
    /// (mutual TLS, `ssl.certificate.location`); set together with `ssl_key_location`.
    pub ssl_certificate_location: Option<PathBuf>,
    /// PEM private key of `ssl_certificate_location` (`ssl.key.location`).
    pub ssl_key_location: Option<PathBuf>,
    /// Passphrase of an encrypted `ssl_key_location` (`ssl.key.password`).
    pub ssl_key_password: Option<Secret>,
    /// Whether clients check that a broker's certificate names the host they dial
    /// (`ssl.endpoint.identification.algorithm`): `https` (default) or `none`. Keep `https`:
    /// `none` accepts any certificate the CA signed, for any name.
    pub ssl_endpoint_identification: EndpointIdentification,
    /// SASL mechanism (`sasl.mechanism`) with `security_protocol` `sasl_ssl` or
    /// `sasl_plaintext`: `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` (with `sasl_username` and
    /// `sasl_password`) or `OAUTHBEARER` (OIDC client credentials: the `sasl_oauthbearer_*`
    /// settings). Unset: no SASL.
    pub sasl_mechanism: Option<SaslMechanism>,
    /// SASL user (`sasl.username`) of `PLAIN` and `SCRAM-*`.
    pub sasl_username: Option<String>,
    /// SASL password (`sasl.password`) of `PLAIN` and `SCRAM-*`; e.g. from a file with
    /// `CARRIER_KAFKA__SASL_PASSWORD_FILE`.
    pub sasl_password: Option<Secret>,
    /// `OAUTHBEARER`: the OIDC token endpoint clients fetch their token from with the client
    /// credentials grant (`sasl.oauthbearer.token.endpoint.url`, `sasl.oauthbearer.method=oidc`).
    pub sasl_oauthbearer_token_endpoint_url: Option<String>,
    /// `OAUTHBEARER`: the OIDC client ID (`sasl.oauthbearer.client.id`).
    pub sasl_oauthbearer_client_id: Option<String>,
    /// `OAUTHBEARER`: the OIDC client secret (`sasl.oauthbearer.client.secret`).
    pub sasl_oauthbearer_client_secret: Option<Secret>,
    /// `OAUTHBEARER`: the scope requested (`sasl.oauthbearer.scope`), if the provider needs one.
    pub sasl_oauthbearer_scope: Option<String>,
    /// `[kafka.client]`: librdkafka properties Carrier does not model, for every client
    /// (producers, consumers, admin), e.g. `"socket.keepalive.enable" = "true"`. Applied after
    /// Carrier's own settings; the properties Carrier's correctness depends on or that have a
    /// field of their own are refused at start-up (`carrier_kafka::client`). From the
    /// environment write the dots as `_`: `CARRIER_KAFKA__CLIENT__SOCKET_KEEPALIVE_ENABLE=true`.
    #[serde(deserialize_with = "kafka_security::properties")]
    pub client: BTreeMap<String, String>,
    /// `[kafka.producer]`: as `client`, for producers only (applied after `client`).
    #[serde(deserialize_with = "kafka_security::properties")]
    pub producer: BTreeMap<String, String>,
    /// `[kafka.consumer]`: as `client`, for consumers only (applied after `client`).
    #[serde(deserialize_with = "kafka_security::properties")]
    pub consumer: BTreeMap<String, String>,
    /// A stable name for this process's place in its consumer groups
    /// (`CARRIER_KAFKA__INSTANCE_ID`), e.g. a StatefulSet pod's name (from the downward API's
    /// `metadata.name`). Shares of partitions are computed from it, so a process restarted
    /// under the same name gets the same partitions back, and the other members' partitions do
    /// not move. Unset (the default) or empty: every process is an instance of its own, as a
    /// Deployment's pods are. Each process still owns its leases under a member ID of its own:
    /// a restart never inherits its predecessor's leases, and two live processes given the same
    /// name (logged as a warning) split that name's partitions, never sharing one
    /// (`crates/kafka/src/consumer/design.md`, "Instances").
    pub instance_id: Option<String>,
}

impl KafkaSettings {
    /// [`KafkaSettings::instance_id`], trimmed; `None` when unset or empty.
    pub fn instance(&self) -> Option<&str> {
        self.instance_id
            .as_deref()
            .map(str::trim)
            .filter(|instance| !instance.is_empty())
    }
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic_prefix: "carrier.".into(),
            session_timeout_ms: 10_000,
            message_timeout_ms: 10_000,
            linger_ms: 2,
            fetch_wait_max_ms: 10,
            idle_after_ms: 0,
            idle_peek_interval_ms: 1_000,
            enable_idempotence: true,
            consumer_queue_kbytes: 16_384,
            producer_queue_kbytes: 262_144,
            max_record_bytes: 12 * 1024 * 1024,
            security_protocol: SecurityProtocol::Plaintext,
            ssl_ca_location: None,
            ssl_certificate_location: None,
            ssl_key_location: None,
            ssl_key_password: None,
            ssl_endpoint_identification: EndpointIdentification::Https,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            sasl_oauthbearer_token_endpoint_url: None,
            sasl_oauthbearer_client_id: None,
            sasl_oauthbearer_client_secret: None,
            sasl_oauthbearer_scope: None,
            client: BTreeMap::new(),
            producer: BTreeMap::new(),
            consumer: BTreeMap::new(),
            instance_id: None,
        }
    }
}

/// The environment a source or destination belongs to; it decides the retry rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Production,
    Staging,
    Development,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Production => "production",
            Environment::Staging => "staging",
            Environment::Development => "development",
        }
    }
}

impl std::str::FromStr for Environment {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "production" => Ok(Environment::Production),
            "staging" => Ok(Environment::Staging),
            "development" => Ok(Environment::Development),
            other => Err(format!(
                "unknown environment '{other}' (expected production, staging or development)"
            )),
        }
    }
}

impl std::fmt::Display for Environment {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_secrets_are_refused_and_generated_ones_pass() {
        let known = ["dev-admin-token"];
        for value in [
            "change-me-operator-token",
            "CHANGE-ME-to-32-or-more-random-bytes-please",
            "changeme0123456789",
            "an-example-key-that-is-long-enough",
            "dev-admin-token",
            "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        ] {
            let error = check_not_placeholder("admin_token", value, &known).unwrap_err();
            assert!(
                error.to_string().contains("admin_token is a placeholder"),
                "{value}: {error}"
            );
        }
        check_not_placeholder("admin_token", "9f86d081884c7d659a2feaa0c55ad015", &known).unwrap();
    }

    #[derive(Debug, Serialize, Deserialize)]
    #[serde(default)]
    struct Sample {
        http_addr: String,
        kafka: KafkaSettings,
    }

    impl Default for Sample {
        fn default() -> Self {
            Self {
                http_addr: "127.0.0.1:1".into(),
                kafka: KafkaSettings::default(),
            }
        }
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail closure returns figment::Error
    fn env_overrides_defaults_and_bad_values_name_the_field() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CARRIER_HTTP_ADDR", "127.0.0.1:2");
            jail.set_env("CARRIER_KAFKA__BROKERS", "b:1");
            let sample: Sample = load().map_err(|e| e.to_string())?;
            assert_eq!(sample.http_addr, "127.0.0.1:2");
            assert_eq!(sample.kafka.brokers, "b:1");
            assert_eq!(sample.kafka.topic_prefix, "carrier.");
            assert_eq!(sample.kafka.instance(), None);
            jail.set_env("CARRIER_KAFKA__INSTANCE_ID", "carrier-delivery-2");
            let sample: Sample = load().map_err(|e| e.to_string())?;
            assert_eq!(sample.kafka.instance(), Some("carrier-delivery-2"));
            jail.set_env("CARRIER_KAFKA__INSTANCE_ID", " ");
            let sample: Sample = load().map_err(|e| e.to_string())?;
            assert_eq!(sample.kafka.instance(), None, "empty is unset");
            jail.set_env("CARRIER_KAFKA__LINGER_MS", "soon");
            let error = load::<Sample>().unwrap_err().to_string();
            assert!(error.to_lowercase().contains("kafka.linger_ms"), "{error}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail closure returns figment::Error
    fn values_come_from_files_named_by_file_variables() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("brokers", "from-file:9093\n")?;
            jail.create_file("password", "line one\nsasl s3cr3t\r\n")?;
            jail.set_env("CARRIER_KAFKA__BROKERS_FILE", "brokers");
            jail.set_env("CARRIER_KAFKA__SASL_PASSWORD_FILE", "password");
            jail.set_env("CARRIER_HTTP_ADDR", "127.0.0.1:2");
            let sample: Sample = load().map_err(|e| e.to_string())?;
            assert_eq!(sample.kafka.brokers, "from-file:9093");
            assert_eq!(
                sample.kafka.sasl_password.as_ref().map(Secret::expose),
                Some("line one\nsasl s3cr3t"),
                "only the trailing newline goes"
            );
            assert_eq!(sample.http_addr, "127.0.0.1:2");

            jail.set_env("CARRIER_KAFKA__SASL_PASSWORD_FILE", "no-such-file");
            let error = load::<Sample>().unwrap_err().to_string();
            assert!(
                error.contains("CARRIER_KAFKA__SASL_PASSWORD_FILE: cannot read the file no-such-file"),
                "{error}"
            );
            jail.set_env("CARRIER_KAFKA__SASL_PASSWORD_FILE", "password");

            jail.set_env("CARRIER_KAFKA__BROKERS", "from-env:9092");
            let error = load::<Sample>().unwrap_err().to_string();
            assert!(
                error.contains("both CARRIER_KAFKA__BROKERS and CARRIER_KAFKA__BROKERS_FILE are set"),
                "{error}"
            );
            assert!(!error.contains("from-file"), "{error}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail closure returns figment::Error
    fn secret_files_that_look_like_numbers_or_lists_stay_text() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("password", "[1234567890123456789]\n")?;
            jail.set_env("CARRIER_KAFKA__SASL_USERNAME", "0123456789012345678901234567890");
            jail.set_env("CARRIER_KAFKA__SASL_PASSWORD_FILE", "password");
            let sample: Sample = load().map_err(|e| e.to_string())?;
            assert_eq!(
                sample.kafka.sasl_username.as_deref(),
                Some("0123456789012345678901234567890")
            );
            assert_eq!(
                sample.kafka.sasl_password.as_ref().map(Secret::expose),
                Some("[1234567890123456789]")
            );
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail closure returns figment::Error
    fn the_config_file_variable_is_not_a_value_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("carrier.toml", "http_addr = \"127.0.0.1:3\"\n[kafka]\nbrokers = \"toml:1\"\n[kafka.client]\n\"socket.keepalive.enable\" = true\n")?;
            jail.set_env("CARRIER_CONFIG_FILE", "carrier.toml");
            jail.set_env("CARRIER_KAFKA__CONSUMER__FETCH_ERROR_BACKOFF_MS", "100");
            let sample: Sample = load().map_err(|e| e.to_string())?;
            assert_eq!(sample.http_addr, "127.0.0.1:3");
            assert_eq!(sample.kafka.brokers, "toml:1");
            assert_eq!(
                sample
                    .kafka
                    .client
                    .get("socket.keepalive.enable")
                    .map(String::as_str),
                Some("true")
            );
            assert_eq!(
                sample
                    .kafka
                    .consumer
                    .get("fetch.error.backoff.ms")
                    .map(String::as_str),
                Some("100")
            );
            Ok(())
        });
    }

    #[test]
    fn environments_parse_strictly() {
        assert_eq!("staging".parse::<Environment>(), Ok(Environment::Staging));
        assert!("prod"
            .parse::<Environment>()
            .unwrap_err()
            .contains("unknown environment 'prod'"));
    }
}
