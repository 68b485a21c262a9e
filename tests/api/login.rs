use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::common::{
    error_of, output_text, run, spawn_app, Endpoint, Server, MNIST_API, PASSWORD, SECRET, USER,
};

#[tokio::test]
async fn valid_credentials_get_a_bearer_token() {
    let app = spawn_app();
    let res = app
        .login_json(json!({"username": USER, "password": PASSWORD}))
        .await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(token.split('.').count(), 3);
}

#[tokio::test]
async fn missing_fields_get_the_original_message() {
    let app = spawn_app();
    for body in [
        json!({}),
        json!({"username": USER}),
        json!({"password": PASSWORD}),
        json!({"username": "", "password": PASSWORD}),
        json!({"username": USER, "password": null}),
        json!({"username": 5, "password": PASSWORD}),
        json!(["not", "an", "object"]),
    ] {
        let (status, code, msg) = error_of(app.login_json(body.clone()).await).await;
        assert_eq!(
            (status, msg.as_str()),
            (400, "Username and password required"),
            "{body}"
        );
        assert_eq!(code, "credentials_required");
    }
}

#[tokio::test]
async fn malformed_bodies_are_400_not_500() {
    let app = spawn_app();
    for (ct, body) in [
        ("application/json", "{not json"),
        ("text/plain", "username=alice"),
        ("application/json", ""),
    ] {
        let res = app
            .client
            .post(app.url("/login"))
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap();
        let (status, code, _) = error_of(res).await;
        assert_eq!((status, code.as_str()), (400, "invalid_json"), "{body}");
    }
}

#[tokio::test]
async fn wrong_password_and_unknown_user_look_the_same() {
    let app = spawn_app();
    let wrong = error_of(
        app.login_json(json!({"username": USER, "password": "nope"}))
            .await,
    )
    .await;
    let unknown = error_of(
        app.login_json(json!({"username": "mallory", "password": PASSWORD}))
            .await,
    )
    .await;
    assert_eq!(wrong, unknown);
    assert_eq!(wrong.0, 401);
}

#[tokio::test]
async fn oversized_login_body_is_413() {
    let app = spawn_app();
    let res = app
        .login_json(json!({"username": USER, "password": "x".repeat(100_000)}))
        .await;
    let (status, code, _) = error_of(res).await;
    assert_eq!((status, code.as_str()), (413, "body_too_large"));
}

// ---- Hostile clients (issue 10): throttling, revocation, token validation, caching. ----

/// A client whose connections come from `ip` (any 127.0.0.0/8 address is loopback on Linux),
/// so one test can be several clients.
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

async fn login_from(
    app: &Endpoint,
    client: &reqwest::Client,
    user: &str,
    password: &str,
) -> reqwest::Response {
    client
        .post(app.url("/login"))
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap()
}

/// Asserts a 429 `too_many_attempts` with a whole-seconds `Retry-After` of at least 1.
async fn assert_throttled(res: reqwest::Response) -> u64 {
    let retry_after = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (status, code, msg) = error_of(res).await;
    assert_eq!((status, code.as_str()), (429, "too_many_attempts"), "{msg}");
    let retry_after = retry_after.expect("429 carries Retry-After in seconds");
    assert!(retry_after >= 1, "{retry_after}");
    retry_after
}

#[tokio::test]
async fn failed_logins_for_one_username_are_throttled_from_any_address() {
    let app = Server::builder()
        .args([
            "--login-attempts-per-user",
            "3",
            "--login-attempts-per-address",
            "1000",
        ])
        .start();
    let here = client_from("127.0.0.1");
    for _ in 0..3 {
        let res = login_from(&app, &here, USER, "wrong").await;
        assert_eq!(error_of(res).await.0, 401);
    }
    // 3 attempts per 300 s refill one every 100 s.
    let wait = assert_throttled(login_from(&app, &here, USER, "wrong").await).await;
    assert!(wait <= 100, "{wait}");
    // Another address is throttled for this username too, even with the right password:
    // nothing is checked while throttled.
    let elsewhere = client_from("127.0.0.2");
    assert_throttled(login_from(&app, &elsewhere, USER, PASSWORD).await).await;
    // Another username from the first address is not.
    let res = login_from(&app, &here, "mallory", "wrong").await;
    assert_eq!(error_of(res).await.0, 401);
}

