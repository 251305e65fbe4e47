//! Raw YAML mirror -> runtime `Config`: ranges, parsing of addresses and URLs, and the
//! cross-references between routes, upstreams and issuers.
//!
//! Every error names the file, the line where known, the field path and a fix.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use http::Method;
use http::header::HeaderName;
use http::uri::{Scheme, Uri};
use ipnet::IpNet;
use serde_saphyr::{Location, Spanned};

use super::raw::{
    RawAuth, RawAuthRules, RawClaimValue, RawConfig, RawForward, RawIssuer, RawMatch,
    RawRevocation, RawRoute, RawServer, RawUpstream,
};
use super::*;
use crate::routing::path::normalise_path;

/// Algorithms a JWKS issuer may allow (asymmetric only: RFC 8725 §3.1).
const ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// Headers a `claims_to_headers` entry may not set: they frame the message or are ours.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "authorization",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "proxy-authorization",
    "x-request-id",
    "forwarded",
];

struct Ctx<'a> {
    file: &'a Path,
}

impl Ctx<'_> {
    fn err(
        &self,
        at: Location,
        field: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_owned(),
            line: (at != Location::UNKNOWN).then(|| at.line()),
            field: field.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    /// Paths in the config are relative to the config file's directory.
    fn resolve(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.file.parent().unwrap_or(Path::new(".")).join(path)
        }
    }
}

pub(super) fn validate(file: &Path, raw: RawConfig) -> Result<Config, ConfigError> {
    let cx = Ctx { file };
    let server = server(&cx, raw.server)?;
    let admin = Admin {
        listen: socket_addr(&cx, &raw.admin.listen, "admin.listen")?,
    };
    if admin.listen == server.listen && admin.listen.port() != 0 {
        return Err(cx.err(
            raw.admin.listen.referenced,
            "admin.listen",
            format!("{} is also server.listen", admin.listen),
            "give the admin endpoints their own port, e.g. 127.0.0.1:9090",
        ));
    }

    let mut issuers: Vec<Issuer> = Vec::with_capacity(raw.issuers.len());
    for (i, spanned) in raw.issuers.into_iter().enumerate() {
        let at = spanned.referenced;
        let issuer = issuer(&cx, at, i, spanned.value)?;
        if let Some(prev) = issuers.iter().find(|p| p.name == issuer.name) {
            return Err(cx.err(
                at,
                format!("issuers[{i}].name"),
                format!("issuer name `{}` is used twice", prev.name),
                "give every issuer its own name",
            ));
        }
        if let Some(prev) = issuers.iter().find(|p| p.issuer == issuer.issuer) {
            return Err(cx.err(
                at,
                format!("issuers[{i}].issuer"),
                format!(
                    "`{}` is already the issuer of `{}`; a token's iss must select one issuer",
                    issuer.issuer, prev.name
                ),
                "merge the two entries (list both audiences in one) or remove one",
            ));
        }
        issuers.push(issuer);
    }

    let revocation = raw
        .revocation
        .map(|r| revocation(&cx, r.referenced, r.value))
        .transpose()?;

    let mut upstreams = Vec::with_capacity(raw.upstreams.len());
    for (name, spanned) in raw.upstreams {
        upstreams.push(upstream(&cx, spanned.referenced, name, spanned.value)?);
    }

    let mut routes: Vec<Route> = Vec::with_capacity(raw.routes.len());
    for (i, spanned) in raw.routes.into_iter().enumerate() {
        let at = spanned.referenced;
        let route = route(&cx, at, i, spanned.value, &upstreams, &issuers)?;
        if routes.iter().any(|r| r.name == route.name) {
            return Err(cx.err(
                at,
                format!("routes[{i}].name"),
                format!("route name `{}` is used twice", route.name),
                "give every route its own name: it labels metrics and logs",
            ));
        }
        routes.push(route);
    }
    if routes.is_empty() {
        return Err(cx.err(
            Location::UNKNOWN,
            "routes",
            "no routes are configured, so every request would get 404",
            "add at least one entry under `routes:`",
        ));
    }

    Ok(Config {
        path: file.to_owned(),
        server,
        admin,
        issuers,
        revocation,
        upstreams,
        routes,
    })
}

