//! The bounded export queue between the services' spans and the OTLP exporter.
//!
//! A finished span is pushed into a fixed-size queue and the caller moves on: it never waits
//! for the exporter, the network or the collector. One thread of its own takes batches from the
//! queue and exports them (at most `max_batch` spans, at least every `interval`). When the queue
//! is full (a slow or absent collector) the span is dropped and counted in
//! `carrier_trace_spans_dropped_total{reason="queue_full"}`; a batch the exporter refused is
//! counted with `reason="export_failed"`. Delivery never slows down for its traces.
//!
//! The SDK's own batch processor drops the same way but counts the drops only in its internal
//! logs; this one exposes them as a metric an SRE can see.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;

/// Sizes of the queue (read from the standard `OTEL_BSP_*` variables, see [`QueueLimits::from_env`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Spans held at most; past it new spans are dropped (`OTEL_BSP_MAX_QUEUE_SIZE`, 2048).
    pub max_queued: usize,
    /// Spans per export (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, 512).
    pub max_batch: usize,
    /// The longest a span waits for its batch (`OTEL_BSP_SCHEDULE_DELAY`, 5000 ms).
    pub interval: Duration,
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            max_queued: 2048,
            max_batch: 512,
            interval: Duration::from_millis(5000),
        }
    }
}

impl QueueLimits {
    /// The defaults, changed by `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` and
    /// `OTEL_BSP_SCHEDULE_DELAY` (milliseconds) where they hold a positive number.
    pub fn from_env() -> Self {
        let number = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|value| value.trim().parse::<u64>().ok())
                .filter(|value| *value > 0)
        };
        let defaults = Self::default();
        let max_queued = number("OTEL_BSP_MAX_QUEUE_SIZE").map_or(defaults.max_queued, |n| n as usize);
        let max_batch = number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
            .map_or(defaults.max_batch, |n| n as usize)
            .min(max_queued);
        let interval = number("OTEL_BSP_SCHEDULE_DELAY").map_or(defaults.interval, Duration::from_millis);
        Self {
            max_queued,
            max_batch,
            interval,
        }
    }
}

#[derive(Default)]
struct State {
    spans: VecDeque<SpanData>,
    /// Flushes asked for, and the number of the last one done (a flush waits for its number).
    flush_requested: u64,
    flush_done: u64,
    shutdown: bool,
    stopped: bool,
}

struct Shared {
    state: Mutex<State>,
    /// The worker waits on it for spans, flushes and the shutdown.
    wake: Condvar,
    /// Flushers and the shutdown wait on it for the worker.
    done: Condvar,
    limits: QueueLimits,
    dropped: prometheus::IntCounterVec,
}

impl Shared {
    /// Waits (at most `timeout`) until the worker has made `done` true; the lock back, or a
    /// timeout error.
    fn wait_for_worker<'a>(
        &self,
        mut state: std::sync::MutexGuard<'a, State>,
        timeout: Duration,
        done: impl Fn(&State) -> bool,
    ) -> Result<std::sync::MutexGuard<'a, State>, OTelSdkError> {
        let deadline = Instant::now() + timeout;
        while !done(&state) {
            let now = Instant::now();
            if now >= deadline {
                return Err(OTelSdkError::Timeout(timeout));
            }
            state = self
                .done
                .wait_timeout(state, deadline - now)
                .expect("trace queue lock")
                .0;
        }
        Ok(state)
    }
}

/// A [`SpanProcessor`] that queues finished spans (bounded) for an exporter thread.
pub struct QueueProcessor {
    shared: Arc<Shared>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
    resource: Arc<Mutex<Option<Resource>>>,
}

impl std::fmt::Debug for QueueProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueProcessor")
            .field("limits", &self.shared.limits)
            .finish()
    }
}

/// `carrier_trace_spans_dropped_total{reason}`.
pub fn dropped_spans() -> prometheus::IntCounterVec {
    crate::counter_vec(
        "carrier_trace_spans_dropped_total",
        "Finished spans not exported, by reason (queue_full: the export queue was full; export_failed: the collector refused or did not answer)",
        &["reason"],
    )
}

impl QueueProcessor {
    /// Starts the export thread of `exporter`. `runtime` (when given) is entered by the thread,
    /// so an exporter whose client lives on tokio (gRPC) finds its reactor.
    pub fn new<E>(exporter: E, limits: QueueLimits, runtime: Option<tokio::runtime::Handle>) -> Self
    where
        E: SpanExporter + 'static,
    {
        let dropped = dropped_spans();
        for reason in ["queue_full", "export_failed"] {
            dropped.with_label_values(&[reason]);
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            done: Condvar::new(),
            limits,
            dropped,
        });
        let resource = Arc::new(Mutex::new(None));
        let worker = {
            let shared = shared.clone();
            let resource = resource.clone();
            std::thread::Builder::new()
                .name("carrier-trace-export".into())
                .spawn(move || {
                    let _entered = runtime.as_ref().map(|runtime| runtime.enter());
                    export_loop(exporter, &shared, &resource)
                })
                .expect("the trace export thread can be started")
        };
        Self {
            shared,
            worker: Mutex::new(Some(worker)),
            resource,
        }
    }

    /// Spans waiting for export now.
    pub fn queued(&self) -> usize {
        self.shared.state.lock().expect("trace queue lock").spans.len()
    }
}

