//! The real server binary against images crafted to cost it the most memory, and against
//! weights that would make it answer garbage.
//!
//! Peak RSS is read from the kernel (`VmHWM` in /proc/PID/status), which is why the server runs
//! as its own process here rather than inside the test.

mod common;

use std::path::{Path, PathBuf};

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ColorType, ExtendedColorType, ImageEncoder, ImageFormat};
use mnist_api::config::DEFAULT_DECODE_MEMORY;
use mnist_api::preprocess::{decode_cost, DEFAULT_MAX_IMAGE_MEMORY};

use common::{output_text, run, weights_path, Endpoint, Server, TRAIN};

const MIB: u64 = 1024 * 1024;

/// Peak resident memory of `server` so far, bytes.
fn peak_rss(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("no VmHWM in /proc/PID/status");
    kib * 1024
}

/// A PNG of `width`x`height` white paper with one thick black stroke, in `color`: it compresses
/// to a few dozen KB whatever its decoded size.
fn digit_png(width: u32, height: u32, color: ColorType) -> Vec<u8> {
    let channels = color.channel_count() as usize;
    let sample = color.bytes_per_pixel() as usize / channels;
    let row = width as usize * color.bytes_per_pixel() as usize;
    let mut pixels = vec![0xffu8; row * height as usize];
    let (x0, x1) = (width as usize * 45 / 100, width as usize * 55 / 100);
    for y in height as usize / 5..height as usize * 4 / 5 {
        for x in x0..x1 {
            let px = &mut pixels[y * row + x * channels * sample..][..channels * sample];
            // Colour channels black; alpha (the last channel, if any) stays opaque.
            let ink = if color.has_alpha() {
                (channels - 1) * sample
            } else {
                channels * sample
            };
            px[..ink].fill(0);
        }
    }
    let mut out = Vec::new();
    PngEncoder::new_with_quality(&mut out, CompressionType::Best, FilterType::Up)
        .write_image(&pixels, width, height, ExtendedColorType::from(color))
        .unwrap();
    out
}

/// The costliest image the default limits accept: 8-bit RGBA (the layout with the most bytes
/// per pixel that a full-width image can have), 4096 wide, as tall as the per-image limit
/// allows.
fn worst_case_png() -> (Vec<u8>, u64) {
    let cost =
        |h: u32, file: u64| decode_cost(ImageFormat::Png, 4096, h, ColorType::Rgba8, 4, file);
    let height = (1..=4096u32)
        .rev()
        .find(|&h| cost(h, 0) <= DEFAULT_MAX_IMAGE_MEMORY)
        .unwrap();
    let png = digit_png(4096, height, ColorType::Rgba8);
    (png, cost(height, 0))
}

