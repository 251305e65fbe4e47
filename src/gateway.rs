//! The life of one request, one function per phase:
//!
//! 1. `check_head`: one Host, one Authorization at most.
//! 2. `normalise_path`: the canonical path routes are matched on and upstreams receive.
//! 3. `RouteTable::find`: first matching route, else 404.
//! 4. `authenticate`: the route's auth rules.
//! 5. `forward`: headers rewritten, request streamed to the upstream.
//! 6. `finish`: `x-request-id`, metrics, one access-log line.
//!
//! The snapshot is loaded once, at the start, and used to the end.
//!
//! The phases that await are written as functions returning an `async move` block rather than
//! as `async fn`s, here and on the way to the upstream (`proxy`). An `async fn`'s future keeps
//! its arguments and, beside them, the locals they are moved into on the first poll
//! (rust-lang/rust#62958): the request, 264 bytes, twice at every level. The block keeps it
//! once, and the request's future is about a quarter smaller and copied less
//! (benches/load/FINDINGS.md, "The floor").

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, HOST, HeaderValue, TE};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{Either, Full, Limited};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use crate::auth::verify::Verified;
use crate::auth::{self, Decision};
use crate::config::Route;
use crate::metrics::RouteMetrics;
use crate::proxy;
use crate::proxy::headers::{self, ClientSide, X_REQUEST_ID};
use crate::proxy::upgrade::{self, Tunnels};
use crate::reject::Rejection;
use crate::routing::path::normalise_path;
use crate::routing::{HostError, request_host};
use crate::snapshot::{Snapshot, State};

/// Bodies the gateway answers with: its own (rejections) or the upstream's, streamed.
pub type ResponseBody = Either<Full<Bytes>, proxy::Body>;

/// What a request knows about the connection it came on.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub peer: SocketAddr,
    /// The peer's address as a header value (X-Forwarded-For), made once per connection.
    pub peer_header: HeaderValue,
    pub tls: bool,
}

impl ConnectionInfo {
    pub fn new(peer: SocketAddr, tls: bool) -> Self {
        let peer_header = HeaderValue::try_from(peer.ip().to_string())
            .expect("an IP address is a valid header value");
        Self {
            peer,
            peer_header,
            tls,
        }
    }
}

/// Handles one request end to end. Never fails: every failure is a response.
#[expect(
    clippy::manual_async_fn,
    reason = "an `async fn` would hold the request twice; see `gateway`"
)]
pub fn handle(
    state: &State,
    conn: &ConnectionInfo,
    request: Request<Incoming>,
) -> impl Future<Output = Response<ResponseBody>> {
    async move {
        let started = Instant::now();
        let snapshot = state.snapshot.load_full();
        let request_id = headers::request_id(request.headers());
        let method = request.method().clone();
        let mut log = AccessLog {
            enabled: tracing::enabled!(target: "tokengate::access", tracing::Level::INFO),
            ..AccessLog::default()
        };

        let cx = Context {
            snapshot: &snapshot,
            conn,
            request_id: &request_id,
            tunnels: &state.tunnels,
        };
        let outcome = route_and_forward(&cx, request, &mut log).await;
        let mut response = match outcome {
            Ok(response) => response.map(Either::Right),
            Err(rejection) => rejection
                .into_response(snapshot.config.server.resource_metadata.as_deref())
                .map(Either::Left),
        };
        response
            .headers_mut()
            .insert(X_REQUEST_ID.clone(), request_id.clone());
        finish(&snapshot, &method, &response, started, &request_id, &log);
        response
    }
}

/// What the access log line says beyond method, status and duration.
#[derive(Default)]
struct AccessLog {
    enabled: bool,
    route: Option<usize>,
    issuer: Option<usize>,
    path: Option<String>,
}

/// What every phase of one request may need.
struct Context<'a> {
    snapshot: &'a Snapshot,
    conn: &'a ConnectionInfo,
    request_id: &'a HeaderValue,
    tunnels: &'a Arc<Tunnels>,
}

