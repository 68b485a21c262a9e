//! The image, compose and Kubernetes agree on the port the server listens on.

use std::collections::BTreeSet;

use serde_yaml::Value;

use crate::compose::{compose, compose_app, compose_env, published};
use crate::dockerfile::{dockerfile, runtime_stage};
use crate::helpers::{default_port, port_of, str_at, COMPOSE};
use crate::k8s::{container_ports, k8s_app, k8s_env_value, k8s_kind, resolve_port, selects};

#[test]
fn the_container_listens_on_every_interface_at_the_port_the_server_defaults_to() {
    let port = default_port();
    let stages = dockerfile();
    let image = runtime_stage(&stages);
    let env = &image.env;
    assert_eq!(
        env.get("MNIST_API_BIND").map(String::as_str),
        Some(format!("0.0.0.0:{port}").as_str()),
        "the image must bind 0.0.0.0 at the server's default port"
    );
    let exposed = &image.exposed;
    assert!(
        exposed
            .iter()
            .any(|e| e == &port.to_string() || e == &format!("{port}/tcp")),
        "EXPOSE {exposed:?} lacks {port}"
    );
    let check = image.healthcheck().join(" ");
    assert!(
        check.contains(&format!("/{port}")),
        "the HEALTHCHECK does not ask port {port}: {check}"
    );

    // Compose publishes the port the container binds.
    let compose = compose();
    let (app, svc) = compose_app(&compose);
    let bind = compose_env(svc)
        .get("MNIST_API_BIND")
        .or(env.get("MNIST_API_BIND"))
        .cloned()
        .unwrap();
    let bound = port_of(&bind);
    let published = published(svc);
    assert!(
        published
            .iter()
            .any(|p| p.container == bound && p.proto == "tcp"),
        "{COMPOSE}: {app} does not publish container port {bound}"
    );

    // Kubernetes: the declared container port is the bound one; probes and Service reach it.
    let (deployment, container) = k8s_app();
    let bind = k8s_env_value(&container, "MNIST_API_BIND")
        .or(env.get("MNIST_API_BIND").cloned())
        .unwrap();
    let bound = port_of(&bind);
    assert!(bind.starts_with("0.0.0.0:"), "the pod binds {bind}");
    assert_eq!(
        container_ports(&container),
        BTreeSet::from([bound]),
        "containerPort differs from MNIST_API_BIND"
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        let get = &container[probe]["httpGet"];
        assert_eq!(
            resolve_port(&container, &get["port"]),
            bound,
            "{probe} asks another port"
        );
    }
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let services: Vec<Value> = k8s_kind("Service")
        .into_iter()
        .map(|(_, s)| s)
        .filter(|s| selects(&s["spec"]["selector"], labels))
        .collect();
    assert!(
        !services.is_empty(),
        "no Service selects the mnist-api pods"
    );
    for s in services {
        for p in s["spec"]["ports"].as_sequence().unwrap() {
            let target = p.get("targetPort").unwrap_or(&p["port"]);
            assert_eq!(
                resolve_port(&container, target),
                bound,
                "Service {} forwards to another port",
                str_at(&s["metadata"], "name")
            );
        }
    }
}
