//! Watching one file for changes: notify on its directory (a Kubernetes ConfigMap update
//! swaps a `..data` symlink rather than writing the file), debounced, with a polling fallback.
//!
//! The directory is watched afresh after every wake-up: when the file sits in a
//! subdirectory of a ConfigMap volume (`tls/tls.crt`), that directory resolves through
//! `..data` to one the update deletes, and a watch on it would go quiet for good. Watching
//! afresh reuses the one watcher (an inotify instance and its thread): two syscalls a poll,
//! not a thread.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::Watcher as _;
use tokio::sync::mpsc;

/// Change events of one file.
pub struct FileWatch {
    pub path: PathBuf,
    events: mpsc::Receiver<()>,
    sender: mpsc::Sender<()>,
    watcher: Option<notify::RecommendedWatcher>,
}

impl FileWatch {
    /// Starts watching `path`'s directory now (so no change after this call is missed).
    /// Without a watcher (an unsupported filesystem), only polling remains.
    pub fn new(path: &Path) -> Self {
        let (sender, events) = mpsc::channel(16);
        Self {
            path: path.to_owned(),
            events,
            watcher: watch_directory(path, sender.clone()),
            sender,
        }
    }

    /// Waits for a change of the file (settled for 250 ms, as editors and ConfigMap updates
    /// come as bursts of events) or for `poll` to pass, whichever is first.
    pub async fn changed(&mut self, poll: Duration) {
        tokio::select! {
            Some(()) = self.events.recv() => {
                tokio::time::sleep(Duration::from_millis(250)).await;
                while self.events.try_recv().is_ok() {}
            }
            () = tokio::time::sleep(poll) => {}
        }
        // Before the caller reads the file, so no change after the read is missed.
        match &mut self.watcher {
            Some(watcher) => {
                let dir = directory_of(&self.path);
                // The old watch may be gone already (its directory deleted): nothing to undo.
                let _ = watcher.unwatch(dir);
                if let Err(e) = watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
                    tracing::warn!("cannot watch {}: {e}; polling only", dir.display());
                    self.watcher = None;
                }
            }
            None => self.watcher = watch_directory(&self.path, self.sender.clone()),
        }
    }
}

fn directory_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn watch_directory(path: &Path, events: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    let dir = directory_of(path);
    let name = path.file_name()?.to_owned();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            // Our file, or a ConfigMap's `..data` symlink swap; not a mere read (our own
            // reads of the file would otherwise wake us again, four times a second for good).
            let relevant = !matches!(event.kind, notify::EventKind::Access(_))
                && event.paths.iter().any(|p| {
                    p.file_name()
                        .is_some_and(|n| n == name || n.to_string_lossy().starts_with(".."))
                });
            if relevant {
                let _ = events.try_send(());
            }
        }
    })
    .map_err(|e| tracing::warn!("cannot watch {}: {e}; polling only", dir.display()))
    .ok()?;
    watcher
        .watch(dir, notify::RecursiveMode::NonRecursive)
        .map_err(|e| tracing::warn!("cannot watch {}: {e}; polling only", dir.display()))
        .ok()?;
    Some(watcher)
}
