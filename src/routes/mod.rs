//! The HTTP API: one filter per endpoint, combined in [`api`].

mod health;
mod login;
mod model;
mod predict;

use std::convert::Infallible;

use warp::{Filter, Reply};

use crate::error::handle_rejection;
use crate::startup::AppState;

/// Every route, with every rejection turned into the JSON error shape.
pub fn api(
    state: AppState,
) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone + Send + Sync + 'static {
    health::route()
        .or(model::route(state.clone()))
        .or(login::route(state.clone()))
        .or(predict::route(state))
        .recover(handle_rejection)
}

/// Hands a clone of the shared state to a handler.
fn with_state(state: AppState) -> impl Filter<Extract = (AppState,), Error = Infallible> + Clone {
    warp::any().map(move || state.clone())
}
