use crate::common::{spawn_app, Server};

#[tokio::test]
async fn health_answers_ok() {
    let app = spawn_app();
    let res = app.get("/health").await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"status": "ok"})
    );
}

#[tokio::test]
async fn model_endpoint_describes_the_loaded_weights() {
    let app = spawn_app();
    let res = app.get("/model").await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["name"], "mnist");
    assert_eq!(body["version"], "1", "a single --weights file is version 1");
    assert_eq!(body["architecture"], mnist_api::model::ARCHITECTURE);
    assert_eq!(body["loaded_versions"], serde_json::json!([1]));
    assert_eq!(body["sha256"].as_str().unwrap().len(), 64);
    assert!(body["metadata"]["test_accuracy"].as_f64().unwrap() >= 0.993);
    assert!(body["metadata"]["created"].is_string());
}

#[tokio::test]
async fn model_endpoint_publishes_the_request_limits() {
    let app = Server::builder()
        .args([
            "--max-files",
            "3",
            "--max-body-bytes",
            "5000",
            "--max-image-side",
            "99",
        ])
        .start();
    let body: serde_json::Value = app.get("/model").await.json().await.unwrap();
    assert_eq!(
        body["limits"],
        serde_json::json!({"max_files": 3, "max_body_bytes": 5000, "max_image_side": 99})
    );
}
