//! What the thread pools (decoding, password checks) share: how handed-off work reports back.

use tokio::sync::oneshot;

/// Why work handed to a pool's threads produced no result.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Every thread is busy and the queue is full; retrying later can succeed.
    #[error("server busy: every {0} thread is taken and its queue is full, retry shortly")]
    Busy(&'static str),
    /// The work panicked: a bug, reported instead of taking the thread down.
    #[error("{0} work panicked")]
    Panicked(&'static str),
    /// The pool stopped (only at shutdown).
    #[error("{0} threads are gone")]
    Gone(&'static str),
}

/// A pool thread's answer to one piece of work: its result, or the panic it caught.
pub(crate) type Answer<T> = oneshot::Sender<std::thread::Result<T>>;

/// A channel for one piece of work's answer, and the job wrapper that catches its panic.
pub(crate) fn hand_off<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> (
    impl FnOnce() + Send + 'static,
    oneshot::Receiver<std::thread::Result<T>>,
) {
    let (tx, rx): (Answer<T>, _) = oneshot::channel();
    let job = move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)));
    };
    (job, rx)
}

/// Awaits the answer of work handed to the pool called `pool`.
pub(crate) async fn answer<T>(
    rx: oneshot::Receiver<std::thread::Result<T>>,
    pool: &'static str,
) -> Result<T, WorkerError> {
    match rx.await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(_)) => Err(WorkerError::Panicked(pool)),
        Err(_) => Err(WorkerError::Gone(pool)),
    }
}
