//! Authentication as filters: routes that need a token compose [`with_bearer`] (or
//! [`with_admin`]) in front of their handler, as warp's examples do.

use std::sync::Arc;

use warp::{Filter, Rejection};

use crate::auth::{Auth, Claims};
use crate::error::ApiError;

/// The claims of a valid `Authorization: Bearer` token still bound to its user's current
/// password; `None` when the server runs with `--no-auth`. Refusals are the 401s of
/// [`crate::auth::TokenError`].
fn with_claims(
    auth: Arc<Auth>,
) -> impl Filter<Extract = (Option<Claims>,), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization").and_then(move |header: Option<String>| {
        let auth = Arc::clone(&auth);
        async move {
            if !auth.required {
                return Ok(None);
            }
            auth.authorize(header.as_deref())
                .map(Some)
                .map_err(|e| warp::reject::custom(ApiError::from(e)))
        }
    })
}

/// Passes requests with a valid bearer token (everything with `--no-auth`).
pub fn with_bearer(auth: Arc<Auth>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    with_claims(auth).map(|_| ()).untuple_one()
}

/// Passes requests whose token belongs to an admin of the users file (everything with
/// `--no-auth`); others get 403.
pub fn with_admin(auth: Arc<Auth>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    let users = Arc::clone(&auth);
    with_claims(auth)
        .and_then(move |claims: Option<Claims>| {
            let users = Arc::clone(&users);
            async move {
                match claims {
                    Some(c) if !users.users.get().is_admin(&c.sub) => {
                        Err(warp::reject::custom(ApiError::Forbidden))
                    }
                    _ => Ok(()),
                }
            }
        })
        .untuple_one()
}
