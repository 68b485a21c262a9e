//! The MNIST files, which are too large to commit: tests that need them skip where they are
//! missing, except under CI.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use image::GrayImage;
use mnist_api::data::{Mnist, Split, IMAGE_SIDE};

/// What `load` makes of the MNIST directory (`MNIST_DIR`, else the shared copy beside the
/// repository), or `None` with the reason printed when the files are not there.
pub fn mnist_input<T>(load: impl FnOnce(&Path) -> Result<T, String>) -> Option<T> {
    let dir = std::env::var_os("MNIST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/mnist"));
    match load(&dir) {
        Ok(input) => Some(input),
        Err(why) => {
            // CI must prove the data path works: a missing input there is a failure, not a skip.
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true and the MNIST files are missing: {why}"
            );
            eprintln!("SKIPPED: {why}");
            None
        }
    }
}

/// The MNIST test split, loaded once per test binary.
pub fn mnist_test() -> Option<&'static Split> {
    static TEST: OnceLock<Option<Split>> = OnceLock::new();
    TEST.get_or_init(|| {
        mnist_input(|dir| {
            Mnist::load_test(dir).map_err(|e| format!("MNIST test data not available ({e})"))
        })
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
