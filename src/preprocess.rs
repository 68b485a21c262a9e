//! Image bytes to network input, the way MNIST itself was made.
//!
//! MNIST digits are white on black, their ink's bounding box scaled (antialiased) so its longer
//! side is 20 px, placed in a 28×28 field with the centre of mass at the centre. [`prepare`]
//! repeats exactly that for any uploaded image; [`normalize_into`] is the one scaling shared
//! with training, so an MNIST digit posted as a PNG reaches the network with the same values as
//! in offline evaluation.

use std::io::Cursor;

use candle_core::{Device, Result, Tensor};
use image::imageops::{self, FilterType};
use image::{DynamicImage, ImageBuffer, ImageFormat, ImageReader, Luma};
use warp::http::StatusCode;

use crate::data::{IMAGE_PIXELS, IMAGE_SIDE};
use crate::model::{MEAN, STD};

/// Longest side of the digit inside the 28×28 field, as in MNIST.
const DIGIT_BOX: u32 = 20;
/// Below this contrast between background and strongest ink, the image counts as blank.
const MIN_CONTRAST: f32 = 0.1;
/// Pixels fainter than this fraction of the strongest ink do not widen the bounding box,
/// so sensor noise and JPEG ringing in photos are not mistaken for ink.
const BOX_THRESHOLD: f32 = 0.15;

/// Scales one 28×28 image (0 = background, 255 = ink) into `out` as the network expects.
pub fn normalize_into(pixels: &[u8], out: &mut [f32]) {
    for (o, &p) in out.iter_mut().zip(pixels) {
        *o = (p as f32 / 255.0 - MEAN) / STD;
    }
}

/// Stacks `n` images of [`IMAGE_PIXELS`] bytes each into a `(n, 1, 28, 28)` input tensor.
pub fn batch_tensor(pixels: &[u8], n: usize) -> Result<Tensor> {
    if pixels.len() != n * IMAGE_PIXELS {
        candle_core::bail!(
            "expected {} bytes for {n} images, got {}",
            n * IMAGE_PIXELS,
            pixels.len()
        );
    }
    let mut data = vec![0f32; pixels.len()];
    normalize_into(pixels, &mut data);
    Tensor::from_vec(data, (n, 1, IMAGE_SIDE, IMAGE_SIDE), &Device::Cpu)
}

/// Why an uploaded image cannot be classified.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ImageError {
    /// Zero bytes.
    #[error("empty file")]
    Empty,
    /// Not a format we decode (or not an image at all).
    #[error("unsupported or unrecognised image format{0}; send PNG, JPEG, BMP, GIF, WebP or PNM")]
    UnsupportedFormat(String),
    /// Recognised but undecodable: truncated or corrupt.
    #[error("cannot decode {format} image: {detail}")]
    Corrupt {
        /// Detected format.
        format: String,
        /// Decoder message.
        detail: String,
    },
    /// Width or height is zero.
    #[error("image has zero width or height")]
    ZeroSized,
    /// Larger than the configured limit.
    #[error("image is {width}x{height}, larger than the limit of {max}x{max} pixels")]
    TooLarge {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// Configured side limit.
        max: u32,
    },
    /// Decoding would need more memory than allowed (a decompression bomb, for instance).
    #[error("decoding this image needs more memory than the limit of {0} bytes")]
    TooMuchMemory(u64),
    /// No ink to classify.
    #[error("image is blank: no digit found (the ink must contrast with the background)")]
    Blank,
}

impl ImageError {
    /// HTTP status and machine-readable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ImageError::Empty => (StatusCode::UNPROCESSABLE_ENTITY, "empty_file"),
            ImageError::UnsupportedFormat(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_format")
            }
            ImageError::Corrupt { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_image"),
            ImageError::ZeroSized => (StatusCode::UNPROCESSABLE_ENTITY, "zero_sized_image"),
            ImageError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "image_too_large"),
            ImageError::TooMuchMemory(_) => (StatusCode::PAYLOAD_TOO_LARGE, "image_too_large"),
            ImageError::Blank => (StatusCode::UNPROCESSABLE_ENTITY, "blank_image"),
        }
    }
}

/// Limits applied before and during decoding.
#[derive(Clone, Copy, Debug)]
pub struct ImageLimits {
    /// Largest accepted width or height.
    pub max_side: u32,
    /// Largest allocation the decoder may make, bytes.
    pub max_alloc: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self {
            max_side: 4096,
            max_alloc: 256 * 1024 * 1024,
        }
    }
}

