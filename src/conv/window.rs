//! The geometry of a convolution window, shared by the trainable and the fused layer.

/// Geometry of a square convolution window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Kernel side.
    pub k: usize,
    /// Step between windows.
    pub stride: usize,
    /// Zero padding on each border.
    pub pad: usize,
}

impl Window {
    /// Output side for an input side `n`.
    pub fn out(&self, n: usize) -> usize {
        (n + 2 * self.pad - self.k) / self.stride + 1
    }

    /// Calls `f(tap, pixel)` for each kernel tap of output position `(oy, ox)` that lands
    /// inside an `h`×`w` image (taps over the zero padding are skipped): `tap` numbers
    /// `(ky, kx)` row-major, `pixel` is `y * w + x`.
    #[inline(always)]
    pub(crate) fn for_each_tap(
        &self,
        (h, w): (usize, usize),
        (oy, ox): (usize, usize),
        mut f: impl FnMut(usize, usize),
    ) {
        for ky in 0..self.k {
            let y = (oy * self.stride + ky) as isize - self.pad as isize;
            if y < 0 || y >= h as isize {
                continue;
            }
            for kx in 0..self.k {
                let x = (ox * self.stride + kx) as isize - self.pad as isize;
                if x < 0 || x >= w as isize {
                    continue;
                }
                f(ky * self.k + kx, y as usize * w + x as usize);
            }
        }
    }
}
