//! Carrier's topics as production needs them: `carrierctl admin topics ensure` creates the
//! missing ones with the documented partition counts, replication factor,
//! `min.insync.replicas` and retention, and `carrierctl admin topics check` reports where the
//! cluster differs from that (drift).
//!
//! The partition count of an existing topic is never changed here. For `deliveries` a change is
//! refused outright: its records are keyed by destination, so more partitions would re-map
//! destinations to other partitions while their earlier tasks are still queued on the old ones,
//! and two partitions (two workers) would deliver one destination's messages out of order.
//! Scale delivery by workers, never by partitions. For the other topics a different count is
//! reported as drift, for the operator to decide (`inbound` is keyed by source: the same
//! reasoning applies to a source's order through the router).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use carrier_config::KafkaSettings;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use serde::{Deserialize, Serialize};

use crate::Topics;

/// The `[topics]` section (`CARRIER_TOPICS__*`): what `carrierctl admin topics` creates and
/// checks. The defaults are the production layout of README "Kafka in production".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TopicSettings {
    /// Partitions of `inbound` (keyed by source).
    pub inbound_partitions: i32,
    /// Partitions of `deliveries` (keyed by destination): fixed once created.
    pub deliveries_partitions: i32,
    /// Partitions of `log-events` (keyed by destination).
    pub log_events_partitions: i32,
    /// Partitions of `notifications` (alerts for internal teams).
    pub notifications_partitions: i32,
    /// Replicas of every partition (3 in production; 1 on a single development broker).
    pub replication_factor: i32,
    /// `min.insync.replicas` of every topic: with `acks=all`, a write is acknowledged once
    /// this many replicas have it.
    pub min_insync_replicas: i32,
    /// `retention.ms` of `deliveries`: longer than the notifier's `log_retention_days`, since
    /// manual and bulk retry read messages back from it (32 days for the default 30).
    pub deliveries_retention_ms: i64,
    /// `retention.ms` of the other topics: they only need to outlast a consumer outage.
    pub retention_ms: i64,
}

impl Default for TopicSettings {
    fn default() -> Self {
        Self {
            inbound_partitions: 16,
            deliveries_partitions: 64,
            log_events_partitions: 16,
            notifications_partitions: 4,
            replication_factor: 3,
            min_insync_replicas: 2,
            deliveries_retention_ms: 32 * 24 * 60 * 60 * 1000,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
        }
    }
}

impl TopicSettings {
    /// Refuses settings no cluster could hold.
    pub fn validated(self) -> Result<Self, String> {
        for (name, partitions) in [
            ("inbound_partitions", self.inbound_partitions),
            ("deliveries_partitions", self.deliveries_partitions),
            ("log_events_partitions", self.log_events_partitions),
            ("notifications_partitions", self.notifications_partitions),
            ("replication_factor", self.replication_factor),
            ("min_insync_replicas", self.min_insync_replicas),
        ] {
            if partitions < 1 {
                return Err(format!("topics.{name} must be at least 1, not {partitions}"));
            }
        }
        if self.min_insync_replicas > self.replication_factor {
            return Err(format!(
                "topics.min_insync_replicas ({}) cannot exceed topics.replication_factor ({}): \
                 no write could ever be acknowledged",
                self.min_insync_replicas, self.replication_factor
            ));
        }
        if self.deliveries_retention_ms < 1 || self.retention_ms < 1 {
            return Err("topics.*retention_ms must be positive".into());
        }
        Ok(self)
    }

    /// Every topic with what it should be.
    pub fn wanted(&self, topics: &Topics) -> Vec<WantedTopic> {
        let topic = |name: &str, role: Role, partitions: i32, retention_ms: i64| WantedTopic {
            name: name.to_string(),
            role,
            partitions,
            configs: vec![
                (
                    "min.insync.replicas".to_string(),
                    self.min_insync_replicas.to_string(),
                ),
                ("retention.ms".to_string(), retention_ms.to_string()),
            ],
        };
        vec![
            topic(
                &topics.inbound,
                Role::Inbound,
                self.inbound_partitions,
                self.retention_ms,
            ),
            topic(
                &topics.deliveries,
                Role::Deliveries,
                self.deliveries_partitions,
                self.deliveries_retention_ms,
            ),
            topic(
                &topics.log_events,
                Role::LogEvents,
                self.log_events_partitions,
                self.retention_ms,
            ),
            topic(
                &topics.notifications,
                Role::Notifications,
                self.notifications_partitions,
                self.retention_ms,
            ),
        ]
    }
}

