//! Settings of the `mnist-api` binary: flags with environment fallbacks (see `--help`).

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::auth::Secret;
use crate::inference::EngineConfig;
use crate::login_throttle::ThrottleConfig;
use crate::preprocess::ImageLimits;

/// Serve MNIST digit predictions over HTTP, manage the users allowed to log in, or ask a
/// running server about images.
#[derive(Parser, Debug)]
#[command(name = "mnist-api", version)]
pub struct Cli {
    /// What to do; without a subcommand the server runs.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Server settings.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands besides serving.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Add, change or remove users (passwords are read from stdin or a prompt, never argv).
    User {
        /// The change to make.
        #[command(subcommand)]
        action: UserAction,
    },
    /// Classify images with a running server (a traced client of it): one line per file,
    /// file, digit and probability.
    Predict(Box<crate::client::PredictArgs>),
}

/// Changes to the users file.
#[derive(Subcommand, Debug)]
pub enum UserAction {
    /// Add a user, or set the password of an existing one.
    Add {
        /// Username.
        name: String,
        /// May reload the model (POST /v2/repository/models/mnist/load). Without the flag an
        /// existing user's admin right is left as it is.
        #[arg(long)]
        admin: bool,
    },
    /// Change the password of an existing user.
    Passwd {
        /// Username.
        name: String,
    },
    /// Remove a user.
    Remove {
        /// Username.
        name: String,
    },
    /// List usernames.
    List,
}

