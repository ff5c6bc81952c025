//! Calls to Carrier's REST API (ingress), and the one error type of `carrierctl` with its exit
//! status.
//!
//! Carrier's error answers carry a text made for people: `Meta.Errors[0].Text` (Data Model API
//! and the logs/admin API), `issue[0].details.text` (FHIR API) or `error_description` (OAuth).
//! [`error_text`] finds it, so every refusal is reported in Carrier's own words.

use std::process::ExitCode;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, Url};
use serde_json::Value;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Carrier answered with an error status.
    #[error("{text} (HTTP {status})")]
    Api { status: u16, text: String },
    /// No answer from ingress: not listening, unresolvable, timed out.
    #[error("cannot reach Carrier at {url}: {reason} (is ingress running? set --url or CARRIER_URL)")]
    Unreachable { url: String, reason: String },
    /// No answer from the Kafka brokers.
    #[error("cannot reach Kafka at {brokers}: {reason} (set --brokers or CARRIER_KAFKA__BROKERS)")]
    KafkaUnreachable { brokers: String, reason: String },
    /// Something the command line asks for cannot be done as asked.
    #[error("{0}")]
    Usage(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Kafka: {0}")]
    Kafka(String),
    /// No answer from Postgres (`admin`).
    #[error("cannot reach the database: {0} (set CARRIER_DATABASE_URL)")]
    DatabaseUnreachable(String),
    /// The database refused what `admin` asked (a migration failed).
    #[error("{0}")]
    Database(String),
}

impl CtlError {
    /// 1: Carrier (or Kafka) refused; 2: bad usage (as clap's own); 3: unreachable.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CtlError::Api { .. } | CtlError::Kafka(_) | CtlError::Database(_) => ExitCode::from(1),
            CtlError::Usage(_) | CtlError::Read { .. } => ExitCode::from(2),
            CtlError::Unreachable { .. }
            | CtlError::KafkaUnreachable { .. }
            | CtlError::DatabaseUnreachable(_) => ExitCode::from(3),
        }
    }
}

/// An answer of Carrier, whatever its status.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    /// The body as JSON; `Value::Null` when it is empty or not JSON (see `raw`).
    pub body: Value,
    pub raw: String,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// A header's value, `None` when absent or not text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// The error this answer is, when it is one.
    pub fn into_result(self) -> Result<Value, CtlError> {
        if self.is_success() {
            Ok(self.body)
        } else {
            Err(CtlError::Api {
                status: self.status,
                text: error_text(&self),
            })
        }
    }
}

/// Carrier's text for an error answer, in whichever shape the route uses.
pub fn error_text(answer: &Answer) -> String {
    let body = &answer.body;
    let candidates = [
        body["Meta"]["Errors"][0]["Text"].as_str(),
        body["issue"][0]["details"]["text"].as_str(),
        body["error_description"].as_str(),
        body["error"].as_str(),
    ];
    if let Some(text) = candidates.into_iter().flatten().find(|text| !text.is_empty()) {
        return text.to_string();
    }
    let raw = answer.raw.trim();
    if raw.is_empty() {
        reqwest::StatusCode::from_u16(answer.status)
            .ok()
            .and_then(|status| status.canonical_reason())
            .unwrap_or("error")
            .to_string()
    } else {
        raw.chars().take(500).collect()
    }
}

/// The innermost cause of a transport error (e.g. `Connection refused (os error 111)`), which
/// says more than reqwest's outer `error sending request for url`.
fn transport_reason(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "no answer in time (see --timeout-ms)".to_string();
    }
    let mut reason = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        reason = cause.to_string();
        source = cause.source();
    }
    reason
}

