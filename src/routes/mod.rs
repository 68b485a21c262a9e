//! The HTTP API: one filter per endpoint, combined in [`api`].

mod assets;
mod health;
mod login;
mod metrics;
mod model;
mod openapi;
mod predict;
mod request_span;
mod web;

use std::convert::Infallible;

use warp::{Filter, Reply};

use crate::error::handle_rejection;
use crate::startup::AppState;

/// Every route, with every rejection turned into the JSON error shape.
pub fn api(
    state: AppState,
) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone + Send + Sync + 'static {
    let routes = health::route()
        .or(model::route(state.clone()))
        .or(metrics::route())
        .or(openapi::route())
        .or(login::route(state.clone()))
        .or(predict::route(state.clone()))
        .or(web::route(state));
    request_span::record_client()
        .and(routes)
        .recover(handle_rejection)
        .map(|reply| request_span::finish(Reply::into_response(reply)))
        .with(warp::trace(request_span::start))
        .with(warp::log::custom(|info| {
            crate::metrics::record_request(
                info.method(),
                request_span::route_of(info.path()),
                info.status(),
                info.elapsed(),
            )
        }))
}

/// Reads a whole body of at most `limit` bytes, refusing larger ones as soon as they cross the
/// limit (declared or streamed), so nothing big is ever buffered.
async fn read_limited(
    declared: Option<u64>,
    body: impl futures_util::Stream<Item = Result<impl bytes::Buf, warp::Error>>,
    limit: u64,
) -> Result<Vec<u8>, crate::error::ApiError> {
    use crate::error::ApiError;
    use futures_util::TryStreamExt;
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::BodyTooLarge(limit));
    }
    let mut out = Vec::new();
    futures_util::pin_mut!(body);
    while let Some(mut chunk) = body
        .try_next()
        .await
        .map_err(|e| ApiError::BadHeader(format!("reading the body failed: {e}")))?
    {
        if out.len() as u64 + chunk.remaining() as u64 > limit {
            return Err(ApiError::BodyTooLarge(limit));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            out.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(out)
}

/// Hands a clone of the shared state to a handler.
fn with_state(state: AppState) -> impl Filter<Extract = (AppState,), Error = Infallible> + Clone {
    warp::any().map(move || state.clone())
}
