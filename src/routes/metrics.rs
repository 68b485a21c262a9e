//! `GET /metrics`: Prometheus text exposition.

use warp::http::header::CONTENT_TYPE;
use warp::{Filter, Rejection, Reply};

/// `GET /metrics` → every metric in Prometheus text format 0.0.4.
#[utoipa::path(get, path = "/metrics", tag = "service", operation_id = "metrics",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", content_type = "text/plain", body = String)))]
pub fn route() -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("metrics").and(warp::get()).map(|| {
        warp::reply::with_header(
            crate::metrics::render(),
            CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )
    })
}
