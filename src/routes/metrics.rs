//! `GET /metrics`: Prometheus text exposition.

use warp::http::header::CONTENT_TYPE;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

/// `GET /metrics` → every metric in Prometheus text format 0.0.4.
#[utoipa::path(get, path = "/metrics", tag = "service", operation_id = "metrics",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", content_type = "text/plain", body = String)))]
pub fn route(
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static {
    super::route(
        "/metrics",
        "GET",
        warp::path!("metrics"),
        warp::get().map(|| {
            warp::reply::with_header(
                crate::metrics::render(),
                CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )
            .into_response()
        }),
    )
}