fn server(cx: &Ctx, raw: RawServer) -> Result<Server, ConfigError> {
    let listen = socket_addr(cx, &raw.listen, "server.listen")?;
    let tls = raw.tls.map(|t| TlsFiles {
        cert: cx.resolve(&t.cert),
        key: cx.resolve(&t.key),
    });
    if let Some(url) = &raw.resource_metadata {
        if !url.value.starts_with("https://") && !url.value.starts_with("http://") {
            return Err(cx.err(
                url.referenced,
                "server.resource_metadata",
                format!("`{}` is not an absolute URL", url.value),
                "write the full URL of the metadata document, e.g. \
                 https://api.example.com/.well-known/oauth-protected-resource",
            ));
        }
        if url.value.contains(['"', '\\']) || url.value.chars().any(|c| c.is_control()) {
            return Err(cx.err(
                url.referenced,
                "server.resource_metadata",
                "the URL contains a quote, backslash or control character",
                "percent-encode those characters",
            ));
        }
    }
    let max_header_bytes = raw.max_header_bytes.value;
    if !(8_192..=1_048_576).contains(&max_header_bytes) {
        return Err(cx.err(
            raw.max_header_bytes.referenced,
            "server.max_header_bytes",
            format!("{max_header_bytes} is outside 8192..=1048576"),
            "use a value between 8192 and 1048576 (16384 is a good default)",
        ));
    }
    if raw.max_connections.value == 0 {
        return Err(cx.err(
            raw.max_connections.referenced,
            "server.max_connections",
            "0 would refuse every connection",
            "set a positive limit, e.g. 10000",
        ));
    }
    for (name, value) in [
        ("server.header_read_timeout", raw.header_read_timeout),
        ("server.idle_timeout", raw.idle_timeout),
    ] {
        if value.0.is_zero() {
            return Err(cx.err(
                Location::UNKNOWN,
                name,
                "a zero timeout would cut every connection off at once",
                "use a positive duration, e.g. 10s",
            ));
        }
    }
    let mut trusted_proxies = Vec::with_capacity(raw.trusted_proxies.len());
    for (i, cidr) in raw.trusted_proxies.iter().enumerate() {
        let net = cidr
            .value
            .parse::<IpNet>()
            .or_else(|_| cidr.value.parse::<std::net::IpAddr>().map(IpNet::from))
            .map_err(|_| {
                cx.err(
                    cidr.referenced,
                    format!("server.trusted_proxies[{i}]"),
                    format!("`{}` is not an IP address or CIDR block", cidr.value),
                    "write it like 10.0.0.0/8, 192.168.1.7 or fd00::/8",
                )
            })?;
        trusted_proxies.push(net.trunc());
    }
    Ok(Server {
        listen,
        tls,
        shutdown_grace: raw.shutdown_grace.0,
        resource_metadata: raw.resource_metadata.map(|s| s.value),
        max_header_bytes: max_header_bytes as usize,
        header_read_timeout: raw.header_read_timeout.0,
        idle_timeout: raw.idle_timeout.0,
        max_connections: usize::try_from(raw.max_connections.value).unwrap_or(usize::MAX),
        max_body_bytes: (raw.max_body_bytes > 0).then_some(raw.max_body_bytes),
        trusted_proxies,
    })
}

fn socket_addr(cx: &Ctx, raw: &Spanned<String>, field: &str) -> Result<SocketAddr, ConfigError> {
    raw.value.parse().map_err(|_| {
        cx.err(
            raw.referenced,
            field,
            format!("`{}` is not an IP address with a port", raw.value),
            "write it like 0.0.0.0:8080, 127.0.0.1:9090 or [::]:8080",
        )
    })
}

