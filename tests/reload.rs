//! Model versions and reloads, against the real binary serving a model repository: a reload
//! swaps the weights for new requests while a request already in flight finishes on the
//! weights it started with; a broken file changes nothing; SIGHUP and polling reload too.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{digit, Server, PASSWORD, USER};
use mnist_api::auth::Users;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The committed weights with their header's `created` stamp changed in place: a valid file
/// with the same tensors and another SHA-256, so answers show which file produced them.
fn variant_of(weights: &[u8]) -> Vec<u8> {
    let n = u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
    let mut out = weights.to_vec();
    let header = std::str::from_utf8(&weights[8..8 + n]).unwrap();
    let at = 8 + header.find("\"created\":\"").unwrap() + "\"created\":\"".len();
    out[at] = if out[at] == b'1' { b'2' } else { b'1' };
    out
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes `bytes` as version `v` of the repository at `dir`, as the trainer publishes.
fn publish(dir: &Path, bytes: &[u8]) -> u64 {
    let (version, _) = mnist_api::repository::publish(dir, |file| {
        std::fs::write(file, bytes)?;
        Ok(())
    })
    .unwrap();
    version
}

struct Setup {
    repo: tempfile::TempDir,
    users: PathBuf,
    a: Vec<u8>,
    b: Vec<u8>,
}

/// A repository holding version 1 (the committed weights), and a users file where [`USER`]
/// is an admin and `bob` is not.
fn setup() -> Setup {
    let a = std::fs::read(common::weights_path()).unwrap();
    let b = variant_of(&a);
    let repo = tempfile::tempdir().unwrap();
    assert_eq!(publish(repo.path(), &a), 1);
    let users = repo.path().join("users.json");
    let mut u = Users::default();
    u.set_password(USER, PASSWORD).unwrap();
    u.set_password("bob", "bobs-password").unwrap();
    u.set_admin(USER, true);
    u.save(&users).unwrap();
    Setup { repo, users, a, b }
}

fn start(s: &Setup, extra: &[&str]) -> Server {
    let repo = s.repo.path().to_str().unwrap();
    Server::builder()
        .users_file(&s.users)
        .args(["--model-repository", repo])
        .args(extra.iter().copied())
        .start()
}

/// The `model` of a /predict answer: (version, sha256).
async fn served_by(server: &Server, token: &str) -> (String, String) {
    let res = server.predict(Some(token), vec![digit("seven")]).await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["prediction"], 7);
    let model = &body["model"];
    (
        model["version"].as_str().unwrap().to_string(),
        model["sha256"].as_str().unwrap().to_string(),
    )
}

