//! Sampled-out requests stay cheap: the sampler's decision is taken once, on the request's own
//! span, and a trace it drops is not built at all.
//!
//! tracing-opentelemetry samples only when a span ends (or when its context is asked for), so
//! by default every span of a dropped trace is still assembled in full: its attributes turned
//! into owned `KeyValue`s on creation and on every `record`, its children given builders of
//! their own, the sampler run again for each of them. [`settle`] asks for the decision as soon
//! as the request span exists; when it is "drop", the span's OpenTelemetry data is removed and
//! [`layer_filter`] keeps the OpenTelemetry layer away from every span created inside it.
//! The ids are kept (see [`span_context`]), so logs and the `traceresponse` header still name
//! the trace, as the W3C recommendation has it for unsampled requests.

use opentelemetry::trace::{SpanContext, TraceContextExt};
use tracing::{Level, Metadata, Span};
use tracing_opentelemetry::{OpenTelemetrySpanExt, OtelData};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Registry;

/// Left on a request span whose trace the sampler dropped, in place of its OpenTelemetry data.
struct Unsampled(SpanContext);

/// Takes the sampling decision for `span` (a request's root span, its parent already set) and
/// returns its span context. A dropped trace leaves the OpenTelemetry layer here.
pub fn settle(span: &Span) -> SpanContext {
    let sc = span.context().span().span_context().clone();
    if sc.is_valid() && !sc.is_sampled() {
        with_registry_span(span, |s| {
            let mut extensions = s.extensions_mut();
            extensions.remove::<OtelData>();
            extensions.replace(Unsampled(sc.clone()));
        });
    }
    sc
}

/// The span context of a request span passed through [`settle`], sampled or not; invalid
/// without tracing.
pub fn span_context(span: &Span) -> SpanContext {
    let unsampled = with_registry_span(span, |s| {
        s.extensions().get::<Unsampled>().map(|u| u.0.clone())
    });
    match unsampled.flatten() {
        Some(sc) => sc,
        None => span.context().span().span_context().clone(),
    }
}

/// The OpenTelemetry layer's filter: our own spans at INFO and above (exporter internals —
/// hyper, tonic, h2 — must not trace themselves into the pipeline that carries them), except
/// those created inside a request whose trace was dropped.
pub fn layer_filter<S>(meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    if !meta.target().starts_with("mnist_api") || *meta.level() > Level::INFO {
        return false;
    }
    // Spans only: an event inside a dropped trace finds no OpenTelemetry data and is ignored.
    // The current span is the request span: children are created inside its future, and the
    // ones given an explicit parent (`decode`) name that same span.
    !meta.is_span()
        || cx
            .lookup_current()
            .is_none_or(|current| current.extensions().get::<Unsampled>().is_none())
}

fn with_registry_span<T>(
    span: &Span,
    f: impl FnOnce(tracing_subscriber::registry::SpanRef<'_, Registry>) -> T,
) -> Option<T> {
    span.with_subscriber(|(id, dispatch)| {
        dispatch
            .downcast_ref::<Registry>()
            .and_then(|registry| registry.span(id))
            .map(f)
    })
    .flatten()
}
