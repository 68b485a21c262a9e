//! Span trees and attributes, read back from the SDK's in-memory exporter.

use opentelemetry::trace::{SpanKind, Status, TraceId};
use opentelemetry::Value;
use serde_json::json;

use crate::common::{digit, digit_image, mnist_test, png, Server, PASSWORD, USER};
use crate::helpers::{attrs, exporter, one, spans_of, trace_id_of};

#[tokio::test]
async fn health_has_a_server_span_with_a_health_check_child() {
    exporter();
    let app = Server::builder().start_in_process().await;
    let res = app
        .client
        .get(app.url("/health"))
        .header("user-agent", "span-test/1.0")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let spans = spans_of(trace_id_of(&res)).await;
    let server = one(&spans, "GET /health");
    assert_eq!(server.span_kind, SpanKind::Server);
    let a = attrs(server);
    assert_eq!(a["http.request.method"], Value::from("GET"));
    assert_eq!(a["http.route"], Value::from("/health"));
    assert_eq!(a["url.path"], Value::from("/health"));
    assert_eq!(a["http.response.status_code"], Value::I64(200));
    assert_eq!(a["server.address"], Value::from("127.0.0.1"));
    assert_eq!(a["server.port"], Value::I64(app.addr.port() as i64));
    assert_eq!(a["client.address"], Value::from("127.0.0.1"));
    assert_eq!(a["user_agent.original"], Value::from("span-test/1.0"));
    let check = one(&spans, "health-check");
    assert_eq!(check.parent_span_id, server.span_context.span_id());
    assert_eq!(
        server.resource.get("service.name".into()),
        Some(Value::from("mnist-api"))
    );
}

#[tokio::test]
async fn login_span_names_the_user_and_never_the_secrets() {
    exporter();
    let app = Server::builder().start_in_process().await;
    let res = app
        .login_json(json!({"username": USER, "password": PASSWORD}))
        .await;
    let trace = trace_id_of(&res);
    let token = res.json::<serde_json::Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let spans = spans_of(trace).await;
    let server = one(&spans, "POST /login");
    let login = one(&spans, "login");
    assert_eq!(login.parent_span_id, server.span_context.span_id());
    assert_eq!(attrs(login)["enduser.id"], Value::from(USER));
    let everything = format!("{spans:?}");
    assert!(!everything.contains(PASSWORD));
    assert!(!everything.contains(&token));
}

#[tokio::test]
async fn prediction_span_carries_the_answer_as_typed_attributes() {
    exporter();
    let app = Server::builder().start_in_process().await;
    let token = app.token().await;
    let Some(test) = mnist_test() else {
        return;
    };
    let res = app
        .predict(Some(&token), vec![png(digit_image(test, 0))])
        .await;
    assert_eq!(res.status(), 200);
    let trace = trace_id_of(&res);
    let body: serde_json::Value = res.json().await.unwrap();
    let spans = spans_of(trace).await;
    let server = one(&spans, "POST /predict");
    let decode = one(&spans, "decode");
    let prediction = one(&spans, "prediction");
    assert_eq!(decode.parent_span_id, server.span_context.span_id());
    assert_eq!(prediction.parent_span_id, server.span_context.span_id());
    let d = attrs(decode);
    assert_eq!(d["image.format"], Value::from("png"));
    assert_eq!(d["image.width"], Value::I64(28));
    assert_eq!(d["image.inverted"], Value::Bool(false));
    let p = attrs(prediction);
    assert_eq!(
        p["prediction"],
        Value::I64(body["prediction"].as_i64().unwrap())
    );
    match &p["probability"] {
        Value::F64(v) => assert_eq!(
            *v as f32 as f64,
            body["probability"].as_f64().unwrap() as f32 as f64
        ),
        other => panic!("probability is not a float: {other:?}"),
    }
    assert_eq!(
        p["model.sha256"],
        Value::from(body["model"]["sha256"].as_str().unwrap().to_string())
    );
    assert!(matches!(p["inference.time_ms"], Value::F64(_)));
}

