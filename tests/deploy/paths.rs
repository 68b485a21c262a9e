//! The files parse, every path they copy, build from or apply exists, and the build context
//! keeps what the Dockerfile copies while leaving out build output, history and secrets.

use std::collections::BTreeSet;

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use serde_yaml::Value;

use crate::compose::{compose, services};
use crate::dockerfile::{dockerfile, runtime_stage};
use crate::helpers::{read, repo, scalar, str_at, yaml_docs, COMPOSE, K8S_DIR, ROOT};
use crate::k8s::k8s_docs;

#[test]
fn every_yaml_file_parses_and_every_manifest_names_its_kind() {
    let compose = compose();
    assert!(!services(&compose).is_empty());
    let docs = k8s_docs();
    for (file, doc) in &docs {
        assert!(
            !str_at(doc, "apiVersion").is_empty() && !str_at(doc, "kind").is_empty(),
            "{file}: a document without apiVersion or kind"
        );
        if str_at(doc, "kind") != "Kustomization" {
            assert!(
                !str_at(&doc["metadata"], "name").is_empty(),
                "{file}: a {} without a name",
                str_at(doc, "kind")
            );
        }
    }
    let kinds: BTreeSet<&str> = docs.iter().map(|(_, d)| str_at(d, "kind")).collect();
    for kind in ["Deployment", "Service", "HorizontalPodAutoscaler", "Secret"] {
        assert!(kinds.contains(kind), "no {kind} in {K8S_DIR}");
    }
}

#[test]
fn every_path_the_files_copy_or_reference_exists_in_the_repository() {
    let stages = dockerfile();
    let names: BTreeSet<String> = stages.iter().filter_map(|s| s.name.clone()).collect();
    for stage in &stages {
        for copy in &stage.copies {
            match &copy.from {
                Some(from) => assert!(names.contains(from), "COPY --from={from}: no such stage"),
                None => {
                    for src in &copy.sources {
                        assert!(
                            repo(src).exists(),
                            "Dockerfile copies {src}, which is missing"
                        );
                    }
                }
            }
        }
    }
    // The weights the server loads are the ones the image ships.
    let image = runtime_stage(&stages);
    let weights = image
        .env
        .get("MNIST_API_WEIGHTS")
        .cloned()
        .unwrap_or(mnist_api::weights::DEFAULT_PATH.into());
    let shipped = image
        .copies
        .iter()
        .find(|c| c.from.is_none() && (c.dest == weights || weights.ends_with(&c.dest)))
        .unwrap_or_else(|| panic!("the image does not copy MNIST_API_WEIGHTS={weights}"));
    assert_eq!(shipped.sources, [mnist_api::weights::DEFAULT_PATH]);

    let compose = compose();
    for (name, svc) in services(&compose) {
        let name = scalar(name);
        let build = match svc.get("build") {
            None => continue,
            Some(Value::String(ctx)) => (ctx.clone(), "Dockerfile".to_string()),
            Some(b) => (
                str_at(b, "context").to_string(),
                b.get("dockerfile").map_or("Dockerfile".into(), scalar),
            ),
        };
        let ctx = repo(&build.0);
        assert!(
            ctx.is_dir(),
            "{COMPOSE}: {name} builds from missing {}",
            build.0
        );
        assert!(
            ctx.join(&build.1).is_file(),
            "{COMPOSE}: {name}: no {}",
            build.1
        );
        // An env_file would have to be committed (or compose fails without it); SECRET_KEY
        // comes by ${SECRET_KEY} interpolation from an uncommitted .env or the shell instead.
        assert!(
            svc.get("env_file").is_none(),
            "{COMPOSE}: {name} reads an env_file"
        );
    }

    // Every manifest is applied by the kustomization, except the examples.
    let kustomization = yaml_docs(&format!("{K8S_DIR}/kustomization.yaml")).remove(0);
    let resources: BTreeSet<String> = kustomization["resources"]
        .as_sequence()
        .expect("kustomization without resources")
        .iter()
        .map(scalar)
        .collect();
    for r in &resources {
        assert!(
            repo(&format!("{K8S_DIR}/{r}")).is_file(),
            "kustomization lists missing {r}"
        );
    }
    for entry in std::fs::read_dir(repo(K8S_DIR)).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let listed = resources.contains(&name);
        if name.contains(".example.") || name == "kustomization.yaml" {
            assert!(!listed, "{name} must not be applied");
        } else {
            assert!(listed, "{K8S_DIR}/{name} is not in kustomization.yaml");
        }
    }
}

/// `.dockerignore` as Docker applies it: the last matching pattern wins, `!` re-includes, and
/// a pattern matching a directory excludes everything under it. Docker matches every pattern
/// from the context's root, gitignore only those with a slash, hence the leading `/`. (Unlike
/// Docker, gitignore cannot re-include a file below an excluded directory.)
fn dockerignore() -> Gitignore {
    let mut rules = GitignoreBuilder::new(ROOT);
    for line in read(".dockerignore").lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (negated, pattern) = line.strip_prefix('!').map_or(("", line), |p| ("!", p));
        let pattern = pattern.trim_start_matches('/').trim_end_matches('/');
        rules
            .add_line(None, &format!("{negated}/{pattern}"))
            .unwrap_or_else(|e| panic!(".dockerignore: {e}"));
    }
    rules.build().unwrap()
}

fn dockerignored(rules: &Gitignore, path: &str) -> bool {
    rules
        .matched_path_or_any_parents(path, repo(path).is_dir())
        .is_ignore()
}

#[test]
fn the_build_context_keeps_every_copied_file_and_leaves_out_target_git_and_secrets() {
    let rules = dockerignore();
    let mut copied = Vec::new();
    for stage in dockerfile() {
        for copy in stage.copies.into_iter().filter(|c| c.from.is_none()) {
            for src in copy.sources {
                let mut stack = vec![src.trim_end_matches('/').to_string()];
                while let Some(p) = stack.pop() {
                    if repo(&p).is_dir() {
                        for e in std::fs::read_dir(repo(&p)).unwrap() {
                            let name = e.unwrap().file_name().into_string().unwrap();
                            stack.push(format!("{p}/{name}"));
                        }
                    } else {
                        copied.push(p);
                    }
                }
            }
        }
    }
    assert!(copied.iter().any(|p| p == "src/main.rs"));
    for p in &copied {
        assert!(
            !dockerignored(&rules, p),
            ".dockerignore drops {p}, which the Dockerfile copies"
        );
    }
    for p in [
        ".git/HEAD",
        "target/release/mnist-api",
        ".env",
        "users.json",
        "data/mnist/x",
    ] {
        assert!(
            dockerignored(&rules, p),
            "{p} would be sent to the Docker daemon"
        );
    }
}
