//! The command line: every command, flag and environment variable of `carrierctl` (clap).
//!
//! Connection settings come from flags or `CARRIER_*` variables, so a shell can be pointed at
//! one deployment once (`export CARRIER_URL=... CARRIER_TOKEN=...`). The Kafka settings use the
//! services' own variable names (`CARRIER_KAFKA__BROKERS`, `CARRIER_KAFKA__TOPIC_PREFIX`), so the
//! environment a service runs with also works for `notifications tail`.

use std::path::PathBuf;

use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "carrierctl",
    version,
    about = "Operate Carrier: read, search and retry logs, control destination queues, send messages, tail alerts",
    after_help = "Exit status: 0 done; 1 Carrier refused (the API's error text is on stderr) or some \
                  messages/logs were refused; 2 bad usage; 3 Carrier or Kafka unreachable."
)]
pub struct Cli {
    /// Base URL of Carrier's ingress (its REST API).
    #[arg(
        long,
        env = "CARRIER_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,

    /// Bearer token: the operator (admin) token, or a source's access token (a source sees only
    /// its organization's logs).
    #[arg(long, env = "CARRIER_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,

    /// Machine-readable output: one JSON document per command (JSON lines for `notifications
    /// tail`). Messages for people go to stderr.
    #[arg(long, global = true)]
    pub json: bool,

    /// Longest wait for one answer of Carrier, in milliseconds.
    #[arg(long, default_value_t = 30_000, global = true)]
    pub timeout_ms: u64,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Logs (one per message and destination): read one, search, retry.
    Logs {
        #[command(subcommand)]
        command: LogsCommand,
    },
    /// A destination's queue: its state, pause, resume, skip its held head (operator token).
    Destinations {
        #[command(subcommand)]
        command: DestinationsCommand,
    },
    /// Send one message, or many from a file (one JSON document per line), as a source.
    Send(SendArgs),
    /// Alerts published on the `carrier.notifications` topic.
    Notifications {
        #[command(subcommand)]
        command: NotificationsCommand,
    },
    /// Installation and upgrades: the database schema and the Kafka topics. Configured like the
    /// services (`CARRIER_DATABASE_URL`, `CARRIER_KAFKA__*`, `CARRIER_TOPICS__*`, or the TOML
    /// file named by `CARRIER_CONFIG_FILE`), not by the API's URL and token.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Applies every pending database migration (run it before the services of a new version
    /// start: they refuse an unmigrated schema). Safe to run again; concurrent runs wait for
    /// each other.
    Migrate {
        /// Longest wait for Postgres to answer, in seconds.
        #[arg(long, default_value_t = 60)]
        wait_secs: u64,
    },
    /// Where the database schema stands against this version's migrations; exit status 1
    /// unless it is exactly this version's.
    Schema,
    /// Carrier's Kafka topics.
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Creates the missing topics with the `[topics]` settings (partitions, replication factor,
    /// `min.insync.replicas`, retention) and reports what differs on existing ones. Exit status
    /// 1 if a topic could not be created or the deliveries topic's partition count differs from
    /// the settings (it never changes).
    Ensure,
    /// Reports every difference between the topics and the settings, changing nothing; exit
    /// status 1 on any.
    Check,
}

#[derive(Debug, Subcommand)]
pub enum LogsCommand {
    /// One log with its attempts (`GET /v1/logs/{id}`).
    Get {
        /// The log ID.
        log_id: String,
    },
    /// Logs matching filters, newest first (`GET /v1/logs`).
    Search {
        #[command(flatten)]
        filter: LogFilter,
        /// Logs per page, 1 to 500 (Carrier's default: 50).
        #[arg(long)]
        limit: Option<u32>,
        /// Continue after a previous page (its `next_cursor`).
        #[arg(long)]
        cursor: Option<String>,
        /// Follow `next_cursor` to the last page and print every matching log.
        #[arg(long, conflicts_with = "cursor")]
        all: bool,
    },
    /// Retry one log (`POST /v1/logs/{id}/retry`), or every log matching filters, oldest
    /// first (`POST /v1/logs/retry`; `failed` logs unless `--status` says otherwise).
    Retry {
        /// The log ID. Without it, give at least one filter.
        log_id: Option<String>,
        #[command(flatten)]
        filter: LogFilter,
        /// Logs retried per request, 1 to 1000 (Carrier's default: 100); requests repeat until
        /// every matching log is retried.
        #[arg(long)]
        limit: Option<u32>,
    },
}

/// The filters of `logs search` and `logs retry` (the query parameters of `GET /v1/logs`).
#[derive(Debug, Args, Clone, Default)]
pub struct LogFilter {
    /// Only this destination's logs.
    #[arg(long = "destination", value_name = "DESTINATION_ID")]
    pub destination_id: Option<String>,
    /// Only logs of messages from this source.
    #[arg(long = "source", value_name = "SOURCE_ID")]
    pub source_id: Option<String>,
    /// Only this organization's logs (operator token).
    #[arg(long = "organization", value_name = "ORGANIZATION_ID")]
    pub organization_id: Option<String>,
    /// queued, delivered, failed or cancelled.
    #[arg(long)]
    pub status: Option<String>,
    /// Only this data model (a FHIR resource type for the FHIR API).
    #[arg(long)]
    pub data_model: Option<String>,
    /// true: only test messages; false: only real ones.
    #[arg(long, value_name = "BOOL")]
    pub test: Option<bool>,
    /// Received at or after this time: RFC 3339 (`2026-11-26T09:00:00Z`) or an age (`30m`,
    /// `2h`, `7d`).
    #[arg(long, value_parser = time_argument)]
    pub since: Option<String>,
    /// Received before this time (RFC 3339 or an age, as `--since`).
    #[arg(long, value_parser = time_argument)]
    pub until: Option<String>,
}

impl LogFilter {
    /// The query parameters these filters give.
    pub fn query(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        let mut add = |name: &'static str, value: &Option<String>| {
            if let Some(value) = value {
                query.push((name, value.clone()));
            }
        };
        add("destination_id", &self.destination_id);
        add("source_id", &self.source_id);
        add("organization_id", &self.organization_id);
        add("status", &self.status);
        add("data_model", &self.data_model);
        add("test", &self.test.map(|test| test.to_string()));
        add("since", &self.since);
        add("until", &self.until);
        query
    }

