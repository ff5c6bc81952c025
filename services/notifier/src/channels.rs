//! The three alert channels: SMTP e-mail to the organization's `alert_emails`, its
//! Slack-compatible incoming webhook, and the Kafka topic `carrier.notifications`. Each send
//! either delivers, finds nothing to send to (skipped), or fails (retried by the dispatcher).
//!
//! Webhook URLs are set per organization, so the webhook client follows delivery's outbound
//! policy (`carrier-outbound`, the same `[outbound]` settings): every address a webhook's host
//! resolves to is checked at connect time, IP-literal URLs before the request, and proxy
//! variables and redirects are ignored. A refused webhook is a failed send, retried like any.

use std::sync::Arc;
use std::time::Duration;

use carrier_config::{ConfigError, KafkaSettings};
use carrier_kafka::producer::{self, Ordering};
use carrier_kafka::rdkafka::producer::FutureProducer;
use carrier_kafka::Topics;
use carrier_outbound::{OutboundPolicy, OutboundSettings, Refused};
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use tracing::Instrument as _;

use crate::notification::Notification;

/// A channel, as stored in `alert_deliveries.channel` and used as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Email,
    Slack,
    Kafka,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Email, Channel::Slack, Channel::Kafka];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Slack => "slack",
            Channel::Kafka => "kafka",
        }
    }
}

/// Where an organization wants its alerts (read from `organizations` when an alert is sent, so
/// a fixed address or webhook applies to alerts still waiting).
#[derive(Debug, Clone, Default)]
pub struct Recipients {
    pub alert_emails: Vec<String>,
    pub slack_webhook_url: Option<String>,
    /// The operator's recipients (`alerts.operator_emails`, `alerts.operator_slack_webhook_url`),
    /// set for backlog alerts only: e-mailed in Bcc, posted to as a second webhook.
    pub operator_emails: Vec<String>,
    pub operator_slack_webhook_url: Option<String>,
}

/// What a send did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    Delivered,
    /// Nothing to send to (no addresses, no webhook, no SMTP server); the reason is stored.
    Skipped(String),
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("smtp: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("building the e-mail: {0}")]
    Email(#[from] lettre::error::Error),
    #[error("slack webhook: {0}")]
    Http(#[from] reqwest::Error),
    /// The webhook's address is one the outbound policy refuses (no connection was made).
    #[error("slack webhook: {0}")]
    Refused(#[from] Refused),
    /// A plain `http://` webhook URL to an address no allowance names (alerts are reached
    /// over https:// only, like production destinations).
    #[error("slack webhook: {0}")]
    PlainHttp(#[from] carrier_outbound::PlainHttpRefused),
    #[error("slack webhook answered HTTP {status}: {body}")]
    HttpStatus { status: u16, body: String },
    #[error("kafka: {0}")]
    Kafka(#[from] carrier_kafka::producer::ProduceError),
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain SMTP (a relay on a trusted network, or a test server).
    None,
    /// Plain connection upgraded with STARTTLS, which the server must offer.
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
}

/// The `[smtp]` section of the notifier (`CARRIER_SMTP__*`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SmtpSettings {
    /// SMTP server host name. Unset or empty (the default): e-mail alerts are skipped.
    pub host: Option<String>,
    /// Server port; unset: 25 with `tls = "none"`, 587 with `starttls`, 465 with `tls`.
    pub port: Option<u16>,
    /// `none`, `starttls` (default) or `tls`. Certificates are checked against the Mozilla
    /// roots (webpki-roots).
    pub tls: SmtpTls,
    /// SMTP AUTH user name; unset: no authentication.
    pub username: Option<String>,
    /// SMTP AUTH password (with `username`).
    pub password: Option<String>,
    /// The `From` address of alert e-mails.
    pub from: String,
}

/// Never shows the password.
impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &carrier_config::RedactedOption(&self.password))
            .field("from", &self.from)
            .finish()
    }
}

impl Default for SmtpSettings {
    fn default() -> Self {
        Self {
            host: None,
            port: None,
            tls: SmtpTls::Starttls,
            username: None,
            password: None,
            from: "Carrier <carrier@localhost>".into(),
        }
    }
}

impl SmtpSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.from
            .parse::<Mailbox>()
            .map_err(|error| ConfigError::Invalid(format!("smtp.from '{}': {error}", self.from)))?;
        if self.password.is_some() && self.username.is_none() {
            return Err(ConfigError::Invalid("smtp.password needs smtp.username".into()));
        }
        Ok(())
    }
}

/// The CLIENT span of one alert send on `channel` (`alert email`, `alert slack`, `alert kafka`).
fn alert_span(channel: Channel) -> tracing::Span {
    if !carrier_telemetry::trace::enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "alert send",
        otel.name = %format_args!("alert {}", channel.as_str()),
        otel.kind = "client",
        carrier.channel = channel.as_str(),
        otel.status_code = tracing::field::Empty,
    )
}

