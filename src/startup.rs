//! Start-up: load and check everything, bind the listener, serve until told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::auth::{self, Auth, Secret, Tokens, Users};
use crate::config::ServeArgs;
use crate::decode_pool::{DecodePool, MemoryBudget};
use crate::inference::Engine;
use crate::preprocess::ImageLimits;
use crate::routes;
use crate::weights;

/// The model as named in every prediction.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ModelRef {
    /// Architecture name from the weights file.
    pub version: String,
    /// SHA-256 of the weights file.
    pub sha256: String,
}

/// What `GET /model` shows.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ModelInfo {
    /// Always `ready` once served: the model loads before the port opens.
    #[schema(value_type = String, example = "ready")]
    pub status: &'static str,
    /// Architecture and file hash.
    #[serde(flatten)]
    pub model: ModelRef,
    /// The weights' header metadata.
    pub metadata: weights::Metadata,
}

struct Inner {
    engine: Engine,
    auth: Arc<Auth>,
    info: ModelInfo,
    image_limits: ImageLimits,
    max_body_bytes: u64,
    max_files: usize,
    in_flight: Arc<Semaphore>,
    decoders: DecodePool,
    decode_memory: Arc<MemoryBudget>,
    login_slots: Arc<Semaphore>,
    jaeger_ui_url: String,
}

/// Read-only state shared by all requests; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl AppState {
    /// The inference engine.
    pub fn engine(&self) -> &Engine {
        &self.0.engine
    }
    /// Users and tokens.
    pub fn auth(&self) -> Arc<Auth> {
        Arc::clone(&self.0.auth)
    }
    /// The model's identity, as put in responses.
    pub fn model_ref(&self) -> &ModelRef {
        &self.0.info.model
    }
    /// Everything known about the model.
    pub fn model_info(&self) -> &ModelInfo {
        &self.0.info
    }
    /// Decoder limits.
    pub fn image_limits(&self) -> ImageLimits {
        self.0.image_limits
    }
    /// Largest request body.
    pub fn max_body_bytes(&self) -> u64 {
        self.0.max_body_bytes
    }
    /// Most images per request.
    pub fn max_files(&self) -> usize {
        self.0.max_files
    }
    /// Permits for /predict requests in progress.
    pub fn in_flight(&self) -> Arc<Semaphore> {
        Arc::clone(&self.0.in_flight)
    }
    /// The image decoding threads.
    pub fn decoders(&self) -> &DecodePool {
        &self.0.decoders
    }
    /// Memory shared by the images being decoded.
    pub fn decode_memory(&self) -> Arc<MemoryBudget> {
        Arc::clone(&self.0.decode_memory)
    }
    /// Base URL of Jaeger's web UI, for links from the web page.
    pub fn jaeger_ui_url(&self) -> &str {
        &self.0.jaeger_ui_url
    }
    /// Permits for password checks in progress.
    pub fn login_slots(&self) -> Arc<Semaphore> {
        Arc::clone(&self.0.login_slots)
    }
}

/// A bound, ready-to-run server.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    state: AppState,
    shutdown_timeout: Duration,
}

