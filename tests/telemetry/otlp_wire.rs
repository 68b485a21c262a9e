//! The real binary's spans as an OTLP/gRPC collector receives them (a tonic server built from
//! opentelemetry-proto, on loopback).

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::sync::mpsc;

use crate::common::digit;
use crate::helpers::spawn_traced;

struct Collector(mpsc::UnboundedSender<ExportTraceServiceRequest>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let _ = self.0.send(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// An OTLP/gRPC collector on loopback: its endpoint, and the export requests it receives.
pub async fn collector() -> (String, mpsc::UnboundedReceiver<ExportTraceServiceRequest>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(tx)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (format!("http://127.0.0.1:{port}"), rx)
}

/// The tracing environment that sends a process's spans to the collector at `endpoint`.
pub fn otlp_env(endpoint: &str) -> [(&'static str, String); 3] {
    [
        ("OTEL_TRACES_EXPORTER", "otlp".into()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.to_string()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".into()),
    ]
}

/// Every span received until the collector has been quiet for two seconds, with the
/// `service.name` of the process that sent it.
pub async fn received(
    rx: &mut mpsc::UnboundedReceiver<ExportTraceServiceRequest>,
) -> Vec<(Option<Value>, Span)> {
    let mut out = Vec::new();
    while let Ok(Some(req)) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
        for rs in req.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.clone())
                .and_then(|v| v.value);
            for ss in rs.scope_spans {
                out.extend(ss.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
    }
    out
}

#[tokio::test]
async fn prediction_span_reaches_an_otlp_collector() {
    let (endpoint, mut rx) = collector().await;
    let mut server = spawn_traced(&otlp_env(&endpoint));
    let res = server.predict(None, vec![digit("one")]).await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(server.stop(Duration::from_secs(15)).await.success());

    let (service, span) = received(&mut rx)
        .await
        .into_iter()
        .find(|(_, s)| s.name == "prediction")
        .expect("no prediction span reached the collector");
    assert_eq!(service, Some(Value::StringValue("mnist-api".into())));
    let attr = |k: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key == k)
            .and_then(|kv| kv.value.clone())
            .and_then(|v| v.value)
    };
    assert_eq!(
        attr("prediction"),
        Some(Value::IntValue(body["prediction"].as_i64().unwrap()))
    );
    match attr("probability") {
        Some(Value::DoubleValue(p)) => {
            assert!((p - body["probability"].as_f64().unwrap()).abs() < 1e-6)
        }
        other => panic!("probability attribute is {other:?}"),
    }
}

#[tokio::test]
async fn a_dropped_trace_exports_nothing_and_sampled_traces_are_whole() {
    let (endpoint, mut rx) = collector().await;
    // Ratio 1: every trace that starts here is kept; a caller's decision is followed. A span
    // of a dropped trace that lost its parent would start a trace of its own, and be kept.
    let mut env = otlp_env(&endpoint).to_vec();
    env.push(("OTEL_TRACES_SAMPLER", "parentbased_traceidratio".into()));
    env.push(("OTEL_TRACES_SAMPLER_ARG", "1".into()));
    let mut server = spawn_traced(&env);
    let predict = |traceparent: Option<String>| {
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(digit("seven")).file_name("seven.png"),
        );
        let mut req = server.client.post(server.url("/predict")).multipart(form);
        if let Some(tp) = traceparent {
            req = req.header("traceparent", tp);
        }
        req.send()
    };
    let header =
        |res: &reqwest::Response, name: &str| res.headers()[name].to_str().unwrap().to_string();

    // The caller dropped its trace: so does the server, and still tells the trace id.
    let dropped_trace = "0af7651916cd43dd8448eb211c80319c";
    let caller_span = "00f067aa0ba902b7";
    let dropped = predict(Some(format!("00-{dropped_trace}-{caller_span}-00")))
        .await
        .unwrap();
    assert_eq!(dropped.status(), 200);
    let response = header(&dropped, "traceresponse");
    assert!(
        response.starts_with(&format!("00-{dropped_trace}-")) && response.ends_with("-00"),
        "{response}"
    );
    assert_eq!(header(&dropped, "x-trace-id"), dropped_trace);

    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let sampled = predict(Some(format!("00-{caller_trace}-{caller_span}-01")))
        .await
        .unwrap();
    assert!(header(&sampled, "traceresponse").ends_with("-01"));
    let own = predict(None).await.unwrap();
    let own_trace = header(&own, "x-trace-id");
    assert!(header(&own, "traceresponse").ends_with("-01"));
    assert!(server.stop(Duration::from_secs(15)).await.success());

    let spans: Vec<_> = received(&mut rx)
        .await
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    for (trace, parent) in [(caller_trace, caller_span), (own_trace.as_str(), "")] {
        let trace: Vec<_> = spans
            .iter()
            .filter(|s| hex::encode(&s.trace_id) == trace)
            .collect();
        let mut names: Vec<_> = trace.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["POST /predict", "decode", "prediction"],
            "{spans:?}"
        );
        let server_span = trace.iter().find(|s| s.name == "POST /predict").unwrap();
        assert_eq!(hex::encode(&server_span.parent_span_id), parent);
        for child in trace.iter().filter(|s| s.name != "POST /predict") {
            assert_eq!(child.parent_span_id, server_span.span_id, "{}", child.name);
        }
    }
    assert_eq!(
        spans.len(),
        6,
        "spans outside the two sampled traces: {spans:?}"
    );
}
