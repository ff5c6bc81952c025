//! The calls a user of Carrier makes, over real HTTP.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTP answer: status, headers, and the body as JSON (`Value::Null` when it is not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    /// A header's value (`""` when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
    }

    /// The error text, in either API's shape: `Meta.Errors[0].Text` (Data Model API) or
    /// `issue[0].details.text` (FHIR `OperationOutcome`).
    pub fn error_text(&self) -> &str {
        self.body["Meta"]["Errors"][0]["Text"]
            .as_str()
            .or_else(|| self.body["issue"][0]["details"]["text"].as_str())
            .unwrap_or("")
    }
}

/// How [`Api::post_streamed`] frames a body.
#[derive(Debug, Clone, Copy)]
pub enum Framing {
    /// Declares this `Content-Length` (whatever is actually sent).
    ContentLength(u64),
    /// `Transfer-Encoding: chunked`, no length declared.
    Chunked,
}

/// The answer to a streamed body, and how much of the body had been written when it came.
#[derive(Debug)]
pub struct Streamed {
    pub status: u16,
    pub head: String,
    pub body: Value,
    pub sent_bytes: usize,
}

/// A source's credentials as the admin API returns them.
#[derive(Debug, Clone)]
pub struct SourceCredentials {
    pub id: String,
    pub client_id: String,
    pub client_secret: String,
}

/// What most tests set up before they send: an organization with one source, one destination
/// of the same environment that the source is subscribed to, and a token for the source.
#[derive(Debug, Clone)]
pub struct Sender {
    /// The organization's ID.
    pub organization: String,
    pub source: SourceCredentials,
    /// The destination as the admin API returned it.
    pub destination: Value,
    /// A Bearer token for `source`.
    pub token: String,
}

