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
use image::{
    ColorType, DynamicImage, GenericImageView, ImageBuffer, ImageDecoder, ImageFormat, ImageReader,
    Luma, Pixel,
};

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
    /// A decoder asked for more memory than allowed while decoding (the backstop behind
    /// [`ImageError::OverMemoryLimit`]).
    #[error("decoding this image needs more memory than the limit of {0} bytes")]
    TooMuchMemory(u64),
    /// The header alone shows that decoding would cost more than the per-image limit.
    #[error(
        "decoding this {width}x{height} {color:?} {format} image needs {need} bytes ({} MiB), \
         over the per-image limit of {limit} bytes ({} MiB); send a smaller image",
        need.div_ceil(MIB), limit / MIB
    )]
    OverMemoryLimit {
        /// Detected format.
        format: &'static str,
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// Declared pixel layout.
        color: ColorType,
        /// Estimated peak memory of decoding and preprocessing, bytes.
        need: u64,
        /// Configured per-image limit, bytes.
        limit: u64,
    },
    /// No ink to classify.
    #[error("image is blank: no digit found (the ink must contrast with the background)")]
    Blank,
}

const MIB: u64 = 1024 * 1024;

/// Default of [`ImageLimits::max_memory`]: a 12 MP colour JPEG (a phone photo) costs about
/// 113 MiB by [`decode_cost`], a 4096×4096 8-bit RGB PNG about 113 MiB as well.
pub const DEFAULT_MAX_IMAGE_MEMORY: u64 = 128 * MIB;

/// Limits applied before and during decoding.
#[derive(Clone, Copy, Debug)]
pub struct ImageLimits {
    /// Largest accepted width or height.
    pub max_side: u32,
    /// Largest estimated decoding cost of one image, bytes ([`decode_cost`]); also handed to
    /// the decoder as its allocation limit.
    pub max_memory: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self {
            max_side: 4096,
            max_memory: DEFAULT_MAX_IMAGE_MEMORY,
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

/// What the header says, read without decoding a single pixel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Header {
    /// The format to decode as.
    pub format: ImageFormat,
    /// Declared width.
    pub width: u32,
    /// Declared height.
    pub height: u32,
    /// Declared pixel layout of the decoded buffer.
    pub color: ColorType,
    /// Estimated peak memory of decoding and preprocessing, bytes ([`decode_cost`]).
    pub need: u64,
}

fn format_name(f: ImageFormat) -> &'static str {
    f.extensions_str().first().copied().unwrap_or("image")
}

/// Decodes `bytes` and turns the digit into network input (see the module docs).
pub fn prepare(bytes: &[u8], limits: ImageLimits) -> std::result::Result<Prepared, ImageError> {
    let header = inspect(bytes, limits)?;
    prepare_inspected(bytes, &header, limits)
}

/// As [`prepare`], for bytes whose header [`inspect`] has already read and accepted.
pub fn prepare_inspected(
    bytes: &[u8],
    header: &Header,
    limits: ImageLimits,
) -> std::result::Result<Prepared, ImageError> {
    let image = decode(bytes, header, limits)?;
    let (width, height) = (image.width(), image.height());
    // The decoded buffer goes as soon as its grey copy exists.
    let (field, inverted) = mnist_field(to_gray(image))?;
    let mut input = vec![0f32; IMAGE_PIXELS];
    for (o, &v) in input.iter_mut().zip(field.iter()) {
        *o = (v - MEAN) / STD;
    }
    Ok(Prepared {
        input,
        format: format_name(header.format),
        width,
        height,
        inverted,
    })
}

/// What [`prepare`] makes of an 8-bit grey `side`×`side` image uploaded as a PNG, without
/// the file: the framed 28×28 field, ink 0..=1. Lets training see its augmented digits the
/// way the server will frame them.
pub fn frame(pixels: &[u8], side: u32) -> std::result::Result<Vec<f32>, ImageError> {
    let grey = pixels.iter().map(|&p| f32::from(p) / 255.0).collect();
    let g = Gray::from_raw(side, side, grey).ok_or(ImageError::ZeroSized)?;
    mnist_field(g).map(|(field, _)| field)
}

fn reader(bytes: &[u8]) -> std::result::Result<ImageReader<Cursor<&[u8]>>, ImageError> {
    ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError::UnsupportedFormat(format!(" ({e})")))
}