/// Which of Carrier's topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Inbound,
    Deliveries,
    LogEvents,
    Notifications,
}

/// A topic as the settings want it.
#[derive(Debug, Clone, PartialEq)]
pub struct WantedTopic {
    pub name: String,
    pub role: Role,
    pub partitions: i32,
    /// Topic configs (`min.insync.replicas`, `retention.ms`) and their wanted values.
    pub configs: Vec<(String, String)>,
}

/// A topic as the cluster has it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExistingTopic {
    pub partitions: i32,
    /// The smallest replica count among its partitions.
    pub replicas: i32,
    /// Its configs, when the cluster answered `DescribeConfigs` (`None`: not readable).
    pub configs: Option<HashMap<String, String>>,
}

/// One difference between a topic and its settings.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    /// Missing; `ensure` creates it.
    Missing,
    /// `ensure` created it.
    Created,
    /// Another partition count than the settings. For `deliveries`, `refused` is true: the
    /// settings must follow the topic, never the reverse.
    Partitions { has: i32, wanted: i32, refused: bool },
    /// Fewer replicas than `replication_factor`.
    Replicas { has: i32, wanted: i32 },
    /// A config with another value (`None`: unset).
    Config {
        key: String,
        has: Option<String>,
        wanted: String,
    },
    /// The cluster did not say what the topic's configs are.
    ConfigsUnreadable(String),
}

impl Finding {
    /// Whether it stops `ensure` (exit status 1): a missing topic that could not be created, or
    /// a different partition count of `deliveries`.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Finding::Missing | Finding::Partitions { refused: true, .. })
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::Missing => write!(formatter, "missing"),
            Finding::Created => write!(formatter, "created"),
            Finding::Partitions {
                has,
                wanted,
                refused: true,
            } => write!(
                formatter,
                "has {has} partitions, the settings say {wanted}: refused, the partition count \
                 of the deliveries topic never changes (more partitions re-map destinations and \
                 break their order). Set topics.deliveries_partitions (CARRIER_TOPICS__DELIVERIES_PARTITIONS) \
                 to {has}; scale delivery by workers"
            ),
            Finding::Partitions { has, wanted, .. } => write!(
                formatter,
                "has {has} partitions, the settings say {wanted} (not changed here: a new count \
                 re-maps keys to partitions)"
            ),
            Finding::Replicas { has, wanted } => {
                write!(formatter, "has {has} replicas, the settings say {wanted}")
            }
            Finding::Config { key, has, wanted } => write!(
                formatter,
                "{key} is {}, the settings say {wanted}",
                has.as_deref().unwrap_or("unset")
            ),
            Finding::ConfigsUnreadable(why) => {
                write!(formatter, "its configs could not be read: {why}")
            }
        }
    }
}

/// What `ensure` or `check` found, topic by topic (a topic without findings is as wanted).
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub topics: Vec<(WantedTopic, Vec<Finding>)>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.topics
            .iter()
            .flat_map(|(_, findings)| findings)
            .all(|finding| matches!(finding, Finding::Created))
    }

    pub fn has_refusal(&self) -> bool {
        self.topics
            .iter()
            .flat_map(|(_, findings)| findings)
            .any(Finding::is_refusal)
    }
}

/// Compares one topic with what is wanted (pure: the cluster's answer is `existing`).
pub fn compare(
    wanted: &WantedTopic,
    existing: Option<&ExistingTopic>,
    replication_factor: i32,
) -> Vec<Finding> {
    let Some(existing) = existing else {
        return vec![Finding::Missing];
    };
    let mut findings = Vec::new();
    if existing.partitions != wanted.partitions {
        findings.push(Finding::Partitions {
            has: existing.partitions,
            wanted: wanted.partitions,
            refused: wanted.role == Role::Deliveries,
        });
    }
    if existing.replicas < replication_factor {
        findings.push(Finding::Replicas {
            has: existing.replicas,
            wanted: replication_factor,
        });
    }
    match &existing.configs {
        None => findings.push(Finding::ConfigsUnreadable(
            "the cluster did not answer DescribeConfigs".into(),
        )),
        Some(configs) => {
            for (key, value) in &wanted.configs {
                let has = configs.get(key);
                if has != Some(value) {
                    findings.push(Finding::Config {
                        key: key.clone(),
                        has: has.cloned(),
                        wanted: value.clone(),
                    });
                }
            }
        }
    }
    findings
}

