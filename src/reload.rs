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
    let result = tokio::task::spawn_blocking(move || repo.reload())
        .await
        .unwrap_or(Err(RepositoryError::Interrupted));
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

/// Reloads on every SIGHUP until the process ends.
pub async fn on_sighup(repository: Arc<Repository>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reload with the load endpoint instead");
            return;
        };
        while hangups.recv().await.is_some() {
            let _ = reload(&repository, "sighup").await;
        }
    }
    #[cfg(not(unix))]
    let _ = repository;
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
