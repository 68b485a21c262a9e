//! `GET /model`: readiness, what the served weights file says about itself, and what one
//! `/predict` request may carry.

use std::sync::Arc;

use serde::Serialize;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::Predictor;
use crate::served::ModelInfo;

/// The served model and the versions loaded beside it.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Served<'a> {
    #[serde(flatten)]
    #[schema(inline)]
    latest: &'a ModelInfo,
    /// Every loaded version, ascending; the last is served by default.
    #[schema(example = json!([1, 2]))]
    loaded_versions: Vec<u64>,
    /// What one `/predict` request may carry, so clients can size their requests.
    limits: Limits,
}

/// The server's bounds on a `/predict` request (its `--max-files`, `--max-body-bytes` and
/// `--max-image-side`); over them the request gets 413.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Limits {
    /// Most `file` parts in one request.
    #[schema(example = 64)]
    max_files: usize,
    /// Largest request body, bytes, multipart framing included.
    #[schema(example = 16_777_216)]
    max_body_bytes: u64,
    /// Largest image width or height, pixels.
    #[schema(example = 4096)]
    max_image_side: u32,
}

/// `GET /model` → the served weights' metadata, the SHA-256 of the file and the request limits.
#[utoipa::path(get, path = "/model", tag = "service", operation_id = "model",
    responses((status = 200, description = "The loaded model is ready", body = Served)))]
pub fn route(
    predictor: Arc<Predictor>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static {
    super::route(
        "/model",
        "GET",
        warp::path!("model"),
        warp::get().map(move || {
            let latest = predictor.repository.latest();
            warp::reply::json(&Served {
                latest: &latest.info,
                loaded_versions: predictor.repository.loaded_versions(),
                limits: Limits {
                    max_files: predictor.max_files,
                    max_body_bytes: predictor.body.max_bytes,
                    max_image_side: predictor.images.max_side,
                },
            })
            .into_response()
        }),
    )
}