#[expect(
    clippy::manual_async_fn,
    reason = "an `async fn` would hold the request twice; see `gateway`"
)]
fn route_and_forward(
    cx: &Context<'_>,
    request: Request<Incoming>,
    log: &mut AccessLog,
) -> impl Future<Output = Result<Response<proxy::Body>, Rejection>> {
    async move {
        let snapshot = cx.snapshot;
        let host = check_head(&request)?;
        let path = normalise_path(request.uri().path())
            .map_err(|_| Rejection::BadRequest("the request path is not acceptable"))?;
        if log.enabled {
            log.path = Some(path.clone().into_owned());
        }
        let index = snapshot
            .routes
            .find(host, request.method(), &path)
            .ok_or(Rejection::NotFound)?;
        log.route = Some(index);
        let route = &snapshot.config.routes[index];
        let route_metrics = snapshot.metrics.route(Some(index));

        let outcome = auth::authenticate(
            request.headers(),
            route,
            &snapshot.issuers,
            &snapshot.token_cache,
            snapshot.revocations.as_deref(),
            |hit| {
                if hit {
                    snapshot.metrics.cache_hits.inc();
                } else {
                    snapshot.metrics.cache_misses.inc();
                }
            },
        )
        .await;
        route_metrics.decide(outcome.issuer, outcome.label);
        log.issuer = outcome.issuer;
        let decision = outcome.result?;

        let path_and_query = upstream_path(request.uri().path_and_query(), path)?;
        forward(cx, route, &decision, request, path_and_query).await
    }
}

/// RFC 9112 §3.2: several Host headers are refused; so are several Authorization headers,
/// on every route, since a backend might believe a different one than we checked.
fn check_head(request: &Request<Incoming>) -> Result<Option<&str>, Rejection> {
    if request
        .headers()
        .get_all(AUTHORIZATION)
        .iter()
        .nth(1)
        .is_some()
    {
        return Err(Rejection::BadRequest("several Authorization headers"));
    }
    let host = request_host(request.uri(), request.headers()).map_err(|e| match e {
        HostError::Duplicate => Rejection::BadRequest("several Host headers"),
        HostError::Invalid => Rejection::BadRequest("the Host header is not a valid host"),
    })?;
    // RFC 9112 §3.2: an HTTP/1.1 request without Host is refused (HTTP/1.0 may omit it;
    // HTTP/2 carries the authority in the URI).
    if host.is_none()
        && request.version() == Version::HTTP_11
        && !request.headers().contains_key(HOST)
    {
        return Err(Rejection::BadRequest("the request has no Host header"));
    }
    Ok(host)
}

/// The normalised path with the original query, reusing the original when unchanged.
fn upstream_path(
    original: Option<&PathAndQuery>,
    path: Cow<'_, str>,
) -> Result<PathAndQuery, Rejection> {
    match (original, path) {
        (Some(pq), Cow::Borrowed(_)) => Ok(pq.clone()),
        (original, path) => {
            let mut text = path.into_owned();
            if let Some(query) = original.and_then(PathAndQuery::query) {
                text.push('?');
                text.push_str(query);
            }
            PathAndQuery::from_maybe_shared(text)
                .map_err(|_| Rejection::BadRequest("the request path is not acceptable"))
        }
    }
}

