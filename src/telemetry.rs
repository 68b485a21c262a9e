//! Logs and traces: `init` is called once by `main`; its guard flushes and shuts the tracer
//! provider down on drop, so the last spans of a run reach Jaeger.
//!
//! Spans go to any mix of exporters, chosen like the OpenTelemetry SDKs do with
//! `OTEL_TRACES_EXPORTER` (comma-separated `jaeger`, `otlp`, `console`, `none`):
//! - `jaeger`: the Jaeger agent protocol (thrift-compact over UDP) to
//!   `JAEGER_AGENT_HOST`:`JAEGER_AGENT_PORT`, default `localhost:6831`, as the original app did;
//! - `otlp`: gRPC to 4317 or HTTP/protobuf to 4318 per the standard `OTEL_EXPORTER_OTLP_*`
//!   variables (`OTEL_EXPORTER_OTLP_PROTOCOL` = `grpc` or `http/protobuf`);
//! - `console`: spans printed on stdout, one line of OTLP JSON each.
//!
//! Every exporter sits behind a batch processor with a bounded queue: when a collector is slow
//! or missing, spans are dropped (and counted) instead of slowing requests or growing memory.
//! String values are cut to `OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT` on the way out, and the Jaeger
//! agent's name may resolve late (see [`crate::span_export`]).

use std::io::IsTerminal;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_sdk::export::trace::SpanExporter;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Config, TracerProvider};
use opentelemetry_sdk::{runtime, Resource};
use tracing::field::{Field, Visit};
use tracing::span::{Id, Record};
use tracing::Subscriber;
use tracing_subscriber::filter::{dynamic_filter_fn, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::span_export::{self, Bounded, Clipped, Counted, DropReason, JaegerAgent, Lazy};

/// The server's service name in every span, unless `OTEL_SERVICE_NAME` says otherwise.
pub const SERVICE_NAME: &str = "mnist-api";
/// Log filter when `RUST_LOG` is unset: clients' mistakes (4xx, at info under
/// `mnist_api::exception`) are left out, overloads and our own failures stay: at most one line
/// per failed request, and none for routine ones.
pub const DEFAULT_LOG_FILTER: &str = "info,mnist_api::exception=warn";
/// Always appended to the log filter (see [`install`]).
const WARP_TRACE_OFF: &str = "warp::filters::trace=off";
/// How long shutdown waits for the last spans to leave.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

/// A span destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exporter {
    /// Jaeger agent, thrift-compact over UDP.
    Jaeger,
    /// OTLP over gRPC or HTTP.
    Otlp,
    /// Human-readable spans on stdout.
    Console,
}

/// Parses an `OTEL_TRACES_EXPORTER`-style list; `none` (alone) means no exporter.
pub fn parse_exporters(list: &str) -> anyhow::Result<Vec<Exporter>> {
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let e = match name.to_ascii_lowercase().as_str() {
            "jaeger" => Exporter::Jaeger,
            "otlp" => Exporter::Otlp,
            "console" | "stdout" | "logging" => Exporter::Console,
            "none" => continue,
            other => {
                bail!("unknown traces exporter `{other}` (expected jaeger, otlp, console or none)")
            }
        };
        if !out.contains(&e) {
            out.push(e);
        }
    }
    Ok(out)
}

/// The service name: `OTEL_SERVICE_NAME` if set, else `default` (the program's own name,
/// e.g. [`SERVICE_NAME`]).
pub fn service_name(default: &str) -> String {
    std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// `service.name` (see [`service_name`]), `service.version`, plus what the SDK detects
/// (`OTEL_RESOURCE_ATTRIBUTES`, `telemetry.sdk.*`).
pub fn resource(default_service: &str) -> Resource {
    Resource::default().merge(&Resource::new([
        KeyValue::new("service.name", service_name(default_service)),
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
    ]))
}

/// Shuts the tracer provider down (flushing queued spans, bounded in time) when dropped.
#[must_use = "dropping the guard shuts tracing down"]
pub struct TelemetryGuard {
    provider: Option<TracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        // Shutdown blocks on the exporters; a dead collector must not hold the process.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for r in provider.force_flush() {
                if let Err(e) = r {
                    note_error(e.into());
                }
            }
            drop(provider);
            let _ = tx.send(());
        });
        if rx.recv_timeout(FLUSH_TIMEOUT).is_err() {
            tracing::warn!(
                "trace exporters did not flush within {FLUSH_TIMEOUT:?}; spans may be lost"
            );
        }
    }
}

