//! An in-memory exporter installed once for this test binary, and a runner for the real server
//! binary with tracing environment variables.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::TraceId;
use opentelemetry::Value;
use opentelemetry_sdk::export::trace::SpanData;
use opentelemetry_sdk::testing::trace::InMemorySpanExporter;
use opentelemetry_sdk::trace::{Config, TracerProvider};
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

static EXPORTER: OnceLock<(InMemorySpanExporter, TracerProvider)> = OnceLock::new();

/// The exporter every span of this process lands in.
pub fn exporter() -> &'static InMemorySpanExporter {
    &EXPORTER
        .get_or_init(|| {
            let exporter = InMemorySpanExporter::default();
            let provider = TracerProvider::builder()
                .with_simple_exporter(exporter.clone())
                .with_config(Config::default().with_resource(mnist_api::telemetry::resource()))
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

/// A 28×28 "1": what every wire test posts.
pub fn digit_png() -> Vec<u8> {
    let mut g = image::GrayImage::new(28, 28);
    for y in 5..23 {
        for x in 13..16 {
            g.put_pixel(x, y, image::Luma([255]));
        }
    }
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageLuma8(g)
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

/// The real server binary, without auth, with the given environment; returns the child and
/// its address once it listens.
pub async fn spawn_binary(env: &[(&str, String)]) -> (Child, String) {
    let weights = concat!(env!("CARGO_MANIFEST_DIR"), "/weights/mnist_cnn.safetensors");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mnist-api"));
    cmd.args(["--bind", "127.0.0.1:0", "--no-auth", "--weights", weights])
        .env("RUST_LOG", "info")
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[server] {line}");
            if let Some(rest) = line.split("address=").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap().to_string());
            }
        }
    });
    let addr = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("server did not start")
        .unwrap();
    (child, addr)
}

pub async fn post_digit(addr: &str) -> reqwest::Response {
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(digit_png()).file_name("one.png"),
    );
    reqwest::Client::new()
        .post(format!("http://{addr}/predict"))
        .multipart(form)
        .send()
        .await
        .unwrap()
}

/// SIGTERM, then the exit status (within `limit`).
pub async fn terminate(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    tokio::time::timeout(limit, child.wait())
        .await
        .expect("server did not exit in time after SIGTERM")
        .unwrap()
}
