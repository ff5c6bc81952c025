//! Steady load through ingress: each stream (a source) sends `POST /endpoint` at a fixed pace,
//! each message numbered (`Sequence`, unique across streams) and tagged with its stream.
//!
//! A stream sends a message when it is due and its previous request has been answered, so a
//! stream's numbering is its order at ingress and the order its destinations must see. Messages
//! are due on a fixed schedule whatever happens to ingress (open loop); when ingress is down the
//! requests fail fast, and when it is slow the stream does not burst to catch up. A refused or
//! unanswered request is not retried: the next message gets the next number. Tokens are renewed
//! on 401.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::topology::{Stream, DATA_MODEL};

/// One message ingress answered 200.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub sequence: u64,
    pub stream: String,
    /// `Meta.Logs`: (destination ID, log ID) per destination it goes to.
    pub logs: Vec<(String, String)>,
}

/// Everything the load sent.
#[derive(Debug, Default)]
pub struct Ledger {
    pub accepted: Vec<Accepted>,
    /// Requests not answered 200, by status (`error` for no answer).
    pub refused: BTreeMap<String, usize>,
}

impl Ledger {
    pub fn sent(&self) -> usize {
        self.accepted.len() + self.refused.values().sum::<usize>()
    }
}

pub struct Load {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<Ledger>>,
}

/// How long one request may take before it counts as unanswered.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

impl Load {
    /// Starts one sender per `(stream, messages per second)`.
    pub fn start(ingress_url: &str, streams: Vec<(Stream, f64)>) -> Load {
        let stop = CancellationToken::new();
        let sequence = Arc::new(AtomicU64::new(1));
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("an HTTP client");
        let tasks = streams
            .into_iter()
            .map(|(stream, rate)| {
                let sender = Sender {
                    client: client.clone(),
                    ingress_url: ingress_url.to_string(),
                    stream,
                    interval: Duration::from_secs_f64(1.0 / rate),
                    sequence: sequence.clone(),
                    stop: stop.clone(),
                };
                tokio::spawn(sender.run())
            })
            .collect();
        Load { stop, tasks }
    }

    /// Stops every sender (each finishes its request in flight) and returns what was sent.
    pub async fn stop(self) -> Ledger {
        self.stop.cancel();
        let mut ledger = Ledger::default();
        for task in self.tasks {
            if let Ok(part) = task.await {
                ledger.accepted.extend(part.accepted);
                for (status, count) in part.refused {
                    *ledger.refused.entry(status).or_default() += count;
                }
            }
        }
        ledger.accepted.sort_by_key(|accepted| accepted.sequence);
        ledger
    }
}

struct Sender {
    client: reqwest::Client,
    ingress_url: String,
    stream: Stream,
    interval: Duration,
    sequence: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl Sender {
    async fn run(self) -> Ledger {
        let mut ledger = Ledger::default();
        let mut token: Option<String> = None;
        let mut due = Instant::now();
        while !self.stop.is_cancelled() {
            tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = tokio::time::sleep_until(due.into()) => {}
            }
            // Behind schedule (a slow answer): the next one is due now, no burst.
            due = (due + self.interval).max(Instant::now());
            if token.is_none() {
                token = self.token().await;
                if token.is_none() {
                    *ledger.refused.entry("no token".into()).or_default() += 1;
                    continue;
                }
            }
            let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
            let mut body = carrier_testkit::client::message(DATA_MODEL, sequence as usize);
            body["Stream"] = Value::String(self.stream.name.clone());
            match self.send(token.as_deref().unwrap_or_default(), &body).await {
                Ok((200, answer)) => ledger.accepted.push(Accepted {
                    sequence,
                    stream: self.stream.name.clone(),
                    logs: logs(&answer),
                }),
                Ok((status, _)) => {
                    if status == 401 {
                        token = None;
                    }
                    *ledger.refused.entry(status.to_string()).or_default() += 1;
                }
                Err(_) => *ledger.refused.entry("error".into()).or_default() += 1,
            }
        }
        ledger
    }

    async fn send(&self, token: &str, body: &Value) -> reqwest::Result<(u16, Value)> {
        let response = self
            .client
            .post(format!("{}/endpoint", self.ingress_url))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(body).unwrap_or_default())
            .send()
            .await?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    /// A client-credentials token, or `None` while ingress does not give one.
    async fn token(&self) -> Option<String> {
        let response = self
            .client
            .post(format!("{}/oauth/token", self.ingress_url))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.stream.source.client_id.as_str()),
                ("client_secret", self.stream.source.client_secret.as_str()),
            ])
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body: Value = serde_json::from_slice(&response.bytes().await.ok()?).ok()?;
        body["access_token"].as_str().map(str::to_string)
    }
}

/// `Meta.Logs` of an `/endpoint` answer as (destination ID, log ID) pairs.
fn logs(answer: &Value) -> Vec<(String, String)> {
    answer["Meta"]["Logs"]
        .as_array()
        .map(|logs| {
            logs.iter()
                .filter_map(|log| {
                    Some((
                        log["DestinationID"].as_str()?.to_string(),
                        log["ID"].as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}
