//! The `predict` client and the server in one trace, as a collector sees it: both processes
//! export to the same in-process OTLP collector, or to the same Jaeger-agent stand-in.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::any_value::Value;

use crate::common::{digit, predict_command, ClientRun, Server};
use crate::helpers::spawn_traced;
use crate::jaeger_wire::{self, TagValue};
use crate::otlp_wire;

/// A span as either wire format carries it, ids in hex.
#[derive(Debug)]
struct Seen {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    /// Zeros for a root span.
    parent_id: String,
    kind: &'static str,
    attrs: HashMap<String, Attr>,
}

#[derive(Debug, PartialEq)]
enum Attr {
    Str(String),
    Int(i64),
    Other,
}

const NO_PARENT: &str = "0000000000000000";

/// The client run against `server` on `files`, its spans exported as `env` says.
async fn run_client(server: &Server, env: &[(&str, String)], files: &[PathBuf]) -> ClientRun {
    let mut cmd = predict_command(&server.url(""));
    cmd.env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(files);
    ClientRun::from(tokio::process::Command::from(cmd).output().await.unwrap())
}

/// One image file holding the fixture `seven`.
fn seven() -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seven.png");
    std::fs::write(&path, digit("seven")).unwrap();
    (dir, vec![path])
}

/// The one span of `service` named `name`.
fn one<'a>(spans: &[&'a Seen], service: &str, name: &str) -> &'a Seen {
    let found: Vec<&Seen> = spans
        .iter()
        .copied()
        .filter(|s| s.service == service && s.name == name)
        .collect();
    assert_eq!(found.len(), 1, "{service} spans named {name} in {spans:#?}");
    found[0]
}

/// What the issue asks of the trace: one trace id across both services, the client's request
/// span the parent of the server's, and the server's prediction the digit the client printed.
fn assert_one_trace(spans: &[Seen], run: &ClientRun, port: u16) {
    run.assert_exit(0);
    let trace = run.trace_id().expect("the client prints its trace id");
    let printed = run.answers()[0].1;
    let spans: Vec<&Seen> = spans.iter().filter(|s| s.trace_id == trace).collect();

    let root = one(&spans, "mnist-api-client", "predict");
    assert_eq!(root.parent_id, NO_PARENT, "{root:#?}");
    let model = one(&spans, "mnist-api-client", "GET /model");
    assert_eq!(model.parent_id, root.span_id);
    let client = one(&spans, "mnist-api-client", "POST /predict");
    assert_eq!(client.kind, "client");
    assert_eq!(client.parent_id, root.span_id);
    let attr = |k: &str| client.attrs.get(k).unwrap_or(&Attr::Other);
    assert_eq!(attr("http.request.method"), &Attr::Str("POST".into()));
    assert_eq!(
        attr("url.full"),
        &Attr::Str(format!("http://127.0.0.1:{port}/predict"))
    );
    assert_eq!(attr("server.address"), &Attr::Str("127.0.0.1".into()));
    assert_eq!(attr("server.port"), &Attr::Int(port.into()));
    assert_eq!(attr("http.response.status_code"), &Attr::Int(200));

    let server = one(&spans, "mnist-api", "POST /predict");
    assert_eq!(server.kind, "server");
    assert_eq!(server.parent_id, client.span_id, "{server:#?}");
    let prediction = one(&spans, "mnist-api", "prediction");
    assert_eq!(
        prediction.attrs.get("prediction"),
        Some(&Attr::Int(printed.into()))
    );
    one(&spans, "mnist-api", "decode");
}

#[tokio::test]
async fn client_and_server_spans_share_one_trace_at_an_otlp_collector() {
    let (endpoint, mut rx) = otlp_wire::collector().await;
    let env = otlp_wire::otlp_env(&endpoint);
    let mut server = spawn_traced(&env);
    let (_dir, files) = seven();
    let run = run_client(&server, &env, &files).await;
    assert!(server.stop(Duration::from_secs(15)).await.success());

    let spans: Vec<Seen> = otlp_wire::received(&mut rx)
        .await
        .into_iter()
        .map(|(service, s)| Seen {
            service: match service {
                Some(Value::StringValue(name)) => name,
                other => panic!("service.name is {other:?}"),
            },
            name: s.name,
            trace_id: hex::encode(s.trace_id),
            span_id: hex::encode(s.span_id),
            parent_id: if s.parent_span_id.is_empty() {
                NO_PARENT.to_string()
            } else {
                hex::encode(s.parent_span_id)
            },
            // SpanKind: SERVER 2, CLIENT 3.
            kind: match s.kind {
                2 => "server",
                3 => "client",
                _ => "internal",
            },
            attrs: s
                .attributes
                .into_iter()
                .map(|kv| {
                    let v = match kv.value.and_then(|v| v.value) {
                        Some(Value::StringValue(s)) => Attr::Str(s),
                        Some(Value::IntValue(i)) => Attr::Int(i),
                        _ => Attr::Other,
                    };
                    (kv.key, v)
                })
                .collect(),
        })
        .collect();
    assert_one_trace(&spans, &run, server.addr.port());
}

#[tokio::test]
async fn client_and_server_spans_share_one_trace_at_a_jaeger_agent() {
    let (agent, env) = jaeger_wire::agent().await;
    let mut server = spawn_traced(&env);
    let (_dir, files) = seven();
    let run = run_client(&server, &env, &files).await;
    assert!(server.stop(Duration::from_secs(15)).await.success());

    let spans: Vec<Seen> = jaeger_wire::drain(&agent)
        .await
        .into_iter()
        .flat_map(|batch| {
            let service = batch.service;
            batch.spans.into_iter().map(move |s| Seen {
                service: service.clone(),
                name: s.operation,
                trace_id: format!("{:016x}{:016x}", s.trace_id_high, s.trace_id_low),
                span_id: format!("{:016x}", s.span_id),
                parent_id: format!("{:016x}", s.parent_span_id),
                kind: match s.tags.get("span.kind") {
                    Some(TagValue::Str(k)) if k == "server" => "server",
                    Some(TagValue::Str(k)) if k == "client" => "client",
                    _ => "internal",
                },
                attrs: s
                    .tags
                    .into_iter()
                    .map(|(k, v)| {
                        let v = match v {
                            TagValue::Str(s) => Attr::Str(s),
                            TagValue::Long(i) => Attr::Int(i),
                            _ => Attr::Other,
                        };
                        (k, v)
                    })
                    .collect(),
            })
        })
        .collect();
    assert_one_trace(&spans, &run, server.addr.port());
}