fn issuer(cx: &Ctx, at: Location, i: usize, raw: RawIssuer) -> Result<Issuer, ConfigError> {
    let field = |name: &str| format!("issuers[{i}].{name}");
    if raw.name.is_empty() || raw.name == "_none" {
        return Err(cx.err(
            at,
            field("name"),
            format!("`{}` cannot name an issuer", raw.name),
            "use a short label such as `corp`; it appears in metrics and logs",
        ));
    }
    if raw.issuer.is_empty() {
        return Err(cx.err(
            at,
            field("issuer"),
            "the issuer is empty",
            "write the exact `iss` value your identity provider puts in tokens",
        ));
    }
    if raw.audiences.is_empty() || raw.audiences.iter().any(String::is_empty) {
        return Err(cx.err(
            at,
            field("audiences"),
            "no audience is configured, so tokens minted for other services would pass",
            "list the `aud` values of this service, e.g. audiences: [orders-api]",
        ));
    }
    let source = match (raw.jwks.url, raw.jwks.file) {
        (Some(url), None) => {
            let ok = url
                .parse::<Uri>()
                .ok()
                .filter(|u| u.scheme() == Some(&Scheme::HTTPS) || u.scheme() == Some(&Scheme::HTTP))
                .filter(|u| u.authority().is_some());
            if ok.is_none() {
                return Err(cx.err(
                    at,
                    field("jwks.url"),
                    format!("`{url}` is not an http(s) URL"),
                    "write the full URL of the JWKS document, \
                     e.g. https://idp.example.com/.well-known/jwks.json",
                ));
            }
            JwksSource::Url(url)
        }
        (None, Some(file)) => JwksSource::File(cx.resolve(&file)),
        _ => {
            return Err(cx.err(
                at,
                field("jwks"),
                "exactly one of `url` and `file` must be set",
                "give either jwks.url (fetched and refreshed) or jwks.file (watched)",
            ));
        }
    };
    if raw.jwks.refresh_interval.0.is_zero() || raw.jwks.fetch_timeout.0.is_zero() {
        return Err(cx.err(
            at,
            field("jwks"),
            "refresh_interval and fetch_timeout must be positive",
            "use durations such as refresh_interval: 5m, fetch_timeout: 2s",
        ));
    }
    for alg in &raw.algorithms {
        if !ALGORITHMS.contains(&alg.as_str()) {
            let why = if alg.eq_ignore_ascii_case("none")
                || alg.to_ascii_uppercase().starts_with("HS")
            {
                format!(
                    "`{alg}` is never accepted: a JWKS issuer signs with a private key (RFC 8725 §3.1)"
                )
            } else {
                format!("`{alg}` is not a supported algorithm")
            };
            return Err(cx.err(
                at,
                field("algorithms"),
                why,
                format!("choose from {}", ALGORITHMS.join(", ")),
            ));
        }
    }
    let scopes_claim = ClaimPath::new(&raw.scopes_claim);
    if !scopes_claim.is_well_formed() {
        return Err(cx.err(
            at,
            field("scopes_claim"),
            format!("`{}` is not a claim path", raw.scopes_claim),
            "use `scope`, `scp`, or a dotted path like realm_access.roles",
        ));
    }
    Ok(Issuer {
        name: raw.name,
        issuer: raw.issuer,
        audiences: raw.audiences,
        jwks: Jwks {
            source,
            refresh_interval: raw.jwks.refresh_interval.0,
            min_refresh_interval: raw.jwks.min_refresh_interval.0,
            fetch_timeout: raw.jwks.fetch_timeout.0,
            max_stale: (!raw.jwks.max_stale.0.is_zero()).then_some(raw.jwks.max_stale.0),
            cache_dir: raw.jwks.cache_dir.map(|d| cx.resolve(&d)),
        },
        algorithms: raw.algorithms,
        leeway: raw.leeway.0,
        scopes_claim,
    })
}

