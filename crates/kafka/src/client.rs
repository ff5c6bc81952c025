//! Where every librdkafka client Carrier builds starts: [`builder`] sets the brokers and the
//! connection's security (TLS, SASL) from [`KafkaSettings`], the caller adds its own
//! properties, and [`ClientBuilder::create`] applies the raw properties of `[kafka.client]` and
//! `[kafka.producer]` / `[kafka.consumer]` last. So no producer, consumer or admin client is
//! built without the deployment's TLS and SASL settings.
//!
//! The raw tables are for what Carrier does not model (socket options, timeouts of the
//! protocol, OIDC extensions...). They may not set what Carrier's correctness depends on (acks,
//! ordering, offset commits, how far a fetch reads, the partitioner) nor what has a field of
//! its own ([`GUARDED`]): [`validate`] refuses those at start-up with a message saying why.

use carrier_config::{ConfigError, KafkaSettings, SaslMechanism, REDACTED};
use rdkafka::client::ClientContext;
use rdkafka::config::{FromClientConfig, FromClientConfigAndContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::ClientConfig;

/// What a client is for: decides which raw table applies on top of `[kafka.client]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `[kafka.client]` then `[kafka.producer]`.
    Producer,
    /// `[kafka.client]` then `[kafka.consumer]` (also readers that assign partitions themselves).
    Consumer,
    /// `[kafka.client]` only (topic creation, metadata).
    Admin,
}

