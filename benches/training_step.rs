//! One training step (forward, cross-entropy, backward; batch 128) of the digit CNN on the CPU:
//! the model as shipped, with its im2col convolutions (`src/conv.rs`), against the same layers
//! written with candle's own `conv2d`, the way candle's examples write a model. This is the
//! measurement that decides which convolution `Net` trains with.
//!
//! `cargo bench --bench training_step`; about a minute.

use std::hint::black_box;
use std::time::Duration;

use candle_core::{DType, Device, Module, ModuleT, Result, Tensor};
use candle_nn::{conv2d, linear, loss, Conv2d, Conv2dConfig, Dropout, Linear, VarBuilder, VarMap};
use criterion::{criterion_group, criterion_main, Criterion};
use mnist_api::model::{self, Net};

const BATCH: usize = 128;

/// `mnist-cnn-v3` on NCHW tensors, candle's layout for `conv2d`, so it pays no permutes.
struct CandleNet {
    conv1: Conv2d,
    conv2: Conv2d,
    conv3: Conv2d,
    fc1: Linear,
    fc2: Linear,
    dropout: Dropout,
}

impl CandleNet {
    fn new(vb: VarBuilder) -> Result<Self> {
        let cfg = |padding, stride| Conv2dConfig {
            padding,
            stride,
            ..Default::default()
        };
        Ok(Self {
            conv1: conv2d(1, 32, 5, cfg(2, 2), vb.pp("conv1"))?,
            conv2: conv2d(32, 64, 3, cfg(1, 2), vb.pp("conv2"))?,
            conv3: conv2d(64, 64, 3, cfg(1, 2), vb.pp("conv3"))?,
            fc1: linear(64 * 4 * 4, 128, vb.pp("fc1"))?,
            fc2: linear(128, 10, vb.pp("fc2"))?,
            dropout: Dropout::new(0.25),
        })
    }
}

impl ModuleT for CandleNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        let xs = self.conv1.forward(xs)?.relu()?;
        let xs = self.conv2.forward(&xs)?.relu()?;
        let xs = self.conv3.forward(&xs)?.relu()?.flatten_from(1)?;
        let xs = self.fc1.forward(&xs)?.relu()?;
        self.dropout.forward_t(&xs, train)?.apply(&self.fc2)
    }
}

/// Shapes of every variable, sorted by name, as `model::parameter_shapes` lists them.
fn shapes(varmap: &VarMap) -> Vec<(String, Vec<usize>)> {
    let data = varmap.data().lock().unwrap();
    let mut shapes: Vec<_> = data
        .iter()
        .map(|(name, var)| (name.clone(), var.dims().to_vec()))
        .collect();
    shapes.sort();
    shapes
}

/// Forward with dropout, loss, gradients of every variable: what a step costs before the
/// optimiser, which is the same for both.
fn step(net: &impl ModuleT, xs: &Tensor, ys: &Tensor) -> Result<()> {
    let loss = loss::cross_entropy(&net.forward_t(xs, true)?, ys)?;
    black_box(loss.backward()?);
    Ok(())
}

fn training_step(c: &mut Criterion) {
    let device = Device::Cpu;
    let xs = Tensor::randn(0f32, 1., (BATCH, 1, 28, 28), &device).unwrap();
    let labels: Vec<u32> = (0..BATCH as u32).map(|i| i % 10).collect();
    let ys = Tensor::new(labels.as_slice(), &device).unwrap();

    let ours = VarMap::new();
    let net = Net::new(VarBuilder::from_varmap(&ours, DType::F32, &device)).unwrap();
    model::init_deterministic(&ours, 1).unwrap();
    let theirs = VarMap::new();
    let candle_net = CandleNet::new(VarBuilder::from_varmap(&theirs, DType::F32, &device)).unwrap();
    model::init_deterministic(&theirs, 1).unwrap();
    // Same parameters layer for layer, so the comparison is of the convolutions alone.
    assert_eq!(shapes(&theirs), model::parameter_shapes().unwrap());

    let mut g = c.benchmark_group("training step (batch 128, forward+backward)");
    g.bench_function("im2col (model::Net)", |b| {
        b.iter(|| step(&net, &xs, &ys).unwrap())
    });
    g.bench_function("candle conv2d", |b| {
        b.iter(|| step(&candle_net, &xs, &ys).unwrap())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    // Each step takes tens of milliseconds: ten samples over a few seconds keep the whole run
    // near a minute on a shared two-core machine.
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(3))
        .measurement_time(Duration::from_secs(15));
    targets = training_step
}
criterion_main!(benches);
