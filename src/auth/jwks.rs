//! Key sets per issuer, kept fresh in the background: `url:` sources are fetched, refreshed
//! on `refresh_interval` (sooner when `Cache-Control: max-age` says so) with ETags, jitter and
//! backoff; `file:` sources are watched. The last good set keeps serving through any failure.
//!
//! The request path only reads the current set (one atomic load). The one exception is a
//! token whose `kid` is unknown: it may ask for a refetch, at most one per issuer per
//! `min_refresh_interval`, shared by every request that asks, and waits no longer than
//! `fetch_timeout` for it. No request ever fetches by itself.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::header::HeaderValue;
use jsonwebtoken::Algorithm;
use tokio::sync::{mpsc, watch};

use super::keys::{KeySet, parse_algorithm};
use crate::config::{Issuer, JwksSource};
use crate::metrics::JwksMetrics;
use crate::sources::http::{Fetched, collect, fetch};
use crate::sources::watch::FileWatch;
use crate::sources::{backoff, content_hash, jitter};

/// The largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// Why an issuer could not be set up at all.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error("issuer `{issuer}`: JWKS file {path}: {reason}")]
    File {
        issuer: String,
        path: PathBuf,
        reason: String,
    },
}

/// One issuer at runtime: its config, its current keys and the task keeping them fresh.
pub struct IssuerState {
    pub config: Issuer,
    /// The allow-list; empty means every accepted algorithm whose key fits.
    pub algorithms: Vec<Algorithm>,
    shared: Arc<Shared>,
    refetch: mpsc::Sender<()>,
    task: tokio::task::AbortHandle,
}

struct Shared {
    name: String,
    keys: ArcSwapOption<KeySet>,
    /// Unix seconds of the last successful fetch or read (a 304 counts); 0 = never.
    last_success: AtomicU64,
    /// Milliseconds (process clock) of the last unknown-kid refetch; 0 = never.
    last_kid_refetch: AtomicU64,
    kid_refetch_running: AtomicBool,
    /// Counts finished fetch attempts, whatever their outcome, to wake waiting requests.
    fetches: watch::Sender<u64>,
    metrics: JwksMetrics,
}