fn corrupt(format: ImageFormat) -> impl Fn(image::ImageError) -> ImageError {
    move |e| ImageError::Corrupt {
        format: format_name(format).to_string(),
        detail: e.to_string(),
    }
}

/// Reads the header and refuses, before any pixel buffer exists, images that are empty, of
/// an unsupported format, too wide or tall, or that would cost more than
/// [`ImageLimits::max_memory`] to decode.
pub fn inspect(bytes: &[u8], limits: ImageLimits) -> std::result::Result<Header, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    let probe = reader(bytes)?;
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
    let decoder = probe.into_decoder().map_err(corrupt(format))?;
    let (width, height) = decoder.dimensions();
    let color = decoder.color_type();
    drop(decoder);
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
    let components = match format {
        ImageFormat::Jpeg => jpeg_components(bytes).ok_or_else(|| ImageError::Corrupt {
            format: format_name(format).to_string(),
            detail: "unreadable frame header".into(),
        })?,
        _ => color.channel_count(),
    };
    let need = decode_cost(format, width, height, color, components, bytes.len() as u64);
    if need > limits.max_memory {
        return Err(ImageError::OverMemoryLimit {
            format: format_name(format),
            width,
            height,
            color,
            need,
            limit: limits.max_memory,
        });
    }
    Ok(Header {
        format,
        width,
        height,
        color,
        need,
    })
}

/// Colour components the JPEG frame declares (3 for YCbCr, 4 for CMYK/YCCK…): image reports
/// CMYK as RGB, but the decoder keeps coefficients for every component.
fn jpeg_components(bytes: &[u8]) -> Option<u8> {
    let mut decoder = zune_jpeg::JpegDecoder::new(zune_core::bytestream::ZCursor::new(bytes));
    decoder.decode_headers().ok()?;
    decoder.info().map(|i| i.components)
}

/// Rows converted to grey at a time: the per-strip copies stay small next to the image.
const STRIP_ROWS: usize = 16;

/// Peak bytes that decoding and preprocessing one image can hold at once, from its header.
///
/// Decoding holds the decoded buffer plus the decoder's own working memory; then the decoded
/// buffer lives on next to the f32 grey copy (4 B/px) until the grey copy is complete. The
/// decoders' working memory, per the image 0.25 / zune-jpeg / image-webp / gif sources:
/// - JPEG: the whole input copied, and (progressive or non-interleaved files) 16-bit
///   coefficients for every component, padded to whole MCUs;
/// - GIF: a frame buffer as large as the canvas, plus the 1 B/px indices;
/// - WebP: up to 8 B/px of planes and ARGB words;
/// - PNG, BMP, PNM: a few rows.
///
/// Small terms (strips, the resize's intermediate, the border ring) are counted per row.
pub fn decode_cost(
    format: ImageFormat,
    width: u32,
    height: u32,
    color: ColorType,
    components: u8,
    file_bytes: u64,
) -> u64 {
    let (w, h) = (u64::from(width), u64::from(height));
    let px = w * h;
    let decoded = px * u64::from(color.bytes_per_pixel());
    let pad = |n: u64| n.div_ceil(32) * 32;
    let working = match format {
        ImageFormat::Jpeg => file_bytes + pad(w) * pad(h) * 2 * u64::from(components),
        ImageFormat::Gif => decoded + px,
        ImageFormat::WebP => px * 8,
        _ => 0,
    };
    let grey = px * 4;
    let strips = w * STRIP_ROWS as u64 * (u64::from(color.bytes_per_pixel()) + 8);
    // resize's vertical pass: RGBA f32 for each of the 20 output rows; the border ring.
    let small = w * u64::from(DIGIT_BOX) * 16 + 8 * (w + h);
    decoded + working.max(grey + strips) + small + 64 * 1024
}

fn decode(
    bytes: &[u8],
    header: &Header,
    limits: ImageLimits,
) -> std::result::Result<DynamicImage, ImageError> {
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_image_width = Some(limits.max_side);
    decoder_limits.max_image_height = Some(limits.max_side);
    decoder_limits.max_alloc = Some(limits.max_memory);
    let mut full = reader(bytes)?;
    full.set_format(header.format);
    full.limits(decoder_limits);
    let image = full.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => ImageError::TooMuchMemory(limits.max_memory),
        other => corrupt(header.format)(other),
    })?;
    if image.width() == 0 || image.height() == 0 {
        return Err(ImageError::ZeroSized);
    }
    Ok(image)
}

