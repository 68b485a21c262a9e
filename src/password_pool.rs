//! Dedicated threads for password hashing, with a bounded queue.
//!
//! An argon2 check costs tens of milliseconds of CPU and ~19 MiB. On tokio's blocking pool a
//! flood of logins grew threads without bound and competed with the threads serving
//! predictions (64 connections of wrong passwords cut /predict throughput by 73 %). Here the
//! work has a fixed number of threads of its own; what does not fit in the queue is refused at
//! once instead of piling up.

use crossbeam_channel::{Sender, TrySendError};

use crate::worker::{self, WorkerError};

/// The pool's name in errors.
const POOL: &str = "password";

type Job = Box<dyn FnOnce() + Send>;

/// Runs password checks on `threads` threads; at most `queue` more wait their turn.
#[derive(Debug)]
pub struct PasswordPool {
    jobs: Sender<Job>,
}

impl PasswordPool {
    /// Starts the threads. They end when the pool is dropped and the queue has drained.
    pub fn new(threads: usize, queue: usize) -> anyhow::Result<Self> {
        let (jobs, rx) = crossbeam_channel::bounded::<Job>(queue);
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("password-{i}"))
                .spawn(move || {
                    for job in rx {
                        job();
                        // Argon2's memory is otherwise kept resident by the allocator for good.
                        crate::release_freed_memory();
                    }
                })?;
        }
        Ok(Self { jobs })
    }

    /// Queues `work` for a password thread at once (not when first polled), or refuses it with
    /// [`WorkerError::Busy`] when the queue is full.
    pub fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T, WorkerError>> + Send + 'static {
        let (job, rx) = worker::hand_off(work);
        let queued = match self.jobs.try_send(Box::new(job)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(WorkerError::Busy(POOL)),
            Err(TrySendError::Disconnected(_)) => Err(WorkerError::Gone(POOL)),
        };
        async move {
            queued?;
            worker::answer(rx, POOL).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[tokio::test]
    async fn runs_work_off_the_caller_and_survives_panics() {
        let pool = PasswordPool::new(1, 4).unwrap();
        let name = pool
            .run(|| std::thread::current().name().map(str::to_string))
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("password-0"));
        let r = pool.run(|| -> u8 { panic!("bad hash") }).await;
        assert!(matches!(r, Err(WorkerError::Panicked(_))));
        assert_eq!(pool.run(|| 7).await.unwrap(), 7, "pool survives a panic");
    }

    #[tokio::test]
    async fn refuses_beyond_the_queue_without_waiting() {
        let pool = PasswordPool::new(1, 1).unwrap();
        let (release, blocked) = mpsc::channel::<()>();
        let (started_tx, started) = mpsc::channel::<()>();
        let busy = pool.run(move || {
            started_tx.send(()).unwrap();
            blocked.recv().unwrap();
        });
        // The only thread is now taken; the next job fills the one queue slot.
        started.recv().unwrap();
        let queued = pool.run(|| 1);
        assert!(matches!(pool.run(|| 2).await, Err(WorkerError::Busy(_))));
        release.send(()).unwrap();
        busy.await.unwrap();
        assert_eq!(queued.await.unwrap(), 1);
    }
}
