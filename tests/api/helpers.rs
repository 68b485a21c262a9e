//! `spawn_app()` and one helper per endpoint.

use std::io::Cursor;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;

use clap::Parser;
use image::{DynamicImage, GrayImage, ImageFormat};
use mnist_api::auth::{Secret, Users};
use mnist_api::config::Cli;
use mnist_api::data::{Mnist, Split, IMAGE_SIDE};
use mnist_api::startup::Application;
use reqwest::multipart::{Form, Part};
use tempfile::TempDir;
use tokio::sync::oneshot;

pub const USER: &str = "alice";
pub const PASSWORD: &str = "wonderland-rabbit-hole";
pub const SECRET: &[u8] = b"test secret key";

/// A running server and a client for it.
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    _dir: TempDir,
}

pub fn weights_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("weights/mnist_cnn.safetensors")
}

/// A users file holding [`USER`], hashed once per test binary (argon2 is slow on purpose).
fn users_json() -> &'static [u8] {
    static JSON: OnceLock<Vec<u8>> = OnceLock::new();
    JSON.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let mut users = Users::default();
        users.set_password(USER, PASSWORD).unwrap();
        users.save(&path).unwrap();
        std::fs::read(path).unwrap()
    })
}

/// Starts the app with a known user and secret, plus any extra flags.
pub async fn spawn_app_with(extra: &[&str]) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        mnist_api::telemetry::install(None);
    }
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    std::fs::write(&users, users_json()).unwrap();
    let weights = weights_path();
    let mut argv = vec![
        "mnist-api",
        "--bind",
        "127.0.0.1:0",
        "--weights",
        weights.to_str().unwrap(),
        "--users",
        users.to_str().unwrap(),
    ];
    argv.extend_from_slice(extra);
    let cli = Cli::try_parse_from(argv).unwrap();
    let app = Application::build(&cli.serve, Some(Secret::new(SECRET.to_vec())))
        .await
        .unwrap();
    let addr = app.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        client: reqwest::Client::new(),
        stop: Some(stop),
        server: Some(server),
        _dir: dir,
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Begins graceful shutdown.
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    /// Stops the server and waits until it has finished serving.
    pub async fn shut_down(mut self) {
        self.stop();
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn login_json(&self, body: serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url("/login"))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn token(&self) -> String {
        let res = self
            .login_json(serde_json::json!({"username": USER, "password": PASSWORD}))
            .await;
        assert_eq!(res.status(), 200);
        let body: serde_json::Value = res.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_string()
    }

    /// Posts `files` as `file` parts, with the bearer token if given.
    pub async fn predict(&self, token: Option<&str>, files: Vec<Vec<u8>>) -> reqwest::Response {
        let mut form = Form::new();
        for (i, bytes) in files.into_iter().enumerate() {
            form = form.part("file", Part::bytes(bytes).file_name(format!("digit{i}")));
        }
        let mut req = self.client.post(self.url("/predict")).multipart(form);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads the status and JSON body, asserting the error shape.
pub async fn error_of(res: reqwest::Response) -> (u16, String, String) {
    let status = res.status().as_u16();
    let body: serde_json::Value = res.json().await.unwrap();
    let msg = body["msg"]
        .as_str()
        .expect("error body has msg")
        .to_string();
    let code = body["code"]
        .as_str()
        .expect("error body has code")
        .to_string();
    (status, code, msg)
}

/// The MNIST test split, or `None` (with the reason printed) when the data is not here.
pub fn mnist_test() -> Option<&'static Split> {
    static TEST: OnceLock<Option<Split>> = OnceLock::new();
    TEST.get_or_init(|| {
        let dir = std::env::var_os("MNIST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/mnist"));
        match Mnist::load_test(&dir) {
            Ok(s) => Some(s),
            Err(e) => {
                // CI must prove the data path works: a missing input there is a failure, not a skip.
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "CI=true and the MNIST files are missing: {}",
                    e
                );
                eprintln!("SKIPPED: MNIST test data not available ({e})");
                None
            }
        }
    })
    .as_ref()
}

pub fn digit_image(split: &Split, i: usize) -> GrayImage {
    GrayImage::from_raw(
        IMAGE_SIDE as u32,
        IMAGE_SIDE as u32,
        split.image(i).to_vec(),
    )
    .unwrap()
}

pub fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

pub fn png(img: GrayImage) -> Vec<u8> {
    encode(&DynamicImage::ImageLuma8(img), ImageFormat::Png)
}