type Gray = ImageBuffer<Luma<f32>, Vec<f32>>;

/// Grey levels in 0..1 with alpha composited on white (transparent canvas = paper).
///
/// Converted a strip of rows at a time, so the 8 B/px luma-alpha copy that a whole-image
/// conversion makes never exists; each strip goes through the same conversion, in the same
/// colour space, so the values are those of converting the whole image at once.
fn to_gray(image: DynamicImage) -> Gray {
    let (w, h) = (image.width(), image.height());
    let mut data = Vec::with_capacity(w as usize * h as usize);
    match &image {
        DynamicImage::ImageLuma8(b) => gray_strips(b, DynamicImage::ImageLuma8, &mut data),
        DynamicImage::ImageLumaA8(b) => gray_strips(b, DynamicImage::ImageLumaA8, &mut data),
        DynamicImage::ImageRgb8(b) => gray_strips(b, DynamicImage::ImageRgb8, &mut data),
        DynamicImage::ImageRgba8(b) => gray_strips(b, DynamicImage::ImageRgba8, &mut data),
        DynamicImage::ImageLuma16(b) => gray_strips(b, DynamicImage::ImageLuma16, &mut data),
        DynamicImage::ImageLumaA16(b) => gray_strips(b, DynamicImage::ImageLumaA16, &mut data),
        DynamicImage::ImageRgb16(b) => gray_strips(b, DynamicImage::ImageRgb16, &mut data),
        DynamicImage::ImageRgba16(b) => gray_strips(b, DynamicImage::ImageRgba16, &mut data),
        DynamicImage::ImageRgb32F(b) => gray_strips(b, DynamicImage::ImageRgb32F, &mut data),
        DynamicImage::ImageRgba32F(b) => gray_strips(b, DynamicImage::ImageRgba32F, &mut data),
        // A layout added in a later image release: whole-image conversion, correct if larger.
        other => data.extend(other.to_luma_alpha32f().pixels().map(|p| composite(p.0))),
    }
    drop(image);
    Gray::from_raw(w, h, data).unwrap_or_else(|| Gray::new(w, h))
}

fn composite([l, a]: [f32; 2]) -> f32 {
    (l * a + (1.0 - a)).clamp(0.0, 1.0)
}

