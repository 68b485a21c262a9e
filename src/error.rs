//! The one API error type, and the one place that turns failures into HTTP responses.
//!
//! Every error body has the same shape: `{"msg": "<for people>", "code": "<for programs>"}`.
//! `msg` is the original Flask app's key.

use std::convert::Infallible;

use serde::Serialize;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reject::Rejection;
use warp::reply::{self, Reply, Response};

use crate::preprocess::ImageError;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// `/login` body lacks a non-empty username or password.
    #[error("Username and password required")]
    CredentialsRequired,
    /// The body should have been JSON and is not.
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    /// Unknown user or wrong password; deliberately the same message for both.
    #[error("Bad username or password")]
    BadCredentials,
    /// No `Authorization: Bearer` header.
    #[error("missing bearer token: send `Authorization: Bearer <access_token>` from /login")]
    MissingToken,
    /// The token failed verification.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// The token was valid but has expired.
    #[error("token expired: log in again")]
    ExpiredToken,
    /// A genuine token whose user was removed or changed password after it was issued.
    #[error("token revoked: {0}; log in again")]
    TokenRevoked(&'static str),
    /// Too many failed logins for this username or from this address; nothing was checked.
    #[error("too many failed logins: retry after {retry_after} seconds")]
    TooManyAttempts {
        /// Whole seconds until the next attempt is allowed (the `Retry-After` value).
        retry_after: u64,
    },
    /// Every password-checking slot is taken; the client should retry.
    #[error("server busy: too many logins in progress, retry shortly")]
    LoginsOverloaded,
    /// `/predict` needs `multipart/form-data`.
    #[error("expected a multipart/form-data body with the image in field `file`, got {0}")]
    NotMultipart(String),
    /// The multipart body could not be parsed.
    #[error("malformed multipart body: {0}")]
    BadMultipart(String),
    /// No part named `file`.
    #[error("no `file` field in the form: send the image as multipart field `file`")]
    NoFile,
    /// More `file` parts than allowed.
    #[error("too many files: at most {0} images per request")]
    TooManyFiles(usize),
    /// A header is missing or malformed.
    #[error("bad request header: {0}")]
    BadHeader(String),
    /// The body is bigger than the configured limit.
    #[error("request body exceeds the limit of {0} bytes")]
    BodyTooLarge(u64),
    /// The body did not arrive within the body timeout.
    #[error("request body not received within {0} s: send the whole body promptly")]
    BodyTimeout(u64),
    /// One of the uploaded images is unusable; `index` counts `file` parts from 0.
    #[error("file {index}{}: {source}", name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default())]
    Image {
        /// Position of the part among the `file` parts.
        index: usize,
        /// The part's filename, if the client sent one.
        name: Option<String>,
        /// What is wrong with it.
        source: ImageError,
    },
    /// All inference capacity is taken; the client should retry.
    #[error("server busy: too many predictions in flight, retry shortly")]
    Overloaded,
    /// The decode memory budget stayed taken for the whole wait (milliseconds).
    #[error("server busy: no image decoding memory came free within {0} ms, retry shortly")]
    DecodeBusy(u64),
    /// No such route.
    #[error("not found")]
    NotFound,
    /// The route exists with another method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A bug or an environment failure; details go to the log, not the client.
    #[error("internal server error")]
    Internal(#[source] anyhow::Error),
}

impl warp::reject::Reject for ApiError {}

/// The JSON body of every error response.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    /// For people: what went wrong and, where it helps, what to send instead.
    #[schema(example = "no `file` part in the multipart body")]
    pub msg: String,
    /// For programs: stable across releases (see the API docs for the list).
    #[schema(value_type = String, example = "missing_file")]
    pub code: &'a str,
}

