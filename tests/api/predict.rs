use futures_util::{stream, StreamExt};
use image::{imageops, DynamicImage, GrayImage, ImageFormat, Luma, Rgba, RgbaImage};
use mnist_api::training;

use crate::common::{
    digit_image, encode, mnist_test, png, spawn_app, weights_path, Endpoint, Server,
};

const DIGITS: usize = 500;

async fn classify_all(app: &Endpoint, token: &str, files: Vec<Vec<u8>>) -> Vec<u8> {
    stream::iter(files)
        .map(|f| async move {
            let res = app.predict(Some(token), vec![f]).await;
            assert_eq!(res.status(), 200);
            let body: serde_json::Value = res.json().await.unwrap();
            body["prediction"].as_u64().unwrap() as u8
        })
        .buffered(8)
        .collect()
        .await
}

#[tokio::test]
async fn mnist_digits_over_http_match_the_offline_model() {
    let Some(test) = mnist_test() else { return };
    let app = spawn_app();
    let token = app.token().await;
    let files: Vec<Vec<u8>> = (0..DIGITS).map(|i| png(digit_image(test, i))).collect();
    let served = classify_all(&app, &token, files).await;

    let offline_net = mnist_api::weights::load(&weights_path(), &candle_core::Device::Cpu).unwrap();
    let subset = test.take(DIGITS);
    let mut offline = Vec::new();
    for i in 0..DIGITS {
        let xs = mnist_api::preprocess::batch_tensor(subset.image(i), 1).unwrap();
        let p = xs.apply_t(&offline_net.net, false).unwrap();
        offline.push(p.argmax(1).unwrap().to_vec1::<u32>().unwrap()[0] as u8);
    }
    let correct = served
        .iter()
        .zip(&subset.labels)
        .filter(|(a, b)| a == b)
        .count();
    let agree = served.iter().zip(&offline).filter(|(a, b)| a == b).count();
    let accuracy = correct as f64 / DIGITS as f64;
    let agreement = agree as f64 / DIGITS as f64;
    eprintln!("HTTP accuracy {accuracy:.4}, agreement with offline {agreement:.4}");
    assert!(accuracy >= 0.99, "accuracy {accuracy}");
    assert!(agreement >= 0.995, "agreement {agreement}");
    // The offline evaluation path agrees with itself: same function the trainer reports.
    let conf = training::evaluate(&offline_net.net, &subset).unwrap();
    assert!(
        (conf.accuracy()
            - offline
                .iter()
                .zip(&subset.labels)
                .filter(|(a, b)| a == b)
                .count() as f64
                / DIGITS as f64)
            .abs()
            < 1e-9
    );
}

#[tokio::test]
async fn inverted_rgb_jpegs_at_three_times_the_size_still_work() {
    let Some(test) = mnist_test() else { return };
    let app = spawn_app();
    let token = app.token().await;
    let files: Vec<Vec<u8>> = (0..DIGITS)
        .map(|i| {
            let mut g = digit_image(test, i);
            imageops::invert(&mut g);
            let big = imageops::resize(&g, 84, 84, imageops::FilterType::Triangle);
            let rgb = DynamicImage::ImageLuma8(big).to_rgb8();
            encode(&DynamicImage::ImageRgb8(rgb), ImageFormat::Jpeg)
        })
        .collect();
    let served = classify_all(&app, &token, files).await;
    let correct = served
        .iter()
        .zip(&test.labels[..DIGITS])
        .filter(|(a, b)| a == b)
        .count();
    let accuracy = correct as f64 / DIGITS as f64;
    eprintln!("inverted 84x84 RGB JPEG accuracy {accuracy:.4}");
    assert!(accuracy >= 0.97, "accuracy {accuracy}");
}

/// A dark stroke on a transparent, large canvas, far from the centre, as a browser canvas
/// export looks.
fn canvas_with(draw: impl Fn(i32, i32) -> bool) -> Vec<u8> {
    let mut img = RgbaImage::from_pixel(600, 400, Rgba([0, 0, 0, 0]));
    for (x, y, p) in img.enumerate_pixels_mut() {
        if draw(x as i32, y as i32) {
            *p = Rgba([20, 20, 30, 255]);
        }
    }
    encode(&DynamicImage::ImageRgba8(img), ImageFormat::Png)
}

