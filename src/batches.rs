//! The training batches of a run: shuffled, distorted, shifted and turned into tensors on a
//! thread of their own, a few steps ahead of the optimiser.
//!
//! The step's matrix products leave one of the two cores idle for part of every step
//! (an augmented batch-norm run used 1.4 cores on average); preparing the next batches in
//! that idle time takes the warps off the step's path. Every draw comes from the seed's own
//! streams in the same order as when the loop made each batch itself, so a run writes the
//! same tensors whether its batches are made here or in line.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::augment::Augment;
use crate::data::{Split, IMAGE_PIXELS, IMAGE_SIDE};
use crate::preprocess;

/// Batches made ahead of the step: enough to ride out one slow batch, few enough that the
/// memory stays a few hundred kilobytes.
const AHEAD: usize = 3;

/// What is drawn for a run's batches.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Passes over the split.
    pub epochs: usize,
    /// Images per batch; the last batch of an epoch may be smaller.
    pub batch_size: usize,
    /// Seeds the shuffle, the shifts and the distortions.
    pub seed: u64,
    /// Random shifts of up to this many pixels.
    pub max_shift: usize,
    /// Distortions applied before the shift.
    pub augment: Augment,
}

/// One step's input: normalised images `(n, 1, 28, 28)` and labels `(n,)`, on the CPU.
pub type Batch = candle_core::Result<(Tensor, Tensor)>;

/// Starts making `plan`'s batches, in order, on a thread of `scope`; receive them from the
/// returned channel. The thread stops after the last batch, or as soon as the receiver is
/// dropped.
pub fn spawn<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    plan: &'scope Plan,
    train: &'scope Split,
) -> std::io::Result<Receiver<Batch>> {
    let (tx, rx) = sync_channel(AHEAD);
    std::thread::Builder::new()
        .name("batches".into())
        .spawn_scoped(scope, move || produce(plan, train, &tx))?;
    Ok(rx)
}

/// Number of batches in one epoch over `len` images.
pub fn per_epoch(len: usize, batch_size: usize) -> usize {
    len.div_ceil(batch_size.max(1))
}

fn produce(plan: &Plan, train: &Split, tx: &SyncSender<Batch>) {
    // Streams apart from the one that initialised the weights (0) and dropout's (1), so that
    // drawing more or less often from one leaves the others' sequences alone.
    let mut rng = ChaCha8Rng::seed_from_u64(plan.seed);
    rng.set_stream(2);
    let mut augment_rng = ChaCha8Rng::seed_from_u64(plan.seed);
    augment_rng.set_stream(3);
    let batch_size = plan.batch_size.max(1);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut distorted = vec![0u8; batch_size * IMAGE_PIXELS];
    let mut pixels = vec![0u8; batch_size * IMAGE_PIXELS];
    let augment = plan.augment.is_on();
    for _ in 0..plan.epochs {
        order.shuffle(&mut rng);
        for chunk in order.chunks(batch_size) {
            let n = chunk.len();
            if augment {
                distort_batch(
                    &plan.augment,
                    train,
                    chunk,
                    &mut distorted,
                    &mut augment_rng,
                );
            }
            let mut labels = Vec::with_capacity(n);
            for (slot, &i) in chunk.iter().enumerate() {
                let dst = &mut pixels[slot * IMAGE_PIXELS..(slot + 1) * IMAGE_PIXELS];
                let src = if augment {
                    &distorted[slot * IMAGE_PIXELS..(slot + 1) * IMAGE_PIXELS]
                } else {
                    train.image(i)
                };
                shift_into(src, dst, &mut rng, plan.max_shift);
                labels.push(train.labels[i] as u32);
            }
            let batch = preprocess::batch_tensor(&pixels[..n * IMAGE_PIXELS], n).and_then(|xs| {
                let ys = Tensor::new(labels.as_slice(), &candle_core::Device::Cpu)?;
                Ok((xs, ys))
            });
            if tx.send(batch).is_err() {
                return;
            }
        }
    }
}

/// Distorts the images `chunk` names into `dst`. Each image draws from its own generator,
/// seeded in order from `rng`, so that how many draws one distortion takes leaves the next
/// image's alone.
fn distort_batch(
    augment: &Augment,
    train: &Split,
    chunk: &[usize],
    dst: &mut [u8],
    rng: &mut ChaCha8Rng,
) {
    for (dst, &i) in dst.chunks_mut(IMAGE_PIXELS).zip(chunk) {
        let mut image_rng = ChaCha8Rng::seed_from_u64(rng.gen());
        augment.apply(train.image(i), dst, &mut image_rng);
    }
}

