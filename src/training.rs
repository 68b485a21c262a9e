//! The training loop and test-set evaluation, shared by the `train` binary and the tests.

use std::time::{Duration, Instant};

use candle_core::{DType, Device, ModuleT, Tensor, D};
use candle_nn::{loss, AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::augment::Augment;
use crate::batches::{self, Plan};
use crate::data::{Split, IMAGE_PIXELS};
use crate::ema::Ema;
use crate::fold;
use crate::model::{self, Net, CLASSES};
use crate::preprocess;

/// Hyper-parameters of one run. `Default` is what `make train` uses.
#[derive(Clone, Debug)]
pub struct Config {
    /// Passes over the training set.
    pub epochs: usize,
    /// Images per optimiser step.
    pub batch_size: usize,
    /// Peak learning rate (AdamW), reached after warm-up, then cosine-decayed.
    pub lr: f64,
    /// Seeds weight init, shuffling, augmentation and dropout.
    pub seed: u64,
    /// Random shifts of up to this many pixels (0 disables them).
    pub max_shift: usize,
    /// Distortions matching the robustness suite, applied before the shift.
    pub augment: Augment,
    /// Weight of the uniform distribution mixed into the targets (0 = plain cross-entropy).
    pub label_smoothing: f64,
    /// Decay of the exponential moving average of the weights that is evaluated and kept
    /// (0 = off: the last step's weights).
    pub ema: f64,
    /// Batch norm after each convolution while training, folded into it at the end.
    pub batch_norm: bool,
}

impl Default for Config {
    /// The recipe of the committed weights; the README's training section tells what each part
    /// bought and what it costs.
    fn default() -> Self {
        Self {
            epochs: 11,
            batch_size: 128,
            lr: 1e-2,
            seed: 1,
            max_shift: 2,
            augment: Augment {
                prob: 0.5,
                stroke_prob: 0.5,
                max_rotation_deg: 15.0,
                scale: (0.8, 1.2),
                max_shear: 0.3,
                elastic_prob: 0.0,
                elastic: (10.0, 4.0),
            },
            label_smoothing: 0.0,
            ema: 0.0,
            batch_norm: true,
        }
    }
}

/// Progress of the current epoch, reported after every batch.
#[derive(Clone, Copy, Debug)]
pub struct Step {
    /// Zero-based epoch.
    pub epoch: usize,
    /// Batches done in this epoch.
    pub batch: usize,
    /// Batches in an epoch.
    pub batches: usize,
    /// Mean loss over the epoch so far.
    pub running_loss: f32,
}

/// What one epoch achieved.
#[derive(Clone, Debug)]
pub struct EpochReport {
    /// Zero-based epoch.
    pub epoch: usize,
    /// Mean training loss.
    pub loss: f32,
    /// Accuracy on the evaluation split.
    pub test_accuracy: f64,
    /// Training time of the epoch (evaluation excluded).
    pub train_time: Duration,
}

/// Trains a fresh network on `device`; `on_step` and `on_epoch` see progress. Evaluates on
/// `test` after every epoch.
pub fn train(
    config: &Config,
    device: &Device,
    train: &Split,
    test: &Split,
    mut on_step: impl FnMut(Step),
    mut on_epoch: impl FnMut(&EpochReport),
) -> candle_core::Result<(VarMap, Net, Vec<EpochReport>)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let net = if config.batch_norm {
        Net::with_batch_norm(vb)?
    } else {
        Net::new(vb)?
    };
    model::init_deterministic(&varmap, config.seed)?;
    let mut opt = AdamW::new(
        varmap.all_vars(),
        ParamsAdamW {
            lr: config.lr,
            weight_decay: 1e-4,
            ..Default::default()
        },
    )?;
    // Dropout draws from its own stream; the batches draw from streams 2 and 3.
    let mut dropout_rng = ChaCha8Rng::seed_from_u64(config.seed);
    dropout_rng.set_stream(1);
    let plan = Plan {
        epochs: config.epochs,
        batch_size: config.batch_size,
        seed: config.seed,
        max_shift: config.max_shift,
        augment: config.augment,
    };
    let batches = batches::per_epoch(train.len(), config.batch_size);
    let total_steps = (batches * config.epochs).max(1);
    let mut reports = Vec::new();
    let mut ema = if config.ema > 0.0 {
        Some(Ema::new(varmap.all_vars(), config.ema)?)
    } else {
        None
    };
    std::thread::scope(|scope| -> candle_core::Result<()> {
        let made = batches::spawn(scope, &plan, train).map_err(|e| {
            candle_core::Error::Msg(format!("could not start the batch thread: {e}"))
        })?;
        for epoch in 0..config.epochs {
            let start = Instant::now();
            let mut loss_sum = 0f32;
            for batch in 0..batches {
                let (xs, ys) = made.recv().map_err(|_| {
                    candle_core::Error::Msg("the batch thread stopped early".into())
                })??;
                let (xs, ys) = (xs.to_device(device)?, ys.to_device(device)?);
                let step = epoch * batches + batch;
                opt.set_learning_rate(learning_rate(config.lr, step, total_steps));
                let logits = net.forward_train(&xs, &mut dropout_rng)?;
                let loss = smoothed_cross_entropy(&logits, &ys, config.label_smoothing)?;
                opt.backward_step(&loss)?;
                if let Some(ema) = &mut ema {
                    ema.update()?;
                }
                loss_sum += loss.to_scalar::<f32>()?;
                on_step(Step {
                    epoch,
                    batch: batch + 1,
                    batches,
                    running_loss: loss_sum / (batch + 1) as f32,
                });
            }
            let train_time = start.elapsed();
            // The averaged weights are the model: evaluate them, and keep them after the last epoch.
            if let Some(ema) = &mut ema {
                ema.swap()?;
            }
            let test_accuracy = evaluate(&net, test)?.accuracy();
            if let Some(ema) = &mut ema {
                if epoch + 1 < config.epochs {
                    ema.swap()?;
                }
            }
            let report = EpochReport {
                epoch,
                loss: loss_sum / batches.max(1) as f32,
                test_accuracy,
                train_time,
            };
            on_epoch(&report);
            reports.push(report);
        }
        Ok(())
    })?;
    if !config.batch_norm {
        return Ok((varmap, net, reports));
    }
    // What is saved and served: the convolutions with the batch norms folded in.
    fold::fold(&varmap, model::NORM_EPS)?;
    let folded = Net::new(VarBuilder::from_varmap(&varmap, DType::F32, device))?;
    Ok((varmap, folded, reports))
}

