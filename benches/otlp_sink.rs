//! An OTLP collector for the benches that accepts spans and discards them: gRPC on the first
//! port, HTTP/protobuf (`POST /v1/traces`) on the second. Both decode what they receive, as
//! a real collector must, and count the spans; `GET /spans` on the HTTP port tells how many,
//! so a bench can check that export really happened.
//!
//!     cargo run --release --example otlp_sink -- 4317 4318

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use warp::Filter;

#[derive(Clone, Default)]
struct Count(Arc<AtomicU64>);

impl Count {
    fn add(&self, request: &ExportTraceServiceRequest) {
        let spans: usize = request
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum();
        self.0.fetch_add(spans as u64, Ordering::Relaxed);
    }
}

#[tonic::async_trait]
impl TraceService for Count {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.add(request.get_ref());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut port = |default: u16| -> anyhow::Result<u16> {
        Ok(args
            .next()
            .map(|p| p.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let grpc = SocketAddr::from(([127, 0, 0, 1], port(4317)?));
    let http = SocketAddr::from(([127, 0, 0, 1], port(4318)?));
    let count = Count::default();

    let traces = {
        let count = count.clone();
        warp::post()
            .and(warp::path!("v1" / "traces"))
            .and(warp::body::bytes())
            .map(move |body: bytes::Bytes| {
                match ExportTraceServiceRequest::decode(body) {
                    Ok(request) => count.add(&request),
                    Err(e) => {
                        return warp::reply::with_status(
                            e.to_string().into_bytes(),
                            warp::http::StatusCode::BAD_REQUEST,
                        )
                    }
                }
                warp::reply::with_status(
                    ExportTraceServiceResponse::default().encode_to_vec(),
                    warp::http::StatusCode::OK,
                )
            })
            .map(|r| warp::reply::with_header(r, "content-type", "application/x-protobuf"))
    };
    let spans = {
        let count = count.clone();
        warp::get()
            .and(warp::path!("spans"))
            .map(move || count.0.load(Ordering::Relaxed).to_string())
    };
    let http_server = warp::serve(traces.or(spans)).run(http);
    let grpc_server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(count))
        .serve(grpc);
    eprintln!("otlp_sink: gRPC on {grpc}, HTTP on {http}");
    tokio::select! {
        () = http_server => {}
        r = grpc_server => r?,
    }
    Ok(())
}