impl Drop for IssuerState {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl IssuerState {
    /// Sets up `config`'s key source and starts keeping it fresh. A `file:` source must be
    /// readable and hold a usable key now; a `url:` source starts from `cache_dir` when it
    /// can and is fetched in the background.
    pub fn start(config: Issuer, metrics: JwksMetrics) -> Result<Self, IssuerError> {
        let algorithms = config
            .algorithms
            .iter()
            .filter_map(|a| parse_algorithm(a))
            .collect();
        let (fetches, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            name: config.name.clone(),
            keys: ArcSwapOption::empty(),
            last_success: AtomicU64::new(0),
            last_kid_refetch: AtomicU64::new(0),
            kid_refetch_running: AtomicBool::new(false),
            fetches,
            metrics,
        });
        let (refetch, requests) = mpsc::channel(1);
        let task = match &config.jwks.source {
            JwksSource::File(path) => {
                let bytes = std::fs::read(path).map_err(|e| IssuerError::File {
                    issuer: config.name.clone(),
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                let keys = KeySet::parse(&bytes).map_err(|e| IssuerError::File {
                    issuer: config.name.clone(),
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                shared.install(keys, "ok");
                // Watch before returning, and remember what was loaded: a change made right
                // after start-up must not be missed or mistaken for the loaded contents.
                let file = FileWatch::new(path);
                tokio::spawn(watch_file(
                    shared.clone(),
                    config.clone(),
                    file,
                    content_hash(&bytes),
                    requests,
                ))
            }
            JwksSource::Url(url) => {
                if let Some(dir) = &config.jwks.cache_dir {
                    shared.load_cache(&cache_file(dir, &config.name));
                }
                tokio::spawn(poll_url(
                    shared.clone(),
                    config.clone(),
                    url.clone(),
                    requests,
                ))
            }
        };
        Ok(Self {
            config,
            algorithms,
            shared,
            refetch,
            task: task.abort_handle(),
        })
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The current key set; `None` until the first successful load.
    pub fn keys(&self) -> Option<Arc<KeySet>> {
        self.shared.keys.load_full()
    }

    /// Whether the current set holds the key with this fingerprint.
    pub fn has_key(&self, fingerprint: u64) -> bool {
        self.shared
            .keys
            .load()
            .as_ref()
            .is_some_and(|keys| keys.contains(fingerprint))
    }

    /// Whether keys were ever loaded (readiness).
    pub fn has_keys(&self) -> bool {
        self.shared.keys.load().is_some()
    }

    /// Seconds since the last good fetch when that is longer than `max_stale`.
    pub fn staleness(&self, now: SystemTime) -> Option<u64> {
        let max = self.config.jwks.max_stale?;
        let last = self.shared.last_success.load(Ordering::Relaxed);
        let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let age = now.saturating_sub(last);
        (age > max.as_secs()).then_some(age)
    }

    /// A token named `kid`, which the current set lacks: refetch (at most once per
    /// `min_refresh_interval`, shared by all who ask) and return the set as it then is.
    /// Waits at most `fetch_timeout`.
    pub async fn refetch_for_kid(&self, kid: &str) -> Option<Arc<KeySet>> {
        let shared = &self.shared;
        let mut finished = shared.fetches.subscribe();
        // A refetch may have just brought it.
        if let Some(keys) = self.keys().filter(|k| k.has_kid(kid)) {
            return Some(keys);
        }
        if !shared.kid_refetch_running.load(Ordering::Acquire) {
            let now = clock_millis();
            let last = shared.last_kid_refetch.load(Ordering::Acquire);
            let cooldown = self.config.jwks.min_refresh_interval.as_millis() as u64;
            if last != 0 && now.saturating_sub(last) < cooldown {
                return None;
            }
            if shared
                .last_kid_refetch
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                shared.kid_refetch_running.store(true, Ordering::Release);
                tracing::info!(issuer = %shared.name, "unknown key id; refetching the key set");
                // Full means a refetch is already queued: that one serves us too.
                let _ = self.refetch.try_send(());
            }
        }
        let _ = tokio::time::timeout(self.config.jwks.fetch_timeout, finished.changed()).await;
        self.keys()
    }
}

impl Shared {
    fn install(&self, keys: KeySet, result: &str) {
        for why in &keys.skipped {
            tracing::warn!(issuer = %self.name, "JWKS key skipped: {why}");
        }
        self.metrics.keys.set(keys.keys.len() as i64);
        self.keys.store(Some(Arc::new(keys)));
        self.succeeded(result);
    }

    fn succeeded(&self, result: &str) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_success.store(now, Ordering::Relaxed);
        self.metrics.last_success.set(now as f64);
        self.metrics.refresh(result).inc();
    }

    fn failed(&self, why: &str) {
        tracing::warn!(issuer = %self.name, "JWKS refresh failed, keeping the last good keys: {why}");
        self.metrics.refresh("error").inc();
    }

    fn finished_attempt(&self) {
        self.kid_refetch_running.store(false, Ordering::Release);
        self.fetches.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Starts from the key set a previous run kept on disk, aged by the file's mtime.
    fn load_cache(&self, path: &Path) {
        let Ok(bytes) = std::fs::read(path) else {
            return;
        };
        match KeySet::parse(&bytes) {
            Ok(keys) => {
                let age = std::fs::metadata(path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs());
                self.metrics.keys.set(keys.keys.len() as i64);
                self.keys.store(Some(Arc::new(keys)));
                self.last_success.store(age, Ordering::Relaxed);
                self.metrics.last_success.set(age as f64);
                tracing::info!(issuer = %self.name, path = %path.display(), "started from the cached key set");
            }
            Err(e) => {
                tracing::warn!(issuer = %self.name, path = %path.display(), "ignoring the cached key set: {e}")
            }
        }
    }
}

fn cache_file(dir: &Path, issuer: &str) -> PathBuf {
    let safe: String = issuer
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("{safe}.jwks.json"))
}

async fn poll_url(
    shared: Arc<Shared>,
    config: Issuer,
    url: String,
    mut refetch: mpsc::Receiver<()>,
) {
    let jwks = &config.jwks;
    let mut etag: Option<HeaderValue> = None;
    let mut failures: u32 = 0;
    let mut delay = Duration::ZERO;
    loop {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            Some(()) = refetch.recv() => {}
        }
        let attempt = async {
            match fetch(&url, etag.as_ref(), MAX_JWKS_BYTES).await? {
                Fetched::NotModified { max_age } => Ok((None, max_age)),
                Fetched::Body {
                    body,
                    etag,
                    max_age,
                } => {
                    let body = collect(body, MAX_JWKS_BYTES).await?;
                    let keys = KeySet::parse(&body).map_err(|e| e.to_string())?;
                    Ok((Some((keys, body, etag)), max_age))
                }
            }
        };
        let outcome: Result<Result<_, String>, _> =
            tokio::time::timeout(jwks.fetch_timeout, attempt).await;
        let max_age = match outcome {
            Ok(Ok((Some((keys, body, new_etag)), max_age))) => {
                tracing::info!(issuer = %shared.name, keys = keys.keys.len(), "JWKS loaded");
                shared.install(keys, "ok");
                etag = new_etag;
                failures = 0;
                if let Some(dir) = &jwks.cache_dir {
                    keep_on_disk(&cache_file(dir, &shared.name), &body).await;
                }
                Some(max_age)
            }
            Ok(Ok((None, max_age))) => {
                shared.succeeded("not_modified");
                failures = 0;
                Some(max_age)
            }
            Ok(Err(why)) => {
                shared.failed(&why);
                None
            }
            Err(_elapsed) => {
                shared.failed(&format!(
                    "no answer within fetch_timeout ({:?})",
                    jwks.fetch_timeout
                ));
                None
            }
        };
        shared.finished_attempt();
        delay = match max_age {
            Some(max_age) => {
                let sooner =
                    max_age.map_or(jwks.refresh_interval, |m| m.max(jwks.min_refresh_interval));
                jitter(jwks.refresh_interval.min(sooner))
            }
            None => {
                failures = failures.saturating_add(1);
                backoff(failures, jwks.refresh_interval)
            }
        };
    }
}

/// Writes the last good document where a new replica can start from it (write, then rename).
async fn keep_on_disk(path: &Path, body: &Bytes) {
    let tmp = path.with_extension("json.tmp");
    let result = async {
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        tokio::fs::write(&tmp, body).await?;
        tokio::fs::rename(&tmp, path).await
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), "cannot keep the key set on disk: {e}");
    }
}

/// Re-reads a `file:` source when it changes, on request, and every `refresh_interval`.
async fn watch_file(
    shared: Arc<Shared>,
    config: Issuer,
    mut file: FileWatch,
    mut last_hash: u64,
    mut refetch: mpsc::Receiver<()>,
) {
    loop {
        tokio::select! {
            () = file.changed(config.jwks.refresh_interval) => {}
            Some(()) = refetch.recv() => {}
        }
        let path = &file.path;
        match tokio::fs::read(path).await {
            Ok(bytes) => {
                let hash = content_hash(&bytes);
                if hash == last_hash {
                    shared.succeeded("not_modified");
                } else {
                    match KeySet::parse(&bytes) {
                        Ok(keys) => {
                            tracing::info!(issuer = %shared.name, keys = keys.keys.len(), "JWKS file reloaded");
                            shared.install(keys, "ok");
                            last_hash = hash;
                        }
                        Err(e) => shared.failed(&format!("{}: {e}", path.display())),
                    }
                }
            }
            Err(e) => shared.failed(&format!("{}: {e}", path.display())),
        }
        shared.finished_attempt();
    }
}

fn clock_millis() -> u64 {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
        + 1
}