fn gray_strips<P: Pixel>(
    buf: &ImageBuffer<P, Vec<P::Subpixel>>,
    wrap: fn(ImageBuffer<P, Vec<P::Subpixel>>) -> DynamicImage,
    out: &mut Vec<f32>,
) {
    let (w, h) = buf.dimensions();
    let row = w as usize * usize::from(P::CHANNEL_COUNT);
    let space = buf.color_space();
    for chunk in buf.as_raw()[..row * h as usize].chunks(row * STRIP_ROWS) {
        let rows = (chunk.len() / row) as u32;
        let Some(mut strip) = ImageBuffer::<P, _>::from_raw(w, rows, chunk.to_vec()) else {
            continue;
        };
        // The decoder's space was accepted by `image` itself, so this cannot fail.
        let _ = strip.set_color_space(space);
        let la = wrap(strip).to_luma_alpha32f();
        out.extend(la.pixels().map(|p| composite(p.0)));
    }
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
fn mnist_field(mut g: Gray) -> std::result::Result<(Vec<f32>, bool), ImageError> {
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
    if (w, h) == (IMAGE_SIDE as u32, IMAGE_SIDE as u32) {
        if let Some((x0, y0, x1, y1)) = bounds_above(&g, 0.0).filter(|&b| fits_mnist_box(b)) {
            // Already an MNIST-format digit: only recentre (a no-op for MNIST itself). The
            // ink alone is placed: the whole 28×28 field has no room to move.
            let ink = imageops::crop_imm(&g, x0, y0, x1 - x0 + 1, y1 - y0 + 1).to_image();
            return Ok((centre_by_mass(&ink), inverted));
        }
    }
    let (x0, y0, x1, y1) = ink_box(&g).ok_or(ImageError::Blank)?;
    // A view, not a copy: the resize reads the ink box straight from the grey image.
    let crop = imageops::crop_imm(&g, x0, y0, x1 - x0 + 1, y1 - y0 + 1);
    let (cw, ch) = crop.dimensions();
    let scale = DIGIT_BOX as f32 / cw.max(ch) as f32;
    let nw = ((cw as f32 * scale).round() as u32).clamp(1, DIGIT_BOX);
    let nh = ((ch as f32 * scale).round() as u32).clamp(1, DIGIT_BOX);
    // Triangle widens with the scale factor when shrinking, i.e. it antialiases.
    let small = imageops::resize(&*crop, nw, nh, FilterType::Triangle);
    Ok((centre_by_mass(&small), inverted))
}

/// Bounding box `(x0, y0, x1, y1)` of the pixels brighter than `threshold`.
fn bounds_above(g: &Gray, threshold: f32) -> Option<(u32, u32, u32, u32)> {
    let mut bounds: Option<(usize, usize, usize, usize)> = None;
    // Row by row, the first and last bright pixel: a per-pixel walk with coordinates was a
    // third of a 28×28 digit's preprocessing.
    for (y, row) in rows(g).enumerate() {
        let Some(first) = row.iter().position(|&v| v > threshold) else {
            continue;
        };
        let last = row.iter().rposition(|&v| v > threshold).unwrap_or(first);
        bounds = Some(match bounds {
            None => (first, y, last, y),
            Some((x0, y0, x1, _)) => (x0.min(first), y0, x1.max(last), y),
        });
    }
    // Coordinates of an image whose sides are u32.
    bounds.map(|(x0, y0, x1, y1)| (x0 as u32, y0 as u32, x1 as u32, y1 as u32))
}

/// The rows of `g` as slices, top to bottom.
fn rows(g: &Gray) -> impl Iterator<Item = &[f32]> {
    g.as_raw()
        .chunks_exact((g.width() as usize).max(1))
        .take(g.height() as usize)
}

/// Bounding box of pixels holding a meaningful share of the ink.
fn ink_box(g: &Gray) -> Option<(u32, u32, u32, u32)> {
    bounds_above(g, BOX_THRESHOLD)
}

/// Whether the box of every ink pixel (`bounds_above(g, 0.0)`) lies inside a 20×20 box, as in
/// MNIST's own images.
fn fits_mnist_box((x0, y0, x1, y1): (u32, u32, u32, u32)) -> bool {
    x1 - x0 < DIGIT_BOX && y1 - y0 < DIGIT_BOX
}

/// Places `g` in a 28×28 field so its centre of mass lands on the field's centre (clamped so
/// no ink falls off the edge).
fn centre_by_mass(g: &Gray) -> Vec<f32> {
    let (w, h) = g.dimensions();
    // Rows as slices, not pixels with coordinates (see `bounds_above`); the sums are added in
    // the same order as before, so the placement, and the answers, are unchanged.
    let (mut mass, mut mx, mut my) = (0f64, 0f64, 0f64);
    for (y, row) in rows(g).enumerate() {
        for (x, &p) in row.iter().enumerate() {
            let v = p as f64;
            mass += v;
            mx += v * x as f64;
            my += v * y as f64;
        }
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
    // The columns of a row that land inside the field.
    let x_lo = (-ox).clamp(0, i64::from(w)) as usize;
    let x_hi = (side - ox).clamp(0, i64::from(w)) as usize;
    for (y, row) in rows(g).enumerate() {
        let fy = y as i64 + oy;
        if !(0..side).contains(&fy) || x_lo >= x_hi {
            continue;
        }
        let start = (fy * side + x_lo as i64 + ox) as usize;
        field[start..start + (x_hi - x_lo)].copy_from_slice(&row[x_lo..x_hi]);
    }
    field
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Rgba, RgbaImage};
    use rand::{Rng, SeedableRng};

    #[test]
    fn centre_by_mass_places_every_pixel_as_a_pixel_by_pixel_copy_would() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        for (w, h) in [
            (1, 1),
            (5, 5),
            (20, 20),
            (28, 28),
            (30, 10),
            (10, 30),
            (33, 31),
        ] {
            for _ in 0..50 {
                let g = Gray::from_fn(w, h, |_, _| Luma([rng.gen::<f32>().powi(4)]));
                let got = centre_by_mass(&g);
                // The pixel-by-pixel version this replaced.
                let (mut mass, mut mx, mut my) = (0f64, 0f64, 0f64);
                for (x, y, p) in g.enumerate_pixels() {
                    let v = p.0[0] as f64;
                    mass += v;
                    mx += v * x as f64;
                    my += v * y as f64;
                }
                let side = IMAGE_SIDE as i64;
                let place = |c: f64, len: u32| -> i64 {
                    let off = (side as f64 / 2.0 - c).round() as i64;
                    off.clamp(0.min(side - len as i64), (side - len as i64).max(0))
                };
                let (ox, oy) = (place(mx / mass, w), place(my / mass, h));
                let mut want = vec![0f32; IMAGE_PIXELS];
                for (x, y, p) in g.enumerate_pixels() {
                    let (fx, fy) = (x as i64 + ox, y as i64 + oy);
                    if (0..side).contains(&fx) && (0..side).contains(&fy) {
                        want[(fy * side + fx) as usize] = p.0[0];
                    }
                }
                assert_eq!(got, want, "{w}x{h}");
            }
        }
    }

    #[test]
    fn bounds_above_matches_a_pixel_by_pixel_search() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for (w, h) in [(1, 1), (28, 28), (5, 3), (3, 5), (40, 1)] {
            for _ in 0..200 {
                let ink = rng.gen_range(0.0..0.3);
                let g = Gray::from_fn(w, h, |_, _| {
                    Luma([if rng.gen::<f32>() < ink {
                        rng.gen()
                    } else {
                        0.0
                    }])
                });
                let mut want: Option<(u32, u32, u32, u32)> = None;
                for (x, y, p) in g.enumerate_pixels() {
                    if p.0[0] > 0.0 {
                        want = Some(want.map_or((x, y, x, y), |(a, b, c, d)| {
                            (a.min(x), b.min(y), c.max(x), d.max(y))
                        }));
                    }
                }
                assert_eq!(bounds_above(&g, 0.0), want, "{w}x{h}");
            }
        }
    }

    fn png(img: &DynamicImage) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    /// A vertical bar centred by mass on pixel 14, MNIST style.
    fn bar_digit() -> GrayImage {
        let mut g = GrayImage::new(28, 28);
        for y in 5..24 {
            for x in 13..16 {
                g.put_pixel(x, y, Luma([255]));
            }
        }
        g
    }

    #[test]
    fn framing_pixels_is_what_prepare_does_to_their_png() {
        // A small off-centre bar (recentred only) and a tall one (scaled back to 20 px).
        for (x, y0, y1) in [(3, 2, 12), (20, 0, 28)] {
            let g = GrayImage::from_fn(28, 28, |px, py| {
                Luma([if px.abs_diff(x) <= 1 && (y0..y1).contains(&py) {
                    200
                } else {
                    0
                }])
            });
            let field = frame(g.as_raw(), 28).unwrap();
            let p = prepare(&png(&DynamicImage::ImageLuma8(g)), ImageLimits::default()).unwrap();
            let expected: Vec<f32> = field.iter().map(|v| (v - MEAN) / STD).collect();
            assert_eq!(p.input, expected);
        }
        assert!(matches!(frame(&[0; 784], 28), Err(ImageError::Blank)));
        assert!(matches!(frame(&[0; 10], 28), Err(ImageError::ZeroSized)));
    }

    #[test]
    fn a_small_off_centre_digit_in_a_28_pixel_field_is_recentred() {
        let mut g = GrayImage::new(28, 28);
        for y in 1..11 {
            for x in 2..5 {
                g.put_pixel(x, y, Luma([255]));
            }
        }
        let p = prepare(&png(&DynamicImage::ImageLuma8(g)), ImageLimits::default()).unwrap();
        let ink: Vec<usize> = (0..IMAGE_PIXELS).filter(|&i| p.input[i] > 0.0).collect();
        assert_eq!(ink.len(), 30, "moved, not resized");
        let mean = |f: fn(&usize) -> usize| ink.iter().map(f).sum::<usize>() as f32 / 30.0;
        assert!((mean(|i| i % 28) - 14.0).abs() <= 0.5 && (mean(|i| i / 28) - 14.0).abs() <= 0.5);
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

    /// The conversion before strips existed: the whole image to luma-alpha f32 at once.
    fn whole_image_gray(image: &DynamicImage) -> Vec<f32> {
        image
            .to_luma_alpha32f()
            .pixels()
            .map(|p| composite(p.0))
            .collect()
    }

    #[test]
    fn grey_by_strips_equals_grey_of_the_whole_image() {
        // Heights that are not a multiple of the strip, every layout a decoder can return.
        let (w, h) = (37, 3 * STRIP_ROWS as u32 + 5);
        let rgba = RgbaImage::from_fn(w, h, |x, y| {
            let v = (x * 31 + y * 17) as u8;
            Rgba([v, v.wrapping_mul(3), v ^ 0x5a, (x * 7 + y) as u8])
        });
        let base = DynamicImage::ImageRgba8(rgba);
        let layouts = [
            DynamicImage::ImageLuma8(base.to_luma8()),
            DynamicImage::ImageLumaA8(base.to_luma_alpha8()),
            DynamicImage::ImageRgb8(base.to_rgb8()),
            base.clone(),
            DynamicImage::ImageLuma16(base.to_luma16()),
            DynamicImage::ImageLumaA16(base.to_luma_alpha16()),
            DynamicImage::ImageRgb16(base.to_rgb16()),
            DynamicImage::ImageRgba16(base.to_rgba16()),
            DynamicImage::ImageRgb32F(base.to_rgb32f()),
            DynamicImage::ImageRgba32F(base.to_rgba32f()),
        ];
        for image in layouts {
            let expected = whole_image_gray(&image);
            let color = image.color();
            let got = to_gray(image);
            assert_eq!(got.dimensions(), (w, h));
            assert_eq!(got.into_raw(), expected, "{color:?}");
        }
    }

    #[test]
    fn a_twelve_megapixel_phone_photo_fits_the_default_limit() {
        let mut photo = image::RgbImage::from_pixel(4032, 3024, image::Rgb([235, 230, 220]));
        for y in 800..2200 {
            for x in 1900..2150 {
                photo.put_pixel(x, y, image::Rgb([30, 30, 40]));
            }
        }
        let mut jpeg = Cursor::new(Vec::new());
        DynamicImage::ImageRgb8(photo)
            .write_to(&mut jpeg, ImageFormat::Jpeg)
            .unwrap();
        let jpeg = jpeg.into_inner();
        let header = inspect(&jpeg, ImageLimits::default()).unwrap();
        assert!(header.need <= DEFAULT_MAX_IMAGE_MEMORY, "{header:?}");
        let p = prepare_inspected(&jpeg, &header, ImageLimits::default()).unwrap();
        assert_eq!((p.format, p.width, p.height), ("jpg", 4032, 3024));
        assert!(p.inverted);
    }

    #[test]
    fn a_decompression_bomb_is_refused_from_its_header_with_need_and_limit() {
        // The bomb: 4096x4096 16-bit RGBA, 128 MiB decoded, a few hundred KB as PNG.
        let bomb = image::ImageBuffer::<Rgba<u16>, _>::new(4096, 4096);
        let bytes = png(&DynamicImage::ImageRgba16(bomb));
        assert!(bytes.len() < 1024 * 1024, "{}", bytes.len());
        let limits = ImageLimits::default();
        let e = inspect(&bytes, limits).unwrap_err();
        let need = decode_cost(ImageFormat::Png, 4096, 4096, ColorType::Rgba16, 4, 0);
        assert!(need > 192 * MIB, "decoded buffer and grey copy: {need}");
        assert!(
            matches!(e, ImageError::OverMemoryLimit { need: n, limit, .. }
                if n == need && limit == DEFAULT_MAX_IMAGE_MEMORY),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(msg.contains(&format!("needs {need} bytes")), "{msg}");
        assert!(
            msg.contains("per-image limit of 134217728 bytes (128 MiB)"),
            "{msg}"
        );
        // A larger limit lets the same file through to the decoder.
        let roomy = ImageLimits {
            max_memory: 256 * MIB,
            ..limits
        };
        assert!(inspect(&bytes, roomy).is_ok());
    }

    #[test]
    fn jpeg_cost_counts_every_colour_component() {
        let cost = |c| decode_cost(ImageFormat::Jpeg, 1000, 1000, ColorType::Rgb8, c, 0);
        assert!(cost(4) > cost(3));
        let png = decode_cost(ImageFormat::Png, 1000, 1000, ColorType::Rgb8, 3, 0);
        assert!(cost(3) > png, "coefficients outweigh the grey copy");
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
