//! Training, evaluation and the committed weights, on the real MNIST files.

mod common;

use std::path::PathBuf;

use mnist_api::data::Mnist;
use mnist_api::training::{self, Config};
use mnist_api::weights;

use common::mnist_input;

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
    assert!(accuracy >= 0.993, "test accuracy {accuracy}");
    // The header tells the truth about the file.
    assert!((loaded.metadata.test_accuracy - accuracy).abs() < 1e-9);
    let mnist_sha = Mnist::load(&dir).unwrap().sha256;
    assert_eq!(loaded.metadata.train_data_sha256, mnist_sha);
}

fn small_run(seed: u64) -> (Vec<u8>, f64) {
    let dir = data_dir().unwrap();
    let mnist = Mnist::load(&dir).unwrap();
    let config = Config {
        epochs: 1,
        seed,
        ..Config::default()
    };
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
