//! The one API error type, and the one place that turns failures into HTTP responses.
//!
//! Every error body has the same shape: `{"msg": "<for people>", "code": "<for programs>"}`.
//! `msg` is the original Flask app's key.

use std::convert::Infallible;

use serde::Serialize;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reject::Rejection;
use warp::reply::{self, Reply, Response};

use crate::auth::TokenError;
use crate::decode_pool::BudgetError;
use crate::inference::InferenceError;
use crate::oip::ProtocolError;
use crate::preprocess::ImageError;
use crate::repository::RepositoryError;
use crate::upload::UploadError;
use crate::worker::WorkerError;

/// Everything a request can fail with: the domain modules' own errors, plus what only HTTP
/// knows (routing, request shape).
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
    /// Too many failed logins for this username or from this address; nothing was checked.
    #[error("too many failed logins: retry after {retry_after} seconds")]
    TooManyAttempts {
        /// Whole seconds until the next attempt is allowed (the `Retry-After` value).
        retry_after: u64,
    },
    /// The bearer token is missing, invalid, expired or revoked.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The body could not be read or is not the expected form.
    #[error(transparent)]
    Upload(#[from] UploadError),
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
    /// The model could not answer.
    #[error(transparent)]
    Inference(#[from] InferenceError),
    /// A decoder or password thread could not take or finish the work.
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// No decoding memory came free in time.
    #[error(transparent)]
    DecodeBudget(#[from] BudgetError),
    /// An inference request the protocol cannot serve as sent.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// A model version could not be found or (re)loaded.
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    /// A model name other than the one served.
    #[error("unknown model `{0}`: this server serves `mnist`")]
    UnknownModel(String),
    /// A valid token whose user may not do this.
    #[error("forbidden: only admins (`mnist-api user add NAME --admin`) may do this")]
    Forbidden,
    /// Every /predict permit is taken.
    #[error("server busy: too many predictions in flight, retry shortly")]
    Overloaded,
    /// A header is malformed.
    #[error("bad request header: {0}")]
    BadHeader(String),
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

/// The error body of the inference protocol's routes (`/v2/...`): its clients read `error`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct V2ErrorBody<'a> {
    /// For people: what went wrong.
    pub error: String,
    /// For programs: the same codes as [`ErrorBody`].
    #[schema(value_type = String, example = "invalid_tensor")]
    pub code: &'a str,
}

/// Which JSON shape an error takes: this API's own, or the inference protocol's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ErrorShape {
    /// `{"msg", "code"}`.
    Api,
    /// `{"error", "code"}`.
    V2,
}

impl ApiError {
    /// HTTP status and machine-readable code: the one table from error to status.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use ApiError::*;
        const INTERNAL: (StatusCode, &str) = (StatusCode::INTERNAL_SERVER_ERROR, "internal");
        const OVERLOADED: (StatusCode, &str) = (StatusCode::SERVICE_UNAVAILABLE, "overloaded");
        match self {
            CredentialsRequired => (StatusCode::BAD_REQUEST, "credentials_required"),
            InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            BadCredentials => (StatusCode::UNAUTHORIZED, "bad_credentials"),
            TooManyAttempts { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts"),
            Token(e) => match e {
                TokenError::Missing => (StatusCode::UNAUTHORIZED, "missing_token"),
                TokenError::Invalid(_) => (StatusCode::UNAUTHORIZED, "invalid_token"),
                TokenError::Expired => (StatusCode::UNAUTHORIZED, "token_expired"),
                TokenError::Revoked(_) => (StatusCode::UNAUTHORIZED, "token_revoked"),
                TokenError::Sign(_) => INTERNAL,
            },
            Upload(e) => match e {
                UploadError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
                UploadError::BadLength => (StatusCode::BAD_REQUEST, "bad_header"),
                UploadError::Timeout(_) => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
                UploadError::OverBudget => OVERLOADED,
                UploadError::Read(_) => (StatusCode::BAD_REQUEST, "bad_body"),
                UploadError::NotMultipart(_) => {
                    (StatusCode::UNSUPPORTED_MEDIA_TYPE, "not_multipart")
                }
                UploadError::BadMultipart(_) => (StatusCode::BAD_REQUEST, "bad_multipart"),
                UploadError::NoFile => (StatusCode::BAD_REQUEST, "missing_file"),
                UploadError::TooManyFiles(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_many_files"),
            },
            Image { source, .. } => match source {
                ImageError::Empty => (StatusCode::UNPROCESSABLE_ENTITY, "empty_file"),
                ImageError::UnsupportedFormat(_) => {
                    (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_format")
                }
                ImageError::Corrupt { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_image"),
                ImageError::ZeroSized => (StatusCode::UNPROCESSABLE_ENTITY, "zero_sized_image"),
                ImageError::TooLarge { .. }
                | ImageError::TooMuchMemory(_)
                | ImageError::OverMemoryLimit { .. } => {
                    (StatusCode::PAYLOAD_TOO_LARGE, "image_too_large")
                }
                ImageError::Blank => (StatusCode::UNPROCESSABLE_ENTITY, "blank_image"),
            },
            Inference(InferenceError::QueueFull) => OVERLOADED,
            Inference(_) => INTERNAL,
            Worker(WorkerError::Busy(_)) => OVERLOADED,
            Worker(_) => INTERNAL,
            DecodeBudget(BudgetError::Busy(_)) => OVERLOADED,
            DecodeBudget(BudgetError::Closed) => INTERNAL,
            Protocol(e) => match e {
                ProtocolError::Json(_) | ProtocolError::HeaderLength { .. } => {
                    (StatusCode::BAD_REQUEST, "invalid_request")
                }
                ProtocolError::TooManyImages { .. } => {
                    (StatusCode::PAYLOAD_TOO_LARGE, "too_many_images")
                }
                ProtocolError::UnknownInput(_) | ProtocolError::UnknownOutput(_) => {
                    (StatusCode::BAD_REQUEST, "unknown_tensor")
                }
                _ => (StatusCode::BAD_REQUEST, "invalid_tensor"),
            },
            Repository(e) => match e {
                RepositoryError::UnknownVersion(_) => (StatusCode::NOT_FOUND, "unknown_version"),
                RepositoryError::Invalid { .. } | RepositoryError::Empty(_) => {
                    (StatusCode::BAD_REQUEST, "load_failed")
                }
                RepositoryError::Io { .. } | RepositoryError::Interrupted => INTERNAL,
            },
            UnknownModel(_) => (StatusCode::NOT_FOUND, "unknown_model"),
            Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            Overloaded => OVERLOADED,
            BadHeader(_) => (StatusCode::BAD_REQUEST, "bad_header"),
            NotFound => (StatusCode::NOT_FOUND, "not_found"),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Internal(_) => INTERNAL,
        }
    }

    /// What the client reads: our own failures stay in the log.
    fn client_message(&self) -> String {
        if self.status_and_code().0 == StatusCode::INTERNAL_SERVER_ERROR {
            "internal server error".to_string()
        } else {
            self.to_string()
        }
    }

    /// What the log gets beyond the client message: the whole cause of our own failures.
    fn logged_cause(&self) -> Option<String> {
        match self {
            ApiError::Internal(cause) => Some(format!("{cause:#}")),
            e if e.status_and_code().0 == StatusCode::INTERNAL_SERVER_ERROR => Some(e.to_string()),
            _ => None,
        }
    }

    /// The JSON response for this error, with the headers its status calls for.
    pub fn to_response(&self, shape: ErrorShape) -> Response {
        let (status, code) = self.status_and_code();
        let json = match shape {
            ErrorShape::Api => reply::json(&ErrorBody {
                msg: self.client_message(),
                code,
            }),
            ErrorShape::V2 => reply::json(&V2ErrorBody {
                error: self.client_message(),
                code,
            }),
        };
        let mut res = reply::with_status(json, status).into_response();
        let headers = res.headers_mut();
        match status {
            StatusCode::UNAUTHORIZED => {
                let challenge = match self {
                    ApiError::Token(
                        TokenError::Invalid(_) | TokenError::Expired | TokenError::Revoked(_),
                    ) => "Bearer error=\"invalid_token\"",
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
            StatusCode::TOO_MANY_REQUESTS => {
                if let ApiError::TooManyAttempts { retry_after } = self {
                    headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
                }
            }
            _ => {}
        }
        if matches!(self, ApiError::Upload(_)) {
            // The body may be unread in part: the connection cannot be reused.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        res
    }
}

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
    handle_rejection_as(err, ErrorShape::Api).await
}

/// [`handle_rejection`], answering in the given shape.
pub async fn handle_rejection_as(
    err: Rejection,
    shape: ErrorShape,
) -> Result<Response, Infallible> {
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
    let message = api.client_message();
    let message = crate::clip::clip_to(&message, MAX_LOGGED_MESSAGE);
    let status_code = status.as_u16() as i64;
    let cause = api.logged_cause();
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
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        exception!(tracing::Level::ERROR);
    } else if status.is_server_error() {
        exception!(tracing::Level::WARN);
    } else {
        exception!(tracing::Level::INFO);
    }
    Ok(api.to_response(shape))
}

/// Longest error message written to a log line or span event; client-supplied parts are
/// already clipped where they enter, this bounds the whole.
const MAX_LOGGED_MESSAGE: usize = 1024;
