//! `GET /model`: readiness plus what the weights file says about itself.

use std::sync::Arc;

use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::served::ModelInfo;

/// `GET /model` → the weights' metadata and the SHA-256 of the file.
#[utoipa::path(get, path = "/model", tag = "service", operation_id = "model",
    responses((status = 200, description = "The loaded model is ready", body = ModelInfo)))]
pub fn route(
    info: ModelInfo,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static {
    let info = Arc::new(info);
    super::route(
        "/model",
        "GET",
        warp::path!("model"),
        warp::get().map(move || warp::reply::json(&*info).into_response()),
    )
}
