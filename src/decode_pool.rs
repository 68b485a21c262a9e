//! A fixed set of threads for image decoding.
//!
//! tokio's blocking pool starts a new thread whenever none is idle at that instant; under load
//! that raced with threads just finishing, the pool grew to dozens of threads, and each kept
//! its own allocator heap (150 MB of RSS at 12k req/s). A fixed pool keeps memory flat.
//!
//! Threads alone do not bound memory: one small file can decode to a 100 MB buffer. So each
//! image also takes its estimated cost from a [`MemoryBudget`] shared by the whole server
//! before it decodes, and gives it back when done.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::worker::{self, WorkerError};

/// The pool's name in errors.
const POOL: &str = "image decoder";

/// Why an image's share of the decode memory was not granted.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    /// The budget stayed taken for the whole wait; retrying later can succeed.
    #[error("server busy: no image decoding memory came free within {0} ms, retry shortly")]
    Busy(u64),
    /// The budget was closed (only at shutdown).
    #[error("the decode memory budget is closed")]
    Closed,
}

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
    ) -> Result<T, WorkerError> {
        let (job, rx) = worker::hand_off(work);
        self.pool.spawn(job);
        worker::answer(rx, POOL).await
    }
}

/// Bytes of decoding memory shared by all requests; images wait (bounded) for their share.
#[derive(Debug)]
pub struct MemoryBudget {
    permits: Arc<Semaphore>,
    total: u64,
    wait: Duration,
}

/// One permit per KiB: tokio counts permits in `u32` per acquisition.
const UNIT: u64 = 1024;

/// A share of the budget, returned on drop.
#[derive(Debug)]
pub struct MemoryShare(#[allow(dead_code)] OwnedSemaphorePermit);

impl MemoryBudget {
    /// A budget of `total` bytes; an image waits at most `wait` for its share.
    pub fn new(total: u64, wait: Duration) -> Self {
        let permits = (total / UNIT).clamp(1, Semaphore::MAX_PERMITS as u64) as usize;
        Self {
            permits: Arc::new(Semaphore::new(permits)),
            total,
            wait,
        }
    }

    /// The whole budget, bytes.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// How long an image waits for its share before the request gets 503.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    fn units(&self, bytes: u64) -> u32 {
        // A share larger than the whole budget could never be granted; start-up keeps the
        // per-image limit within the budget, and this keeps a mistake from waiting forever.
        let cap = self.permits_total();
        bytes.div_ceil(UNIT).clamp(1, cap) as u32
    }

    fn permits_total(&self) -> u64 {
        (self.total / UNIT).clamp(1, u64::from(u32::MAX))
    }

    /// `bytes` of the budget if free right now. Waiters are served first: tokio's semaphore
    /// hands released permits to the queue in order, so this never overtakes them.
    pub fn try_take(&self, bytes: u64) -> Option<MemoryShare> {
        match Arc::clone(&self.permits).try_acquire_many_owned(self.units(bytes)) {
            Ok(p) => Some(MemoryShare(p)),
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => None,
        }
    }

    /// `bytes` of the budget, waiting in line at most [`Self::wait`].
    pub async fn take(&self, bytes: u64) -> Result<MemoryShare, BudgetError> {
        let acquire = Arc::clone(&self.permits).acquire_many_owned(self.units(bytes));
        match tokio::time::timeout(self.wait, acquire).await {
            Ok(Ok(p)) => Ok(MemoryShare(p)),
            Ok(Err(_)) => Err(BudgetError::Closed),
            Err(_) => Err(BudgetError::Busy(self.wait.as_millis() as u64)),
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
        assert!(matches!(r, Err(WorkerError::Panicked(_))));
        assert_eq!(pool.run(|| 1).await.unwrap(), 1, "pool survives a panic");
    }

    #[tokio::test]
    async fn the_budget_is_shared_in_order_and_waits_are_bounded() {
        let budget = MemoryBudget::new(10 * UNIT, Duration::from_millis(50));
        let a = budget.try_take(6 * UNIT).expect("fits an empty budget");
        assert!(budget.try_take(6 * UNIT).is_none(), "only 4 KiB left");
        let timed_out = budget.take(6 * UNIT).await;
        assert!(
            matches!(timed_out, Err(BudgetError::Busy(50))),
            "{timed_out:?}"
        );
        let small = budget.try_take(4 * UNIT).expect("what is left");
        drop((a, small));
        // Larger than the budget: granted alone rather than never.
        let all = budget.take(100 * UNIT).await.unwrap();
        assert!(budget.try_take(1).is_none());
        drop(all);
        assert!(budget.try_take(10 * UNIT).is_some());
    }

    #[tokio::test]
    async fn a_waiter_is_not_overtaken_by_smaller_requests() {
        let budget = Arc::new(MemoryBudget::new(10 * UNIT, Duration::from_secs(5)));
        let held = budget.try_take(8 * UNIT).unwrap();
        let waiter = {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move { budget.take(10 * UNIT).await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The 10 KiB waiter is first in line: the 2 KiB still free do not go to a newcomer.
        assert!(budget.try_take(2 * UNIT).is_none());
        drop(held);
        waiter.await.unwrap().unwrap();
    }
}
