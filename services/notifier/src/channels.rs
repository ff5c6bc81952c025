//! The three alert channels: SMTP e-mail to the organization's `alert_emails`, its
//! Slack-compatible incoming webhook, and the Kafka topic `carrier.notifications`. Each send
//! either delivers, finds nothing to send to (skipped), or fails (retried by the dispatcher).

use std::time::Duration;

use carrier_config::{ConfigError, KafkaSettings};
use carrier_kafka::producer::{self, Ordering};
use carrier_kafka::rdkafka::producer::FutureProducer;
use carrier_kafka::Topics;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};

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
#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// Sends notifications. Cheap to clone (connections are pooled inside).
#[derive(Clone)]
pub struct Channels {
    smtp: Option<(AsyncSmtpTransport<Tokio1Executor>, Mailbox)>,
    http: reqwest::Client,
    producer: FutureProducer,
    topic: String,
    timeout: Duration,
}

impl Channels {
    pub fn new(smtp: &SmtpSettings, kafka: &KafkaSettings, timeout: Duration) -> anyhow::Result<Self> {
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
        // Webhook URLs are set by operators (admin API); redirects are not followed.
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            smtp,
            http,
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
        // A little beyond the inner timeouts, so theirs (with a precise error) usually wins.
        match tokio::time::timeout(self.timeout + Duration::from_secs(1), send).await {
            Ok(result) => result,
            Err(_) => Err(SendError::TimedOut(self.timeout)),
        }
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
        for address in &recipients.alert_emails {
            match address.parse::<Mailbox>() {
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

    async fn slack(&self, notification: &Notification, recipients: &Recipients) -> Result<Sent, SendError> {
        let Some(url) = recipients
            .slack_webhook_url
            .as_deref()
            .filter(|url| !url.is_empty())
        else {
            return Ok(Sent::Skipped("the organization has no slack_webhook_url".into()));
        };
        let body = serde_json::to_vec(&notification.slack_body()).expect("a notification serializes");
        let response = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let body: String = body.chars().take(200).collect();
            return Err(SendError::HttpStatus {
                status: status.as_u16(),
                body,
            });
        }
        Ok(Sent::Delivered)
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
