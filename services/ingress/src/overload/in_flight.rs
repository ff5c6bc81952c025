//! Admission of one request: the caps on requests in progress, and its two deadlines.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use carrier_proto::ErrorKind;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::adaptive::{AdaptiveLimit, WriteSlot};
use super::LimitSettings;
use crate::error::{Api, ApiError};
use crate::metrics::metrics;
use crate::AppState;

/// The slots of one replica: every request, each source's requests, message writes (adaptive),
/// manual retries.
pub struct Gate {
    limits: LimitSettings,
    requests: Arc<Semaphore>,
    writes: Option<Arc<AdaptiveLimit>>,
    retries: Arc<Semaphore>,
    by_source: Arc<Mutex<HashMap<String, usize>>>,
}

impl Gate {
    pub fn new(limits: &LimitSettings) -> Self {
        Self {
            limits: limits.clone(),
            requests: Arc::new(Semaphore::new(limits.max_in_flight)),
            writes: AdaptiveLimit::new(limits),
            retries: Arc::new(Semaphore::new(limits.max_retries_in_flight)),
            by_source: Arc::default(),
        }
    }

    pub fn limits(&self) -> &LimitSettings {
        &self.limits
    }

    /// A slot for one message write under the adaptive limit (`None`: the limit is off), or 503.
    pub fn write_slot(&self) -> Result<Option<WriteSlot>, ApiError> {
        self.writes.as_ref().map(|limit| limit.slot()).transpose()
    }

    /// A slot for one manual retry request, or 503 when `max_retries_in_flight` are running.
    pub fn retry_slot(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.retries.clone().try_acquire_owned().map_err(|_| {
            metrics().shed.with_label_values(&["retries_in_flight"]).inc();
            tracing::debug!("manual retry shed: every retry slot is taken");
            ApiError::new(
                ErrorKind::Overloaded,
                format!(
                    "Too many manual retries in progress (at most {} at once); retry after the \
                     Retry-After delay",
                    self.limits.max_retries_in_flight
                ),
            )
        })
    }

    fn source_slot(&self, source_id: &str) -> Option<SourceSlot> {
        let mut counts = self
            .by_source
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = counts.entry(source_id.to_string()).or_default();
        if *count >= self.limits.max_in_flight_per_source {
            return None;
        }
        *count += 1;
        Some(SourceSlot {
            counts: self.by_source.clone(),
            source_id: source_id.to_string(),
        })
    }
}

/// One request of a source in progress; gives its slot back when dropped.
struct SourceSlot {
    counts: Arc<Mutex<HashMap<String, usize>>>,
    source_id: String,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = counts.get_mut(&self.source_id) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.source_id);
            }
        }
    }
}

/// The outermost layer of every public route: takes a slot (503 when none is free), gives the
/// body its deadline and the whole request its own.
pub async fn admit(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let gate = &state.gate;
    let api = Api::of_path(request.uri().path());
    let Ok(_slot) = gate.requests.clone().try_acquire_owned() else {
        metrics().shed.with_label_values(&["in_flight"]).inc();
        tracing::debug!("request shed: every request slot is taken");
        return ApiError::new(
            ErrorKind::Overloaded,
            format!(
                "Carrier is overloaded ({} requests in progress); retry after the Retry-After delay",
                gate.limits.max_in_flight
            ),
        )
        .for_api(api)
        .into_response();
    };
    // An invalid or missing token takes no source slot; the handler refuses it (401).
    let _source_slot = match crate::auth::source(request.headers(), &state.tokens) {
        Ok(source) => match gate.source_slot(&source.source_id) {
            Some(slot) => Some(slot),
            None => {
                metrics().shed.with_label_values(&["source_in_flight"]).inc();
                tracing::debug!(source_id = %source.source_id, "request shed: the source's slots are taken");
                return ApiError::new(
                    ErrorKind::Overloaded,
                    format!(
                        "Too many requests of this source in progress (at most {} at once); retry \
                         after the Retry-After delay",
                        gate.limits.max_in_flight_per_source
                    ),
                )
                .for_api(api)
                .into_response();
            }
        },
        Err(_) => None,
    };
    let in_flight = metrics().in_flight.clone();
    in_flight.inc();
    let body_deadline = Duration::from_millis(gate.limits.body_read_timeout_ms);
    let request = request.map(|body| Body::new(DeadlineBody::new(body, body_deadline)));
    let request_timeout = Duration::from_millis(gate.limits.request_timeout_ms);
    let response = match tokio::time::timeout(request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            metrics().timeouts.with_label_values(&["request"]).inc();
            tracing::warn!(
                timeout_ms = gate.limits.request_timeout_ms,
                "request ended by its deadline"
            );
            ApiError::new(
                ErrorKind::Timeout,
                format!(
                    "The request did not complete within {} ms; if it wrote a message, retry with \
                     the same Idempotency-Key",
                    gate.limits.request_timeout_ms
                ),
            )
            .for_api(api)
            .into_response()
        }
    };
    in_flight.dec();
    response
}