/// Builds a provider exporting to `exporters` (batch, bounded queue) with the standard
/// sampler (`OTEL_TRACES_SAMPLER`, default parent-based always-on), as `default_service`
/// unless `OTEL_SERVICE_NAME` is set.
pub fn provider(exporters: &[Exporter], default_service: &str) -> anyhow::Result<TracerProvider> {
    let mut builder = TracerProvider::builder()
        .with_config(Config::default().with_resource(resource(default_service)));
    for exporter in exporters {
        // Reads OTEL_BSP_* for queue size, delay and timeouts.
        let mut batch = BatchConfigBuilder::default();
        if *exporter == Exporter::Jaeger
            && std::env::var_os("OTEL_BSP_MAX_EXPORT_BATCH_SIZE").is_none()
        {
            // 100 spans (~30 KB) fit one UDP datagram. With the default 512 the agent exporter
            // serialises the batch, finds it too big, halves it and serialises again, down to a
            // fitting size: four encodings of every span, 10 % of all CPU under load.
            batch = batch.with_max_export_batch_size(100);
        }
        builder = match exporter {
            Exporter::Jaeger => {
                let host =
                    std::env::var("JAEGER_AGENT_HOST").unwrap_or_else(|_| "localhost".into());
                let port = std::env::var("JAEGER_AGENT_PORT").unwrap_or_else(|_| "6831".into());
                let port: u16 = port
                    .parse()
                    .with_context(|| format!("JAEGER_AGENT_PORT `{port}` is not a port"))?;
                // Built on first use and retried: a collector whose name does not resolve yet
                // must not keep the server from starting (a crash loop under compose or k8s).
                let exporter = Lazy::new(
                    JaegerAgent {
                        endpoint: format!("{host}:{port}"),
                        service_name: service_name(default_service),
                    },
                    span_export::RETRY_EVERY,
                );
                exporter.start();
                builder.with_span_processor(processor(exporter, batch))
            }
            Exporter::Otlp => {
                let protocol = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                    .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
                    .unwrap_or_else(|_| "grpc".into());
                let exporter = match protocol.as_str() {
                    "grpc" => opentelemetry_otlp::new_exporter().tonic().build_span_exporter(),
                    "http/protobuf" => opentelemetry_otlp::new_exporter()
                        .http()
                        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                        .build_span_exporter(),
                    other => bail!(
                        "OTEL_EXPORTER_OTLP_PROTOCOL `{other}` is not supported (grpc or http/protobuf)"
                    ),
                }
                .context("OTLP exporter")?;
                builder.with_span_processor(processor(exporter, batch))
            }
            Exporter::Console => builder
                .with_span_processor(processor(crate::console_spans::Console::stdout(), batch)),
        };
    }
    Ok(builder.build())
}

/// Spans a batch processor holds when `OTEL_BSP_MAX_QUEUE_SIZE` is unset (the SDK's default).
const DEFAULT_QUEUE_SIZE: usize = 2048;

/// A batch processor for `exporter` whose queue bound, failures and oversized values are
/// handled by [`span_export`], where they are counted.
fn processor<E: SpanExporter + 'static>(
    exporter: E,
    batch: BatchConfigBuilder,
) -> Bounded<BatchSpanProcessor<runtime::Tokio>> {
    // The same variable and default as the SDK, which reads it into a private field.
    let capacity = std::env::var("OTEL_BSP_MAX_QUEUE_SIZE")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_QUEUE_SIZE);
    let queued = Arc::new(AtomicUsize::new(0));
    let exporter = Counted::new(
        Clipped::new(exporter, crate::clip::value_limit()),
        queued.clone(),
    );
    // Room beyond `capacity` for the flush and shutdown messages that share the SDK's
    // channel with the spans, so the SDK itself never refuses anything.
    let inner = BatchSpanProcessor::builder(exporter, runtime::Tokio)
        .with_batch_config(batch.with_max_queue_size(capacity + 8).build())
        .build();
    Bounded::new(inner, queued, capacity)
}

