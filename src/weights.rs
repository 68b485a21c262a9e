//! The weights file: safetensors with a metadata header, written atomically and loaded with
//! every tensor checked against the architecture.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use safetensors::SafeTensors;
use sha2::{Digest, Sha256};

use crate::atomic::write_atomic;
use crate::model::{self, Net};

/// Version of the metadata layout below; bump on incompatible changes.
pub const FORMAT_VERSION: &str = "1";
/// Where `make train` writes and the server reads by default.
pub const DEFAULT_PATH: &str = "weights/mnist_cnn.safetensors";

/// What the safetensors header records about a training run.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Metadata {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: String,
    /// [`model::ARCHITECTURE`] of the writer.
    pub architecture: String,
    /// Input layout the network expects.
    pub input: String,
    /// How pixels are scaled before the network.
    pub normalization: String,
    /// Accuracy on the 10,000 MNIST test images, 0..1.
    pub test_accuracy: f64,
    /// Passes over the training set.
    pub epochs: usize,
    /// Seed of the run.
    pub seed: u64,
    /// Images per optimiser step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Wall time of training (data loading excluded), seconds.
    pub training_seconds: f64,
    /// When the file was written, RFC 3339.
    pub created: String,
    /// SHA-256 of the decompressed training and test files ([`crate::data::Mnist::sha256`]).
    pub train_data_sha256: String,
}

impl Metadata {
    /// The input description every file of this architecture carries.
    pub fn input_description() -> String {
        "1x28x28 f32, NCHW".to_string()
    }

    /// The normalisation every file of this architecture carries.
    pub fn normalization_description() -> String {
        format!("(pixel/255 - {}) / {}", model::MEAN, model::STD)
    }

    fn to_map(&self) -> HashMap<String, String> {
        let value = serde_json::to_value(self).unwrap_or_default();
        value
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                let s = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), s)
            })
            .collect()
    }

    fn from_map(map: &HashMap<String, String>) -> Result<Self, MetadataError> {
        let get = |key: &'static str| map.get(key).cloned().ok_or(MetadataError::Missing(key));
        fn parse<T: std::str::FromStr>(key: &'static str, v: String) -> Result<T, MetadataError> {
            v.parse()
                .map_err(|_| MetadataError::Invalid { key, value: v })
        }
        Ok(Metadata {
            format_version: get("format_version")?,
            architecture: get("architecture")?,
            input: get("input")?,
            normalization: get("normalization")?,
            test_accuracy: parse("test_accuracy", get("test_accuracy")?)?,
            epochs: parse("epochs", get("epochs")?)?,
            seed: parse("seed", get("seed")?)?,
            batch_size: parse("batch_size", get("batch_size")?)?,
            learning_rate: parse("learning_rate", get("learning_rate")?)?,
            training_seconds: parse("training_seconds", get("training_seconds")?)?,
            created: get("created")?,
            train_data_sha256: get("train_data_sha256")?,
        })
    }
}

/// What is wrong with a file's header metadata.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// A key this build needs is absent.
    #[error("metadata key `{0}` is missing")]
    Missing(&'static str),
    /// A key's value does not parse as its type.
    #[error("metadata key `{key}` has an invalid value `{value}`")]
    Invalid { key: &'static str, value: String },
}

/// Why a weights file could not be loaded or written. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not a readable safetensors file.
    #[error("{path}: not a valid safetensors file ({problem})")]
    Format { path: PathBuf, problem: String },
    /// The header metadata is missing or does not match this build.
    #[error("{path}: {problem}")]
    Metadata { path: PathBuf, problem: String },
    /// A tensor is missing, extra, or of the wrong shape or dtype.
    #[error("{path}: tensor `{name}`: {problem}")]
    Tensor {
        path: PathBuf,
        name: String,
        problem: String,
    },
    /// candle failed while building or serialising the model.
    #[error("{path}: {source}")]
    Candle {
        path: PathBuf,
        source: candle_core::Error,
    },
}

/// A network ready for inference, with what its file says about it.
#[derive(Debug)]
pub struct Loaded {
    /// The network, in eval use.
    pub net: Net,
    /// The header metadata.
    pub metadata: Metadata,
    /// SHA-256 of the weights file's bytes.
    pub sha256: String,
}

