//! Pods run unprivileged and read only their Secret; the JWT key and the users file come from
//! Secrets, and no committed file holds a usable one.

use std::path::Path;

use crate::compose::{compose, compose_app, compose_env};
use crate::dockerfile::{dockerfile, runtime_stage};
use crate::helpers::{str_at, COMPOSE};
use crate::k8s::{k8s_app, k8s_env, k8s_env_value, k8s_kind, k8s_named};

#[test]
fn pods_run_unprivileged_on_a_read_only_root_and_only_read_their_users_secret() {
    let (deployment, container) = k8s_app();
    let sc = &container["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(sc["runAsNonRoot"].as_bool(), Some(true));
    assert!(
        container["resources"]["requests"]["cpu"].as_str().is_some(),
        "the HPA needs a CPU request"
    );
    assert!(container["resources"]["limits"]["memory"]
        .as_str()
        .is_some());

    let users = k8s_env_value(&container, "MNIST_API_USERS").expect("no MNIST_API_USERS");
    let users = Path::new(&users);
    let mount = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| Path::new(str_at(m, "mountPath")) == users.parent().unwrap())
        .unwrap_or_else(|| panic!("nothing is mounted where MNIST_API_USERS points"))
        .clone();
    assert_eq!(mount["readOnly"].as_bool(), Some(true));
    let volume = deployment["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| str_at(v, "name") == str_at(&mount, "name"))
        .unwrap()
        .clone();
    let secret = &volume["secret"];
    let file = users.file_name().unwrap().to_str().unwrap();
    let key = secret["items"]
        .as_sequence()
        .and_then(|items| items.iter().find(|i| str_at(i, "path") == file))
        .map_or(file, |i| str_at(i, "key"));
    let example = k8s_named("Secret", str_at(secret, "secretName"));
    assert!(
        example["stringData"].get(key).is_some(),
        "the example Secret has no key {key}"
    );

    let hpa = k8s_kind("HorizontalPodAutoscaler").remove(0).1;
    assert_eq!(str_at(&hpa, "apiVersion"), "autoscaling/v2");
    let target = &hpa["spec"]["scaleTargetRef"];
    assert_eq!(str_at(target, "kind"), "Deployment");
    assert_eq!(
        str_at(target, "name"),
        str_at(&deployment["metadata"], "name")
    );
    assert_eq!(
        str_at(&hpa["spec"]["metrics"][0]["resource"], "name"),
        "cpu"
    );
    assert!(hpa["spec"]["minReplicas"].as_u64().unwrap() >= 2);
}

#[test]
fn the_jwt_key_comes_from_a_secret_and_no_file_commits_one() {
    let stages = dockerfile();
    assert!(!runtime_stage(&stages).env.contains_key("SECRET_KEY"));

    let compose = compose();
    let (_, svc) = compose_app(&compose);
    if let Some(v) = compose_env(svc).get("SECRET_KEY") {
        assert!(
            v.starts_with("${SECRET_KEY"),
            "{COMPOSE} commits SECRET_KEY={v}"
        );
    }

    let (_, container) = k8s_app();
    let (_, value, entry) = k8s_env(&container)
        .into_iter()
        .find(|(n, _, _)| n == "SECRET_KEY")
        .expect("the pods get no SECRET_KEY: tokens would not work across replicas");
    assert!(value.is_none(), "SECRET_KEY is written into the Deployment");
    let r = &entry["valueFrom"]["secretKeyRef"];
    let example = k8s_named("Secret", str_at(r, "name"));
    let key = example["stringData"][str_at(r, "key")]
        .as_str()
        .unwrap_or_else(|| panic!("the example Secret has no {}", str_at(r, "key")));
    assert!(
        key.starts_with("REPLACE-ME"),
        "the example Secret holds a real-looking key"
    );

    // The example users file is a placeholder that the server refuses, not a usable account.
    let dir = tempfile::tempdir().unwrap();
    for (_, secret) in k8s_kind("Secret") {
        for (k, v) in secret["stringData"].as_mapping().into_iter().flatten() {
            if k.as_str().is_some_and(|k| k.ends_with(".json")) {
                let path = dir.path().join("users.json");
                std::fs::write(&path, v.as_str().unwrap()).unwrap();
                let e = mnist_api::auth::Users::load(&path).unwrap_err().to_string();
                assert!(e.contains("not a password hash"), "{e}");
            }
        }
    }
}
