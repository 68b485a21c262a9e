//! docker-compose.yml: its services, their environment and published ports.

use std::collections::BTreeMap;

use serde_yaml::Value;

use crate::helpers::{scalar, str_at, yaml_docs, COMPOSE};

pub fn compose() -> Value {
    let mut docs = yaml_docs(COMPOSE);
    assert_eq!(docs.len(), 1, "{COMPOSE} should hold one document");
    docs.remove(0)
}

pub fn services(compose: &Value) -> &serde_yaml::Mapping {
    compose["services"]
        .as_mapping()
        .expect("compose file without services")
}

/// The compose service built from this repository's Dockerfile, with its name.
pub fn compose_app(compose: &Value) -> (String, &Value) {
    let built: Vec<_> = services(compose)
        .iter()
        .filter(|(_, s)| s.get("build").is_some())
        .collect();
    assert_eq!(built.len(), 1, "expected one service with `build`");
    (built[0].0.as_str().unwrap().to_string(), built[0].1)
}

/// The compose service running Jaeger v2, with its name.
pub fn compose_jaeger(compose: &Value) -> (String, &Value) {
    let (name, svc) = services(compose)
        .iter()
        .find(|(_, s)| str_at(s, "image").starts_with("jaegertracing/jaeger:"))
        .expect("no jaegertracing/jaeger service in the compose file");
    (name.as_str().unwrap().to_string(), svc)
}

/// A service's `environment`, as a map or as a `KEY=VALUE` list.
pub fn compose_env(service: &Value) -> BTreeMap<String, String> {
    match service.get("environment") {
        None => BTreeMap::new(),
        Some(Value::Mapping(m)) => m.iter().map(|(k, v)| (scalar(k), scalar(v))).collect(),
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|i| {
                let s = scalar(i);
                let (k, v) = s.split_once('=').unwrap_or((&s, ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
        Some(other) => panic!("unexpected environment: {other:?}"),
    }
}

/// Compose's `${VAR}`, `${VAR:-default}`, `${VAR-default}` and `${VAR:?error}` as they resolve
/// with VAR unset.
pub fn interpolate_unset(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("unclosed ${") + start;
        let expr = &rest[start + 2..end];
        if let Some((_, default)) = expr.split_once(":-").or_else(|| expr.split_once('-')) {
            out.push_str(default);
        } else {
            assert!(
                !expr.contains('?'),
                "`{s}` makes compose fail when the variable is unset"
            );
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// `[ip:]host:container[/proto]` of a compose `ports` entry (short syntax).
pub struct Published {
    pub host_ip: Option<String>,
    pub host: u16,
    pub container: u16,
    pub proto: String,
}

pub fn published(service: &Value) -> Vec<Published> {
    service
        .get("ports")
        .and_then(Value::as_sequence)
        .map(|ports| {
            ports
                .iter()
                .map(|p| {
                    let s = scalar(p);
                    let (spec, proto) = s.split_once('/').unwrap_or((&s, "tcp"));
                    let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
                    let port = |x: &str| x.parse::<u16>().unwrap_or_else(|_| panic!("port {s}"));
                    Published {
                        container: port(parts[0]),
                        host: port(parts.get(1).copied().unwrap_or(parts[0])),
                        host_ip: parts.get(2).map(|x| x.to_string()),
                        proto: proto.to_string(),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}