/// Loads `path` onto `device`, checking names, shapes, dtypes and metadata before any tensor
/// is used.
pub fn load(path: &Path, device: &Device) -> Result<Loaded, WeightsError> {
    let bytes = fs::read(path).map_err(|source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    from_bytes(path, &bytes, device)
}

/// As [`load`], from bytes already in memory (`path` is only used in messages).
pub fn from_bytes(path: &Path, bytes: &[u8], device: &Device) -> Result<Loaded, WeightsError> {
    let p = || path.to_path_buf();
    let format = |e: safetensors::SafeTensorError| WeightsError::Format {
        path: p(),
        problem: e.to_string(),
    };
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(format)?;
    let st = SafeTensors::deserialize(bytes).map_err(format)?;
    let map = header
        .metadata()
        .clone()
        .ok_or_else(|| WeightsError::Metadata {
            path: p(),
            problem: "no metadata header (was it written by `train`?)".into(),
        })?;
    let metadata = Metadata::from_map(&map).map_err(|e| WeightsError::Metadata {
        path: p(),
        problem: e.to_string(),
    })?;
    if metadata.format_version != FORMAT_VERSION || metadata.architecture != model::ARCHITECTURE {
        return Err(WeightsError::Metadata {
            path: p(),
            problem: format!(
                "written for architecture `{}` format {}, this build expects `{}` format {}",
                metadata.architecture,
                metadata.format_version,
                model::ARCHITECTURE,
                FORMAT_VERSION
            ),
        });
    }

    let candle = |source| WeightsError::Candle { path: p(), source };
    let expected = model::parameter_shapes().map_err(candle)?;
    let tensor_err = |name: &str, problem: String| WeightsError::Tensor {
        path: p(),
        name: name.to_string(),
        problem,
    };
    let mut tensors = HashMap::new();
    for (name, shape) in &expected {
        let view = st
            .tensor(name)
            .map_err(|_| tensor_err(name, "missing".into()))?;
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(tensor_err(
                name,
                format!("dtype {:?}, expected F32", view.dtype()),
            ));
        }
        if view.shape() != shape.as_slice() {
            return Err(tensor_err(
                name,
                format!("shape {:?}, expected {:?}", view.shape(), shape),
            ));
        }
        // A NaN or infinity poisons every logit it reaches: the server would answer garbage
        // with a 200, so such a file is refused like a malformed one.
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let mut bad = values.clone().enumerate().filter(|(_, v)| !v.is_finite());
        if let Some((first, value)) = bad.next() {
            return Err(tensor_err(
                name,
                format!(
                    "{} of {} values are not finite (first: {value} at index {first}); \
                     the training run diverged or the file is damaged",
                    1 + bad.count(),
                    values.len()
                ),
            ));
        }
        let t = Tensor::from_raw_buffer(view.data(), DType::F32, shape, device).map_err(candle)?;
        tensors.insert(name.clone(), t);
    }
    let mut extra: Vec<&str> = st
        .names()
        .into_iter()
        .filter(|n| !tensors.contains_key(*n))
        .collect();
    extra.sort();
    if let Some(name) = extra.first() {
        return Err(tensor_err(
            name,
            format!("not part of architecture `{}`", model::ARCHITECTURE),
        ));
    }
    let mut net =
        Net::new(VarBuilder::from_tensors(tensors, DType::F32, device)).map_err(candle)?;
    net.freeze().map_err(candle)?;
    Ok(Loaded {
        net,
        metadata,
        sha256: hex::encode(Sha256::digest(bytes)),
    })
}

/// Serialises the variables with `metadata` to safetensors bytes, header keys sorted so the
/// same weights and metadata always give the same bytes.
pub fn to_bytes(
    path: &Path,
    varmap: &VarMap,
    metadata: &Metadata,
) -> Result<Vec<u8>, WeightsError> {
    let data = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
    let tensors: BTreeMap<&String, &Tensor> =
        data.iter().map(|(k, v)| (k, v.as_tensor())).collect();
    let bytes = safetensors::serialize(tensors, Some(metadata.to_map())).map_err(|e| {
        WeightsError::Format {
            path: path.to_path_buf(),
            problem: e.to_string(),
        }
    })?;
    canonical_header(bytes).map_err(|e| WeightsError::Format {
        path: path.to_path_buf(),
        problem: e.to_string(),
    })
}

