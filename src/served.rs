//! The model being served, as answers and `GET /model` name it.

use serde::Serialize;

use crate::weights;

/// The one model this server serves, by the name the inference protocol uses.
pub const MODEL_NAME: &str = "mnist";

/// The model as named in every prediction: which weights produced the answer.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ModelRef {
    /// Always `mnist`, the name in the inference protocol's paths.
    #[schema(example = "mnist")]
    pub name: &'static str,
    /// The repository version (`1` for a single `--weights` file).
    #[schema(example = "1")]
    pub version: String,
    /// Architecture name from the weights file.
    #[schema(example = "mnist-cnn-v3")]
    pub architecture: String,
    /// SHA-256 of the weights file.
    pub sha256: String,
}

/// What `GET /model` shows.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ModelInfo {
    /// Always `ready` once served: the model loads before the port opens.
    #[schema(value_type = String, example = "ready")]
    pub status: &'static str,
    /// Name, version, architecture and file hash.
    #[serde(flatten)]
    pub model: ModelRef,
    /// The weights' header metadata.
    pub metadata: weights::Metadata,
}

impl ModelInfo {
    /// A loaded weights file, ready to serve as `version`.
    pub fn of(loaded: &weights::Loaded, version: u64) -> Self {
        Self {
            status: "ready",
            model: ModelRef {
                name: MODEL_NAME,
                version: version.to_string(),
                architecture: loaded.metadata.architecture.clone(),
                sha256: loaded.sha256.clone(),
            },
            metadata: loaded.metadata.clone(),
        }
    }
}