impl Application {
    /// Loads the weights and users, starts the model workers and binds the address.
    /// `secret` signs tokens; `None` means a random one (tokens die with the process).
    pub async fn build(args: &ServeArgs, secret: Option<Secret>) -> anyhow::Result<Self> {
        // Installed before the first request so no early request goes uncounted.
        crate::metrics::handle();
        // An image allowed alone but larger than the shared budget could never be decoded.
        anyhow::ensure!(
            args.max_image_memory <= args.decode_memory,
            "--max-image-memory ({}) is larger than --decode-memory ({}): such images could \
             never be decoded; raise --decode-memory or lower --max-image-memory",
            args.max_image_memory,
            args.decode_memory
        );
        let loaded = weights::load(&args.weights)?;
        let info = ModelInfo {
            status: "ready",
            model: ModelRef {
                version: loaded.metadata.architecture.clone(),
                sha256: loaded.sha256.clone(),
            },
            metadata: loaded.metadata.clone(),
        };
        tracing::info!(
            weights = %args.weights.display(),
            architecture = %info.model.version,
            test_accuracy = info.metadata.test_accuracy,
            sha256 = %info.model.sha256,
            "model loaded"
        );
        let auth = Arc::new(load_auth(args, secret)?);
        let engine = Engine::start(Arc::new(loaded.net), args.engine())
            .context("starting the model worker threads")?;
        let listener = TcpListener::bind(args.bind)
            .await
            .with_context(|| format!("binding {}", args.bind))?;
        let addr = listener.local_addr()?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let state = AppState(Arc::new(Inner {
            engine,
            auth,
            info,
            image_limits: args.image_limits(),
            max_body_bytes: args.max_body_bytes,
            max_files: args.max_files.max(1),
            in_flight: Arc::new(Semaphore::new(args.max_in_flight.max(1))),
            decoders: DecodePool::new(args.decode_threads.unwrap_or(cores))?,
            decode_memory: Arc::new(MemoryBudget::new(
                args.decode_memory,
                Duration::from_millis(args.decode_wait_ms),
            )),
            login_slots: Arc::new(Semaphore::new(cores.max(2))),
            jaeger_ui_url: args.jaeger_ui_url.trim_end_matches('/').to_string(),
        }));
        Ok(Self {
            listener,
            addr,
            state,
            shutdown_timeout: Duration::from_secs(args.shutdown_timeout),
        })
    }

    /// The address actually bound (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets in-flight requests
    /// finish for at most the configured timeout.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let (started_tx, mut started_rx) = tokio::sync::watch::channel(false);
        let graceful = async move {
            shutdown.await;
            let _ = started_tx.send(true);
        };
        let server = warp::serve(routes::api(self.state))
            .incoming(self.listener)
            .graceful(graceful)
            .run();
        tokio::pin!(server);
        tokio::select! {
            () = &mut server => return,
            _ = started_rx.wait_for(|s| *s) => {}
        }
        tracing::info!("shutting down: no new connections, finishing requests in flight");
        if tokio::time::timeout(self.shutdown_timeout, server)
            .await
            .is_err()
        {
            tracing::warn!(
                timeout_secs = self.shutdown_timeout.as_secs(),
                "requests still in flight at the shutdown timeout; exiting anyway"
            );
        }
    }
}

/// Users, tokens and the auth switch; creates the first user on a fresh install.
fn load_auth(args: &ServeArgs, secret: Option<Secret>) -> anyhow::Result<Auth> {
    let secret = secret.unwrap_or_else(|| {
        tracing::warn!(
            "SECRET_KEY is not set: signing tokens with a random per-process key; \
             tokens will not survive a restart or work across replicas"
        );
        Secret::random()
    });
    let tokens = Tokens::new(&secret, args.token_ttl);
    if args.no_auth {
        tracing::warn!("--no-auth: /predict accepts requests without a token; local demos only");
        return Ok(Auth {
            users: Users::default(),
            tokens,
            required: false,
        });
    }
    let mut users = Users::load(&args.users)?;
    if users.is_empty() {
        first_user(&args.users, &mut users)?;
    }
    Ok(Auth {
        users,
        tokens,
        required: true,
    })
}

/// No users yet: create `admin` with a random password, shown once.
fn first_user(path: &Path, users: &mut Users) -> anyhow::Result<()> {
    let password = auth::random_password();
    users
        .set_password("admin", &password)
        .map_err(anyhow::Error::msg)?;
    users.save(path)?;
    // Printed, not logged: the one place a password is shown, to the person starting the server.
    eprintln!(
        "\n  No users in {} yet; created user `admin` with password: {password}\n  \
         (shown once; change it with `mnist-api user passwd admin`)\n",
        path.display()
    );
    Ok(())
}