/// What preprocessing saw and did; the server reports it on its decode span.
#[derive(Clone, Debug, PartialEq)]
pub struct Prepared {
    /// Network input: 784 normalised values.
    pub input: Vec<f32>,
    /// Detected format, lower case (`png`, `jpeg`…).
    pub format: &'static str,
    /// Original width.
    pub width: u32,
    /// Original height.
    pub height: u32,
    /// Whether the image was dark-on-light and got inverted.
    pub inverted: bool,
}

fn format_name(f: ImageFormat) -> &'static str {
    f.extensions_str().first().copied().unwrap_or("image")
}

/// Decodes `bytes` and turns the digit into network input (see the module docs).
pub fn prepare(bytes: &[u8], limits: ImageLimits) -> std::result::Result<Prepared, ImageError> {
    let image = decode(bytes, limits)?;
    let (format, image) = image;
    let (width, height) = (image.width(), image.height());
    let (field, inverted) = mnist_field(&image)?;
    let mut input = vec![0f32; IMAGE_PIXELS];
    for (o, &v) in input.iter_mut().zip(field.iter()) {
        *o = (v - MEAN) / STD;
    }
    Ok(Prepared {
        input,
        format,
        width,
        height,
        inverted,
    })
}

fn decode(
    bytes: &[u8],
    limits: ImageLimits,
) -> std::result::Result<(&'static str, DynamicImage), ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    let reader = || {
        ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| ImageError::UnsupportedFormat(format!(" ({e})")))
    };
    let probe = reader()?;
    let format = probe
        .format()
        .filter(|f| {
            matches!(
                f,
                ImageFormat::Png
                    | ImageFormat::Jpeg
                    | ImageFormat::Bmp
                    | ImageFormat::Gif
                    | ImageFormat::WebP
                    | ImageFormat::Pnm
            )
        })
        .ok_or_else(|| {
            let found = probe
                .format()
                .map(|f| format!(" ({f:?})"))
                .unwrap_or_default();
            ImageError::UnsupportedFormat(found)
        })?;
    let name = format_name(format);
    let corrupt = |e: image::ImageError| ImageError::Corrupt {
        format: name.to_string(),
        detail: e.to_string(),
    };
    // Headers first: the declared size is refused before any pixel buffer exists.
    let (width, height) = probe.into_dimensions().map_err(corrupt)?;
    if width == 0 || height == 0 {
        return Err(ImageError::ZeroSized);
    }
    if width > limits.max_side || height > limits.max_side {
        return Err(ImageError::TooLarge {
            width,
            height,
            max: limits.max_side,
        });
    }
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_image_width = Some(limits.max_side);
    decoder_limits.max_image_height = Some(limits.max_side);
    decoder_limits.max_alloc = Some(limits.max_alloc);
    let mut full = reader()?;
    full.limits(decoder_limits);
    let image = full.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => ImageError::TooMuchMemory(limits.max_alloc),
        other => corrupt(other),
    })?;
    if image.width() == 0 || image.height() == 0 {
        return Err(ImageError::ZeroSized);
    }
    Ok((name, image))
}

type Gray = ImageBuffer<Luma<f32>, Vec<f32>>;

/// Grey levels in 0..1 with alpha composited on white (transparent canvas = paper).
fn to_gray(image: &DynamicImage) -> Gray {
    let la = image.to_luma_alpha32f();
    let (w, h) = la.dimensions();
    let data = la
        .pixels()
        .map(|p| {
            let [l, a] = p.0;
            (l * a + (1.0 - a)).clamp(0.0, 1.0)
        })
        .collect();
    Gray::from_raw(w, h, data).unwrap_or_else(|| Gray::new(w, h))
}

/// Median grey level of the outermost ring of pixels: the background, for any sane photo,
/// scan or drawing of a single digit.
fn border_level(g: &Gray) -> f32 {
    let (w, h) = g.dimensions();
    let mut ring: Vec<f32> = Vec::with_capacity(2 * (w + h) as usize);
    for x in 0..w {
        ring.push(g.get_pixel(x, 0).0[0]);
        ring.push(g.get_pixel(x, h - 1).0[0]);
    }
    for y in 0..h {
        ring.push(g.get_pixel(0, y).0[0]);
        ring.push(g.get_pixel(w - 1, y).0[0]);
    }
    ring.sort_by(|a, b| a.total_cmp(b));
    ring[ring.len() / 2]
}

