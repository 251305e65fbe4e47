//! Route matching: the first route whose host, methods and path all match wins.
//!
//! Matching runs on the normalised path (see `path`), hosts compare case-insensitively with
//! the port ignored, and a `path_prefix` matches whole segments only. Nothing here allocates.

pub mod path;

use http::header::{HOST, HeaderMap};
use http::{Method, Uri};

use crate::config::{PathMatch, Route};

/// The compiled match rules of every route, in config order.
#[derive(Debug)]
pub struct RouteTable {
    matchers: Vec<Matcher>,
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
}

impl RouteTable {
    pub fn new(routes: &[Route]) -> Self {
        Self {
            matchers: routes
                .iter()
                .map(|r| Matcher {
                    host: r.host.clone(),
                    path: r.path.clone(),
                    methods: r.methods.clone(),
                })
                .collect(),
        }
    }

    /// The index of the first route matching `host` (port already removed), `method` and the
    /// normalised `path`.
    pub fn find(&self, host: Option<&str>, method: &Method, path: &str) -> Option<usize> {
        self.matchers
            .iter()
            .position(|m| m.matches(host, method, path))
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
        Some(authority) => Some(authority.host()),
        None => header.and_then(|h| h.to_str().ok()).map(strip_port),
    };
    Ok(raw.map(|h| h.strip_suffix('.').unwrap_or(h)))
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
    }
}