/// Everything the server reads at start-up.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "MNIST_API_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// Safetensors weights written by `train`.
    #[arg(long, env = "MNIST_API_WEIGHTS", default_value = crate::weights::DEFAULT_PATH)]
    pub weights: PathBuf,
    /// A Triton-style model repository, `DIR/mnist/<version>/model.safetensors` (versions
    /// 1, 2, …; the highest is served); replaces --weights, which is a repository of one
    /// version, `1`.
    #[arg(long, env = "MNIST_API_MODEL_REPOSITORY")]
    pub model_repository: Option<PathBuf>,
    /// Versions kept loaded, the highest ones; a loaded older version stays reachable at
    /// /v2/models/mnist/versions/{v}. Each costs about 1 MB.
    #[arg(long, env = "MNIST_API_KEEP_VERSIONS", default_value_t = 2,
          value_parser = clap::builder::ValueParser::new(
              clap::builder::RangedU64ValueParser::<usize>::new().range(1..=16)))]
    pub keep_versions: usize,
    /// Seconds between looks at the weights for a new or changed version (0: reload only on
    /// SIGHUP or POST /v2/repository/models/mnist/load).
    #[arg(long, env = "MNIST_API_POLL_SECS", default_value_t = 0)]
    pub poll_secs: u64,
    /// Users file (argon2id hashes). Created with one random-password user on first start.
    // Global so `user add NAME --users FILE` works as well as `--users FILE user add NAME`.
    #[arg(
        long,
        env = "MNIST_API_USERS",
        default_value = "users.json",
        global = true
    )]
    pub users: PathBuf,
    /// Lifetime of access tokens, seconds.
    #[arg(long, env = "MNIST_API_TOKEN_TTL", default_value_t = 3600)]
    pub token_ttl: u64,
    /// Serve /predict without a token (local demos only; logs a warning).
    #[arg(long, env = "MNIST_API_NO_AUTH")]
    pub no_auth: bool,
    /// Largest request body, bytes (enforced while streaming).
    #[arg(long, env = "MNIST_API_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: u64,
    /// Largest image width or height, pixels.
    #[arg(long, env = "MNIST_API_MAX_IMAGE_SIDE", default_value_t = 4096)]
    pub max_image_side: u32,
    /// Largest estimated memory to decode one image, bytes, from its header (size, pixel
    /// layout, format) before decoding; over it the image gets 413 `image_too_large`.
    /// The default fits a 12 MP colour JPEG and a 4096x4096 8-bit RGB PNG.
    #[arg(long, env = "MNIST_API_MAX_IMAGE_MEMORY",
          default_value_t = crate::preprocess::DEFAULT_MAX_IMAGE_MEMORY)]
    pub max_image_memory: u64,
    /// Memory all images decoding at once may use together, bytes; an image waits for its
    /// share (see --decode-wait-ms). At least --max-image-memory.
    #[arg(long, env = "MNIST_API_DECODE_MEMORY", default_value_t = DEFAULT_DECODE_MEMORY)]
    pub decode_memory: u64,
    /// Milliseconds an image waits for its share of --decode-memory; then 503 `overloaded`
    /// with Retry-After.
    #[arg(long, env = "MNIST_API_DECODE_WAIT_MS", default_value_t = 5000)]
    pub decode_wait_ms: u64,
    /// Most images in one /predict request.
    #[arg(long, env = "MNIST_API_MAX_FILES", default_value_t = 64)]
    pub max_files: usize,
    /// Model worker threads.
    #[arg(long, env = "MNIST_API_WORKERS", default_value_t = EngineConfig::default().workers)]
    pub workers: usize,
    /// Most images per forward pass (dynamic batching).
    #[arg(long, env = "MNIST_API_MAX_BATCH", default_value_t = EngineConfig::default().max_batch)]
    pub max_batch: usize,
    /// Never decode or run a lone request's image on the request's own thread; always hand it
    /// to the decoder and model threads.
    #[arg(long, env = "MNIST_API_NO_INLINE")]
    pub no_inline: bool,
    /// Microseconds one executor thread keeps polling for the next request after answering a
    /// lone one, instead of sleeping (0 = off): on a VM, waking an idle core doubled the
    /// one-connection latency. Costs at most this much of one core's time per lone request.
    #[arg(long, env = "MNIST_API_STAY_AWAKE_US", default_value_t = 500)]
    pub stay_awake_us: u64,
    /// Microseconds a worker waits to fill a batch (0 = take only what is already queued).
    #[arg(long, env = "MNIST_API_BATCH_WAIT_US", default_value_t = 0)]
    pub batch_wait_us: u64,
    /// Image decoding threads (default: one per core).
    #[arg(long, env = "MNIST_API_DECODE_THREADS")]
    pub decode_threads: Option<usize>,
    /// Images allowed to wait for the model; beyond that /predict answers 503.
    #[arg(long, env = "MNIST_API_QUEUE", default_value_t = EngineConfig::default().queue)]
    pub queue: usize,
    /// /predict requests decoded or waiting at once; beyond that 503.
    #[arg(long, env = "MNIST_API_MAX_IN_FLIGHT", default_value_t = 512)]
    pub max_in_flight: usize,
    /// Most client connections at once (default: the descriptor limit, raised to its hard
    /// limit, less 128; at most 10,000). At the cap the connection idle the longest is closed
    /// to make room; when all are busy, new ones wait in the kernel's backlog.
    #[arg(long, env = "MNIST_API_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Seconds a client has to send a request's headers before the connection is closed.
    #[arg(long, env = "MNIST_API_HEADER_TIMEOUT", default_value_t = 10)]
    pub header_timeout: u64,
    /// Seconds a connection may stay open with no request in progress (keep-alive).
    #[arg(long, env = "MNIST_API_IDLE_TIMEOUT", default_value_t = 60)]
    pub idle_timeout: u64,
    /// Milliseconds a closing connection keeps reading (and discarding) what the client still
    /// sends, so an answer sent before the whole body (413, 401) is not lost to a reset.
    #[arg(long, env = "MNIST_API_LINGER_MS", default_value_t = 2000)]
    pub linger_ms: u64,
    /// Most bytes a closing connection reads and discards.
    #[arg(long, env = "MNIST_API_LINGER_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub linger_bytes: usize,
    /// Seconds a client has to send a whole request body; a slower upload gets 408.
    #[arg(long, env = "MNIST_API_BODY_TIMEOUT", default_value_t = 30)]
    pub body_timeout: u64,
    /// Bytes of request bodies held in memory at once, all requests together; a request that
    /// would go over it gets 503 with Retry-After.
    #[arg(long, env = "MNIST_API_BODY_MEMORY", default_value_t = 64 * 1024 * 1024)]
    pub body_memory: u64,
    /// Where spans go: comma-separated `jaeger` (agent, UDP to JAEGER_AGENT_HOST:JAEGER_AGENT_PORT),
    /// `otlp` (OTEL_EXPORTER_OTLP_*), `console`, or `none`.
    #[arg(long, env = "OTEL_TRACES_EXPORTER", default_value = "jaeger")]
    pub traces_exporter: String,
    /// Jaeger's web UI as seen from users' browsers; the web page links trace ids into it.
    #[arg(long, env = "JAEGER_UI_URL", default_value = "http://localhost:16686")]
    pub jaeger_ui_url: String,
    /// Seconds to let in-flight requests finish after SIGTERM or Ctrl-C.
    #[arg(long, env = "MNIST_API_SHUTDOWN_TIMEOUT", default_value_t = 10)]
    pub shutdown_timeout: u64,
    /// Threads that check passwords (argon2), apart from those serving predictions.
    #[arg(long, env = "MNIST_API_LOGIN_THREADS", default_value_t = 1)]
    pub login_threads: usize,
    /// Logins allowed to wait for a password thread; beyond that /login answers 503.
    #[arg(long, env = "MNIST_API_LOGIN_QUEUE", default_value_t = 16)]
    pub login_queue: usize,
    /// Login attempts per username per --login-attempt-window; beyond that 429.
    #[arg(long, env = "MNIST_API_LOGIN_ATTEMPTS_PER_USER", default_value = "20")]
    pub login_attempts_per_user: NonZeroU32,
    /// Login attempts per client address (IPv6: per /64) per --login-attempt-window; beyond
    /// that 429. X-Forwarded-For is not trusted: behind a proxy all clients share its address.
    #[arg(
        long,
        env = "MNIST_API_LOGIN_ATTEMPTS_PER_ADDRESS",
        default_value = "50"
    )]
    pub login_attempts_per_address: NonZeroU32,
    /// Seconds over which a used-up login allowance refills completely (evenly).
    #[arg(long, env = "MNIST_API_LOGIN_ATTEMPT_WINDOW", default_value_t = 300)]
    pub login_attempt_window: u64,
    /// Most usernames, and most addresses, the login throttle remembers at once.
    #[arg(long, env = "MNIST_API_LOGIN_THROTTLE_KEYS", default_value_t = 100_000)]
    pub login_throttle_keys: usize,
    /// Milliseconds a throttled (429) login answer is held back.
    #[arg(
        long,
        env = "MNIST_API_LOGIN_THROTTLE_DELAY_MS",
        default_value_t = 1000
    )]
    pub login_throttle_delay_ms: u64,
}

