//! What every request handler may use: the model, users and tokens, limits and pools, built
//! once by `startup` and shared read-only. Its own module so routes and start-up both depend on
//! it instead of on each other.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Semaphore;

use crate::auth::Auth;
use crate::decode_pool::{DecodePool, MemoryBudget};
use crate::inference::Engine;
use crate::login_throttle::LoginThrottle;
use crate::password_pool::PasswordPool;
use crate::preprocess::ImageLimits;
use crate::upload::BodyLimits;
use crate::weights;

/// The model as named in every prediction.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ModelRef {
    /// Architecture name from the weights file.
    pub version: String,
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

pub(crate) struct Inner {
    pub(crate) engine: Engine,
    pub(crate) auth: Arc<Auth>,
    pub(crate) info: ModelInfo,
    pub(crate) image_limits: ImageLimits,
    pub(crate) max_body_bytes: u64,
    pub(crate) body_timeout: Duration,
    pub(crate) body_memory: Arc<Semaphore>,
    pub(crate) max_files: usize,
    pub(crate) in_flight: Arc<Semaphore>,
    pub(crate) decoders: DecodePool,
    pub(crate) passwords: PasswordPool,
    pub(crate) login_throttle: LoginThrottle,
    pub(crate) decode_memory: Arc<MemoryBudget>,
    pub(crate) jaeger_ui_url: String,
}

/// Read-only state shared by all requests; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl From<Inner> for AppState {
    fn from(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }
}

impl AppState {
    /// The inference engine.
    pub fn engine(&self) -> &Engine {
        &self.0.engine
    }
    /// Users and tokens.
    pub fn auth(&self) -> Arc<Auth> {
        Arc::clone(&self.0.auth)
    }
    /// The model's identity, as put in responses.
    pub fn model_ref(&self) -> &ModelRef {
        &self.0.info.model
    }
    /// Everything known about the model.
    pub fn model_info(&self) -> &ModelInfo {
        &self.0.info
    }
    /// Decoder limits.
    pub fn image_limits(&self) -> ImageLimits {
        self.0.image_limits
    }
    /// Largest request body.
    pub fn max_body_bytes(&self) -> u64 {
        self.0.max_body_bytes
    }
    /// Limits for reading a body of at most `max_bytes`: the request timeout and the budget
    /// shared by all bodies.
    pub fn body_limits(&self, max_bytes: u64) -> BodyLimits {
        BodyLimits {
            max_bytes,
            timeout: self.0.body_timeout,
            budget: Arc::clone(&self.0.body_memory),
        }
    }
    /// Most images per request.
    pub fn max_files(&self) -> usize {
        self.0.max_files
    }
    /// Permits for /predict requests in progress.
    pub fn in_flight(&self) -> Arc<Semaphore> {
        Arc::clone(&self.0.in_flight)
    }
    /// The image decoding threads.
    pub fn decoders(&self) -> &DecodePool {
        &self.0.decoders
    }
    /// Memory shared by the images being decoded.
    pub fn decode_memory(&self) -> Arc<MemoryBudget> {
        Arc::clone(&self.0.decode_memory)
    }
    /// Base URL of Jaeger's web UI, for links from the web page.
    pub fn jaeger_ui_url(&self) -> &str {
        &self.0.jaeger_ui_url
    }
    /// The password-checking threads.
    pub fn passwords(&self) -> &PasswordPool {
        &self.0.passwords
    }
    /// Failed-login allowances per username and per client address.
    pub fn login_throttle(&self) -> &LoginThrottle {
        &self.0.login_throttle
    }
}
