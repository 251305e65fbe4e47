//! Forwarding to upstreams: kept-alive connections per endpoint, round-robin over an
//! upstream's endpoints with passive ejection of endpoints that refuse connections, and the
//! connect and request timeouts that turn into 502 and 504.
//!
//! Plain `http://` requests, the common case, go over our own HTTP/1.1 connection pool
//! (`h1`), which costs no task and no lookup per request. WebSocket upgrades, gRPC and
//! `https://` endpoints use hyper-util's pooled client.
//!
//! `https://` endpoints are verified against the webpki roots plus the system's trust store
//! (which honours `SSL_CERT_FILE` and `SSL_CERT_DIR`), and speak HTTP/2 when ALPN agrees.
//! gRPC requests (`content-type: application/grpc…`) go to `http://` endpoints over HTTP/2
//! with prior knowledge, since gRPC needs HTTP/2 and trailers.
//!
//! Bodies stream both ways; nothing here buffers a whole body.

mod h1;
pub mod headers;
pub mod upgrade;

pub use h1::Body;

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::header::{HOST, HeaderValue};
use http::uri::{PathAndQuery, Scheme, Uri};
use http::{Request, Response, Version};
use http_body_util::{LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::{Endpoint, Upstream};
use crate::metrics::UpstreamMetrics;
use crate::reject::Rejection;

/// The request body sent upstream: the client's, streamed, with `max_body_bytes` enforced.
pub type UpstreamBody = Limited<Incoming>;

/// First ejection of an endpoint that refused a connection; doubled per consecutive failure.
const EJECT_BASE: Duration = Duration::from_secs(2);
const EJECT_MAX: Duration = Duration::from_secs(30);

/// One upstream at runtime: its clients (and so its connection pools) and endpoint health.
pub struct UpstreamPool {
    pub name: String,
    /// What it was built from: an unchanged upstream keeps its pool across reloads.
    pub config: Upstream,
    /// HTTP/1.1, or HTTP/2 when an `https://` endpoint's ALPN agrees.
    client: Client<HttpsConnector<HttpConnector>, UpstreamBody>,
    /// HTTP/2 with prior knowledge, for gRPC to `http://` endpoints.
    h2c: Client<HttpConnector, UpstreamBody>,
    endpoints: Vec<EndpointState>,
    next: AtomicUsize,
    request_timeout: Duration,
}

struct EndpointState {
    endpoint: Endpoint,
    /// HTTP/1.1 connections, for `http://` endpoints.
    h1: Option<Arc<h1::Connections>>,
    /// Milliseconds since `clock_start()` until which the endpoint is skipped; 0 = healthy.
    ejected_until: AtomicU64,
    consecutive_failures: AtomicU32,
}

/// Why forwarding failed, for metrics (`kind`) and the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardError {
    Connect,
    Timeout,
    Protocol,
    BodyTooLarge,
    /// The client's own request body broke off or was malformed (a bad chunk size): the
    /// client's fault, not the upstream's, so neither 502 nor an upstream error.
    ClientBody,
}

impl ForwardError {
    pub fn rejection(self) -> Rejection {
        match self {
            ForwardError::Connect | ForwardError::Protocol => Rejection::BadGateway,
            ForwardError::Timeout => Rejection::GatewayTimeout,
            ForwardError::BodyTooLarge => Rejection::PayloadTooLarge,
            ForwardError::ClientBody => Rejection::BadRequest("the request body could not be read"),
        }
    }
}

