//! Revocation: lists of revoked token ids and subjects, from watched files and polled URLs,
//! merged into one `RevocationSet` that the request path checks after every verification
//! (cached tokens included).
//!
//! Each source keeps its last good list; a source that fails never drops revocations. Any
//! change rebuilds the merged set on a blocking thread and swaps it in whole, so even a
//! 10-million-entry reload never stalls a request.

pub mod list;
pub mod set;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption, Guard};
use bytes::Bytes;
use http::header::HeaderValue;
use http_body_util::BodyExt;
use prometheus::{IntCounter, IntGauge};
use tokio::sync::mpsc;

use crate::config::{Config, ConfigError, Revocation, RevocationSource};
use crate::sources::http::{Fetched, fetch};
use crate::sources::watch::FileWatch;
use crate::sources::{backoff, content_hash, jitter};
use list::{ListParser, RevocationList};
pub use set::RevocationSet;

/// The largest revocation list accepted from a URL (about 25 million UUIDs).
const MAX_LIST_BYTES: usize = 1 << 30;

/// A revocation file that cannot be read at start-up.
#[derive(Debug, thiserror::Error)]
#[error("revocation.sources[{index}].file: cannot read {}: {reason}", path.display())]
pub struct RevocationError {
    index: usize,
    path: PathBuf,
    reason: String,
}

/// The metric handles revocation updates.
#[derive(Clone)]
pub struct RevocationMetrics {
    pub entries: IntGauge,
    pub reload_ok: IntCounter,
    pub reload_error: IntCounter,
}

/// The revocation sources of one config and the merged set they feed.
pub struct Revocations {
    /// What it was built from: an unchanged section keeps its lists across reloads.
    pub config: Revocation,
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::AbortHandle>,
}

struct Shared {
    set: ArcSwap<RevocationSet>,
    /// Each source's last good list; `None` until its first load. A list is in its slot
    /// before it is in the set (built afterwards, on another thread), so what counts for
    /// readiness is the set, not the slots.
    slots: Vec<ArcSwapOption<RevocationList>>,
    expected: u64,
    false_positive_rate: f64,
    metrics: RevocationMetrics,
    rebuild: mpsc::Sender<()>,
}

