//! The model being served, as answers and `GET /model` name it.

use serde::Serialize;

use crate::weights;

/// The model as named in every prediction.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ModelRef {
    /// Architecture name from the weights file. Serialised as `version`, the name the first
    /// release of the API gave it; clients read it there.
    #[serde(rename = "version")]
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
    /// Architecture and file hash.
    #[serde(flatten)]
    pub model: ModelRef,
    /// The weights' header metadata.
    pub metadata: weights::Metadata,
}

impl ModelInfo {
    /// A loaded weights file, ready to serve.
    pub fn of(loaded: &weights::Loaded) -> Self {
        Self {
            status: "ready",
            model: ModelRef {
                architecture: loaded.metadata.architecture.clone(),
                sha256: loaded.sha256.clone(),
            },
            metadata: loaded.metadata.clone(),
        }
    }
}