/// Why a librdkafka property may not be set in a raw table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// Carrier models it: the field to set instead.
    Field(&'static str),
    /// Carrier's correctness depends on Carrier's value: why.
    Correctness(&'static str),
}

/// The properties the raw tables may not set (aliases included), and why.
pub const GUARDED: &[(&str, Guard)] = &[
    ("bootstrap.servers", Guard::Field("kafka.brokers")),
    ("metadata.broker.list", Guard::Field("kafka.brokers")),
    ("security.protocol", Guard::Field("kafka.security_protocol")),
    ("ssl.ca.location", Guard::Field("kafka.ssl_ca_location")),
    ("ssl.ca.pem", Guard::Field("kafka.ssl_ca_location")),
    ("ssl.certificate.location", Guard::Field("kafka.ssl_certificate_location")),
    ("ssl.certificate.pem", Guard::Field("kafka.ssl_certificate_location")),
    ("ssl.key.location", Guard::Field("kafka.ssl_key_location")),
    ("ssl.key.pem", Guard::Field("kafka.ssl_key_location")),
    ("ssl.key.password", Guard::Field("kafka.ssl_key_password")),
    (
        "ssl.endpoint.identification.algorithm",
        Guard::Field("kafka.ssl_endpoint_identification"),
    ),
    (
        "enable.ssl.certificate.verification",
        Guard::Correctness("brokers' certificates are always verified against the CA"),
    ),
    ("sasl.mechanism", Guard::Field("kafka.sasl_mechanism")),
    ("sasl.mechanisms", Guard::Field("kafka.sasl_mechanism")),
    ("sasl.username", Guard::Field("kafka.sasl_username")),
    ("sasl.password", Guard::Field("kafka.sasl_password")),
    ("sasl.oauthbearer.method", Guard::Field("kafka.sasl_mechanism = \"OAUTHBEARER\"")),
    (
        "sasl.oauthbearer.token.endpoint.url",
        Guard::Field("kafka.sasl_oauthbearer_token_endpoint_url"),
    ),
    ("sasl.oauthbearer.client.id", Guard::Field("kafka.sasl_oauthbearer_client_id")),
    (
        "sasl.oauthbearer.client.credentials.client.id",
        Guard::Field("kafka.sasl_oauthbearer_client_id"),
    ),
    (
        "sasl.oauthbearer.client.secret",
        Guard::Field("kafka.sasl_oauthbearer_client_secret"),
    ),
    (
        "sasl.oauthbearer.client.credentials.client.secret",
        Guard::Field("kafka.sasl_oauthbearer_client_secret"),
    ),
    ("sasl.oauthbearer.scope", Guard::Field("kafka.sasl_oauthbearer_scope")),
    ("enable.idempotence", Guard::Field("kafka.enable_idempotence")),
    ("linger.ms", Guard::Field("kafka.linger_ms")),
    ("queue.buffering.max.ms", Guard::Field("kafka.linger_ms")),
    ("fetch.wait.max.ms", Guard::Field("kafka.fetch_wait_max_ms")),
    ("queued.max.messages.kbytes", Guard::Field("kafka.consumer_queue_kbytes")),
    ("queue.buffering.max.kbytes", Guard::Field("kafka.producer_queue_kbytes")),
    ("message.max.bytes", Guard::Field("kafka.max_record_bytes")),
    ("message.timeout.ms", Guard::Field("kafka.message_timeout_ms")),
    ("delivery.timeout.ms", Guard::Field("kafka.message_timeout_ms")),
    (
        "group.id",
        Guard::Field("the service's consumer_group (partitions are assigned by leases)"),
    ),
    (
        "acks",
        Guard::Correctness("producers write with acks=all: a message is accepted only once the in-sync replicas have it"),
    ),
    (
        "request.required.acks",
        Guard::Correctness("producers write with acks=all: a message is accepted only once the in-sync replicas have it"),
    ),
    (
        "partitioner",
        Guard::Correctness("records are placed with murmur2_random; ingress computes a destination's partition the same way"),
    ),
    (
        "max.in.flight.requests.per.connection",
        Guard::Correctness("ordered producers keep one request in flight so that a retry cannot reorder records"),
    ),
    (
        "max.in.flight",
        Guard::Correctness("ordered producers keep one request in flight so that a retry cannot reorder records"),
    ),
    (
        "message.send.max.retries",
        Guard::Correctness("ordered producers never give up on a record: a record given up while a later one landed breaks order"),
    ),
    (
        "retries",
        Guard::Correctness("ordered producers never give up on a record: a record given up while a later one landed breaks order"),
    ),
    (
        "transactional.id",
        Guard::Correctness("Carrier does not use transactions"),
    ),
    (
        "enable.auto.commit",
        Guard::Correctness("consumers commit only finished work, themselves (crates/kafka/src/consumer/design.md)"),
    ),
    (
        "auto.commit.enable",
        Guard::Correctness("consumers commit only finished work, themselves (crates/kafka/src/consumer/design.md)"),
    ),
    (
        "enable.auto.offset.store",
        Guard::Correctness("consumers commit only finished work, themselves (crates/kafka/src/consumer/design.md)"),
    ),
    (
        "auto.offset.reset",
        Guard::Correctness("a position outside a partition is an error the lease resolves, never a silent jump (consumer/stream.rs)"),
    ),
    (
        "fetch.message.max.bytes",
        Guard::Correctness("consumers must be able to fetch Carrier's largest record"),
    ),
    (
        "max.partition.fetch.bytes",
        Guard::Correctness("consumers must be able to fetch Carrier's largest record"),
    ),
    (
        "fetch.max.bytes",
        Guard::Correctness("consumers must be able to fetch Carrier's largest record"),
    ),
    (
        "receive.message.max.bytes",
        Guard::Correctness("consumers must be able to fetch Carrier's largest record"),
    ),
];

/// Why `property` may not be set in a raw table, if it may not.
pub fn guard(property: &str) -> Option<Guard> {
    GUARDED
        .iter()
        .find(|(name, _)| *name == property)
        .map(|(_, guard)| *guard)
}

/// The properties of the brokers and the connection's security, in the order they are set.
pub fn connection_properties(settings: &KafkaSettings) -> Vec<(&'static str, String)> {
    let mut properties = vec![
        ("bootstrap.servers", settings.brokers.clone()),
        (
            "security.protocol",
            settings.security_protocol.as_str().to_string(),
        ),
    ];
    if settings.security_protocol.uses_tls() {
        let paths = [
            ("ssl.ca.location", &settings.ssl_ca_location),
            ("ssl.certificate.location", &settings.ssl_certificate_location),
            ("ssl.key.location", &settings.ssl_key_location),
        ];
        for (name, path) in paths {
            if let Some(path) = path {
                properties.push((name, path.display().to_string()));
            }
        }
        if let Some(password) = &settings.ssl_key_password {
            properties.push(("ssl.key.password", password.expose().to_string()));
        }
        properties.push((
            "ssl.endpoint.identification.algorithm",
            settings.ssl_endpoint_identification.as_str().to_string(),
        ));
    }
    if settings.security_protocol.uses_sasl() {
        if let Some(mechanism) = settings.sasl_mechanism {
            properties.push(("sasl.mechanism", mechanism.as_str().to_string()));
            match mechanism {
                SaslMechanism::Plain | SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => {
                    if let Some(username) = &settings.sasl_username {
                        properties.push(("sasl.username", username.clone()));
                    }
                    if let Some(password) = &settings.sasl_password {
                        properties.push(("sasl.password", password.expose().to_string()));
                    }
                }
                SaslMechanism::OauthBearer => {
                    properties.push(("sasl.oauthbearer.method", "oidc".to_string()));
                    let oauth = [
                        (
                            "sasl.oauthbearer.token.endpoint.url",
                            settings.sasl_oauthbearer_token_endpoint_url.clone(),
                        ),
                        (
                            "sasl.oauthbearer.client.id",
                            settings.sasl_oauthbearer_client_id.clone(),
                        ),
                        (
                            "sasl.oauthbearer.client.secret",
                            settings
                                .sasl_oauthbearer_client_secret
                                .as_ref()
                                .map(|secret| secret.expose().to_string()),
                        ),
                        ("sasl.oauthbearer.scope", settings.sasl_oauthbearer_scope.clone()),
                    ];
                    for (name, value) in oauth {
                        if let Some(value) = value {
                            properties.push((name, value));
                        }
                    }
                }
            }
        }
    }
    properties
}

/// The raw tables that apply to `role`, in order, with their names for messages.
fn raw_tables(
    settings: &KafkaSettings,
    role: Role,
) -> Vec<(&'static str, &std::collections::BTreeMap<String, String>)> {
    let mut tables = vec![("kafka.client", &settings.client)];
    match role {
        Role::Producer => tables.push(("kafka.producer", &settings.producer)),
        Role::Consumer => tables.push(("kafka.consumer", &settings.consumer)),
        Role::Admin => {}
    }
    tables
}

/// A librdkafka configuration being built: the connection settings first, the caller's
/// properties next, the raw tables last (at [`ClientBuilder::config`] and `create`).
#[derive(Clone)]
pub struct ClientBuilder {
    config: ClientConfig,
    raw: Vec<(&'static str, String, String)>,
}

/// Starts the configuration of a `role` client of the cluster `settings` describes.
pub fn builder(settings: &KafkaSettings, role: Role) -> ClientBuilder {
    let mut config = ClientConfig::new();
    for (name, value) in connection_properties(settings) {
        config.set(name, value);
    }
    let mut raw = Vec::new();
    for (table, properties) in raw_tables(settings, role) {
        for (name, value) in properties {
            raw.push((table, name.clone(), value.clone()));
        }
    }
    ClientBuilder { config, raw }
}

impl ClientBuilder {
    /// Sets one of the caller's properties (a raw table's value for it, if allowed, wins).
    pub fn set(&mut self, name: &str, value: impl Into<String>) -> &mut ClientBuilder {
        self.config.set(name, value);
        self
    }

    /// The final configuration. A guarded property in a raw table is an error (the services
    /// refuse it at start-up already, in [`validate`]).
    pub fn config(&self) -> KafkaResult<ClientConfig> {
        let mut config = self.config.clone();
        for (table, name, value) in &self.raw {
            if let Some(guard) = guard(name) {
                return Err(KafkaError::ClientConfig(
                    rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
                    refusal(table, name, guard),
                    name.clone(),
                    String::new(),
                ));
            }
            config.set(name, value);
        }
        Ok(config)
    }

    pub fn create<T: FromClientConfig>(&self) -> KafkaResult<T> {
        self.config()?.create().map_err(redact)
    }

    pub fn create_with_context<C, T>(&self, context: C) -> KafkaResult<T>
    where
        C: ClientContext,
        T: FromClientConfigAndContext<C>,
    {
        self.config()?.create_with_context(context).map_err(redact)
    }
}

/// A client context that keeps the last error or warning librdkafka reported for the client
/// (a TLS handshake that failed, an authentication the broker refused, a broker that is down),
/// so a caller whose request timed out can say why. librdkafka's log lines go on to the log as
/// with its default context (target `librdkafka`).
#[derive(Clone, Default)]
pub struct LastError(std::sync::Arc<std::sync::Mutex<Option<String>>>);

impl LastError {
    /// librdkafka's last error for the client, as it worded it.
    pub fn last(&self) -> Option<String> {
        self.0.lock().map(|last| last.clone()).unwrap_or_default()
    }

    fn record(&self, text: String) {
        if let Ok(mut last) = self.0.lock() {
            *last = Some(text);
        }
    }
}

impl ClientContext for LastError {
    /// librdkafka logs connection failures (`FAIL`: TLS handshake, SASL authentication, a
    /// plaintext client at a TLS listener) from its own threads, whether or not anyone polls.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as Level;
        match level {
            Level::Emerg | Level::Alert | Level::Critical | Level::Error => {
                tracing::error!(target: "librdkafka", facility, "{message}");
                self.record(message.to_string());
            }
            Level::Warning => {
                tracing::warn!(target: "librdkafka", facility, "{message}");
                self.record(message.to_string());
            }
            Level::Notice | Level::Info => tracing::info!(target: "librdkafka", facility, "{message}"),
            Level::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
        }
    }

    /// Errors reach the context only while the client is polled. "All brokers down" follows
    /// the error that took the last one down: it does not replace it.
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::error!(target: "librdkafka", %error, "{reason}");
        let summary = error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown);
        if !(summary && self.last().is_some()) {
            self.record(format!("{error}: {reason}"));
        }
    }
}

