//! Authentication of a request against its route's `auth` rules.
//!
//! The route decides: `auth: none` is anonymous; anything else needs a bearer token that one
//! of the allowed issuers signed (`verify`), that meets the route's scopes and claims
//! (`rules`). Verified tokens are cached (`cache`); the route's rules run every time.
//! Nothing here fetches keys except through the bounded unknown-kid refetch in `jwks`.

mod batch;
pub mod bearer;
pub mod cache;
pub mod claims;
#[doc(hidden)]
pub mod json;
pub mod jwks;
pub mod keys;
pub mod rules;
pub mod verify;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderMap;

use crate::config::{Auth, Issuer, Route};
use crate::metrics::{AuthResult, Metrics};
use crate::reject::Rejection;
use crate::revocation::Revocations;
use bearer::{BearerError, bearer_token};
use cache::TokenCache;
use jwks::{IssuerError, IssuerState};
use verify::{Failure, Verified};

/// Every configured issuer, found by name order or by `iss`.
pub struct Issuers {
    pub list: Vec<Arc<IssuerState>>,
    /// Looked up with every new token's unverified `iss`; a configured handful of names that
    /// no request adds to, so a fast hash does (SipHash's resistance guards insertions).
    by_iss: HashMap<String, usize, foldhash::fast::RandomState>,
}

impl Issuers {
    /// Sets up every issuer's key source (see `IssuerState::start`).
    pub fn start(configs: &[Issuer], metrics: &Metrics) -> Result<Self, IssuerError> {
        Self::start_reusing(configs, metrics, None)
    }

