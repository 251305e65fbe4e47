//! Route matching: the first route whose host, methods and path all match wins.
//!
//! Matching runs on the normalised path (see `path`), hosts compare case-insensitively with
//! the port ignored, and a `path_prefix` matches whole segments only.
//!
//! Routes are indexed in a trie of path segments, so a lookup walks the request's segments
//! (one hash probe each) instead of scanning every route; the few routes whose path fits are
//! then checked in config order. Nothing here allocates for up to 16 candidates.

pub mod path;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use http::header::{HOST, HeaderMap};
use http::{Method, Uri};

use crate::config::{PathMatch, Route};

/// The compiled match rules of every route, in config order.
#[derive(Debug)]
pub struct RouteTable {
    matchers: Vec<Matcher>,
    root: Node,
}

/// One path segment of the trie: the routes whose prefix ends here, and whose exact path does.
#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node, BuildHasherDefault<Fnv>>,
    prefix: Vec<usize>,
    exact: Vec<usize>,
}

/// FNV-1a: segments are short, and the table's keys come from the config, not from clients.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// The segments of a normalised path: none for `/`.
fn segments(path: &str) -> impl Iterator<Item = &str> {
    let rest = path.strip_prefix('/').unwrap_or(path);
    rest.split('/').filter(move |_| !rest.is_empty())
}

#[derive(Debug)]
struct Matcher {
    host: Option<String>,
    path: PathMatch,
    methods: Option<Vec<Method>>,
}

/// Why a request's host could not be determined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    /// Two or more `Host` headers: a smuggling and cache-poisoning vector (RFC 9112 §3.2).
    Duplicate,
    /// A host that is not an authority (`Host: a b`), or one with userinfo (`user@host`),
    /// which RFC 9110 §4.2.4 says to treat as an error: a lenient upstream might read the
    /// part after `@` as the host that routing did not see.
    Invalid,
}

impl RouteTable {
    pub fn new(routes: &[Route]) -> Self {
        let mut root = Node::default();
        for (index, route) in routes.iter().enumerate() {
            let (path, exact) = match &route.path {
                PathMatch::Exact(p) => (p, true),
                PathMatch::Prefix(p) => (p, false),
            };
            let mut node = &mut root;
            for segment in segments(path) {
                node = node.children.entry(segment.into()).or_default();
            }
            if exact {
                node.exact.push(index);
            } else {
                node.prefix.push(index);
            }
        }
        Self {
            matchers: routes
                .iter()
                .map(|r| Matcher {
                    host: r.host.clone(),
                    path: r.path.clone(),
                    methods: r.methods.clone(),
                })
                .collect(),
            root,
        }
    }

    /// The index of the first route matching `host` (port already removed), `method` and the
    /// normalised `path`.
    pub fn find(&self, host: Option<&str>, method: &Method, path: &str) -> Option<usize> {
        let mut candidates = Candidates::default();
        let mut node = &self.root;
        candidates.extend(&node.prefix);
        let mut walked_all = true;
        for segment in segments(path) {
            match node.children.get(segment) {
                Some(child) => {
                    node = child;
                    candidates.extend(&node.prefix);
                }
                None => {
                    walked_all = false;
                    break;
                }
            }
        }
        if walked_all {
            candidates.extend(&node.exact);
        }
        candidates
            .sorted()
            .iter()
            .copied()
            .find(|&i| self.matchers[i].matches(host, method, path))
    }
}

/// Route indices gathered on the walk; on the stack unless there are many.
#[derive(Default)]
struct Candidates {
    inline: [usize; 16],
    len: usize,
    spill: Vec<usize>,
}

impl Candidates {
    fn extend(&mut self, indices: &[usize]) {
        for &i in indices {
            if self.len < self.inline.len() {
                self.inline[self.len] = i;
                self.len += 1;
            } else {
                self.spill.push(i);
            }
        }
    }

    /// In config order: the first match wins.
    fn sorted(&mut self) -> &[usize] {
        if self.spill.is_empty() {
            self.inline[..self.len].sort_unstable();
            &self.inline[..self.len]
        } else {
            self.spill.extend_from_slice(&self.inline[..self.len]);
            self.spill.sort_unstable();
            &self.spill
        }
    }
}

impl Matcher {
    fn matches(&self, host: Option<&str>, method: &Method, path: &str) -> bool {
        if let Some(wanted) = &self.host {
            match host {
                Some(h) if h.eq_ignore_ascii_case(wanted) => {}
                _ => return false,
            }
        }
        if let Some(methods) = &self.methods
            && !methods.contains(method)
        {
            return false;
        }
        match &self.path {
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => prefix_matches(p, path),
        }
    }
}