fn revocation(cx: &Ctx, at: Location, raw: RawRevocation) -> Result<Revocation, ConfigError> {
    let mut sources = Vec::with_capacity(raw.sources.len());
    for (i, source) in raw.sources.into_iter().enumerate() {
        sources.push(match (source.file, source.url) {
            (Some(file), None) => RevocationSource::File(cx.resolve(&file)),
            (None, Some(url)) => {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(cx.err(
                        at,
                        format!("revocation.sources[{i}].url"),
                        format!("`{url}` is not an http(s) URL"),
                        "write the full URL of the revocation list",
                    ));
                }
                RevocationSource::Url {
                    url,
                    refresh_interval: source.refresh_interval.0,
                }
            }
            _ => {
                return Err(cx.err(
                    at,
                    format!("revocation.sources[{i}]"),
                    "exactly one of `file` and `url` must be set",
                    "write `- file: PATH` or `- url: URL` for each source",
                ));
            }
        });
    }
    if raw.expected_entries == 0 {
        return Err(cx.err(
            at,
            "revocation.expected_entries",
            "the bloom filter cannot be sized for 0 entries",
            "give the number of revocations you expect, e.g. 1000000",
        ));
    }
    if !(raw.false_positive_rate > 0.0 && raw.false_positive_rate < 1.0) {
        return Err(cx.err(
            at,
            "revocation.false_positive_rate",
            format!("{} is not between 0 and 1", raw.false_positive_rate),
            "use a small probability such as 0.0001",
        ));
    }
    Ok(Revocation {
        sources,
        expected_entries: raw.expected_entries,
        false_positive_rate: raw.false_positive_rate,
    })
}

fn upstream(
    cx: &Ctx,
    at: Location,
    name: String,
    raw: RawUpstream,
) -> Result<Upstream, ConfigError> {
    let field = |f: &str| format!("upstreams.{name}.{f}");
    if raw.endpoints.is_empty() {
        return Err(cx.err(
            at,
            field("endpoints"),
            "no endpoints are listed",
            "list at least one, e.g. endpoints: [\"http://127.0.0.1:9000\"]",
        ));
    }
    let mut endpoints = Vec::with_capacity(raw.endpoints.len());
    for (i, text) in raw.endpoints.iter().enumerate() {
        let bad = |problem: String| {
            cx.err(
                at,
                format!("upstreams.{name}.endpoints[{i}]"),
                problem,
                "write scheme, host and port only, e.g. http://127.0.0.1:9000",
            )
        };
        let uri: Uri = text
            .parse()
            .map_err(|_| bad(format!("`{text}` is not a URL")))?;
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(bad(format!("`{text}` needs a scheme and a host")));
        };
        if *scheme != Scheme::HTTP && *scheme != Scheme::HTTPS {
            return Err(bad(format!("`{text}`: the scheme must be http or https")));
        }
        if uri.path() != "/" || uri.query().is_some() || authority.as_str().contains('@') {
            return Err(bad(format!(
                "`{text}` has a path, query or user info; the request's own path is forwarded"
            )));
        }
        endpoints.push(Endpoint {
            scheme: scheme.clone(),
            authority: authority.clone(),
        });
    }
    if raw.connect_timeout.0.is_zero() || raw.request_timeout.0.is_zero() {
        return Err(cx.err(
            at,
            field("connect_timeout"),
            "connect_timeout and request_timeout must be positive",
            "use durations such as connect_timeout: 2s, request_timeout: 30s",
        ));
    }
    Ok(Upstream {
        name,
        endpoints,
        connect_timeout: raw.connect_timeout.0,
        request_timeout: raw.request_timeout.0,
    })
}

