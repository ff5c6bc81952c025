//! One HTTP attempt of a log, and whether it succeeded.
//!
//! Success is a 2xx whose body carries no non-empty `Meta.Errors` and no OperationOutcome issue
//! of severity `error` or `fatal`. Anything else — another status, a redirect (never followed),
//! a connect error, a timeout, a destination address the outbound policy refuses — is a failure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use carrier_proto::config_v1::Destination;
use carrier_proto::records_v1::DeliveryTask;
use chrono::{SecondsFormat, TimeZone, Utc};
use serde_json::Value;

use crate::outbound::{self, OutboundPolicy};

/// What one attempt came to.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub success: bool,
    /// 0 when no response arrived.
    pub status_code: u16,
    /// Why it failed, as stored with the attempt (the log API shows it to the source): may quote
    /// the receiver's own error texts, which can hold patient data. Cleaned and capped.
    pub error: String,
    /// Why it failed in Carrier's words only, never the receiver's (status code, connect error,
    /// timeout): what tracing logs, the queue state, incidents and alerts carry.
    pub error_summary: String,
    /// The first `response_excerpt_bytes` of the response (empty when that setting is 0).
    pub response_excerpt: String,
    pub started_at_ms: i64,
    pub duration: Duration,
    /// No request can be made from this task and destination (a header value HTTP cannot
    /// carry): another attempt would fail the same way, so the log fails now.
    pub unsendable: bool,
    /// The metrics' class of the outcome: `2xx` … `5xx` by the answer's status, `timeout`,
    /// `connect` (no connection), `refused` (by the outbound policy), `other`.
    pub status_class: &'static str,
}