impl rdkafka::consumer::ConsumerContext for LastError {}

/// A configuration error without the value of a secret property (librdkafka's error repeats
/// the value it refused).
fn redact(error: KafkaError) -> KafkaError {
    match error {
        KafkaError::ClientConfig(code, description, name, _)
            if carrier_config::kafka_security::is_secret_property(&name) =>
        {
            KafkaError::ClientConfig(code, description, name, REDACTED.to_string())
        }
        other => other,
    }
}

fn refusal(table: &str, name: &str, guard: Guard) -> String {
    match guard {
        Guard::Field(field) => format!("{table}: `{name}` cannot be set here; set {field} instead"),
        Guard::Correctness(why) => format!("{table}: `{name}` cannot be set: {why}"),
    }
}

/// Checks the `[kafka]` section at start-up: the connection settings
/// ([`KafkaSettings::validate`]), no guarded property in a raw table, and every property of
/// every kind of client accepted by this build of librdkafka (an unknown name, a bad value, or
/// a feature it was built without, such as OIDC without libcurl). The error names the field
/// or table, never a secret's value.
pub fn validate(settings: &KafkaSettings) -> Result<(), ConfigError> {
    settings.validate()?;
    for role in [Role::Producer, Role::Consumer, Role::Admin] {
        for (table, properties) in raw_tables(settings, role) {
            for name in properties.keys() {
                if let Some(guard) = guard(name) {
                    return Err(ConfigError::Invalid(refusal(table, name, guard)));
                }
            }
        }
        let config = builder(settings, role)
            .config()
            .map_err(|error| ConfigError::Invalid(error.to_string()))?;
        if let Err(error) = config.create_native_config() {
            return Err(ConfigError::Invalid(explain(settings, role, error)));
        }
    }
    Ok(())
}