async fn load(server: &Server, token: &str) -> reqwest::Response {
    server
        .client
        .post(server.url("/v2/repository/models/mnist/load"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// A /predict request whose headers are sent and whose body is not: `Expect: 100-continue`
/// makes the server say when its handler started reading, that is, once it has chosen the
/// weights it will answer with. Returns the connection and the body still to send.
async fn start_request_in_flight(server: &Server, token: &str) -> (tokio::net::TcpStream, Vec<u8>) {
    let boundary = "inflightboundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"7.png\"\r\n\
         Content-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&digit("seven"));
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let head = format!(
        "POST /predict HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\
         Expect: 100-continue\r\n\r\n",
        server.addr,
        body.len()
    );
    let mut conn = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut buf = [0u8; 256];
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed before 100 Continue");
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 100"), "{text}");
    (conn, body)
}

/// Sends the rest of the body and reads the JSON answer.
async fn finish_request(mut conn: tokio::net::TcpStream, body: Vec<u8>) -> serde_json::Value {
    conn.write_all(&body).await.unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline.into(), conn.read(&mut buf))
            .await
            .expect("no answer")
            .unwrap();
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some((head, json)) = text.split_once("\r\n\r\n") {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(json) {
                assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                return v;
            }
        }
        assert!(n > 0, "connection closed mid-answer: {text}");
    }
}

/// Polls `GET /model` until its version is `want`.
async fn wait_for_version(server: &Server, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body: serde_json::Value = server.get("/model").await.json().await.unwrap();
        if body["version"] == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still serving {}",
            body["version"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_reload_serves_new_requests_while_one_in_flight_keeps_its_weights() {
    let s = setup();
    let server = start(&s, &[]);
    let token = server.token().await;
    let (sha_a, sha_b) = (sha256(&s.a), sha256(&s.b));
    assert_eq!(
        served_by(&server, &token).await,
        ("1".into(), sha_a.clone())
    );

    let (in_flight, rest) = start_request_in_flight(&server, &token).await;
    assert_eq!(publish(s.repo.path(), &s.b), 2);
    let res = load(&server, &token).await;
    assert_eq!(res.status(), 200);
    let answer: serde_json::Value = res.json().await.unwrap();
    assert_eq!(answer["changed"], true);
    assert_eq!(answer["latest"], "2");
    assert_eq!(answer["loaded_versions"], serde_json::json!(["1", "2"]));

    // The reload completed: every new request gets B...
    for _ in 0..5 {
        assert_eq!(
            served_by(&server, &token).await,
            ("2".into(), sha_b.clone())
        );
    }
    // ...while the request that started before it finishes on A.
    let old = finish_request(in_flight, rest).await;
    assert_eq!(old["prediction"], 7);
    assert_eq!(old["model"]["version"], "1");
    assert_eq!(old["model"]["sha256"], sha_a.as_str());

    // The older version stays loaded and reachable by number.
    let v1 = server
        .client
        .get(server.url("/v2/models/mnist/versions/1/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(v1.status(), 200);

    // Nothing new on disk: a reload changes nothing.
    let again: serde_json::Value = load(&server, &token).await.json().await.unwrap();
    assert_eq!(again["changed"], false);
}

#[tokio::test]
async fn a_broken_new_version_leaves_the_served_model_untouched() {
    let s = setup();
    let server = start(&s, &[]);
    let token = server.token().await;
    let sha_a = sha256(&s.a);
    // Half a file, as a copy interrupted midway leaves it.
    let half = &s.a[..s.a.len() / 2];
    let version = publish(s.repo.path(), half);
    let res = load(&server, &token).await;
    let status = res.status();
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "load_failed");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains(&format!("version {version}")), "{error}");
    for _ in 0..3 {
        assert_eq!(
            served_by(&server, &token).await,
            ("1".into(), sha_a.clone())
        );
    }
    let metrics = server.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("model_reloads_total{outcome=\"failed\"} 1"),
        "{metrics}"
    );
    assert!(server.log().contains("model reload failed"));
}

#[tokio::test]
async fn only_admins_may_reload() {
    let s = setup();
    let server = start(&s, &[]);
    let bob = server.token_for("bob", "bobs-password").await;
    let res = load(&server, &bob).await;
    assert_eq!(res.status(), 403);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["code"], "forbidden", "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("--admin"),
        "{body}"
    );
    let res = server
        .client
        .post(server.url("/v2/repository/models/mnist/load"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn sighup_and_polling_reload_too() {
    let s = setup();
    let server = start(&s, &[]);
    publish(s.repo.path(), &s.b);
    // SAFETY: kill only sends a signal to the child we started.
    assert_eq!(unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) }, 0);
    wait_for_version(&server, "2").await;

    let polled = start(&s, &["--poll-secs", "1"]);
    wait_for_version(&polled, "2").await;
    publish(s.repo.path(), &s.a);
    wait_for_version(&polled, "3").await;
    let body: serde_json::Value = polled.get("/model").await.json().await.unwrap();
    assert_eq!(
        body["loaded_versions"],
        serde_json::json!([2, 3]),
        "two kept by default"
    );
    assert_eq!(body["sha256"], sha256(&s.a));
}
