//! Black-box tests of the web page: the real server on 127.0.0.1:0 serves the page and its
//! assets with the right types and caching. The page's behaviour is tested in a real browser
//! by `scripts/browser-test.sh`.

mod common;

use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};

use common::Server;

/// A server without users (`--no-auth`: the page itself needs none).
fn spawn() -> Server {
    Server::builder()
        .no_auth()
        .args(["--jaeger-ui-url", "http://jaeger.test:16686/"])
        .start()
}

fn header(res: &reqwest::Response, name: impl reqwest::header::AsHeaderName) -> &str {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

#[tokio::test]
async fn the_page_is_html_with_a_canvas_and_the_jaeger_url() {
    let app = spawn();
    let res = app.get("/").await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, CONTENT_TYPE), "text/html; charset=utf-8");
    assert_eq!(header(&res, CACHE_CONTROL), "no-cache");
    assert!(header(&res, "content-security-policy").contains("script-src 'self'"));
    let html = res.text().await.unwrap();
    assert!(html.contains(r#"<canvas id="pad""#));
    assert!(html.contains(r#"<meta name="jaeger-ui-url" content="http://jaeger.test:16686">"#));
}

#[tokio::test]
async fn the_assets_are_served_with_their_content_types() {
    let app = spawn();
    for (path, content_type, needle) in [
        (
            "/assets/app.js",
            "text/javascript; charset=utf-8",
            "/predict",
        ),
        ("/assets/style.css", "text/css; charset=utf-8", "#pad"),
    ] {
        let res = app.get(path).await;
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(header(&res, CONTENT_TYPE), content_type, "{path}");
        assert_eq!(header(&res, CACHE_CONTROL), "no-cache", "{path}");
        assert_eq!(header(&res, "x-content-type-options"), "nosniff", "{path}");
        assert!(res.text().await.unwrap().contains(needle), "{path}");
    }
}

#[tokio::test]
async fn a_revalidation_with_the_same_etag_is_an_empty_304() {
    let app = spawn();
    let first = app.get("/assets/app.js").await;
    let etag = header(&first, ETAG).to_string();
    assert!(!etag.is_empty());
    let res = app
        .client
        .get(app.url("/assets/app.js"))
        .header(IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    assert_eq!(header(&res, ETAG), etag);
    assert!(res.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_unknown_asset_is_the_usual_json_404() {
    let app = spawn();
    let res = app.get("/assets/nope.js").await;
    assert_eq!(res.status(), 404);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["code"], "not_found");
}
