use crate::common::{digit, spawn_app, Server};

/// Sum of the samples of `series` (a metric name, optionally with some labels) in the scrape.
fn total(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|lb| l.contains(lb)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn scrape(app: &Server) -> String {
    let res = app.get("/metrics").await;
    assert_eq!(res.status(), 200);
    let ct = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    res.text().await.unwrap()
}

#[tokio::test]
async fn metrics_move_with_traffic() {
    let app = spawn_app();
    let before = scrape(&app).await;
    let token = app.token().await;
    let res = app.predict(Some(&token), vec![digit("one")]).await;
    assert_eq!(res.status(), 200);
    assert_eq!(app.get("/no-such-page").await.status(), 404);
    let after = scrape(&app).await;

    let moved = |name: &str, labels: &[&str]| {
        let (a, b) = (total(&before, name, labels), total(&after, name, labels));
        assert!(b > a, "{name} {labels:?} did not move: {a} -> {b}\n{after}");
    };
    let predict_ok = [r#"route="/predict""#, r#"method="POST""#, r#"status="200""#];
    moved("http_requests_total", &predict_ok);
    moved(
        "http_requests_total",
        &[r#"route="/login""#, r#"status="200""#],
    );
    moved(
        "http_requests_total",
        &[r#"route="other""#, r#"status="404""#],
    );
    moved(
        "http_request_duration_seconds_count",
        &[r#"route="/predict""#],
    );
    moved("predictions_total", &[]);
    moved("inference_batch_size_count", &[]);
    moved("inference_forward_seconds_count", &[]);
    assert!(
        after.contains("# TYPE otel_spans_dropped_total counter"),
        "{after}"
    );
    assert!(
        !after.contains("no-such-page"),
        "unknown paths must not become label values"
    );
}
