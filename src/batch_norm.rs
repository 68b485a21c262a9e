//! Batch norm over the channels of an NHWC tensor, for training, as one CPU pass each way.
//!
//! candle-nn's `BatchNorm` wants channels in dimension 1: on NHWC it transposes, copies, and
//! runs a dozen broadcast operations forward and backward, and with it an augmented epoch took
//! 1.6x as long. Here the statistics, the normalisation and the three gradients are each a
//! pass over the `(rows, channels)` values, with f64 sums. Only training uses it: a trained
//! network has it folded into its convolutions ([`crate::fold`]).

use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, Var};
use candle_nn::{Init, VarBuilder};

use rayon::prelude::*;

use crate::kernels::f32_slice;

/// A batch norm layer; tensors named as candle-nn and PyTorch name them.
#[derive(Clone, Debug)]
pub struct BatchNorm {
    gamma: Tensor,
    beta: Tensor,
    running_mean: Var,
    running_var: Var,
    eps: f64,
    momentum: f64,
}

impl BatchNorm {
    /// `weight` (γ, 1), `bias` (β, 0), `running_mean` (0) and `running_var` (1) under `vb`.
    pub fn new(channels: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let var = |name, value| {
            vb.get_with_hints(channels, name, Init::Const(value))
                .and_then(|t| Var::from_tensor(&t))
        };
        Ok(Self {
            running_mean: var("running_mean", 0.0)?,
            running_var: var("running_var", 1.0)?,
            gamma: vb.get_with_hints(channels, "weight", Init::Const(1.0))?,
            beta: vb.get_with_hints(channels, "bias", Init::Const(0.0))?,
            eps,
            momentum: 0.1,
        })
    }