impl Drop for Revocations {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Revocations {
    /// Loads the file sources now (so revocations hold from the first request), starts
    /// watching them, and starts polling the URL sources. A URL source that `previous` (the
    /// sources before a reload) polled too starts with its last good list, so that changing
    /// the section neither drops its revocations nor holds protected routes until it answers.
    pub fn start(
        config: &Revocation,
        metrics: RevocationMetrics,
        previous: Option<&Revocations>,
    ) -> Result<Self, RevocationError> {
        let (rebuild, rebuilds) = mpsc::channel(1);
        let mut slots = Vec::with_capacity(config.sources.len());
        let mut watches = Vec::new();
        for (index, source) in config.sources.iter().enumerate() {
            let slot = ArcSwapOption::empty();
            if let RevocationSource::File(path) = source {
                // Watch first: a change right after this read must not be missed.
                let watch = FileWatch::new(path);
                let bytes = std::fs::read(path).map_err(|e| RevocationError {
                    index,
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                let list = parse_reporting(&bytes, path.display());
                slot.store(Some(Arc::new(list)));
                watches.push((index, watch, content_hash(&bytes)));
            } else if let RevocationSource::Url { url, .. } = source {
                slot.store(previous.and_then(|p| p.last_list_of(url)));
            }
            slots.push(slot);
        }
        let initial: Vec<Arc<RevocationList>> =
            slots.iter().filter_map(|s| s.load_full()).collect();
        let set =
            RevocationSet::build(initial, config.expected_entries, config.false_positive_rate);
        metrics.entries.set(set.entries() as i64);
        let shared = Arc::new(Shared {
            set: ArcSwap::from_pointee(set),
            slots,
            expected: config.expected_entries,
            false_positive_rate: config.false_positive_rate,
            metrics,
            rebuild,
        });
        let mut tasks = vec![tokio::spawn(merge(shared.clone(), rebuilds)).abort_handle()];
        for (index, watch, hash) in watches {
            let refresh = Duration::from_secs(30);
            tasks.push(
                tokio::spawn(watch_file(shared.clone(), index, watch, hash, refresh))
                    .abort_handle(),
            );
        }
        for (index, source) in config.sources.iter().enumerate() {
            if let RevocationSource::Url {
                url,
                refresh_interval,
            } = source
            {
                let task = poll_url(shared.clone(), index, url.clone(), *refresh_interval);
                tasks.push(tokio::spawn(task).abort_handle());
            }
        }
        Ok(Self {
            config: config.clone(),
            shared,
            tasks,
        })
    }

    /// The current merged set (one atomic load).
    pub fn current(&self) -> Guard<Arc<RevocationSet>> {
        self.shared.set.load()
    }

    /// The last good list of the URL source `url`, if it has loaded.
    fn last_list_of(&self, url: &str) -> Option<Arc<RevocationList>> {
        let index = self
            .config
            .sources
            .iter()
            .position(|s| matches!(s, RevocationSource::Url { url: u, .. } if u == url))?;
        self.shared.slots[index].load_full()
    }

    /// Every source has loaded at least once and its list is in the set requests check
    /// (readiness).
    pub fn all_loaded(&self) -> bool {
        self.is_complete(&self.current())
    }

    /// `set` (one of this section's) holds a list from every source: until then a revoked
    /// token cannot be told from a good one.
    pub fn is_complete(&self, set: &RevocationSet) -> bool {
        set.sources() == self.shared.slots.len()
    }
}

/// Checks that every revocation file parses without malformed lines (for `tokengate check`).
pub fn check_files(config: &Config) -> Result<(), ConfigError> {
    let Some(revocation) = &config.revocation else {
        return Ok(());
    };
    for (i, source) in revocation.sources.iter().enumerate() {
        if let RevocationSource::File(path) = source {
            let problem = match std::fs::read(path) {
                Ok(bytes) => {
                    let list = RevocationList::parse(&bytes);
                    (list.malformed > 0).then(|| {
                        format!(
                            "`{}` has {} malformed line(s): {}",
                            path.display(),
                            list.malformed,
                            list.problems.join("; ")
                        )
                    })
                }
                Err(e) => Some(format!("cannot read `{}`: {e}", path.display())),
            };
            if let Some(problem) = problem {
                return Err(ConfigError::Invalid {
                    file: config.path.clone(),
                    line: None,
                    field: format!("revocation.sources[{i}].file"),
                    problem,
                    fix: "one entry a line: a token id, jti:ID, sub:SUBJECT or sub:SUBJECT@UNIXTIME; \
                          `#` at the start of a line for comments (the gateway skips bad lines, but check refuses them)"
                        .to_owned(),
                });
            }
        }
    }
    Ok(())
}

fn parse_reporting(bytes: &[u8], source: impl std::fmt::Display) -> RevocationList {
    let list = RevocationList::parse(bytes);
    report(&list, &source);
    list
}

fn report(list: &RevocationList, source: &dyn std::fmt::Display) {
    if list.malformed > 0 {
        tracing::warn!(
            source = %source,
            malformed = list.malformed,
            "revocation list has malformed lines, skipped: {}",
            list.problems.join("; ")
        );
    }
}

impl Shared {
    fn install(&self, index: usize, list: RevocationList) {
        self.slots[index].store(Some(Arc::new(list)));
        self.metrics.reload_ok.inc();
        // Full means a rebuild is already pending: it will see this list too.
        let _ = self.rebuild.try_send(());
    }

    fn failed(&self, source: &dyn std::fmt::Display, why: &str) {
        tracing::warn!(source = %source, "revocation source failed, keeping its last good entries: {why}");
        self.metrics.reload_error.inc();
    }
}

/// Rebuilds the merged set whenever a source changes, off the request path.
async fn merge(shared: Arc<Shared>, mut rebuilds: mpsc::Receiver<()>) {
    while rebuilds.recv().await.is_some() {
        let lists: Vec<Arc<RevocationList>> =
            shared.slots.iter().filter_map(|s| s.load_full()).collect();
        let (expected, rate) = (shared.expected, shared.false_positive_rate);
        let started = std::time::Instant::now();
        match tokio::task::spawn_blocking(move || RevocationSet::build(lists, expected, rate)).await
        {
            Ok(set) => {
                tracing::info!(
                    entries = set.entries(),
                    build_ms = started.elapsed().as_millis() as u64,
                    "revocation set rebuilt"
                );
                shared.metrics.entries.set(set.entries() as i64);
                shared.set.store(Arc::new(set));
            }
            Err(e) => tracing::error!("revocation rebuild failed: {e}"),
        }
    }
}

async fn watch_file(
    shared: Arc<Shared>,
    index: usize,
    mut watch: FileWatch,
    mut last: u64,
    poll: Duration,
) {
    loop {
        watch.changed(poll).await;
        let path = watch.path.clone();
        match tokio::fs::read(&path).await {
            Ok(bytes) => {
                let hash = content_hash(&bytes);
                if hash == last {
                    continue;
                }
                last = hash;
                let display = path.display().to_string();
                match tokio::task::spawn_blocking(move || parse_reporting(&bytes, display)).await {
                    Ok(list) => {
                        tracing::info!(source = %path.display(), entries = list.entries(), "revocation file reloaded");
                        shared.install(index, list);
                    }
                    Err(e) => shared.failed(&path.display(), &e.to_string()),
                }
            }
            Err(e) => shared.failed(&path.display(), &e.to_string()),
        }
    }
}

async fn poll_url(shared: Arc<Shared>, index: usize, url: String, refresh: Duration) {
    let mut etag: Option<HeaderValue> = None;
    let mut failures = 0u32;
    loop {
        let delay = match fetch_list(&url, etag.as_ref()).await {
            Ok(None) => {
                failures = 0;
                jitter(refresh)
            }
            Ok(Some((list, new_etag))) => {
                report(&list, &url);
                tracing::info!(source = %url, entries = list.entries(), "revocation list fetched");
                shared.install(index, list);
                etag = new_etag;
                failures = 0;
                jitter(refresh)
            }
            Err(why) => {
                shared.failed(&url, &why);
                failures = failures.saturating_add(1);
                backoff(failures, refresh)
            }
        };
        tokio::time::sleep(delay).await;
    }
}

/// Fetches and parses the list as it streams in, on a blocking thread; `None` when unchanged.
async fn fetch_list(
    url: &str,
    etag: Option<&HeaderValue>,
) -> Result<Option<(RevocationList, Option<HeaderValue>)>, String> {
    let (mut body, etag) = match fetch(url, etag, MAX_LIST_BYTES).await? {
        Fetched::NotModified { .. } => return Ok(None),
        Fetched::Body { body, etag, .. } => (body, etag),
    };
    let (chunks, mut received) = mpsc::channel::<Bytes>(16);
    let parser = tokio::task::spawn_blocking(move || {
        let mut parser = ListParser::default();
        while let Some(chunk) = received.blocking_recv() {
            parser.feed(&chunk);
        }
        parser.finish()
    });
    // A stalled server must not hold the source forever.
    let read = tokio::time::timeout(Duration::from_secs(300), async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("reading the list failed: {e}"))?;
            if let Ok(data) = frame.into_data()
                && chunks.send(data).await.is_err()
            {
                return Err("the parser stopped".to_owned());
            }
        }
        Ok(())
    })
    .await;
    drop(chunks);
    let list = parser.await.map_err(|e| e.to_string())?;
    match read {
        Ok(Ok(())) => Ok(Some((list, etag))),
        Ok(Err(why)) => Err(why),
        Err(_) => Err("the list did not arrive within 300 s".to_owned()),
    }
}