#[tokio::test]
async fn several_images_get_one_prediction_span_each() {
    exporter();
    let Some(test) = mnist_test() else {
        return;
    };
    let app = Server::builder().start_in_process().await;
    let token = app.token().await;
    let files = (0..3).map(|i| png(digit_image(test, i))).collect();
    let res = app.predict(Some(&token), files).await;
    let trace = trace_id_of(&res);
    let body: serde_json::Value = res.json().await.unwrap();
    let spans = spans_of(trace).await;
    let mut predictions: Vec<_> = spans.iter().filter(|s| s.name == "prediction").collect();
    assert_eq!(predictions.len(), 3);
    predictions.sort_by_key(|s| match attrs(s)["image.index"] {
        Value::I64(i) => i,
        _ => panic!("no image.index"),
    });
    for (span, answer) in predictions
        .iter()
        .zip(body["predictions"].as_array().unwrap())
    {
        assert_eq!(
            attrs(span)["prediction"],
            Value::I64(answer["prediction"].as_i64().unwrap())
        );
    }
    assert_eq!(spans.iter().filter(|s| s.name == "decode").count(), 3);
}

#[tokio::test]
async fn errors_are_recorded_on_the_spans() {
    exporter();
    let app = Server::builder().start_in_process().await;
    let token = app.token().await;
    let blank = png(image::GrayImage::from_pixel(30, 30, image::Luma([255])));
    let res = app.predict(Some(&token), vec![blank]).await;
    assert_eq!(res.status(), 422);
    let spans = spans_of(trace_id_of(&res)).await;
    let server = one(&spans, "POST /predict");
    let a = attrs(server);
    assert_eq!(a["http.response.status_code"], Value::I64(422));
    assert_eq!(a["error.type"], Value::from("blank_image"));
    // 4xx is the client's fault: the server span stays unset, per the HTTP conventions...
    assert_eq!(server.status, Status::Unset);
    let exception = server
        .events
        .iter()
        .find(|e| e.name == "exception")
        .expect("exception event on the server span");
    let message = exception
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == "exception.message")
        .unwrap();
    assert!(message.value.as_str().contains("image is blank"));
    // ...while the decode span, where it failed, is marked as an error.
    let decode = one(&spans, "decode");
    assert!(
        matches!(decode.status, Status::Error { .. }),
        "{:?}",
        decode.status
    );

    let res = app.predict(None, vec![]).await;
    assert_eq!(res.status(), 401);
    let spans = spans_of(trace_id_of(&res)).await;
    assert_eq!(
        attrs(one(&spans, "POST /predict"))["error.type"],
        Value::from("missing_token")
    );
}

#[tokio::test]
async fn callers_trace_context_is_joined_and_echoed() {
    exporter();
    let app = Server::builder().start_in_process().await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let res = app
        .client
        .get(app.url("/health"))
        .header("traceparent", format!("00-{trace}-{parent}-01"))
        .header("tracestate", "vendor=value")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-trace-id"], trace);
    let echoed = res.headers()["traceresponse"].to_str().unwrap().to_string();
    assert!(echoed.starts_with(&format!("00-{trace}-")), "{echoed}");
    let spans = spans_of(TraceId::from_hex(trace).unwrap()).await;
    let server = one(&spans, "GET /health");
    assert_eq!(format!("{}", server.parent_span_id), parent);
    assert!(echoed.contains(&server.span_context.span_id().to_string()));
}

#[tokio::test]
async fn unknown_paths_do_not_become_span_names() {
    exporter();
    let app = Server::builder().start_in_process().await;
    let res = app.get("/admin/../etc/passwd-12345").await;
    assert_eq!(res.status(), 404);
    let spans = spans_of(trace_id_of(&res)).await;
    let server = one(&spans, "GET");
    assert!(!attrs(server).contains_key("http.route"));
}

