//! The loaded model behind a bounded queue: worker threads take waiting images in batches,
//! run one forward pass per batch, and answer each caller separately.
//!
//! The async executor never runs the model: handlers enqueue and await a oneshot reply. When
//! the queue is full the caller gets [`InferenceError::QueueFull`] at once, so overload
//! sheds work instead of growing memory and latency without bound.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use tokio::sync::oneshot;

use crate::data::{IMAGE_PIXELS, IMAGE_SIDE};
use crate::model::{Net, CLASSES};

/// Why an image got no prediction.
#[derive(Clone, Debug, thiserror::Error)]
pub enum InferenceError {
    /// Every queue slot is taken; retrying later can succeed.
    #[error("server busy: too many predictions in flight, retry shortly")]
    QueueFull,
    /// The caller passed something other than one 28×28 image.
    #[error("input has {0} values, expected {IMAGE_PIXELS}")]
    InputSize(usize),
    /// candle failed; shared by every image of the batch.
    #[error("the forward pass failed: {0}")]
    Forward(Arc<candle_core::Error>),
    /// The network's output is not one row of class probabilities per image.
    #[error("the model returned {0} classes, expected {CLASSES}")]
    Classes(usize),
    /// A bug in the model code, contained to one batch.
    #[error("the model panicked")]
    Panicked,
    /// The workers stopped (only at shutdown).
    #[error("the model workers are gone")]
    Stopped,
}

/// How the engine schedules work.
#[derive(Clone, Copy, Debug)]
pub struct EngineConfig {
    /// Model worker threads.
    pub workers: usize,
    /// Most images in one forward pass.
    pub max_batch: usize,
    /// How long a worker holding a partial batch waits for more images.
    pub max_wait: Duration,
    /// Images that may wait in the queue before new ones are refused with 503.
    pub queue: usize,
    /// Let [`Engine::predict`] run an image on the caller's thread when the caller asks and
    /// no other image is in the engine (and `max_wait` is zero): it would be a batch of one
    /// on an idle worker anyway, and inline it skips two thread switches.
    pub inline: bool,
}

impl Default for EngineConfig {
    /// One worker per core (each runs its forward pass single-threaded), batches of up to 16.
    fn default() -> Self {
        Self {
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_batch: 16,
            max_wait: Duration::ZERO,
            queue: 256,
            inline: true,
        }
    }
}

/// One classification.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// The most probable digit.
    pub digit: u8,
    /// Its probability.
    pub probability: f32,
    /// Softmax over the ten digits.
    pub probabilities: [f32; CLASSES],
    /// Wall time of the forward pass that produced it.
    pub forward_time: Duration,
    /// Images in that forward pass.
    pub batch_size: usize,
}

impl Prediction {
    fn from_probabilities(
        probabilities: [f32; CLASSES],
        forward_time: Duration,
        batch_size: usize,
    ) -> Self {
        let (digit, probability) =
            probabilities
                .iter()
                .copied()
                .enumerate()
                .fold(
                    (0, f32::MIN),
                    |best, (i, p)| if p > best.1 { (i, p) } else { best },
                );
        Prediction {
            digit: digit as u8,
            probability,
            probabilities,
            forward_time,
            batch_size,
        }
    }
}

type Reply = Result<Prediction, InferenceError>;

struct Job {
    /// The weights the request started with: after a reload, requests already in flight
    /// finish on the old network while new ones get the new one.
    net: Arc<Net>,
    input: Vec<f32>,
    reply: oneshot::Sender<Reply>,
    _slot: Slot,
}

impl Job {
    /// Leaves the engine, then answers: a caller that hears back finds its image no longer
    /// counted, so its next one can run inline.
    fn answer(self, reply: Reply) {
        let Job {
            reply: tx, _slot, ..
        } = self;
        drop(_slot);
        let _ = tx.send(reply);
    }
}

