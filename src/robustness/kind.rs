//! The corruptions, their severities, and the seeded draw each digit gets.

use std::io::Cursor;

use image::{DynamicImage, GrayImage, ImageFormat};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{affine, canvas, pixel, RobustnessError};

/// Largest rotation either way, degrees.
pub const MAX_ROTATION_DEG: f32 = 25.0;
/// Range of the scale factor about the digit's centre.
pub const SCALE: (f32, f32) = (0.6, 1.3);
/// Largest horizontal shear factor either way (x += k·(y − centre)); 0.4 leans ±21.8°.
pub const MAX_SHEAR: f32 = 0.4;
/// Range of the blur's standard deviation, pixels of the 28×28 digit.
pub const BLUR_SIGMA: (f32, f32) = (0.5, 1.5);
/// Range of the additive noise's standard deviation, fraction of full scale.
pub const NOISE_SIGMA: (f32, f32) = (0.05, 0.15);

/// One way of spoiling a digit. Every draw is seeded by the kind and the digit's index, so
/// the suite gives the same images on every run and machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The digit as MNIST has it, only encoded as PNG.
    Clean,
    /// Rotated about the centre.
    Rotate,
    /// Shrunk or enlarged about the centre, then moved anywhere that keeps the ink on the
    /// canvas: the 28×28 field stays, so a small digit stays small.
    Scale,
    /// Slanted like italic handwriting.
    Shear,
    /// Strokes one pixel thinner: grey erosion by a 2×2 square.
    Thin,
    /// Strokes two pixels thicker: grey dilation by a 3×3 square.
    Thicken,
    /// Out of focus: Gaussian blur.
    Blur,
    /// Sensor noise: additive Gaussian noise on every pixel, clamped.
    Noise,
    /// Drawn in a browser: see [`canvas`](super::canvas).
    Canvas,
}

impl Kind {
    /// Every corruption, in table order; [`Kind::Clean`] first, as the reference.
    pub const ALL: [Kind; 9] = [
        Kind::Clean,
        Kind::Rotate,
        Kind::Scale,
        Kind::Shear,
        Kind::Thin,
        Kind::Thicken,
        Kind::Blur,
        Kind::Noise,
        Kind::Canvas,
    ];

