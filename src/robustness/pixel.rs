//! Corruptions of the strokes and pixels: thinning, thickening, blur, noise.

use image::{GrayImage, Luma};
use imageproc::filter::gaussian_blur_f32;
use imageproc::morphology::{grayscale_dilate, grayscale_erode, Mask};
use rand::Rng;

/// One pixel thinner: each pixel takes the darkest of itself and its right, lower and
/// lower-right neighbours (a 3×3 erosion would wipe out MNIST's 2-pixel strokes).
pub fn thin(g: &GrayImage) -> GrayImage {
    let square = GrayImage::from_pixel(2, 2, Luma([255]));
    grayscale_erode(g, &Mask::from_image(&square, 0, 0))
}

/// Two pixels thicker: each pixel takes the brightest of its 3×3 neighbourhood.
pub fn thicken(g: &GrayImage) -> GrayImage {
    grayscale_dilate(g, &Mask::square(1))
}

/// Gaussian blur of standard deviation `sigma` pixels.
pub fn blur(g: &GrayImage, sigma: f32) -> GrayImage {
    gaussian_blur_f32(g, sigma)
}

/// Every pixel plus Gaussian noise of standard deviation `sigma` (fraction of full scale),
/// clamped to the valid range.
pub fn noise(g: &GrayImage, sigma: f32, rng: &mut impl Rng) -> GrayImage {
    let mut out = g.clone();
    for p in out.pixels_mut() {
        let v = p.0[0] as f32 + 255.0 * sigma * standard_normal(rng);
        p.0[0] = v.round().clamp(0.0, 255.0) as u8;
    }
    out
}

/// Box–Muller: rand 0.8 has no normal distribution of its own.
fn standard_normal(rng: &mut impl Rng) -> f32 {
    let u1: f32 = 1.0 - rng.gen::<f32>(); // (0, 1]: ln stays finite
    let u2: f32 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn mass(g: &GrayImage) -> f64 {
        g.pixels().map(|p| p.0[0] as f64).sum()
    }

    fn ink(g: &GrayImage) -> usize {
        g.pixels().filter(|p| p.0[0] > 127).count()
    }

    /// A 4-pixel-wide bar, 18 tall.
    fn bar() -> GrayImage {
        super::super::test_bar(5..23)
    }

    #[test]
    fn thickening_adds_ink_and_thinning_removes_it() {
        let g = bar();
        assert_eq!(ink(&g), 4 * 18);
        assert_eq!(ink(&thicken(&g)), 6 * 20);
        assert_eq!(ink(&thin(&g)), 3 * 17);
    }

    #[test]
    fn blur_spreads_the_ink_and_roughly_keeps_its_mass() {
        let g = bar();
        let b = blur(&g, 1.0);
        assert!((mass(&b) / mass(&g) - 1.0).abs() < 0.03, "{}", mass(&b));
        let lit = |g: &GrayImage| g.pixels().filter(|p| p.0[0] > 0).count();
        assert!(lit(&b) > lit(&g));
        assert!(b.pixels().all(|p| p.0[0] < 255), "the peak is spread out");
    }

    #[test]
    fn noise_has_the_requested_spread_and_is_seeded() {
        let flat = GrayImage::from_pixel(28, 28, Luma([128]));
        let n = noise(&flat, 0.1, &mut ChaCha8Rng::seed_from_u64(1));
        let values: Vec<f64> = n.pixels().map(|p| p.0[0] as f64 - 128.0).collect();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let sd =
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64).sqrt();
        assert!(mean.abs() < 3.0, "{mean}");
        assert!((sd / 25.5 - 1.0).abs() < 0.1, "{sd}");
        assert_eq!(n, noise(&flat, 0.1, &mut ChaCha8Rng::seed_from_u64(1)));
        assert_ne!(n, noise(&flat, 0.1, &mut ChaCha8Rng::seed_from_u64(2)));
    }
}