/// One image counted as in the engine (queued, in a batch, or running inline) until dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// Counts one more image; also returns how many were in the engine before it.
    fn take(active: &Arc<AtomicUsize>) -> (Self, usize) {
        let before = active.fetch_add(1, Ordering::AcqRel);
        (Self(Arc::clone(active)), before)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Handle to the model workers; cheap to clone. Workers exit when the last handle drops.
#[derive(Clone)]
pub struct Engine {
    tx: Sender<Job>,
    active: Arc<AtomicUsize>,
    /// Images run inline while fewer than this are in the engine (0: never).
    inline_below: usize,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("queued", &self.tx.len())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Starts `config.workers` threads; each job brings the network it runs on.
    pub fn start(config: EngineConfig) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::bounded(config.queue.max(1));
        let inline_below = usize::from(config.inline && config.max_wait.is_zero());
        for i in 0..config.workers.max(1) {
            let rx = rx.clone();
            thread::Builder::new()
                .name(format!("model-{i}"))
                .spawn(move || worker(&rx, config))?;
        }
        Ok(Self {
            tx,
            active: Arc::new(AtomicUsize::new(0)),
            inline_below,
        })
    }

    /// Queues one normalised 28×28 input for `net` and waits for its prediction; with
    /// `inline` and an empty engine, runs it on this thread instead.
    pub async fn predict(
        &self,
        net: &Arc<Net>,
        input: Vec<f32>,
        inline: bool,
    ) -> Result<Prediction, InferenceError> {
        if input.len() != IMAGE_PIXELS {
            return Err(InferenceError::InputSize(input.len()));
        }
        let (slot, before) = Slot::take(&self.active);
        if inline && before < self.inline_below {
            let (rows, elapsed) = run_batch(net, &input, 1)?;
            drop(slot);
            let row = rows.into_iter().next().ok_or(InferenceError::Classes(0))?;
            return Ok(Prediction::from_probabilities(row, elapsed, 1));
        }
        let rx = self.enqueue(net, input, slot)?;
        rx.await.unwrap_or(Err(InferenceError::Stopped))
    }

    fn enqueue(
        &self,
        net: &Arc<Net>,
        input: Vec<f32>,
        slot: Slot,
    ) -> Result<oneshot::Receiver<Reply>, InferenceError> {
        let (reply, rx) = oneshot::channel();
        let net = Arc::clone(net);
        let job = Job {
            net,
            input,
            reply,
            _slot: slot,
        };
        match self.tx.try_send(job) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(InferenceError::QueueFull),
            Err(TrySendError::Disconnected(_)) => Err(InferenceError::Stopped),
        }
    }
}

fn worker(rx: &Receiver<Job>, config: EngineConfig) {
    let max_batch = config.max_batch.max(1);
    let workers = config.workers.max(1);
    let mut jobs: Vec<Job> = Vec::with_capacity(max_batch);
    let mut pixels: Vec<f32> = Vec::with_capacity(max_batch * IMAGE_PIXELS);
    // A job for other weights than the batch's (only around a reload) starts the next batch.
    let mut held: Option<Job> = None;
    loop {
        let first = match held.take() {
            Some(job) => job,
            None => match rx.recv() {
                Ok(job) => job,
                Err(_) => break,
            },
        };
        let net = Arc::clone(&first.net);
        jobs.push(first);
        let deadline = Instant::now() + config.max_wait;
        let limit = batch_limit(rx.len(), workers, max_batch, config.max_wait);
        while jobs.len() < limit {
            // Whatever is already queued joins for free; waiting for more is optional.
            let job = match rx.try_recv() {
                Ok(job) => job,
                Err(_) if config.max_wait.is_zero() => break,
                Err(_) => match rx.recv_deadline(deadline) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                },
            };
            if !Arc::ptr_eq(&job.net, &net) {
                held = Some(job);
                break;
            }
            jobs.push(job);
        }
        // Callers that gave up (client went away) need no forward pass.
        jobs.retain(|j| !j.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        // Run as batches of powers of two, largest first, never padded. Each distinct batch
        // size means new buffer sizes for every intermediate tensor, which the allocator keeps
        // (peak RSS grew from 40 to 90 MB with batches of 1..16 under load), so sizes stay
        // few; but padding paid for them in compute: 9 images padded to 16 cost 16 images'
        // pass, and at 64 connections the model threads spent 49 µs per image with padding
        // and 44 without (BENCHMARKS.md, "Batches without padding").
        while !jobs.is_empty() {
            let n = power_of_two_below(jobs.len());
            pixels.clear();
            for j in &jobs[..n] {
                pixels.extend_from_slice(&j.input);
            }
            match run_batch(&net, &pixels, n) {
                Ok((rows, elapsed)) => {
                    for (job, row) in jobs.drain(..n).zip(rows) {
                        job.answer(Ok(Prediction::from_probabilities(row, elapsed, n)));
                    }
                }
                Err(e) => {
                    for job in jobs.drain(..n) {
                        job.answer(Err(e.clone()));
                    }
                }
            }
        }
    }
}

/// The largest power of two that is at most `n` (≥ 1).
fn power_of_two_below(n: usize) -> usize {
    1 << (usize::BITS - 1 - n.max(1).leading_zeros())
}