/// A message for a property librdkafka refused: which setting it came from and librdkafka's
/// reason.
fn explain(settings: &KafkaSettings, role: Role, error: KafkaError) -> String {
    let KafkaError::ClientConfig(_, description, name, _) = error else {
        return format!("kafka: {error}");
    };
    let origin = raw_tables(settings, role)
        .into_iter()
        .rev()
        .find(|(_, properties)| properties.contains_key(&name))
        .map(|(table, _)| format!("{table}: `{name}`"))
        .unwrap_or_else(|| {
            let field = match guard(&name) {
                Some(Guard::Field(field)) => field.to_string(),
                _ => format!("`{name}`"),
            };
            format!("kafka: {field}")
        });
    format!("{origin} is not accepted by this build of librdkafka: {description}")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use carrier_config::{EndpointIdentification, Secret, SecurityProtocol};

    use super::*;

    fn properties_of(builder: &ClientBuilder) -> BTreeMap<String, String> {
        // Through the native configuration: what librdkafka itself holds.
        let config = builder.config().expect("config");
        let native = config.create_native_config().expect("librdkafka accepts it");
        let mut found = BTreeMap::new();
        for name in config.config_map().keys() {
            found.insert(name.to_string(), native.get(name).expect("readable"));
        }
        found
    }

    #[test]
    fn plaintext_sets_only_the_brokers_and_protocol() {
        let settings = KafkaSettings::default();
        let found = properties_of(&builder(&settings, Role::Admin));
        assert_eq!(found["bootstrap.servers"], "127.0.0.1:9092");
        assert_eq!(found["security.protocol"], "plaintext");
        assert!(!found
            .keys()
            .any(|name| name.starts_with("ssl.") || name.starts_with("sasl.")));
        validate(&settings).unwrap();
    }

    /// The root Cargo.toml's rdkafka features (`ssl`, `curl`) are what the TLS, SCRAM and OIDC
    /// settings need.
    #[test]
    fn this_build_of_librdkafka_has_tls_scram_and_oidc() {
        let native = ClientConfig::new().create_native_config().expect("config");
        let features = native.get("builtin.features").expect("builtin.features");
        for feature in ["ssl", "sasl_plain", "sasl_scram", "sasl_oauthbearer", "oidc"] {
            assert!(
                features.split(',').any(|found| found == feature),
                "{feature} not in {features}"
            );
        }
    }

    #[test]
    fn tls_and_scram_become_librdkafka_properties() {
        let settings = KafkaSettings {
            brokers: "kafka-0.kafka:9093".into(),
            security_protocol: SecurityProtocol::SaslSsl,
            ssl_ca_location: Some("/etc/carrier/kafka/ca.crt".into()),
            sasl_mechanism: Some(SaslMechanism::ScramSha512),
            sasl_username: Some("carrier".into()),
            sasl_password: Some(Secret::from("scram-s3cr3t")),
            ..KafkaSettings::default()
        };
        let found = properties_of(&builder(&settings, Role::Producer));
        assert_eq!(found["security.protocol"], "sasl_ssl");
        assert_eq!(found["ssl.ca.location"], "/etc/carrier/kafka/ca.crt");
        assert_eq!(found["ssl.endpoint.identification.algorithm"], "https");
        assert_eq!(found["sasl.mechanism"], "SCRAM-SHA-512");
        assert_eq!(found["sasl.username"], "carrier");
        assert_eq!(found["sasl.password"], "scram-s3cr3t");

        let plain_without_verification = KafkaSettings {
            security_protocol: SecurityProtocol::SaslPlaintext,
            ssl_ca_location: None,
            sasl_mechanism: Some(SaslMechanism::Plain),
            ..settings.clone()
        };
        let found = properties_of(&builder(&plain_without_verification, Role::Consumer));
        assert_eq!(found["security.protocol"], "sasl_plaintext");
        assert_eq!(found["sasl.mechanism"], "PLAIN");
        assert!(!found.contains_key("ssl.endpoint.identification.algorithm"));

        let no_hostname_check = KafkaSettings {
            security_protocol: SecurityProtocol::Ssl,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ssl_endpoint_identification: EndpointIdentification::None,
            ..settings
        };
        let found = properties_of(&builder(&no_hostname_check, Role::Admin));
        assert_eq!(found["ssl.endpoint.identification.algorithm"], "none");
        assert!(!found.contains_key("sasl.mechanism"));
    }

    #[test]
    fn oauthbearer_uses_oidc_client_credentials() {
        let settings = KafkaSettings {
            security_protocol: SecurityProtocol::SaslSsl,
            sasl_mechanism: Some(SaslMechanism::OauthBearer),
            sasl_oauthbearer_token_endpoint_url: Some("https://idp.example/oauth2/token".into()),
            sasl_oauthbearer_client_id: Some("carrier".into()),
            sasl_oauthbearer_client_secret: Some(Secret::from("oidc-s3cr3t")),
            sasl_oauthbearer_scope: Some("kafka".into()),
            ..KafkaSettings::default()
        };
        let found = properties_of(&builder(&settings, Role::Consumer));
        assert_eq!(found["sasl.mechanism"], "OAUTHBEARER");
        assert_eq!(found["sasl.oauthbearer.method"], "oidc");
        assert_eq!(
            found["sasl.oauthbearer.token.endpoint.url"],
            "https://idp.example/oauth2/token"
        );
        assert_eq!(found["sasl.oauthbearer.client.id"], "carrier");
        assert_eq!(found["sasl.oauthbearer.client.secret"], "oidc-s3cr3t");
        assert_eq!(found["sasl.oauthbearer.scope"], "kafka");
        validate(&settings).unwrap();
    }

    #[test]
    fn raw_tables_apply_last_per_role() {
        let settings = KafkaSettings {
            client: BTreeMap::from([
                ("socket.keepalive.enable".to_string(), "true".to_string()),
                ("client.id".to_string(), "from-client-table".to_string()),
            ]),
            producer: BTreeMap::from([("batch.num.messages".to_string(), "500".to_string())]),
            consumer: BTreeMap::from([("fetch.error.backoff.ms".to_string(), "100".to_string())]),
            ..KafkaSettings::default()
        };
        validate(&settings).unwrap();
        let mut producer = builder(&settings, Role::Producer);
        producer.set("client.id", "carrier-ingress");
        let found = properties_of(&producer);
        assert_eq!(found["socket.keepalive.enable"], "true");
        assert_eq!(
            found["client.id"], "from-client-table",
            "the raw table comes last"
        );
        assert_eq!(found["batch.num.messages"], "500");
        assert!(!found.contains_key("fetch.error.backoff.ms"));

        let found = properties_of(&builder(&settings, Role::Consumer));
        assert_eq!(found["fetch.error.backoff.ms"], "100");
        assert!(!found.contains_key("batch.num.messages"));

        let found = properties_of(&builder(&settings, Role::Admin));
        assert!(!found.contains_key("batch.num.messages"));
        assert!(!found.contains_key("fetch.error.backoff.ms"));
    }

    #[test]
    fn guarded_properties_are_refused_with_the_reason() {
        for (table, name, says) in [
            (
                "consumer",
                "enable.auto.commit",
                "consumers commit only finished work",
            ),
            ("producer", "acks", "acks=all"),
            ("client", "partitioner", "murmur2_random"),
            ("producer", "max.in.flight", "one request in flight"),
            ("consumer", "auto.offset.reset", "never a silent jump"),
            ("client", "sasl.password", "set kafka.sasl_password instead"),
            ("client", "bootstrap.servers", "set kafka.brokers instead"),
            ("client", "enable.ssl.certificate.verification", "always verified"),
        ] {
            let mut settings = KafkaSettings::default();
            let entry = (name.to_string(), "x".to_string());
            match table {
                "client" => settings.client.extend([entry]),
                "producer" => settings.producer.extend([entry]),
                _ => settings.consumer.extend([entry]),
            }
            let error = validate(&settings).unwrap_err().to_string();
            assert!(
                error.contains(&format!("kafka.{table}: `{name}` cannot be set")),
                "{error}"
            );
            assert!(error.contains(says), "{error}");
            let role = match table {
                "producer" => Role::Producer,
                _ => Role::Consumer,
            };
            let refused = builder(&settings, role).create::<rdkafka::consumer::BaseConsumer>();
            assert!(refused.is_err(), "{name} is refused at create too");
        }
    }

    #[test]
    fn unknown_properties_name_their_table_and_secrets_stay_hidden() {
        let settings = KafkaSettings {
            consumer: BTreeMap::from([("no.such.property".to_string(), "1".to_string())]),
            ..KafkaSettings::default()
        };
        let error = validate(&settings).unwrap_err().to_string();
        assert!(
            error.contains("kafka.consumer: `no.such.property` is not accepted"),
            "{error}"
        );

        let settings = KafkaSettings {
            client: BTreeMap::from([("ssl.keystore.password".to_string(), "keystore-s3cr3t".to_string())]),
            ..KafkaSettings::default()
        };
        if let Err(error) = builder(&settings, Role::Admin).create::<rdkafka::consumer::BaseConsumer>() {
            assert!(!error.to_string().contains("keystore-s3cr3t"), "{error}");
        }
    }
}