/// Default of `--decode-memory`: one worst-case image at a time, with room for small ones
/// beside it, keeps the server under 256 MiB (tests/memory.rs measures it).
pub const DEFAULT_DECODE_MEMORY: u64 = 160 * 1024 * 1024;

impl ServeArgs {
    /// Where the model versions come from.
    pub fn model_source(&self) -> crate::repository::Source {
        match &self.model_repository {
            Some(dir) => crate::repository::Source::Dir(dir.clone()),
            None => crate::repository::Source::File(self.weights.clone()),
        }
    }

    /// Settings for the inference engine.
    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            workers: self.workers,
            max_batch: self.max_batch,
            max_wait: Duration::from_micros(self.batch_wait_us),
            queue: self.queue,
            inline: !self.no_inline,
        }
    }

    /// Connection cap and timeouts.
    pub fn conn_limits(&self) -> crate::server::ConnLimits {
        crate::server::ConnLimits {
            max_connections: self
                .max_connections
                .unwrap_or_else(crate::server::default_max_connections),
            header_timeout: Duration::from_secs(self.header_timeout.max(1)),
            idle_timeout: Duration::from_secs(self.idle_timeout.max(1)),
            linger: crate::linger::Linger {
                time: Duration::from_millis(self.linger_ms),
                bytes: self.linger_bytes,
            },
        }
    }

    /// Settings for image decoding.
    pub fn image_limits(&self) -> ImageLimits {
        ImageLimits {
            max_side: self.max_image_side,
            max_memory: self.max_image_memory,
        }
    }

    /// Settings for the login throttle.
    pub fn login_throttle(&self) -> ThrottleConfig {
        ThrottleConfig {
            per_user: self.login_attempts_per_user,
            per_address: self.login_attempts_per_address,
            window: Duration::from_secs(self.login_attempt_window.max(1)),
            max_keys: self.login_throttle_keys.max(1),
            delay: Duration::from_millis(self.login_throttle_delay_ms),
        }
    }

    /// The JWT secret from `SECRET_KEY` (the original app's variable), if set and non-empty.
    pub fn secret_from_env() -> Option<Secret> {
        std::env::var("SECRET_KEY")
            .ok()
            .filter(|s| !s.is_empty())
            .map(|s| Secret::new(s.into_bytes()))
    }
}
