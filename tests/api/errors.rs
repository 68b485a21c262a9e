//! Every bad request gets its status and the one JSON error shape, and the server lives on.

use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use mnist_api::auth::Claims;
use reqwest::multipart::{Form, Part};

use crate::common::{digit, error_of, png, spawn_app, Endpoint, Server, SECRET};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc.sum().to_be_bytes());
}

/// A grey PNG that declares `w`×`h` pixels but carries only a kilobyte of compressed zeros:
/// the shape of a decompression bomb.
fn png_bomb(w: u32, h: u32) -> Vec<u8> {
    use std::io::Write;
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&vec![0u8; 1 << 20]).unwrap();
    let idat = z.finish().unwrap();
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &idat);
    chunk(&mut out, b"IEND", b"");
    out
}

async fn assert_alive(app: &Endpoint) {
    assert_eq!(app.get("/health").await.status(), 200);
}

async fn predict_error(app: &Endpoint, files: Vec<Vec<u8>>) -> (u16, String, String) {
    let token = app.token().await;
    error_of(app.predict(Some(&token), files).await).await
}

#[tokio::test]
async fn unknown_route_is_404_and_wrong_method_is_405() {
    let app = spawn_app();
    let (s, code, _) = error_of(app.get("/nope").await).await;
    assert_eq!((s, code.as_str()), (404, "not_found"));
    let (s, code, _) = error_of(app.get("/predict").await).await;
    assert_eq!((s, code.as_str()), (405, "method_not_allowed"));
    let res = app.client.delete(app.url("/health")).send().await.unwrap();
    let (s, _, _) = error_of(res).await;
    assert_eq!(s, 405);
    assert_alive(&app).await;
}

#[tokio::test]
async fn a_405_names_the_methods_its_route_accepts_and_head_health_works() {
    let app = spawn_app();
    for (method, path, allow) in [
        (reqwest::Method::GET, "/predict", "POST"),
        (reqwest::Method::GET, "/login", "POST"),
        (reqwest::Method::DELETE, "/health", "GET, HEAD"),
        (reqwest::Method::POST, "/model", "GET"),
        (reqwest::Method::PUT, "/metrics", "GET"),
    ] {
        let res = app
            .client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405, "{method} {path}");
        assert_eq!(res.headers()["allow"], allow, "{method} {path}");
    }
    let head = app.client.head(app.url("/health")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert!(head.bytes().await.unwrap().is_empty(), "HEAD has no body");
}

#[tokio::test]
async fn predict_without_a_valid_token_is_401_with_a_challenge() {
    let app = spawn_app();
    let res = app.predict(None, vec![digit("one")]).await;
    assert_eq!(
        res.headers()["www-authenticate"].to_str().unwrap(),
        "Bearer"
    );
    let (s, code, _) = error_of(res).await;
    assert_eq!((s, code.as_str()), (401, "missing_token"));

    let claims = |iat: u64, exp: u64| Claims {
        sub: "alice".into(),
        iat,
        exp,
    };
    let key = EncodingKey::from_secret(SECRET);
    let good = app.token().await;
    let mut tampered = good.clone();
    // Flip a character of the signature.
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let expired = encode(
        &Header::new(Algorithm::HS256),
        &claims(now() - 7200, now() - 3600),
        &key,
    )
    .unwrap();
    let other_alg = encode(
        &Header::new(Algorithm::HS384),
        &claims(now(), now() + 600),
        &key,
    )
    .unwrap();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let alg_none = format!(
        "{}.{}.",
        b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(serde_json::to_vec(&claims(now(), now() + 600)).unwrap())
    );
    for (token, want) in [
        (tampered.as_str(), "invalid_token"),
        (expired.as_str(), "token_expired"),
        (other_alg.as_str(), "invalid_token"),
        (alg_none.as_str(), "invalid_token"),
        ("not-a-jwt", "invalid_token"),
    ] {
        let res = app.predict(Some(token), vec![digit("one")]).await;
        assert!(res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
        let (s, code, _) = error_of(res).await;
        assert_eq!((s, code.as_str()), (401, want), "{token}");
    }
    assert_eq!(
        app.predict(Some(&good), vec![digit("one")]).await.status(),
        200
    );
}

#[tokio::test]
async fn bodies_that_are_not_multipart_are_415() {
    let app = spawn_app();
    let token = app.token().await;
    let res = app
        .client
        .post(app.url("/predict"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"file": "x"}))
        .send()
        .await
        .unwrap();
    let (s, code, msg) = error_of(res).await;
    assert_eq!((s, code.as_str()), (415, "not_multipart"));
    assert!(msg.contains("application/json"), "{msg}");
    assert_alive(&app).await;
}

