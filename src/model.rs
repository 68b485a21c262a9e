//! The digit classifier: one definition shared by the `train` binary and the server.
//!
//! Input: `(batch, 1, 28, 28)` f32, normalised with [`MEAN`] and [`STD`] (see
//! [`crate::preprocess::normalize`]). Output: `(batch, 10)` logits.
//! Why this shape of network (and what else was measured) is told in the README.

use candle_core::{DType, Device, Module, ModuleT, Result, Shape, Tensor, D};
use candle_nn::{linear, Dropout, Linear, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::batch_norm::BatchNorm;
use crate::conv::{Conv, Window};
use crate::data::IMAGE_SIDE;
use crate::fold;

/// Name recorded in the weights file; bump it whenever the layers below change.
pub const ARCHITECTURE: &str = "mnist-cnn-v3";
/// Mean of the MNIST training pixels (scaled to 0..1), subtracted before the network.
pub const MEAN: f32 = 0.1307;
/// Standard deviation of the MNIST training pixels (scaled to 0..1).
pub const STD: f32 = 0.3081;
/// Number of classes.
pub const CLASSES: usize = 10;

const C1: usize = 32;
const C2: usize = 64;
const HIDDEN: usize = 128;
const DROPOUT: f32 = 0.25;

/// 5×5 with stride 2: sees a stroke's width and halves the image in one step.
const FIRST: Window = Window {
    k: 5,
    stride: 2,
    pad: 2,
};
const HALVE: Window = Window {
    k: 3,
    stride: 2,
    pad: 1,
};

/// Three strided convolutions (5×5, then 3×3 twice; no pooling), then two dense layers.
///
/// The third convolution (7×7 → 4×4) widens what one feature sees from 9 to 17 pixels, and
/// shrinks the dense layer's input from 3,136 to 1,024 values: 22 % more multiply-adds per
/// image but 55 % fewer parameters (the README tells what it bought).
///
/// Run it as a [`ModuleT`]: `forward_t(xs, false)` for inference, `forward_t(xs, true)` for
/// training with candle's own dropout. A run that must be a function of its seed uses
/// [`Net::forward_train`] instead, since candle's CPU random numbers cannot be seeded.
#[derive(Debug)]
pub struct Net {
    conv1: Conv,
    conv2: Conv,
    conv3: Conv,
    fc1: Linear,
    fc2: Linear,
    dropout: Dropout,
    flat: usize,
    /// Batch norm after each convolution, in training only ([`fold::fold`] removes it).
    norm: Option<[BatchNorm; 3]>,
}

/// Batch norm's ε, also used when it is folded.
pub const NORM_EPS: f64 = 1e-5;

impl Net {
    /// Declares every layer under its safetensors name (`conv1.weight`, `fc2.bias`, …) on
    /// `vb`'s device.
    pub fn new(vb: VarBuilder) -> Result<Self> {
        let side = HALVE.out(HALVE.out(FIRST.out(IMAGE_SIDE)));
        let flat = side * side * C2;
        Ok(Self {
            conv1: Conv::new(vb.pp("conv1"), 1, C1, FIRST)?,
            conv2: Conv::new(vb.pp("conv2"), C1, C2, HALVE)?,
            conv3: Conv::new(vb.pp("conv3"), C2, C2, HALVE)?,
            fc1: linear(flat, HIDDEN, vb.pp("fc1"))?,
            fc2: linear(HIDDEN, CLASSES, vb.pp("fc2"))?,
            dropout: Dropout::new(DROPOUT),
            flat,
            norm: None,
        })
    }

    /// [`Net::new`] with a batch norm after each convolution (under `bn1`, `bn2`), for
    /// training; fold it away ([`fold::fold`]) before saving.
    pub fn with_batch_norm(vb: VarBuilder) -> Result<Self> {
        let mut net = Self::new(vb.clone())?;
        let [(_, bn1), (_, bn2), (_, bn3)] = fold::PAIRS;
        net.norm = Some([
            BatchNorm::new(C1, NORM_EPS, vb.pp(bn1))?,
            BatchNorm::new(C2, NORM_EPS, vb.pp(bn2))?,
            BatchNorm::new(C2, NORM_EPS, vb.pp(bn3))?,
        ]);
        Ok(net)
    }

    /// Where the weights live; inputs must be put there too.
    pub fn device(&self) -> &Device {
        self.fc2.weight().device()
    }

    /// Prepares a loaded (no longer trained) network for fast inference.
    pub fn freeze(&mut self) -> Result<()> {
        self.conv1.freeze()?;
        self.conv2.freeze()?;
        self.conv3.freeze()
    }

    /// Training logits, with the dropout mask drawn from `rng` so that the caller, which
    /// owns the RNG, makes the run reproducible.
    pub fn forward_train(&self, xs: &Tensor, rng: &mut impl Rng) -> Result<Tensor> {
        let hidden = self.hidden(xs, true)?;
        let mask = dropout_mask(hidden.shape(), hidden.device(), rng)?;
        (hidden * mask)?.apply(&self.fc2)
    }

    /// Class probabilities (softmax of the logits), in eval mode.
    pub fn probabilities(&self, xs: &Tensor) -> Result<Tensor> {
        candle_nn::ops::softmax(&self.forward_t(xs, false)?, D::Minus1)
    }

    /// Everything up to the dropout: the activations of the hidden dense layer.
    fn hidden(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        let b = xs.dim(0)?;
        // A single channel makes NCHW and NHWC the same bytes.
        let xs = xs.reshape((b, IMAGE_SIDE, IMAGE_SIDE, 1))?;
        let xs = match &self.norm {
            None => {
                let xs = self.conv2.forward_relu(&self.conv1.forward_relu(&xs)?)?;
                self.conv3.forward_relu(&xs)?
            }
            Some([bn1, bn2, bn3]) => {
                let xs = bn1.forward_relu_t(&self.conv1.forward(&xs)?, train)?;
                let xs = bn2.forward_relu_t(&self.conv2.forward(&xs)?, train)?;
                bn3.forward_relu_t(&self.conv3.forward(&xs)?, train)?
            }
        };
        let xs = xs.reshape((b, self.flat))?;
        self.fc1.forward(&xs)?.relu()
    }
}

impl ModuleT for Net {
    /// `(batch, 1, 28, 28)` normalised images → `(batch, 10)` logits; dropout only if `train`.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        let hidden = self.hidden(xs, train)?;
        self.dropout.forward_t(&hidden, train)?.apply(&self.fc2)
    }
}