    pub fn is_empty(&self) -> bool {
        self.query().is_empty()
    }
}

#[derive(Debug, Subcommand)]
pub enum DestinationsCommand {
    /// The queue's state: paused (and why, since when), depth, held head, its attempts, next
    /// attempt, last error.
    Queue {
        /// The destination ID.
        destination_id: String,
    },
    /// Stop attempting; messages keep queueing until `resume`.
    Pause {
        /// The destination ID.
        destination_id: String,
    },
    /// Lift an operator pause.
    Resume {
        /// The destination ID.
        destination_id: String,
    },
    /// Cancel the held head of the queue; the next message proceeds.
    Skip {
        /// The destination ID.
        destination_id: String,
    },
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// One message: a JSON document (`-`: read it from standard input). Data Model API: with
    /// `Meta.DataModel` and `Meta.EventType`; with `--fhir`: a FHIR R4 resource or Bundle.
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    pub message: Option<String>,

    /// Many messages: a file with one JSON document per line (`-`: standard input), sent in
    /// order, one at a time; blank lines are skipped.
    #[arg(long, short)]
    pub file: Option<PathBuf>,

    /// The source's client ID, exchanged with its secret for an access token (otherwise
    /// `--token` must be a source's access token).
    #[arg(long, env = "CARRIER_CLIENT_ID", requires = "client_secret")]
    pub client_id: Option<String>,

    /// The source's client secret.
    #[arg(
        long,
        env = "CARRIER_CLIENT_SECRET",
        hide_env_values = true,
        requires = "client_id"
    )]
    pub client_secret: Option<String>,

    /// Use the FHIR API: each message goes to `POST /fhir/R4/{its resourceType}`.
    #[arg(long)]
    pub fhir: bool,

    /// FHIR API: mark the messages as test messages (header `Carrier-Test: true`). Data Model
    /// API messages say so in `Meta.Test`.
    #[arg(long, requires = "fhir")]
    pub test: bool,

    /// With `--file`: go on after a refused message (by default sending stops at the first).
    #[arg(long)]
    pub continue_on_error: bool,

    /// Tries of a message answered 429 or 503 (each after its `Retry-After`) before it counts
    /// as refused.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tries: u32,
}

#[derive(Debug, Subcommand)]
pub enum NotificationsCommand {
    /// Print each alert as it is published (failing / recovered destinations), until Ctrl-C.
    Tail(TailArgs),
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Kafka bootstrap brokers (`host:port`, comma-separated).
    #[arg(long, env = "CARRIER_KAFKA__BROKERS", default_value_t = carrier_config::KafkaSettings::default().brokers)]
    pub brokers: String,

