//! Prometheus metrics: one registry for the process, and label handles resolved when a
//! config is loaded so that counting on the request path is an atomic add, not a label lookup.
//!
//! Label values are bounded: route, upstream and issuer names come from the config, methods
//! from the standard set (others are `other`), statuses from the registered codes. Paths and
//! tokens never become labels.

use std::sync::OnceLock;

use http::{Method, StatusCode};
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::config::Config;

/// The route label of requests no route matched.
pub const NO_ROUTE: &str = "_none";

const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "other",
];

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every metric family the gateway exports.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    auth_decisions: IntCounterVec,
    upstream_duration: HistogramVec,
    upstream_errors: IntCounterVec,
    jwks_refresh: IntCounterVec,
    jwks_keys: IntGaugeVec,
    jwks_last_success: GaugeVec,
    token_cache: IntCounterVec,
    reloads: IntCounterVec,
    revocation_entries: IntGauge,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "tokengate_requests_total",
                "Requests answered, by route, method and status.",
            ),
            &["route", "method", "status"],
        )
        .expect("metric definition is valid");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "tokengate_request_duration_seconds",
                "Time from request head to response head, by route.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("metric definition is valid");
        let auth_decisions = IntCounterVec::new(
            Opts::new(
                "tokengate_auth_decisions_total",
                "Authentication decisions, by route, issuer and result.",
            ),
            &["route", "issuer", "result"],
        )
        .expect("metric definition is valid");
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "tokengate_upstream_request_duration_seconds",
                "Time from forwarding a request to the upstream's response head, by upstream.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["upstream"],
        )
        .expect("metric definition is valid");
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "tokengate_upstream_errors_total",
                "Failed upstream requests, by upstream and kind (connect, timeout, protocol).",
            ),
            &["upstream", "kind"],
        )
        .expect("metric definition is valid");
        let jwks_refresh = IntCounterVec::new(
            Opts::new(
                "tokengate_jwks_refresh_total",
                "JWKS fetches and file reads, by issuer and result (ok, not_modified, error).",
            ),
            &["issuer", "result"],
        )
        .expect("metric definition is valid");
        let jwks_keys = IntGaugeVec::new(
            Opts::new(
                "tokengate_jwks_keys",
                "Usable keys in the issuer's current key set.",
            ),
            &["issuer"],
        )
        .expect("metric definition is valid");
        let jwks_last_success = GaugeVec::new(
            Opts::new(
                "tokengate_jwks_last_success_timestamp_seconds",
                "Unix time of the issuer's last successful JWKS fetch or read.",
            ),
            &["issuer"],
        )
        .expect("metric definition is valid");
        let token_cache = IntCounterVec::new(
            Opts::new(
                "tokengate_token_cache_requests_total",
                "Verified-token cache lookups, by result (hit, miss).",
            ),
            &["result"],
        )
        .expect("metric definition is valid");
        let reloads = IntCounterVec::new(
            Opts::new(
                "tokengate_reload_total",
                "Reloads, by what was reloaded (config, jwks, revocation, tls) and result (ok, error).",
            ),
            &["what", "result"],
        )
        .expect("metric definition is valid");
        let revocation_entries = IntGauge::new(
            "tokengate_revocation_entries",
            "Entries (token ids and subjects) in the merged revocation set.",
        )
        .expect("metric definition is valid");
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
            Box::new(auth_decisions.clone()),
            Box::new(upstream_duration.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(jwks_refresh.clone()),
            Box::new(jwks_keys.clone()),
            Box::new(jwks_last_success.clone()),
            Box::new(token_cache.clone()),
            Box::new(reloads.clone()),
            Box::new(revocation_entries.clone()),
        ] {
            registry
                .register(collector)
                .expect("each family is registered once");
        }
        Self {
            registry,
            requests,
            request_duration,
            auth_decisions,
            upstream_duration,
            upstream_errors,
            jwks_refresh,
            jwks_keys,
            jwks_last_success,
            token_cache,
            reloads,
            revocation_entries,
        }
    }

    /// Counts a reload of `what` (config, jwks, revocation, tls) with `result` (ok, error).
    /// Reloads are rare: the label lookup is fine here.
    pub fn count_reload(&self, what: &str, result: &str) {
        self.reloads.with_label_values(&[what, result]).inc();
    }

    /// Handles for revocation updates.
    pub fn revocation(&self) -> crate::revocation::RevocationMetrics {
        crate::revocation::RevocationMetrics {
            entries: self.revocation_entries.clone(),
            reload_ok: self.reloads.with_label_values(&["revocation", "ok"]),
            reload_error: self.reloads.with_label_values(&["revocation", "error"]),
        }
    }

    /// Handles for one issuer's key-set metrics.
    pub fn jwks(&self, issuer: &str) -> JwksMetrics {
        JwksMetrics {
            refresh_ok: self.jwks_refresh.with_label_values(&[issuer, "ok"]),
            refresh_not_modified: self
                .jwks_refresh
                .with_label_values(&[issuer, "not_modified"]),
            refresh_error: self.jwks_refresh.with_label_values(&[issuer, "error"]),
            keys: self.jwks_keys.with_label_values(&[issuer]),
            last_success: self.jwks_last_success.with_label_values(&[issuer]),
        }
    }

    /// Resolves the handles one config needs: one set per route (plus `_none`) and upstream.
    pub fn handles(&self, config: &Config) -> Handles {
        let issuers: Vec<String> = config
            .issuers
            .iter()
            .map(|i| i.name.clone())
            .chain([NO_ROUTE.to_owned()])
            .collect();
        let route = |name: &str| RouteMetrics {
            name: name.to_owned(),
            duration: self.request_duration.with_label_values(&[name]),
            // Created on first use: only the decisions a route really makes are exported.
            decisions: (0..issuers.len() * AuthResult::ALL.len())
                .map(|_| OnceLock::new())
                .collect(),
            issuers: issuers.clone(),
            auth_decisions: self.auth_decisions.clone(),
            statuses: std::array::from_fn(|_| StatusCounters::new()),
            requests: self.requests.clone(),
        };
        let mut routes: Vec<RouteMetrics> = config.routes.iter().map(|r| route(&r.name)).collect();
        routes.push(route(NO_ROUTE));
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| UpstreamMetrics {
                duration: self.upstream_duration.with_label_values(&[&u.name]),
                connect_errors: self
                    .upstream_errors
                    .with_label_values(&[&u.name, "connect"]),
                timeouts: self
                    .upstream_errors
                    .with_label_values(&[&u.name, "timeout"]),
                protocol_errors: self
                    .upstream_errors
                    .with_label_values(&[&u.name, "protocol"]),
            })
            .collect();
        Handles {
            routes,
            upstreams,
            cache_hits: self.token_cache.with_label_values(&["hit"]),
            cache_misses: self.token_cache.with_label_values(&["miss"]),
        }
    }

    /// The Prometheus text exposition of every family.
    pub fn encode(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# encoding metrics failed: {e}\n"))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Handles for one config: indexed like `Config::routes` (the last is `_none`) and
/// `Config::upstreams`.
pub struct Handles {
    pub routes: Vec<RouteMetrics>,
    pub upstreams: Vec<UpstreamMetrics>,
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
}

impl Handles {
    /// The metrics of route `index`, or of `_none` when no route matched.
    pub fn route(&self, index: Option<usize>) -> &RouteMetrics {
        let last = self.routes.len() - 1;
        &self.routes[index.unwrap_or(last).min(last)]
    }
}

pub struct RouteMetrics {
    name: String,
    pub duration: Histogram,
    /// Indexed by issuer (the last is `_none`) times `AuthResult::ALL.len()`.
    decisions: Box<[OnceLock<IntCounter>]>,
    issuers: Vec<String>,
    auth_decisions: IntCounterVec,
    statuses: [StatusCounters; METHODS.len()],
    requests: IntCounterVec,
}

impl RouteMetrics {
    /// Counts one authentication decision; `issuer` is `None` when no issuer took part.
    pub fn decide(&self, issuer: Option<usize>, result: AuthResult) {
        let issuer = issuer
            .unwrap_or(self.issuers.len() - 1)
            .min(self.issuers.len() - 1);
        let slot = issuer * AuthResult::ALL.len() + result as usize;
        self.decisions[slot]
            .get_or_init(|| {
                self.auth_decisions.with_label_values(&[
                    &self.name,
                    &self.issuers[issuer],
                    result.label(),
                ])
            })
            .inc();
    }

    /// Counts one answered request.
    pub fn count(&self, method: &Method, status: StatusCode) {
        let m = method_index(method);
        match status_slot(status) {
            Some(slot) => self.statuses[m].slots[slot]
                .get_or_init(|| {
                    self.requests
                        .with_label_values(&[&self.name, METHODS[m], status.as_str()])
                })
                .inc(),
            // An unregistered status code: rare, so the label lookup is acceptable.
            None => self
                .requests
                .with_label_values(&[&self.name, METHODS[m], status.as_str()])
                .inc(),
        }
    }
}

/// The results of `tokengate_auth_decisions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthResult {
    Allowed,
    MissingToken,
    InvalidToken,
    Expired,
    Revoked,
    UnknownKey,
    InsufficientScope,
    Anonymous,
}

