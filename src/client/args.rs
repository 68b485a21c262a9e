//! The `predict` subcommand's flags, with environment fallbacks.

use std::fmt;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::str::FromStr;

use clap::Args;
use reqwest::Url;

/// Classify images with a running server: one line per file (file, digit, probability).
#[derive(Args, Debug)]
pub struct PredictArgs {
    /// Images, directories (searched for image files, recursively) or quoted glob patterns.
    #[arg(required = true, value_name = "FILE")]
    pub inputs: Vec<PathBuf>,
    /// Base URL of the server (plain http).
    #[arg(
        long,
        env = "MNIST_API_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: Url,
    /// Log in as this user; the password comes from MNIST_API_PASSWORD, else a prompt.
    #[arg(long, env = "MNIST_API_USER")]
    pub user: Option<String>,
    /// A bearer token from POST /login, used instead of logging in.
    #[arg(long, env = "MNIST_API_TOKEN", hide_env_values = true)]
    pub token: Option<Token>,
    /// Most images in one request (default and maximum: the server's limit, from GET /model).
    #[arg(long)]
    pub batch: Option<NonZeroUsize>,
    /// Requests in flight at once.
    #[arg(long, default_value = "4")]
    pub concurrency: NonZeroUsize,
    /// Seconds one request may take, connecting included.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Print JSON lines (`file`, `prediction`, `probability`, `probabilities`, or `error`
    /// and `code`) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Where this client's spans go: comma-separated `jaeger`, `otlp`, `console` or `none`,
    /// as for the server.
    #[arg(long, env = "OTEL_TRACES_EXPORTER", default_value = "jaeger")]
    pub traces_exporter: String,
    /// Jaeger's web UI; when set, the trace's link is printed at the end.
    #[arg(long, env = "JAEGER_UI_URL")]
    pub jaeger_ui_url: Option<String>,
}

/// A bearer token, kept out of `Debug` output.
#[derive(Clone)]
pub struct Token(pub String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

impl FromStr for Token {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Token(s.to_string()))
    }
}