/// A client of one ingress, with an optional bearer token.
#[derive(Clone)]
pub struct Client {
    base_url: Url,
    pub token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base_url: &str, token: Option<String>, timeout: Duration) -> Result<Client, CtlError> {
        let base_url = Url::parse(base_url)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && !url.cannot_be_a_base())
            .ok_or_else(|| CtlError::Usage(format!("--url {base_url} is not an http(s) URL")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5).min(timeout))
            .timeout(timeout)
            .user_agent(concat!("carrierctl/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| CtlError::Usage(format!("cannot set up an HTTP client: {error}")))?;
        Ok(Client {
            base_url,
            token: token.filter(|token| !token.is_empty()),
            http,
        })
    }

    /// The URL of `segments` under the base URL, each segment escaped (an ID typed by hand can
    /// hold any character).
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base_url.clone();
        {
            let mut path = url.path_segments_mut().expect("checked: can be a base");
            path.pop_if_empty();
            path.extend(segments);
        }
        url
    }

    /// The token, or a usage error naming where to give it.
    pub fn require_token(&self) -> Result<&str, CtlError> {
        self.token
            .as_deref()
            .ok_or_else(|| CtlError::Usage("no token: pass --token or set CARRIER_TOKEN".into()))
    }

    /// Sends a request; any status is an [`Answer`], only a transport failure is an error.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<Answer, CtlError> {
        let response = request.send().await.map_err(|error| CtlError::Unreachable {
            url: self.base_url.to_string(),
            reason: transport_reason(&error),
        })?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(|error| CtlError::Unreachable {
            url: self.base_url.to_string(),
            reason: transport_reason(&error),
        })?;
        Ok(Answer {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            raw: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }

    /// A request to `segments` with the bearer token, if any.
    pub fn request(&self, method: Method, segments: &[&str]) -> reqwest::RequestBuilder {
        let request = self.http.request(method, self.url(segments));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// `method segments?query` with the token (required); the JSON body of a success.
    pub async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<Value, CtlError> {
        self.require_token()?;
        self.send(self.request(method, segments).query(query))
            .await?
            .into_result()
    }

    /// A source's access token from `POST /oauth/token` (client-credentials grant).
    pub async fn token_for(&self, client_id: &str, client_secret: &str) -> Result<String, CtlError> {
        let request = self.http.post(self.url(&["oauth", "token"])).form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", client_secret),
        ]);
        let body = self.send(request).await?.into_result()?;
        body["access_token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| CtlError::Api {
                status: 200,
                text: "the token answer has no access_token".into(),
            })
    }

    /// `POST` of raw bytes (a message) with the given token and headers.
    pub async fn post_bytes(
        &self,
        segments: &[&str],
        token: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Answer, CtlError> {
        let mut request = self.http.post(self.url(segments)).bearer_auth(token);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request.body(body)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, raw: &str) -> Answer {
        Answer {
            status,
            headers: HeaderMap::new(),
            body: serde_json::from_str(raw).unwrap_or(Value::Null),
            raw: raw.to_string(),
        }
    }

    #[test]
    fn error_texts_come_from_every_answer_shape() {
        let data_model = answer(404, r#"{"Meta":{"Errors":[{"Text":"Log x not found"}]}}"#);
        assert_eq!(error_text(&data_model), "Log x not found");
        let fhir = answer(
            400,
            r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","details":{"text":"Required field missing - resourceType"}}]}"#,
        );
        assert_eq!(error_text(&fhir), "Required field missing - resourceType");
        let oauth = answer(
            401,
            r#"{"error":"invalid_client","error_description":"Unknown client"}"#,
        );
        assert_eq!(error_text(&oauth), "Unknown client");
        assert_eq!(
            error_text(&answer(502, "Bad Gateway from the proxy")),
            "Bad Gateway from the proxy"
        );
        assert_eq!(error_text(&answer(503, "")), "Service Unavailable");
        let error = answer(409, r#"{"Meta":{"Errors":[{"Text":"Nothing is held"}]}}"#)
            .into_result()
            .unwrap_err();
        assert_eq!(error.to_string(), "Nothing is held (HTTP 409)");
    }

    #[test]
    fn urls_escape_each_segment_under_the_base_path() {
        let client = Client::new("https://carrier.example.org/api/", None, Duration::from_secs(1)).unwrap();
        assert_eq!(
            client.url(&["v1", "logs", "a/b c"]).as_str(),
            "https://carrier.example.org/api/v1/logs/a%2Fb%20c"
        );
        let client = Client::new("http://127.0.0.1:8080", None, Duration::from_secs(1)).unwrap();
        assert_eq!(
            client.url(&["v1", "logs"]).as_str(),
            "http://127.0.0.1:8080/v1/logs"
        );
        assert!(Client::new("127.0.0.1:8080", None, Duration::from_secs(1)).is_err());
    }
}