impl ApiError {
    /// HTTP status and machine-readable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use ApiError::*;
        match self {
            CredentialsRequired => (StatusCode::BAD_REQUEST, "credentials_required"),
            InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            BadCredentials => (StatusCode::UNAUTHORIZED, "bad_credentials"),
            MissingToken => (StatusCode::UNAUTHORIZED, "missing_token"),
            InvalidToken(_) => (StatusCode::UNAUTHORIZED, "invalid_token"),
            ExpiredToken => (StatusCode::UNAUTHORIZED, "token_expired"),
            TokenRevoked(_) => (StatusCode::UNAUTHORIZED, "token_revoked"),
            TooManyAttempts { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts"),
            LoginsOverloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            NotMultipart(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "not_multipart"),
            BadMultipart(_) => (StatusCode::BAD_REQUEST, "bad_multipart"),
            NoFile => (StatusCode::BAD_REQUEST, "missing_file"),
            TooManyFiles(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_many_files"),
            BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            BadHeader(_) => (StatusCode::BAD_REQUEST, "bad_header"),
            BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            Image { source, .. } => source.status_and_code(),
            Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            DecodeBusy(_) => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            NotFound => (StatusCode::NOT_FOUND, "not_found"),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// The JSON response for this error, with the headers its status calls for.
    pub fn to_response(&self) -> Response {
        let (status, code) = self.status_and_code();
        let body = ErrorBody {
            msg: self.to_string(),
            code,
        };
        let mut res = reply::with_status(reply::json(&body), status).into_response();
        let headers = res.headers_mut();
        match status {
            StatusCode::UNAUTHORIZED => {
                let challenge = match self {
                    ApiError::InvalidToken(_)
                    | ApiError::ExpiredToken
                    | ApiError::TokenRevoked(_) => "Bearer error=\"invalid_token\"",
                    _ => "Bearer",
                };
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            StatusCode::REQUEST_TIMEOUT => {
                // The rest of the body may still be on its way; the connection cannot be reused.
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            StatusCode::TOO_MANY_REQUESTS => {
                if let ApiError::TooManyAttempts { retry_after } = self {
                    headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
                }
            }
            _ => {}
        }
        res
    }
}

/// Largest JSON body accepted (the `/login` credentials).
pub const JSON_BODY_LIMIT: u64 = 16 * 1024;

/// Maps warp's own rejections onto [`ApiError`] so every response has the same shape.
fn from_warp(err: &Rejection) -> ApiError {
    if err.is_not_found() {
        ApiError::NotFound
    } else if err.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::MethodNotAllowed
    } else if let Some(e) = err.find::<warp::reject::InvalidHeader>() {
        ApiError::BadHeader(e.to_string())
    } else {
        ApiError::Internal(anyhow::anyhow!("unhandled rejection: {err:?}"))
    }
}

/// The `recover` handler: every rejection becomes a JSON error response, recorded on the
/// request span as an `exception` event.
///
/// That event is the request's one log line, at a level that fits: a client's mistake (4xx)
/// is routine and goes to the span only (target `mnist_api::exception` at info, which the
/// default log filter leaves out), an overload is a warning, and only our own failure is an
/// error. A flood of bad requests must not become a flood of log.
pub async fn handle_rejection(err: Rejection) -> Result<Response, Infallible> {
    let fallback;
    let api = match err.find::<ApiError>() {
        Some(api) => api,
        None => {
            fallback = from_warp(&err);
            &fallback
        }
    };
    let (status, code) = api.status_and_code();
    tracing::Span::current().record("error.type", code);
    let message = api.to_string();
    let message = crate::clip::clip_to(&message, MAX_LOGGED_MESSAGE);
    let status_code = status.as_u16() as i64;
    let cause = match api {
        ApiError::Internal(cause) => Some(format!("{cause:#}")),
        _ => None,
    };
    // One macro call per level: tracing fixes an event's level and target at compile time.
    macro_rules! exception {
        ($level:expr) => {
            tracing::event!(
                target: "mnist_api::exception",
                $level,
                { exception.message = %message, exception.type = %code,
                  http.response.status_code = status_code, error.cause = cause.as_deref() },
                "exception"
            )
        };
    }
    if matches!(api, ApiError::Internal(_)) {
        exception!(tracing::Level::ERROR);
    } else if status.is_server_error() {
        exception!(tracing::Level::WARN);
    } else {
        exception!(tracing::Level::INFO);
    }
    Ok(api.to_response())
}

/// Longest error message written to a log line or span event; client-supplied parts are
/// already clipped where they enter, this bounds the whole.
const MAX_LOGGED_MESSAGE: usize = 1024;
