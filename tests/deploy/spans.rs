//! Traces reach Jaeger v2: compose and Kubernetes point the exporters at ports it listens on.

use mnist_api::telemetry::{parse_exporters, Exporter};

use crate::compose::{compose, compose_app, compose_env, compose_jaeger, published};
use crate::helpers::{host_port, str_at, COMPOSE};
use crate::k8s::{
    container_ports, containers, k8s_app, k8s_env_value, k8s_kind, k8s_named, resolve_port, selects,
};

/// What Jaeger v2's all-in-one image listens on (its default config, `JAEGER_LISTEN_HOST`
/// 0.0.0.0 in the image): UI, OTLP gRPC and HTTP, the legacy agent's thrift-compact UDP.
const JAEGER_UI: (u16, &str) = (16686, "tcp");
const JAEGER_OTLP_GRPC: (u16, &str) = (4317, "tcp");
const JAEGER_OTLP_HTTP: (u16, &str) = (4318, "tcp");
const JAEGER_AGENT: (u16, &str) = (6831, "udp");

#[test]
fn compose_sends_spans_to_a_jaeger_v2_on_the_ports_it_listens_on() {
    let compose = compose();
    let (jaeger, jaeger_svc) = compose_jaeger(&compose);
    assert!(
        str_at(jaeger_svc, "image").starts_with("jaegertracing/jaeger:2."),
        "Jaeger should be v2"
    );
    let jaeger_ports = published(jaeger_svc);
    for (port, proto) in [JAEGER_UI, JAEGER_OTLP_GRPC, JAEGER_OTLP_HTTP, JAEGER_AGENT] {
        assert!(
            jaeger_ports
                .iter()
                .any(|p| p.container == port && p.proto == proto),
            "{COMPOSE}: {jaeger} does not publish {port}/{proto}"
        );
    }

    let (_, svc) = compose_app(&compose);
    let env = compose_env(svc);
    let exporters =
        parse_exporters(env.get("OTEL_TRACES_EXPORTER").map_or("jaeger", |s| s)).unwrap();
    assert!(!exporters.is_empty(), "compose turns tracing off");
    for exporter in exporters {
        match exporter {
            Exporter::Otlp => {
                let endpoint = env
                    .get("OTEL_EXPORTER_OTLP_ENDPOINT")
                    .expect("OTLP without OTEL_EXPORTER_OTLP_ENDPOINT goes to localhost");
                let (host, port) = host_port(endpoint);
                assert_eq!(host, jaeger, "OTLP goes to {host}, not the Jaeger service");
                let protocol = env.get("OTEL_EXPORTER_OTLP_PROTOCOL").map_or("grpc", |s| s);
                let expected = if protocol == "grpc" {
                    JAEGER_OTLP_GRPC.0
                } else {
                    JAEGER_OTLP_HTTP.0
                };
                assert_eq!(port, expected, "OTLP {protocol} goes to port {port}");
            }
            Exporter::Jaeger => {
                assert_eq!(
                    env.get("JAEGER_AGENT_HOST"),
                    Some(&jaeger),
                    "the agent exporter must name the Jaeger service"
                );
                let port = env.get("JAEGER_AGENT_PORT").map_or("6831", |s| s);
                assert_eq!(port, JAEGER_AGENT.0.to_string());
            }
            Exporter::Console => {}
        }
    }

    // The web page's trace links open the UI port as published on the host.
    let ui = env.get("JAEGER_UI_URL").expect("JAEGER_UI_URL is not set");
    let (host, port) = host_port(ui);
    assert!(host == "localhost" || host == "127.0.0.1", "{ui}");
    assert!(
        jaeger_ports
            .iter()
            .any(|p| p.host == port && p.container == JAEGER_UI.0),
        "JAEGER_UI_URL={ui} is not where {jaeger}'s UI is published"
    );
    for p in jaeger_ports.iter().chain(published(svc).iter()) {
        assert_eq!(
            p.host_ip.as_deref(),
            Some("127.0.0.1"),
            "port {} is published beyond this machine",
            p.host
        );
    }
}

#[test]
fn kubernetes_sends_spans_to_a_collector_service_that_listens_on_the_otlp_port() {
    let (_, container) = k8s_app();
    let list = k8s_env_value(&container, "OTEL_TRACES_EXPORTER").unwrap_or("jaeger".into());
    assert_eq!(
        parse_exporters(&list).unwrap(),
        [Exporter::Otlp],
        "pods should export OTLP (no Jaeger agent beside them)"
    );
    let endpoint = k8s_env_value(&container, "OTEL_EXPORTER_OTLP_ENDPOINT")
        .expect("no OTEL_EXPORTER_OTLP_ENDPOINT");
    let (host, port) = host_port(&endpoint);
    let protocol =
        k8s_env_value(&container, "OTEL_EXPORTER_OTLP_PROTOCOL").unwrap_or("grpc".into());
    let expected = if protocol == "grpc" {
        JAEGER_OTLP_GRPC.0
    } else {
        JAEGER_OTLP_HTTP.0
    };
    assert_eq!(port, expected, "OTLP {protocol} to port {port}");

    let service = k8s_named("Service", &host);
    let sp = service["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["port"].as_u64() == Some(port as u64))
        .unwrap_or_else(|| panic!("Service {host} has no port {port}"))
        .clone();
    let (_, collector) = k8s_kind("Deployment")
        .into_iter()
        .find(|(_, d)| {
            selects(
                &service["spec"]["selector"],
                &d["spec"]["template"]["metadata"]["labels"],
            )
        })
        .unwrap_or_else(|| panic!("no Deployment behind Service {host}"));
    let jaeger = containers(&collector)
        .into_iter()
        .find(|c| str_at(c, "image").starts_with("jaegertracing/jaeger:2."))
        .expect("the collector is not Jaeger v2");
    let target = sp.get("targetPort").unwrap_or(&sp["port"]);
    assert_eq!(resolve_port(&jaeger, target), expected);
    assert!(container_ports(&jaeger).contains(&JAEGER_UI.0));
}
