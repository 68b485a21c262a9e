//! Everything the client can fail with; each `Display` is the sentence the user reads.

use std::io;
use std::path::PathBuf;

use super::inputs::IMAGE_EXTENSIONS;

/// A failure of `mnist-api predict`, for the whole run or for one file.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A file or directory named on the command line, or found in one, cannot be read.
    #[error("{}: cannot read it: {source}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file named on the command line whose extension is not an image format's.
    #[error("{}: not an image file (expected {})", path.display(), IMAGE_EXTENSIONS.join(", "))]
    NotAnImage {
        /// The file.
        path: PathBuf,
    },
    /// A glob pattern that matches nothing.
    #[error("{pattern}: no such file, and no file matches it as a pattern")]
    NoMatch {
        /// The pattern as given.
        pattern: String,
    },
    /// A glob pattern that cannot be parsed.
    #[error("{pattern}: not a valid pattern: {source}")]
    BadPattern {
        /// The pattern as given.
        pattern: String,
        /// Where it goes wrong.
        source: glob::PatternError,
    },
    /// A directory (or pattern) named on the command line with no image file in it.
    #[error("{}: no image files in it (looked for {})", path.display(), IMAGE_EXTENSIONS.join(", "))]
    NoImages {
        /// The directory or pattern.
        path: PathBuf,
    },
    /// `--server` is not a plain-http URL.
    #[error(
        "{0}: only http:// servers are supported (put a TLS-terminating proxy in front of https)"
    )]
    Scheme(String),
    /// No password in the environment and no terminal to ask on.
    #[error("no password for `{user}`: set MNIST_API_PASSWORD, or run from a terminal to be asked ({source})")]
    NoPassword {
        /// The user logging in.
        user: String,
        /// Why the prompt failed.
        source: io::Error,
    },
    /// Nothing answers at the server's address, or the connection failed.
    #[error(
        "cannot reach the server at {url}: {cause} (is it running? --server sets its address)"
    )]
    Unreachable {
        /// The request's URL.
        url: String,
        /// The transport's reason.
        cause: String,
    },
    /// `/login` said no.
    #[error("the server refused the login for `{user}`: {msg}")]
    LoginRefused {
        /// The user.
        user: String,
        /// The server's reason.
        msg: String,
    },
    /// `/predict` wants a token and none was given.
    #[error("the server requires a login: pass --user NAME (password from MNIST_API_PASSWORD or a prompt) or --token TOKEN")]
    LoginRequired,
    /// `/predict` refused the token (expired, revoked, signed with another key).
    #[error("the server refused the token ({code}): {msg}; log in again")]
    TokenRefused {
        /// The server's error code.
        code: String,
        /// The server's reason.
        msg: String,
    },
    /// An answer the client cannot use, from `/login` or `/model`.
    #[error("{url} answered {status}: {msg}")]
    Unexpected {
        /// The request's URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// The server's reason, or what was wrong with the answer.
        msg: String,
    },
    /// The server refused one file's request.
    #[error("{}: {} ({status} {code}): {msg}", path.display(), refusal(*status))]
    Refused {
        /// The file.
        path: PathBuf,
        /// HTTP status.
        status: u16,
        /// The server's error code.
        code: String,
        /// The server's reason.
        msg: String,
    },
    /// Some files got no answer; each was reported as it failed.
    #[error("{failed} of {total} files got no answer")]
    FilesFailed {
        /// Files without an answer.
        failed: usize,
        /// Files in the run.
        total: usize,
    },
}

/// What a status says about the file that was sent.
fn refusal(status: u16) -> &'static str {
    match status {
        413 => "too large for the server",
        415 => "not an image format the server reads",
        422 => "the server cannot use this image",
        503 => "the server is busy, try again",
        _ => "refused by the server",
    }
}

impl ClientError {
    /// The process exit code for a run that ends with this error: 1 when some files got no
    /// answer, 2 when the inputs or flags are wrong (nothing was sent), 3 when the server
    /// could not be used at all.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Refused { .. } | Self::FilesFailed { .. } => 1,
            Self::Unreadable { .. }
            | Self::NotAnImage { .. }
            | Self::NoMatch { .. }
            | Self::BadPattern { .. }
            | Self::NoImages { .. }
            | Self::Scheme(_)
            | Self::NoPassword { .. } => 2,
            Self::Unreachable { .. }
            | Self::LoginRefused { .. }
            | Self::LoginRequired
            | Self::TokenRefused { .. }
            | Self::Unexpected { .. } => 3,
        }
    }

    /// The server's error code, for the JSON lines; `None` for the client's own failures.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Refused { code, .. } | Self::TokenRefused { code, .. } => Some(code),
            _ => None,
        }
    }
}
