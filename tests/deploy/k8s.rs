//! The manifests under deploy/k8s: documents by kind and name, the app's Deployment, its
//! containers' env and ports, and label selectors.

use std::collections::BTreeSet;

use serde_yaml::Value;

use crate::helpers::{repo, scalar, str_at, yaml_docs, K8S_DIR, ROOT};

/// Every document of every YAML file under deploy/k8s, with its file.
pub fn k8s_docs() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(repo(K8S_DIR))
        .unwrap_or_else(|e| panic!("{K8S_DIR}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {K8S_DIR}");
    for f in files {
        let rel = f.strip_prefix(ROOT).unwrap().to_str().unwrap().to_string();
        for doc in yaml_docs(&rel) {
            out.push((rel.clone(), doc));
        }
    }
    out
}

pub fn k8s_kind(kind: &str) -> Vec<(String, Value)> {
    k8s_docs()
        .into_iter()
        .filter(|(_, d)| str_at(d, "kind") == kind)
        .collect()
}

pub fn k8s_named(kind: &str, name: &str) -> Value {
    k8s_kind(kind)
        .into_iter()
        .map(|(_, d)| d)
        .find(|d| str_at(&d["metadata"], "name") == name)
        .unwrap_or_else(|| panic!("no {kind} named {name} in {K8S_DIR}"))
}

/// The Deployment running this repository's image, and its container.
pub fn k8s_app() -> (Value, Value) {
    for (_, d) in k8s_kind("Deployment") {
        let found = containers(&d)
            .into_iter()
            .find(|c| str_at(c, "image").starts_with("mnist-api"));
        if let Some(c) = found {
            return (d, c);
        }
    }
    panic!("no Deployment runs the mnist-api image");
}

pub fn containers(deployment: &Value) -> Vec<Value> {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .cloned()
        .unwrap_or_default()
}

/// A container's `env` entries: name, then the literal value (None for `valueFrom`).
pub fn k8s_env(container: &Value) -> Vec<(String, Option<String>, Value)> {
    container["env"]
        .as_sequence()
        .map(|env| {
            env.iter()
                .map(|e| {
                    let value = e.get("value").map(scalar);
                    (str_at(e, "name").to_string(), value, e.clone())
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn k8s_env_value(container: &Value, name: &str) -> Option<String> {
    k8s_env(container)
        .into_iter()
        .find(|(n, _, _)| n == name)
        .and_then(|(_, v, _)| v)
}

/// A container port given by number or by name.
pub fn resolve_port(container: &Value, port: &Value) -> u16 {
    if let Some(n) = port.as_u64() {
        return n as u16;
    }
    let name = port.as_str().expect("port is neither number nor name");
    container["ports"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|p| str_at(p, "name") == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}")) as u16
}

pub fn container_ports(container: &Value) -> BTreeSet<u16> {
    container["ports"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|p| p["containerPort"].as_u64().unwrap() as u16)
        .collect()
}

/// Whether a label selector matches `labels`.
pub fn selects(selector: &Value, labels: &Value) -> bool {
    let Some(sel) = selector.as_mapping() else {
        return false;
    };
    !sel.is_empty()
        && sel
            .iter()
            .all(|(k, v)| labels.get(k.as_str().unwrap()) == Some(v))
}
