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
    pub upstreams: Vec<UpstreamPool>,
    pub metrics: Handles,
    /// Indexed like `config.issuers`; their key sets refresh on their own.
    pub issuers: Issuers,
    pub token_cache: TokenCache,
    /// `None` without a `revocation:` section.
    pub revocations: Option<Revocations>,
    /// Every header any route sets from claims, normalised: removed from every request.
    pub identity_headers: Vec<String>,
}

impl Snapshot {
    /// Builds the snapshot and starts its issuers' key refreshers (so: inside the runtime).
    pub fn build(config: Config, metrics: &Metrics) -> Result<Self, SnapshotError> {
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
        Ok(Self {
            routes: RouteTable::new(&config.routes),
            upstreams: config.upstreams.iter().map(UpstreamPool::new).collect(),
            metrics: metrics.handles(&config),
            issuers: Issuers::start(&config.issuers, metrics)?,
            token_cache: TokenCache::new(),
            revocations: config
                .revocation
                .as_ref()
                .map(|r| Revocations::start(r, metrics.revocation()))
                .transpose()?,
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
    ready: AtomicBool,
}

impl State {
    pub fn new(config: Config, metrics: Arc<Metrics>) -> Result<Self, SnapshotError> {
        let snapshot = Snapshot::build(config, &metrics)?;
        Ok(Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
            ready: AtomicBool::new(false),
        })
    }

    /// Ready: config loaded, listeners bound, every issuer's keys loaded once, and not
    /// shutting down.
    pub fn is_ready(&self) -> bool {
        let snapshot = self.snapshot.load();
        self.ready.load(Ordering::Acquire)
            && snapshot.issuers.all_have_keys()
            && snapshot
                .revocations
                .as_ref()
                .is_none_or(Revocations::all_loaded)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}
