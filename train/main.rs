//! `train`: fits the digit CNN on MNIST and writes `weights/mnist_cnn.safetensors`.

use std::cell::RefCell;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use candle_core::Device;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use mnist_api::augment::Augment;
use mnist_api::data::Mnist;
use mnist_api::training::{self, Config};
use mnist_api::weights::{self, Metadata};
use mnist_api::{data, model, repository, robustness};

/// candle allocates a fresh buffer for every intermediate tensor; with glibc's allocator each
/// large one is a new mmap whose pages fault in one by one, which made ReLU's backward pass 10x
/// slower than its arithmetic. mimalloc reuses the memory. Set here, not in the library, so
/// the choice stays with the program.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Train the MNIST digit CNN (or evaluate a weights file) and write safetensors weights.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Passes over the 60,000 training images.
    #[arg(long, default_value_t = Config::default().epochs)]
    epochs: usize,
    /// Images per optimiser step.
    #[arg(long, default_value_t = Config::default().batch_size)]
    batch_size: usize,
    /// Peak learning rate (AdamW with warm-up and cosine decay).
    #[arg(long, default_value_t = Config::default().lr)]
    lr: f64,
    /// Seed for initialisation, shuffling, augmentation and dropout.
    #[arg(long, default_value_t = Config::default().seed)]
    seed: u64,
    /// Largest random shift in pixels applied to training images (0 = no augmentation).
    #[arg(long, default_value_t = Config::default().max_shift)]
    max_shift: usize,
    /// Probability that a training image is distorted like the robustness suite's corruptions
    /// (rotation, scale, shear, placement, then the server's framing); 0 = off.
    #[arg(long, default_value_t = Config::default().augment.prob)]
    augment: f32,
    /// Probability that a distorted image also gets erosion, dilation, blur or noise.
    #[arg(long, default_value_t = Config::default().augment.stroke_prob)]
    augment_stroke: f32,
    /// Largest rotation of a distorted image either way, degrees.
    #[arg(long, default_value_t = Config::default().augment.max_rotation_deg)]
    augment_rotation: f32,
    /// Largest horizontal shear factor of a distorted image either way.
    #[arg(long, default_value_t = Config::default().augment.max_shear)]
    augment_shear: f32,
    /// Smallest and largest scale factor of a distorted image.
    #[arg(long, num_args = 2, value_names = ["MIN", "MAX"],
          default_values_t = [Config::default().augment.scale.0, Config::default().augment.scale.1])]
    augment_scale: Vec<f32>,
    /// Probability that a training image is bent by an elastic distortion; 0 = off.
    #[arg(long, default_value_t = Config::default().augment.elastic_prob)]
    elastic: f32,
    /// The elastic distortion's scale α and smoothing σ, in pixels.
    #[arg(long, num_args = 2, value_names = ["ALPHA", "SIGMA"],
          default_values_t = [Config::default().augment.elastic.0, Config::default().augment.elastic.1])]
    elastic_shape: Vec<f32>,
    /// Batch norm after each convolution while training, folded into it before saving (the
    /// weights file and the served network are unchanged in shape and cost); `false` = off.
    #[arg(long, default_value_t = Config::default().batch_norm, num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    batch_norm: bool,
    /// Share of the target spread evenly over the classes (label smoothing); 0 = off.
    #[arg(long, default_value_t = Config::default().label_smoothing)]
    label_smoothing: f64,
    /// Decay of the moving average of the weights that is evaluated and saved; 0 = off.
    #[arg(long, default_value_t = Config::default().ema)]
    ema: f64,
    /// Directory with the four MNIST IDX files (raw or .gz).
    #[arg(long, env = "MNIST_DIR", default_value = "data/mnist")]
    data_dir: PathBuf,
    /// Where to write the weights (atomically): a file, or a model repository directory
    /// (as `mnist-api --model-repository` serves), which gets the next version,
    /// `DIR/mnist/<n>/model.safetensors`.
    #[arg(long, default_value = weights::DEFAULT_PATH)]
    out: PathBuf,
    /// Print the 10×10 confusion matrix of the test set at the end.
    #[arg(long)]
    confusion: bool,
    /// Only evaluate this weights file on the test set; no training.
    #[arg(long, value_name = "WEIGHTS")]
    eval: Option<PathBuf>,
    /// Print the robustness table (corrupted test digits through the server's preprocessing)
    /// of the --eval weights, or of the committed weights without --eval; no training.
    #[arg(long)]
    robustness: bool,
    /// Download the MNIST files into --data-dir (skipping files already verified), then exit.
    #[arg(long)]
    download: bool,
    /// Download from this base URL instead of the default mirror.
    #[arg(long, env = "MNIST_MIRROR", default_value = data::download::DEFAULT_MIRROR)]
    mirror: String,
    /// Train on only the first N training images (quick experiments); with --robustness,
    /// use only the first N test images.
    #[arg(long)]
    limit: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    mnist_api::keep_freed_memory();
    let args = Args::parse();
    if args.download {
        data::download::fetch_all(&args.mirror, &args.data_dir, true)?;
        return Ok(());
    }
    if args.robustness {
        let default = PathBuf::from(weights::DEFAULT_PATH);
        return robustness(args.eval.as_ref().unwrap_or(&default), &args);
    }
    if let Some(path) = &args.eval {
        return eval(path, &args);
    }
    train(&args)
}

