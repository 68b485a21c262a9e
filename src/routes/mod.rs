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

use warp::http::{header, HeaderValue, StatusCode};
use warp::path::FullPath;
use warp::{Filter, Reply};

use crate::error::handle_rejection;
use crate::state::AppState;

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
    let handled = request_span::record_client()
        .and(routes)
        .recover(handle_rejection);
    warp::path::full()
        .and(handled)
        .map(|path: FullPath, reply| {
            let mut res = Reply::into_response(reply);
            if res.status() == StatusCode::METHOD_NOT_ALLOWED {
                res.headers_mut().insert(
                    header::ALLOW,
                    HeaderValue::from_static(allowed_methods(path.as_str())),
                );
            }
            request_span::finish(res)
        })
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

/// The methods a known path answers, for the `Allow` header of its 405 (RFC 9110 §15.5.6).
fn allowed_methods(path: &str) -> &'static str {
    match path {
        "/login" | "/predict" => "POST",
        "/health" => "GET, HEAD",
        _ => "GET",
    }
}

/// Hands a clone of the shared state to a handler.
fn with_state(state: AppState) -> impl Filter<Extract = (AppState,), Error = Infallible> + Clone {
    warp::any().map(move || state.clone())
}
