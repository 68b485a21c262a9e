//! A fixed set of threads for image decoding.
//!
//! tokio's blocking pool starts a new thread whenever none is idle at that instant; under load
//! that raced with threads just finishing, the pool grew to dozens of threads, and each kept
//! its own allocator heap (150 MB of RSS at 12k req/s). A fixed pool keeps memory flat.

use std::panic::AssertUnwindSafe;

use tokio::sync::oneshot;

use crate::error::ApiError;

/// Runs CPU-bound closures on a fixed number of threads and awaits their results.
#[derive(Debug)]
pub struct DecodePool {
    pool: rayon::ThreadPool,
}

impl DecodePool {
    /// Starts `threads` decoder threads.
    pub fn new(threads: usize) -> anyhow::Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("decode-{i}"))
            .build()?;
        Ok(Self { pool })
    }

    /// Runs `work` on a decoder thread; a panic in it becomes an internal error.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (tx, rx) = oneshot::channel();
        self.pool.spawn(move || {
            let _ = tx.send(std::panic::catch_unwind(AssertUnwindSafe(work)));
        });
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(ApiError::Internal(anyhow::anyhow!(
                "image decoder panicked"
            ))),
            Err(_) => Err(ApiError::Internal(anyhow::anyhow!(
                "image decoder vanished"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn results_come_back_and_panics_become_errors() {
        let pool = DecodePool::new(2).unwrap();
        assert_eq!(pool.run(|| 6 * 7).await.unwrap(), 42);
        let r = pool.run(|| -> u8 { panic!("bad image") }).await;
        assert!(matches!(r, Err(ApiError::Internal(_))));
        assert_eq!(pool.run(|| 1).await.unwrap(), 1, "pool survives a panic");
    }
}
