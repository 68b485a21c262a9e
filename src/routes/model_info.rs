//! `GET /model`: readiness plus what the served weights file says about itself.

use std::sync::Arc;

use serde::Serialize;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::repository::Repository;
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
}

/// `GET /model` → the served weights' metadata and the SHA-256 of the file.
#[utoipa::path(get, path = "/model", tag = "service", operation_id = "model",
    responses((status = 200, description = "The loaded model is ready", body = Served)))]
pub fn route(
    repository: Arc<Repository>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static {
    super::route(
        "/model",
        "GET",
        warp::path!("model"),
        warp::get().map(move || {
            let latest = repository.latest();
            warp::reply::json(&Served {
                latest: &latest.info,
                loaded_versions: repository.loaded_versions(),
            })
            .into_response()
        }),
    )
}