#[expect(
    clippy::manual_async_fn,
    reason = "an `async fn` would hold the request twice; see `gateway`"
)]
fn forward(
    cx: &Context<'_>,
    route: &Route,
    decision: &Decision,
    request: Request<Incoming>,
    path_and_query: PathAndQuery,
) -> impl Future<Output = Result<Response<proxy::Body>, Rejection>> {
    async move {
        let (snapshot, conn, request_id) = (cx.snapshot, cx.conn, cx.request_id);
        let server = &snapshot.config.server;
        let (mut parts, body) = request.into_parts();
        // RFC 9110 §10.1.4: TE is hop-by-hop, but `TE: trailers` says the client takes trailers,
        // which gRPC needs the upstream to know.
        let accepts_trailers = parts
            .headers
            .get(TE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
        let client_upgrade = upgrade::is_websocket(&parts)
            .then(|| parts.extensions.remove::<OnUpgrade>())
            .flatten();

        let limit = match server.max_body_bytes {
            Some(max) => {
                let declared = parts
                    .headers
                    .get(CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                if declared.is_some_and(|n| n > max) {
                    return Err(Rejection::PayloadTooLarge);
                }
                usize::try_from(max).unwrap_or(usize::MAX)
            }
            None => usize::MAX,
        };

        // The authority of an absolute-form target (RFC 9112 §3.2.2) or HTTP/2 :authority is
        // the host routing used; the upstream gets it as Host.
        let host = match parts.uri.authority() {
            Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
            None => parts.headers.get(HOST).cloned(),
        };
        let client = ClientSide {
            peer: conn.peer.ip(),
            peer_header: &conn.peer_header,
            trusted: server
                .trusted_proxies
                .iter()
                .any(|net| net.contains(&conn.peer.ip())),
            proto: if conn.tls { "https" } else { "http" },
            host: host.as_ref(),
        };
        headers::rewrite_request(&mut parts.headers, &client, &snapshot.identity_headers);
        if route.forward.strip_authorization {
            parts.headers.remove(AUTHORIZATION);
        }
        if let Decision::Verified(token) = decision {
            set_identity_headers(&mut parts.headers, route, token);
        }
        if let Some(host) = host.clone() {
            parts.headers.insert(HOST, host);
        }
        parts
            .headers
            .insert(X_REQUEST_ID.clone(), request_id.clone());
        if client_upgrade.is_some() {
            upgrade::restore_upgrade_headers(&mut parts.headers);
        }
        if accepts_trailers {
            parts
                .headers
                .insert(TE, HeaderValue::from_static("trailers"));
        }

        let upstream = route.upstream;
        let pool = &snapshot.upstreams[upstream];
        let request = Request::from_parts(parts, Limited::new(body, limit));
        let mut response = pool
            .forward(
                request,
                path_and_query,
                client_upgrade.is_some(),
                &snapshot.metrics.upstreams[upstream],
            )
            .await
            .map_err(|e| e.rejection())?;
        headers::remove_hop_by_hop(response.headers_mut());
        if let Some(client_upgrade) = client_upgrade
            && response.status() == StatusCode::SWITCHING_PROTOCOLS
        {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            upgrade::restore_upgrade_headers(response.headers_mut());
            upgrade::spawn_tunnel(cx.tunnels.clone(), client_upgrade, upstream_upgrade);
        }
        Ok(response)
    }
}

/// `claims_to_headers`: claim values for the upstream (client-sent copies are already gone).
fn set_identity_headers(headers: &mut http::HeaderMap, route: &Route, token: &Verified) {
    for (claim, header) in &route.forward.claims_to_headers {
        let Some(value) = claim.find(token.claims.map()) else {
            continue;
        };
        match HeaderValue::try_from(crate::auth::rules::header_text(value)) {
            Ok(value) => {
                headers.insert(header.clone(), value);
            }
            // A claim with control characters cannot travel in a header; never echo it.
            Err(_) => tracing::debug!(claim = %claim, "claim value not usable as a header"),
        }
    }
}

fn finish(
    snapshot: &Snapshot,
    method: &Method,
    response: &Response<ResponseBody>,
    started: Instant,
    request_id: &HeaderValue,
    log: &AccessLog,
) {
    let elapsed = started.elapsed();
    let route: &RouteMetrics = snapshot.metrics.route(log.route);
    route.count(method, response.status());
    route.duration.observe(elapsed.as_secs_f64());
    if log.enabled {
        let route_config = log.route.map(|i| &snapshot.config.routes[i]);
        tracing::info!(
            target: "tokengate::access",
            request_id = request_id.to_str().unwrap_or(""),
            method = %method,
            path = log.path.as_deref().unwrap_or(""),
            route = route_config.map_or(crate::metrics::NO_ROUTE, |r| r.name.as_str()),
            issuer = log.issuer.map_or("", |i| snapshot.config.issuers[i].name.as_str()),
            upstream = route_config.map_or("", |r| snapshot.config.upstreams[r.upstream].name.as_str()),
            status = response.status().as_u16(),
            duration_ms = %format_args!("{:.3}", elapsed.as_secs_f64() * 1000.0),
        );
    }
}
