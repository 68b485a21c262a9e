//! The geometry of a convolution window, and the CPU storage access both convolution paths
//! (the trainable one and the fused inference one) share.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Result};

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

pub(crate) fn f32_slice<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> Result<&'a [f32]> {
    let data = match storage {
        CpuStorage::F32(d) => d,
        other => candle_core::bail!("{op}: only f32 is supported, got {:?}", other.dtype()),
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}
