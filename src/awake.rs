//! Keeping one executor thread polling for a short while after a lone request.
//!
//! On a virtual machine, a thread woken on a vCPU that went idle waits for the hypervisor to
//! run that vCPU again. At one connection every request paid that twice, once for each side
//! of the round trip: with the server and the client on one core, where no wake crosses
//! cores, a `/predict` round trip took half as long (BENCHMARKS.md, "Staying awake"). After a
//! request that was alone, a task therefore yields in a loop for up to `window`: the worker
//! running it keeps polling the I/O driver (tokio polls it without blocking before it runs a
//! yielded task again), so the connection's next request is read at once instead of after a
//! wake-up. The cost is bounded: at most one such task, and at most `window` of one thread's
//! CPU after each lone request. Under load no request is alone, and a running task stops as soon
//! as the server is busy again (two requests in flight), when the executor is awake anyway.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The stay-awake window, shared by the routes that answer lone requests.
pub struct Awake {
    window: Duration,
    /// Whether the server is busy enough that polling is pointless.
    busy: Box<dyn Fn() -> bool + Send + Sync>,
    epoch: Instant,
    /// Nanoseconds since `epoch` until which the task keeps polling.
    until_ns: AtomicU64,
    /// Whether the task is running; only one ever does.
    polling: AtomicBool,
}

impl Awake {
    /// `window` of zero turns staying awake off; polling stops early once `busy` says so.
    pub fn new(window: Duration, busy: impl Fn() -> bool + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self {
            window,
            busy: Box::new(busy),
            epoch: Instant::now(),
            until_ns: AtomicU64::new(0),
            polling: AtomicBool::new(false),
        })
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Called when a lone request is answered: keeps polling until `window` from now, by
    /// extending the running task's deadline or by starting the task. Does nothing outside a
    /// tokio runtime or with a zero window.
    pub fn after_lone_request(self: &Arc<Self>) {
        if self.window.is_zero() {
            return;
        }
        let window_ns = u64::try_from(self.window.as_nanos()).unwrap_or(u64::MAX);
        self.until_ns
            .fetch_max(self.now_ns().saturating_add(window_ns), Ordering::AcqRel);
        if self.polling.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.polling.store(false, Ordering::Release);
            return;
        };
        let me = Arc::clone(self);
        runtime.spawn(async move { me.poll_until_deadline().await });
    }

    async fn poll_until_deadline(&self) {
        loop {
            while self.now_ns() < self.until_ns.load(Ordering::Acquire) {
                if (self.busy)() {
                    self.until_ns.store(0, Ordering::Release);
                    break;
                }
                tokio::task::yield_now().await;
            }
            self.polling.store(false, Ordering::Release);
            // A request that moved the deadline after the check above saw `polling` still set
            // and started nothing: if the deadline moved, carry on unless a new task took over.
            if self.now_ns() >= self.until_ns.load(Ordering::Acquire)
                || self.polling.swap(true, Ordering::AcqRel)
            {
                return;
            }
        }
    }

    /// Whether the polling task is running.
    pub fn is_polling(&self) -> bool {
        self.polling.load(Ordering::Acquire)
    }
}

impl std::fmt::Debug for Awake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Awake")
            .field("window", &self.window)
            .field("polling", &self.is_polling())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_zero_window_never_polls() {
        let awake = Awake::new(Duration::ZERO, || false);
        awake.after_lone_request();
        assert!(!awake.is_polling());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn polls_for_the_window_after_the_last_request_then_stops() {
        let awake = Awake::new(Duration::from_millis(30), || false);
        let start = Instant::now();
        awake.after_lone_request();
        assert!(awake.is_polling());
        tokio::time::sleep(Duration::from_millis(20)).await;
        // A second request extends the window instead of starting a second task.
        awake.after_lone_request();
        let extended = Instant::now();
        while awake.is_polling() {
            assert!(start.elapsed() < Duration::from_secs(5), "never stopped");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(
            extended.elapsed() >= Duration::from_millis(25),
            "stopped early"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stops_as_soon_as_the_server_is_busy() {
        let busy = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&busy);
        let awake = Awake::new(Duration::from_secs(60), move || {
            flag.load(Ordering::Acquire)
        });
        awake.after_lone_request();
        assert!(awake.is_polling());
        busy.store(true, Ordering::Release);
        let start = Instant::now();
        while awake.is_polling() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "kept polling while busy"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[test]
    fn outside_a_runtime_nothing_starts() {
        let awake = Awake::new(Duration::from_millis(30), || false);
        awake.after_lone_request();
        assert!(!awake.is_polling());
    }
}
