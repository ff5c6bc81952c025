//! A receiving system on loopback: records every request in arrival order and answers what the
//! test tells it to (200 with an empty `Meta.Errors` by default).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Bytes,
    /// When the request arrived (before any answer delay).
    pub at: std::time::Instant,
    /// The status the receiver answered (or, if the sender went away first, would have
    /// answered) with.
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    /// The request as an ordering check reads it: the body's `Sequence` (see
    /// [`crate::client::message`]), `webhook-id` and `carrier-attempt`; `None` without a sequence.
    pub fn arrival(&self) -> Option<crate::order::Arrival> {
        let body: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        Some(crate::order::Arrival {
            sequence: body["Sequence"].as_u64()?,
            webhook_id: self.header("webhook-id").to_string(),
            attempt: self.header("carrier-attempt").parse().unwrap_or(0),
        })
    }
}

struct ReceiverState {
    received: Vec<Received>,
    status: StatusCode,
    body: String,
    /// A `Location` header to answer with (redirects).
    location: Option<String>,
    /// How long each answer takes (keeps requests in flight, to catch overlaps).
    delay: std::time::Duration,
    /// Requests in flight and the most ever seen at once, per path.
    in_flight: HashMap<String, usize>,
    max_in_flight: HashMap<String, usize>,
}

#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    /// Starts a receiver on `127.0.0.1:0`; it runs until the runtime ends.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    pub async fn start_on(addr: &str) -> Self {
        let state = Arc::new(Mutex::new(ReceiverState {
            received: Vec::new(),
            status: StatusCode::OK,
            body: r#"{"Meta":{"Errors":[]}}"#.into(),
            location: None,
            delay: std::time::Duration::ZERO,
            in_flight: HashMap::new(),
            max_in_flight: HashMap::new(),
        }));
        // Bodies up to Carrier's 10 MiB limit (and a little more) arrive whole.
        let app = Router::new()
            .route("/{*path}", post(record))
            .route("/", post(record))
            .layer(axum::extract::DefaultBodyLimit::max(16 * 1024 * 1024))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind(addr).await.expect("receiver binds");
        let addr = listener.local_addr().expect("receiver address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, state }
    }

    /// The URL to register as a destination (`path` distinguishes destinations sharing it).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// Answer every following request with `status` and `body`.
    pub fn respond_with(&self, status: u16, body: &str) {
        let mut state = self.state.lock().expect("receiver lock");
        state.status = StatusCode::from_u16(status).expect("valid status");
        state.body = body.into();
    }

    /// Answer every following request with a redirect: `status` (e.g. 302) and `Location`.
    pub fn redirect_to(&self, status: u16, location: &str) {
        let mut state = self.state.lock().expect("receiver lock");
        state.status = StatusCode::from_u16(status).expect("valid status");
        state.body = String::new();
        state.location = Some(location.into());
    }

    /// Take `delay` to answer each following request.
    pub fn respond_after(&self, delay: std::time::Duration) {
        self.state.lock().expect("receiver lock").delay = delay;
    }

    /// The most requests that were ever in flight at once on `path`.
    pub fn max_in_flight(&self, path: &str) -> usize {
        let path = format!("/{}", path.trim_start_matches('/'));
        self.state
            .lock()
            .expect("receiver lock")
            .max_in_flight
            .get(&path)
            .copied()
            .unwrap_or(0)
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().expect("receiver lock").received.clone()
    }

    /// The sequenced requests that arrived on `path`, in arrival order (see [`crate::order`]).
    pub fn arrivals_on(&self, path: &str) -> Vec<crate::order::Arrival> {
        self.received_on(path)
            .iter()
            .filter_map(Received::arrival)
            .collect()
    }

    /// Requests recorded after the first `start` (in arrival order): a poller reads only what is
    /// new since its last call.
    pub fn received_from(&self, start: usize) -> Vec<Received> {
        let state = self.state.lock().expect("receiver lock");
        state.received.get(start..).unwrap_or_default().to_vec()
    }

    /// Requests that arrived on `path`, in arrival order.
    pub fn received_on(&self, path: &str) -> Vec<Received> {
        let path = format!("/{}", path.trim_start_matches('/'));
        self.received()
            .into_iter()
            .filter(|request| request.path == path)
            .collect()
    }
}

async fn record(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let headers = headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                value.to_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let path = uri.path().to_string();
    // The request is recorded, counted in flight and given its answer as it arrives: the raw
    // arrival order is what ordering checks read, and overlapping requests show in the count.
    let (delay, status, answer, location) = {
        let mut state = state.lock().expect("receiver lock");
        let in_flight = {
            let count = state.in_flight.entry(path.clone()).or_insert(0);
            *count += 1;
            *count
        };
        let max = state.max_in_flight.entry(path.clone()).or_insert(0);
        *max = (*max).max(in_flight);
        let status = state.status.as_u16();
        state.received.push(Received {
            path: path.clone(),
            headers,
            body,
            at: std::time::Instant::now(),
            status,
        });
        (
            state.delay,
            state.status,
            state.body.clone(),
            state.location.clone(),
        )
    };
    // Leaves the in-flight count even when the sender goes away mid-answer (a killed worker):
    // the handler is then dropped at the sleep.
    let in_flight = InFlight { state, path };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    drop(in_flight);
    let mut response = (status, [("content-type", "application/json")], answer).into_response();
    if let Some(location) = &location {
        if let Ok(value) = axum::http::HeaderValue::from_str(location) {
            response.headers_mut().insert(axum::http::header::LOCATION, value);
        }
    }
    response
}

/// One request in flight on `path`, until dropped.
struct InFlight {
    state: Arc<Mutex<ReceiverState>>,
    path: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = state.in_flight.get_mut(&self.path) {
            *count -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_whose_sender_gives_up_leaves_the_in_flight_count() {
        let receiver = Receiver::start().await;
        receiver.respond_after(std::time::Duration::from_millis(500));
        let impatient = reqwest::Client::builder()
            .timeout(std::time::Duration::from_millis(100))
            .build()
            .expect("client");
        assert!(impatient.post(receiver.url("d")).body("1").send().await.is_err());
        // The receiver notices the closed connection and drops the handler.
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        receiver.respond_after(std::time::Duration::ZERO);
        let answer = reqwest::Client::new()
            .post(receiver.url("d"))
            .body("2")
            .send()
            .await
            .expect("answer");
        assert_eq!(answer.status().as_u16(), 200);
        assert_eq!(
            receiver.max_in_flight("d"),
            1,
            "the abandoned request is not in flight any more"
        );
        let received = receiver.received_on("d");
        assert_eq!(
            received.len(),
            2,
            "both arrived: an abandoned request is recorded as it came"
        );
        assert_eq!(received[1].status, 200);
    }
}