/// The error a body reports once its deadline passed; `api::body::read_body` answers it with 408.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} ms", .0.as_millis())]
pub struct BodyDeadline(pub Duration);

impl BodyDeadline {
    /// Counts one body that missed its deadline (called where the 408 is made).
    pub fn record(&self) {
        metrics().timeouts.with_label_values(&["body"]).inc();
    }
}

/// A request body that fails with [`BodyDeadline`] once `deadline` has passed since the request
/// was admitted, however slowly its bytes trickle in.
struct DeadlineBody {
    inner: Body,
    timeout: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl DeadlineBody {
    fn new(inner: Body, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(axum::BoxError::from)));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyDeadline(this.timeout)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::SinkExt;

    #[test]
    fn a_source_gets_at_most_its_share_and_a_finished_request_gives_its_slot_back() {
        let gate = Gate::new(&LimitSettings {
            max_in_flight_per_source: 2,
            ..LimitSettings::default()
        });
        let first = gate.source_slot("a").expect("first slot");
        let _second = gate.source_slot("a").expect("second slot");
        assert!(gate.source_slot("a").is_none(), "a third request of a is shed");
        assert!(gate.source_slot("b").is_some(), "another source is not held back");
        drop(first);
        assert!(gate.source_slot("a").is_some(), "a slot came back");
    }

    #[test]
    fn manual_retries_past_their_cap_are_shed_with_503_and_retry_after() {
        let gate = Gate::new(&LimitSettings {
            max_retries_in_flight: 1,
            ..LimitSettings::default()
        });
        let running = gate.retry_slot().expect("the first retry runs");
        let shed = gate.retry_slot().expect_err("a second one at once is shed");
        assert_eq!(shed.kind, ErrorKind::Overloaded);
        assert_eq!(shed.retry_after_secs, Some(1));
        assert!(
            shed.text
                .starts_with("Too many manual retries in progress (at most 1 at once)"),
            "{}",
            shed.text
        );
        drop(running);
        assert!(gate.retry_slot().is_ok(), "the slot came back");
    }

    #[test]
    fn the_map_of_sources_forgets_a_source_with_nothing_in_progress() {
        let gate = Gate::new(&LimitSettings::default());
        drop(gate.source_slot("a"));
        assert!(gate.by_source.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_trickles_in_fails_at_its_deadline() {
        use http_body_util::BodyExt;
        let (mut sender, body) = trickle();
        let body = DeadlineBody::new(body, Duration::from_secs(5));
        let reading = tokio::spawn(async move { body.collect().await.map(|_| ()) });
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if sender.send(Ok(Bytes::from_static(b"x"))).await.is_err() {
                break;
            }
        }
        let error = reading.await.unwrap().unwrap_err();
        assert!(error.is::<BodyDeadline>(), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_arrives_in_time_is_read_whole() {
        use http_body_util::BodyExt;
        let (mut sender, body) = trickle();
        let body = DeadlineBody::new(body, Duration::from_secs(5));
        let reading = tokio::spawn(async move { body.collect().await.map(|body| body.to_bytes()) });
        sender.send(Ok(Bytes::from_static(b"ab"))).await.unwrap();
        tokio::time::sleep(Duration::from_secs(4)).await;
        sender.send(Ok(Bytes::from_static(b"c"))).await.unwrap();
        drop(sender);
        assert_eq!(reading.await.unwrap().unwrap(), Bytes::from_static(b"abc"));
    }

    /// A body whose chunks the test sends one by one.
    fn trickle() -> (
        futures::channel::mpsc::Sender<Result<Bytes, std::io::Error>>,
        Body,
    ) {
        let (sender, receiver) = futures::channel::mpsc::channel(1);
        (sender, Body::from_stream(receiver))
    }
}
