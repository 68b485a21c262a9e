//! Start-up: load and check everything, bind the listener, serve until told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::auth::{Auth, Secret, Tokens, Users, UsersStore};
use crate::awake::Awake;
use crate::config::ServeArgs;
use crate::decode_pool::{DecodePool, MemoryBudget};
use crate::inference::Engine;
use crate::login_throttle::LoginThrottle;
use crate::password_pool::PasswordPool;
use crate::repository::Repository;
use crate::routes::{self, Login, Predictor, Services};
use crate::server::ConnLimits;
use crate::upload::BodyLimits;
use crate::users;

/// A bound, ready-to-run server.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    services: Services,
    repository: Arc<Repository>,
    sighup: Option<tokio::signal::unix::Signal>,
    poll: Option<Duration>,
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
        let repository = Arc::new(Repository::open(args.model_source(), args.keep_versions)?);
        let latest = repository.latest();
        tracing::info!(
            weights = %latest.path.display(),
            version = latest.version,
            loaded = ?repository.loaded_versions(),
            architecture = %latest.info.model.architecture,
            test_accuracy = latest.info.metadata.test_accuracy,
            sha256 = %latest.info.model.sha256,
            "model loaded"
        );
        crate::metrics::record_loaded_versions(repository.loaded_versions().len());
        let auth = Arc::new(load_auth(args, secret)?);
        let engine = Engine::start(args.engine()).context("starting the model worker threads")?;
        let listener = TcpListener::bind(args.bind)
            .await
            .with_context(|| format!("binding {}", args.bind))?;
        let addr = listener.local_addr()?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        // One timeout and one memory budget for the bodies of every route.
        let bodies = BodyLimits {
            max_bytes: args.max_body_bytes,
            timeout: Duration::from_secs(args.body_timeout.max(1)),
            budget: Arc::new(Semaphore::new(
                usize::try_from(args.body_memory)
                    .unwrap_or(usize::MAX)
                    .min(Semaphore::MAX_PERMITS),
            )),
        };
        let max_in_flight = args.max_in_flight.max(1);
        let in_flight = Arc::new(Semaphore::new(max_in_flight));
        let predictor = Arc::new(Predictor {
            engine,
            repository: Arc::clone(&repository),
            body: bodies.clone(),
            max_files: args.max_files.max(1),
            images: args.image_limits(),
            in_flight: Arc::clone(&in_flight),
            max_in_flight,
            inline: !args.no_inline,
            decoders: DecodePool::new(args.decode_threads.unwrap_or(cores))?,
            decode_memory: Arc::new(MemoryBudget::new(
                args.decode_memory,
                Duration::from_millis(args.decode_wait_ms),
            )),
            awake: Awake::new(
                Duration::from_micros(args.stay_awake_us),
                Predictor::busy(Arc::clone(&in_flight), max_in_flight),
            ),
        });
        let login = Login::new(
            PasswordPool::new(args.login_threads, args.login_queue)
                .context("starting the password threads")?,
            LoginThrottle::new(args.login_throttle()),
            &bodies,
        );
        let services = Services {
            auth,
            login,
            predictor,
            repository: Arc::clone(&repository),
            jaeger_ui_url: args.jaeger_ui_url.trim_end_matches('/').to_string(),
        };
        Ok(Self {
            listener,
            addr,
            services,
            repository,
            sighup: crate::reload::listen_for_sighup(),
            poll: (args.poll_secs > 0).then(|| Duration::from_secs(args.poll_secs)),
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
        let sighup = self
            .sighup
            .map(|s| tokio::spawn(crate::reload::on_sighup(Arc::clone(&self.repository), s)));
        let poll = self
            .poll
            .map(|every| tokio::spawn(crate::reload::poll(Arc::clone(&self.repository), every)));
        let shutdown = async move {
            shutdown.await;
            if let Some(s) = sighup {
                s.abort();
            }
            if let Some(p) = poll {
                p.abort();
            }
            tracing::info!("shutting down: no new connections, finishing requests in flight");
        };
        crate::server::serve(
            self.listener,
            routes::api(self.services),
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
    let password = users::random_password();
    let (users, created) = crate::user_admin::update(path, |users| {
        let created = users.is_empty();
        if created {
            users
                .set_password("admin", &password)
                .with_context(|| path.display().to_string())?;
            // The first user is the operator: they may also reload the model.
            users.set_admin("admin", true);
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
