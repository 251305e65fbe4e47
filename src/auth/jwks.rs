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
use http::header::{CACHE_CONTROL, ETAG, HeaderValue, IF_NONE_MATCH};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use jsonwebtoken::Algorithm;
use tokio::sync::{mpsc, watch};

use super::keys::{KeySet, parse_algorithm};
use crate::config::{Issuer, JwksSource};
use crate::metrics::JwksMetrics;

/// The largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;
/// First retry after a failed fetch; doubled per consecutive failure up to `refresh_interval`.
const BACKOFF_START: Duration = Duration::from_secs(1);

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
                let (events_tx, events) = mpsc::channel::<()>(16);
                let watcher = watch_directory(path, events_tx);
                let file = WatchedFile {
                    path: path.clone(),
                    hash: content_hash(&bytes),
                    events,
                    _watcher: watcher,
                };
                tokio::spawn(watch_file(shared.clone(), config.clone(), file, requests))
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

type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// One client for every JWKS fetch in the process: rustls with aws-lc-rs and webpki roots.
fn client() -> &'static HttpsClient {
    static CLIENT: OnceLock<HttpsClient> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)
            .expect("the aws-lc-rs provider supports the default protocol versions")
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .build(https)
    })
}

enum Fetched {
    NotModified {
        max_age: Option<Duration>,
    },
    Fresh {
        keys: KeySet,
        body: Bytes,
        etag: Option<HeaderValue>,
        max_age: Option<Duration>,
    },
}

async fn fetch(url: &str, etag: Option<&HeaderValue>) -> Result<Fetched, String> {
    let mut request = Request::get(url);
    if let Some(etag) = etag {
        request = request.header(IF_NONE_MATCH, etag.clone());
    }
    let request = request.body(Empty::new()).map_err(|e| e.to_string())?;
    let response = client()
        .request(request)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let max_age = max_age(response.headers().get(CACHE_CONTROL));
    match response.status() {
        StatusCode::NOT_MODIFIED => return Ok(Fetched::NotModified { max_age }),
        StatusCode::OK => {}
        status => return Err(format!("the server answered {status}")),
    }
    let etag = response.headers().get(ETAG).cloned();
    let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the body failed ({e}); the limit is {MAX_JWKS_BYTES} bytes"))?
        .to_bytes();
    let keys = KeySet::parse(&body).map_err(|e| e.to_string())?;
    Ok(Fetched::Fresh {
        keys,
        body,
        etag,
        max_age,
    })
}

/// `Cache-Control: max-age=N` as a duration.
fn max_age(value: Option<&HeaderValue>) -> Option<Duration> {
    let text = value?.to_str().ok()?;
    text.split(',').find_map(|directive| {
        let (name, value) = directive.trim().split_once('=')?;
        if name.trim().eq_ignore_ascii_case("max-age") {
            value
                .trim()
                .trim_matches('"')
                .parse()
                .ok()
                .map(Duration::from_secs)
        } else {
            None
        }
    })
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
        let outcome = tokio::time::timeout(jwks.fetch_timeout, fetch(&url, etag.as_ref())).await;
        let max_age = match outcome {
            Ok(Ok(Fetched::Fresh {
                keys,
                body,
                etag: new_etag,
                max_age,
            })) => {
                tracing::info!(issuer = %shared.name, keys = keys.keys.len(), "JWKS loaded");
                shared.install(keys, "ok");
                etag = new_etag;
                failures = 0;
                if let Some(dir) = &jwks.cache_dir {
                    keep_on_disk(&cache_file(dir, &shared.name), &body).await;
                }
                Some(max_age)
            }
            Ok(Ok(Fetched::NotModified { max_age })) => {
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
                let backoff = BACKOFF_START.saturating_mul(1 << failures.min(16).saturating_sub(1));
                jitter(backoff.min(jwks.refresh_interval))
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

/// Re-reads a `file:` source when it changes (notify on its directory, since ConfigMaps swap
/// a symlink), on request, and every `refresh_interval` as a fallback.
struct WatchedFile {
    path: PathBuf,
    /// Hash of the contents last installed.
    hash: u64,
    events: mpsc::Receiver<()>,
    _watcher: Option<notify::RecommendedWatcher>,
}

async fn watch_file(
    shared: Arc<Shared>,
    config: Issuer,
    file: WatchedFile,
    mut refetch: mpsc::Receiver<()>,
) {
    let WatchedFile {
        path,
        hash: mut last_hash,
        mut events,
        _watcher,
    } = file;
    loop {
        tokio::select! {
            Some(()) = events.recv() => {
                // Editors and ConfigMap updates come as bursts of events: settle first.
                tokio::time::sleep(Duration::from_millis(250)).await;
                while events.try_recv().is_ok() {}
            }
            Some(()) = refetch.recv() => {}
            () = tokio::time::sleep(config.jwks.refresh_interval) => {}
        }
        match tokio::fs::read(&path).await {
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

fn watch_directory(path: &Path, events: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name()?.to_owned();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            // Our file, or a ConfigMap's `..data` symlink swap.
            let relevant = event.paths.iter().any(|p| {
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

fn content_hash(bytes: &[u8]) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// ±10 %, so that replicas started together do not fetch together.
fn jitter(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let factor = 0.9 + (r % 2001) as f64 / 10_000.0;
    d.mul_f64(factor)
}

fn clock_millis() -> u64 {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(
            max_age(Some(&v("public, max-age=300"))),
            Some(Duration::from_secs(300))
        );
        assert_eq!(max_age(Some(&v("no-cache"))), None);
        assert_eq!(max_age(None), None);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(100));
            assert!(
                j >= Duration::from_secs(90) && j <= Duration::from_secs(110),
                "{j:?}"
            );
        }
    }
}
