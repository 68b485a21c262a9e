//! Shared by the readers and the tests: where the files are, reading them, YAML values, and
//! the server's own flags.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use serde::Deserialize;
use serde_yaml::Value;

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");
pub const COMPOSE: &str = "docker-compose.yml";
pub const K8S_DIR: &str = "deploy/k8s";

pub fn repo(rel: &str) -> PathBuf {
    Path::new(ROOT).join(rel)
}

pub fn read(rel: &str) -> String {
    std::fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

pub fn yaml_docs(rel: &str) -> Vec<Value> {
    let text = read(rel);
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            Value::deserialize(doc).unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"))
        })
        .filter(|v| !v.is_null())
        .collect()
}

pub fn str_at<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

pub fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// `host` and `port` of `http://host:port/…`.
pub fn host_port(url: &str) -> (String, u16) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap();
    let (host, port) = authority
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("no port in {url}"));
    (host.to_string(), port.parse().unwrap())
}

pub fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr}"))
}

/// The server's flags: environment variable, long name, default value.
pub fn flags() -> Vec<(String, String, Option<String>)> {
    mnist_api::config::Cli::command()
        .get_arguments()
        .filter_map(|a| {
            let env = a.get_env()?.to_str()?.to_string();
            let default = a
                .get_default_values()
                .first()
                .map(|d| d.to_string_lossy().into_owned());
            Some((env, a.get_long().unwrap_or("").to_string(), default))
        })
        .collect()
}

/// The port the server listens on unless told otherwise (`--bind`'s default).
pub fn default_port() -> u16 {
    let (_, _, default) = flags()
        .into_iter()
        .find(|(env, _, _)| env == "MNIST_API_BIND")
        .expect("no MNIST_API_BIND flag");
    port_of(&default.expect("--bind has no default"))
}
