//! `GET /health`: liveness, as in the original app.

use warp::{Filter, Rejection, Reply};

/// `GET /health` → `200 {"status":"ok"}`.
pub fn route() -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("health").and(warp::get()).map(|| {
        let _span = tracing::info_span!("health-check").entered();
        warp::reply::json(&serde_json::json!({"status": "ok"}))
    })
}
