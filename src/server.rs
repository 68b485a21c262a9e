//! The connection layer under warp's filters: accepting, capping, timing out and closing
//! connections.
//!
//! warp's own `serve` runs hyper without a timer (so half-sent headers are held forever), with
//! no cap on connections (so idle sockets exhaust the descriptor limit and the accept loop spins
//! on EMFILE), and its graceful shutdown waits for idle connections as long as for busy ones.
//! This loop keeps warp's filters and fixes those three:
//! - at most `max_connections` at once; at the cap the connection idle the longest (no request
//!   in progress: a keep-alive connection, or one still sending its headers) is closed to make
//!   room, as nginx reuses idle keep-alive connections, and only when every connection is busy
//!   does accepting pause;
//! - headers must arrive within `header_timeout`, and a connection with no request in progress
//!   is closed after `idle_timeout`;
//! - on shutdown, idle connections close at once; busy ones finish their request.

use std::cell::RefCell;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::linger::{Linger, Lingering};
use tower_service::Service;
use warp::{Filter, Reply};

/// Descriptors kept free for everything that is not a client connection (weights, users file,
/// exporter sockets, the listener, logs) when the cap is derived from the descriptor limit.
pub const RESERVED_FDS: u64 = 128;

/// How connections are accepted, bounded and closed.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// Most client connections at once.
    pub max_connections: usize,
    /// Time allowed for a request's headers to arrive.
    pub header_timeout: Duration,
    /// A connection without a request in progress for this long is closed.
    pub idle_timeout: Duration,
    /// What a closing connection still reads (see [`crate::linger`]).
    pub linger: Linger,
}

/// The peer's address, put in each request's extensions (warp's own is private to its server).
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

/// The client's address as a filter, for handlers and spans.
pub fn client_addr() -> impl Filter<Extract = (Option<SocketAddr>,), Error = Infallible> + Clone {
    warp::ext::optional::<ClientAddr>().map(|a: Option<ClientAddr>| a.map(|a| a.0))
}

/// The default connection cap: the process's descriptor limit (raised to its hard limit
/// first) less [`RESERVED_FDS`], and at most 10,000.
pub fn default_max_connections() -> usize {
    let limit = raise_fd_limit();
    limit.saturating_sub(RESERVED_FDS).clamp(16, 10_000) as usize
}

/// Raises the soft descriptor limit to the hard one, as servers commonly do, and returns the
/// soft limit in force.
fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by reference.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        lim.rlim_cur
    }
}

/// One connection as the accept loop sees it.
struct Conn {
    /// Requests in progress (more than one only over HTTP/2).
    busy: AtomicUsize,
    /// Milliseconds since `Registry::epoch` when the connection last became idle.
    idle_since_ms: AtomicU64,
    /// Cancelled to close the connection at once.
    close: CancellationToken,
}

/// Every open connection, to find idle ones for eviction, the idle sweep and shutdown.
struct Registry {
    epoch: Instant,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
}