/// The rejection handler records the error `code`; the status must not overwrite it, or a
/// dashboard cannot tell an overload from a crash (both 5xx).
#[tokio::test]
async fn an_overloaded_503_keeps_its_error_code() {
    exporter();
    // One worker taking one image at a time behind a queue of one: of 64 images sent at
    // once, all but the first couple find the queue full.
    let app = Server::builder()
        .no_auth()
        .args(["--workers", "1", "--max-batch", "1", "--queue", "1"])
        .start_in_process()
        .await;
    let res = app.predict(None, vec![digit("one"); 64]).await;
    assert_eq!(res.status(), 503);
    let spans = spans_of(trace_id_of(&res)).await;
    let server = one(&spans, "POST /predict");
    let a = attrs(server);
    assert_eq!(a["http.response.status_code"], Value::I64(503));
    assert_eq!(a["error.type"], Value::from("overloaded"));
    assert!(
        matches!(server.status, Status::Error { .. }),
        "{:?}",
        server.status
    );
    // Recorded once: a second `error.type` would be exported as a duplicate tag.
    assert_eq!(
        server
            .attributes
            .iter()
            .filter(|kv| kv.key.as_str() == "error.type")
            .count(),
        1
    );
}

/// Client-supplied strings are cut to the attribute value limit where the span is made, so
/// log lines carrying the span are bounded too.
#[tokio::test]
async fn client_supplied_span_attributes_are_clipped() {
    exporter();
    let app = Server::builder().start_in_process().await;
    let long = "x".repeat(10_000);
    let res = app
        .client
        .get(app.url(&format!("/{long}")))
        .header("user-agent", format!("ua-{long}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let spans = spans_of(trace_id_of(&res)).await;
    let a = attrs(one(&spans, "GET"));
    let limit = mnist_api::clip::DEFAULT_VALUE_LIMIT;
    assert_eq!(a["user_agent.original"].as_str().len(), limit);
    assert!(a["user_agent.original"].as_str().starts_with("ua-xxx"));
    assert_eq!(a["url.path"].as_str().len(), limit);
    assert!(a["url.path"].as_str().starts_with("/xxx"));
}

#[tokio::test]
async fn inference_protocol_requests_get_the_same_spans_under_a_templated_route() {
    exporter();
    let app = Server::builder().start_in_process().await;
    let token = app.token().await;
    let files = [digit("seven"), digit("two")];
    let sizes: usize = files.iter().map(|f| f.len() + 4).sum();
    let header = json!({
        "id": "span-test",
        "inputs": [{"name": "image", "shape": [2], "datatype": "BYTES",
                    "parameters": {"binary_data_size": sizes}}],
        "outputs": [{"name": "prediction"}]
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    for f in &files {
        body.extend_from_slice(&(f.len() as u32).to_le_bytes());
        body.extend_from_slice(f);
    }
    let res = app
        .client
        .post(app.url("/v2/models/mnist/versions/1/infer"))
        .bearer_auth(&token)
        .header("inference-header-content-length", header.len())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let trace = trace_id_of(&res);
    let answer: serde_json::Value = res.json().await.unwrap();
    assert_eq!(answer["outputs"][0]["data"], json!([7, 2]));
    let spans = spans_of(trace).await;
    let server = one(&spans, "POST /v2/models/{model}/versions/{version}/infer");
    let a = attrs(server);
    assert_eq!(
        a["http.route"],
        Value::from("/v2/models/{model}/versions/{version}/infer")
    );
    assert_eq!(
        a["url.path"],
        Value::from("/v2/models/mnist/versions/1/infer")
    );
    assert_eq!(spans.iter().filter(|s| s.name == "decode").count(), 2);
    let mut predictions: Vec<_> = spans.iter().filter(|s| s.name == "prediction").collect();
    predictions.sort_by_key(|s| match attrs(s)["image.index"] {
        Value::I64(i) => i,
        _ => panic!("no image.index"),
    });
    for (span, digit) in predictions.iter().zip([7, 2]) {
        let p = attrs(span);
        assert_eq!(span.parent_span_id, server.span_context.span_id());
        assert_eq!(p["prediction"], Value::I64(digit));
        assert!(matches!(p["probability"], Value::F64(_)));
        assert_eq!(p["model.version"], Value::from("1"));
    }
}