/// The 28×28 MNIST-style field (ink 1.0, background 0.0) and whether the input was inverted.
fn mnist_field(image: &DynamicImage) -> std::result::Result<(Vec<f32>, bool), ImageError> {
    let mut g = to_gray(image);
    let background = border_level(&g);
    let inverted = background > 0.5;
    // Ink as "amount above background", stretched so the strongest ink is 1.
    let max = g
        .pixels()
        .map(|p| if inverted { 1.0 - p.0[0] } else { p.0[0] })
        .fold(0.0f32, f32::max);
    let bg = if inverted {
        1.0 - background
    } else {
        background
    };
    let contrast = max - bg;
    if contrast < MIN_CONTRAST {
        return Err(ImageError::Blank);
    }
    for p in g.pixels_mut() {
        let ink = if inverted { 1.0 - p.0[0] } else { p.0[0] };
        p.0[0] = ((ink - bg) / contrast).clamp(0.0, 1.0);
    }

    let (w, h) = g.dimensions();
    if (w, h) == (IMAGE_SIDE as u32, IMAGE_SIDE as u32) && fits_mnist_box(&g) {
        // Already an MNIST-format digit: only recentre (a no-op for MNIST itself).
        return Ok((centre_by_mass(&g), inverted));
    }
    let (x0, y0, x1, y1) = ink_box(&g).ok_or(ImageError::Blank)?;
    let crop = imageops::crop_imm(&g, x0, y0, x1 - x0 + 1, y1 - y0 + 1).to_image();
    let (cw, ch) = crop.dimensions();
    let scale = DIGIT_BOX as f32 / cw.max(ch) as f32;
    let nw = ((cw as f32 * scale).round() as u32).clamp(1, DIGIT_BOX);
    let nh = ((ch as f32 * scale).round() as u32).clamp(1, DIGIT_BOX);
    // Triangle widens with the scale factor when shrinking, i.e. it antialiases.
    let small = imageops::resize(&crop, nw, nh, FilterType::Triangle);
    Ok((centre_by_mass(&small), inverted))
}

/// Bounding box `(x0, y0, x1, y1)` of the pixels brighter than `threshold`.
fn bounds_above(g: &Gray, threshold: f32) -> Option<(u32, u32, u32, u32)> {
    let mut bounds: Option<(u32, u32, u32, u32)> = None;
    for (x, y, p) in g.enumerate_pixels() {
        if p.0[0] > threshold {
            bounds = Some(match bounds {
                None => (x, y, x, y),
                Some((a, b, c, d)) => (a.min(x), b.min(y), c.max(x), d.max(y)),
            });
        }
    }
    bounds
}

/// Bounding box of pixels holding a meaningful share of the ink.
fn ink_box(g: &Gray) -> Option<(u32, u32, u32, u32)> {
    bounds_above(g, BOX_THRESHOLD)
}

/// Whether every ink pixel lies inside a 20×20 box, as in MNIST's own images.
fn fits_mnist_box(g: &Gray) -> bool {
    bounds_above(g, 0.0).is_some_and(|(x0, y0, x1, y1)| x1 - x0 < DIGIT_BOX && y1 - y0 < DIGIT_BOX)
}