#[tokio::test]
async fn form_without_a_file_field_is_400() {
    let app = spawn_app();
    let token = app.token().await;
    let form = Form::new().part("image", Part::bytes(digit("one")).file_name("d.png"));
    let res = app
        .client
        .post(app.url("/predict"))
        .bearer_auth(&token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let (s, code, _) = error_of(res).await;
    assert_eq!((s, code.as_str()), (400, "missing_file"));
}

#[tokio::test]
async fn unusable_images_get_precise_errors() {
    let app = spawn_app();
    let good = digit("one");
    let blank = png(image::GrayImage::from_pixel(50, 50, image::Luma([255])));
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"this is not an image".to_vec(), 415, "unsupported_format"),
        (
            b"%PDF-1.4 not supported".to_vec(),
            415,
            "unsupported_format",
        ),
        (good[..good.len() / 2].to_vec(), 422, "invalid_image"),
        (Vec::new(), 422, "empty_file"),
        (blank, 422, "blank_image"),
        (b"P5\n0 0\n255\n".to_vec(), 422, "zero_sized_image"),
        (b"P5\n0 28\n255\n".to_vec(), 422, "zero_sized_image"),
        // The PNG decoder itself refuses zero dimensions in the header.
        (png_bomb(0, 0), 422, "invalid_image"),
        (png_bomb(100_000, 100_000), 413, "image_too_large"),
        (png_bomb(5000, 10), 413, "image_too_large"),
    ];
    for (bytes, status, want) in cases {
        let (s, code, msg) = predict_error(&app, vec![bytes]).await;
        assert_eq!((s, code.as_str()), (status, want), "{msg}");
        assert!(msg.starts_with("file 0 (digit0): "), "{msg}");
    }
    // The failing file is named by position when it is not the first.
    let (s, _, msg) = predict_error(&app, vec![digit("one"), b"junk".to_vec()]).await;
    assert_eq!(s, 415);
    assert!(msg.starts_with("file 1 "), "{msg}");
    assert_alive(&app).await;
}

#[tokio::test]
async fn oversized_bodies_are_413_declared_or_streamed() {
    // The server answers 413 before the body has arrived; it must still reach the client,
    // not be destroyed by the reset a close with unread bytes causes (see src/linger.rs).
    let app = Server::builder()
        .args(["--max-body-bytes", "100000"])
        .start();
    let token = app.token().await;
    let big = vec![7u8; 200_000];
    let (s, code, _) = error_of(app.predict(Some(&token), vec![big.clone()]).await).await;
    assert_eq!((s, code.as_str()), (413, "body_too_large"));

    // Chunked, no Content-Length: the limit must hold while streaming.
    let boundary = "XyZ";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\n"
    );
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = std::iter::once(Ok(head.into_bytes()))
        .chain((0..40).map(|_| Ok(vec![1u8; 10_000])))
        .chain(std::iter::once(Ok(
            format!("\r\n--{boundary}--\r\n").into_bytes()
        )))
        .collect();
    let res = app
        .client
        .post(app.url("/predict"))
        .bearer_auth(&token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    let (s, code, _) = error_of(res).await;
    assert_eq!((s, code.as_str()), (413, "body_too_large"));
    assert_alive(&app).await;
}

#[tokio::test]
async fn too_many_files_is_413() {
    let app = Server::builder().args(["--max-files", "3"]).start();
    let (s, code, _) = predict_error(&app, vec![digit("one"); 4]).await;
    assert_eq!((s, code.as_str()), (413, "too_many_files"));
    let token = app.token().await;
    assert_eq!(
        app.predict(Some(&token), vec![digit("one"); 3])
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn malformed_multipart_is_400() {
    let app = spawn_app();
    let token = app.token().await;
    let res = app
        .client
        .post(app.url("/predict"))
        .bearer_auth(&token)
        .header("content-type", "multipart/form-data; boundary=abc")
        .body("this is not multipart at all")
        .send()
        .await
        .unwrap();
    let (s, code, _) = error_of(res).await;
    assert_eq!(s, 400, "{code}");
    let res = app
        .client
        .post(app.url("/predict"))
        .bearer_auth(&token)
        .header("content-type", "multipart/form-data")
        .body("no boundary")
        .send()
        .await
        .unwrap();
    let (s, code, _) = error_of(res).await;
    assert_eq!((s, code.as_str()), (400, "bad_multipart"));
    assert_alive(&app).await;
}
