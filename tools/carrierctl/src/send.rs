//! `carrierctl send`: one message, or many from a file, as a source would send them
//! (`POST /endpoint`, or `POST /fhir/R4/{type}` with `--fhir`).
//!
//! A file is sent in order, one message at a time: Carrier keeps each source's order only for
//! messages it has accepted, so sending the next line before the previous one is answered could
//! reorder them. Each line's bytes go as they are (ingress validates them and answers in its own
//! words). A 429 or 503 is tried again after its `Retry-After` (the message was not accepted), up
//! to `--max-tries`; an expired token is renewed once when client credentials were given. A
//! transport failure stops the file at once: the message may or may not have been accepted, and
//! only the operator can tell whether to resend it.

use std::io::{BufRead, BufReader, Read};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Map, Value};

use crate::api::{error_text, Answer, Client, CtlError};
use crate::cli::SendArgs;
use crate::output::{self, Table};

/// Longest wait a `Retry-After` may impose on one try.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Refusals listed in the human summary (all of them are in the JSON one).
const REFUSALS_SHOWN: usize = 20;

/// What became of one message.
#[derive(Debug)]
enum Outcome {
    /// Accepted (200): its message ID and logs (`{"id", "destination_id"}`; FHIR answers give
    /// log IDs only).
    Accepted { message_id: Value, logs: Vec<Value> },
    /// Refused by Carrier (`status`), or not sendable at all (`status` `None`: a FHIR line that
    /// is not a resource).
    Refused { status: Option<u16>, text: String },
}

struct Sender<'a> {
    client: &'a Client,
    credentials: Option<(String, String)>,
    token: String,
    fhir: bool,
    test: bool,
    max_tries: u32,
}

impl Sender<'_> {
    async fn send(&mut self, body: Vec<u8>) -> Result<Outcome, CtlError> {
        let resource_type;
        let (path, content_type): (Vec<&str>, &str) = if self.fhir {
            resource_type = match fhir_resource_type(&body) {
                Ok(resource_type) => resource_type,
                Err(text) => return Ok(Outcome::Refused { status: None, text }),
            };
            (vec!["fhir", "R4", &resource_type], "application/fhir+json")
        } else {
            (vec!["endpoint"], "application/json")
        };
        let mut headers = vec![("content-type", content_type)];
        if self.test {
            headers.push(("carrier-test", "true"));
        }
        let mut tries = 0;
        let mut renewed = false;
        loop {
            tries += 1;
            let answer = self
                .client
                .post_bytes(&path, &self.token, &headers, body.clone())
                .await?;
            match answer.status {
                200..=299 => return Ok(accepted(&answer)),
                401 if !renewed && self.credentials.is_some() => {
                    let (client_id, client_secret) = self.credentials.as_ref().expect("checked");
                    self.token = self.client.token_for(client_id, client_secret).await?;
                    renewed = true;
                    tries -= 1;
                }
                429 | 503 if tries < self.max_tries => tokio::time::sleep(retry_after(&answer)).await,
                status => {
                    return Ok(Outcome::Refused {
                        status: Some(status),
                        text: error_text(&answer),
                    })
                }
            }
        }
    }
}

/// The resource type a FHIR message is posted under.
fn fhir_resource_type(body: &[u8]) -> Result<String, String> {
    let resource: Value = serde_json::from_slice(body)
        .map_err(|error| format!("not a FHIR resource: not valid JSON: {error}"))?;
    match resource["resourceType"].as_str() {
        Some(resource_type) if !resource_type.is_empty() => Ok(resource_type.to_string()),
        _ => Err("not a FHIR resource: no resourceType".into()),
    }
}

/// The IDs of an accepted message: from the body (Data Model API) or the headers (FHIR API).
fn accepted(answer: &Answer) -> Outcome {
    if let Some(message_id) = answer.header("carrier-message-id") {
        let logs = answer
            .header("carrier-log-ids")
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(|id| json!({ "id": id }))
            .collect();
        return Outcome::Accepted {
            message_id: json!(message_id),
            logs,
        };
    }
    let meta = &answer.body["Meta"];
    let logs = meta["Logs"]
        .as_array()
        .map(|logs| {
            logs.iter()
                .map(|log| json!({ "id": log["ID"], "destination_id": log["DestinationID"] }))
                .collect()
        })
        .unwrap_or_default();
    Outcome::Accepted {
        message_id: meta["Message"]["ID"].clone(),
        logs,
    }
}