/// Places `g` in a 28×28 field so its centre of mass lands on the field's centre (clamped so
/// no ink falls off the edge).
fn centre_by_mass(g: &Gray) -> Vec<f32> {
    let (w, h) = g.dimensions();
    let (mut mass, mut mx, mut my) = (0f64, 0f64, 0f64);
    for (x, y, p) in g.enumerate_pixels() {
        let v = p.0[0] as f64;
        mass += v;
        mx += v * x as f64;
        my += v * y as f64;
    }
    let side = IMAGE_SIDE as i64;
    let (cx, cy) = if mass > 0.0 {
        (mx / mass, my / mass)
    } else {
        ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0)
    };
    // MNIST puts the centre of mass at pixel 14 (of 0..27), i.e. offset = 14 - centre.
    let place = |c: f64, len: u32| -> i64 {
        let off = (side as f64 / 2.0 - c).round() as i64;
        off.clamp(0.min(side - len as i64), (side - len as i64).max(0))
    };
    let (ox, oy) = (place(cx, w), place(cy, h));
    let mut field = vec![0f32; IMAGE_PIXELS];
    for (x, y, p) in g.enumerate_pixels() {
        let (fx, fy) = (x as i64 + ox, y as i64 + oy);
        if (0..side).contains(&fx) && (0..side).contains(&fy) {
            field[(fy * side + fx) as usize] = p.0[0];
        }
    }
    field
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Rgba, RgbaImage};

    fn png(img: &DynamicImage) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    /// A centred vertical bar, MNIST style.
    fn bar_digit() -> GrayImage {
        let mut g = GrayImage::new(28, 28);
        for y in 5..23 {
            for x in 13..16 {
                g.put_pixel(x, y, Luma([255]));
            }
        }
        g
    }

    #[test]
    fn background_and_ink_map_to_the_training_range() {
        let mut px = vec![0u8; IMAGE_PIXELS];
        px[0] = 255;
        let t = batch_tensor(&px, 1).unwrap().flatten_all().unwrap();
        let v = t.to_vec1::<f32>().unwrap();
        assert!((v[0] - (1.0 - MEAN) / STD).abs() < 1e-6);
        assert!((v[1] + MEAN / STD).abs() < 1e-6);
    }

    #[test]
    fn wrong_length_is_an_error() {
        assert!(batch_tensor(&[0u8; 10], 1).is_err());
    }

    #[test]
    fn mnist_style_digit_passes_unchanged() {
        let g = bar_digit();
        let p = prepare(
            &png(&DynamicImage::ImageLuma8(g.clone())),
            ImageLimits::default(),
        )
        .unwrap();
        let mut expected = vec![0f32; IMAGE_PIXELS];
        normalize_into(g.as_raw(), &mut expected);
        assert_eq!(p.input, expected);
        assert!(!p.inverted);
        assert_eq!((p.format, p.width, p.height), ("png", 28, 28));
    }

    #[test]
    fn dark_on_light_large_off_centre_drawing_is_inverted_and_centred() {
        // A 300x200 white RGBA canvas with a thick black bar near its top-left corner.
        let mut img = RgbaImage::from_pixel(300, 200, Rgba([255, 255, 255, 255]));
        for y in 20..120 {
            for x in 30..45 {
                img.put_pixel(x, y, Rgba([0, 0, 0, 255]));
            }
        }
        let p = prepare(&png(&DynamicImage::ImageRgba8(img)), ImageLimits::default()).unwrap();
        assert!(p.inverted);
        let ink: Vec<usize> = (0..IMAGE_PIXELS).filter(|&i| p.input[i] > 0.0).collect();
        let rows: Vec<usize> = ink.iter().map(|i| i / 28).collect();
        let cols: Vec<usize> = ink.iter().map(|i| i % 28).collect();
        assert_eq!(
            rows.iter().max().unwrap() - rows.iter().min().unwrap() + 1,
            20
        );
        let mean_col = cols.iter().sum::<usize>() as f32 / cols.len() as f32;
        assert!((mean_col - 14.0).abs() <= 1.0, "{mean_col}");
    }

    #[test]
    fn transparent_background_counts_as_paper() {
        let mut img = RgbaImage::from_pixel(100, 100, Rgba([0, 0, 0, 0]));
        for y in 10..90 {
            for x in 45..55 {
                img.put_pixel(x, y, Rgba([0, 0, 0, 255]));
            }
        }
        let p = prepare(&png(&DynamicImage::ImageRgba8(img)), ImageLimits::default()).unwrap();
        assert!(p.inverted);
    }

    #[test]
    fn sixteen_bit_input_is_accepted() {
        let g = DynamicImage::ImageLuma8(bar_digit()).to_luma16();
        let p = prepare(&png(&DynamicImage::ImageLuma16(g)), ImageLimits::default()).unwrap();
        assert_eq!(p.width, 28);
    }

    #[test]
    fn blank_images_are_refused() {
        for v in [0u8, 255, 128] {
            let g = GrayImage::from_pixel(40, 40, Luma([v]));
            let e = prepare(&png(&DynamicImage::ImageLuma8(g)), ImageLimits::default());
            assert!(matches!(e, Err(ImageError::Blank)), "{v}: {e:?}");
        }
    }

    #[test]
    fn garbage_empty_truncated_and_oversized_inputs_are_refused() {
        let lim = ImageLimits::default();
        assert!(matches!(prepare(b"", lim), Err(ImageError::Empty)));
        assert!(matches!(
            prepare(b"hello, not an image", lim),
            Err(ImageError::UnsupportedFormat(_))
        ));
        let bytes = png(&DynamicImage::ImageLuma8(bar_digit()));
        assert!(matches!(
            prepare(&bytes[..bytes.len() / 2], lim),
            Err(ImageError::Corrupt { .. })
        ));
        let small = ImageLimits {
            max_side: 16,
            ..lim
        };
        assert!(matches!(
            prepare(&bytes, small),
            Err(ImageError::TooLarge {
                width: 28,
                height: 28,
                max: 16
            })
        ));
    }
}
