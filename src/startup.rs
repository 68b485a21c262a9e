//! Start-up: load and check everything, bind the listener, serve until told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::auth::{self, Auth, Secret, Tokens, Users, UsersStore};
use crate::config::ServeArgs;
use crate::decode_pool::{DecodePool, MemoryBudget};
use crate::inference::Engine;
use crate::login_throttle::LoginThrottle;
use crate::password_pool::PasswordPool;
use crate::routes;
use crate::server::ConnLimits;
use crate::state::{AppState, Inner, ModelInfo, ModelRef};
use crate::weights;

/// A bound, ready-to-run server.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    state: AppState,
    conn_limits: ConnLimits,
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
        let loaded = weights::load(&args.weights, &candle_core::Device::Cpu)?;
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
        let state = AppState::from(Inner {
            engine,
            auth,
            info,
            image_limits: args.image_limits(),
            max_body_bytes: args.max_body_bytes,
            body_timeout: Duration::from_secs(args.body_timeout.max(1)),
            body_memory: Arc::new(Semaphore::new(
                usize::try_from(args.body_memory)
                    .unwrap_or(usize::MAX)
                    .min(Semaphore::MAX_PERMITS),
            )),
            max_files: args.max_files.max(1),
            in_flight: Arc::new(Semaphore::new(args.max_in_flight.max(1))),
            decoders: DecodePool::new(args.decode_threads.unwrap_or(cores))?,
            passwords: PasswordPool::new(args.login_threads, args.login_queue)
                .context("starting the password threads")?,
            login_throttle: LoginThrottle::new(args.login_throttle()),
            decode_memory: Arc::new(MemoryBudget::new(
                args.decode_memory,
                Duration::from_millis(args.decode_wait_ms),
            )),
            jaeger_ui_url: args.jaeger_ui_url.trim_end_matches('/').to_string(),
        });
        Ok(Self {
            listener,
            addr,
            state,
            conn_limits: args.conn_limits(),
            shutdown_timeout: Duration::from_secs(args.shutdown_timeout),
        })
    }

    /// The address actually bound (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` resolves, then stops accepting, closes idle connections and
    /// lets requests in flight finish for at most the configured timeout.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let shutdown = async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections, finishing requests in flight");
        };
        crate::server::serve(
            self.listener,
            routes::api(self.state),
            self.conn_limits,
            shutdown,
            self.shutdown_timeout,
        )
        .await;
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
            users: UsersStore::fixed(Users::default()),
            tokens,
            required: false,
        });
    }
    let mut users = Users::load(&args.users)?;
    if users.is_empty() {
        users = first_user(&args.users)?;
    }
    Ok(Auth {
        users: UsersStore::watch(&args.users, users),
        tokens,
        required: true,
    })
}

/// No users yet: create `admin` with a random password, shown once. Under the users file's
/// lock, so a `user add` running meanwhile is neither lost nor overwritten.
fn first_user(path: &Path) -> anyhow::Result<Users> {
    let password = auth::random_password();
    let (users, created) = crate::user_admin::update(path, |users| {
        let created = users.is_empty();
        if created {
            users
                .set_password("admin", &password)
                .map_err(anyhow::Error::msg)?;
        }
        Ok((users.clone(), created))
    })?;
    if !created {
        return Ok(users);
    }
    // Printed, not logged: the one place a password is shown, to the person starting the server.
    eprintln!(
        "\n  No users in {} yet; created user `admin` with password: {password}\n  \
         (shown once; change it with `mnist-api user passwd admin`)\n",
        path.display()
    );
    Ok(users)
}