#[derive(Clone)]
pub struct Api {
    pub base_url: String,
    pub admin_token: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base_url: &str, admin_token: &str) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_string(),
            admin_token: admin_token.to_string(),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .expect("client builds"),
        }
    }

    /// The same API called from another local address (e.g. `127.0.0.2`): a client of its own
    /// for per-client limits.
    pub fn from_local_address(&self, address: std::net::IpAddr) -> Api {
        Api {
            base_url: self.base_url.clone(),
            admin_token: self.admin_token.clone(),
            http: reqwest::Client::builder()
                .local_address(address)
                .pool_max_idle_per_host(64)
                .build()
                .expect("client builds"),
        }
    }

    /// The same API (and admin token) at another base URL, e.g. an extra ingress replica.
    pub fn at(&self, base_url: &str) -> Api {
        Api::new(base_url, &self.admin_token)
    }

    /// `method path` with an optional bearer token, extra headers and raw body.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Answer {
        let mut request = self.http.request(method, format!("{}{}", self.base_url, path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.expect("ingress answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap_or_default();
        Answer {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    /// `POST /oauth/token` with a client ID and secret (form-encoded), whatever the answer.
    pub async fn token_request(&self, client_id: &str, client_secret: &str) -> Answer {
        let form =
            format!("grant_type=client_credentials&client_id={client_id}&client_secret={client_secret}");
        self.request(
            reqwest::Method::POST,
            "/oauth/token",
            None,
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(form.into_bytes()),
        )
        .await
    }

    /// `POST /fhir/R4/{resource_type}` with a FHIR resource (`application/fhir+json`) and extra
    /// headers (e.g. `("carrier-test", "true")`).
    pub async fn fhir(
        &self,
        token: &str,
        resource_type: &str,
        resource: &Value,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut all_headers = vec![("content-type", "application/fhir+json")];
        all_headers.extend_from_slice(headers);
        self.request(
            reqwest::Method::POST,
            &format!("/fhir/R4/{resource_type}"),
            Some(token),
            &all_headers,
            Some(serde_json::to_vec(resource).expect("json")),
        )
        .await
    }

    /// `POST path` over a plain TCP connection, writing `body_bytes` bytes of body (64 KiB at a
    /// time) while reading the answer concurrently, so an answer that comes before the body is
    /// complete (a 413 refused as it streams) is seen, with how much had been written by then.
    pub async fn post_streamed(
        &self,
        path: &str,
        token: &str,
        framing: Framing,
        body_bytes: usize,
    ) -> Streamed {
        const CHUNK: usize = 64 * 1024;
        let authority = self
            .base_url
            .strip_prefix("http://")
            .expect("an http:// base URL")
            .to_string();
        let stream = tokio::net::TcpStream::connect(&authority)
            .await
            .expect("ingress accepts connections");
        let (mut reader, mut writer) = stream.into_split();
        let framing_header = match framing {
            Framing::ContentLength(length) => format!("Content-Length: {length}"),
            Framing::Chunked => "Transfer-Encoding: chunked".to_string(),
        };
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n{framing_header}\r\n\r\n"
        );
        let sent = Arc::new(AtomicUsize::new(0));
        let sent_by_writer = sent.clone();
        let writing = tokio::spawn(async move {
            writer.write_all(head.as_bytes()).await?;
            let chunk = vec![b' '; CHUNK];
            let mut written = 0;
            while written < body_bytes {
                let length = CHUNK.min(body_bytes - written);
                if let Framing::Chunked = framing {
                    writer.write_all(format!("{length:x}\r\n").as_bytes()).await?;
                }
                writer.write_all(&chunk[..length]).await?;
                if let Framing::Chunked = framing {
                    writer.write_all(b"\r\n").await?;
                }
                written += length;
                sent_by_writer.store(written, Ordering::SeqCst);
            }
            if let Framing::Chunked = framing {
                writer.write_all(b"0\r\n\r\n").await?;
            }
            writer.flush().await?;
            Ok::<_, std::io::Error>(writer)
        });
        let reading = async {
            let mut answer = Vec::new();
            let mut buffer = vec![0u8; 16 * 1024];
            loop {
                let read = reader.read(&mut buffer).await.unwrap_or(0);
                if read == 0 {
                    break;
                }
                answer.extend_from_slice(&buffer[..read]);
                if let Some(end) = find(&answer, b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&answer[..end]).to_lowercase();
                    let length = head
                        .lines()
                        .find_map(|line| line.strip_prefix("content-length:"))
                        .and_then(|value| value.trim().parse::<usize>().ok());
                    if length.is_some_and(|length| answer.len() >= end + 4 + length) {
                        break;
                    }
                }
            }
            let sent_bytes = sent.load(Ordering::SeqCst);
            (answer, sent_bytes)
        };
        let (answer, sent_bytes) = tokio::time::timeout(std::time::Duration::from_secs(60), reading)
            .await
            .expect("an answer within 60 s");
        writing.abort();
        let end = find(&answer, b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no HTTP answer head in {:?}", String::from_utf8_lossy(&answer)));
        let head = String::from_utf8_lossy(&answer[..end]).to_string();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|status| status.parse().ok())
            .expect("a status line");
        Streamed {
            status,
            head,
            body: serde_json::from_slice(&answer[end + 4..]).unwrap_or(Value::Null),
            sent_bytes,
        }
    }

    /// `POST /endpoint` with a Data Model API message; returns status, headers and JSON body.
    pub async fn post_message(
        &self,
        token: &str,
        message: &Value,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let response = self
            .http
            .post(format!("{}/endpoint", self.base_url))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(message).expect("json"))
            .send()
            .await
            .expect("ingress answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap_or_default();
        (
            status,
            headers,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Sends `method path` with an optional JSON body and bearer token; returns status and JSON
    /// body (`Value::Null` when the body is not JSON).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{}", self.base_url, path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(serde_json::to_vec(body).expect("json"));
        }
        let response = request.send().await.expect("ingress answers");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap_or_default();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let token = self.admin_token.clone();
        self.call(method, path, Some(&token), body).await
    }

    async fn created(&self, path: &str, body: Value) -> Value {
        let (status, response) = self.admin(reqwest::Method::POST, path, Some(&body)).await;
        assert_eq!(status, 201, "POST {path} {body} answered {status}: {response}");
        response
    }

    pub async fn create_organization(&self, name: &str) -> String {
        let response = self
            .created(
                "/v1/organizations",
                json!({ "name": name, "alert_emails": ["oncall@example.org"] }),
            )
            .await;
        response["id"].as_str().expect("id").to_string()
    }

    pub async fn create_source(&self, organization_id: &str, environment: &str) -> SourceCredentials {
        let response = self
            .created(
                "/v1/sources",
                json!({ "organization_id": organization_id, "name": "EHR", "environment": environment }),
            )
            .await;
        SourceCredentials {
            id: response["id"].as_str().expect("id").into(),
            client_id: response["client_id"].as_str().expect("client_id").into(),
            client_secret: response["client_secret"].as_str().expect("client_secret").into(),
        }
    }

    pub async fn create_destination(&self, organization_id: &str, url: &str, environment: &str) -> Value {
        self.created(
            "/v1/destinations",
            json!({ "organization_id": organization_id, "name": "receiver", "url": url, "environment": environment, "timeout_ms": 5000 }),
        )
        .await
    }

    pub async fn subscribe(&self, source_id: &str, destination_id: &str, data_model: &str) {
        self.created(
            "/v1/subscriptions",
            json!({ "source_id": source_id, "destination_id": destination_id, "data_model": data_model }),
        )
        .await;
    }

    /// A destination of `organization_id` at `url`, subscribed to by `source` for `data_model`.
    pub async fn subscribed_destination(
        &self,
        organization_id: &str,
        source: &SourceCredentials,
        url: &str,
        environment: &str,
        data_model: &str,
    ) -> Value {
        let destination = self.create_destination(organization_id, url, environment).await;
        self.subscribe(
            &source.id,
            destination["id"].as_str().expect("destination id"),
            data_model,
        )
        .await;
        destination
    }

    /// A new organization named `organization_name` whose `environment` source is subscribed
    /// for `data_model` to a destination at `destination_url`, with a token for that source.
    pub async fn sender(
        &self,
        organization_name: &str,
        environment: &str,
        destination_url: &str,
        data_model: &str,
    ) -> Sender {
        let organization = self.create_organization(organization_name).await;
        let source = self.create_source(&organization, environment).await;
        let destination = self
            .subscribed_destination(&organization, &source, destination_url, environment, data_model)
            .await;
        let token = self.token(&source).await;
        Sender {
            organization,
            source,
            destination,
            token,
        }
    }

    /// A Bearer token for `source` (client-credentials grant, form-encoded).
    pub async fn token(&self, source: &SourceCredentials) -> String {
        let response = self
            .http
            .post(format!("{}/oauth/token", self.base_url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=client_credentials&client_id={}&client_secret={}",
                source.client_id, source.client_secret
            ))
            .send()
            .await
            .expect("ingress answers");
        assert_eq!(response.status().as_u16(), 200, "token request refused");
        let body: Value = serde_json::from_slice(&response.bytes().await.expect("body")).expect("json");
        body["access_token"].as_str().expect("access_token").to_string()
    }

    /// `POST /endpoint` with raw bytes.
    pub async fn send_raw(&self, token: &str, body: Vec<u8>) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/endpoint", self.base_url))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("ingress answers");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap_or_default();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// `POST /endpoint` with a Data Model API message.
    pub async fn send(&self, token: &str, message: &Value) -> (u16, Value) {
        self.send_raw(token, serde_json::to_vec(message).expect("json"))
            .await
    }

    pub async fn log(&self, token: &str, log_id: &str) -> (u16, Value) {
        self.call(
            reqwest::Method::GET,
            &format!("/v1/logs/{log_id}"),
            Some(token),
            None,
        )
        .await
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// A Data Model API message with a sequence number in its body.
pub fn message(data_model: &str, sequence: usize) -> Value {
    json!({
        "Meta": { "DataModel": data_model, "EventType": "New", "Test": false },
        "Patient": { "Identifiers": [ { "ID": format!("MRN-{sequence}"), "IDType": "MR" } ] },
        "Sequence": sequence,
    })
}
