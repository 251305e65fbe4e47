//! Prometheus metrics: one registry for the process, and label handles resolved when a
//! config is loaded so that counting on the request path is an atomic add, not a label lookup.
//!
//! Label values are bounded: route, upstream and issuer names come from the config, methods
//! from the standard set (others are `other`), statuses from the registered codes. Paths and
//! tokens never become labels.

use std::sync::OnceLock;

use http::{Method, StatusCode};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};

use crate::config::{Auth, Config};

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
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
            Box::new(auth_decisions.clone()),
            Box::new(upstream_duration.clone()),
            Box::new(upstream_errors.clone()),
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
        }
    }

    /// Resolves the handles one config needs: one set per route (plus `_none`) and upstream.
    pub fn handles(&self, config: &Config) -> Handles {
        // Only the series a route can produce: an anonymous route never lacks a token, a
        // protected one is never anonymous, and `_none` decides nothing.
        let decision = |route: &str, result: &str, relevant: bool| {
            if relevant {
                self.auth_decisions
                    .with_label_values(&[route, NO_ROUTE, result])
            } else {
                IntCounter::new("tokengate_unexported", "never registered")
                    .expect("metric definition is valid")
            }
        };
        let route = |name: &str, auth: Option<&Auth>| RouteMetrics {
            name: name.to_owned(),
            duration: self.request_duration.with_label_values(&[name]),
            anonymous: decision(name, "anonymous", auth == Some(&Auth::Anonymous)),
            missing_token: decision(
                name,
                "missing_token",
                matches!(auth, Some(Auth::Required(_))),
            ),
            invalid_token: decision(
                name,
                "invalid_token",
                matches!(auth, Some(Auth::Required(_))),
            ),
            statuses: std::array::from_fn(|_| StatusCounters::new()),
            requests: self.requests.clone(),
        };
        let mut routes: Vec<RouteMetrics> = config
            .routes
            .iter()
            .map(|r| route(&r.name, Some(&r.auth)))
            .collect();
        routes.push(route(NO_ROUTE, None));
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
        Handles { routes, upstreams }
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
    pub anonymous: IntCounter,
    pub missing_token: IntCounter,
    pub invalid_token: IntCounter,
    statuses: [StatusCounters; METHODS.len()],
    requests: IntCounterVec,
}

impl RouteMetrics {
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
    fn unusual_methods_are_labelled_other() {
        assert_eq!(
            METHODS[method_index(&Method::from_bytes(b"PURGE").unwrap())],
            "other"
        );
        assert_eq!(METHODS[method_index(&Method::PATCH)], "PATCH");
    }
}
