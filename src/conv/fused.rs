//! Inference-only layers that do in one pass what training does in several tensor ops.
//!
//! Profiled under load (BENCHMARKS.md, "Where a request's time goes"), the convolutions spent
//! as much time around their matrix products as in them: a zeroed patch matrix allocated per
//! call (hundreds of KiB at batch 16, so page faults as well as the memset), one `memcpy` per
//! kernel tap (a single float for the first layer), a bias column of ones, and a separate
//! ReLU pass with its own allocation. Here the patches go into a buffer each thread keeps,
//! row segments are copied whole, and bias and ReLU are applied to the product in place.
//! The weights are laid out for the product once, when a loaded model is frozen; training
//! keeps [`super::Conv`]'s differentiable path, so trained weights are unchanged.

use std::cell::RefCell;

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape};

use super::window::Window;
use crate::kernels::{add_bias_relu, f32_slice, matmul};

/// A scratch buffer larger than this is given back after use, so one huge batch (an
/// evaluation run) does not pin its patches for the thread's lifetime.
const KEEP_SCRATCH: usize = 4 << 20;

thread_local! {
    static PATCHES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Convolution, bias and ReLU over an NHWC tensor `(b, h, w, c)` → `(b, ho, wo, out)`.
#[derive(Clone, Debug)]
pub struct ConvRelu {
    win: Window,
    in_channels: usize,
    /// `(k*k*in, out)` row-major, rows ordered `(ky, kx, in)` like the patch columns.
    kernel: Vec<f32>,
    bias: Vec<f32>,
}

impl ConvRelu {
    /// `weight` in PyTorch's `(out, in, k, k)` layout, flattened; `bias` has `out` values.
    pub fn new(win: Window, in_channels: usize, weight: &[f32], bias: &[f32]) -> Result<Self> {
        let out = bias.len();
        let taps = win.k * win.k;
        if weight.len() != out * in_channels * taps {
            candle_core::bail!(
                "conv weight has {} values, expected {out}×{in_channels}×{}×{}",
                weight.len(),
                win.k,
                win.k
            );
        }
        let rows = taps * in_channels;
        let mut kernel = vec![0f32; rows * out];
        for o in 0..out {
            for i in 0..in_channels {
                for tap in 0..taps {
                    kernel[(tap * in_channels + i) * out + o] =
                        weight[(o * in_channels + i) * taps + tap];
                }
            }
        }
        Ok(Self {
            win,
            in_channels,
            kernel,
            bias: bias.to_vec(),
        })
    }

    fn out_channels(&self) -> usize {
        self.bias.len()
    }
}

impl CustomOp1 for ConvRelu {
    fn name(&self) -> &'static str {
        "conv-bias-relu-nhwc"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = f32_slice(storage, layout, self.name())?;
        let (b, h, w, c) = layout.shape().dims4()?;
        if c != self.in_channels {
            candle_core::bail!("{}: {c} input channels, expected {}", self.name(), c);
        }
        let (ho, wo) = (self.win.out(h), self.win.out(w));
        let (rows, depth, out) = (
            b * ho * wo,
            self.win.k * self.win.k * c,
            self.out_channels(),
        );
        let mut dst = vec![0f32; rows * out];
        PATCHES.with(|cell| {
            let mut patches = cell.borrow_mut();
            patches.clear();
            patches.reserve(rows * depth);
            for image in src.chunks_exact(h * w * c) {
                gather(&mut patches, image, (h, w, c), self.win);
            }
            debug_assert_eq!(patches.len(), rows * depth);
            let product = matmul(&mut dst, &patches, &self.kernel, (rows, depth, out));
            if patches.capacity() > KEEP_SCRATCH {
                *patches = Vec::new();
            }
            product
        })?;
        add_bias_relu(&mut dst, &self.bias);
        Ok((CpuStorage::F32(dst), Shape::from((b, ho, wo, out))))
    }
}

/// Appends one image's patches, one row per output position, columns `(ky, kx, c)`. Taps
/// that fall on the zero padding are written as zeros, so the buffer needs no clearing; the
/// taps of one kernel row are adjacent pixels in NHWC, so each is one slice copy.
fn gather(patches: &mut Vec<f32>, image: &[f32], dims: (usize, usize, usize), win: Window) {
    // A kernel row of a length known when compiling is copied inline: the first layer's rows
    // are 5 floats, and a call to `memcpy` for each 20 bytes made the copying as costly as the
    // layer's product (perf of a batch-1 forward pass: gather and memmove 23 % of it). The
    // lengths are those of the shipped layers; any other takes the same path with a call.
    match win.k * dims.2 {
        5 => gather_rows::<5>(patches, image, dims, win),
        96 => gather_rows::<96>(patches, image, dims, win),
        192 => gather_rows::<192>(patches, image, dims, win),
        _ => gather_rows::<0>(patches, image, dims, win),
    }
}

/// [`gather`] for kernel rows of `ROW` floats (0: not known when compiling).
#[inline(always)]
fn gather_rows<const ROW: usize>(
    patches: &mut Vec<f32>,
    image: &[f32],
    (h, w, c): (usize, usize, usize),
    win: Window,
) {
    let k = win.k as isize;
    let row = win.k * c;
    for oy in 0..win.out(h) {
        for ox in 0..win.out(w) {
            let x0 = (ox * win.stride) as isize - win.pad as isize;
            // The kernel row's taps that land inside the image: [lo, hi).
            let lo = (-x0).clamp(0, k) as usize;
            let hi = (w as isize - x0).clamp(0, k) as usize;
            for ky in 0..win.k {
                let y = (oy * win.stride + ky) as isize - win.pad as isize;
                if y < 0 || y >= h as isize || lo >= hi {
                    patches.resize(patches.len() + row, 0.0);
                    continue;
                }
                let start = (y as usize * w + (x0 + lo as isize) as usize) * c;
                let taps = &image[start..start + (hi - lo) * c];
                if let Ok(whole) = <&[f32; ROW]>::try_from(taps) {
                    // Only a row wholly inside the image has ROW taps (ROW = 0 never matches
                    // a non-empty row).
                    patches.extend_from_slice(whole);
                    continue;
                }
                patches.resize(patches.len() + lo * c, 0.0);
                patches.extend_from_slice(taps);
                patches.resize(patches.len() + (win.k - hi) * c, 0.0);
            }
        }
    }
}
