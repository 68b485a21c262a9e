//! The canvas path: a digit drawn large on a web page's white canvas, exported as JPEG.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::imageops::{self, FilterType};
use image::{DynamicImage, GrayImage, Luma};
use rand::Rng;

/// Side of the canvas, pixels (the web page's drawing area is of this order).
pub const SIDE: u32 = 280;
/// Range of the upscaling factor of the 28×28 field: the digit's box ends up 100–200 px.
pub const UPSCALE: (f32, f32) = (5.0, 10.0);
/// JPEG quality: libjpeg's default, below what browsers and phones write.
pub const JPEG_QUALITY: u8 = 75;

/// The severity, as the table shows it.
pub fn parameters() -> String {
    format!(
        "x{}..{} onto a {SIDE}x{SIDE} white canvas at a random place, black ink, RGB JPEG q{JPEG_QUALITY}",
        UPSCALE.0, UPSCALE.1
    )
}

/// `digit` (ink 255 on 0) upscaled (bilinear, as a smooth pen stroke), placed on a white
/// canvas as dark ink, and encoded as an RGB JPEG.
pub fn draw(digit: &GrayImage, rng: &mut impl Rng) -> Result<Vec<u8>, image::ImageError> {
    let side = ((digit.width() as f32 * rng.gen_range(UPSCALE.0..=UPSCALE.1)).round() as u32)
        .clamp(1, SIDE);
    let big = imageops::resize(digit, side, side, FilterType::Triangle);
    let (x, y) = (
        rng.gen_range(0..=SIDE - side),
        rng.gen_range(0..=SIDE - side),
    );
    let mut canvas = GrayImage::from_pixel(SIDE, SIDE, Luma([255]));
    for (bx, by, p) in big.enumerate_pixels() {
        canvas.put_pixel(x + bx, y + by, Luma([255 - p.0[0]]));
    }
    let rgb = DynamicImage::ImageLuma8(canvas).to_rgb8();
    let mut out = Cursor::new(Vec::new());
    JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY).encode_image(&rgb)?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::{prepare, ImageLimits};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn a_canvas_drawing_is_a_large_inverted_jpeg_that_preprocessing_turns_back_into_the_digit() {
        let digit = super::super::test_bar(4..24);
        let bytes = draw(&digit, &mut ChaCha8Rng::seed_from_u64(5)).unwrap();
        assert_eq!(&bytes[..3], &[0xFF, 0xD8, 0xFF], "a JPEG file");
        let decoded = image::load_from_memory(&bytes).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (SIDE, SIDE));
        assert!(matches!(decoded, DynamicImage::ImageRgb8(_)));
        // Light paper at the corners: dark ink on light background.
        assert!(decoded.to_luma8().get_pixel(0, 0).0[0] > 240);

        let p = prepare(&bytes, ImageLimits::default()).unwrap();
        assert!(p.inverted);
        assert_eq!((p.format, p.width, p.height), ("jpg", SIDE, SIDE));
        // Back to a 20-pixel-tall bar in the middle of the 28×28 field.
        let ink: Vec<usize> = (0..784).filter(|&i| p.input[i] > 1.0).collect();
        let rows = ink.iter().map(|i| i / 28);
        let (top, bottom) = (rows.clone().min().unwrap(), rows.max().unwrap());
        assert!((19..=21).contains(&(bottom - top + 1)), "{top}..{bottom}");
        let mean_col = ink.iter().map(|i| i % 28).sum::<usize>() as f32 / ink.len() as f32;
        assert!((mean_col - 13.5).abs() <= 1.0, "{mean_col}");
    }
}
