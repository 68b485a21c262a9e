//! `GET /model`: readiness plus what the weights file says about itself.

use warp::{Filter, Rejection, Reply};

use super::with_state;
use crate::state::AppState;

/// `GET /model` → the weights' metadata and the SHA-256 of the file.
#[utoipa::path(get, path = "/model", tag = "service", operation_id = "model",
    responses((status = 200, description = "The loaded model is ready", body = crate::state::ModelInfo)))]
pub fn route(state: AppState) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("model")
        .and(warp::get())
        .and(with_state(state))
        .map(|state: AppState| warp::reply::json(&state.model_info()))
}