/// Talks to the cluster for `ensure` and `check`.
pub struct Provisioner {
    admin: Arc<AdminClient<DefaultClientContext>>,
    settings: TopicSettings,
    topics: Topics,
    timeout: Duration,
}

impl Provisioner {
    pub fn new(kafka: &KafkaSettings, settings: TopicSettings) -> Result<Self, KafkaError> {
        Ok(Self {
            admin: Arc::new(crate::admin::admin_client(kafka)?),
            settings,
            topics: Topics::new(kafka),
            timeout: Duration::from_secs(10),
        })
    }

    /// What the cluster has of Carrier's topics.
    pub async fn check(&self) -> Result<Report, KafkaError> {
        let wanted = self.settings.wanted(&self.topics);
        let existing = self.existing(&wanted).await?;
        Ok(Report {
            topics: wanted
                .into_iter()
                .map(|topic| {
                    let findings = compare(
                        &topic,
                        existing.get(&topic.name),
                        self.settings.replication_factor,
                    );
                    (topic, findings)
                })
                .collect(),
        })
    }

    /// Creates the missing topics, then reports as [`Provisioner::check`] does (a topic created
    /// here shows [`Finding::Created`] and whatever differs still).
    pub async fn ensure(&self) -> Result<Report, KafkaError> {
        let before = self.check().await?;
        let missing: Vec<&WantedTopic> = before
            .topics
            .iter()
            .filter(|(_, findings)| findings.contains(&Finding::Missing))
            .map(|(topic, _)| topic)
            .collect();
        let mut created = Vec::new();
        if !missing.is_empty() {
            let new_topics: Vec<NewTopic> = missing
                .iter()
                .map(|topic| {
                    let mut new_topic = NewTopic::new(
                        &topic.name,
                        topic.partitions,
                        TopicReplication::Fixed(self.settings.replication_factor),
                    );
                    for (key, value) in &topic.configs {
                        new_topic = new_topic.set(key, value);
                    }
                    new_topic
                })
                .collect();
            let options = AdminOptions::new().operation_timeout(Some(self.timeout));
            for result in self.admin.create_topics(&new_topics, &options).await? {
                match result {
                    Ok(name) => {
                        tracing::info!(topic = %name, "topic created");
                        created.push(name);
                    }
                    // Lost a race with another `ensure`: checked below like any existing topic.
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((topic, code)) => {
                        tracing::error!(%topic, ?code, "topic could not be created");
                        return Err(KafkaError::AdminOp(code));
                    }
                }
            }
        }
        let mut after = self.check().await?;
        for (topic, findings) in &mut after.topics {
            if created.contains(&topic.name) {
                findings.insert(0, Finding::Created);
            }
        }
        Ok(after)
    }

    /// Partition and replica counts from the metadata, configs from `DescribeConfigs`.
    async fn existing(&self, wanted: &[WantedTopic]) -> Result<HashMap<String, ExistingTopic>, KafkaError> {
        let admin = self.admin.clone();
        let timeout = self.timeout;
        let counts = tokio::task::spawn_blocking(move || {
            let metadata = admin.inner().fetch_metadata(None, timeout)?;
            let mut counts = HashMap::new();
            for topic in metadata.topics() {
                if topic.error().is_some() || topic.partitions().is_empty() {
                    continue;
                }
                let replicas = topic
                    .partitions()
                    .iter()
                    .map(|partition| partition.replicas().len() as i32)
                    .min()
                    .unwrap_or(0);
                counts.insert(
                    topic.name().to_string(),
                    (topic.partitions().len() as i32, replicas),
                );
            }
            Ok::<_, KafkaError>(counts)
        })
        .await
        .expect("metadata task")?;

        let mut existing = HashMap::new();
        for topic in wanted {
            let Some((partitions, replicas)) = counts.get(&topic.name) else {
                continue;
            };
            existing.insert(
                topic.name.clone(),
                ExistingTopic {
                    partitions: *partitions,
                    replicas: *replicas,
                    configs: self.configs(&topic.name).await,
                },
            );
        }
        Ok(existing)
    }