impl AuthResult {
    pub const ALL: [AuthResult; 8] = [
        AuthResult::Allowed,
        AuthResult::MissingToken,
        AuthResult::InvalidToken,
        AuthResult::Expired,
        AuthResult::Revoked,
        AuthResult::UnknownKey,
        AuthResult::InsufficientScope,
        AuthResult::Anonymous,
    ];

    pub fn label(self) -> &'static str {
        match self {
            AuthResult::Allowed => "allowed",
            AuthResult::MissingToken => "missing_token",
            AuthResult::InvalidToken => "invalid_token",
            AuthResult::Expired => "expired",
            AuthResult::Revoked => "revoked",
            AuthResult::UnknownKey => "unknown_key",
            AuthResult::InsufficientScope => "insufficient_scope",
            AuthResult::Anonymous => "anonymous",
        }
    }
}

/// One issuer's key-set metrics.
#[derive(Clone)]
pub struct JwksMetrics {
    refresh_ok: IntCounter,
    refresh_not_modified: IntCounter,
    refresh_error: IntCounter,
    pub keys: IntGauge,
    pub last_success: Gauge,
}

impl JwksMetrics {
    /// The refresh counter for `result`: `ok`, `not_modified` or `error`.
    pub fn refresh(&self, result: &str) -> &IntCounter {
        match result {
            "ok" => &self.refresh_ok,
            "not_modified" => &self.refresh_not_modified,
            _ => &self.refresh_error,
        }
    }
}