#[tokio::test]
async fn failed_logins_from_one_address_are_throttled_for_any_username() {
    let app = Server::builder()
        .args([
            "--login-attempts-per-user",
            "1000",
            "--login-attempts-per-address",
            "3",
        ])
        .start();
    let attacker = client_from("127.0.0.3");
    for i in 0..3 {
        let res = login_from(&app, &attacker, &format!("guess{i}"), "wrong").await;
        assert_eq!(error_of(res).await.0, 401);
    }
    assert_throttled(login_from(&app, &attacker, "guess-new", "wrong").await).await;
    assert_throttled(login_from(&app, &attacker, USER, PASSWORD).await).await;
    // Someone else, elsewhere, logs in as usual while that address is throttled.
    let res = login_from(&app, &client_from("127.0.0.4"), USER, PASSWORD).await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn a_user_logs_in_from_elsewhere_while_another_user_and_address_are_throttled() {
    let app = Server::builder()
        .args([
            "--login-attempts-per-user",
            "2",
            "--login-attempts-per-address",
            "2",
        ])
        .start();
    let attacker = client_from("127.0.0.5");
    for _ in 0..2 {
        let res = login_from(&app, &attacker, "mallory", "wrong").await;
        assert_eq!(error_of(res).await.0, 401);
    }
    assert_throttled(login_from(&app, &attacker, "mallory", "wrong").await).await;
    assert_throttled(login_from(&app, &client_from("127.0.0.6"), "mallory", "x").await).await;
    let res = login_from(&app, &client_from("127.0.0.7"), USER, PASSWORD).await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(body["access_token"].is_string());
}

#[tokio::test]
async fn the_token_response_must_not_be_cached() {
    let app = spawn_app();
    let res = app
        .login_json(json!({"username": USER, "password": PASSWORD}))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert_eq!(res.headers()["pragma"], "no-cache");
}

#[tokio::test]
async fn the_login_schema_refuses_empty_credentials() {
    let app = spawn_app();
    let doc: serde_json::Value = app.get("/openapi.json").await.json().await.unwrap();
    let props = &doc["components"]["schemas"]["LoginRequest"]["properties"];
    assert_eq!(props["username"]["minLength"], 1, "{props}");
    assert_eq!(props["password"]["minLength"], 1, "{props}");
    let login = &doc["paths"]["/login"]["post"]["responses"];
    assert!(login.get("429").is_some(), "{login}");
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The claims of a token the server issued.
fn claims_of(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// A token signed with the test server's secret, with the given header and claims.
fn forge(header: serde_json::Value, claims: serde_json::Value) -> String {
    use jsonwebtoken::{crypto, Algorithm, EncodingKey};
    let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let sig = crypto::sign(
        input.as_bytes(),
        &EncodingKey::from_secret(SECRET),
        Algorithm::HS256,
    )
    .unwrap();
    format!("{input}.{sig}")
}

/// Status and code of `/predict` with `token` and an empty form: 400 `bad_multipart` means
/// the token was accepted and the body looked at.
async fn predict_with(app: &Endpoint, token: &str) -> (u16, String) {
    let res = app
        .client
        .post(app.url("/predict"))
        .bearer_auth(token)
        .multipart(reqwest::multipart::Form::new())
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_of(res).await;
    (status, code)
}

#[tokio::test]
async fn tokens_not_yet_valid_with_critical_extensions_or_for_no_user_are_refused() {
    let app = spawn_app();
    let genuine = claims_of(&app.token().await);
    let header = json!({"alg": "HS256", "typ": "JWT"});
    // Control: the server's own claims, re-signed, get through.
    assert_eq!(
        predict_with(&app, &forge(header.clone(), genuine.clone())).await,
        (400, "bad_multipart".to_string())
    );

    let mut not_yet = genuine.clone();
    not_yet["nbf"] = json!(genuine["iat"].as_u64().unwrap() + 600);
    assert_eq!(
        predict_with(&app, &forge(header.clone(), not_yet)).await,
        (401, "invalid_token".to_string())
    );

    let crit = json!({"alg": "HS256", "typ": "JWT", "crit": ["x-must-check"], "x-must-check": 1});
    assert_eq!(
        predict_with(&app, &forge(crit, genuine.clone())).await,
        (401, "invalid_token".to_string())
    );

    let mut nobody = genuine.clone();
    nobody["sub"] = json!("nobody-of-that-name");
    assert_eq!(
        predict_with(&app, &forge(header, nobody)).await,
        (401, "token_revoked".to_string())
    );
}

/// A server on its own users file, which the test then changes with the CLI.
fn spawn_with_users_file() -> Server {
    Server::builder().user("bob", "bobs-password").start()
}

/// `mnist-api --users FILE user ARGS…` with `stdin`, as an administrator would run it.
fn cli(users: &Path, args: &[&str], stdin: &str) {
    let users = users.to_str().unwrap();
    let argv = [&["--users", users, "user"], args].concat();
    let out = run(MNIST_API, &argv, stdin);
    assert!(out.status.success(), "{}", output_text(&out));
}

/// Polls until `/predict` with `token` gives `want`; the server looks at the users file at
/// most every 250 ms, so the change shows within a fraction of a second.
async fn eventually(app: &Endpoint, token: &str, want: (u16, &str)) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = predict_with(app, token).await;
        if (got.0, got.1.as_str()) == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {got:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn removing_a_user_revokes_their_tokens_without_a_restart() {
    let s = spawn_with_users_file();
    let bob = s.token_for("bob", "bobs-password").await;
    let alice = s.token_for(USER, PASSWORD).await;
    assert_eq!(predict_with(&s, &bob).await.0, 400);

    cli(s.users_file(), &["remove", "bob"], "");
    eventually(&s, &bob, (401, "token_revoked")).await;
    let res = login_from(&s, &s.client, "bob", "bobs-password").await;
    assert_eq!(error_of(res).await.0, 401);
    // Everyone else is untouched.
    assert_eq!(predict_with(&s, &alice).await.0, 400);
}

#[tokio::test]
async fn a_password_change_revokes_older_tokens_and_the_new_password_works() {
    let s = spawn_with_users_file();
    let old = s.token_for(USER, PASSWORD).await;
    cli(s.users_file(), &["passwd", USER], "a-brand-new-password\n");
    eventually(&s, &old, (401, "token_revoked")).await;

    let res = login_from(&s, &s.client, USER, PASSWORD).await;
    assert_eq!(error_of(res).await.0, 401, "old password refused");
    let new = s.token_for(USER, "a-brand-new-password").await;
    assert_eq!(predict_with(&s, &new).await.0, 400);
}

#[tokio::test]
async fn a_users_file_turned_invalid_keeps_the_last_good_users() {
    let s = spawn_with_users_file();
    let token = s.token_for(USER, PASSWORD).await;
    std::fs::write(s.users_file(), "{not json").unwrap();
    // Give the server several chances to look at the broken file.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(predict_with(&s, &token).await.0, 400);
    let res = login_from(&s, &s.client, "bob", "bobs-password").await;
    assert_eq!(res.status(), 200);
}