/// How many images a worker that just took one should gather, given `queued` still waiting.
///
/// Without waiting, a worker batches only when the backlog is deep (at least `max_batch`
/// waiting), and then takes its share of it. For this small network a batch saves little per
/// image (3 % at 16, 13 % at 64, in-process) while every image in it waits for the whole pass;
/// measured with wrk, batching a shallow queue made 16 connections ~20 % slower than one image
/// at a time, and a greedy worker draining everything left the other core idle. With a wait configured,
/// batches fill up to `max_batch`.
fn batch_limit(queued: usize, workers: usize, max_batch: usize, max_wait: Duration) -> usize {
    if max_wait.is_zero() {
        if queued < max_batch {
            return 1;
        }
        (queued + 1).div_ceil(workers).clamp(1, max_batch)
    } else {
        max_batch
    }
}

/// [`forward`] of `n` images, timed and recorded as a batch; a panic in the model costs this
/// batch, not the thread.
fn run_batch(
    net: &Net,
    pixels: &[f32],
    n: usize,
) -> Result<(Vec<[f32; CLASSES]>, Duration), InferenceError> {
    let started = Instant::now();
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| forward(net, pixels, n)))
        .unwrap_or(Err(InferenceError::Panicked));
    let elapsed = started.elapsed();
    crate::metrics::record_batch(n, elapsed);
    result.map(|rows| (rows, elapsed))
}

