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

#[tokio::test]
async fn prediction_span_reaches_an_otlp_collector() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(tx)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut server = spawn_traced(&[
        ("OTEL_TRACES_EXPORTER", "otlp".into()),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".into()),
    ]);
    let res = server.predict(None, vec![digit("one")]).await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(server.stop(Duration::from_secs(15)).await.success());

    let mut found = None;
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
                for span in ss.spans {
                    if span.name == "prediction" {
                        found = Some((service.clone(), span));
                    }
                }
            }
        }
    }
    let (service, span) = found.expect("no prediction span reached the collector");
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