impl UpstreamPool {
    pub fn new(upstream: &Upstream) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(upstream.connect_timeout));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        connector.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(upstream_tls().as_ref().clone())
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(connector.clone());
        let builder = || {
            let mut builder = Client::builder(TokioExecutor::new());
            builder
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .pool_idle_timeout(Duration::from_secs(90));
            builder
        };
        Self {
            name: upstream.name.clone(),
            config: upstream.clone(),
            client: builder().build(https),
            h2c: builder().http2_only(true).build(connector.clone()),
            endpoints: upstream
                .endpoints
                .iter()
                .map(|endpoint| EndpointState {
                    endpoint: endpoint.clone(),
                    h1: (endpoint.scheme == Scheme::HTTP).then(|| {
                        let target = Uri::builder()
                            .scheme(Scheme::HTTP)
                            .authority(endpoint.authority.clone())
                            .path_and_query("/")
                            .build()
                            .expect("a validated endpoint makes a URI");
                        Arc::new(h1::Connections::new(
                            connector.clone(),
                            target,
                            upstream.request_timeout,
                        ))
                    }),
                    ejected_until: AtomicU64::new(0),
                    consecutive_failures: AtomicU32::new(0),
                })
                .collect(),
            next: AtomicUsize::new(0),
            request_timeout: upstream.request_timeout,
        }
    }

    /// Sends `request` (headers already rewritten, path already normalised) to one endpoint
    /// and returns the response head with its body still streaming. `upgrade`: the request
    /// is a WebSocket opening handshake (its Upgrade header restored), which goes through
    /// hyper-util's client, whose connections can be handed over to the tunnel.
    #[expect(
        clippy::manual_async_fn,
        reason = "an `async fn` would hold the request twice; see `gateway`"
    )]
    pub fn forward(
        &self,
        mut request: Request<UpstreamBody>,
        path_and_query: PathAndQuery,
        upgrade: bool,
        metrics: &UpstreamMetrics,
    ) -> impl Future<Output = Result<Response<Body>, ForwardError>> {
        async move {
            let index = self.pick();
            let endpoint = &self.endpoints[index];
            let started = Instant::now();
            let grpc = is_grpc(&request);
            let result = match &endpoint.h1 {
                // The common case: HTTP/1.1 to an `http://` endpoint, on our own pool.
                Some(h1) if !grpc && !upgrade => {
                    *request.uri_mut() = Uri::from(path_and_query);
                    *request.version_mut() = Version::HTTP_11;
                    if !request.headers().contains_key(HOST) {
                        let authority = endpoint.endpoint.authority.as_str();
                        if let Ok(host) = HeaderValue::from_str(authority) {
                            request.headers_mut().insert(HOST, host);
                        }
                    }
                    // One clock read for the metric, the deadline and the pool's idle check; the
                    // connection's task keeps the deadline (see `h1`).
                    match h1.send(request, started).await {
                        Ok(response) => Ok(response),
                        Err(h1::SendError::Timeout) => Err(ForwardError::Timeout),
                        Err(h1::SendError::Connect(e)) => {
                            endpoint.eject();
                            Err(classify_connect(e.as_ref()))
                        }
                        Err(h1::SendError::Request(e)) => Err(classify_request(&e)),
                    }
                }
                _ => self
                    .forward_pooled(request, path_and_query, endpoint, grpc)
                    .await
                    .map(|response| response.map(Body::new)),
            };
            match result {
                Ok(response) => {
                    metrics.duration.observe(started.elapsed().as_secs_f64());
                    endpoint.mark_healthy();
                    Ok(response)
                }
                Err(kind) => {
                    match kind {
                        ForwardError::Connect => metrics.connect_errors.inc(),
                        ForwardError::Timeout => metrics.timeouts.inc(),
                        ForwardError::Protocol => metrics.protocol_errors.inc(),
                        ForwardError::BodyTooLarge | ForwardError::ClientBody => {}
                    }
                    Err(kind)
                }
            }
        }
    }

    /// Through hyper-util's client: WebSocket upgrades, gRPC (HTTP/2 with prior knowledge to
    /// `http://`) and `https://` endpoints (HTTP/1.1, or h2 when ALPN agrees).
    async fn forward_pooled(
        &self,
        mut request: Request<UpstreamBody>,
        path_and_query: PathAndQuery,
        endpoint: &EndpointState,
        grpc: bool,
    ) -> Result<Response<Incoming>, ForwardError> {
        let uri = Uri::builder()
            .scheme(endpoint.endpoint.scheme.clone())
            .authority(endpoint.endpoint.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| ForwardError::Protocol)?;
        let h2c = grpc && uri.scheme() == Some(&Scheme::HTTP);
        *request.uri_mut() = uri;
        // gRPC needs HTTP/2 end to end; everything else starts as HTTP/1.1.
        *request.version_mut() = if grpc {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        let sent = if h2c {
            self.h2c.request(request)
        } else {
            self.client.request(request)
        };
        match tokio::time::timeout(self.request_timeout, sent).await {
            Err(_elapsed) => Err(ForwardError::Timeout),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) if e.is_connect() => {
                // Refused or timed out while connecting: out of rotation for a while.
                endpoint.eject();
                Err(classify_connect(&e))
            }
            Ok(Err(e)) => Err(classify_request(&e)),
        }
    }

    /// Round-robin over endpoints not currently ejected; if all are, the one back soonest.
    fn pick(&self) -> usize {
        let n = self.endpoints.len();
        if n == 1 {
            return 0;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut now = None;
        let mut soonest = (u64::MAX, start);
        for k in 0..n {
            let i = (start + k) % n;
            let until = self.endpoints[i].ejected_until.load(Ordering::Relaxed);
            if until == 0 {
                return i;
            }
            let now = *now.get_or_insert_with(now_millis);
            if until <= now {
                return i;
            }
            if until < soonest.0 {
                soonest = (until, i);
            }
        }
        soonest.1
    }
}

