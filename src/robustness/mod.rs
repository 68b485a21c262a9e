//! A robustness suite in the spirit of MNIST-C (Mu & Gilmer, 2019): the MNIST test digits
//! under deterministic corruptions that mimic how people really draw, photograph and scan
//! digits, each one encoded as a file and read back through [`crate::preprocess::prepare`],
//! exactly what `/predict` runs, before the network sees it.
//!
//! [`Kind`] lists the corruptions and their severities, [`run`] scores a network on them and
//! [`Report`] prints the table.

pub(crate) mod affine;
mod canvas;
mod kind;
pub(crate) mod pixel;
mod suite;
mod table;

pub use kind::{Kind, BLUR_SIGMA, MAX_ROTATION_DEG, MAX_SHEAR, NOISE_SIGMA, SCALE};
pub use suite::{run, Report, Row};

/// Why the suite could not be run (a digit the server would refuse is a misread, not this).
#[derive(Debug, thiserror::Error)]
pub enum RobustnessError {
    /// A corrupted digit could not be encoded as a file.
    #[error("{kind}: cannot encode test image {index}: {source}")]
    Encode {
        /// The corruption being applied.
        kind: &'static str,
        /// Index of the digit in the test split.
        index: usize,
        /// The encoder's message.
        source: image::ImageError,
    },
    /// The network failed on a batch.
    #[error("{kind}: running the network: {source}")]
    Model {
        /// The corruption being scored.
        kind: &'static str,
        /// candle's message.
        source: candle_core::Error,
    },
}

/// A 4-pixel-wide vertical bar (columns 12..16) over `rows` of a 28×28 field, ink 255 on 0.
#[cfg(test)]
pub(crate) fn test_bar(rows: std::ops::Range<u32>) -> image::GrayImage {
    image::GrayImage::from_fn(28, 28, |x, y| {
        image::Luma([if (12..16).contains(&x) && rows.contains(&y) {
            255
        } else {
            0
        }])
    })
}
