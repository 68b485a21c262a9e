//! `POST /login`: username and password for a bearer token.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde::Deserialize;
use warp::http::header;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::auth::Auth;
use crate::error::{ApiError, ErrorBody};
use crate::login_throttle::LoginThrottle;
use crate::password_pool::PasswordPool;
use crate::upload::{read_limited, BodyLimits};

/// What `/login` uses besides the users: the password threads, the throttle, body limits.
pub struct Login {
    passwords: PasswordPool,
    throttle: LoginThrottle,
    body: BodyLimits,
}

impl Login {
    /// Credentials bodies within `body` (see [`BodyLimits::small_json`]).
    pub fn new(passwords: PasswordPool, throttle: LoginThrottle, body: &BodyLimits) -> Self {
        Self {
            passwords,
            throttle,
            body: body.small_json(),
        }
    }
}

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
    #[schema(example = "alice", min_length = 1)]
    username: String,
    #[schema(format = Password, min_length = 1)]
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
        (status = 400, description = "`credentials_required` (\"Username and password required\"), `invalid_json`, `bad_header`, `bad_body` (the connection failed mid-body)", body = ErrorBody),
        (status = 401, description = "`bad_credentials`: the same for unknown users and wrong passwords", body = ErrorBody),
        (status = 408, description = "`body_timeout`: the body did not arrive in time; the connection is closed", body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
        (status = 429, description = "`too_many_attempts`: too many logins for this username or from this address; retry after the `Retry-After` seconds. Answered after a deliberate delay, without checking the password", body = ErrorBody,
            headers(("retry-after" = u64, description = "Seconds until the next attempt is allowed"))),
        (status = 503, description = "`overloaded`: too many logins waiting for a password check, or no memory free for request bodies; retry after the `Retry-After` seconds", body = ErrorBody),
    ))]
pub fn route(
    login: Login,
    auth: Arc<Auth>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static {
    let login = Arc::new(login);
    let handler = warp::post()
        .and(crate::server::client_addr())
        .and(warp::header::optional::<String>("content-length"))
        .and(warp::body::stream())
        .and_then(
            move |peer: Option<SocketAddr>, declared: Option<String>, body| {
                let (login, auth) = (Arc::clone(&login), Arc::clone(&auth));
                async move {
                    let result = async {
                        let (body, _charge) =
                            read_limited(declared.as_deref(), body, &login.body).await?;
                        log_in(&body, peer.map(|p| p.ip()), &login, &auth).await
                    };
                    result.await.map_err(Rejection::from)
                }
            },
        );
    super::route("/login", "POST", warp::path!("login"), handler)
}

fn non_empty(v: Option<serde_json::Value>) -> Option<String> {
    match v {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    }
}

async fn log_in(
    body: &[u8],
    peer: Option<IpAddr>,
    login: &Login,
    auth: &Auth,
) -> Result<Response, ApiError> {
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
    let throttle = &login.throttle;
    if let Err(throttled) = throttle.check(&username, peer) {
        // Held back so that a client ignoring Retry-After gets one answer per connection per
        // delay, not thousands of cheap 429s a second; an async sleep costs no thread.
        tokio::time::sleep(throttle.delay()).await;
        return Err(ApiError::TooManyAttempts {
            retry_after: throttled.retry_after,
        });
    }
    let users = auth.users.get();
    let (user, checked) = (username.clone(), Arc::clone(&users));
    // Unknown users cost the same argon2 work (see `Users::verify`), on the password threads,
    // never on the threads that serve predictions.
    let ok = login
        .passwords
        .run(move || checked.verify(&user, &password))
        .await?;
    if !ok {
        tracing::info!(parent: &span, error = "bad username or password");
        return Err(ApiError::BadCredentials);
    }
    span.record("enduser.id", username.as_str());
    tracing::info!(parent: &span, "user {username} logged in");
    // Bound to the password just checked, from the same snapshot of the users file.
    let token = auth
        .tokens
        .issue_with(&username, users.fingerprint(&username))?;
    let reply = warp::reply::json(&Token {
        access_token: token,
        token_type: "Bearer",
        expires_in: auth.tokens.ttl_secs(),
    });
    // RFC 6749 §5.1: a response carrying a token must not be stored by any cache.
    Ok(warp::reply::with_header(
        warp::reply::with_header(reply, header::CACHE_CONTROL, "no-store"),
        header::PRAGMA,
        "no-cache",
    )
    .into_response())
}