fn route(
    cx: &Ctx,
    at: Location,
    i: usize,
    raw: RawRoute,
    upstreams: &[Upstream],
    issuers: &[Issuer],
) -> Result<Route, ConfigError> {
    let field = |f: &str| format!("routes[{i}].{f}");
    if raw.name.is_empty() || raw.name == "_none" {
        return Err(cx.err(
            at,
            field("name"),
            format!("`{}` cannot name a route", raw.name),
            "use a short label such as `orders-read`; it appears in metrics and logs",
        ));
    }
    let name = raw.name;
    let (host, path, methods) = route_match(cx, at, i, &name, raw.matcher)?;
    let upstream = upstreams
        .iter()
        .position(|u| u.name == raw.upstream)
        .ok_or_else(|| {
            let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
            cx.err(
                at,
                field("upstream"),
                format!(
                    "route `{name}` names upstream `{}`, which is not defined (defined: {})",
                    raw.upstream,
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
                format!(
                    "add `{}` under `upstreams:` or name a defined one",
                    raw.upstream
                ),
            )
        })?;
    let auth = match raw.auth {
        RawAuth::None => Auth::Anonymous,
        RawAuth::AnyIssuer => Auth::Required(AuthRules::default()),
        RawAuth::Rules(rules) => Auth::Required(auth_rules(cx, at, i, &name, rules, issuers)?),
    };
    if matches!(auth, Auth::Required(_)) && issuers.is_empty() {
        return Err(cx.err(
            at,
            field("auth"),
            format!("route `{name}` needs a token, but no issuers are configured"),
            "add an entry under `issuers:`, or write `auth: none` to make the route anonymous",
        ));
    }
    let forward = forward(cx, at, i, raw.forward)?;
    Ok(Route {
        name,
        host,
        path,
        methods,
        upstream,
        auth,
        forward,
    })
}

type RouteMatch = (Option<String>, PathMatch, Option<Vec<Method>>);

fn route_match(
    cx: &Ctx,
    at: Location,
    i: usize,
    name: &str,
    raw: RawMatch,
) -> Result<RouteMatch, ConfigError> {
    let field = |f: &str| format!("routes[{i}].match.{f}");
    let host = match raw.host {
        None => None,
        Some(h) => {
            let lower = h.to_ascii_lowercase();
            let valid = !lower.is_empty()
                && lower
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !valid {
                return Err(cx.err(
                    at,
                    field("host"),
                    format!("`{h}` is not a host name (ports are ignored when matching)"),
                    "write the bare host, e.g. api.example.com",
                ));
            }
            Some(lower.trim_end_matches('.').to_owned())
        }
    };
    let (text, exact) = match (raw.path, raw.path_prefix) {
        (Some(p), None) => (p, true),
        (None, Some(p)) => (p, false),
        _ => {
            return Err(cx.err(
                at,
                field("path"),
                format!("route `{name}` must set exactly one of `path` and `path_prefix`"),
                "use `path: /exact` or `path_prefix: /segment` (`path_prefix: /` matches all)",
            ));
        }
    };
    let which = if exact { "path" } else { "path_prefix" };
    let normal = match normalise_path(&text) {
        Ok(n) if n == text.as_str() => n.into_owned(),
        Ok(n) => {
            return Err(cx.err(
                at,
                field(which),
                format!("`{text}` is not in normal form; requests are matched on `{n}`"),
                format!("write `{n}`"),
            ));
        }
        Err(e) => {
            return Err(cx.err(
                at,
                field(which),
                format!("`{text}`: {e}"),
                "write an absolute path such as /orders",
            ));
        }
    };
    let path = PathMatch::new(normal, exact);
    let methods = match raw.methods {
        None => None,
        Some(list) if list.is_empty() => {
            return Err(cx.err(
                at,
                field("methods"),
                "an empty method list would match nothing",
                "list methods such as [GET, HEAD], or remove `methods` to match all",
            ));
        }
        Some(list) => {
            let mut methods = Vec::with_capacity(list.len());
            for m in list {
                let method =
                    Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| {
                        cx.err(
                            at,
                            field("methods"),
                            format!("`{m}` is not an HTTP method"),
                            "use names such as GET, HEAD, POST, PUT, PATCH, DELETE",
                        )
                    })?;
                methods.push(method);
            }
            Some(methods)
        }
    };
    Ok((host, path, methods))
}

fn auth_rules(
    cx: &Ctx,
    at: Location,
    i: usize,
    name: &str,
    raw: RawAuthRules,
    issuers: &[Issuer],
) -> Result<AuthRules, ConfigError> {
    let allowed = match raw.issuers {
        None => None,
        Some(list) => {
            if list.is_empty() {
                return Err(cx.err(
                    at,
                    format!("routes[{i}].auth.issuers"),
                    "an empty issuer list would refuse every token",
                    "list issuer names, remove `issuers` to allow any, or write `auth: none`",
                ));
            }
            let mut indices = Vec::with_capacity(list.len());
            for wanted in list {
                let index = issuers.iter().position(|x| x.name == wanted).ok_or_else(|| {
                    let known: Vec<&str> = issuers.iter().map(|x| x.name.as_str()).collect();
                    cx.err(
                        at,
                        format!("routes[{i}].auth.issuers"),
                        format!(
                            "route `{name}` names issuer `{wanted}`, which is not defined (defined: {})",
                            if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                        ),
                        format!("add `{wanted}` under `issuers:` or name a defined one"),
                    )
                })?;
                indices.push(index);
            }
            Some(indices)
        }
    };
    for (list, which) in [
        (&raw.scopes.all_of, "all_of"),
        (&raw.scopes.any_of, "any_of"),
    ] {
        if list.iter().any(|s| {
            s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == '"' || c == '\\')
        }) {
            return Err(cx.err(
                at,
                format!("routes[{i}].auth.scopes.{which}"),
                "a scope is empty or contains a space, quote or backslash",
                "list each scope as its own item, e.g. [orders.read, orders.write]",
            ));
        }
    }
    let claims = raw
        .claims
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                RawClaimValue::Bool(b) => ClaimValue::Bool(b),
                RawClaimValue::Integer(n) => ClaimValue::Integer(n),
                RawClaimValue::String(s) => ClaimValue::String(s),
            };
            (ClaimPath::new(&k), v)
        })
        .collect();
    Ok(AuthRules {
        issuers: allowed,
        all_of: raw.scopes.all_of,
        any_of: raw.scopes.any_of,
        claims,
    })
}