    /// Short name, as in the table and `--robustness` output.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Clean => "clean",
            Kind::Rotate => "rotate",
            Kind::Scale => "scale",
            Kind::Shear => "shear",
            Kind::Thin => "thin",
            Kind::Thicken => "thicken",
            Kind::Blur => "blur",
            Kind::Noise => "noise",
            Kind::Canvas => "canvas",
        }
    }

    /// The severity, as the table shows it.
    pub fn parameters(self) -> String {
        match self {
            Kind::Clean => "28x28 PNG, as MNIST has it".into(),
            Kind::Rotate => format!("uniform in ±{MAX_ROTATION_DEG}°"),
            Kind::Scale => format!(
                "x{}..{}, random offset on the 28x28 canvas",
                SCALE.0, SCALE.1
            ),
            Kind::Shear => format!("horizontal, factor uniform in ±{MAX_SHEAR}"),
            Kind::Thin => "grey erosion, 2x2 square".into(),
            Kind::Thicken => "grey dilation, 3x3 square".into(),
            Kind::Blur => format!("Gaussian, sigma {}..{} px", BLUR_SIGMA.0, BLUR_SIGMA.1),
            Kind::Noise => format!(
                "additive Gaussian, sigma {}..{} of full scale",
                NOISE_SIGMA.0, NOISE_SIGMA.1
            ),
            Kind::Canvas => canvas::parameters(),
        }
    }

    /// Whether the kind counts towards the mean and minimum (all but the clean reference).
    pub fn is_corruption(self) -> bool {
        self != Kind::Clean
    }

    /// The random draws for digit `index` under this kind.
    fn rng(self, index: usize) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(index as u64);
        rng.set_stream(self as u64);
        rng
    }

    /// Digit `index` of the test split (`digit`, 28×28, ink 255 on 0) corrupted and encoded
    /// as the file a user would upload.
    pub fn corrupt(self, digit: &GrayImage, index: usize) -> Result<Vec<u8>, RobustnessError> {
        let mut rng = self.rng(index);
        let uniform = |rng: &mut ChaCha8Rng, (lo, hi): (f32, f32)| rng.gen_range(lo..=hi);
        let image = match self {
            Kind::Clean => digit.clone(),
            Kind::Rotate => {
                let deg = uniform(&mut rng, (-MAX_ROTATION_DEG, MAX_ROTATION_DEG));
                affine::rotate(digit, deg.to_radians())
            }
            Kind::Scale => affine::scale_and_place(digit, uniform(&mut rng, SCALE), &mut rng),
            Kind::Shear => affine::shear(digit, uniform(&mut rng, (-MAX_SHEAR, MAX_SHEAR))),
            Kind::Thin => pixel::thin(digit),
            Kind::Thicken => pixel::thicken(digit),
            Kind::Blur => pixel::blur(digit, uniform(&mut rng, BLUR_SIGMA)),
            Kind::Noise => pixel::noise(digit, uniform(&mut rng, NOISE_SIGMA), &mut rng),
            Kind::Canvas => {
                return canvas::draw(digit, &mut rng)
                    .map_err(|source| self.encode_error(index, source))
            }
        };
        let mut png = Cursor::new(Vec::new());
        DynamicImage::ImageLuma8(image)
            .write_to(&mut png, ImageFormat::Png)
            .map_err(|source| self.encode_error(index, source))?;
        Ok(png.into_inner())
    }

    fn encode_error(self, index: usize, source: image::ImageError) -> RobustnessError {
        RobustnessError::Encode {
            kind: self.name(),
            index,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Luma;

    /// A thick "7"-like stroke pair, MNIST style.
    pub(crate) fn seven() -> GrayImage {
        let mut g = GrayImage::new(28, 28);
        for x in 8..20 {
            for y in 5..8 {
                g.put_pixel(x, y, Luma([255]));
            }
        }
        for y in 8..23 {
            let x = 19 - (y - 8) / 3;
            for dx in 0..3 {
                g.put_pixel(x + dx - 1, y, Luma([255]));
            }
        }
        g
    }

    #[test]
    fn every_kind_is_deterministic_per_index_and_varies_across_indices() {
        let digit = seven();
        for kind in Kind::ALL {
            let a = kind.corrupt(&digit, 3).unwrap();
            assert_eq!(a, kind.corrupt(&digit, 3).unwrap(), "{}", kind.name());
            let random = !matches!(kind, Kind::Clean | Kind::Thin | Kind::Thicken);
            if random {
                assert_ne!(a, kind.corrupt(&digit, 4).unwrap(), "{}", kind.name());
            }
        }
    }

    #[test]
    fn every_corrupted_digit_is_read_back_by_the_servers_preprocessing() {
        let digit = seven();
        for kind in Kind::ALL {
            for index in 0..5 {
                let bytes = kind.corrupt(&digit, index).unwrap();
                let p = crate::preprocess::prepare(&bytes, Default::default())
                    .unwrap_or_else(|e| panic!("{} #{index}: {e}", kind.name()));
                assert_eq!(p.inverted, kind == Kind::Canvas, "{}", kind.name());
            }
        }
    }

    #[test]
    fn names_are_unique_and_parameters_state_the_severity() {
        let mut names: Vec<_> = Kind::ALL.iter().map(|k| k.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Kind::ALL.len());
        assert!(Kind::Rotate.parameters().contains("25"));
        assert!(Kind::Scale.parameters().contains("0.6..1.3"));
        assert!(Kind::Canvas.parameters().contains("JPEG"));
    }
}
