//! With no agent and a collector that never answers, requests still succeed and shutdown is
//! prompt: telemetry must never take the service down with it.

use std::time::{Duration, Instant};

use crate::common::digit;
use crate::helpers::spawn_traced;

#[tokio::test]
async fn dead_exporters_do_not_break_requests_or_shutdown() {
    // A UDP port nobody listens on, and a TCP port that accepts nothing (never read).
    let closed_udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_port = closed_udp.local_addr().unwrap().port();
    drop(closed_udp);
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_port = black_hole.local_addr().unwrap().port();

    let mut server = spawn_traced(&[
        ("OTEL_TRACES_EXPORTER", "jaeger,otlp".into()),
        ("JAEGER_AGENT_HOST", "127.0.0.1".into()),
        ("JAEGER_AGENT_PORT", udp_port.to_string()),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{tcp_port}"),
        ),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "30".into()),
    ]);
    for _ in 0..40 {
        assert_eq!(server.predict(None, vec![digit("one")]).await.status(), 200);
    }
    let started = Instant::now();
    let status = server.stop(Duration::from_secs(20)).await;
    assert!(status.success(), "{status}");
    // Flushing gives up after a few seconds instead of waiting out the 30 s export timeout.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    drop(black_hole);
}

#[tokio::test]
async fn the_console_exporter_prints_batches_and_lets_the_server_stop() {
    // opentelemetry-stdout looped for good on any batch of two spans or more.
    let mut server = spawn_traced(&[("OTEL_TRACES_EXPORTER", "console".into())]);
    let res = server
        .predict(None, vec![digit("seven"), digit("two")])
        .await;
    assert_eq!(res.status(), 200);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let status = server.stop(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}: {}", server.log());
    let spans: Vec<serde_json::Value> = server
        .log()
        .lines()
        .filter(|l| l.starts_with("{\"resourceSpans\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<_> = spans
        .iter()
        .map(|s| s["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["name"].clone())
        .collect();
    assert_eq!(
        names.iter().filter(|n| *n == "prediction").count(),
        2,
        "{names:?}"
    );
}
