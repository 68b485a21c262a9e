//! The base images: a builder Rust new enough for the locked dependencies, Debian bookworm in
//! both stages, and a non-root runtime user who owns the users volume.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use crate::dockerfile::{dockerfile, runtime_stage};
use crate::helpers::ROOT;
use crate::k8s::k8s_app;

fn version(v: &str) -> (u32, u32, u32) {
    let mut it = v.split('.').map(|x| x.parse::<u32>().unwrap_or(0));
    (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    )
}

/// The newest `rust-version` among the package and what its binaries link (normal and build
/// dependencies, Linux x86-64), from `cargo metadata`.
fn rust_needed() -> ((u32, u32, u32), String) {
    let cargo = std::env::var("CARGO").unwrap_or("cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .args(["--filter-platform", "x86_64-unknown-linux-gnu"])
        .current_dir(ROOT)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages: BTreeMap<&str, &serde_json::Value> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p))
        .collect();
    let nodes: BTreeMap<&str, &serde_json::Value> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let mut seen = BTreeSet::new();
    let mut stack = vec![meta["resolve"]["root"].as_str().unwrap()];
    let mut newest = ((0, 0, 0), String::new());
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let p = packages[id];
        if let Some(rv) = p["rust_version"].as_str() {
            newest = newest.max((version(rv), format!("{} {}", p["name"], p["version"])));
        }
        for dep in nodes[id]["deps"].as_array().unwrap() {
            let linked = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].as_str() != Some("dev"));
            if linked {
                stack.push(dep["pkg"].as_str().unwrap());
            }
        }
    }
    newest
}

#[test]
fn the_builder_rust_is_new_enough_and_both_stages_run_debian_bookworm() {
    let stages = dockerfile();
    let builder = &stages[0].from;
    let tag = builder
        .strip_prefix("rust:")
        .unwrap_or_else(|| panic!("the builder is not the official rust image: {builder}"));
    assert!(
        tag.ends_with("-bookworm"),
        "the builder is not bookworm: {builder}"
    );
    let runtime = &runtime_stage(&stages).from;
    assert!(
        runtime == "debian:bookworm-slim" || runtime.starts_with("gcr.io/distroless/cc-debian12"),
        "the runtime is not bookworm (the builder's glibc): {runtime}"
    );
    let have = version(tag.split('-').next().unwrap());
    let (needed, by) = rust_needed();
    assert!(
        have >= needed,
        "{builder}: Rust {have:?} is older than {needed:?} ({by})"
    );
}

#[test]
fn the_image_runs_as_a_non_root_user_who_can_write_the_users_volume() {
    let stages = dockerfile();
    let image = runtime_stage(&stages);
    let [user] = image.users.as_slice() else {
        panic!("expected one USER: {:?}", image.users);
    };
    let uid: u32 =
        user.split(':').next().unwrap().parse().unwrap_or_else(|_| {
            panic!("USER {user} is not numeric: runAsNonRoot cannot verify it")
        });
    assert_ne!(uid, 0, "the image runs as root");
    let users = image
        .env
        .get("MNIST_API_USERS")
        .cloned()
        .expect("the image leaves the users file in the working directory");
    let dir = Path::new(&users)
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let volumes = image.volumes.join(" ");
    assert!(volumes.contains(&dir), "{dir} is not a VOLUME");
    let setup = image.runs.join(" ");
    assert!(
        setup.contains("chown") && setup.contains(&uid.to_string()) && setup.contains(&dir),
        "{dir} is not created for uid {uid}"
    );
    let (deployment, _) = k8s_app();
    let pod = &deployment["spec"]["template"]["spec"]["securityContext"];
    assert_eq!(
        pod["runAsUser"].as_u64(),
        Some(uid as u64),
        "Kubernetes runs another uid"
    );
}

#[test]
fn the_dependency_layer_stubs_every_bench_cargo_looks_for() {
    // The first build stage compiles the dependencies against stub sources. cargo refuses a
    // manifest whose bench file it cannot find, even to build one binary, so each bench
    // needs a stub there.
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--offline",
            "--format-version",
            "1",
        ])
        .current_dir(ROOT)
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let benches: Vec<String> = meta["packages"][0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bench"))
        .map(|t| {
            let path = Path::new(t["src_path"].as_str().unwrap());
            path.strip_prefix(ROOT).unwrap().display().to_string()
        })
        .collect();
    assert!(!benches.is_empty());
    let stages = dockerfile();
    let stub = stages[0]
        .runs
        .iter()
        .find(|r| r.contains("fn main() {}"))
        .expect("a RUN that writes stub sources in the first stage");
    for bench in &benches {
        assert!(
            stub.contains(&format!("> {bench}")),
            "the stub build does not create {bench}: {stub}"
        );
    }
}