/// Installs logging (stderr, `RUST_LOG`, default [`DEFAULT_LOG_FILTER`]) and, when `exporters` is not empty,
/// the OpenTelemetry layer, the W3C trace-context propagator and the exporter error handler.
/// Spans name `default_service` unless `OTEL_SERVICE_NAME` is set.
/// Must run inside the tokio runtime (the batch processors live on it).
pub fn init(exporters: &[Exporter], default_service: &str) -> anyhow::Result<TelemetryGuard> {
    let provider = if exporters.is_empty() {
        None
    } else {
        Some(provider(exporters, default_service)?)
    };
    install(provider.as_ref());
    Ok(TelemetryGuard { provider })
}

/// Installs the global subscriber around `provider` (tests pass an in-memory one). The caller
/// keeps `provider` alive: tracers only hold a weak reference to it. A second call is a no-op.
pub fn install(provider: Option<&TracerProvider>) {
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER))
                // warp's per-request lines repeat our own exception line (a second line per
                // failed request, at WARN for any 4xx), whatever RUST_LOG asks for.
                .add_directive(WARP_TRACE_OFF.parse().expect("a valid directive")),
        );
    let otel = provider.map(|p| {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let _ = opentelemetry::global::set_error_handler(note_error);
        let tracer = p.tracer("mnist-api");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            // Source locations and busy/idle times add five attributes to every span, which
            // every request pays for in encoding and export.
            .with_location(false)
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_filter(dynamic_filter_fn(crate::sampling::layer_filter))
    });
    // Filtered to the spans that declare the field: an unfiltered layer would enable every
    // callsite of every crate, at every level, for all layers.
    let marker = ErrorTypeMarker.with_filter(filter_fn(|meta| {
        meta.is_span() && meta.fields().field("error.type").is_some()
    }));
    let _ = tracing_subscriber::registry()
        .with(marker)
        .with(logs)
        .with(otel)
        .try_init();
}

/// Remembers on a span that its `error.type` was recorded.
struct ErrorTypeMarker;

/// The extension [`ErrorTypeMarker`] leaves on a span.
struct ErrorTypeRecorded;

impl<S> Layer<S> for ErrorTypeMarker
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_record(
        &self,
        id: &Id,
        values: &Record<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        struct Finds(bool);
        impl Visit for Finds {
            fn record_debug(&mut self, field: &Field, _: &dyn std::fmt::Debug) {
                self.0 |= field.name() == "error.type";
            }
        }
        let mut finds = Finds(false);
        values.record(&mut finds);
        if finds.0 {
            if let Some(span) = ctx.span(id) {
                span.extensions_mut().replace(ErrorTypeRecorded);
            }
        }
    }
}

/// Whether `error.type` has been recorded on `span`, so a fallback (the HTTP status) does not
/// overwrite the error code the rejection handler put there. False without the subscriber
/// [`install`] sets up.
pub fn error_type_recorded(span: &tracing::Span) -> bool {
    span.with_subscriber(|(id, dispatch)| {
        dispatch
            .downcast_ref::<Registry>()
            .and_then(|registry| registry.span(id))
            .is_some_and(|s| s.extensions().get::<ErrorTypeRecorded>().is_some())
    })
    .unwrap_or(false)
}

/// Spans that never reached a collector since start, for any reason and over all exporters.
pub fn dropped_spans() -> u64 {
    DropReason::ALL
        .iter()
        .map(|r| span_export::dropped_spans(*r))
        .sum()
}

/// Batches not delivered (collector down, timeouts, exporter not available yet) since start.
pub fn failed_exports() -> u64 {
    span_export::failed_exports()
}

/// The SDK's error handler. Drops are counted by [`span_export`]'s wrappers; this only logs
/// the cause, rarely. A lazy exporter's "not available yet" was already logged when it failed.
fn note_error(err: opentelemetry::global::Error) {
    if let opentelemetry::global::Error::Trace(e) = &err {
        if span_export::is_unavailable(e) {
            return;
        }
    }
    span_export::warn_rarely(&err.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exporter_lists_parse_like_the_sdks() {
        assert_eq!(
            parse_exporters("jaeger, OTLP,console").unwrap(),
            [Exporter::Jaeger, Exporter::Otlp, Exporter::Console]
        );
        assert!(parse_exporters("none").unwrap().is_empty());
        assert!(parse_exporters("").unwrap().is_empty());
        assert_eq!(parse_exporters("otlp,otlp").unwrap(), [Exporter::Otlp]);
        let e = parse_exporters("zipkin").unwrap_err().to_string();
        assert!(e.contains("unknown traces exporter `zipkin`"), "{e}");
    }
}
