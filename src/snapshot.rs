//! The runtime state a request reads: one immutable `Snapshot` built from a validated config,
//! swapped in whole behind `arc-swap`.
//!
//! A request loads the snapshot once at its start and uses that one to its end, so a reload
//! never changes the rules under a request in flight. Building a snapshot never happens on
//! the request path.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;

use crate::auth::Issuers;
use crate::auth::cache::TokenCache;
use crate::auth::jwks::IssuerError;
use crate::config::Config;
use crate::metrics::{Handles, Metrics};
use crate::proxy::UpstreamPool;
use crate::proxy::headers::identity_header_key;
use crate::revocation::{RevocationError, Revocations};
use crate::routing::RouteTable;

/// Everything derived from one config.
pub struct Snapshot {
    pub config: Config,
    pub routes: RouteTable,
    /// Indexed like `config.upstreams`.
    pub upstreams: Vec<Arc<UpstreamPool>>,
    pub metrics: Handles,
    /// Indexed like `config.issuers`; their key sets refresh on their own.
    pub issuers: Issuers,
    pub token_cache: Arc<TokenCache>,
    /// `None` without a `revocation:` section.
    pub revocations: Option<Arc<Revocations>>,
    /// Every header any route sets from claims, normalised: removed from every request.
    pub identity_headers: Vec<String>,
}

impl Snapshot {
    /// Builds the snapshot and starts its issuers' key refreshers (so: inside the runtime).
    pub fn build(config: Config, metrics: &Metrics) -> Result<Self, SnapshotError> {
        Self::build_reusing(config, metrics, None)
    }

    /// Builds a snapshot for a reloaded config. What did not change is carried over from
    /// `previous`, not rebuilt: issuers (their keys), revocation lists, upstream pools (their
    /// connections and endpoint health) and, when the issuers are the same, verified tokens.
    pub fn build_reusing(
        config: Config,
        metrics: &Metrics,
        previous: Option<&Snapshot>,
    ) -> Result<Self, SnapshotError> {
        let mut identity_headers: Vec<String> = config
            .routes
            .iter()
            .flat_map(|r| {
                r.forward
                    .claims_to_headers
                    .iter()
                    .map(|(_, h)| identity_header_key(h))
            })
            .collect();
        identity_headers.sort();
        identity_headers.dedup();
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| {
                previous
                    .and_then(|p| p.upstreams.iter().find(|old| old.config == *u))
                    .cloned()
                    .unwrap_or_else(|| Arc::new(UpstreamPool::new(u)))
            })
            .collect();
        let revocations = match &config.revocation {
            None => None,
            Some(r) => match previous.and_then(|p| p.revocations.as_ref()) {
                Some(old) if old.config == *r => Some(old.clone()),
                old => Some(Arc::new(Revocations::start(
                    r,
                    metrics.revocation(),
                    old.map(Arc::as_ref),
                )?)),
            },
        };
        // Cached verifications name issuers by index: keep them only if the list is the same.
        let token_cache = previous
            .filter(|p| p.config.issuers == config.issuers)
            .map(|p| p.token_cache.clone())
            .unwrap_or_default();
        Ok(Self {
            routes: RouteTable::new(&config.routes),
            upstreams,
            metrics: metrics.handles(&config),
            issuers: Issuers::start_reusing(
                &config.issuers,
                metrics,
                previous.map(|p| &p.issuers),
            )?,
            token_cache,
            revocations,
            identity_headers,
            config,
        })
    }
}

/// Why a snapshot could not be built from a valid config.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Issuer(#[from] IssuerError),
    #[error(transparent)]
    Revocation(#[from] RevocationError),
}

/// Process-wide state shared by listeners, the admin endpoints and reloads.
pub struct State {
    pub snapshot: ArcSwap<Snapshot>,
    pub metrics: Arc<Metrics>,
    /// Upgraded (WebSocket) connections still open, for shutdown to drain.
    pub tunnels: Arc<crate::proxy::upgrade::Tunnels>,
    ready: AtomicBool,
}

impl State {
    pub fn new(config: Config, metrics: Arc<Metrics>) -> Result<Self, SnapshotError> {
        let snapshot = Snapshot::build(config, &metrics)?;
        Ok(Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
            tunnels: Arc::default(),
            ready: AtomicBool::new(false),
        })
    }

    /// Ready: config loaded, listeners bound, every issuer's keys loaded once, and not
    /// shutting down.
    pub fn is_ready(&self) -> bool {
        let snapshot = self.snapshot.load();
        self.ready.load(Ordering::Acquire)
            && snapshot.issuers.all_have_keys()
            && snapshot.revocations.as_ref().is_none_or(|r| r.all_loaded())
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}