    /// Like `start`, but an issuer configured exactly as in `previous` keeps its state (keys,
    /// refresh task), so a config reload never makes a request wait for keys again.
    pub fn start_reusing(
        configs: &[Issuer],
        metrics: &Metrics,
        previous: Option<&Issuers>,
    ) -> Result<Self, IssuerError> {
        let list = configs
            .iter()
            .map(|c| {
                let same = previous.and_then(|p| p.list.iter().find(|old| old.config == *c));
                match same {
                    Some(old) => Ok(old.clone()),
                    None => IssuerState::start(c.clone(), metrics.jwks(&c.name)).map(Arc::new),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let by_iss = configs
            .iter()
            .enumerate()
            .map(|(i, c)| (c.issuer.clone(), i))
            .collect();
        Ok(Self { list, by_iss })
    }

    pub fn by_iss(&self, iss: &str) -> Option<usize> {
        self.by_iss.get(iss).copied()
    }

    /// Every issuer has loaded keys at least once.
    pub fn all_have_keys(&self) -> bool {
        self.list.iter().all(|i| i.has_keys())
    }
}

/// Checks that every `jwks.file` holds a usable key set (for `tokengate check`).
pub fn check_key_files(config: &crate::config::Config) -> Result<(), crate::config::ConfigError> {
    for (i, issuer) in config.issuers.iter().enumerate() {
        if let crate::config::JwksSource::File(path) = &issuer.jwks.source {
            let problem = match std::fs::read(path) {
                Ok(bytes) => keys::KeySet::parse(&bytes).err().map(|e| e.to_string()),
                Err(e) => Some(e.to_string()),
            };
            if let Some(problem) = problem {
                return Err(crate::config::ConfigError::Invalid {
                    file: config.path.clone(),
                    line: None,
                    field: format!("issuers[{i}].jwks.file"),
                    problem: format!("`{}`: {problem}", path.display()),
                    fix: "point it at a JWKS document ({\"keys\": [...]}) with at least one RSA, EC or Ed25519 public key".to_owned(),
                });
            }
        }
    }
    Ok(())
}

/// How a request was let through.
#[derive(Debug)]
pub enum Decision {
    Anonymous,
    Verified(Arc<Verified>),
}

/// The outcome of authentication, with what metrics need to know.
pub struct Outcome {
    pub result: Result<Decision, Rejection>,
    pub label: AuthResult,
    pub issuer: Option<usize>,
}

/// Applies `route`'s auth rules to the request `headers`.
pub async fn authenticate(
    headers: &HeaderMap,
    route: &Route,
    issuers: &Issuers,
    cache: &TokenCache,
    revocations: Option<&Revocations>,
    cache_hit: impl Fn(bool),
) -> Outcome {
    let rules = match &route.auth {
        Auth::Anonymous => {
            return Outcome {
                result: Ok(Decision::Anonymous),
                label: AuthResult::Anonymous,
                issuer: None,
            };
        }
        Auth::Required(rules) => rules,
    };
    let refuse = |rejection, label, issuer| Outcome {
        result: Err(rejection),
        label,
        issuer,
    };
    let token = match bearer_token(headers) {
        Ok(Some(token)) => token,
        Ok(None) => return refuse(Rejection::MissingToken, AuthResult::MissingToken, None),
        Err(BearerError::Several) => {
            return refuse(
                Rejection::BadRequest("several Authorization headers"),
                AuthResult::InvalidToken,
                None,
            );
        }
        Err(BearerError::Malformed) => {
            return refuse(
                Rejection::InvalidToken("the bearer token is malformed"),
                AuthResult::InvalidToken,
                None,
            );
        }
    };

    let now = SystemTime::now();
    let verified = match cached(token, cache, issuers, now) {
        Some(hit) => {
            cache_hit(true);
            hit
        }
        None => {
            cache_hit(false);
            // Only here: a cached token is a verified one, so it passed this already.
            if !bearer::is_b64token(token) {
                return refuse(
                    Rejection::InvalidToken("the bearer token is malformed"),
                    AuthResult::InvalidToken,
                    None,
                );
            }
            // A route that reads claims by path gets them parsed into their map at once,
            // not read once for verify and parsed again for it.
            let by_map = !rules.claims.is_empty() || !route.forward.claims_to_headers.is_empty();
            match verify::verify(token, issuers, rules.issuers.as_deref(), now, by_map).await {
                Ok(v) => {
                    let v = Arc::new(v);
                    cache.offer(token, &v);
                    v
                }
                Err((failure, issuer)) => {
                    let (rejection, label) = match failure {
                        Failure::Invalid(why) => {
                            (Rejection::InvalidToken(why), AuthResult::InvalidToken)
                        }
                        Failure::Expired => (
                            Rejection::InvalidToken("the token has expired"),
                            AuthResult::Expired,
                        ),
                        Failure::UnknownKey => (
                            Rejection::InvalidToken("the token's signing key is not known"),
                            AuthResult::UnknownKey,
                        ),
                        Failure::Unavailable { issuer } => (
                            Rejection::Unavailable {
                                why: "the issuer's signing keys could not be refreshed",
                                retry_after_secs: issuers.list[issuer]
                                    .config
                                    .jwks
                                    .min_refresh_interval
                                    .as_secs()
                                    .max(1),
                            },
                            AuthResult::InvalidToken,
                        ),
                    };
                    return refuse(rejection, label, issuer);
                }
            }
        }
    };
    let issuer = Some(verified.issuer);
    // After the cache, on every request: a revocation takes effect for cached tokens at once.
    if let Some(revocations) = revocations {
        let set = revocations.current();
        // Until every source has loaded once, a revoked token cannot be told from a good
        // one: 503, while `/readyz` says not ready.
        if !revocations.is_complete(&set) {
            return refuse(
                Rejection::Unavailable {
                    why: "the revocation lists have not loaded yet",
                    retry_after_secs: 1,
                },
                AuthResult::InvalidToken,
                issuer,
            );
        }
        if set.is_revoked(verified.jti(), verified.sub(), verified.iat) {
            return refuse(
                Rejection::InvalidToken("the token has been revoked"),
                AuthResult::Revoked,
                issuer,
            );
        }
    }
    // A cached token was verified for some route: this route's issuer list still applies.
    if rules
        .issuers
        .as_ref()
        .is_some_and(|list| !list.contains(&verified.issuer))
    {
        return refuse(
            Rejection::InvalidToken("the token's issuer is not accepted on this route"),
            AuthResult::InvalidToken,
            issuer,
        );
    }
    if let Err(unmet) = rules::check(rules, &verified) {
        return refuse(
            Rejection::InsufficientScope { scope: unmet.scope },
            AuthResult::InsufficientScope,
            issuer,
        );
    }
    Outcome {
        result: Ok(Decision::Verified(verified)),
        label: AuthResult::Allowed,
        issuer,
    }
}

/// A cache hit still good now: unexpired, its key still in its issuer's current set, and
/// the issuer's keys not stale.
fn cached(
    token: &[u8],
    cache: &TokenCache,
    issuers: &Issuers,
    now: SystemTime,
) -> Option<Arc<Verified>> {
    let hit = cache.get(token)?;
    let issuer = issuers.list.get(hit.issuer)?;
    let now_secs = now
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let key_present = issuer.has_key(hit.key_fingerprint);
    if now_secs < hit.expires && key_present && issuer.staleness(now).is_none() {
        Some(hit)
    } else {
        cache.remove(token);
        None
    }
}