impl Registry {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self) -> (u64, Arc<Conn>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            busy: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(self.now_ms()),
            close: CancellationToken::new(),
        });
        self.lock().insert(id, Arc::clone(&conn));
        (id, conn)
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Closes the connection idle the longest; false when every connection is busy.
    fn evict_oldest_idle(&self) -> bool {
        let conns = self.lock();
        let oldest = conns
            .values()
            .filter(|c| c.busy.load(Ordering::Acquire) == 0 && !c.close.is_cancelled())
            .min_by_key(|c| c.idle_since_ms.load(Ordering::Relaxed));
        match oldest {
            Some(c) => {
                c.close.cancel();
                true
            }
            None => false,
        }
    }

    /// Closes connections idle for longer than `limit`; with `Duration::ZERO`, every idle one.
    fn close_idle(&self, limit: Duration) {
        let now = self.now_ms();
        let limit = limit.as_millis() as u64;
        for c in self.lock().values() {
            let idle_for = now.saturating_sub(c.idle_since_ms.load(Ordering::Relaxed));
            if c.busy.load(Ordering::Acquire) == 0 && idle_for >= limit {
                c.close.cancel();
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

/// Marks a connection busy for the life of one request.
struct BusyGuard {
    conn: Arc<Conn>,
    registry: Arc<Registry>,
}

impl BusyGuard {
    fn new(conn: &Arc<Conn>, registry: &Arc<Registry>) -> Self {
        conn.busy.fetch_add(1, Ordering::AcqRel);
        Self {
            conn: Arc::clone(conn),
            registry: Arc::clone(registry),
        }
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.conn
            .idle_since_ms
            .store(self.registry.now_ms(), Ordering::Relaxed);
        self.conn.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves `filter` on `listener` until `shutdown` resolves, then closes idle connections,
/// lets busy ones finish for at most `drain_timeout`, and returns.
pub async fn serve<F>(
    listener: TcpListener,
    filter: F,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain_timeout: Duration,
) where
    F: Filter<Error = Infallible> + Clone + Send + Sync + 'static,
    F::Extract: Reply,
{
    let registry = Arc::new(Registry {
        epoch: Instant::now(),
        next_id: AtomicU64::new(0),
        conns: Mutex::new(HashMap::new()),
    });
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let stopping = CancellationToken::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);

    let sweeper = tokio::spawn(sweep_idle(Arc::clone(&registry), limits.idle_timeout));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                accept_error(&e).await;
                continue;
            }
        };
        let permit = match Arc::clone(&slots).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                registry.evict_oldest_idle();
                // Every connection busy: stop accepting (the kernel's backlog holds newcomers)
                // until one finishes.
                tokio::select! {
                    () = &mut shutdown => break,
                    p = Arc::clone(&slots).acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                }
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(
            Lingering::new(stream, limits.linger),
            peer,
            permit,
            filter.clone(),
            Arc::clone(&builder),
            Arc::clone(&registry),
            stopping.clone(),
        ));
    }
    drop(listener);
    sweeper.abort();
    stopping.cancel();
    registry.close_idle(Duration::ZERO);
    drain(&registry, drain_timeout).await;
}

/// Waits until every connection has closed, or `timeout`.
async fn drain(registry: &Registry, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !registry.is_empty() {
        if Instant::now() >= deadline {
            tracing::warn!(
                timeout_secs = timeout.as_secs(),
                "requests still in flight at the shutdown timeout; exiting anyway"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn sweep_idle(registry: Arc<Registry>, idle_timeout: Duration) {
    let period = (idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        tokio::time::sleep(period).await;
        registry.close_idle(idle_timeout);
    }
}

/// EMFILE and friends: the listener stays healthy but the process is out of something;
/// backing off keeps the loop from spinning, and one line per 10 s keeps the log readable.
async fn accept_error(e: &std::io::Error) {
    static LAST: Mutex<Option<Instant>> = Mutex::new(None);
    let log = {
        let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
        let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
        if due {
            *last = Some(Instant::now());
        }
        due
    };
    if log {
        tracing::warn!(error = %e, "accepting a connection failed (logged at most every 10 s)");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

async fn serve_connection<F>(
    stream: Lingering,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    filter: F,
    builder: Arc<auto::Builder<TokioExecutor>>,
    registry: Arc<Registry>,
    stopping: CancellationToken,
) where
    F: Filter<Error = Infallible> + Clone + Send + Sync + 'static,
    F::Extract: Reply,
{
    let _permit = permit;
    let (id, conn) = registry.add();
    // Called in place, not cloned per request: a clone of the service is a clone of every
    // route's filter, state and closures, and `call` only needs it for the call itself.
    let warp_service = RefCell::new(warp::service(filter));
    let svc = {
        let conn = Arc::clone(&conn);
        let registry = Arc::clone(&registry);
        hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ClientAddr(peer));
            let busy = BusyGuard::new(&conn, &registry);
            let response = warp_service.borrow_mut().call(req);
            async move {
                let response = response.await;
                drop(busy);
                response
            }
        })
    };
    let connection = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(connection);
    let result = tokio::select! {
        r = connection.as_mut() => Some(r),
        () = conn.close.cancelled() => None,
        () = stopping.cancelled() => {
            if conn.busy.load(Ordering::Acquire) == 0 {
                None
            } else {
                // Busy: finish the request in progress, then close instead of keeping alive.
                connection.as_mut().graceful_shutdown();
                tokio::select! {
                    r = connection.as_mut() => Some(r),
                    () = conn.close.cancelled() => None,
                }
            }
        }
    };
    if let Some(Err(e)) = result {
        // A client hanging up or timing out is its business, not a server error.
        tracing::debug!(error = %e, client = %peer, "connection ended with an error");
    }
    registry.remove(id);
}
