//! Files and credentials the tests share, and image encoding.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use image::{DynamicImage, GrayImage, ImageFormat};
use mnist_api::auth::Users;

/// The user every authenticated test server knows.
pub const USER: &str = "alice";
pub const PASSWORD: &str = "wonderland-rabbit-hole";
/// The key test servers sign tokens with, so tests can forge tokens of their own.
pub const SECRET: &[u8] = b"test secret key";

pub fn weights_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/mnist_cnn.safetensors")
}

/// `tests/fixtures/{name}.png`: a 28×28 handwritten-style digit (`one`, `seven`, `two`).
pub fn digit(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{name}.png"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Usernames and passwords.
pub(crate) type Credentials = Vec<(String, String)>;

/// A users file's bytes holding `users`, hashed once per test binary: argon2 is slow on
/// purpose, and most servers want the same users.
pub(crate) fn users_json(users: &Credentials) -> Vec<u8> {
    static CACHE: OnceLock<Mutex<HashMap<Credentials, Vec<u8>>>> = OnceLock::new();
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap();
    cache
        .entry(users.clone())
        .or_insert_with(|| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("users.json");
            let mut file = Users::default();
            for (name, password) in users {
                file.set_password(name, password).unwrap();
            }
            file.save(&path).unwrap();
            std::fs::read(path).unwrap()
        })
        .clone()
}

pub fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

pub fn png(img: GrayImage) -> Vec<u8> {
    encode(&DynamicImage::ImageLuma8(img), ImageFormat::Png)
}