    /// A topic's configs; `None` when the cluster does not answer `DescribeConfigs` for it.
    async fn configs(&self, topic: &str) -> Option<HashMap<String, String>> {
        let options = AdminOptions::new().request_timeout(Some(self.timeout));
        let results = match self
            .admin
            .describe_configs(&[ResourceSpecifier::Topic(topic)], &options)
            .await
        {
            Ok(results) => results,
            Err(error) => {
                tracing::warn!(%error, topic, "describe configs failed");
                return None;
            }
        };
        let resource = results.into_iter().next()?.ok()?;
        Some(
            resource
                .entries
                .into_iter()
                .filter_map(|entry| Some((entry.name, entry.value?)))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(role: Role) -> WantedTopic {
        let settings = TopicSettings::default();
        let topics = Topics::new(&KafkaSettings::default());
        settings
            .wanted(&topics)
            .into_iter()
            .find(|topic| topic.role == role)
            .unwrap()
    }

    fn as_wanted(topic: &WantedTopic) -> ExistingTopic {
        ExistingTopic {
            partitions: topic.partitions,
            replicas: 3,
            configs: Some(topic.configs.iter().cloned().collect()),
        }
    }

    #[test]
    fn the_defaults_are_the_documented_production_layout() {
        let deliveries = wanted(Role::Deliveries);
        assert_eq!(deliveries.name, "carrier.deliveries");
        assert_eq!(deliveries.partitions, 64);
        assert!(deliveries
            .configs
            .contains(&("retention.ms".into(), "2764800000".into())));
        assert!(deliveries
            .configs
            .contains(&("min.insync.replicas".into(), "2".into())));
        assert_eq!(wanted(Role::Inbound).partitions, 16);
        assert_eq!(wanted(Role::LogEvents).partitions, 16);
        assert_eq!(wanted(Role::Notifications).partitions, 4);
    }

    #[test]
    fn a_topic_as_wanted_has_no_findings_and_a_missing_one_is_a_refusal() {
        let topic = wanted(Role::Inbound);
        assert!(compare(&topic, Some(&as_wanted(&topic)), 3).is_empty());
        let findings = compare(&topic, None, 3);
        assert_eq!(findings, vec![Finding::Missing]);
        assert!(findings[0].is_refusal());
    }

    #[test]
    fn another_partition_count_is_refused_for_deliveries_and_reported_for_the_others() {
        for (role, refused) in [(Role::Deliveries, true), (Role::Inbound, false)] {
            let topic = wanted(role);
            let existing = ExistingTopic {
                partitions: 32,
                ..as_wanted(&topic)
            };
            let findings = compare(&topic, Some(&existing), 3);
            assert_eq!(
                findings,
                vec![Finding::Partitions {
                    has: 32,
                    wanted: topic.partitions,
                    refused
                }]
            );
            assert_eq!(findings[0].is_refusal(), refused);
            if refused {
                let text = findings[0].to_string();
                assert!(text.contains("CARRIER_TOPICS__DELIVERIES_PARTITIONS"), "{text}");
                assert!(text.contains("to 32"), "{text}");
            }
        }
    }

    #[test]
    fn config_and_replica_drift_is_reported_not_refused() {
        let topic = wanted(Role::Deliveries);
        let mut configs: HashMap<String, String> = topic.configs.iter().cloned().collect();
        configs.insert("retention.ms".into(), "604800000".into());
        configs.remove("min.insync.replicas");
        let existing = ExistingTopic {
            partitions: 64,
            replicas: 1,
            configs: Some(configs),
        };
        let findings = compare(&topic, Some(&existing), 3);
        assert!(findings.contains(&Finding::Replicas { has: 1, wanted: 3 }));
        assert!(findings.contains(&Finding::Config {
            key: "retention.ms".into(),
            has: Some("604800000".into()),
            wanted: "2764800000".into()
        }));
        assert!(findings.contains(&Finding::Config {
            key: "min.insync.replicas".into(),
            has: None,
            wanted: "2".into()
        }));
        assert!(!findings.iter().any(Finding::is_refusal));
    }

    #[test]
    fn impossible_settings_are_refused() {
        let error = TopicSettings {
            min_insync_replicas: 3,
            replication_factor: 1,
            ..TopicSettings::default()
        }
        .validated()
        .unwrap_err();
        assert!(error.contains("min_insync_replicas"), "{error}");
        assert!(TopicSettings {
            deliveries_partitions: 0,
            ..TopicSettings::default()
        }
        .validated()
        .is_err());
    }
}
