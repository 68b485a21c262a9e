//! The real server binary started with each file's environment: it comes up, answers the
//! probes' `/health`, and passes the image's HEALTHCHECK.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::Server;
use crate::compose::{compose, compose_app, compose_env, interpolate_unset};
use crate::dockerfile::{dockerfile, runtime_stage};
use crate::helpers::{default_port, read, repo, str_at};
use crate::k8s::{k8s_app, k8s_env};

/// The real server binary with exactly `env` (plus PATH).
fn start(env: &BTreeMap<String, String>) -> Server {
    Server::as_deployed(env)
        // The address is learnt from the `listening` log line, whatever level `env` logs at.
        .env("RUST_LOG", "info")
        .start()
}

/// The status line of `GET path`.
fn get_status(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer.lines().next().unwrap_or("").to_string()
}

/// A deployment's environment made runnable here: the address becomes a free loopback port,
/// the image's weights path the repository's file, the users file one in `dir`.
fn runnable(mut env: BTreeMap<String, String>, dir: &Path) -> BTreeMap<String, String> {
    env.insert("MNIST_API_BIND".into(), "127.0.0.1:0".into());
    let stages = dockerfile();
    if let Some(weights) = env.get("MNIST_API_WEIGHTS").cloned() {
        let copy = runtime_stage(&stages)
            .copies
            .iter()
            .find(|c| c.from.is_none() && c.dest == weights)
            .unwrap_or_else(|| {
                panic!("MNIST_API_WEIGHTS={weights} is not a file the image copies")
            });
        env.insert(
            "MNIST_API_WEIGHTS".into(),
            repo(&copy.sources[0]).display().to_string(),
        );
    }
    env.insert(
        "MNIST_API_USERS".into(),
        dir.join("users.json").display().to_string(),
    );
    env
}

#[test]
fn probes_and_the_healthcheck_ask_for_health_which_is_a_real_route() {
    let route = read("src/routes/health.rs");
    assert!(
        route.contains("path!(\"health\")"),
        "GET /health is gone from src/routes"
    );
    let (_, container) = k8s_app();
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(
            str_at(&container[probe]["httpGet"], "path"),
            "/health",
            "{probe}"
        );
    }
    let stages = dockerfile();
    let check = runtime_stage(&stages).healthcheck().join(" ");
    assert!(check.contains("GET /health "), "{check}");
}

#[test]
fn the_image_healthcheck_passes_against_the_server_and_fails_without_it() {
    let stages = dockerfile();
    let image = runtime_stage(&stages);
    let dir = tempfile::tempdir().unwrap();
    let server = start(&runnable(image.env.clone(), dir.path()));
    let port = default_port().to_string();
    let actual = server.addr.port().to_string();
    let command: Vec<String> = image
        .healthcheck()
        .iter()
        .map(|a| a.replace(&port, &actual))
        .collect();
    let run = || {
        Command::new(&command[0])
            .args(&command[1..])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let healthy = run();
    assert!(
        healthy.status.success(),
        "HEALTHCHECK failed against a running server: {}",
        String::from_utf8_lossy(&healthy.stderr)
    );
    assert!(
        server.log().contains("created user `admin`"),
        "no first-start user in the log"
    );
    drop(server);
    assert!(!run().status.success(), "HEALTHCHECK passed with no server");
}

#[test]
fn the_server_starts_with_the_compose_environment_and_answers_health() {
    let stages = dockerfile();
    let mut env = runtime_stage(&stages).env.clone();
    let compose = compose();
    let (_, svc) = compose_app(&compose);
    for (k, v) in compose_env(svc) {
        env.insert(k, interpolate_unset(&v));
    }
    let dir = tempfile::tempdir().unwrap();
    let server = start(&runnable(env, dir.path()));
    assert_eq!(get_status(server.addr, "/health"), "HTTP/1.0 200 OK");
}

#[test]
fn the_server_starts_with_the_kubernetes_environment_without_writing_its_users_file() {
    let stages = dockerfile();
    let mut env = runtime_stage(&stages).env.clone();
    let (_, container) = k8s_app();
    let mut k8s = BTreeMap::new();
    for (name, value, entry) in k8s_env(&container) {
        let value = match value {
            Some(v) => v,
            None if entry["valueFrom"].get("fieldRef").is_some() => format!("test-{name}"),
            None => "a test key from a Secret".to_string(),
        };
        // $(NAME) expands earlier entries, as the kubelet does.
        let expanded = k8s
            .iter()
            .fold(value, |v: String, (n, x): (&String, &String)| {
                v.replace(&format!("$({n})"), x)
            });
        k8s.insert(name, expanded);
    }
    env.extend(k8s);
    let dir = tempfile::tempdir().unwrap();
    let env = runnable(env, dir.path());
    // The Secret's users file: provisioned beforehand, as `mnist-api user add` writes it.
    let users_path = PathBuf::from(&env["MNIST_API_USERS"]);
    let mut users = mnist_api::auth::Users::default();
    users.set_password("alice", "a test password").unwrap();
    users.save(&users_path).unwrap();
    let before = std::fs::read(&users_path).unwrap();

    let server = start(&env);
    let probe = str_at(&container["readinessProbe"]["httpGet"], "path");
    assert_eq!(get_status(server.addr, probe), "HTTP/1.0 200 OK");
    assert_eq!(
        std::fs::read(&users_path).unwrap(),
        before,
        "the users file was rewritten"
    );
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(files.len(), 1, "the server wrote beside the users file");
    assert!(!server.log().contains("created user"), "{}", server.log());
}