fn forward(cx: &Ctx, at: Location, i: usize, raw: RawForward) -> Result<Forward, ConfigError> {
    let mut claims_to_headers = Vec::with_capacity(raw.claims_to_headers.len());
    let mut seen = HashSet::new();
    for (claim, header) in raw.claims_to_headers {
        let field = format!("routes[{i}].forward.claims_to_headers.{claim}");
        let name = HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
            cx.err(
                at,
                &field,
                format!("`{header}` is not a valid header name"),
                "use letters, digits and dashes, e.g. X-Auth-Subject",
            )
        })?;
        let lower = name.as_str();
        if RESERVED_HEADERS.contains(&lower) || lower.starts_with("x-forwarded-") {
            return Err(cx.err(
                at,
                &field,
                format!("`{header}` is managed by the gateway and cannot carry a claim"),
                "pick an application header such as X-Auth-Subject",
            ));
        }
        if !seen.insert(lower.replace('_', "-")) {
            return Err(cx.err(
                at,
                &field,
                format!("header `{header}` is set from two claims"),
                "map each header from one claim",
            ));
        }
        claims_to_headers.push((ClaimPath::new(&claim), name));
    }
    Ok(Forward {
        claims_to_headers,
        strip_authorization: raw.strip_authorization,
    })
}

/// Checks that every file the config points at exists and can be read: TLS certificate and
/// key, JWKS files, revocation files, and that cache directories are directories.
pub fn check_referenced_files(config: &Config) -> Result<(), ConfigError> {
    let cx = Ctx { file: &config.path };
    let readable = |path: &Path, field: String| -> Result<(), ConfigError> {
        std::fs::File::open(path)
            .and_then(|f| f.metadata())
            .and_then(|m| {
                if m.is_file() {
                    Ok(())
                } else {
                    Err(std::io::Error::other("not a regular file"))
                }
            })
            .map_err(|e| {
                cx.err(
                    Location::UNKNOWN,
                    field,
                    format!("cannot read `{}`: {e}", path.display()),
                    "fix the path (relative paths start at the config file's directory) or the file's permissions",
                )
            })
    };
    if let Some(tls) = &config.server.tls {
        readable(&tls.cert, "server.tls.cert".into())?;
        readable(&tls.key, "server.tls.key".into())?;
    }
    for (i, issuer) in config.issuers.iter().enumerate() {
        if let JwksSource::File(path) = &issuer.jwks.source {
            readable(path, format!("issuers[{i}].jwks.file"))?;
        }
        if let Some(dir) = &issuer.jwks.cache_dir
            && dir.exists()
            && !dir.is_dir()
        {
            return Err(cx.err(
                Location::UNKNOWN,
                format!("issuers[{i}].jwks.cache_dir"),
                format!("`{}` exists and is not a directory", dir.display()),
                "point cache_dir at a directory the gateway may write to",
            ));
        }
    }
    if let Some(revocation) = &config.revocation {
        for (i, source) in revocation.sources.iter().enumerate() {
            if let RevocationSource::File(path) = source {
                readable(path, format!("revocation.sources[{i}].file"))?;
            }
        }
    }
    Ok(())
}