fn export_loop<E: SpanExporter>(mut exporter: E, shared: &Shared, resource: &Mutex<Option<Resource>>) {
    let mut resource_set = false;
    loop {
        let (batch, flush_to, shutdown) = {
            let mut state = shared.state.lock().expect("trace queue lock");
            let deadline = Instant::now() + shared.limits.interval;
            while state.spans.len() < shared.limits.max_batch
                && state.flush_requested == state.flush_done
                && !state.shutdown
            {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                state = shared
                    .wake
                    .wait_timeout(state, deadline - now)
                    .expect("trace queue lock")
                    .0;
            }
            // A flush or the shutdown takes everything queued, in batches.
            let draining = state.flush_requested != state.flush_done || state.shutdown;
            let take = if draining {
                state.spans.len()
            } else {
                state.spans.len().min(shared.limits.max_batch)
            };
            let batch: Vec<SpanData> = state.spans.drain(..take).collect();
            (batch, state.flush_requested, state.shutdown)
        };
        if !resource_set {
            if let Some(resource) = resource.lock().expect("resource lock").as_ref() {
                exporter.set_resource(resource);
                resource_set = true;
            }
        }
        for chunk in batch.chunks(shared.limits.max_batch.max(1)) {
            let count = chunk.len() as u64;
            if let Err(error) = futures::executor::block_on(exporter.export(chunk.to_vec())) {
                shared.dropped.with_label_values(&["export_failed"]).inc_by(count);
                tracing::debug!(%error, spans = count, "trace export failed; spans dropped");
            }
        }
        let mut state = shared.state.lock().expect("trace queue lock");
        state.flush_done = state.flush_done.max(flush_to);
        if shutdown && state.spans.is_empty() {
            drop(state);
            let _ = exporter.shutdown();
            let mut state = shared.state.lock().expect("trace queue lock");
            state.stopped = true;
            shared.done.notify_all();
            return;
        }
        shared.done.notify_all();
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let mut state = self.shared.state.lock().expect("trace queue lock");
        if state.shutdown {
            return;
        }
        if state.spans.len() >= self.shared.limits.max_queued {
            drop(state);
            self.shared.dropped.with_label_values(&["queue_full"]).inc();
            return;
        }
        state.spans.push_back(span);
        if state.spans.len() >= self.shared.limits.max_batch {
            self.shared.wake.notify_one();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        let mut state = self.shared.state.lock().expect("trace queue lock");
        if state.stopped {
            return Ok(());
        }
        state.flush_requested += 1;
        let wanted = state.flush_requested;
        self.shared.wake.notify_one();
        self.shared
            .wait_for_worker(state, Duration::from_secs(5), |state| {
                state.flush_done >= wanted || state.stopped
            })
            .map(drop)
    }

    /// Exports what is queued and stops the thread, waiting at most `timeout`; whatever is
    /// still unexported then is left (the thread ends on its own once its export returns).
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let mut state = self.shared.state.lock().expect("trace queue lock");
        if state.shutdown {
            return Ok(());
        }
        state.shutdown = true;
        self.shared.wake.notify_one();
        let state = self
            .shared
            .wait_for_worker(state, timeout, |state| state.stopped)?;
        drop(state);
        if let Some(worker) = self.worker.lock().expect("worker lock").take() {
            let _ = worker.join();
        }
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        *self.resource.lock().expect("resource lock") = Some(resource.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Tracer, TracerProvider};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    /// An exporter that blocks until told to go on, and remembers what it exported.
    #[derive(Debug, Clone, Default)]
    struct Gate {
        open: Arc<(Mutex<bool>, Condvar)>,
        exported: Arc<Mutex<Vec<String>>>,
    }

    impl Gate {
        fn open(&self) {
            *self.open.0.lock().unwrap() = true;
            self.open.1.notify_all();
        }
    }

    impl SpanExporter for Gate {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            let mut open = self.open.0.lock().unwrap();
            while !*open {
                open = self.open.1.wait(open).unwrap();
            }
            drop(open);
            let mut exported = self.exported.lock().unwrap();
            exported.extend(batch.into_iter().map(|span| span.name.to_string()));
            Ok(())
        }
    }

    #[test]
    fn a_stuck_exporter_never_blocks_the_caller_and_the_overflow_is_counted() {
        let gate = Gate::default();
        let limits = QueueLimits {
            max_queued: 4,
            max_batch: 2,
            interval: Duration::from_millis(10),
        };
        let processor = QueueProcessor::new(gate.clone(), limits, None);
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build();
        let tracer = provider.tracer("test");
        let before = dropped_spans().with_label_values(&["queue_full"]).get();
        let started = Instant::now();
        for index in 0..50 {
            tracer.in_span(format!("span-{index}"), |_| {});
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "ending spans did not wait for the exporter"
        );
        // The exporter holds one batch (at most two spans), the queue four: the rest is dropped.
        let dropped = dropped_spans().with_label_values(&["queue_full"]).get() - before;
        assert!((44..=50).contains(&dropped), "dropped {dropped}");
        gate.open();
        provider.shutdown_with_timeout(Duration::from_secs(5)).unwrap();
        let exported = gate.exported.lock().unwrap().len() as u64;
        assert_eq!(
            exported + dropped,
            50,
            "every span exported or counted as dropped"
        );
    }

    #[test]
    fn shutdown_exports_what_is_queued() {
        let gate = Gate::default();
        gate.open();
        let limits = QueueLimits {
            max_queued: 100,
            max_batch: 10,
            interval: Duration::from_secs(60),
        };
        let provider = SdkTracerProvider::builder()
            .with_span_processor(QueueProcessor::new(gate.clone(), limits, None))
            .build();
        let tracer = provider.tracer("test");
        for index in 0..3 {
            tracer.in_span(format!("span-{index}"), |_| {});
        }
        provider.shutdown_with_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(*gate.exported.lock().unwrap(), vec!["span-0", "span-1", "span-2"]);
    }
}
