//! Config hot reload, on SIGHUP or when the config file changes.
//!
//! The new file is loaded and fully validated (including the files it points at), a new
//! snapshot is built beside the old one (carrying over whatever did not change: keys,
//! revocation lists, upstream pools), and swapped in whole. Requests in flight finish on the
//! snapshot they started with. A file that does not validate is refused, logged and counted
//! (`tokengate_reload_total{what="config",result="error"}`), and the old config keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{self, Config};
use crate::snapshot::{Snapshot, SnapshotError, State};
use crate::sources::content_hash;
use crate::sources::watch::FileWatch;

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("the reload task failed: {0}")]
    Panicked(String),
}

/// Watches `path` and SIGHUP for as long as the returned task runs.
pub fn spawn(state: Arc<State>, path: PathBuf) -> tokio::task::JoinHandle<()> {
    // Watch before reading, so a change right after start is not missed.
    let file = FileWatch::new(&path);
    let loaded = std::fs::read(&path).map(|b| content_hash(&b)).unwrap_or(0);
    tokio::spawn(watch(state, file, loaded))
}

async fn watch(state: Arc<State>, mut file: FileWatch, mut last: u64) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let forced = tokio::select! {
            () = file.changed(Duration::from_secs(10)) => false,
            Some(()) = async { match &mut hangup { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        #[cfg(not(unix))]
        let forced = {
            file.changed(Duration::from_secs(10)).await;
            false
        };
        let hash = tokio::fs::read(&file.path)
            .await
            .map(|b| content_hash(&b))
            .unwrap_or(0);
        if !forced && hash == last {
            continue;
        }
        last = hash;
        if forced {
            tracing::info!(path = %file.path.display(), "SIGHUP: reloading the config");
        }
        let path = file.path.clone();
        // Validation reads files (revocation lists can be large): on a blocking thread, which
        // can still start the new snapshot's refresh tasks.
        let outcome = {
            let (state, path) = (state.clone(), path.clone());
            tokio::task::spawn_blocking(move || reload(&state, &path))
                .await
                .unwrap_or_else(|e| Err(ReloadError::Panicked(e.to_string())))
        };
        match outcome {
            Ok(()) => {
                state.metrics.count_reload("config", "ok");
                tracing::info!(path = %path.display(), "config reloaded");
            }
            Err(e) => {
                state.metrics.count_reload("config", "error");
                tracing::error!(path = %path.display(), "config reload refused, the previous config keeps serving: {e}");
            }
        }
    }
}

/// Loads, validates and applies the config at `path`.
pub fn reload(state: &State, path: &Path) -> Result<(), ReloadError> {
    let config = config::load(path)?;
    config::check_referenced_files(&config)?;
    crate::auth::check_key_files(&config)?;
    let old = state.snapshot.load_full();
    warn_about_restart_only_changes(&old.config, &config);
    let new = Snapshot::build_reusing(config, &state.metrics, Some(&old))?;
    state.snapshot.store(Arc::new(new));
    Ok(())
}

/// Listeners and connection-level limits are fixed when the process starts.
fn warn_about_restart_only_changes(old: &Config, new: &Config) {
    let changes = [
        ("server.listen", old.server.listen != new.server.listen),
        ("admin.listen", old.admin.listen != new.admin.listen),
        (
            "server.max_connections",
            old.server.max_connections != new.server.max_connections,
        ),
        (
            "server.max_header_bytes",
            old.server.max_header_bytes != new.server.max_header_bytes,
        ),
        ("server.tls", old.server.tls != new.server.tls),
    ];
    for (field, changed) in changes {
        if changed {
            tracing::warn!(
                field,
                "{field} changed: it takes effect only after a restart; the rest of the new config is applied"
            );
        }
    }
}
