//! The calls a user of Carrier makes, over real HTTP.

use serde_json::{json, Value};

/// A source's credentials as the admin API returns them.
#[derive(Debug, Clone)]
pub struct SourceCredentials {
    pub id: String,
    pub client_id: String,
    pub client_secret: String,
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

/// A Data Model API message with a sequence number in its body.
pub fn message(data_model: &str, sequence: usize) -> Value {
    json!({
        "Meta": { "DataModel": data_model, "EventType": "New", "Test": false },
        "Patient": { "Identifiers": [ { "ID": format!("MRN-{sequence}"), "IDType": "MR" } ] },
        "Sequence": sequence,
    })
}