/// `/orders` matches `/orders`, `/orders/` and `/orders/1`, never `/ordersx`.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The host a request is for, without port or trailing dot: the authority of an
/// absolute-form target (or HTTP/2 `:authority`) wins over the `Host` header.
pub fn request_host<'a>(
    uri: &'a Uri,
    headers: &'a HeaderMap,
) -> Result<Option<&'a str>, HostError> {
    let mut hosts = headers.get_all(HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(HostError::Duplicate);
    }
    let raw = match uri.authority() {
        Some(authority) if authority.as_str().contains('@') => return Err(HostError::Invalid),
        Some(authority) => Some(authority.host()),
        None => match header {
            None => None,
            Some(value) if !is_authority(value.as_bytes()) => return Err(HostError::Invalid),
            // RFC 9112 §3.2: an empty Host is what a request for a target without one sends.
            Some(value) if value.is_empty() => None,
            Some(value) => value.to_str().ok().map(strip_port),
        },
    };
    Ok(raw.map(|h| h.strip_suffix('.').unwrap_or(h)))
}

/// RFC 3986 `host [ ":" port ]` without userinfo: reg-name characters (unreserved,
/// percent-escapes, sub-delims), an IP literal in brackets, a port of digits.
fn is_authority(value: &[u8]) -> bool {
    let (host, port) = match value.iter().rposition(|&b| b == b':') {
        // A colon inside brackets belongs to an IPv6 literal, not to a port.
        Some(colon) if !value[colon..].contains(&b']') => (&value[..colon], &value[colon + 1..]),
        _ => (value, &[][..]),
    };
    let port_ok = port.iter().all(u8::is_ascii_digit);
    let host_ok = match host {
        [b'[', literal @ .., b']'] => literal
            .iter()
            .all(|&b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.')),
        _ => host.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'%'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                )
        }),
    };
    port_ok && host_ok
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // IPv6 literal: keep the brackets, as `Authority::host` does.
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rfind(':') {
        Some(colon) => &host[..colon],
        None => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Auth, Forward};

    fn route(host: Option<&str>, path: PathMatch, methods: Option<Vec<Method>>) -> Route {
        Route {
            name: "r".into(),
            host: host.map(str::to_owned),
            path,
            methods,
            upstream: 0,
            auth: Auth::Anonymous,
            forward: Forward::default(),
        }
    }

    #[test]
    fn prefixes_match_whole_segments_only() {
        assert!(prefix_matches("/orders", "/orders"));
        assert!(prefix_matches("/orders", "/orders/"));
        assert!(prefix_matches("/orders", "/orders/1"));
        assert!(!prefix_matches("/orders", "/ordersx"));
        assert!(!prefix_matches("/orders", "/order"));
        assert!(prefix_matches("/", "/anything"));
    }

    #[test]
    fn first_match_wins_and_host_and_method_filter() {
        let table = RouteTable::new(&[
            route(
                Some("api.example.com"),
                PathMatch::Prefix("/orders".into()),
                Some(vec![Method::GET]),
            ),
            route(None, PathMatch::Exact("/orders".into()), None),
            route(None, PathMatch::Prefix("/".into()), None),
        ]);
        assert_eq!(
            table.find(Some("API.Example.com"), &Method::GET, "/orders/1"),
            Some(0)
        );
        assert_eq!(table.find(Some("other"), &Method::GET, "/orders"), Some(1));
        assert_eq!(
            table.find(Some("api.example.com"), &Method::POST, "/orders"),
            Some(1)
        );
        assert_eq!(table.find(None, &Method::GET, "/orders/1"), Some(2));
        let strict = RouteTable::new(&[route(None, PathMatch::Exact("/a".into()), None)]);
        assert_eq!(strict.find(None, &Method::GET, "/A"), None);
    }

    use proptest::prelude::*;

    fn linear(routes: &[Route], host: Option<&str>, method: &Method, path: &str) -> Option<usize> {
        routes.iter().position(|r| {
            Matcher {
                host: r.host.clone(),
                path: r.path.clone(),
                methods: r.methods.clone(),
            }
            .matches(host, method, path)
        })
    }

    fn arbitrary_route() -> impl Strategy<Value = Route> {
        let path = prop::collection::vec(prop::sample::select(vec!["a", "b", "ab", ""]), 0..4)
            .prop_map(|segs| format!("/{}", segs.join("/")));
        (
            path,
            any::<bool>(),
            prop::option::of(prop::sample::select(vec!["x.test", "y.test"])),
            any::<bool>(),
        )
            .prop_filter_map("normal paths only", |(p, exact, host, get_only)| {
                let normal = path::normalise_path(&p).ok()?.into_owned();
                let path = PathMatch::new(normal, exact);
                let methods = get_only.then(|| vec![Method::GET]);
                Some(route(host, path, methods))
            })
    }

    proptest! {
        #[test]
        fn the_trie_finds_what_a_scan_in_config_order_finds(
            routes in prop::collection::vec(arbitrary_route(), 1..12),
            request in prop::collection::vec(prop::sample::select(vec!["a", "b", "ab", "c", ""]), 0..5),
            host in prop::option::of(prop::sample::select(vec!["x.test", "y.test"])),
            post in any::<bool>(),
        ) {
            let path = format!("/{}", request.join("/"));
            if let Ok(path) = path::normalise_path(&path) {
                let method = if post { Method::POST } else { Method::GET };
                let table = RouteTable::new(&routes);
                prop_assert_eq!(table.find(host, &method, &path), linear(&routes, host, &method, &path));
            }
        }
    }

    /// The contract in its own words: a prefix's segments are the path's first segments.
    fn under_segment_wise(prefix: &str, path: &str) -> bool {
        let segs = |p: &str| -> Vec<String> {
            if p == "/" {
                Vec::new()
            } else {
                p[1..].split('/').map(str::to_owned).collect()
            }
        };
        let (want, have) = (segs(prefix), segs(path));
        want.len() <= have.len() && want.iter().zip(&have).all(|(a, b)| a == b)
    }

    proptest! {
        /// A request that claims to be under a prefix (it is written as `PREFIX/...`) but
        /// climbs out with dot-segments, encoded or not, matches the prefix only if its
        /// normalised form really is under it, segment by segment.
        #[test]
        fn a_normalised_path_matches_a_prefix_only_when_it_is_under_it(
            prefix in prop::collection::vec(prop::sample::select(vec!["a", "b", "ab", "a.b"]), 0..3),
            tail in prop::collection::vec(prop::sample::select(vec![
                "a", "b", "ab", "..", ".", "%2e%2e", "%2E.", "", "x", "%61", "a.b",
            ]), 0..6),
        ) {
            let prefix = format!("/{}", prefix.join("/"));
            let raw = format!("{}/{}", prefix.trim_end_matches('/'), tail.join("/"));
            let prefix = PathMatch::new(prefix, false);
            let PathMatch::Prefix(prefix) = &prefix else { unreachable!() };
            if let Ok(path) = path::normalise_path(&raw) {
                prop_assert_eq!(
                    prefix_matches(prefix, &path),
                    under_segment_wise(prefix, &path),
                    "prefix {} path {} (from {})", prefix, path, raw
                );
                prop_assert!(!path.split('/').any(|s| s == ".." || s == "."));
                let table = RouteTable::new(&[route(None, PathMatch::Prefix(prefix.clone()), None)]);
                prop_assert_eq!(
                    table.find(None, &Method::GET, &path).is_some(),
                    under_segment_wise(prefix, &path)
                );
            }
        }
    }

    #[test]
    fn host_comes_from_authority_then_header_without_port() {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, "Api.Example.com:8080".parse().unwrap());
        let origin: Uri = "/x".parse().unwrap();
        assert_eq!(request_host(&origin, &headers), Ok(Some("Api.Example.com")));
        let absolute: Uri = "http://other.example:81/x".parse().unwrap();
        assert_eq!(request_host(&absolute, &headers), Ok(Some("other.example")));
        headers.insert(HOST, "[::1]:8080".parse().unwrap());
        assert_eq!(request_host(&origin, &headers), Ok(Some("[::1]")));
        headers.append(HOST, "evil.example".parse().unwrap());
        assert_eq!(request_host(&origin, &headers), Err(HostError::Duplicate));

        for bad in [
            "a b",
            "user@api.example.com",
            "evil@api.example.com:443",
            "a/b",
            "a:b:c",
            "[::1",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(HOST, http::HeaderValue::from_str(bad).unwrap());
            assert_eq!(
                request_host(&origin, &headers),
                Err(HostError::Invalid),
                "{bad}"
            );
        }
        for (good, host) in [
            ("api.example.com:8443", "api.example.com"),
            ("[::1]:80", "[::1]"),
            ("[::1]", "[::1]"),
            ("10.0.0.1", "10.0.0.1"),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(HOST, http::HeaderValue::from_str(good).unwrap());
            assert_eq!(request_host(&origin, &headers), Ok(Some(host)), "{good}");
        }
        let absolute: Uri = "http://user@api.example.com/orders".parse().unwrap();
        assert_eq!(
            request_host(&absolute, &HeaderMap::new()),
            Err(HostError::Invalid)
        );
    }
}