fn retry_after(answer: &Answer) -> Duration {
    answer
        .header("retry-after")
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1))
        .min(MAX_RETRY_AFTER)
}

pub async fn run(client: &Client, args: SendArgs, as_json: bool) -> Result<ExitCode, CtlError> {
    let credentials = args.client_id.clone().zip(args.client_secret.clone());
    let token = match &credentials {
        Some((client_id, client_secret)) => client.token_for(client_id, client_secret).await?,
        None => client.token.clone().ok_or_else(|| {
            CtlError::Usage(
                "send needs a source's credentials: --client-id and --client-secret \
                     (CARRIER_CLIENT_ID, CARRIER_CLIENT_SECRET), or its access token in --token"
                    .into(),
            )
        })?,
    };
    let mut sender = Sender {
        client,
        credentials,
        token,
        fhir: args.fhir,
        test: args.test,
        max_tries: args.max_tries,
    };
    match (&args.message, &args.file) {
        (Some(message), _) => send_one(&mut sender, message, as_json).await,
        (None, Some(path)) => send_file(&mut sender, path, args.continue_on_error, as_json).await,
        (None, None) => Err(CtlError::Usage("give a message or --file".into())),
    }
}

async fn send_one(sender: &mut Sender<'_>, message: &str, as_json: bool) -> Result<ExitCode, CtlError> {
    let body = if message == "-" {
        let mut body = Vec::new();
        std::io::stdin()
            .read_to_end(&mut body)
            .map_err(|source| CtlError::Read {
                path: "standard input".into(),
                source,
            })?;
        body
    } else {
        message.as_bytes().to_vec()
    };
    match sender.send(body).await? {
        Outcome::Accepted { message_id, logs } => {
            if as_json {
                output::json(&json!({ "message_id": message_id, "logs": logs }));
            } else {
                output::line(&format!("accepted message {}", output::cell(&message_id)));
                let mut table = Table::new(&["LOG", "DESTINATION"]);
                for log in &logs {
                    table.row(vec![
                        output::cell(&log["id"]),
                        output::cell(&log["destination_id"]),
                    ]);
                }
                output::line(&table.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Refused {
            status: Some(status),
            text,
        } => Err(CtlError::Api { status, text }),
        Outcome::Refused { status: None, text } => Err(CtlError::Usage(format!("the message is {text}"))),
    }
}

/// What a file's sending came to.
#[derive(Debug, Default)]
struct Summary {
    accepted: u64,
    refusals: Vec<(u64, Option<u16>, String)>,
    stopped_at_line: Option<u64>,
}

impl Summary {
    fn sent(&self) -> u64 {
        self.accepted + self.refusals.len() as u64
    }

    /// Refusals counted by status (`"invalid"`: not sendable).
    fn by_status(&self) -> Map<String, Value> {
        let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
        for (_, status, _) in &self.refusals {
            let key = status
                .map(|status| status.to_string())
                .unwrap_or_else(|| "invalid".into());
            *counts.entry(key).or_default() += 1;
        }
        counts
            .into_iter()
            .map(|(key, count)| (key, json!(count)))
            .collect()
    }

    fn to_json(&self, elapsed: Duration) -> Value {
        json!({
            "sent": self.sent(),
            "accepted": self.accepted,
            "refused": self.refusals.len(),
            "refused_by_status": self.by_status(),
            "refusals": self.refusals.iter().map(|(line, status, text)| {
                json!({ "line": line, "status": status, "error": text })
            }).collect::<Vec<_>>(),
            "stopped_at_line": self.stopped_at_line,
            "elapsed_ms": elapsed.as_millis() as u64,
            "rate_per_sec": rate(self.sent(), elapsed),
        })
    }

    fn to_text(&self, elapsed: Duration) -> String {
        let mut text = format!(
            "sent {} message(s) in {:.2} s ({:.1}/s): {} accepted, {} refused",
            self.sent(),
            elapsed.as_secs_f64(),
            rate(self.sent(), elapsed),
            self.accepted,
            self.refusals.len()
        );
        if !self.refusals.is_empty() {
            let counts: Vec<String> = self
                .by_status()
                .iter()
                .map(|(status, count)| format!("{status}: {count}"))
                .collect();
            text.push_str(&format!(" ({})", counts.join(", ")));
        }
        for (line, status, error) in self.refusals.iter().take(REFUSALS_SHOWN) {
            let status = status
                .map(|status| format!("HTTP {status}"))
                .unwrap_or_else(|| "not sent".into());
            text.push_str(&format!("\nline {line}: {status}: {error}"));
        }
        if self.refusals.len() > REFUSALS_SHOWN {
            text.push_str(&format!(
                "\n... and {} more (--json lists every one)",
                self.refusals.len() - REFUSALS_SHOWN
            ));
        }
        if let Some(line) = self.stopped_at_line {
            text.push_str(&format!(
                "\nstopped at line {line}; the lines after it were not sent"
            ));
        }
        text
    }
}

/// Messages per second, to one decimal.
fn rate(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds <= 0.0 {
        return 0.0;
    }
    (count as f64 / seconds * 10.0).round() / 10.0
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

/// The messages of a file (or of standard input, `-`): its non-blank lines, without their line
/// endings, each with its line number (blank lines count).
struct Messages<'a> {
    path: &'a std::path::Path,
    reader: Box<dyn BufRead>,
    line_number: u64,
}

impl<'a> Messages<'a> {
    fn open(path: &'a std::path::Path) -> Result<Self, CtlError> {
        let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
            Box::new(BufReader::new(std::io::stdin()))
        } else {
            let file = std::fs::File::open(path).map_err(|source| CtlError::Read {
                path: path.display().to_string(),
                source,
            })?;
            Box::new(BufReader::new(file))
        };
        Ok(Self {
            path,
            reader,
            line_number: 0,
        })
    }

    /// Reads the next message into `line` and answers its line number; `None` at the end.
    fn next_into(&mut self, line: &mut Vec<u8>) -> Result<Option<u64>, CtlError> {
        loop {
            line.clear();
            let read = self
                .reader
                .read_until(b'\n', line)
                .map_err(|source| CtlError::Read {
                    path: self.path.display().to_string(),
                    source,
                })?;
            if read == 0 {
                return Ok(None);
            }
            self.line_number += 1;
            if !is_blank(line) {
                while line.last().is_some_and(|byte| *byte == b'\n' || *byte == b'\r') {
                    line.pop();
                }
                return Ok(Some(self.line_number));
            }
        }
    }
}

/// The messages of a file, for the progress bar's length; `None` for standard input, which can
/// be read only once.
fn count_messages(path: &std::path::Path) -> Result<Option<u64>, CtlError> {
    if path.as_os_str() == "-" {
        return Ok(None);
    }
    let mut messages = Messages::open(path)?;
    let mut count = 0;
    let mut line = Vec::new();
    while messages.next_into(&mut line)?.is_some() {
        count += 1;
    }
    Ok(Some(count))
}

fn progress_bar(total: Option<u64>) -> ProgressBar {
    let target = ProgressDrawTarget::stderr();
    match total {
        Some(total) => {
            let bar = ProgressBar::with_draw_target(Some(total), target);
            bar.set_style(
                ProgressStyle::with_template("{wide_bar} {pos}/{len} {per_sec} eta {eta} {msg}")
                    .expect("valid template"),
            );
            bar
        }
        None => {
            let bar = ProgressBar::with_draw_target(None, target);
            bar.set_style(
                ProgressStyle::with_template("{spinner} {pos} sent {per_sec} {msg}").expect("valid template"),
            );
            bar
        }
    }
}

async fn send_file(
    sender: &mut Sender<'_>,
    path: &std::path::Path,
    continue_on_error: bool,
    as_json: bool,
) -> Result<ExitCode, CtlError> {
    let total = count_messages(path)?;
    let mut messages = Messages::open(path)?;
    let bar = progress_bar(total);
    let started = Instant::now();
    let mut summary = Summary::default();
    let mut fatal = None;
    let mut line = Vec::new();
    while let Some(line_number) = messages.next_into(&mut line)? {
        match sender.send(line.clone()).await {
            Ok(Outcome::Accepted { .. }) => summary.accepted += 1,
            Ok(Outcome::Refused { status, text }) => {
                summary.refusals.push((line_number, status, text));
                bar.set_message(format!("{} refused", summary.refusals.len()));
                if !continue_on_error {
                    summary.stopped_at_line = Some(line_number);
                    bar.inc(1);
                    break;
                }
            }
            Err(error) => {
                summary.stopped_at_line = Some(line_number);
                fatal = Some(error);
                break;
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    if as_json {
        output::json(&summary.to_json(elapsed));
    } else {
        output::line(&summary.to_text(elapsed));
    }
    if let Some(error) = fatal {
        return Err(error);
    }
    Ok(
        if summary.refusals.is_empty() && summary.stopped_at_line.is_none() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn answer(headers: &[(&'static str, &str)], body: &str) -> Answer {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        Answer {
            status: 200,
            headers: map,
            body: serde_json::from_str(body).unwrap_or(Value::Null),
            raw: body.into(),
        }
    }

    #[test]
    fn accepted_ids_come_from_either_api() {
        let data_model = answer(
            &[],
            r#"{"Meta":{"Message":{"ID":"m1"},"Logs":[{"ID":"l1","DestinationID":"d1"}],"Errors":[]}}"#,
        );
        let Outcome::Accepted { message_id, logs } = accepted(&data_model) else {
            panic!()
        };
        assert_eq!(message_id, "m1");
        assert_eq!(logs, vec![json!({"id": "l1", "destination_id": "d1"})]);
        let fhir = answer(
            &[("carrier-message-id", "m2"), ("carrier-log-ids", "l2,l3")],
            r#"{"resourceType":"OperationOutcome","issue":[]}"#,
        );
        let Outcome::Accepted { message_id, logs } = accepted(&fhir) else {
            panic!()
        };
        assert_eq!(message_id, "m2");
        assert_eq!(logs, vec![json!({"id": "l2"}), json!({"id": "l3"})]);
    }

    #[test]
    fn messages_are_the_non_blank_lines_with_their_numbers() {
        let path = std::env::temp_dir().join(format!("carrierctl-messages-{}.jsonl", std::process::id()));
        std::fs::write(&path, "{\"a\":1}\r\n\n  \n{\"b\":2}\n{\"c\":3}").unwrap();
        let mut messages = Messages::open(&path).unwrap();
        let mut line = Vec::new();
        let mut read = Vec::new();
        while let Some(number) = messages.next_into(&mut line).unwrap() {
            read.push((number, String::from_utf8(line.clone()).unwrap()));
        }
        assert_eq!(
            read,
            [
                (1, r#"{"a":1}"#.into()),
                (4, r#"{"b":2}"#.into()),
                (5, r#"{"c":3}"#.to_string())
            ]
        );
        assert_eq!(count_messages(&path).unwrap(), Some(3));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn fhir_lines_need_a_resource_type() {
        assert_eq!(
            fhir_resource_type(br#"{"resourceType":"Patient"}"#).unwrap(),
            "Patient"
        );
        assert!(fhir_resource_type(b"{}").unwrap_err().contains("no resourceType"));
        assert!(fhir_resource_type(b"nope")
            .unwrap_err()
            .contains("not valid JSON"));
    }

    #[test]
    fn retry_after_is_honoured_within_a_bound() {
        assert_eq!(
            retry_after(&answer(&[("retry-after", "3")], "")),
            Duration::from_secs(3)
        );
        assert_eq!(retry_after(&answer(&[], "")), Duration::from_secs(1));
        assert_eq!(
            retry_after(&answer(&[("retry-after", "3600")], "")),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn the_summary_counts_refusals_by_status() {
        let summary = Summary {
            accepted: 5,
            refusals: vec![
                (3, Some(400), "Required field missing - Meta.DataModel".into()),
                (9, Some(400), "Request body is empty".into()),
                (12, Some(403), "Source is disabled".into()),
            ],
            stopped_at_line: None,
        };
        let document = summary.to_json(Duration::from_secs(2));
        assert_eq!(document["sent"], 8);
        assert_eq!(document["refused"], 3);
        assert_eq!(document["refused_by_status"], json!({"400": 2, "403": 1}));
        assert_eq!(document["rate_per_sec"], 4.0);
        assert_eq!(
            document["refusals"][0],
            json!({"line": 3, "status": 400, "error": "Required field missing - Meta.DataModel"})
        );
        let text = summary.to_text(Duration::from_secs(2));
        assert!(
            text.starts_with("sent 8 message(s) in 2.00 s (4.0/s): 5 accepted, 3 refused (400: 2, 403: 1)"),
            "{text}"
        );
        assert!(text.contains("line 12: HTTP 403: Source is disabled"), "{text}");
    }
}
