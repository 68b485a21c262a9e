//! Authentication as a filter: routes that need a token compose [`with_bearer`] in front of
//! their handler, as warp's examples do.

use std::sync::Arc;

use warp::{Filter, Rejection};

use crate::auth::Auth;
use crate::error::ApiError;

/// Passes requests whose `Authorization: Bearer` token is valid and still bound to its user's
/// current password; everything when the server runs with `--no-auth`. Refusals are the
/// 401s of [`crate::auth::TokenError`].
pub fn with_bearer(auth: Arc<Auth>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and_then(move |header: Option<String>| {
            let auth = Arc::clone(&auth);
            async move {
                if !auth.required {
                    return Ok(());
                }
                match auth.authorize(header.as_deref()) {
                    Ok(_claims) => Ok(()),
                    Err(e) => Err(warp::reject::custom(ApiError::from(e))),
                }
            }
        })
        .untuple_one()
}