/// Inverted dropout: zero with probability [`DROPOUT`], otherwise scaled so the expected
/// activation is unchanged. Drawn element by element in order so that a given RNG state
/// always gives the same mask (the committed weights were trained with this sequence).
fn dropout_mask(shape: &Shape, device: &Device, rng: &mut impl Rng) -> Result<Tensor> {
    let scale = 1.0 / (1.0 - DROPOUT);
    let mask: Vec<f32> = (0..shape.elem_count())
        .map(|_| {
            if rng.gen::<f32>() < DROPOUT {
                0.0
            } else {
                scale
            }
        })
        .collect();
    Tensor::from_vec(mask, shape, device)
}

/// Names and shapes of every parameter the architecture declares, sorted by name.
pub fn parameter_shapes() -> Result<Vec<(String, Vec<usize>)>> {
    let varmap = VarMap::new();
    // Only the shapes are kept, and they do not depend on the device: the CPU is always there.
    Net::new(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
    let data = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
    let mut shapes: Vec<_> = data
        .iter()
        .map(|(name, var)| (name.clone(), var.dims().to_vec()))
        .collect();
    shapes.sort();
    Ok(shapes)
}

/// Overwrites every variable with a draw from a seeded RNG (Kaiming-uniform weights,
/// fan-in-scaled biases, as candle and PyTorch do), because candle's CPU initialisers cannot
/// be seeded.
pub fn init_deterministic(varmap: &VarMap, seed: u64) -> Result<()> {
    let data = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Batch norm starts as the identity (γ 1, β 0, μ 0, σ² 1), as declared; skipping it also
    // leaves every other tensor's draws as they were without it.
    for name in names.into_iter().filter(|n| !n.starts_with("bn")) {
        let var = &data[name];
        let layer = name.rsplit_once('.').map_or("", |(l, _)| l);
        let weight = &data
            .get(&format!("{layer}.weight"))
            .ok_or_else(|| candle_core::Error::Msg(format!("{name}: no sibling weight")))?;
        let fan_in: usize = weight.dims()[1..].iter().product();
        let bound = if name.ends_with(".weight") {
            (6.0 / fan_in as f64).sqrt()
        } else {
            1.0 / (fan_in as f64).sqrt()
        } as f32;
        let values: Vec<f32> = (0..var.elem_count())
            .map(|_| rng.gen_range(-bound..bound))
            .collect();
        var.set(&Tensor::from_vec(values, var.shape(), var.device())?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(seed: u64) -> (VarMap, Net) {
        let varmap = VarMap::new();
        let net = Net::new(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
        init_deterministic(&varmap, seed).unwrap();
        (varmap, net)
    }

    #[test]
    fn logits_have_one_row_per_image() {
        let (_, net) = fresh(1);
        let xs = Tensor::zeros((3, 1, 28, 28), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(net.forward_t(&xs, false).unwrap().dims(), &[3, 10]);
        assert_eq!(net.forward_t(&xs, true).unwrap().dims(), &[3, 10]);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert_eq!(net.forward_train(&xs, &mut rng).unwrap().dims(), &[3, 10]);
    }

    #[test]
    fn same_seed_same_weights_and_eval_is_deterministic() {
        let xs = Tensor::randn(0f32, 1., (2, 1, 28, 28), &Device::Cpu).unwrap();
        let (_, a) = fresh(7);
        let (_, b) = fresh(7);
        let (_, c) = fresh(8);
        let la = a.forward_t(&xs, false).unwrap().to_vec2::<f32>().unwrap();
        let lb = b.forward_t(&xs, false).unwrap().to_vec2::<f32>().unwrap();
        let lc = c.forward_t(&xs, false).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(la, lb);
        assert_ne!(la, lc);
    }

    #[test]
    fn a_frozen_network_answers_as_the_trainable_one() {
        let (_, mut net) = fresh(9);
        let xs = Tensor::randn(0f32, 1., (5, 1, 28, 28), &Device::Cpu).unwrap();
        let want = net.probabilities(&xs).unwrap();
        net.freeze().unwrap();
        let got = net.probabilities(&xs).unwrap();
        let diff = crate::conv::tests::max_diff(&got, &want);
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    fn dropout_only_in_training() {
        let (_, net) = fresh(3);
        let xs = Tensor::randn(0f32, 1., (4, 1, 28, 28), &Device::Cpu).unwrap();
        let e1 = net.forward_t(&xs, false).unwrap().to_vec2::<f32>().unwrap();
        let e2 = net.forward_t(&xs, false).unwrap().to_vec2::<f32>().unwrap();
        let t1 = net.forward_t(&xs, true).unwrap().to_vec2::<f32>().unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let t2 = net
            .forward_train(&xs, &mut rng)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(e1, e2);
        assert_ne!(e1, t1);
        assert_ne!(e1, t2);
    }

    #[test]
    fn training_dropout_follows_the_callers_rng() {
        let (_, net) = fresh(4);
        let xs = Tensor::randn(0f32, 1., (4, 1, 28, 28), &Device::Cpu).unwrap();
        let run = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let first = net.forward_train(&xs, &mut rng).unwrap();
            let second = net.forward_train(&xs, &mut rng).unwrap();
            (
                first.to_vec2::<f32>().unwrap(),
                second.to_vec2::<f32>().unwrap(),
            )
        };
        let (a1, a2) = run(9);
        let (b1, b2) = run(9);
        let (c1, _) = run(10);
        assert_eq!((&a1, &a2), (&b1, &b2));
        // The RNG advances: consecutive steps get fresh masks.
        assert_ne!(a1, a2);
        assert_ne!(a1, c1);
    }

    #[test]
    fn parameter_shapes_list_every_layer() {
        let names: Vec<String> = parameter_shapes()
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            names,
            [
                "conv1.bias",
                "conv1.weight",
                "conv2.bias",
                "conv2.weight",
                "conv3.bias",
                "conv3.weight",
                "fc1.bias",
                "fc1.weight",
                "fc2.bias",
                "fc2.weight"
            ]
        );
    }
}