async fn post(server: &Endpoint, png: Vec<u8>) -> (u16, Option<String>, String) {
    let res = server.predict(None, vec![png]).await;
    let status = res.status().as_u16();
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, retry, res.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_worst_case_images_keep_the_server_under_256_mib() {
    let (worst, cost) = worst_case_png();
    assert!(
        cost > DEFAULT_MAX_IMAGE_MEMORY - 2 * MIB,
        "the crafted image should cost nearly the whole per-image limit: {cost}"
    );
    assert!(worst.len() < 512 * 1024, "{} bytes", worst.len());
    // The bomb: 4096x4096 16-bit RGBA, 128 MiB decoded.
    let bomb = digit_png(4096, 4096, ColorType::Rgba16);
    let server = Server::builder().no_auth().start();
    let requests = (0..64).map(|i| {
        let api = Endpoint::clone(&server);
        let png = if i % 8 == 7 {
            bomb.clone()
        } else {
            worst.clone()
        };
        tokio::spawn(async move { post(&api, png).await })
    });
    let answers = futures_util::future::join_all(requests).await;
    let peak = peak_rss(&server);
    eprintln!(
        "peak RSS under 64 concurrent worst-case images: {:.1} MiB",
        peak as f64 / MIB as f64
    );
    let mut counts = std::collections::BTreeMap::new();
    for answer in answers {
        let (status, retry, body) = answer.unwrap();
        *counts.entry(status).or_insert(0) += 1;
        match status {
            200 => assert!(body.contains("\"prediction\":1"), "{body}"),
            413 => {
                assert!(body.contains("\"code\":\"image_too_large\""), "{body}");
                assert!(
                    body.contains("over the per-image limit of 134217728 bytes"),
                    "{body}"
                );
            }
            503 => {
                assert!(body.contains("\"code\":\"overloaded\""), "{body}");
                assert!(retry.is_some(), "503 without Retry-After: {body}");
            }
            other => panic!("{other}: {body}\n{}", server.log()),
        }
    }
    eprintln!("answers: {counts:?}");
    assert!(
        counts.contains_key(&200),
        "no worst-case image was decoded: {counts:?}"
    );
    assert_eq!(
        counts.get(&413),
        Some(&8),
        "every bomb is refused: {counts:?}"
    );
    assert!(
        peak <= 256 * MIB,
        "peak RSS {:.1} MiB over 256 MiB",
        peak as f64 / MIB as f64
    );
}

#[tokio::test]
async fn an_image_over_the_per_image_limit_is_refused_with_its_need_and_the_limit() {
    let server = Server::builder()
        .no_auth()
        .args(["--max-image-memory", "5000000"])
        .start();
    // 1000x1000 RGB: 3 MB decoded and 4 MB of grey levels.
    let big = digit_png(1000, 1000, ColorType::Rgb8);
    let (status, _, body) = post(&server, big).await;
    assert_eq!(status, 413, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["code"], "image_too_large");
    let msg = v["msg"].as_str().unwrap();
    let need = decode_cost(ImageFormat::Png, 1000, 1000, ColorType::Rgb8, 3, 0);
    assert!(
        msg.contains(&format!("1000x1000 Rgb8 png image needs {need} bytes")),
        "{msg}"
    );
    assert!(msg.contains("per-image limit of 5000000 bytes"), "{msg}");
    // Smaller images still go through.
    let small = digit_png(300, 300, ColorType::Rgb8);
    let (status, _, body) = post(&server, small).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn images_that_find_the_decode_budget_taken_get_503_with_retry_after() {
    // Room for one 1500x1500 image at a time, and no waiting.
    let one = decode_cost(ImageFormat::Png, 1500, 1500, ColorType::Rgb8, 3, 0);
    let budget = (one + one / 2).to_string();
    let server = Server::builder()
        .no_auth()
        .args(["--decode-memory", &budget, "--max-image-memory", &budget])
        .args(["--decode-wait-ms", "0"])
        .start();
    let png = digit_png(1500, 1500, ColorType::Rgb8);
    let requests = (0..16).map(|_| {
        let (api, png) = (Endpoint::clone(&server), png.clone());
        tokio::spawn(async move { post(&api, png).await })
    });
    let mut statuses = Vec::new();
    for answer in futures_util::future::join_all(requests).await {
        let (status, retry, body) = answer.unwrap();
        match status {
            200 => {}
            503 => {
                assert_eq!(retry.as_deref(), Some("1"), "{body}");
                assert!(
                    body.contains("no image decoding memory came free"),
                    "{body}"
                );
            }
            other => panic!("{other}: {body}"),
        }
        statuses.push(status);
    }
    assert!(statuses.contains(&503), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
}

#[test]
fn a_per_image_limit_over_the_shared_budget_stops_the_server() {
    let out = Server::builder()
        .no_auth()
        .args([
            "--max-image-memory",
            &(DEFAULT_DECODE_MEMORY + 1).to_string(),
        ])
        .start_fails();
    assert!(
        out.contains("--max-image-memory (167772161) is larger than --decode-memory"),
        "{out}"
    );
}

/// The shipped weights with every value of every tensor replaced by NaN, header unchanged.
fn nan_weights(dir: &Path) -> PathBuf {
    let bytes = std::fs::read(weights_path()).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let nan: Vec<u8> = (0..view.data().len() / 4)
                .flat_map(|_| f32::NAN.to_le_bytes())
                .collect();
            (name, view.shape().to_vec(), nan)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(name, shape, data)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                    .unwrap();
            (name.clone(), view)
        })
        .collect();
    let out = safetensors::serialize(views, header.metadata().clone()).unwrap();
    let path = dir.join("nan.safetensors");
    std::fs::write(&path, out).unwrap();
    path
}

#[test]
fn nan_weights_stop_the_server_and_the_evaluator_naming_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let nan = nan_weights(dir.path());
    let out = Server::builder().no_auth().weights(&nan).start_fails();
    let nan = nan.to_str().unwrap();
    assert!(out.contains(&format!("{nan}: tensor `")), "{out}");
    assert!(
        out.contains("values are not finite (first: NaN at index 0)"),
        "{out}"
    );
    assert!(!out.contains("listening"), "{out}");

    let o = run(TRAIN, &["--eval", nan], "");
    assert!(!o.status.success(), "{}", output_text(&o));
    let out = output_text(&o);
    assert!(out.contains(&format!("{nan}: tensor `")), "{out}");
    assert!(out.contains("values are not finite"), "{out}");
}
