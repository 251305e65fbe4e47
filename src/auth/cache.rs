//! The verified-token cache: the whole token string to its verified claims.
//!
//! A hit is used only while the token is unexpired and the key that verified it is still in
//! its issuer's key set; the route's rules (and revocation) are checked on every request
//! anyway. Bounded by total weight, so many distinct or large tokens cannot grow it.
//!
//! A token is cached the second time it is verified, not the first: a fixed table of recent
//! first sightings (a "doorkeeper") sits in front. Tokens used once (a flood of fresh tokens,
//! a batch job minting one per call) then neither push the tokens of regular clients out nor
//! cost an insertion and an eviction each; a client that reuses its token pays one extra
//! verification, on its second request.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use foldhash::fast::SeedableRandomState;
use quick_cache::Weighter;
use quick_cache::sync::Cache;

use super::verify::Verified;

/// About 64 MiB of tokens and claims.
const CAPACITY_BYTES: u64 = 64 << 20;
const ESTIMATED_ITEMS: usize = 65_536;
/// Recent first sightings remembered, 8 bytes each: as many as the cache holds tokens.
const DOORKEEPER_BUCKETS: usize = (1 << 16) / WAYS;
/// Slots in a bucket: one cache line. A token can sit in any slot of its bucket, so that two
/// tokens used in turn whose hashes pick the same bucket do not keep displacing each other.
///
/// When a bucket is full, the slot that gives way is drawn at random. Any fixed order (a
/// rotation, oldest first) loses to a loop: nine tokens that share a bucket and are used in
/// turn would each push out the next one due, forever, and none of them would be cached.
/// Drawn at random, each survives a round with a fair chance, and the ones cached leave the
/// bucket to the rest.
const WAYS: usize = 8;

pub struct TokenCache {
    cache: Cache<Box<[u8]>, Arc<Verified>, ByteWeight>,
    /// Hashes of tokens verified once, in the bucket their hash picks; 0 is an empty slot.
    seen_once: Box<[Bucket]>,
    hasher: SeedableRandomState,
    /// Counts evictions from full buckets; its hash picks the slot that gives way.
    evictions: AtomicU64,
}

#[repr(align(64))]
struct Bucket([AtomicU64; WAYS]);

#[derive(Clone)]
struct ByteWeight;

impl Weighter<Box<[u8]>, Arc<Verified>> for ByteWeight {
    fn weight(&self, key: &Box<[u8]>, value: &Arc<Verified>) -> u64 {
        // The token, its decoded claims (at most the token's size) and bookkeeping.
        (key.len() * 2 + 256 + value.scope_count() * 16) as u64
    }
}

impl TokenCache {
    pub fn new() -> Self {
        Self::with_hasher(SeedableRandomState::random())
    }

    fn with_hasher(hasher: SeedableRandomState) -> Self {
        Self {
            cache: Cache::with_weighter(ESTIMATED_ITEMS, CAPACITY_BYTES, ByteWeight),
            seen_once: (0..DOORKEEPER_BUCKETS)
                .map(|_| Bucket(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
            hasher,
            evictions: AtomicU64::new(0),
        }
    }

    pub fn get(&self, token: &[u8]) -> Option<Arc<Verified>> {
        self.cache.get(token)
    }

    /// Caches `token` if it was verified before, recently; otherwise remembers that it has
    /// been now. Returns whether it was cached.
    pub fn offer(&self, token: &[u8], verified: &Arc<Verified>) -> bool {
        let (hash, bucket) = self.sighting(token);
        let Bucket(slots) = &self.seen_once[bucket];
        // Relaxed throughout: a lost race only means one more verification before the token
        // is cached, or a token cached one verification early.
        if let Some(slot) = slots.iter().find(|s| s.load(Ordering::Relaxed) == hash) {
            slot.store(0, Ordering::Relaxed);
            self.cache.insert(token.into(), verified.clone());
            return true;
        }
        let slot = slots
            .iter()
            .find(|s| s.load(Ordering::Relaxed) == 0)
            .unwrap_or_else(|| {
                let draw = self
                    .hasher
                    .hash_one(self.evictions.fetch_add(1, Ordering::Relaxed));
                &slots[(draw >> 32) as usize % WAYS]
            });
        slot.store(hash, Ordering::Relaxed);
        false
    }

    /// The hash the doorkeeper keeps for `token` (never 0, so that an empty slot matches no
    /// token) and the index of the bucket it goes in.
    fn sighting(&self, token: &[u8]) -> (u64, usize) {
        let hash = self.hasher.hash_one(token) | 1;
        (hash, (hash >> 32) as usize % DOORKEEPER_BUCKETS)
    }

    pub fn remove(&self, token: &[u8]) {
        self.cache.remove(token);
    }
}

impl Default for TokenCache {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified() -> Arc<Verified> {
        Arc::new(Verified::from_map(serde_json::Map::new(), &[], f64::MAX))
    }

    #[test]
    fn a_token_is_cached_on_its_second_verification() {
        let cache = TokenCache::new();
        assert!(!cache.offer(b"a.b.c", &verified()));
        assert!(cache.get(b"a.b.c").is_none());
        assert!(cache.offer(b"a.b.c", &verified()));
        assert!(cache.get(b"a.b.c").is_some());
    }

    /// Sends each token in turn, `rounds` times, offering the ones not yet cached as a
    /// verifying request would; returns how many are still not cached.
    fn use_in_turn(cache: &TokenCache, tokens: &[String], rounds: usize) -> usize {
        for _ in 0..rounds {
            for token in tokens {
                if cache.get(token.as_bytes()).is_none() {
                    cache.offer(token.as_bytes(), &verified());
                }
            }
        }
        tokens
            .iter()
            .filter(|t| cache.get(t.as_bytes()).is_none())
            .count()
    }

    #[test]
    fn every_token_of_a_set_used_in_turn_is_cached_after_a_few_rounds() {
        // A new hash seed each run, so about one run in 25 puts 9 or more of these tokens in
        // one bucket: with a full bucket giving way in rotation this failed 12 runs in 300,
        // drawing the slot at random none in 2 000.
        let cache = TokenCache::new();
        let tokens: Vec<String> = (0..10_000).map(|i| format!("token-{i}")).collect();
        assert_eq!(use_in_turn(&cache, &tokens, 6), 0);
    }

    #[test]
    fn more_tokens_in_one_bucket_than_it_has_slots_are_all_cached_in_turn() {
        // The worst case built on purpose, with a fixed seed so that it is the same each run:
        // twice as many tokens as slots, all in one bucket, used in a loop.
        let cache = TokenCache::with_hasher(SeedableRandomState::fixed());
        let crowded = cache.sighting(b"token-0").1;
        let tokens: Vec<String> = (0..)
            .map(|i| format!("token-{i}"))
            .filter(|t| cache.sighting(t.as_bytes()).1 == crowded)
            .take(2 * WAYS)
            .collect();
        assert_eq!(use_in_turn(&cache, &tokens, 10), 0);
    }

    #[test]
    fn tokens_used_once_do_not_push_out_cached_ones() {
        let cache = TokenCache::new();
        cache.offer(b"regular", &verified());
        cache.offer(b"regular", &verified());
        // Twice the cache's weight in single-use tokens.
        let padding = "x".repeat(4096);
        for i in 0..2 * CAPACITY_BYTES / 8192 {
            assert!(!cache.offer(format!("fresh-{i}-{padding}").as_bytes(), &verified()));
        }
        assert!(cache.get(b"regular").is_some());
    }
}
