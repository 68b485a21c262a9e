//! Training, evaluation and the committed weights, on the real MNIST files.

mod common;

use std::path::PathBuf;

use mnist_api::data::Mnist;
use mnist_api::training::{self, Config};
use mnist_api::weights;

use common::{mnist_input, output_text, run, weights_path, TRAIN};

fn data_dir() -> Option<PathBuf> {
    mnist_input(|dir| {
        if mnist_api::data::is_present(dir) {
            Ok(dir.to_path_buf())
        } else {
            Err(format!(
                "MNIST files not found in {} (set MNIST_DIR or run `make data`)",
                dir.display()
            ))
        }
    })
}

#[test]
fn committed_weights_reach_the_accuracy_floor() {
    let Some(dir) = data_dir() else { return };
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(weights::DEFAULT_PATH);
    let loaded = weights::load(&path, &candle_core::Device::Cpu).unwrap();
    let test = Mnist::load_test(&dir).unwrap();
    assert_eq!(test.len(), 10_000);
    let accuracy = training::evaluate(&loaded.net, &test).unwrap().accuracy();
    eprintln!("committed weights: test accuracy {:.2}%", 100.0 * accuracy);
    // The robust-model issue's floor; the training issue's was 99.3 %.
    assert!(accuracy >= 0.996, "test accuracy {accuracy}");
    // The header tells the truth about the file.
    assert!((loaded.metadata.test_accuracy - accuracy).abs() < 1e-9);
    let mnist_sha = Mnist::load(&dir).unwrap().sha256;
    assert_eq!(loaded.metadata.train_data_sha256, mnist_sha);
}

/// The plain recipe (no batch norm or distortion, the earlier default rate): one epoch on
/// 6,000 digits is enough for it to learn. The default recipe's batch norm evaluates with
/// running statistics that lag far behind a network changing this fast (54 % after one such
/// epoch, 47 % after two); it is judged by the committed weights it made instead.
fn plain() -> Config {
    Config {
        epochs: 1,
        lr: 3e-3,
        batch_norm: false,
        augment: mnist_api::augment::Augment::default(),
        ..Config::default()
    }
}

fn small_run(seed: u64) -> (Vec<u8>, f64) {
    run_of(Config { seed, ..plain() })
}

/// One run of `config` on 6,000 training and 1,000 test digits: the weights file it would
/// write, and the test accuracy it reported.
fn run_of(config: Config) -> (Vec<u8>, f64) {
    let seed = config.seed;
    let dir = data_dir().unwrap();
    let mnist = Mnist::load(&dir).unwrap();
    let train = mnist.train.take(6000);
    let test = mnist.test.take(1000);
    let (varmap, _, reports) = training::train(
        &config,
        &candle_core::Device::Cpu,
        &train,
        &test,
        |_| {},
        |_| {},
    )
    .unwrap();
    let meta = weights::Metadata {
        format_version: weights::FORMAT_VERSION.into(),
        architecture: mnist_api::model::ARCHITECTURE.into(),
        input: weights::Metadata::input_description(),
        normalization: weights::Metadata::normalization_description(),
        test_accuracy: reports[0].test_accuracy,
        epochs: 1,
        seed,
        batch_size: config.batch_size,
        learning_rate: config.lr,
        training_seconds: 0.0,
        created: "fixed".into(),
        train_data_sha256: mnist.sha256.clone(),
    };
    let bytes = weights::to_bytes(std::path::Path::new("w"), &varmap, &meta).unwrap();
    (bytes, reports[0].test_accuracy)
}

#[test]
fn a_short_run_beats_chance_and_is_reproducible() {
    if data_dir().is_none() {
        return;
    }
    let (a, accuracy) = small_run(11);
    eprintln!(
        "6,000 images, 1 epoch: {:.1}% on 1,000 test images",
        100.0 * accuracy
    );
    assert!(accuracy > 0.8, "accuracy {accuracy}");
    let (b, _) = small_run(11);
    assert!(a == b, "same seed gave different weights");
    let (c, _) = small_run(12);
    assert!(a != c, "different seeds gave the same weights");
}

#[test]
fn a_batch_norm_run_is_saved_folded_and_answers_as_it_was_evaluated() {
    let Some(dir) = data_dir() else { return };
    let (bytes, reported) = run_of(Config {
        seed: 5,
        batch_norm: true,
        augment: mnist_api::augment::Augment {
            prob: 0.5,
            elastic_prob: 0.2,
            ..Default::default()
        },
        ..plain()
    });
    // Learned something (chance is 10 %), so that the comparison below means something.
    assert!(reported > 0.5, "accuracy {reported}");
    // The file is the plain architecture: it loads (every name and shape checked) and,
    // with the batch norms folded in, scores what the run measured with them.
    let loaded = weights::from_bytes(
        std::path::Path::new("folded.safetensors"),
        &bytes,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let test = Mnist::load_test(&dir).unwrap().take(1000);
    let accuracy = training::evaluate(&loaded.net, &test).unwrap().accuracy();
    assert!(
        (accuracy - reported).abs() < 0.0015,
        "folded {accuracy}, measured in training {reported}"
    );
}

/// Names of the table's rows, in order, as `train --robustness` prints them.
const KINDS: [&str; 9] = [
    "clean", "rotate", "scale", "shear", "thin", "thicken", "blur", "noise", "canvas",
];

#[test]
fn robustness_table_of_the_committed_weights() {
    let Some(dir) = data_dir() else { return };
    let weights = weights_path();
    let o = run(
        TRAIN,
        &[
            "--robustness",
            "--eval",
            weights.to_str().unwrap(),
            "--data-dir",
            dir.to_str().unwrap(),
            "--limit",
            "300",
        ],
        "",
    );
    let text = output_text(&o);
    assert!(o.status.success(), "{text}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].contains("robustness on 300 test digits") && lines[0].contains("preprocessing"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("kind") && lines[1].contains("accuracy"),
        "{stdout}"
    );
    let mut corrupted = Vec::new();
    for (line, kind) in lines[2..2 + KINDS.len()].iter().zip(KINDS) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[0], kind, "{stdout}");
        let n = fields.len();
        let accuracy: f64 = fields[n - 3].trim_end_matches('%').parse().unwrap();
        let errors: usize = fields[n - 2].parse().unwrap();
        let refused: usize = fields[n - 1].parse().unwrap();
        // The counts and the percentage describe the same 300 digits.
        assert_eq!(
            errors,
            (300.0 * (1.0 - accuracy / 100.0)).round() as usize,
            "{line}"
        );
        assert!(refused <= errors, "{line}");
        // Far above chance (10 %) for every kind; the clean row is the committed model's own
        // test accuracy, give or take these 300 digits.
        let floor = if kind == "clean" { 97.0 } else { 60.0 };
        assert!((floor..=100.0).contains(&accuracy), "{line}");
        if kind != "clean" {
            corrupted.push(accuracy);
        }
    }
    let mean = corrupted.iter().sum::<f64>() / corrupted.len() as f64;
    let summary = lines[2 + KINDS.len()];
    assert!(
        summary.starts_with(&format!("mean over corruptions {mean:.2}%, worst ")),
        "{summary} (mean of the rows {mean:.2})"
    );
    assert!(summary.ends_with("on 300 digits each"), "{summary}");
}
