//! The verified-token cache: the whole token string to its verified claims.
//!
//! A hit is used only while the token is unexpired and the key that verified it is still in
//! its issuer's key set; the route's rules (and revocation) are checked on every request
//! anyway. Bounded by total weight, so many distinct or large tokens cannot grow it.

use std::sync::Arc;

use quick_cache::Weighter;
use quick_cache::sync::Cache;

use super::verify::Verified;

/// About 64 MiB of tokens and claims.
const CAPACITY_BYTES: u64 = 64 << 20;
const ESTIMATED_ITEMS: usize = 65_536;

pub struct TokenCache {
    cache: Cache<Box<str>, Arc<Verified>, ByteWeight>,
}

#[derive(Clone)]
struct ByteWeight;

impl Weighter<Box<str>, Arc<Verified>> for ByteWeight {
    fn weight(&self, key: &Box<str>, value: &Arc<Verified>) -> u64 {
        // The token, its decoded claims (at most the token's size) and bookkeeping.
        (key.len() * 2 + 256 + value.scopes.len() * 16) as u64
    }
}

impl TokenCache {
    pub fn new() -> Self {
        Self {
            cache: Cache::with_weighter(ESTIMATED_ITEMS, CAPACITY_BYTES, ByteWeight),
        }
    }

    pub fn get(&self, token: &str) -> Option<Arc<Verified>> {
        self.cache.get(token)
    }

    pub fn insert(&self, token: &str, verified: Arc<Verified>) {
        self.cache.insert(token.into(), verified);
    }

    pub fn remove(&self, token: &str) {
        self.cache.remove(token);
    }
}

impl Default for TokenCache {
    fn default() -> Self {
        Self::new()
    }
}