/// Sends notifications. Cheap to clone (connections are pooled inside).
#[derive(Clone)]
pub struct Channels {
    smtp: Option<(AsyncSmtpTransport<Tokio1Executor>, Mailbox)>,
    http: reqwest::Client,
    outbound: Arc<OutboundPolicy>,
    producer: FutureProducer,
    topic: String,
    timeout: Duration,
}

impl Channels {
    pub fn new(
        smtp: &SmtpSettings,
        kafka: &KafkaSettings,
        outbound: &OutboundSettings,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let smtp = match smtp.host.as_deref().filter(|host| !host.trim().is_empty()) {
            None => None,
            Some(host) => {
                let mut builder = match smtp.tls {
                    SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
                    SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)?,
                    SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)?,
                };
                let default_port = match smtp.tls {
                    SmtpTls::None => 25,
                    SmtpTls::Starttls => 587,
                    SmtpTls::Tls => 465,
                };
                builder = builder
                    .port(smtp.port.unwrap_or(default_port))
                    .timeout(Some(timeout));
                if let Some(username) = &smtp.username {
                    builder = builder.credentials(Credentials::new(
                        username.clone(),
                        smtp.password.clone().unwrap_or_default(),
                    ));
                }
                Some((builder.build(), smtp.from.parse::<Mailbox>()?))
            }
        };
        // Webhook URLs are set per organization (admin API): the outbound policy's client (its
        // resolver checks every address dialled; no redirects, no proxies).
        let outbound = Arc::new(OutboundPolicy::new(outbound)?);
        let http = carrier_outbound::client_builder(outbound.clone())
            .timeout(timeout)
            .build()?;
        Ok(Self {
            smtp,
            http,
            outbound,
            producer: producer::create(kafka, "carrier-notifier", Ordering::PerRequest)?,
            topic: Topics::new(kafka).notifications,
            timeout,
        })
    }

    /// Sends `notification` on `channel`, within the send timeout.
    pub async fn send(
        &self,
        channel: Channel,
        notification: &Notification,
        recipients: &Recipients,
    ) -> Result<Sent, SendError> {
        let send = async {
            match channel {
                Channel::Email => self.email(notification, recipients).await,
                Channel::Slack => self.slack(notification, recipients).await,
                Channel::Kafka => self.kafka(notification).await,
            }
        };
        // An alert is about an incident, not one message: a trace of its own (the Kafka
        // channel's record carries its context to the consumers of carrier.notifications).
        let span = alert_span(channel);
        // A little beyond the inner timeouts, so theirs (with a precise error) usually wins.
        let result = match tokio::time::timeout(
            self.timeout + Duration::from_secs(1),
            send.instrument(span.clone()),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(SendError::TimedOut(self.timeout)),
        };
        if result.is_err() {
            span.record("otel.status_code", "error");
        }
        result
    }

    async fn email(&self, notification: &Notification, recipients: &Recipients) -> Result<Sent, SendError> {
        let Some((transport, from)) = &self.smtp else {
            return Ok(Sent::Skipped("no SMTP server configured (smtp.host)".into()));
        };
        let mut message = Message::builder()
            .from(from.clone())
            .subject(notification.email_subject())
            .header(ContentType::TEXT_PLAIN);
        let mut any = false;
        let organization = recipients.alert_emails.iter().map(|address| (address, false));
        let operator = recipients.operator_emails.iter().map(|address| (address, true));
        for (address, bcc) in organization.chain(operator) {
            match address.parse::<Mailbox>() {
                Ok(mailbox) if bcc => {
                    message = message.bcc(mailbox);
                    any = true;
                }
                Ok(mailbox) => {
                    message = message.to(mailbox);
                    any = true;
                }
                Err(error) => {
                    tracing::warn!(%error, address, organization_id = %notification.organization_id, "alert e-mail address skipped")
                }
            }
        }
        if !any {
            return Ok(Sent::Skipped("the organization has no alert_emails".into()));
        }
        let message = message.body(notification.email_body())?;
        transport.send(message).await?;
        Ok(Sent::Delivered)
    }

    /// Posts to the organization's webhook and, for a backlog alert, the operator's. A failure
    /// of either retries both (the alert's `id` tells a receiver it saw it already).
    async fn slack(&self, notification: &Notification, recipients: &Recipients) -> Result<Sent, SendError> {
        let urls: Vec<&str> = [
            &recipients.slack_webhook_url,
            &recipients.operator_slack_webhook_url,
        ]
        .into_iter()
        .filter_map(|url| url.as_deref().filter(|url| !url.is_empty()))
        .collect();
        if urls.is_empty() {
            return Ok(Sent::Skipped("the organization has no slack_webhook_url".into()));
        }
        for url in urls {
            self.post_slack(notification, url).await?;
        }
        Ok(Sent::Delivered)
    }

    async fn post_slack(&self, notification: &Notification, url: &str) -> Result<(), SendError> {
        let body = serde_json::to_vec(&notification.slack_body()).expect("a notification serializes");
        // IP-literal hosts are dialled without a resolver: check them here; names are checked
        // by the client's resolver, on every address they resolve to.
        let in_the_clear = self.outbound.check_scheme(url).err();
        let sent = match (self.outbound.check_url(url), in_the_clear) {
            (Err(refused), _) => Err(SendError::Refused(refused)),
            (Ok(()), Some(refused)) => {
                tracing::warn!(
                    organization_id = %notification.organization_id,
                    host = %refused.host,
                    "slack webhook refused: plain http:// to an address the allowances do not name"
                );
                Err(SendError::PlainHttp(refused))
            }
            (Ok(()), None) => self
                .http
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await
                .map_err(|error| match carrier_outbound::refusal_in(&error) {
                    Some(refused) => SendError::Refused(refused),
                    None => SendError::Http(error),
                }),
        };
        if let Err(SendError::Refused(refused)) = &sent {
            tracing::warn!(
                organization_id = %notification.organization_id,
                address = %refused.address,
                class = refused.class.as_str(),
                "slack webhook refused by outbound policy"
            );
        }
        let response = sent?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let body: String = body.chars().take(200).collect();
            return Err(SendError::HttpStatus {
                status: status.as_u16(),
                body,
            });
        }
        Ok(())
    }

    async fn kafka(&self, notification: &Notification) -> Result<Sent, SendError> {
        let payload = serde_json::to_vec(notification).expect("a notification serializes");
        let key = notification.destination_id.to_string();
        let headers = carrier_kafka::rdkafka::message::OwnedHeaders::new().insert(
            carrier_kafka::rdkafka::message::Header {
                key: "content-type",
                value: Some("application/json"),
            },
        );
        producer::send(
            &self.producer,
            &self.topic,
            &key,
            &payload,
            Some(headers),
            producer::WhenFull::Fail,
        )
        .await?;
        Ok(Sent::Delivered)
    }
}

