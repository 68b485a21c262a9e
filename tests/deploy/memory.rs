//! The Deployment's memory request and limit cover the server's documented worst case: its
//! idle footprint, the whole decode memory budget, and every request body it may buffer.

use crate::helpers::flags;
use crate::k8s::{k8s_app, k8s_env_value};

const MIB: u64 = 1024 * 1024;

/// The server's own footprint with nothing in flight and a little traffic behind it: code,
/// model, runtime and decoder threads, allocator heaps. tests/memory.rs measured a 197 MiB
/// peak with the 160 MiB decode budget full, i.e. about 37 MiB besides it.
const SERVER_BASE: u64 = 64 * MIB;

/// A setting as the container sees it: its env value in the manifest, else the flag default.
fn setting(container: &serde_yaml::Value, env: &str) -> u64 {
    let value = k8s_env_value(container, env).or_else(|| {
        flags()
            .into_iter()
            .find(|(e, _, _)| e == env)
            .unwrap_or_else(|| panic!("no flag reads {env}"))
            .2
    });
    let value = value.unwrap_or_else(|| panic!("{env} is neither set nor defaulted"));
    value
        .parse()
        .unwrap_or_else(|_| panic!("{env}={value} is not a number"))
}

/// A Kubernetes memory quantity in bytes (the binary and plain forms the manifests use).
fn quantity(q: &str) -> u64 {
    for (suffix, unit) in [("Gi", 1024 * MIB), ("Mi", MIB), ("Ki", 1024)] {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<u64>().unwrap() * unit;
        }
    }
    q.parse()
        .unwrap_or_else(|_| panic!("unsupported memory quantity {q}"))
}

#[test]
fn the_memory_limit_and_request_match_the_documented_worst_case() {
    let (_, container) = k8s_app();
    let decode = setting(&container, "MNIST_API_DECODE_MEMORY");
    let per_image = setting(&container, "MNIST_API_MAX_IMAGE_MEMORY");
    assert!(
        per_image <= decode,
        "the server refuses to start with these"
    );
    // Bodies are read before an in-flight permit is taken; the body budget bounds them all.
    let bodies = setting(&container, "MNIST_API_BODY_MEMORY");
    let worst = SERVER_BASE + decode + bodies;

    let resources = &container["resources"];
    let limit = quantity(
        resources["limits"]["memory"]
            .as_str()
            .expect("no memory limit"),
    );
    let request = quantity(
        resources["requests"]["memory"]
            .as_str()
            .expect("no memory request"),
    );
    let show = |b: u64| format!("{} MiB", b / MIB);
    assert!(
        limit >= worst,
        "memory limit {} is under the worst case {} (base {} + decode {} + bodies {}): \
         the pod can be OOM-killed by clients",
        show(limit),
        show(worst),
        show(SERVER_BASE),
        show(decode),
        show(bodies)
    );
    assert!(
        limit < worst + 64 * MIB,
        "memory limit {} is far above the worst case {}: lower it or raise the budgets",
        show(limit),
        show(worst)
    );
    // The scheduler reserves what the pod may really use, so a node never overcommits it.
    assert_eq!(request, limit, "memory request and limit differ");
}