/// Cross-entropy against targets that put `1 − eps` on the label and spread `eps` evenly
/// over all classes: `(1 − eps)·NLL + eps·mean(−log p)`; plain cross-entropy at 0.
pub fn smoothed_cross_entropy(
    logits: &Tensor,
    labels: &Tensor,
    eps: f64,
) -> candle_core::Result<Tensor> {
    if eps == 0.0 {
        return loss::cross_entropy(logits, labels);
    }
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let nll = loss::nll(&log_p, labels)?;
    let uniform = log_p.mean_all()?.neg()?;
    (nll * (1.0 - eps))? + (uniform * eps)?
}

/// Linear warm-up over the first 3 % of steps, then cosine decay to zero: lets a high peak
/// rate make fast progress early without the late-epoch noise of a constant rate.
pub fn learning_rate(peak: f64, step: usize, total: usize) -> f64 {
    let warmup = (total * 3 / 100).max(1);
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let progress = (step - warmup) as f64 / (total - warmup).max(1) as f64;
    peak * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
}

/// Counts of (true label, predicted label) over a split.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Confusion {
    /// `counts[truth][predicted]`.
    pub counts: [[u32; CLASSES]; CLASSES],
}

impl Confusion {
    /// Fraction of examples on the diagonal.
    pub fn accuracy(&self) -> f64 {
        let total: u32 = self.counts.iter().flatten().sum();
        let right: u32 = (0..CLASSES).map(|i| self.counts[i][i]).sum();
        right as f64 / total.max(1) as f64
    }

    /// The matrix as text, rows = true digit, columns = predicted digit.
    pub fn to_table(&self) -> String {
        let mut s = String::from("true\\pred");
        for c in 0..CLASSES {
            s += &format!("{c:>6}");
        }
        s.push('\n');
        for (t, row) in self.counts.iter().enumerate() {
            s += &format!("{t:>9}");
            for n in row {
                s += &format!("{n:>6}");
            }
            s.push('\n');
        }
        s
    }
}

/// Classifies every image of `split` (eval mode) and tallies the results.
pub fn evaluate(net: &Net, split: &Split) -> candle_core::Result<Confusion> {
    let mut confusion = Confusion::default();
    const BATCH: usize = 1000;
    for start in (0..split.len()).step_by(BATCH) {
        let n = BATCH.min(split.len() - start);
        let xs = preprocess::batch_tensor(
            &split.images[start * IMAGE_PIXELS..(start + n) * IMAGE_PIXELS],
            n,
        )?
        .to_device(net.device())?;
        let predicted = net
            .forward_t(&xs, false)?
            .argmax(D::Minus1)?
            .to_vec1::<u32>()?;
        for (p, &t) in predicted.iter().zip(&split.labels[start..start + n]) {
            confusion.counts[t as usize][*p as usize] += 1;
        }
    }
    Ok(confusion)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        let total = 1000;
        assert!(learning_rate(1.0, 0, total) < 0.1);
        assert!((learning_rate(1.0, 29, total) - 1.0).abs() < 1e-9);
        assert!(learning_rate(1.0, 500, total) < 1.0);
        assert!(learning_rate(1.0, 999, total) < 1e-4);
    }

    #[test]
    fn label_smoothing_mixes_in_the_uniform_target() {
        let logits = Tensor::new(&[[2f32, 0.0, -1.0], [0.5, 0.5, 3.0]], &Device::Cpu).unwrap();
        let labels = Tensor::new(&[0u32, 2], &Device::Cpu).unwrap();
        let loss = |eps| {
            smoothed_cross_entropy(&logits, &labels, eps)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        let plain = loss::cross_entropy(&logits, &labels)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(loss(0.0), plain);
        // By hand: −log p of every class, averaged per row then over the batch.
        let rows = [[2f32, 0.0, -1.0], [0.5, 0.5, 3.0]];
        let mut uniform = 0.0;
        for row in rows {
            let lse = row.iter().map(|v| v.exp()).sum::<f32>().ln();
            uniform += row.iter().map(|v| lse - v).sum::<f32>() / 3.0 / 2.0;
        }
        assert!((loss(0.1) - (0.9 * plain + 0.1 * uniform)).abs() < 1e-5);
        assert!(
            loss(0.1) > plain,
            "confident right answers cost more when smoothed"
        );
    }

    #[test]
    fn confusion_accuracy_counts_the_diagonal() {
        let mut c = Confusion::default();
        c.counts[3][3] = 3;
        c.counts[3][5] = 1;
        assert_eq!(c.accuracy(), 0.75);
        assert!(c.to_table().contains("true\\pred"));
    }
}