/// The Slack channel against a real HTTP server on 127.0.0.1: refused at connect time unless
/// the outbound policy allows loopback (as the tests' stacks and `make up` do).
#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::notification::AlertKind;

    /// A Slack-compatible webhook receiver on 127.0.0.1 answering 200; counts the POSTs it got.
    async fn slack_receiver() -> (u16, Arc<AtomicUsize>) {
        let received = Arc::new(AtomicUsize::new(0));
        let counter = received.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (port, received)
    }

    fn channels(outbound: OutboundSettings) -> Channels {
        // The producer is created, never used: no broker needs to answer.
        let kafka = KafkaSettings {
            brokers: std::env::var("CARRIER_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into()),
            ..KafkaSettings::default()
        };
        Channels::new(
            &SmtpSettings::default(),
            &kafka,
            &outbound,
            Duration::from_secs(5),
        )
        .unwrap()
    }

    fn notification() -> Notification {
        crate::notification::tests::sample(AlertKind::Failing)
    }

    fn webhook(url: String) -> Recipients {
        Recipients {
            slack_webhook_url: Some(url),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_slack_webhook_on_loopback_is_refused_unless_loopback_is_allowed() {
        let (port, received) = slack_receiver().await;
        let refusing = channels(OutboundSettings::default());
        for url in [
            format!("http://127.0.0.1:{port}/hook"),
            format!("http://localhost:{port}/hook"),
            format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        ] {
            let error = refusing
                .send(Channel::Slack, &notification(), &webhook(url.clone()))
                .await
                .expect_err("loopback is refused");
            // A name is checked at connect time, after the scheme: plain http:// to `localhost`
            // that no allowance names is refused before any lookup.
            if url.contains("localhost") {
                assert!(matches!(error, SendError::PlainHttp(_)), "{url}: {error:?}");
                continue;
            }
            let SendError::Refused(refused) = &error else {
                panic!("{url}: expected a refusal, got {error:?}");
            };
            assert_eq!(refused.class, carrier_outbound::AddressClass::Loopback, "{url}");
            assert!(
                error
                    .to_string()
                    .starts_with("slack webhook: destination address ")
                    && error
                        .to_string()
                        .ends_with("is loopback; refused by outbound policy"),
                "{error}"
            );
        }
        assert_eq!(
            received.load(Ordering::SeqCst),
            0,
            "no request reached the receiver"
        );

        let allowing = channels(OutboundSettings {
            allow_loopback: true,
            ..Default::default()
        });
        let sent = allowing
            .send(
                Channel::Slack,
                &notification(),
                &webhook(format!("http://127.0.0.1:{port}/hook")),
            )
            .await
            .expect("loopback is allowed");
        assert_eq!(sent, Sent::Delivered);
        assert_eq!(received.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_slack_webhook_on_a_listed_network_is_allowed() {
        let (port, received) = slack_receiver().await;
        let listed = channels(OutboundSettings {
            allowed_networks: vec!["127.0.0.1".into()],
            ..Default::default()
        });
        let sent = listed
            .send(
                Channel::Slack,
                &notification(),
                &webhook(format!("http://localhost:{port}/hook")),
            )
            .await;
        // localhost may also resolve to ::1, which is not listed: the listed address is dialled.
        assert_eq!(sent.expect("127.0.0.1 is listed"), Sent::Delivered);
        assert_eq!(received.load(Ordering::SeqCst), 1);
    }
}