    /// `xs` `(…, channels)`: normalised by the batch's statistics (and the running ones
    /// updated) when `train`, by the running ones otherwise.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        self.apply(xs, train, false)
    }

    /// [`BatchNorm::forward_t`] followed by ReLU. In training the two are one op each way:
    /// candle's ReLU made seven passes over the activations (its forward, then a comparison,
    /// a conversion, a product, a zeroed buffer and a sum for the gradient).
    pub fn forward_relu_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        self.apply(xs, train, true)
    }

    fn apply(&self, xs: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        if !train {
            let scale = (&self.gamma / (self.running_var.as_tensor() + self.eps)?.sqrt()?)?;
            let shift = (&self.beta - (self.running_mean.as_tensor() * &scale)?)?;
            let ys = xs.broadcast_mul(&scale)?.broadcast_add(&shift)?;
            return if relu { ys.relu() } else { Ok(ys) };
        }
        let stats = Arc::new(OnceLock::new());
        let op = Normalize {
            eps: self.eps,
            stats: stats.clone(),
            relu,
        };
        let ys = xs.contiguous()?.apply_op3(&self.gamma, &self.beta, op)?;
        // The pass that normalised the batch measured it: update the running statistics
        // from that, rather than going over the batch again.
        let Some(batch) = stats.get() else {
            candle_core::bail!("batch norm: the forward pass left no statistics");
        };
        let c = self.gamma.elem_count();
        let rows = (xs.elem_count() / c) as f64;
        let mean = Tensor::from_slice(&batch.mean, c, xs.device())?;
        let var = Tensor::from_slice(&batch.var, c, xs.device())?;
        let unbiased = (var * (rows / (rows - 1.0).max(1.0)))?;
        let m = self.momentum;
        self.running_mean
            .set(&((self.running_mean.as_tensor() * (1.0 - m))? + (mean * m)?)?)?;
        self.running_var
            .set(&((self.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?)?;
        Ok(ys)
    }
}

/// One batch's per-channel statistics, measured by the forward pass and reused by the
/// running statistics and the backward pass.
#[derive(Debug)]
struct Moments {
    mean: Vec<f32>,
    var: Vec<f32>,
    inv_std: Vec<f32>,
}

/// Rows per task of the parallel passes: a fixed size, so that the f64 sums are added in the
/// same order, and a run is the same, on any number of threads.
const ROWS_PER_TASK: usize = 1024;

/// Runs `f` on each task's rows of `x` (`c` values per row), in parallel when candle may use
/// more than one thread, and returns the results in order.
fn per_task<T: Send>(x: &[f32], c: usize, f: impl Fn(usize, &[f32]) -> T + Sync) -> Vec<T> {
    let size = ROWS_PER_TASK * c;
    if candle_core::utils::get_num_threads() > 1 {
        x.par_chunks(size)
            .enumerate()
            .map(|(i, x)| f(i * size, x))
            .collect()
    } else {
        x.chunks(size)
            .enumerate()
            .map(|(i, x)| f(i * size, x))
            .collect()
    }
}

/// Fills `out` task by task from the same positions of the inputs, in parallel as above.
fn fill(out: &mut [f32], c: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let size = ROWS_PER_TASK * c;
    if candle_core::utils::get_num_threads() > 1 {
        out.par_chunks_mut(size)
            .enumerate()
            .for_each(|(i, o)| f(i * size, o));
    } else {
        out.chunks_mut(size)
            .enumerate()
            .for_each(|(i, o)| f(i * size, o));
    }
}

/// Adds each task's per-channel partial sums (`K` rows of `c`), in task order.
fn total<const K: usize>(parts: Vec<[Vec<f64>; K]>, c: usize) -> [Vec<f64>; K] {
    let mut total: [Vec<f64>; K] = std::array::from_fn(|_| vec![0f64; c]);
    for part in parts {
        for (t, p) in total.iter_mut().zip(&part) {
            for (t, p) in t.iter_mut().zip(p) {
                *t += p;
            }
        }
    }
    total
}

/// Per channel: Σx and Σx².
fn sums(x: &[f32], c: usize) -> [Vec<f64>; 2] {
    let parts = per_task(x, c, |_, x| {
        let (mut sum, mut sq) = (vec![0f64; c], vec![0f64; c]);
        for row in x.chunks_exact(c) {
            for ((s, q), &v) in sum.iter_mut().zip(&mut sq).zip(row) {
                let v = v as f64;
                *s += v;
                *q += v * v;
            }
        }
        [sum, sq]
    });
    total(parts, c)
}

/// Per-channel mean, biased variance and `1/√(var + eps)` of `x` seen as `(rows, c)`.
fn moments(x: &[f32], c: usize, eps: f64) -> Moments {
    let [sum, sq] = sums(x, c);
    let n = (x.len() / c).max(1) as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let var: Vec<f64> = sq
        .iter()
        .zip(&mean)
        .map(|(q, m)| (q / n - m * m).max(0.0))
        .collect();
    let inv_std = var
        .iter()
        .map(|v| (1.0 / (v + eps).sqrt()) as f32)
        .collect();
    Moments {
        mean: mean.iter().map(|&m| m as f32).collect(),
        var: var.iter().map(|&v| v as f32).collect(),
        inv_std,
    }
}

fn channels(layout: &Layout) -> Result<usize> {
    layout
        .shape()
        .dims()
        .last()
        .copied()
        .filter(|&c| c > 0)
        .ok_or_else(|| candle_core::Error::Msg("batch norm: no channel dimension".into()))
}

/// The channel count of the first operand, and every operand's values.
fn operands<'a, const N: usize>(
    op: &str,
    args: [(&'a CpuStorage, &Layout); N],
) -> Result<(usize, [&'a [f32]; N])> {
    let c = channels(args[0].1)?;
    let mut out = [&[][..]; N];
    for (o, (s, l)) in out.iter_mut().zip(args) {
        *o = f32_slice(s, l, op)?;
    }
    Ok((c, out))
}

/// `y = (x − mean)·inv_std·γ + β` with the batch's own statistics, then ReLU if `relu`.
struct Normalize {
    eps: f64,
    /// Filled by the forward pass.
    stats: Arc<OnceLock<Moments>>,
    relu: bool,
}

/// Which outputs a fused ReLU let through: those whose normalised value, computed as the
/// forward pass computed it, is ≥ 0 (candle's ReLU passes the gradient at 0 too).
struct Gate {
    mean: Vec<f32>,
    scale: Vec<f32>,
    beta: Vec<f32>,
}

impl Gate {
    fn relu(stats: &Moments, gamma: &[f32], beta: &[f32]) -> Self {
        Self {
            mean: stats.mean.clone(),
            scale: scale(gamma, &stats.inv_std),
            beta: beta.to_vec(),
        }
    }

    /// A gate that lets everything through, for the layer without ReLU: one loop serves
    /// both, and it has no branch to keep it from being vectorised.
    fn open(c: usize) -> Self {
        Self {
            mean: vec![0.0; c],
            scale: vec![0.0; c],
            beta: vec![1.0; c],
        }
    }

    /// The gradient `g` at channel `i` of an output whose input was `x`.
    #[inline]
    fn pass(&self, i: usize, x: f32, g: f32) -> f32 {
        let open = (x - self.mean[i]) * self.scale[i] + self.beta[i] >= 0.0;
        if open {
            g
        } else {
            0.0
        }
    }
}

/// `γ·inv_std` per channel, the one product both the forward pass and [`Gate`] use.
fn scale(gamma: &[f32], inv_std: &[f32]) -> Vec<f32> {
    gamma.iter().zip(inv_std).map(|(g, s)| g * s).collect()
}

impl CustomOp3 for Normalize {
    fn name(&self) -> &'static str {
        "batch-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (c, [x, gamma, beta]) = operands(self.name(), [(s1, l1), (s2, l2), (s3, l3)])?;
        let stats = self.stats.get_or_init(|| moments(x, c, self.eps));
        let (mean, inv_std) = (&stats.mean, &stats.inv_std);
        let scale = scale(gamma, inv_std);
        let floor = if self.relu { 0.0 } else { f32::NEG_INFINITY };
        let mut y = vec![0f32; x.len()];
        fill(&mut y, c, |at, out| {
            for (o, xr) in out.chunks_exact_mut(c).zip(x[at..].chunks_exact(c)) {
                for i in 0..c {
                    o[i] = ((xr[i] - mean[i]) * scale[i] + beta[i]).max(floor);
                }
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let Some(stats) = self.stats.get() else {
            candle_core::bail!("batch norm: backward before forward");
        };
        let gate = match self.relu {
            true => Gate::relu(stats, &gamma.to_vec1()?, &beta.to_vec1()?),
            false => Gate::open(stats.mean.len()),
        };
        // (4, c): Σg, Σg·x̂, the mean and 1/σ; then γ, so that the input gradient's pass has
        // all it needs without going over x again for the statistics.
        let sums = x.apply_op2_no_bwd(&grad, &GradSums(stats, &gate))?;
        let with_gamma = Tensor::cat(&[&sums, &gamma.unsqueeze(0)?], 0)?;
        let dx = x.apply_op3_no_bwd(&grad, &with_gamma, &InputGrad(&gate))?;
        Ok((Some(dx), Some(sums.get(1)?), Some(sums.get(0)?)))
    }
}

/// Per channel: Σ g, Σ g·x̂, the batch mean and 1/σ, as `(4, c)`; `g` through the gate.
struct GradSums<'a>(&'a Moments, &'a Gate);

impl candle_core::CustomOp2 for GradSums<'_> {
    fn name(&self) -> &'static str {
        "batch-norm-grad-sums"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (c, [x, g]) = operands(self.name(), [(s1, l1), (s2, l2)])?;
        let (mean, inv_std) = (&self.0.mean, &self.0.inv_std);
        if mean.len() != c || g.len() != x.len() {
            candle_core::bail!("batch-norm-grad-sums: operands do not match");
        }
        let parts = per_task(x, c, |at, x| {
            let (mut dbeta, mut dgamma) = (vec![0f64; c], vec![0f64; c]);
            for (xr, gr) in x.chunks_exact(c).zip(g[at..].chunks_exact(c)) {
                for i in 0..c {
                    let g = self.1.pass(i, xr[i], gr[i]);
                    dbeta[i] += g as f64;
                    dgamma[i] += (g * (xr[i] - mean[i]) * inv_std[i]) as f64;
                }
            }
            [dbeta, dgamma]
        });
        let [dbeta, dgamma] = total(parts, c);
        let out: Vec<f32> = dbeta
            .iter()
            .chain(&dgamma)
            .map(|&v| v as f32)
            .chain(mean.iter().chain(inv_std).copied())
            .collect();
        Ok((CpuStorage::F32(out), Shape::from((4, c))))
    }
}

/// `dx = γ·inv_std·(g − (Σg + x̂·Σg·x̂)/n)`, the gradient through the batch's statistics;
/// its third operand is `(5, c)`: Σg, Σg·x̂, mean, 1/σ, γ; `g` through the gate.
struct InputGrad<'a>(&'a Gate);

impl CustomOp3 for InputGrad<'_> {
    fn name(&self) -> &'static str {
        "batch-norm-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (c, [x, g, params]) = operands(self.name(), [(s1, l1), (s2, l2), (s3, l3)])?;
        if params.len() != 5 * c || g.len() != x.len() {
            candle_core::bail!("batch-norm-input-grad: operands do not match");
        }
        let p: Vec<&[f32]> = params.chunks_exact(c).collect();
        let (dbeta, dgamma, mean, inv_std, gamma) = (p[0], p[1], p[2], p[3], p[4]);
        let n = (x.len() / c).max(1) as f32;
        let mut dx = vec![0f32; x.len()];
        fill(&mut dx, c, |at, out| {
            let rows = out.chunks_exact_mut(c);
            for ((o, xr), gr) in rows
                .zip(x[at..].chunks_exact(c))
                .zip(g[at..].chunks_exact(c))
            {
                for i in 0..c {
                    let g = self.0.pass(i, xr[i], gr[i]);
                    let xhat = (xr[i] - mean[i]) * inv_std[i];
                    o[i] = gamma[i] * inv_std[i] * (g - (dbeta[i] + xhat * dgamma[i]) / n);
                }
            }
        });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::{ModuleT, VarMap};

    /// The same layer twice, γ and β away from the identity: ours, and candle-nn's.
    fn pair(c: usize) -> (VarMap, BatchNorm, VarMap, candle_nn::BatchNorm) {
        let gamma = Tensor::rand(0.5f32, 2.0, c, &Device::Cpu).unwrap();
        let beta = Tensor::rand(-1f32, 1.0, c, &Device::Cpu).unwrap();
        let mut out = Vec::new();
        for _ in 0..2 {
            let vm = VarMap::new();
            vm.get(c, "bn.weight", Init::Const(1.0), DType::F32, &Device::Cpu)
                .unwrap();
            vm.get(c, "bn.bias", Init::Const(0.0), DType::F32, &Device::Cpu)
                .unwrap();
            vm.data().lock().unwrap()["bn.weight"].set(&gamma).unwrap();
            vm.data().lock().unwrap()["bn.bias"].set(&beta).unwrap();
            out.push(vm);
        }
        let theirs_vm = out.pop().unwrap();
        let ours_vm = out.pop().unwrap();
        let vb = |vm: &VarMap| VarBuilder::from_varmap(vm, DType::F32, &Device::Cpu).pp("bn");
        let ours = BatchNorm::new(c, 1e-5, vb(&ours_vm)).unwrap();
        let theirs = candle_nn::batch_norm(c, 1e-5, vb(&theirs_vm)).unwrap();
        (ours_vm, ours, theirs_vm, theirs)
    }

    fn close(a: &Tensor, b: &Tensor, what: &str) {
        let diff = crate::conv::tests::max_diff(a, b);
        assert!(diff < 1e-4, "{what}: max difference {diff}");
    }

    #[test]
    fn matches_candle_nn_forward_backward_and_running_statistics() {
        matches_candle_nn(false);
    }

    #[test]
    fn with_relu_matches_candle_nn_then_candle_relu() {
        matches_candle_nn(true);
    }

    fn matches_candle_nn(relu: bool) {
        let c = 6;
        let (ours_vm, ours, theirs_vm, theirs) = pair(c);
        // candle-nn's layer on NHWC values, then candle's ReLU if asked.
        let theirs_on = |x: &Tensor, train: bool| {
            let y = theirs
                .forward_t(&x.reshape(((), c)).unwrap(), train)
                .unwrap()
                .reshape((4, 20, 20, c))
                .unwrap();
            if relu {
                y.relu().unwrap()
            } else {
                y
            }
        };
        // NHWC, with a per-channel offset and spread so the statistics matter; 1,600 rows, so
        // the passes run as more than one task.
        let x = Tensor::randn(0f32, 1., (4, 20, 20, c), &Device::Cpu)
            .unwrap()
            .broadcast_mul(&Tensor::new(&[1f32, 2., 0.5, 3., 1., 0.1], &Device::Cpu).unwrap())
            .unwrap()
            .broadcast_add(&Tensor::new(&[0f32, 1., -2., 5., 0.3, 0.], &Device::Cpu).unwrap())
            .unwrap();
        let x = Var::from_tensor(&x).unwrap();
        // A loss that weighs every output differently, so every gradient term shows.
        let w = Tensor::randn(0f32, 1., (4, 20, 20, c), &Device::Cpu).unwrap();
        let y_ours = ours.apply(x.as_tensor(), true, relu).unwrap();
        let y_theirs = theirs_on(x.as_tensor(), true);
        if relu {
            // The gate matters: a good share of the outputs is cut.
            let cut = y_ours.eq(0f32).unwrap().to_dtype(DType::F32).unwrap();
            let share = cut.mean_all().unwrap().to_scalar::<f32>().unwrap();
            assert!((0.2..0.8).contains(&share), "{share}");
        }
        close(&y_ours, &y_theirs, "forward");
        let g_ours = (&y_ours * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g_theirs = (&y_theirs * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        close(
            g_ours.get(x.as_tensor()).unwrap(),
            g_theirs.get(x.as_tensor()).unwrap(),
            "input gradient",
        );
        let (ours_d, theirs_d) = (
            ours_vm.data().lock().unwrap(),
            theirs_vm.data().lock().unwrap(),
        );
        for name in ["bn.weight", "bn.bias"] {
            close(
                g_ours.get(ours_d[name].as_tensor()).unwrap(),
                g_theirs.get(theirs_d[name].as_tensor()).unwrap(),
                name,
            );
        }
        for name in ["bn.running_mean", "bn.running_var"] {
            close(ours_d[name].as_tensor(), theirs_d[name].as_tensor(), name);
        }
        drop((ours_d, theirs_d));
        // Eval mode: the running statistics.
        let eval_theirs = theirs_on(x.as_tensor(), false);
        close(
            &ours.apply(x.as_tensor(), false, relu).unwrap(),
            &eval_theirs,
            "eval",
        );
    }
}
