//! The digit classifier: one definition shared by the `train` binary and the server.
//!
//! Input: `(batch, 1, 28, 28)` f32, normalised with [`MEAN`] and [`STD`] (see
//! [`crate::preprocess::normalize`]). Output: `(batch, 10)` logits.
//! Why this shape of network (and what else was measured) is told in the README.

use std::sync::Mutex;

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{linear, Linear, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::conv::{Conv, Window};
use crate::data::IMAGE_SIDE;

/// Name recorded in the weights file; bump it whenever the layers below change.
pub const ARCHITECTURE: &str = "mnist-cnn-v2";
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

/// Two strided convolutions (5×5 then 3×3, no pooling), then two dense layers.
#[derive(Debug)]
pub struct Net {
    conv1: Conv,
    conv2: Conv,
    fc1: Linear,
    fc2: Linear,
    flat: usize,
    dropout_rng: Mutex<ChaCha8Rng>,
}

impl Net {
    /// Declares every layer under its safetensors name (`conv1.weight`, `fc2.bias`, …).
    pub fn new(vb: VarBuilder) -> Result<Self> {
        let side = HALVE.out(FIRST.out(IMAGE_SIDE));
        let flat = side * side * C2;
        Ok(Self {
            conv1: Conv::new(vb.pp("conv1"), 1, C1, FIRST)?,
            conv2: Conv::new(vb.pp("conv2"), C1, C2, HALVE)?,
            fc1: linear(flat, HIDDEN, vb.pp("fc1"))?,
            fc2: linear(HIDDEN, CLASSES, vb.pp("fc2"))?,
            flat,
            dropout_rng: Mutex::new(ChaCha8Rng::seed_from_u64(0)),
        })
    }

    /// Prepares a loaded (no longer trained) network for fast inference.
    pub fn freeze(&mut self) -> Result<()> {
        self.conv1.freeze()?;
        self.conv2.freeze()
    }

    /// Reseeds the dropout masks, so a training run is a function of its seed.
    pub fn seed_dropout(&self, seed: u64) {
        // A different stream from the one that initialised the weights.
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(1);
        *self.lock_rng() = rng;
    }

    /// Logits for a normalised batch; dropout is applied only when `train` is set.
    pub fn forward(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        let b = xs.dim(0)?;
        // A single channel makes NCHW and NHWC the same bytes.
        let xs = xs.reshape((b, IMAGE_SIDE, IMAGE_SIDE, 1))?;
        let xs = self.conv1.forward(&xs)?.relu()?;
        let xs = self.conv2.forward(&xs)?.relu()?;
        let xs = xs.reshape((b, self.flat))?;
        let xs = self.fc1.forward(&xs)?.relu()?;
        let xs = self.dropout(&xs, train)?;
        self.fc2.forward(&xs)
    }

    /// Class probabilities (softmax of the logits), in eval mode.
    pub fn probabilities(&self, xs: &Tensor) -> Result<Tensor> {
        candle_nn::ops::softmax(&self.forward(xs, false)?, D::Minus1)
    }

    fn dropout(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        if !train {
            return Ok(xs.clone());
        }
        // candle's own dropout draws from an unseedable CPU RNG; ours keeps runs reproducible.
        let scale = 1.0 / (1.0 - DROPOUT);
        let mask: Vec<f32> = {
            let mut rng = self.lock_rng();
            (0..xs.elem_count())
                .map(|_| {
                    if rng.gen::<f32>() < DROPOUT {
                        0.0
                    } else {
                        scale
                    }
                })
                .collect()
        };
        xs * Tensor::from_vec(mask, xs.shape(), xs.device())?
    }

    fn lock_rng(&self) -> std::sync::MutexGuard<'_, ChaCha8Rng> {
        // A poisoned lock only means another thread panicked mid-draw; the RNG state is still usable.
        self.dropout_rng
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Names and shapes of every parameter the architecture declares, sorted by name.
pub fn parameter_shapes() -> Result<Vec<(String, Vec<usize>)>> {
    let varmap = VarMap::new();
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
    for name in names {
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
        assert_eq!(net.forward(&xs, false).unwrap().dims(), &[3, 10]);
        assert_eq!(net.forward(&xs, true).unwrap().dims(), &[3, 10]);
    }

    #[test]
    fn same_seed_same_weights_and_eval_is_deterministic() {
        let xs = Tensor::randn(0f32, 1., (2, 1, 28, 28), &Device::Cpu).unwrap();
        let (_, a) = fresh(7);
        let (_, b) = fresh(7);
        let (_, c) = fresh(8);
        let la = a.forward(&xs, false).unwrap().to_vec2::<f32>().unwrap();
        let lb = b.forward(&xs, false).unwrap().to_vec2::<f32>().unwrap();
        let lc = c.forward(&xs, false).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(la, lb);
        assert_ne!(la, lc);
    }

    #[test]
    fn dropout_only_in_training() {
        let (_, net) = fresh(3);
        let xs = Tensor::randn(0f32, 1., (4, 1, 28, 28), &Device::Cpu).unwrap();
        let e1 = net.forward(&xs, false).unwrap().to_vec2::<f32>().unwrap();
        let e2 = net.forward(&xs, false).unwrap().to_vec2::<f32>().unwrap();
        let t1 = net.forward(&xs, true).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(e1, e2);
        assert_ne!(e1, t1);
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
                "fc1.bias",
                "fc1.weight",
                "fc2.bias",
                "fc2.weight"
            ]
        );
    }
}
