//! Training-time augmentation that matches the robustness suite's corruptions: a random
//! affine map (rotation, scale, shear, then a placement that keeps the digit on the canvas),
//! sometimes a change of stroke or focus (erosion, dilation, blur, noise), then the server's
//! own framing ([`preprocess::frame`]), so the network learns on digits the way `/predict`
//! hands them over (a shrunken digit stays small, one that outgrows the box is scaled back).

use image::{GrayImage, ImageBuffer, Luma};
use imageproc::filter::gaussian_blur_f32;
use imageproc::geometric_transformations::{warp_with, Border, Interpolation};
use rand::Rng;

use crate::data::IMAGE_SIDE;
use crate::preprocess;
use crate::robustness::{
    affine, pixel, BLUR_SIGMA, MAX_ROTATION_DEG, MAX_SHEAR, NOISE_SIGMA, SCALE,
};

/// How often and how hard training images are distorted. The ranges default to the suite's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Augment {
    /// Probability that an image is distorted at all; 0 turns augmentation off.
    pub prob: f32,
    /// Probability that a distorted image also gets one of erosion, dilation, blur or noise.
    pub stroke_prob: f32,
    /// Largest rotation either way, degrees.
    pub max_rotation_deg: f32,
    /// Range of the scale factor.
    pub scale: (f32, f32),
    /// Largest horizontal shear factor either way.
    pub max_shear: f32,
    /// Probability that an image is also bent by an elastic distortion (Simard et al., 2003).
    pub elastic_prob: f32,
    /// Elastic distortion's scale α (pixels per unit of the smoothed field) and smoothing σ.
    pub elastic: (f32, f32),
}

impl Default for Augment {
    fn default() -> Self {
        Self {
            prob: 0.0,
            stroke_prob: 0.5,
            max_rotation_deg: MAX_ROTATION_DEG,
            scale: SCALE,
            max_shear: MAX_SHEAR,
            elastic_prob: 0.0,
            elastic: (34.0, 4.0),
        }
    }
}

impl Augment {
    /// Whether any image will be touched.
    pub fn is_on(&self) -> bool {
        self.prob > 0.0 || self.elastic_prob > 0.0
    }

    /// Writes `src` (28×28, ink 255 on 0) into `dst`, distorted with probability
    /// [`Augment::prob`]. Draws nothing from `rng` when augmentation is off.
    pub fn apply(&self, src: &[u8], dst: &mut [u8], rng: &mut impl Rng) {
        dst.copy_from_slice(src);
        if !self.is_on() {
            return;
        }
        let affine = self.prob > 0.0 && rng.gen::<f32>() < self.prob;
        let elastic = self.elastic_prob > 0.0 && rng.gen::<f32>() < self.elastic_prob;
        if !affine && !elastic {
            return;
        }
        let side = IMAGE_SIDE as u32;
        let Some(mut g) = GrayImage::from_raw(side, side, src.to_vec()) else {
            return;
        };
        if elastic {
            g = elastic_warp(&g, self.elastic, rng);
        }
        if affine {
            g = self.affine(&g, rng);
        }
        // A digit that erosion wiped out is not worth learning: keep the original.
        if let Ok(field) = preprocess::frame(g.as_raw(), side) {
            for (d, v) in dst.iter_mut().zip(field) {
                *d = (v * 255.0).round() as u8;
            }
        }
    }

    /// The suite's affine distortion, and sometimes one of its stroke or focus changes.
    fn affine(&self, digit: &GrayImage, rng: &mut impl Rng) -> GrayImage {
        let theta = rng
            .gen_range(-self.max_rotation_deg..=self.max_rotation_deg)
            .to_radians();
        let s = rng.gen_range(self.scale.0..=self.scale.1);
        let k = rng.gen_range(-self.max_shear..=self.max_shear);
        // s · rotation · shear, as one warp so the digit is resampled once.
        let (sin, cos) = theta.sin_cos();
        let m = [s * cos, s * (cos * k - sin), s * sin, s * (sin * k + cos)];
        let g = affine::place(digit, m, rng);
        if rng.gen::<f32>() >= self.stroke_prob {
            return g;
        }
        match rng.gen_range(0..4) {
            0 => pixel::thin(&g),
            1 => pixel::thicken(&g),
            2 => pixel::blur(&g, rng.gen_range(BLUR_SIGMA.0..=BLUR_SIGMA.1)),
            _ => pixel::noise(&g, rng.gen_range(NOISE_SIGMA.0..=NOISE_SIGMA.1), rng),
        }
    }
}

