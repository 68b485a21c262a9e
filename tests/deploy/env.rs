//! Every variable the files set is one the server (or a library it uses) reads, with a value
//! it accepts.

use std::collections::BTreeMap;

use mnist_api::telemetry::parse_exporters;

use crate::compose::{compose, compose_app, compose_env};
use crate::dockerfile::{dockerfile, runtime_stage};
use crate::helpers::{flags, read, repo, COMPOSE, K8S_DIR, ROOT};
use crate::k8s::{k8s_app, k8s_env, k8s_env_value};

/// Variables read by libraries rather than by `src/`, with the dependency that reads them.
const LIBRARY_ENV_VARS: &[(&str, &str)] = &[
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "opentelemetry-otlp"),
    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "opentelemetry-otlp"),
    ("OTEL_RESOURCE_ATTRIBUTES", "opentelemetry_sdk"),
    ("OTEL_TRACES_SAMPLER", "opentelemetry_sdk"),
    ("OTEL_TRACES_SAMPLER_ARG", "opentelemetry_sdk"),
    ("RUST_LOG", "tracing-subscriber"),
];

/// Every environment variable the server reads, with where it is read: its flags, the
/// `std::env::var`/`var_os` calls under src/, and [`LIBRARY_ENV_VARS`].
fn env_vars_read() -> BTreeMap<String, String> {
    let mut known = BTreeMap::new();
    for (env, long, _) in flags() {
        known.insert(env, format!("flag --{long}"));
    }
    let mut stack = vec![repo("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for opener in ["var(\"", "var_os(\""] {
                for (i, _) in text.match_indices(opener) {
                    let rest = &text[i + opener.len()..];
                    let name = &rest[..rest.find('"').unwrap()];
                    let rel = path.strip_prefix(ROOT).unwrap().display().to_string();
                    known.entry(name.to_string()).or_insert(rel);
                }
            }
        }
    }
    let manifest = read("Cargo.toml");
    for (name, krate) in LIBRARY_ENV_VARS {
        let line = format!("\n{krate} =");
        assert!(
            manifest.contains(&line),
            "{name} is said to be read by {krate}, which is not a dependency"
        );
        known
            .entry(name.to_string())
            .or_insert(format!("the {krate} crate"));
    }
    known
}

#[test]
fn every_variable_the_deployments_set_is_one_the_server_reads() {
    let known = env_vars_read();
    let mut unknown = Vec::new();
    for name in runtime_stage(&dockerfile()).env.keys() {
        if !known.contains_key(name) {
            unknown.push(format!("Dockerfile: {name}"));
        }
    }
    let compose = compose();
    let (app, svc) = compose_app(&compose);
    for name in compose_env(svc).keys() {
        if !known.contains_key(name) {
            unknown.push(format!("{COMPOSE} ({app}): {name}"));
        }
    }
    let (_, container) = k8s_app();
    let env = k8s_env(&container);
    for (name, _, _) in &env {
        // Kubernetes-only helpers are fine when another entry expands them as $(NAME).
        let expanded = env.iter().any(|(_, v, _)| {
            v.as_deref()
                .is_some_and(|v| v.contains(&format!("$({name})")))
        });
        if !known.contains_key(name) && !expanded {
            unknown.push(format!("{K8S_DIR} deployment: {name}"));
        }
    }
    assert!(
        unknown.is_empty(),
        "variables the server never reads: {unknown:?}\nit reads: {:?}",
        known.keys().collect::<Vec<_>>()
    );
}

#[test]
fn the_settings_the_deployments_give_are_values_the_server_accepts() {
    let compose = compose();
    let (_, svc) = compose_app(&compose);
    let (_, container) = k8s_app();
    let mut exporter_lists = vec![compose_env(svc)
        .get("OTEL_TRACES_EXPORTER")
        .cloned()
        .unwrap_or_default()];
    exporter_lists.push(k8s_env_value(&container, "OTEL_TRACES_EXPORTER").unwrap_or_default());
    for list in exporter_lists {
        parse_exporters(&list).unwrap_or_else(|e| panic!("OTEL_TRACES_EXPORTER={list}: {e}"));
    }
    let protocols = [
        compose_env(svc).get("OTEL_EXPORTER_OTLP_PROTOCOL").cloned(),
        k8s_env_value(&container, "OTEL_EXPORTER_OTLP_PROTOCOL"),
    ];
    for p in protocols.into_iter().flatten() {
        assert!(
            p == "grpc" || p == "http/protobuf",
            "OTEL_EXPORTER_OTLP_PROTOCOL={p} is not supported by src/telemetry.rs"
        );
    }
}
