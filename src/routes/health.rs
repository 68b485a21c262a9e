//! `GET /health`: liveness, as in the original app.

use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

/// The liveness answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    status: &'static str,
}

/// `GET /health` → `200 {"status":"ok"}`; `HEAD /health` for probes that only look at the status.
#[utoipa::path(get, path = "/health", tag = "service", operation_id = "health",
    responses((status = 200, description = "The process is up", body = Health)))]
pub fn route(
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static {
    let get_or_head = warp::get().or(warp::head()).unify();
    super::route(
        "/health",
        "GET, HEAD",
        warp::path!("health"),
        get_or_head.map(|| {
            let _span = tracing::info_span!("health-check").entered();
            warp::reply::json(&Health { status: "ok" }).into_response()
        }),
    )
}
