use serde_json::json;

use crate::helpers::{error_of, spawn_app, PASSWORD, USER};

#[tokio::test]
async fn valid_credentials_get_a_bearer_token() {
    let app = spawn_app().await;
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
    let app = spawn_app().await;
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
    let app = spawn_app().await;
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
    let app = spawn_app().await;
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
    let app = spawn_app().await;
    let res = app
        .login_json(json!({"username": USER, "password": "x".repeat(100_000)}))
        .await;
    let (status, code, _) = error_of(res).await;
    assert_eq!((status, code.as_str()), (413, "body_too_large"));
}