#[tokio::test]
async fn canvas_drawings_are_classified() {
    let app = spawn_app();
    let token = app.token().await;
    // A vertical stroke in the top-left area: a one.
    let one = canvas_with(|x, y| (90..108).contains(&x) && (40..240).contains(&y));
    // A closed loop in the bottom-right area: a zero.
    let zero = canvas_with(|x, y| {
        let (dx, dy) = ((x - 430) as f32 / 60.0, (y - 270) as f32 / 95.0);
        let r = (dx * dx + dy * dy).sqrt();
        (0.78..1.0).contains(&r)
    });
    let res = app.predict(Some(&token), vec![one, zero]).await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    let predictions = body["predictions"].as_array().unwrap();
    assert_eq!(predictions[0]["prediction"], 1, "{body}");
    assert_eq!(predictions[1]["prediction"], 0, "{body}");
}

#[tokio::test]
async fn a_scaled_mnist_seven_on_white_paper_is_a_seven() {
    let Some(test) = mnist_test() else { return };
    assert_eq!(test.labels[0], 7);
    let app = spawn_app();
    let token = app.token().await;
    let mut g = imageops::resize(
        &digit_image(test, 0),
        280,
        280,
        imageops::FilterType::CatmullRom,
    );
    imageops::invert(&mut g);
    let mut paper = GrayImage::from_pixel(1000, 700, Luma([250]));
    imageops::overlay(&mut paper, &g, 60, 380);
    let res = app.predict(Some(&token), vec![png(paper)]).await;
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["prediction"], 7, "{body}");
}

#[tokio::test]
async fn response_has_probabilities_and_model_identity() {
    let Some(test) = mnist_test() else { return };
    let app = spawn_app();
    let token = app.token().await;
    let res = app
        .predict(Some(&token), vec![png(digit_image(test, 1))])
        .await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["prediction"], test.labels[1]);
    let probs: Vec<f64> = body["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(probs.len(), 10);
    assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-4);
    let p = body["probability"].as_f64().unwrap();
    assert_eq!(p, probs[test.labels[1] as usize]);
    assert_eq!(body["model"]["name"], "mnist");
    assert_eq!(body["model"]["version"], "1");
    assert_eq!(
        body["model"]["architecture"],
        mnist_api::model::ARCHITECTURE
    );
    assert_eq!(body["model"]["sha256"].as_str().unwrap().len(), 64);
}

#[tokio::test]
async fn several_files_get_one_result_each_in_order() {
    let Some(test) = mnist_test() else { return };
    let app = spawn_app();
    let token = app.token().await;
    let files: Vec<Vec<u8>> = (0..6).map(|i| png(digit_image(test, i))).collect();
    let res = app.predict(Some(&token), files).await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    let got: Vec<u64> = body["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["prediction"].as_u64().unwrap())
        .collect();
    let want: Vec<u64> = test.labels[..6].iter().map(|&l| l as u64).collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn no_auth_mode_needs_no_token() {
    let app = Server::builder().no_auth().start();
    let one = canvas_with(|x, y| (290..310).contains(&x) && (100..300).contains(&y));
    let res = app.predict(None, vec![one]).await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn a_lone_image_gets_the_same_answer_inline_and_through_the_pools() {
    // Sent one at a time, the 28×28 fixture is decoded and run on the request's own thread;
    // with --no-inline it goes through the decoder and model threads.
    let seven = std::fs::read("tests/fixtures/seven.png").unwrap();
    let mut answers = Vec::new();
    for app in [
        Server::builder().no_auth().start(),
        Server::builder().no_auth().args(["--no-inline"]).start(),
    ] {
        let res = app.predict(None, vec![seven.clone()]).await;
        assert_eq!(res.status(), 200);
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["prediction"], 7);
        answers.push(body["probabilities"].clone());
    }
    assert_eq!(answers[0], answers[1]);
}