    /// The deployment's topic prefix: alerts are on `{prefix}notifications`.
    #[arg(long, env = "CARRIER_KAFKA__TOPIC_PREFIX", default_value_t = carrier_config::KafkaSettings::default().topic_prefix)]
    pub topic_prefix: String,

    /// Start from the oldest retained alert (default: only alerts published from now on).
    #[arg(long)]
    pub from_beginning: bool,

    /// Exit after this many alerts.
    #[arg(long)]
    pub max: Option<u64>,
}

/// A `--since`/`--until` value as RFC 3339: RFC 3339 times pass as they are; an age (`90s`,
/// `30m`, `2h`, `7d`) is that long before now.
pub fn time_argument(text: &str) -> Result<String, String> {
    time_argument_at(text, Utc::now())
}

fn time_argument_at(text: &str, now: DateTime<Utc>) -> Result<String, String> {
    let text = text.trim();
    if DateTime::parse_from_rfc3339(text).is_ok() {
        return Ok(text.to_string());
    }
    let invalid = || {
        format!("'{text}' is neither an RFC 3339 time (2026-11-26T09:00:00Z) nor an age (90s, 30m, 2h, 7d)")
    };
    let split = text
        .len()
        .checked_sub(1)
        .filter(|at| text.is_char_boundary(*at))
        .ok_or_else(invalid)?;
    let (number, unit) = text.split_at(split);
    let number: i64 = number.parse().map_err(|_| invalid())?;
    let age = match unit {
        "s" => chrono::Duration::try_seconds(number),
        "m" => chrono::Duration::try_minutes(number),
        "h" => chrono::Duration::try_hours(number),
        "d" => chrono::Duration::try_days(number),
        _ => None,
    }
    .filter(|age| *age >= chrono::Duration::zero())
    .ok_or_else(invalid)?;
    let at = now.checked_sub_signed(age).ok_or_else(invalid)?;
    Ok(at.to_rfc3339_opts(SecondsFormat::Millis, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn times_are_rfc3339_or_ages_before_now() {
        let now = DateTime::parse_from_rfc3339("2026-11-26T12:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            time_argument_at("2026-11-26T09:00:00+01:00", now).unwrap(),
            "2026-11-26T09:00:00+01:00"
        );
        assert_eq!(time_argument_at("30m", now).unwrap(), "2026-11-26T11:30:00.000Z");
        assert_eq!(time_argument_at("2h", now).unwrap(), "2026-11-26T10:00:00.000Z");
        assert_eq!(time_argument_at("7d", now).unwrap(), "2026-11-19T12:00:00.000Z");
        assert_eq!(time_argument_at("90s", now).unwrap(), "2026-11-26T11:58:30.000Z");
        for bad in ["", "m", "yesterday", "-5m", "5w", "2026-11-26", "5é"] {
            let error = time_argument_at(bad, now).unwrap_err();
            assert!(error.contains("neither an RFC 3339 time"), "{bad}: {error}");
        }
    }

    #[test]
    fn filters_become_query_parameters() {
        let cli = Cli::try_parse_from([
            "carrierctl",
            "logs",
            "retry",
            "--status",
            "failed",
            "--destination",
            "d1",
            "--test",
            "false",
            "--since",
            "2026-11-26T09:00:00Z",
        ])
        .unwrap();
        let Command::Logs {
            command: LogsCommand::Retry { log_id, filter, .. },
        } = cli.command
        else {
            panic!("parsed as logs retry")
        };
        assert_eq!(log_id, None);
        assert_eq!(
            filter.query(),
            vec![
                ("destination_id", "d1".to_string()),
                ("status", "failed".to_string()),
                ("test", "false".to_string()),
                ("since", "2026-11-26T09:00:00Z".to_string()),
            ]
        );
        assert!(LogFilter::default().is_empty());
    }

    #[test]
    fn send_takes_a_message_or_a_file_not_both() {
        assert!(Cli::try_parse_from(["carrierctl", "send"]).is_err());
        assert!(Cli::try_parse_from(["carrierctl", "send", "{}", "--file", "m.jsonl"]).is_err());
        assert!(Cli::try_parse_from(["carrierctl", "send", "--file", "m.jsonl", "--json"]).is_ok());
        assert!(
            Cli::try_parse_from(["carrierctl", "send", "{}", "--test"]).is_err(),
            "--test is for the FHIR API"
        );
    }
}