/// Copies `src` into `dst` moved by a random offset of at most `max` pixels each way.
fn shift_into(src: &[u8], dst: &mut [u8], rng: &mut ChaCha8Rng, max: usize) {
    if max == 0 {
        dst.copy_from_slice(src);
        return;
    }
    let m = max as isize;
    let dx = rng.gen_range(-m..=m);
    let dy = rng.gen_range(-m..=m);
    dst.fill(0);
    let side = IMAGE_SIDE as isize;
    for y in 0..side {
        let sy = y - dy;
        if !(0..side).contains(&sy) {
            continue;
        }
        let (x0, x1) = (dx.max(0), (side + dx).min(side));
        let row = (y * side) as usize;
        let srow = (sy * side) as usize;
        dst[row + x0 as usize..row + x1 as usize]
            .copy_from_slice(&src[srow + (x0 - dx) as usize..srow + (x1 - dx) as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(n: usize) -> Split {
        let bar = crate::robustness::test_bar(4..24).into_raw();
        Split {
            images: bar.repeat(n),
            labels: (0..n).map(|i| (i % 10) as u8).collect(),
        }
    }

    fn plan(augment: Augment) -> Plan {
        Plan {
            epochs: 2,
            batch_size: 4,
            seed: 7,
            max_shift: 2,
            augment,
        }
    }

    fn all(plan: &Plan, train: &Split) -> Vec<(Vec<f32>, Vec<u32>)> {
        std::thread::scope(|scope| {
            spawn(scope, plan, train)
                .unwrap()
                .iter()
                .map(|b| {
                    let (xs, ys) = b.unwrap();
                    (
                        xs.flatten_all().unwrap().to_vec1().unwrap(),
                        ys.to_vec1().unwrap(),
                    )
                })
                .collect()
        })
    }

    #[test]
    fn every_epoch_is_a_shuffle_of_the_whole_split_and_the_seed_fixes_it() {
        let train = split(10);
        let plan = plan(Augment {
            prob: 1.0,
            elastic_prob: 0.5,
            ..Augment::default()
        });
        let batches = all(&plan, &train);
        assert_eq!(batches.len(), 2 * per_epoch(10, 4));
        let sizes: Vec<usize> = batches.iter().map(|(_, ys)| ys.len()).collect();
        assert_eq!(sizes, [4, 4, 2, 4, 4, 2]);
        for epoch in batches.chunks(3) {
            let mut labels: Vec<u32> = epoch.iter().flat_map(|(_, ys)| ys.clone()).collect();
            labels.sort();
            assert_eq!(labels, (0..10).collect::<Vec<_>>());
        }
        let first: Vec<u32> = batches[0].1.clone();
        assert_ne!(first, [0, 1, 2, 3], "shuffled");
        assert_eq!(
            batches,
            all(&plan, &train),
            "the same seed, the same batches"
        );
        let other = Plan { seed: 8, ..plan };
        assert_ne!(batches, all(&other, &train));
    }

    #[test]
    fn each_image_draws_its_own_distortion() {
        let train = split(6);
        let mut dst = vec![0u8; 8 * IMAGE_PIXELS];
        let aug = Augment {
            prob: 1.0,
            elastic_prob: 0.5,
            ..Augment::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        distort_batch(&aug, &train, &[5, 0, 3, 3, 1], &mut dst, &mut rng);
        let image = |k: usize| &dst[k * IMAGE_PIXELS..(k + 1) * IMAGE_PIXELS];
        assert_ne!(image(2), image(3), "the same digit, distorted twice");
        assert!(
            image(5).iter().all(|&p| p == 0),
            "past the chunk: untouched"
        );
    }

    #[test]
    fn the_thread_stops_when_no_one_receives() {
        let train = split(10);
        let plan = Plan {
            epochs: 1_000_000,
            ..plan(Augment::default())
        };
        // The scope joins the thread: this returns only if it stopped.
        std::thread::scope(|scope| {
            let made = spawn(scope, &plan, &train).unwrap();
            made.recv().unwrap().unwrap();
        });
    }

    #[test]
    fn shift_moves_pixels_and_pads_with_background() {
        let mut src = vec![0u8; IMAGE_PIXELS];
        src[14 * 28 + 14] = 255;
        let mut dst = vec![0u8; IMAGE_PIXELS];
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for _ in 0..20 {
            shift_into(&src, &mut dst, &mut rng, 2);
            let pos = dst.iter().position(|&p| p == 255).unwrap();
            let (y, x) = (pos / 28, pos % 28);
            assert!(y.abs_diff(14) <= 2 && x.abs_diff(14) <= 2);
            assert_eq!(dst.iter().filter(|&&p| p != 0).count(), 1);
        }
        shift_into(&src, &mut dst, &mut rng, 0);
        assert_eq!(src, dst);
    }
}
