//! W3C trace context (`traceparent`, `tracestate`) in and out of whatever carries it: HTTP
//! headers, gRPC metadata, Kafka record headers. Every carrier is a list of text headers, so
//! one pair of functions serves them all: [`current_headers`] for what a span sends on, and
//! [`extract`] for what a receiver continues.
//!
//! Off (no exporter configured), spans have no OpenTelemetry context: nothing is injected and
//! extracting is skipped, so tracing costs nothing beyond `tracing`'s own spans.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The headers of the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

fn propagator() -> &'static TraceContextPropagator {
    static PROPAGATOR: std::sync::OnceLock<TraceContextPropagator> = std::sync::OnceLock::new();
    PROPAGATOR.get_or_init(TraceContextPropagator::new)
}

struct Headers(Vec<(&'static str, String)>);

impl Injector for Headers {
    fn set(&mut self, key: &str, value: String) {
        let key = match key {
            TRACEPARENT => TRACEPARENT,
            TRACESTATE => TRACESTATE,
            _ => return,
        };
        self.0.push((key, value));
    }
}

/// The trace context headers of `context` (none for a context without a valid span).
pub fn headers_of(context: &Context) -> Vec<(&'static str, String)> {
    if !context.span().span_context().is_valid() {
        return Vec::new();
    }
    let mut headers = Headers(Vec::with_capacity(2));
    propagator().inject_context(context, &mut headers);
    headers.0
}

/// The trace context headers of the current `tracing` span, for the request or record it sends
/// (none when tracing is off or no span is current).
pub fn current_headers() -> Vec<(&'static str, String)> {
    if !super::enabled() {
        return Vec::new();
    }
    headers_of(&tracing::Span::current().context())
}

struct Lookup<'a, F>(F, std::marker::PhantomData<&'a ()>);

impl<'a, F: Fn(&str) -> Option<&'a str>> Extractor for Lookup<'a, F> {
    fn get(&self, key: &str) -> Option<&str> {
        (self.0)(key)
    }
    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

/// The remote context in a carrier's headers; `get` looks a header up by its lowercase name.
/// Empty (no parent) when tracing is off or the headers hold no valid `traceparent`.
pub fn extract<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Context {
    if !super::enabled() {
        return Context::new();
    }
    propagator().extract(&Lookup(get, std::marker::PhantomData))
}

/// [`extract`] from a list of headers as Kafka records carry them (names as written, values
/// as bytes).
pub fn extract_from_pairs(headers: &[(String, Vec<u8>)]) -> Context {
    if !super::enabled() || headers.is_empty() {
        return Context::new();
    }
    extract(|name| {
        headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .and_then(|(_, value)| std::str::from_utf8(value).ok())
    })
}

/// [`extract`] from a `traceparent` (and `tracestate`) kept as text, e.g. with a parked task.
pub fn extract_from_text(traceparent: &str, tracestate: &str) -> Context {
    if traceparent.is_empty() {
        return Context::new();
    }
    let mut map = HashMap::with_capacity(2);
    map.insert(TRACEPARENT, traceparent);
    if !tracestate.is_empty() {
        map.insert(TRACESTATE, tracestate);
    }
    extract(|name| map.get(name).copied())
}

/// Makes `span` a child of `parent` (a remote or earlier context); a context without a valid
/// span leaves it where it is. Call before the span is first entered.
pub fn set_parent(span: &tracing::Span, parent: Context) {
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// Links `span` to `context`'s span (e.g. a later retry to the original delivery's trace).
pub fn add_link(span: &tracing::Span, context: &Context) {
    let span_context: SpanContext = context.span().span_context().clone();
    if span_context.is_valid() {
        span.add_link(span_context);
    }
}

/// Renames `span` once it is known what it is (e.g. by its route, after routing). A span's
/// `otel.name` field recorded after it started is not applied; this is.
pub fn rename(span: &tracing::Span, name: String) {
    if super::enabled() {
        span.context().span().update_name(name);
    }
}

/// The OpenTelemetry context of `span` (empty when tracing is off).
pub fn context_of(span: &tracing::Span) -> Context {
    if !super::enabled() {
        return Context::new();
    }
    span.context()
}

/// The trace ID of `context` as 32 hex digits, if it has a valid span.
pub fn trace_id_of(context: &Context) -> Option<String> {
    let span = context.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// How a piece of work continues the trace of the task it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub enum Continuation {
    /// A child of the task's context (the work follows shortly after the task was written).
    Child,
    /// A new trace, linked to the task's context (a retry long after, or a manual retry).
    NewTraceLinked,
}

/// Carrier's rule for the attempts of a task: an attempt that starts within `within` of the
/// task's write continues its trace; a later one (a task parked or held for long) starts a new
/// trace with a link to the original, so no trace grows into one endless span. `age` is the
/// time since the task was written.
pub fn continuation(age: Duration, within: Duration) -> Continuation {
    if age <= within {
        Continuation::Child
    } else {
        Continuation::NewTraceLinked
    }
}

/// Places `span` under `original` by [`continuation`]'s decision.
pub fn continue_or_link(span: &tracing::Span, original: &Context, how: &Continuation) {
    match how {
        Continuation::Child => set_parent(span, original.clone()),
        Continuation::NewTraceLinked => {
            // An explicit empty parent: a root, not a child of whatever span is current.
            let _ = span.set_parent(Context::new());
            add_link(span, original);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_continues_recent_work_and_links_late_work() {
        let within = Duration::from_secs(300);
        assert_eq!(continuation(Duration::from_secs(10), within), Continuation::Child);
        assert_eq!(continuation(within, within), Continuation::Child);
        assert_eq!(
            continuation(Duration::from_secs(301), within),
            Continuation::NewTraceLinked
        );
    }

    #[test]
    fn a_context_without_a_span_injects_nothing() {
        assert!(headers_of(&Context::new()).is_empty());
        assert!(current_headers().is_empty());
    }
}