/// Why safetensors' own output could not be put in canonical order: a bug, never the input.
#[derive(Debug, thiserror::Error)]
enum CanonicalError {
    #[error("serialised buffer shorter than its header length")]
    Short,
    #[error("header is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("canonical header longer than the original")]
    Longer,
}

/// safetensors keeps metadata in a `HashMap`, so its JSON key order changes from run to run;
/// re-serialising the header through serde_json's sorted map fixes the order and the length.
fn canonical_header(mut bytes: Vec<u8>) -> Result<Vec<u8>, CanonicalError> {
    let n = bytes
        .first_chunk::<8>()
        .map(|len| u64::from_le_bytes(*len) as usize)
        .filter(|n| bytes.len() >= 8 + n)
        .ok_or(CanonicalError::Short)?;
    let header = &bytes[8..8 + n];
    let value: BTreeMap<String, serde_json::Value> = serde_json::from_slice(header)?;
    let mut sorted = serde_json::to_vec(&value)?;
    if sorted.len() > n {
        return Err(CanonicalError::Longer);
    }
    sorted.resize(n, b' ');
    bytes[8..8 + n].copy_from_slice(&sorted);
    Ok(bytes)
}

/// Writes the variables and metadata to `path` atomically (see [`write_atomic`]).
pub fn save(path: &Path, varmap: &VarMap, metadata: &Metadata) -> Result<(), WeightsError> {
    let bytes = to_bytes(path, varmap, metadata)?;
    write_atomic(path, |f| {
        // Temporary files are created owner-only; weights are not a secret.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(fs::Permissions::from_mode(0o644))?;
        }
        f.write_all(&bytes)
    })
    .map_err(|source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::ModuleT;

    fn trained_like() -> (VarMap, Metadata) {
        let varmap = VarMap::new();
        Net::new(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
        model::init_deterministic(&varmap, 42).unwrap();
        let metadata = Metadata {
            format_version: FORMAT_VERSION.into(),
            architecture: model::ARCHITECTURE.into(),
            input: Metadata::input_description(),
            normalization: Metadata::normalization_description(),
            test_accuracy: 0.5,
            epochs: 1,
            seed: 42,
            batch_size: 64,
            learning_rate: 0.001,
            training_seconds: 1.5,
            created: "2026-01-01T00:00:00Z".into(),
            train_data_sha256: "ab".repeat(32),
        };
        (varmap, metadata)
    }

    /// Rewrites one tensor entry in the header, keeping the byte layout valid.
    fn with_tensors(varmap: &VarMap, meta: &Metadata, edit: impl FnOnce(&mut VarMap)) -> Vec<u8> {
        let copy = VarMap::new();
        {
            let src = varmap.data().lock().unwrap();
            let mut dst = copy.data().lock().unwrap();
            for (k, v) in src.iter() {
                dst.insert(
                    k.clone(),
                    candle_core::Var::from_tensor(v.as_tensor()).unwrap(),
                );
            }
        }
        let mut copy = copy;
        edit(&mut copy);
        to_bytes(Path::new("x"), &copy, meta).unwrap()
    }

    #[test]
    fn save_then_load_gives_identical_logits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let (varmap, meta) = trained_like();
        let mut original =
            Net::new(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
        // A loaded network is frozen for serving, and a frozen layer adds in another order
        // than the trainable one (that pair is compared within a tolerance in `model`).
        original.freeze().unwrap();
        save(&path, &varmap, &meta).unwrap();
        let loaded = load(&path, &Device::Cpu).unwrap();
        assert_eq!(loaded.metadata, meta);
        let xs = Tensor::randn(0f32, 1., (5, 1, 28, 28), &Device::Cpu).unwrap();
        let a = original
            .forward_t(&xs, false)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let b = loaded
            .net
            .forward_t(&xs, false)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn same_weights_same_bytes() {
        let (varmap, meta) = trained_like();
        let a = to_bytes(Path::new("a"), &varmap, &meta).unwrap();
        for _ in 0..5 {
            assert_eq!(a, to_bytes(Path::new("a"), &varmap, &meta).unwrap());
        }
    }

    #[test]
    fn wrong_shape_is_named() {
        let (varmap, meta) = trained_like();
        let bytes = with_tensors(&varmap, &meta, |vm| {
            vm.data().lock().unwrap().insert(
                "fc2.weight".into(),
                candle_core::Var::zeros((9, 128), DType::F32, &Device::Cpu).unwrap(),
            );
        });
        let e = from_bytes(Path::new("w.safetensors"), &bytes, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "w.safetensors: tensor `fc2.weight`: shape [9, 128], expected [10, 128]"
        );
    }

    #[test]
    fn missing_and_extra_tensors_are_named() {
        let (varmap, meta) = trained_like();
        let bytes = with_tensors(&varmap, &meta, |vm| {
            vm.data().lock().unwrap().remove("conv2.bias");
        });
        let e = from_bytes(Path::new("w"), &bytes, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "w: tensor `conv2.bias`: missing");

        let bytes = with_tensors(&varmap, &meta, |vm| {
            vm.data().lock().unwrap().insert(
                "conv9.weight".into(),
                candle_core::Var::zeros(3, DType::F32, &Device::Cpu).unwrap(),
            );
        });
        let e = from_bytes(Path::new("w"), &bytes, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tensor `conv9.weight`: not part of architecture"),
            "{e}"
        );
    }

    #[test]
    fn wrong_dtype_is_named() {
        let (varmap, meta) = trained_like();
        let bytes = with_tensors(&varmap, &meta, |vm| {
            vm.data().lock().unwrap().insert(
                "fc1.bias".into(),
                candle_core::Var::zeros(128, DType::F64, &Device::Cpu).unwrap(),
            );
        });
        let e = from_bytes(Path::new("w"), &bytes, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "w: tensor `fc1.bias`: dtype F64, expected F32");
    }

    #[test]
    fn truncated_and_garbage_files_are_rejected() {
        let (varmap, meta) = trained_like();
        let bytes = to_bytes(Path::new("w"), &varmap, &meta).unwrap();
        let e = from_bytes(Path::new("w"), &bytes[..bytes.len() - 10], &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("w: not a valid safetensors file"), "{e}");
        let e = from_bytes(Path::new("w"), b"hello", &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("w: not a valid safetensors file"), "{e}");
        let e = load(Path::new("/nonexistent/w.safetensors"), &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/nonexistent/w.safetensors: "), "{e}");
    }

    #[test]
    fn non_finite_weights_are_refused_naming_the_tensor() {
        let (varmap, meta) = trained_like();
        for (bad, shown) in [
            (f32::NAN, "NaN"),
            (f32::INFINITY, "inf"),
            (f32::NEG_INFINITY, "-inf"),
        ] {
            let bytes = with_tensors(&varmap, &meta, |vm| {
                let mut values = vec![0.5f32; 128];
                values[7] = bad;
                values[9] = bad;
                vm.data().lock().unwrap().insert(
                    "fc1.bias".into(),
                    candle_core::Var::from_vec(values, 128, &Device::Cpu).unwrap(),
                );
            });
            let e = from_bytes(Path::new("w.safetensors"), &bytes, &Device::Cpu)
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("w.safetensors: tensor `fc1.bias`: 2 of 128 values are not finite"),
                "{e}"
            );
            assert!(e.contains(&format!("first: {shown} at index 7")), "{e}");
        }
        let all_nan = with_tensors(&varmap, &meta, |vm| {
            for v in vm.data().lock().unwrap().values_mut() {
                let nan = (v.as_tensor() * f64::NAN).unwrap();
                *v = candle_core::Var::from_tensor(&nan).unwrap();
            }
        });
        let e = from_bytes(Path::new("w"), &all_nan, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("values are not finite"), "{e}");
    }

    #[test]
    fn foreign_architecture_is_rejected() {
        let (varmap, mut meta) = trained_like();
        meta.architecture = "resnet".into();
        let bytes = to_bytes(Path::new("w"), &varmap, &meta).unwrap();
        let e = from_bytes(Path::new("w"), &bytes, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("architecture `resnet`"), "{e}");
    }
}