fn eval(path: &std::path::Path, args: &Args) -> anyhow::Result<()> {
    let loaded = weights::load(path, &Device::Cpu)?;
    let test = Mnist::load_test(&args.data_dir)?;
    let confusion = training::evaluate(&loaded.net, &test)?;
    println!(
        "{}: test accuracy {:.2}% on {} images (recorded at training: {:.2}%)",
        path.display(),
        100.0 * confusion.accuracy(),
        test.len(),
        100.0 * loaded.metadata.test_accuracy
    );
    if args.confusion {
        print!("{}", confusion.to_table());
    }
    Ok(())
}

fn robustness(path: &std::path::Path, args: &Args) -> anyhow::Result<()> {
    let loaded = weights::load(path, &Device::Cpu)?;
    let mut test = Mnist::load_test(&args.data_dir)?;
    if let Some(n) = args.limit {
        test = test.take(n);
    }
    let started = Instant::now();
    let offline = training::evaluate(&loaded.net, &test)?.accuracy();
    let report = robustness::run(&loaded.net, &test, &robustness::Kind::ALL)?;
    println!(
        "{}: robustness on {} test digits (offline test accuracy {:.2}%), every file through \
         the server's preprocessing, {:.1}s",
        path.display(),
        test.len(),
        100.0 * offline,
        started.elapsed().as_secs_f64()
    );
    print!("{report}");
    Ok(())
}

fn train(args: &Args) -> anyhow::Result<()> {
    let loading = Instant::now();
    let mut mnist = Mnist::load(&args.data_dir)?;
    if let Some(n) = args.limit {
        mnist.train = mnist.train.take(n);
    }
    eprintln!(
        "loaded {} training and {} test images from {} in {:.1?} (sha256 {})",
        mnist.train.len(),
        mnist.test.len(),
        args.data_dir.display(),
        loading.elapsed(),
        &mnist.sha256[..16]
    );
    let config = Config {
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        seed: args.seed,
        max_shift: args.max_shift,
        augment: Augment {
            prob: args.augment,
            stroke_prob: args.augment_stroke,
            max_rotation_deg: args.augment_rotation,
            max_shear: args.augment_shear,
            scale: (args.augment_scale[0], args.augment_scale[1]),
            elastic_prob: args.elastic,
            elastic: (args.elastic_shape[0], args.elastic_shape[1]),
        },
        label_smoothing: args.label_smoothing,
        batch_norm: args.batch_norm,
        ema: args.ema,
    };
    let style = ProgressStyle::with_template(
        "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})",
    )?
    .progress_chars("=> ");
    // Both callbacks touch the bar, one at a time.
    let bar: RefCell<Option<ProgressBar>> = RefCell::new(None);
    let started = Instant::now();
    let (varmap, net, reports) = training::train(
        &config,
        &Device::Cpu,
        &mnist.train,
        &mnist.test,
        |step| {
            let mut slot = bar.borrow_mut();
            let b = slot.get_or_insert_with(|| {
                let b = ProgressBar::new(step.batches as u64).with_style(style.clone());
                b.set_prefix(format!("{}/{}", step.epoch + 1, config.epochs));
                b
            });
            b.set_position(step.batch as u64);
            if step.batch % 20 == 0 || step.batch == step.batches {
                b.set_message(format!("loss {:.4}", step.running_loss));
            }
        },
        |report| {
            if let Some(b) = bar.borrow_mut().take() {
                b.finish_and_clear();
            }
            println!(
                "epoch {}/{}: loss {:.4}, test accuracy {:.2}%, {:.1}s",
                report.epoch + 1,
                config.epochs,
                report.loss,
                100.0 * report.test_accuracy,
                report.train_time.as_secs_f64()
            );
        },
    )?;
    let training_seconds = started.elapsed().as_secs_f64();
    let confusion = training::evaluate(&net, &mnist.test)?;
    let accuracy = confusion.accuracy();
    let metadata = Metadata {
        format_version: weights::FORMAT_VERSION.into(),
        architecture: model::ARCHITECTURE.into(),
        input: Metadata::input_description(),
        normalization: Metadata::normalization_description(),
        test_accuracy: accuracy,
        epochs: config.epochs,
        seed: config.seed,
        batch_size: config.batch_size,
        learning_rate: config.lr,
        training_seconds: (training_seconds * 10.0).round() / 10.0,
        created: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)?,
        train_data_sha256: mnist.sha256.clone(),
    };
    let written = if args.out.is_dir() {
        let (version, file) = repository::publish(&args.out, |file| {
            weights::save(file, &varmap, &metadata)
                .with_context(|| format!("saving weights to {}", file.display()))
        })?;
        eprintln!("{}: published as version {version}", args.out.display());
        file
    } else {
        weights::save(&args.out, &varmap, &metadata)
            .with_context(|| format!("saving weights to {}", args.out.display()))?;
        args.out.clone()
    };
    let best = reports.iter().map(|r| r.test_accuracy).fold(0.0, f64::max);
    println!(
        "done: {} epochs in {:.1}s, final test accuracy {:.2}% (best epoch {:.2}%), wrote {}",
        config.epochs,
        training_seconds,
        100.0 * accuracy,
        100.0 * best,
        written.display()
    );
    if args.confusion {
        print!("{}", confusion.to_table());
    }
    Ok(())
}