impl EndpointState {
    fn eject(&self) {
        let failures = self
            .consecutive_failures
            .fetch_add(1, Ordering::Relaxed)
            .min(8);
        let backoff = EJECT_BASE.saturating_mul(1 << failures).min(EJECT_MAX);
        let until = now_millis() + backoff.as_millis() as u64;
        self.ejected_until.store(until, Ordering::Relaxed);
        tracing::warn!(endpoint = %self.endpoint.authority, backoff_ms = backoff.as_millis() as u64, "upstream endpoint refused a connection; ejected");
    }

    fn mark_healthy(&self) {
        // Only write when something changes: the common case stays a shared cache line.
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            self.ejected_until.store(0, Ordering::Relaxed);
        }
    }
}

fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Trust for `https://` upstreams: the webpki roots and the system's store (with
/// `SSL_CERT_FILE` / `SSL_CERT_DIR`, where a private CA is usually added).
fn upstream_tls() -> &'static Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::debug!("system trust store: {error}");
        }
        let (added, _ignored) = roots.add_parsable_certificates(native.certs);
        tracing::debug!(added, "system CA certificates trusted for https upstreams");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("the aws-lc-rs provider supports TLS 1.2 and 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    })
}

/// A failed connect: 504 when it timed out, 502 otherwise.
fn classify_connect(error: &(dyn std::error::Error + 'static)) -> ForwardError {
    if sources(error).any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
    }) {
        ForwardError::Timeout
    } else {
        ForwardError::Connect
    }
}

/// A failure with the connection made: the client's body over the limit or broken, or a
/// protocol error of the upstream's.
fn classify_request(error: &(dyn std::error::Error + 'static)) -> ForwardError {
    for e in sources(error) {
        if e.is::<LengthLimitError>() {
            return ForwardError::BodyTooLarge;
        }
        // hyper's "error from user's Body stream" caused by an error of the client's
        // `Incoming` body, the only body sent upstream.
        if let Some(hyper) = e.downcast_ref::<hyper::Error>()
            && hyper.is_user()
            && std::error::Error::source(hyper).is_some_and(|cause| cause.is::<hyper::Error>())
        {
            return ForwardError::ClientBody;
        }
    }
    ForwardError::Protocol
}

/// `error` and its chain of sources.
fn sources<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| e.source())
}

fn clock_start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Milliseconds since the process's clock start; never 0, which means "healthy".
fn now_millis() -> u64 {
    millis_since_start(Instant::now())
}

/// `at` in milliseconds since the process's clock start, plus one (so never 0).
fn millis_since_start(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(clock_start()).as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}
