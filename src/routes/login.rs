//! `POST /login`: username and password for a bearer token.

use std::time::Duration;

use serde::Deserialize;
use warp::{Filter, Rejection, Reply};

use super::with_state;
use crate::error::{ApiError, ErrorBody, JSON_BODY_LIMIT};
use crate::startup::AppState;
use crate::upload::read_limited;

/// The request body. Fields are loose (`Value`) so a number or null reads as "missing", like
/// the original app's `if not username or not password`.
#[derive(Deserialize)]
struct Credentials {
    username: Option<serde_json::Value>,
    password: Option<serde_json::Value>,
}

/// What `/login` reads (the schema; the handler reads the fields loosely).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Only describes the body for the API docs.
pub(crate) struct LoginRequest {
    #[schema(example = "alice")]
    username: String,
    #[schema(format = Password)]
    password: String,
}

/// A bearer token for `/predict`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Token {
    /// HS256 JWT with claims `sub`, `iat`, `exp`.
    access_token: String,
    /// Always `Bearer`.
    #[schema(example = "Bearer")]
    token_type: &'static str,
    /// Seconds until the token expires.
    #[schema(example = 3600)]
    expires_in: u64,
}

/// `POST /login` `{"username","password"}` → `{"access_token","token_type","expires_in"}`.
#[utoipa::path(post, path = "/login", tag = "auth", operation_id = "login",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = Token),
        (status = 400, description = "`credentials_required` (\"Username and password required\"), `invalid_json`", body = ErrorBody),
        (status = 401, description = "`bad_credentials`: the same for unknown users and wrong passwords", body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
        (status = 503, description = "`overloaded`: too many logins in progress", body = ErrorBody),
    ))]
pub fn route(state: AppState) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("login")
        .and(warp::post())
        .and(warp::header::optional::<String>("content-length"))
        .and(warp::body::stream())
        .and(with_state(state))
        .and_then(
            |declared: Option<String>, body, state: AppState| async move {
                let result = async {
                    let limits = state.body_limits(JSON_BODY_LIMIT);
                    let (body, _charge) = read_limited(declared.as_deref(), body, &limits).await?;
                    login(&body, state).await
                };
                result.await.map_err(Rejection::from)
            },
        )
}

fn non_empty(v: Option<serde_json::Value>) -> Option<String> {
    match v {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    }
}

async fn login(body: &[u8], state: AppState) -> Result<impl Reply, ApiError> {
    let span = tracing::info_span!("login", enduser.id = tracing::field::Empty);
    let creds: Credentials = match serde_json::from_slice::<serde_json::Value>(body) {
        Err(e) => return Err(ApiError::InvalidJson(e.to_string())),
        Ok(v) if v.is_object() => {
            serde_json::from_value(v).map_err(|e| ApiError::InvalidJson(e.to_string()))?
        }
        Ok(_) => return Err(ApiError::CredentialsRequired),
    };
    let (Some(username), Some(password)) = (non_empty(creds.username), non_empty(creds.password))
    else {
        return Err(ApiError::CredentialsRequired);
    };
    // argon2 takes tens of milliseconds and ~19 MiB: a few at a time, off the executor.
    let permit = tokio::time::timeout(Duration::from_secs(10), state.login_slots().acquire_owned())
        .await
        .map_err(|_| ApiError::Overloaded)?
        .map_err(|e| ApiError::Internal(e.into()))?;
    let auth = state.auth();
    let user = username.clone();
    let ok = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let ok = auth.users.verify(&user, &password);
        crate::release_freed_memory();
        ok
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))?;
    if !ok {
        tracing::info!(parent: &span, error = "bad username or password");
        return Err(ApiError::BadCredentials);
    }
    span.record("enduser.id", username.as_str());
    tracing::info!(parent: &span, "user {username} logged in");
    let token = state.auth().tokens.issue(&username)?;
    Ok(warp::reply::json(&Token {
        access_token: token,
        token_type: "Bearer",
        expires_in: state.auth().tokens.ttl_secs(),
    }))
}
