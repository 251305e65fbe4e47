//! Where runtime data comes from: files that are watched and URLs that are polled.
//!
//! Shared by key sets (`auth::jwks`) and revocation lists (`revocation`): the HTTP client
//! with ETags, size caps and `Cache-Control: max-age`; the file watcher that survives a
//! ConfigMap's symlink swap; jittered backoff. Nothing here runs on the request path.

pub mod http;
pub mod watch;

use std::time::Duration;

/// ±10 %, so that replicas started together do not fetch together.
pub fn jitter(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let factor = 0.9 + (r % 2001) as f64 / 10_000.0;
    d.mul_f64(factor)
}

/// The wait after `failures` consecutive failures: 1 s doubling, at most `cap`, jittered.
pub fn backoff(failures: u32, cap: Duration) -> Duration {
    let exponent = failures.clamp(1, 16) - 1;
    jitter(
        Duration::from_secs(1)
            .saturating_mul(1 << exponent)
            .min(cap),
    )
}

/// A hash of a file's or document's bytes, to tell a real change from a touch.
pub fn content_hash(bytes: &[u8]) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let around = |d: Duration, secs: f64| (d.as_secs_f64() - secs).abs() <= secs * 0.1 + 1e-9;
        assert!(around(backoff(1, Duration::from_secs(60)), 1.0));
        assert!(around(backoff(3, Duration::from_secs(60)), 4.0));
        assert!(around(backoff(30, Duration::from_secs(60)), 60.0));
    }
}