/// Every pixel moved by its own displacement: uniform noise in ±1 per pixel and axis,
/// smoothed by a Gaussian of `sigma` so that neighbours move together, scaled by `alpha`.
/// Unlike an affine map it bends strokes locally, as hands do.
fn elastic_warp(g: &GrayImage, (alpha, sigma): (f32, f32), rng: &mut impl Rng) -> GrayImage {
    let (w, h) = g.dimensions();
    let mut field = || {
        let noise: ImageBuffer<Luma<f32>, Vec<f32>> =
            ImageBuffer::from_fn(w, h, |_, _| Luma([rng.gen_range(-1.0f32..=1.0)]));
        gaussian_blur_f32(&noise, sigma)
    };
    let (dx, dy) = (field(), field());
    let at = |f: &ImageBuffer<Luma<f32>, Vec<f32>>, x: f32, y: f32| {
        alpha * f.get_pixel((x as u32).min(w - 1), (y as u32).min(h - 1))[0]
    };
    warp_with(
        g,
        |x, y| (x + at(&dx, x, y), y + at(&dy, x, y)),
        Interpolation::Bilinear,
        Border::Constant(Luma([0])),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::IMAGE_PIXELS;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn bar() -> Vec<u8> {
        crate::robustness::test_bar(4..24).into_raw()
    }

    #[test]
    fn off_copies_and_draws_nothing() {
        let src = bar();
        let mut dst = vec![0u8; IMAGE_PIXELS];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        Augment::default().apply(&src, &mut dst, &mut rng);
        assert_eq!(dst, src);
        assert_eq!(rng.gen::<u64>(), ChaCha8Rng::seed_from_u64(1).gen::<u64>());
    }

    /// Every image distorted; `stroke_prob` of them also eroded, dilated, blurred or noised.
    fn always(stroke_prob: f32) -> Augment {
        Augment {
            prob: 1.0,
            stroke_prob,
            ..Augment::default()
        }
    }

    fn distort(aug: Augment, seed: u64) -> Vec<u8> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut dst = vec![0u8; IMAGE_PIXELS];
        aug.apply(&bar(), &mut dst, &mut rng);
        dst
    }

    #[test]
    fn on_distorts_deterministically() {
        let aug = always(1.0);
        assert_eq!(distort(aug, 3), distort(aug, 3));
        let changed = (0..20).filter(|&s| distort(aug, s) != bar()).count();
        assert!(changed >= 18, "{changed} of 20 distorted");
        assert!((0..20).all(|s| distort(aug, s).iter().any(|&v| v > 0)));
    }

    #[test]
    fn elastic_bends_locally_and_keeps_the_ink() {
        let aug = Augment {
            elastic_prob: 1.0,
            ..Augment::default()
        };
        assert!(aug.is_on());
        // With α zero nothing moves: the digit is only framed, as the server frames it. A
        // short bar, so that a stretch stays inside the 20-pixel box and is not scaled back.
        let src = crate::robustness::test_bar(8..20).into_raw();
        let distort = |aug: Augment, seed: u64| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut dst = vec![0u8; IMAGE_PIXELS];
            aug.apply(&src, &mut dst, &mut rng);
            dst
        };
        assert_eq!(distort(aug, 5), distort(aug, 5));
        let framed = preprocess::frame(&src, IMAGE_SIDE as u32).unwrap();
        let framed: Vec<u8> = framed.iter().map(|v| (v * 255.0).round() as u8).collect();
        let flat = Augment {
            elastic: (0.0, 4.0),
            ..aug
        };
        assert_eq!(distort(flat, 1), framed);
        let ink = |v: &[u8]| v.iter().map(|&p| p as f64).sum::<f64>();
        let changed = (0..20).filter(|&s| distort(aug, s) != framed).count();
        assert!(changed >= 18, "{changed} of 20 bent");
        for seed in 0..20 {
            let ratio = ink(&distort(aug, seed)) / ink(&framed);
            // Bent strokes, not erased or smeared into a blob.
            assert!((0.5..2.0).contains(&ratio), "seed {seed}: ink ×{ratio}");
        }
    }

    #[test]
    fn a_distorted_digit_is_framed_like_the_server_frames_it() {
        let aug = always(0.0);
        for seed in 0..20 {
            let out = distort(aug, seed);
            // Recentred by mass; and no taller than MNIST's 20-pixel box (plus the resize's
            // antialiased edge).
            let mass: f64 = out.iter().map(|&v| v as f64).sum();
            let row = |i: usize| (i / 28) as f64;
            let cy = out
                .iter()
                .enumerate()
                .map(|(i, &v)| row(i) * v as f64)
                .sum::<f64>()
                / mass;
            assert!((cy - 14.0).abs() < 1.0, "seed {seed}: centre row {cy}");
            let rows: Vec<usize> = (0..IMAGE_PIXELS)
                .filter(|&i| out[i] > 0)
                .map(|i| i / 28)
                .collect();
            let height = rows.iter().max().unwrap() - rows.iter().min().unwrap() + 1;
            assert!(height <= 22, "seed {seed}: {height} rows");
        }
    }
}