/// The HTTP client shared by every lane: pooled keep-alive connections on top of
/// [`outbound::client_builder`] (no redirects, no proxies — a proxy would dial the destination
/// on Carrier's behalf, past the outbound policy — and a resolver that drops the addresses
/// `policy` refuses).
pub fn client(policy: Arc<OutboundPolicy>) -> reqwest::Client {
    outbound::client_builder(policy)
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .user_agent(concat!("Carrier/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client configuration is valid")
}

/// How much of a response is read to judge it; the rest is not read.
const MAX_JUDGED_BYTES: usize = 256 * 1024;

impl AttemptResult {
    /// An attempt that failed before any request was made (e.g. its stored body could not be
    /// read): a failure like any other, retried on the same schedule.
    pub fn not_sent(error: String) -> Self {
        AttemptResult {
            success: false,
            status_code: 0,
            error_summary: error.clone(),
            error,
            response_excerpt: String::new(),
            started_at_ms: Utc::now().timestamp_millis(),
            duration: Duration::ZERO,
            unsendable: false,
            status_class: "other",
        }
    }
}

/// Sends `task` with `body` (the task's own, or its stored body when `task.body_stored`).
pub async fn send(
    client: &reqwest::Client,
    policy: &OutboundPolicy,
    destination: &Destination,
    task: &DeliveryTask,
    body: &[u8],
    attempt: u32,
    excerpt_bytes: usize,
) -> AttemptResult {
    let started = Instant::now();
    let started_at_ms = Utc::now().timestamp_millis();
    let timestamp = started_at_ms / 1000;
    let received_at = Utc
        .timestamp_millis_opt(task.received_at_ms)
        .single()
        .map(|at| at.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default();
    let signature = carrier_signature::sign(&destination.signing_secret, &task.log_id, timestamp, body)
        .unwrap_or_default();
    let content_type = if task.content_type.is_empty() {
        "application/json"
    } else {
        task.content_type.as_str()
    };
    let request = client
        .post(&destination.url)
        .timeout(Duration::from_millis(u64::from(destination.timeout_ms.max(100))))
        .header("content-type", content_type)
        .header("verification-token", &destination.verification_token)
        .header("carrier-message-id", &task.message_id)
        .header("carrier-log-id", &task.log_id)
        .header("carrier-attempt", attempt.to_string())
        .header("carrier-received-at", received_at)
        .header("carrier-test", if task.test { "true" } else { "false" })
        .header("carrier-environment", &destination.environment)
        .header("carrier-data-model", &task.data_model)
        .header("carrier-event-type", &task.event_type)
        .header("webhook-id", &task.log_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(Bytes::copy_from_slice(body));
    // The attempt's span (current here): where it goes, and its context for the receiver.
    let span = tracing::Span::current();
    record_destination(&span, &destination.url);
    let mut request = request;
    for (key, value) in carrier_telemetry::trace::current_headers() {
        request = request.header(key, value);
    }
    let mut result = AttemptResult {
        success: false,
        status_code: 0,
        error: String::new(),
        error_summary: String::new(),
        response_excerpt: String::new(),
        started_at_ms,
        duration: Duration::ZERO,
        unsendable: false,
        status_class: "other",
    };
    // IP-literal hosts are dialled without a resolver: check them here. Names are checked by
    // the client's resolver, on every address they resolve to.
    // A production destination is reached over https:// unless the allowances name its address.
    let in_the_clear = match destination.environment.as_str() {
        "production" => policy.check_scheme(&destination.url).err(),
        _ => None,
    };
    let outcome = match (policy.check_url(&destination.url), in_the_clear) {
        (Err(refused), _) => Err(Failure::Refused(refused)),
        (Ok(()), Some(refused)) => Err(Failure::PlainHttp(refused)),
        (Ok(()), None) => request
            .send()
            .await
            .map_err(|error| match outbound::refusal_in(&error) {
                Some(refused) => Failure::Refused(refused),
                None => Failure::Request(error),
            }),
    };
    match outcome {
        Err(Failure::PlainHttp(refused)) => {
            tracing::warn!(
                destination_id = %destination.id,
                log_id = %task.log_id,
                host = %refused.host,
                "production destination refused: plain http:// to an address the allowances do not name"
            );
            result.error = refused.to_string();
            result.status_class = "refused";
        }
        Err(Failure::Refused(refused)) => {
            outbound::count_refusal(&refused);
            tracing::warn!(
                destination_id = %destination.id,
                log_id = %task.log_id,
                address = %refused.address,
                class = refused.class.as_str(),
                "destination refused by outbound policy"
            );
            result.error = refused.to_string();
            result.status_class = "refused";
        }
        Err(Failure::Request(error)) if error.is_builder() => {
            tracing::warn!(destination_id = %destination.id, log_id = %task.log_id, error = %root_cause(&error), "no request can be made for this task; its log fails without retrying");
            result.error = format!(
                "the request cannot be built (a value HTTP headers cannot carry: check the destination's verification_token): {}",
                root_cause(&error)
            );
            result.unsendable = true;
        }
        Err(Failure::Request(error)) => {
            result.error = describe(&error);
            result.status_class = if error.is_timeout() {
                "timeout"
            } else if error.is_connect() {
                "connect"
            } else {
                "other"
            };
        }
        Ok(mut response) => {
            result.status_code = response.status().as_u16();
            result.status_class = status_class(result.status_code);
            let mut body = Vec::new();
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        body.extend_from_slice(&chunk);
                        if body.len() >= MAX_JUDGED_BYTES {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        result.error = format!("reading the response failed: {}", describe(&error));
                        break;
                    }
                }
            }
            result.response_excerpt = excerpt(&body, excerpt_bytes);
            if !response.status().is_success() {
                result.error = format!("destination answered HTTP {}", result.status_code);
            } else if result.error.is_empty() {
                match body_errors(&body) {
                    Some(text) => {
                        result.error = format!("destination answered 2xx with errors: {text}");
                        result.error_summary = format!(
                            "destination answered HTTP {} with errors in its body",
                            result.status_code
                        );
                    }
                    None => result.success = true,
                }
            }
        }
    }
    // What a receiver said travels on into the log store, logs and alerts: cleaned here, where
    // it enters (Postgres refuses NUL in text; control characters garble logs and alerts).
    result.error = clean_text(&result.error, MAX_ERROR_CHARS);
    if result.error_summary.is_empty() {
        // Every other error is Carrier's own text (status, connect or policy failure).
        result.error_summary = result.error.clone();
    }
    result.response_excerpt = clean_text(&result.response_excerpt, excerpt_bytes);
    result.duration = started.elapsed();
    if result.status_code != 0 {
        span.record("http.response.status_code", result.status_code);
    }
    if !result.success {
        // The status code when there is one (OpenTelemetry's convention), else Carrier's class
        // of the failure (timeout, connect, refused, other).
        let kind = if result.status_code != 0 && !(200..300).contains(&result.status_code) {
            result.status_code.to_string()
        } else {
            result.status_class.to_string()
        };
        span.record("error.type", kind.as_str());
        span.record("otel.status_code", "error");
    }
    result
}

/// `url` as a span may show it: without credentials, query or fragment.
fn traced_url(url: &str) -> Option<reqwest::Url> {
    let mut parsed = reqwest::Url::parse(url).ok()?;
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    parsed.set_query(None);
    parsed.set_fragment(None);
    Some(parsed)
}

/// The destination on the attempt's span: `url.full` without credentials, query or fragment
/// (a destination's URL may carry a token in either), `server.address` and `server.port`.
fn record_destination(span: &tracing::Span, url: &str) {
    if !carrier_telemetry::trace::enabled() {
        return;
    }
    let Some(parsed) = traced_url(url) else {
        return;
    };
    span.record("url.full", parsed.as_str());
    if let Some(host) = parsed.host_str() {
        span.record("server.address", host);
    }
    if let Some(port) = parsed.port_or_known_default() {
        span.record("server.port", port);
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

/// The longest error text an attempt records (a receiver's `Meta.Errors` can be long).
const MAX_ERROR_CHARS: usize = 1024;

/// `text` with NUL and the other control characters except tab, line feed and carriage return
/// replaced by U+FFFD, cut to at most `max_chars` characters.
fn clean_text(text: &str, max_chars: usize) -> String {
    text.chars()
        .take(max_chars)
        .map(|c| {
            if c.is_control() && !matches!(c, '\t' | '\n' | '\r') {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

/// Why no response arrived.
enum Failure {
    /// The outbound policy refused the destination's address (no connection was made).
    Refused(outbound::Refused),
    /// A production destination's `http://` URL to an address no allowance names.
    PlainHttp(carrier_outbound::PlainHttpRefused),
    Request(reqwest::Error),
}

fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out waiting for the destination".into()
    } else if error.is_connect() {
        format!("could not connect: {}", root_cause(error))
    } else {
        root_cause(error)
    }
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// The first `limit` bytes of a response, as text (cut at a character boundary).
fn excerpt(body: &[u8], limit: usize) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(limit)]);
    text.trim_end_matches('\u{FFFD}').to_string()
}

/// The errors a 2xx body reports, if any: a non-empty `Meta.Errors`, or an OperationOutcome
/// issue of severity `error` or `fatal`. A body that is not JSON reports none.
pub fn body_errors(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    if let Some(errors) = value.pointer("/Meta/Errors").and_then(Value::as_array) {
        if !errors.is_empty() {
            let texts: Vec<String> = errors
                .iter()
                .map(|error| {
                    error
                        .get("Text")
                        .and_then(Value::as_str)
                        .unwrap_or("(no Text)")
                        .to_string()
                })
                .collect();
            return Some(texts.join("; "));
        }
    }
    if value.get("resourceType").and_then(Value::as_str) == Some("OperationOutcome") {
        let issues = value.get("issue").and_then(Value::as_array)?;
        let serious: Vec<String> = issues
            .iter()
            .filter(|issue| {
                matches!(
                    issue.get("severity").and_then(Value::as_str),
                    Some("error" | "fatal")
                )
            })
            .map(|issue| {
                issue
                    .pointer("/details/text")
                    .or_else(|| issue.get("diagnostics"))
                    .and_then(Value::as_str)
                    .unwrap_or("(no details)")
                    .to_string()
            })
            .collect();
        if !serious.is_empty() {
            return Some(serious.join("; "));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traced_url_shows_no_credentials_query_or_fragment() {
        let url = traced_url("https://user:secret@receiver.example:8443/hook/v1?token=abc#part").unwrap();
        assert_eq!(url.as_str(), "https://receiver.example:8443/hook/v1");
        assert_eq!(
            traced_url("http://127.0.0.1/in").unwrap().as_str(),
            "http://127.0.0.1/in"
        );
        assert!(traced_url("not a url").is_none());
    }

    /// Issue 11 §9: a production destination is not sent to in the clear at a public address;
    /// a staging one is (its data is not real). No connection is made for the refusal: the
    /// address is a documentation range nothing answers on.
    #[tokio::test]
    async fn a_production_destination_over_plain_http_to_a_public_address_is_refused() {
        let policy = Arc::new(OutboundPolicy::new(&outbound::OutboundSettings::default()).unwrap());
        let client = client(policy.clone());
        let mut destination = Destination {
            id: "d".into(),
            url: "http://93.184.216.34:9/hook".into(),
            environment: "production".into(),
            timeout_ms: 200,
            ..Default::default()
        };
        let task = DeliveryTask {
            log_id: "l".into(),
            ..Default::default()
        };
        let result = send(&client, &policy, &destination, &task, b"{}", 1, 0).await;
        assert!(!result.success);
        assert!(
            result.error.starts_with("plain http:// to 93.184.216.34 refused"),
            "{}",
            result.error
        );
        assert_eq!(result.error_summary, result.error);

        destination.environment = "staging".into();
        let result = send(&client, &policy, &destination, &task, b"{}", 1, 0).await;
        assert!(
            !result.error.starts_with("plain http://"),
            "staging is attempted (and fails to connect): {}",
            result.error
        );
    }

    #[test]
    fn two_hundreds_with_errors_in_the_body_are_failures() {
        assert_eq!(body_errors(br#"{"Meta": {"Errors": []}}"#), None);
        assert_eq!(
            body_errors(br#"{"Meta": {"Errors": [{"Text": "bad MRN"}]}}"#).as_deref(),
            Some("bad MRN")
        );
        assert_eq!(body_errors(b"OK"), None);
        assert_eq!(
            body_errors(br#"{"resourceType": "OperationOutcome", "issue": []}"#),
            None
        );
        assert_eq!(
            body_errors(br#"{"resourceType": "OperationOutcome", "issue": [{"severity": "warning", "details": {"text": "w"}}]}"#),
            None
        );
        assert_eq!(
            body_errors(br#"{"resourceType": "OperationOutcome", "issue": [{"severity": "fatal", "diagnostics": "down"}]}"#)
                .as_deref(),
            Some("down")
        );
    }

    #[test]
    fn receiver_text_loses_nul_and_control_characters_and_is_capped() {
        assert_eq!(
            clean_text("Arr\u{0}ival\u{1b}[31m\u{7f}", 100),
            "Arr\u{FFFD}ival\u{FFFD}[31m\u{FFFD}"
        );
        assert_eq!(clean_text("line 1\nline 2\ttab\r", 100), "line 1\nline 2\ttab\r");
        assert_eq!(clean_text("héllo wörld", 5), "héllo");
    }

    #[test]
    fn excerpts_are_capped_at_a_character_boundary() {
        assert_eq!(excerpt("héllo".as_bytes(), 2), "h");
        assert_eq!(excerpt(b"hello", 100), "hello");
    }
}
