//! 2-D convolution as an explicit im2col followed by one matrix product, on NHWC tensors.
//!
//! candle's own `conv2d` is fine for inference, but its backward pass computes a naive
//! `conv_transpose2d` for the input gradient (even for the network's input, which needs none)
//! and a batch-sized convolution for the kernel gradient; on this CPU that made training 3-4x
//! slower than the forward pass warrants. Here the only non-gemm work is gathering patches
//! (and scattering their gradients back), so forward and backward both run on candle's matmul.
//! The kernel keeps PyTorch's `(out, in, kh, kw)` layout in the weights file.
//!
//! The patch gathering is a CPU kernel; on any other device the layer falls back to candle's
//! `conv2d`, which has that device's kernels. `benches/training_step.rs` measures the two on
//! the CPU.

use candle_core::{CpuStorage, CustomOp1, Layout, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

mod fused;
mod window;

use crate::kernels::f32_slice;
use fused::ConvRelu;
pub use window::Window;

/// Gathers the patches of an NHWC tensor `(b, h, w, c)` into rows `(b*ho*wo, k*k*c + 1)`,
/// columns ordered `(ky, kx, c)`, then a constant 1 that multiplies the bias.
struct Im2Col(Window);

/// The adjoint of [`Im2Col`]: scatters (adds) patch rows back into an NHWC tensor.
struct Col2Im {
    win: Window,
    dims: (usize, usize, usize, usize),
}

/// Runs `f` on matching chunks of `dst` and `src` (one image each), in parallel only when
/// candle is allowed more than one thread. A serving worker runs single-threaded; calling
/// rayon from it anyway moved every call to rayon's pool thread and back, two thread
/// switches per layer per forward pass.
fn for_each_image(
    dst: &mut [f32],
    dst_chunk: usize,
    src: &[f32],
    src_chunk: usize,
    f: impl Fn((&mut [f32], &[f32])) + Send + Sync,
) {
    if candle_core::utils::get_num_threads() > 1 {
        dst.par_chunks_mut(dst_chunk)
            .zip(src.par_chunks(src_chunk))
            .for_each(f);
    } else {
        dst.chunks_mut(dst_chunk)
            .zip(src.chunks(src_chunk))
            .for_each(f);
    }
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col-nhwc"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = f32_slice(storage, layout, self.name())?;
        let (b, h, w, c) = layout.shape().dims4()?;
        let win = self.0;
        let (ho, wo) = (win.out(h), win.out(w));
        let row = win.k * win.k * c + 1;
        let mut dst = vec![0f32; b * ho * wo * row];
        for_each_image(&mut dst, ho * wo * row, src, h * w * c, |(dst, src)| {
            for oy in 0..ho {
                for ox in 0..wo {
                    let out = &mut dst[(oy * wo + ox) * row..][..row];
                    out[row - 1] = 1.0;
                    win.for_each_tap((h, w), (oy, ox), |tap, pixel| {
                        out[tap * c..][..c].copy_from_slice(&src[pixel * c..][..c]);
                    });
                }
            }
        });
        Ok((CpuStorage::F32(dst), Shape::from((b * ho * wo, row))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let op = Col2Im {
            win: self.0,
            dims: arg.dims4()?,
        };
        Ok(Some(grad_res.contiguous()?.apply_op1_no_bwd(&op)?))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im-nhwc"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = f32_slice(storage, layout, self.name())?;
        let (b, h, w, c) = self.dims;
        let win = self.win;
        let (ho, wo) = (win.out(h), win.out(w));
        let row = win.k * win.k * c + 1;
        if layout.shape().dims() != [b * ho * wo, row] {
            candle_core::bail!("col2im: unexpected gradient shape {:?}", layout.shape());
        }
        let mut dst = vec![0f32; b * h * w * c];
        for_each_image(&mut dst, h * w * c, src, ho * wo * row, |(dst, src)| {
            for oy in 0..ho {
                for ox in 0..wo {
                    let patch = &src[(oy * wo + ox) * row..][..row];
                    win.for_each_tap((h, w), (oy, ox), |tap, pixel| {
                        let to = &mut dst[pixel * c..][..c];
                        for (d, s) in to.iter_mut().zip(&patch[tap * c..][..c]) {
                            *d += s;
                        }
                    });
                }
            }
        });
        Ok((CpuStorage::F32(dst), Shape::from((b, h, w, c))))
    }
}

/// A convolution layer over NHWC tensors; weights named `weight` `(out, in, k, k)` and `bias`.
#[derive(Clone, Debug)]
pub struct Conv {
    weight: Tensor,
    bias: Tensor,
    win: Window,
    out_channels: usize,
    /// The matmul operand built from `weight` and `bias`, kept once weights stop changing.
    frozen: Option<Tensor>,
    /// The same weights laid out for the fused inference layer, once frozen on the CPU.
    fused: Option<ConvRelu>,
}

impl Conv {
    /// Declares the layer's parameters in `vb` (Kaiming-uniform init, as candle's `conv2d`).
    pub fn new(vb: VarBuilder, in_c: usize, out_c: usize, win: Window) -> Result<Self> {
        let fan_in = in_c * win.k * win.k;
        let weight = vb.get_with_hints(
            (out_c, in_c, win.k, win.k),
            "weight",
            candle_nn::init::DEFAULT_KAIMING_UNIFORM,
        )?;
        let bound = 1. / (fan_in as f64).sqrt();
        let bias = vb.get_with_hints(
            out_c,
            "bias",
            candle_nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        Ok(Self {
            weight,
            bias,
            win,
            out_channels: out_c,
            frozen: None,
            fused: None,
        })
    }

    /// Builds the kernel matrix once, for inference: a training step would update the
    /// weights in place and leave the copy stale, so only frozen (loaded) models do this.
    pub fn freeze(&mut self) -> Result<()> {
        self.frozen = Some(self.kernel()?);
        if self.weight.device().is_cpu() {
            let (_, in_c, _, _) = self.weight.dims4()?;
            self.fused = Some(ConvRelu::new(
                self.win,
                in_c,
                &self.weight.flatten_all()?.to_vec1()?,
                &self.bias.to_vec1()?,
            )?);
        }
        Ok(())
    }

    /// `relu(forward(xs))`; a frozen layer does it in one fused pass ([`ConvRelu`]).
    pub fn forward_relu(&self, xs: &Tensor) -> Result<Tensor> {
        match &self.fused {
            Some(fused) if xs.device().is_cpu() => xs.contiguous()?.apply_op1_no_bwd(fused),
            _ => self.forward(xs)?.relu(),
        }
    }

    /// `(k*k*in + 1, out)`: the weights as `(ky, kx, in)` rows to match the patch columns,
    /// then the bias as one more row, matched by a column of ones in the patches, so its
    /// gradient comes out of the same matmul instead of a slow reduction over every position.
    fn kernel(&self) -> Result<Tensor> {
        if let Some(k) = &self.frozen {
            return Ok(k.clone());
        }
        Tensor::cat(
            &[
                self.weight
                    .permute((2, 3, 1, 0))?
                    .reshape(((), self.out_channels))?,
                self.bias.unsqueeze(0)?,
            ],
            0,
        )
    }
}

impl Module for Conv {
    /// `(b, h, w, c)` → `(b, ho, wo, out)`.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if !xs.device().is_cpu() {
            return self.forward_conv2d(xs);
        }
        let (b, h, w, _) = xs.dims4()?;
        let (ho, wo) = (self.win.out(h), self.win.out(w));
        let cols = xs.contiguous()?.apply_op1(Im2Col(self.win))?;
        cols.matmul(&self.kernel()?)?
            .reshape((b, ho, wo, self.out_channels))
    }
}

impl Conv {
    /// The same layer through candle's `conv2d`, which wants NCHW.
    fn forward_conv2d(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = xs.permute((0, 3, 1, 2))?.contiguous()?;
        xs.conv2d(&self.weight, self.win.pad, self.win.stride, 1, 1)?
            .broadcast_add(&self.bias.reshape((1, (), 1, 1))?)?
            .permute((0, 2, 3, 1))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    fn reference(xs_nhwc: &Tensor, conv: &Conv) -> Tensor {
        conv.forward_conv2d(xs_nhwc).unwrap()
    }

    /// A layer with random weights.
    fn random_conv(in_c: usize, out_c: usize, win: Window) -> Conv {
        let dev = Device::Cpu;
        let vb = VarBuilder::from_tensors(
            [
                (
                    "weight".to_string(),
                    Tensor::randn(0f32, 1., (out_c, in_c, win.k, win.k), &dev).unwrap(),
                ),
                (
                    "bias".to_string(),
                    Tensor::randn(0f32, 1., out_c, &dev).unwrap(),
                ),
            ]
            .into(),
            DType::F32,
            &dev,
        );
        Conv::new(vb, in_c, out_c, win).unwrap()
    }

    /// Largest absolute difference between two tensors of one shape.
    pub(crate) fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn matches_candle_conv2d_for_strides_and_padding() {
        for (h, c, o, (k, stride, pad)) in [
            (7, 3, 4, (3, 1, 1)),
            (8, 2, 5, (3, 2, 1)),
            (9, 1, 2, (5, 2, 0)),
        ] {
            let win = Window { k, stride, pad };
            let conv = random_conv(c, o, win);
            let xs = Tensor::randn(0f32, 1., (2, h, h, c), &Device::Cpu).unwrap();
            let ours = conv.forward(&xs).unwrap();
            let theirs = reference(&xs, &conv);
            assert_eq!(ours.dims(), theirs.dims());
            assert!(max_diff(&ours, &theirs) < 1e-4, "{win:?}");
        }
    }

    #[test]
    fn frozen_kernel_gives_the_same_output() {
        let mut conv = random_conv(
            3,
            4,
            Window {
                k: 3,
                stride: 2,
                pad: 1,
            },
        );
        let xs = Tensor::randn(0f32, 1., (2, 8, 8, 3), &Device::Cpu).unwrap();
        let before = conv.forward(&xs).unwrap();
        conv.freeze().unwrap();
        let after = conv.forward(&xs).unwrap();
        assert_eq!(max_diff(&before, &after), 0.0);
    }

    #[test]
    fn the_fused_frozen_layer_matches_forward_then_relu() {
        for (h, c, o, (k, stride, pad)) in [
            (28, 1, 32, (5, 2, 2)),
            (14, 32, 64, (3, 2, 1)),
            (7, 3, 4, (3, 1, 1)),
            (9, 2, 5, (5, 2, 0)),
            (3, 2, 3, (5, 1, 2)),
        ] {
            let win = Window { k, stride, pad };
            let mut conv = random_conv(c, o, win);
            let xs = Tensor::randn(0f32, 1., (3, h, h, c), &Device::Cpu).unwrap();
            let want = conv.forward(&xs).unwrap().relu().unwrap();
            conv.freeze().unwrap();
            assert!(conv.fused.is_some(), "a frozen CPU layer fuses");
            let got = conv.forward_relu(&xs).unwrap();
            assert_eq!(got.dims(), want.dims(), "{win:?}");
            assert!(max_diff(&got, &want) < 1e-4, "{win:?}");
        }
    }

    #[test]
    fn input_gradient_matches_candle_conv2d() {
        let dev = Device::Cpu;
        let conv = random_conv(
            2,
            3,
            Window {
                k: 3,
                stride: 2,
                pad: 1,
            },
        );
        let xs = Var::from_tensor(&Tensor::randn(0f32, 1., (2, 6, 6, 2), &dev).unwrap()).unwrap();
        let weights = Tensor::randn(0f32, 1., (2, 3, 3, 3), &dev).unwrap();
        let ours = (conv.forward(xs.as_tensor()).unwrap() * &weights)
            .unwrap()
            .sum_all()
            .unwrap();
        let theirs = (reference(xs.as_tensor(), &conv) * &weights)
            .unwrap()
            .sum_all()
            .unwrap();
        let g1 = ours.backward().unwrap();
        let g2 = theirs.backward().unwrap();
        let d1 = g1.get(xs.as_tensor()).unwrap();
        let d2 = g2.get(xs.as_tensor()).unwrap();
        assert!(max_diff(d1, d2) < 1e-4);
    }
}
