//! An in-memory exporter installed once for this test binary, and the real server binary with
//! tracing environment variables.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::TraceId;
use opentelemetry::Value;
use opentelemetry_sdk::export::trace::SpanData;
use opentelemetry_sdk::testing::trace::InMemorySpanExporter;
use opentelemetry_sdk::trace::{Config, TracerProvider};

use crate::common::Server;

static EXPORTER: OnceLock<(InMemorySpanExporter, TracerProvider)> = OnceLock::new();

/// The exporter every span of this process lands in.
pub fn exporter() -> &'static InMemorySpanExporter {
    &EXPORTER
        .get_or_init(|| {
            let exporter = InMemorySpanExporter::default();
            let provider = TracerProvider::builder()
                .with_simple_exporter(exporter.clone())
                .with_config(
                    Config::default().with_resource(mnist_api::telemetry::resource(
                        mnist_api::telemetry::SERVICE_NAME,
                    )),
                )
                .build();
            mnist_api::telemetry::install(Some(&provider));
            (exporter, provider)
        })
        .0
}

/// The finished spans of one trace, once its server span (which ends last) is in.
pub async fn spans_of(trace: TraceId) -> Vec<SpanData> {
    for _ in 0..100 {
        let spans: Vec<SpanData> = exporter()
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .filter(|s| s.span_context.trace_id() == trace)
            .collect();
        if spans
            .iter()
            .any(|s| s.name.starts_with("POST") || s.name.starts_with("GET"))
        {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no server span for trace {trace}");
}

pub fn trace_id_of(res: &reqwest::Response) -> TraceId {
    let hex = res.headers()["x-trace-id"].to_str().unwrap();
    TraceId::from_hex(hex).unwrap()
}

pub fn attrs(span: &SpanData) -> HashMap<String, Value> {
    span.attributes
        .iter()
        .map(|kv| (kv.key.to_string(), kv.value.clone()))
        .collect()
}

pub fn one<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let found: Vec<&SpanData> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(
        found.len(),
        1,
        "spans named {name}: {:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    found[0]
}

/// The real server binary, without auth, with the given tracing environment.
pub fn spawn_traced(env: &[(&str, String)]) -> Server {
    Server::builder()
        .no_auth()
        // Batches leave within a fifth of a second rather than the SDK's default five.
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .envs(env.iter().cloned())
        .start()
}
