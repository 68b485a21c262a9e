//! Training-time augmentation that matches the robustness suite's corruptions: a random
//! affine map (rotation, scale, shear, then a placement that keeps the digit on the canvas),
//! sometimes a change of stroke or focus (erosion, dilation, blur, noise), then the server's
//! own framing ([`preprocess::frame`]), so the network learns on digits the way `/predict`
//! hands them over (a shrunken digit stays small, one that outgrows the box is scaled back).

use image::GrayImage;
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
}

impl Default for Augment {
    fn default() -> Self {
        Self {
            prob: 0.0,
            stroke_prob: 0.5,
            max_rotation_deg: MAX_ROTATION_DEG,
            scale: SCALE,
            max_shear: MAX_SHEAR,
        }
    }
}

impl Augment {
    /// Whether any image will be touched.
    pub fn is_on(&self) -> bool {
        self.prob > 0.0
    }

    /// Writes `src` (28×28, ink 255 on 0) into `dst`, distorted with probability
    /// [`Augment::prob`]. Draws nothing from `rng` when augmentation is off.
    pub fn apply(&self, src: &[u8], dst: &mut [u8], rng: &mut impl Rng) {
        dst.copy_from_slice(src);
        if !self.is_on() || rng.gen::<f32>() >= self.prob {
            return;
        }
        let side = IMAGE_SIDE as u32;
        let Some(digit) = GrayImage::from_raw(side, side, src.to_vec()) else {
            return;
        };
        let theta = rng
            .gen_range(-self.max_rotation_deg..=self.max_rotation_deg)
            .to_radians();
        let s = rng.gen_range(self.scale.0..=self.scale.1);
        let k = rng.gen_range(-self.max_shear..=self.max_shear);
        // s · rotation · shear, as one warp so the digit is resampled once.
        let (sin, cos) = theta.sin_cos();
        let m = [s * cos, s * (cos * k - sin), s * sin, s * (sin * k + cos)];
        let mut g = affine::place(&digit, m, rng);
        if rng.gen::<f32>() < self.stroke_prob {
            g = match rng.gen_range(0..4) {
                0 => pixel::thin(&g),
                1 => pixel::thicken(&g),
                2 => pixel::blur(&g, rng.gen_range(BLUR_SIGMA.0..=BLUR_SIGMA.1)),
                _ => pixel::noise(&g, rng.gen_range(NOISE_SIGMA.0..=NOISE_SIGMA.1), rng),
            };
        }
        // A digit that erosion wiped out is not worth learning: keep the original.
        if let Ok(field) = preprocess::frame(g.as_raw(), side) {
            for (d, v) in dst.iter_mut().zip(field) {
                *d = (v * 255.0).round() as u8;
            }
        }
    }
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