pub struct UpstreamMetrics {
    pub duration: Histogram,
    pub connect_errors: IntCounter,
    pub timeouts: IntCounter,
    pub protocol_errors: IntCounter,
}

/// Lazily created counters, one per registered status code.
struct StatusCounters {
    slots: Box<[OnceLock<IntCounter>]>,
}

impl StatusCounters {
    fn new() -> Self {
        Self {
            slots: (0..STATUS_CODES.len()).map(|_| OnceLock::new()).collect(),
        }
    }
}

fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::CONNECT => 5,
        Method::OPTIONS => 6,
        Method::TRACE => 7,
        Method::PATCH => 8,
        _ => 9,
    }
}

/// The IANA-registered status codes; each has its own counter slot.
const STATUS_CODES: &[u16] = &[
    100, 101, 102, 103, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304,
    305, 307, 308, 400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415,
    416, 417, 418, 421, 422, 423, 424, 425, 426, 428, 429, 431, 451, 500, 501, 502, 503, 504, 505,
    506, 507, 508, 510, 511,
];

fn status_slot(status: StatusCode) -> Option<usize> {
    STATUS_CODES.binary_search(&status.as_u16()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_sorted_so_binary_search_works() {
        assert!(STATUS_CODES.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(status_slot(StatusCode::OK), Some(4));
        assert_eq!(status_slot(StatusCode::from_u16(599).unwrap()), None);
    }

    #[test]
    fn auth_results_index_their_own_slot() {
        for (i, r) in AuthResult::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }

    #[test]
    fn unusual_methods_are_labelled_other() {
        assert_eq!(
            METHODS[method_index(&Method::from_bytes(b"PURGE").unwrap())],
            "other"
        );
        assert_eq!(METHODS[method_index(&Method::PATCH)], "PATCH");
    }
}
