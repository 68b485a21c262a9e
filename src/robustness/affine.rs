//! Geometric corruptions: rotation, scale with offset, shear, by imageproc's bilinear warp.

use image::{GrayImage, Luma};
use imageproc::geometric_transformations::{warp, Border, Interpolation, Projection};
use rand::Rng;

/// imageproc samples at integer coordinates, so the middle of a 28-pixel side is 13.5.
fn centre(g: &GrayImage) -> (f32, f32) {
    (
        (g.width() as f32 - 1.0) / 2.0,
        (g.height() as f32 - 1.0) / 2.0,
    )
}

/// `m` applied about `(cx, cy)` then moved by `(tx, ty)`: `p' = m·(p − c) + c + t`.
fn about(m: [f32; 4], (cx, cy): (f32, f32), (tx, ty): (f32, f32)) -> Option<Projection> {
    let [a, b, c, d] = m;
    Projection::from_matrix([
        a,
        b,
        cx + tx - a * cx - b * cy,
        c,
        d,
        cy + ty - c * cx - d * cy,
        0.0,
        0.0,
        1.0,
    ])
}

/// Background where the warp reads from outside the image.
fn apply(g: &GrayImage, projection: Option<Projection>) -> GrayImage {
    match projection {
        Some(p) => warp(g, p, Interpolation::Bilinear, Border::Constant(Luma([0]))),
        // Only a singular matrix has no inverse, and none of ours is singular.
        None => g.clone(),
    }
}

/// Rotated by `theta` radians (clockwise on screen) about the image centre.
pub fn rotate(g: &GrayImage, theta: f32) -> GrayImage {
    let (s, c) = theta.sin_cos();
    apply(g, about([c, -s, s, c], centre(g), (0.0, 0.0)))
}

/// Slanted: `x += k·(y − centre)`.
pub fn shear(g: &GrayImage, k: f32) -> GrayImage {
    apply(g, about([1.0, k, 0.0, 1.0], centre(g), (0.0, 0.0)))
}

/// Scaled by `s` about the ink's bounding-box centre, then moved by an offset drawn so that
/// the whole scaled box stays on the canvas (centred when it cannot move).
pub fn scale_and_place(g: &GrayImage, s: f32, rng: &mut impl Rng) -> GrayImage {
    place(g, [s, 0.0, 0.0, s], rng)
}

/// The linear map `m` (row-major 2×2) applied about the ink's bounding-box centre, then a
/// random move that keeps the whole mapped box on the canvas (centred when it cannot move).
pub fn place(g: &GrayImage, m: [f32; 4], rng: &mut impl Rng) -> GrayImage {
    let Some((x0, y0, x1, y1)) = ink_box(g) else {
        return g.clone();
    };
    let c = ((x0 + x1) / 2.0, (y0 + y1) / 2.0);
    // The mapped box's half-extent along each axis, from its corners relative to the centre.
    let (hw, hh) = ((x1 - x0) / 2.0, (y1 - y0) / 2.0);
    let ex = m[0].abs() * hw + m[1].abs() * hh;
    let ey = m[2].abs() * hw + m[3].abs() * hh;
    let mut offset = |mid: f32, extent: f32, side: u32| {
        let (min, max) = (extent - mid, side as f32 - 1.0 - extent - mid);
        if min < max {
            rng.gen_range(min..=max)
        } else {
            (min + max) / 2.0
        }
    };
    let tx = offset(c.0, ex, g.width());
    let ty = offset(c.1, ey, g.height());
    apply(g, about(m, c, (tx, ty)))
}

/// Bounding box of the non-zero pixels, as floats.
pub(super) fn ink_box(g: &GrayImage) -> Option<(f32, f32, f32, f32)> {
    g.enumerate_pixels()
        .filter(|(_, _, p)| p.0[0] > 0)
        .fold(None, |b, (x, y, _)| {
            let (x, y) = (x as f32, y as f32);
            Some(match b {
                None => (x, y, x, y),
                Some((a, b, c, d)) => (
                    f32::min(a, x),
                    f32::min(b, y),
                    f32::max(c, x),
                    f32::max(d, y),
                ),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn bar() -> GrayImage {
        super::super::test_bar(4..24)
    }

    #[test]
    fn null_transforms_are_the_identity() {
        let g = bar();
        assert_eq!(rotate(&g, 0.0), g);
        assert_eq!(shear(&g, 0.0), g);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        // Scale 1 only moves the digit: same ink, same box size.
        let moved = scale_and_place(&g, 1.0, &mut rng);
        let (a, b) = (ink_box(&g).unwrap(), ink_box(&moved).unwrap());
        assert!(((a.2 - a.0) - (b.2 - b.0)).abs() <= 1.0, "{a:?} {b:?}");
        let mass = |g: &GrayImage| g.pixels().map(|p| p.0[0] as f32).sum::<f32>();
        assert!((mass(&moved) / mass(&g) - 1.0).abs() < 0.05);
    }

    #[test]
    fn a_quarter_turn_lays_the_bar_down() {
        let (x0, y0, x1, y1) = ink_box(&rotate(&bar(), std::f32::consts::FRAC_PI_2)).unwrap();
        assert!(x1 - x0 > 15.0 && y1 - y0 < 5.0, "{x0} {y0} {x1} {y1}");
    }

    #[test]
    fn shear_leans_a_vertical_bar() {
        let sheared = shear(&bar(), 0.4);
        let row_centre = |y: u32| {
            let xs: Vec<u32> = (0..28)
                .filter(|&x| sheared.get_pixel(x, y).0[0] > 127)
                .collect();
            xs.iter().sum::<u32>() as f32 / xs.len() as f32
        };
        // x grows with y: the bottom of the bar moved right of the top.
        assert!(row_centre(22) - row_centre(5) > 5.0);
    }

    #[test]
    fn scaling_keeps_the_ink_on_the_canvas_and_changes_its_size() {
        let g = bar();
        for seed in 0..20 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            for s in [0.6, 1.3] {
                let out = scale_and_place(&g, s, &mut rng);
                let (x0, y0, x1, y1) = ink_box(&out).unwrap();
                let h = y1 - y0 + 1.0;
                assert!((h - 20.0 * s).abs() <= 2.0, "s {s}: height {h}");
                assert!(x0 >= 0.0 && y0 >= 0.0 && x1 <= 27.0 && y1 <= 27.0);
                // Nothing is cut off: the width scales too (bilinear edges add up to a pixel a side).
                let w = x1 - x0 + 1.0;
                assert!((w - 4.0 * s).abs() <= 2.0, "s {s}: width {w}");
            }
        }
    }
}