/// Probabilities for `n` normalised images laid end to end in `pixels`.
pub fn forward(net: &Net, pixels: &[f32], n: usize) -> Result<Vec<[f32; CLASSES]>, InferenceError> {
    let run = || -> candle_core::Result<Vec<Vec<f32>>> {
        let xs = Tensor::from_slice(pixels, (n, 1, IMAGE_SIDE, IMAGE_SIDE), &Device::Cpu)?;
        net.probabilities(&xs)?.to_vec2::<f32>()
    };
    let rows = run().map_err(|e| InferenceError::Forward(Arc::new(e)))?;
    rows.into_iter()
        .map(|r| {
            <[f32; CLASSES]>::try_from(r.as_slice()).map_err(|_| InferenceError::Classes(r.len()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;
    use candle_nn::{VarBuilder, VarMap};

    fn net(seed: u64) -> Arc<Net> {
        let varmap = VarMap::new();
        let net = Net::new(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
        crate::model::init_deterministic(&varmap, seed).unwrap();
        Arc::new(net)
    }

    fn engine(config: EngineConfig) -> (Engine, Arc<Net>) {
        (Engine::start(config).unwrap(), net(5))
    }

    #[tokio::test]
    async fn each_job_runs_on_the_weights_it_brought() {
        let e = Engine::start(EngineConfig {
            workers: 1,
            max_batch: 16,
            max_wait: Duration::from_millis(20),
            queue: 64,
            inline: true,
        })
        .unwrap();
        let (old, new) = (net(5), net(6));
        let input: Vec<f32> = (0..IMAGE_PIXELS).map(|j| (j % 13) as f32 / 13.0).collect();
        let want_old = forward(&old, &input, 1).unwrap()[0];
        let want_new = forward(&new, &input, 1).unwrap()[0];
        assert_ne!(want_old, want_new);
        // Interleaved in one queue, as around a reload: batches never mix the two.
        let handles: Vec<_> = (0..12)
            .map(|i| {
                let (e, n, x) = (
                    e.clone(),
                    if i % 2 == 0 { &old } else { &new },
                    input.clone(),
                );
                let n = Arc::clone(n);
                tokio::spawn(async move { e.predict(&n, x, true).await.unwrap() })
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            let want = if i % 2 == 0 { want_old } else { want_new };
            let got = h.await.unwrap().probabilities;
            for (a, b) in got.iter().zip(want) {
                assert!((a - b).abs() < 1e-5, "job {i}");
            }
        }
    }

    #[tokio::test]
    async fn a_gathered_batch_runs_as_unpadded_powers_of_two() {
        assert_eq!(
            [1, 2, 3, 7, 8, 13, 16, 63, 64].map(power_of_two_below),
            [1, 2, 2, 4, 8, 8, 16, 32, 64]
        );
        // One worker that waits long enough to gather all 13 queued images in one go.
        let (e, net) = engine(EngineConfig {
            workers: 1,
            max_batch: 16,
            max_wait: Duration::from_millis(300),
            queue: 64,
            inline: false,
        });
        let inputs: Vec<Vec<f32>> = (0..13)
            .map(|i| {
                (0..IMAGE_PIXELS)
                    .map(|j| ((i * 7 + j) % 11) as f32 / 11.0)
                    .collect()
            })
            .collect();
        let handles: Vec<_> = inputs
            .iter()
            .map(|x| {
                let (e, n, x) = (e.clone(), Arc::clone(&net), x.clone());
                tokio::spawn(async move { e.predict(&n, x, false).await.unwrap() })
            })
            .collect();
        let mut sizes = Vec::new();
        for (h, x) in handles.into_iter().zip(&inputs) {
            let got = h.await.unwrap();
            let want = forward(&net, x, 1).unwrap()[0];
            for (a, b) in got.probabilities.iter().zip(want) {
                assert!((a - b).abs() < 1e-5);
            }
            sizes.push(got.batch_size);
        }
        // 13 = 8 + 4 + 1: no pass ran padding images, and every pass had a power-of-two size.
        sizes.sort_unstable();
        assert_eq!(sizes, [1, 4, 4, 4, 4, 8, 8, 8, 8, 8, 8, 8, 8]);
    }

    #[tokio::test]
    async fn concurrent_requests_each_get_their_own_answer() {
        let (e, net) = engine(EngineConfig {
            workers: 2,
            max_batch: 8,
            max_wait: Duration::from_millis(2),
            queue: 64,
            inline: true,
        });
        let inputs: Vec<Vec<f32>> = (0..20)
            .map(|i| {
                (0..IMAGE_PIXELS)
                    .map(|j| ((i * 31 + j) % 17) as f32 / 17.0)
                    .collect()
            })
            .collect();
        let alone: Vec<[f32; CLASSES]> = inputs
            .iter()
            .map(|x| forward(&net, x, 1).unwrap()[0])
            .collect();
        let handles: Vec<_> = inputs
            .iter()
            .cloned()
            .map(|x| {
                let (e, net) = (e.clone(), Arc::clone(&net));
                tokio::spawn(async move { e.predict(&net, x, true).await.unwrap() })
            })
            .collect();
        for (h, want) in handles.into_iter().zip(alone) {
            let got = h.await.unwrap();
            for (a, b) in got.probabilities.iter().zip(want) {
                assert!((a - b).abs() < 1e-5);
            }
            let sum: f32 = got.probabilities.iter().sum();
            assert!((sum - 1.0).abs() < 1e-4);
            assert_eq!(got.probability, got.probabilities[got.digit as usize]);
        }
    }

    #[test]
    fn only_a_deep_queue_is_batched_and_shared_between_workers() {
        let now = Duration::ZERO;
        assert_eq!(batch_limit(0, 2, 16, now), 1);
        assert_eq!(batch_limit(1, 2, 16, now), 1);
        assert_eq!(
            batch_limit(15, 2, 16, now),
            1,
            "a shallow queue is not batched"
        );
        assert_eq!(batch_limit(16, 2, 16, now), 9);
        assert_eq!(batch_limit(100, 2, 16, now), 16);
        assert_eq!(batch_limit(100, 1, 4, now), 4);
        assert_eq!(batch_limit(0, 2, 16, Duration::from_millis(1)), 16);
    }

    #[tokio::test]
    async fn full_queue_answers_overloaded() {
        let (e, net) = engine(EngineConfig {
            workers: 1,
            max_batch: 1,
            max_wait: Duration::ZERO,
            queue: 1,
            inline: true,
        });
        // Flood synchronously: with a queue of one, some must be refused at once.
        let receivers: Vec<_> = (0..50)
            .map(|_| e.enqueue(&net, vec![0.0; IMAGE_PIXELS], Slot::take(&e.active).0))
            .collect();
        assert!(receivers
            .iter()
            .any(|r| matches!(r, Err(InferenceError::QueueFull))));
        for r in receivers.into_iter().flatten() {
            assert!(r.await.unwrap().is_ok());
        }
    }

    #[tokio::test]
    async fn inline_and_queued_images_get_the_same_answer_and_leave_the_engine() {
        let input: Vec<f32> = (0..IMAGE_PIXELS).map(|j| (j % 7) as f32 / 7.0).collect();
        for inline in [true, false] {
            let (e, net) = engine(EngineConfig {
                inline,
                ..EngineConfig::default()
            });
            assert_eq!(e.inline_below > 0, inline);
            let want = forward(&net, &input, 1).unwrap()[0];
            for _ in 0..3 {
                let got = e.predict(&net, input.clone(), true).await.unwrap();
                assert_eq!(got.probabilities, want, "inline: {inline}");
                assert_eq!(got.batch_size, 1);
            }
            // Every image gives its slot back, or inlining would stop for good.
            assert_eq!(e.active.load(Ordering::Acquire), 0, "inline: {inline}");
        }
    }

    #[tokio::test]
    async fn wrong_input_size_is_an_error_not_a_panic() {
        let (e, net) = engine(EngineConfig::default());
        assert!(matches!(
            e.predict(&net, vec![0.0; 3], true).await,
            Err(InferenceError::InputSize(_))
        ));
    }
}
