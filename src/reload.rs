//! When the model is reloaded: on SIGHUP, every `--poll-secs`, and on request (the model
//! control endpoint). Each runs [`Repository::reload`] off the async executor and counts its
//! outcome.

use std::sync::Arc;
use std::time::Duration;

use crate::repository::{Reloaded, Repository, RepositoryError};

/// Reloads now; the outcome is logged and counted in `model_reloads_total{outcome}`.
pub async fn reload(
    repository: &Arc<Repository>,
    trigger: &'static str,
) -> Result<Reloaded, RepositoryError> {
    let repo = Arc::clone(repository);
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A thread of its own at a lower priority: reading, hashing and building the new network
    // is a burst of CPU that must not take turns from the threads answering requests.
    let spawned = std::thread::Builder::new()
        .name("model-reload".into())
        .spawn(move || {
            lower_priority();
            let _ = tx.send(repo.reload());
        });
    let result = match spawned {
        Ok(_) => rx.await.unwrap_or(Err(RepositoryError::Interrupted)),
        Err(_) => Err(RepositoryError::Interrupted),
    };
    match &result {
        Ok(Reloaded::Unchanged) => {
            tracing::debug!(trigger, "model repository unchanged");
            crate::metrics::record_reload("unchanged");
        }
        Ok(Reloaded::Swapped { loaded, latest }) => {
            let sha256 = repository.latest().info.model.sha256.clone();
            tracing::info!(trigger, latest, ?loaded, %sha256, "model reloaded");
            crate::metrics::record_reload("swapped");
            crate::metrics::record_loaded_versions(loaded.len());
        }
        Err(e) => {
            tracing::warn!(trigger, error = %e, "model reload failed; serving the model loaded before");
            crate::metrics::record_reload("failed");
        }
    }
    result
}

/// Niceness 10 for the calling thread (Linux keeps a nice value per thread).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority with `who` 0 changes only the calling thread; no pointers involved.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

/// Listens for SIGHUP from now on: registered at start-up, before the server says it is
/// listening, so a SIGHUP sent from then on reloads instead of ending the process (the default
/// action).
pub fn listen_for_sighup() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reload with the load endpoint instead");
            None
        }
    }
}

/// Reloads on every SIGHUP until the process ends.
pub async fn on_sighup(repository: Arc<Repository>, mut hangups: tokio::signal::unix::Signal) {
    while hangups.recv().await.is_some() {
        let _ = reload(&repository, "sighup").await;
    }
}

/// Looks at the repository every `every` and reloads when it changed. A broken new file is
/// reported once, not at every look: the reload only runs again when the files change again.
pub async fn poll(repository: Arc<Repository>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let mut failed_on = None;
    loop {
        ticks.tick().await;
        let seen = repository.disk_signature();
        if failed_on.as_ref() == Some(&seen) {
            continue;
        }
        failed_on = match reload(&repository, "poll").await {
            Err(_) => Some(seen),
            Ok(_) => None,
        };
    }
}
