//! Header rewriting between client and upstream: hop-by-hop removal (RFC 9110 §7.6.1),
//! `X-Forwarded-*`, identity headers a client must not forge, and `x-request-id`.
//!
//! One pass over the header names finds everything to remove; no allocation unless a header
//! is actually removed.

use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::HeaderMap;
use http::header::{CONNECTION, HeaderName, HeaderValue};
use smallvec::SmallVec;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Hop-by-hop headers, always removed in both directions, and any `Proxy-*` header.
/// A `match`, not a list search: it runs for every header of every request and response.
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection" | "keep-alive" | "te" | "trailer" | "transfer-encoding" | "upgrade"
    ) || name.starts_with("proxy-")
}

/// Removes hop-by-hop headers, the headers `Connection` lists, and any `Proxy-*` header.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    remove_where(headers, |_| false);
}

/// What the request rewrite needs to know about the client connection.
pub struct ClientSide<'a> {
    pub peer: IpAddr,
    /// `peer` as a header value, made once per connection.
    pub peer_header: &'a HeaderValue,
    /// The peer is in `server.trusted_proxies`: its `X-Forwarded-*` are kept and appended to.
    pub trusted: bool,
    pub proto: &'static str,
    /// The host the client asked for (Host header or authority, port included).
    pub host: Option<&'a HeaderValue>,
}

/// Prepares client request headers for the upstream: hop-by-hop and forged identity headers
/// removed, `X-Forwarded-*` set.
///
/// `identity_headers` are the normalised names (lower case, `-` for `_`) of every header any
/// route sets from claims; a client-sent one is removed on every route, anonymous ones too.
pub fn rewrite_request(headers: &mut HeaderMap, client: &ClientSide, identity_headers: &[String]) {
    remove_where(headers, |name| {
        is_identity_header(name, identity_headers)
            || (!client.trusted && (name.starts_with("x-forwarded-") || name == "forwarded"))
    });
    // An untrusted client's X-Forwarded-For is gone already: no lookup for it.
    let forwarded_for = match client.trusted.then(|| headers.get(&X_FORWARDED_FOR)) {
        Some(Some(_)) => {
            // Several X-Forwarded-For lines are one comma-separated list (RFC 9110 §5.3).
            let mut list = String::new();
            for value in headers.get_all(&X_FORWARDED_FOR) {
                if let Ok(v) = value.to_str() {
                    if !list.is_empty() {
                        list.push_str(", ");
                    }
                    list.push_str(v);
                }
            }
            let _ = write!(list, ", {}", client.peer);
            list
        }
        _ => String::new(),
    };
    if forwarded_for.is_empty() {
        headers.insert(X_FORWARDED_FOR.clone(), client.peer_header.clone());
    } else if let Ok(value) = HeaderValue::try_from(forwarded_for) {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    if !(client.trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(client.proto),
        );
    }
    if !(client.trusted && headers.contains_key(&X_FORWARDED_HOST))
        && let Some(host) = client.host
    {
        headers.insert(X_FORWARDED_HOST.clone(), host.clone());
    }
}

/// Removes hop-by-hop headers plus every header for which `extra` is true.
fn remove_where(headers: &mut HeaderMap, extra: impl Fn(&str) -> bool) {
    // On the stack for the usual few (an upstream's `Connection: keep-alive` is one on every
    // response); a long list of doomed headers spills to the heap.
    let mut doomed: SmallVec<[HeaderName; 4]> = SmallVec::new();
    for value in headers.get_all(CONNECTION) {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',') {
            let token = token.trim();
            // The usual tokens name nothing to remove beyond the hop-by-hop headers.
            if token.eq_ignore_ascii_case("keep-alive") || token.eq_ignore_ascii_case("close") {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                doomed.push(name);
            }
        }
    }
    for name in headers.keys() {
        let s = name.as_str();
        if is_hop_by_hop(s) || extra(s) {
            doomed.push(name.clone());
        }
    }
    for name in &doomed {
        headers.remove(name);
    }
}

/// `X_Auth_Subject` and `x-auth-subject` are the same header to many frameworks.
fn is_identity_header(name: &str, identity_headers: &[String]) -> bool {
    identity_headers.iter().any(|wanted| {
        wanted.len() == name.len()
            && wanted
                .bytes()
                .zip(name.bytes())
                .all(|(w, n)| w == n || (n == b'_' && w == b'-'))
    })
}

/// The normalised form `is_identity_header` compares against.
pub fn identity_header_key(name: &HeaderName) -> String {
    name.as_str().replace('_', "-")
}

/// The client's `x-request-id` when it is at most 128 of `[A-Za-z0-9._-]`, else a new one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(value) = headers.get(&X_REQUEST_ID) {
        let bytes = value.as_bytes();
        let acceptable = !bytes.is_empty()
            && bytes.len() <= 128
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if acceptable {
            return value.clone();
        }
    }
    new_request_id()
}

/// A process-unique id: a random per-process prefix and a counter, 32 hex digits.
fn new_request_id() -> HeaderValue {
    // The prefix's 16 digits are written once, when the first id is made.
    static PREFIX: OnceLock<[u8; 16]> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        hex16(
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish(),
        )
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut buf = [0u8; 32];
    buf[..16].copy_from_slice(prefix);
    buf[16..].copy_from_slice(&hex16(n));
    // Owned by one reference-counted allocation: the id is cloned into the upstream request
    // and the response, and a copied slice would take a second allocation on its first clone.
    HeaderValue::from_maybe_shared(Bytes::from_owner(buf))
        .expect("hex digits are a valid header value")
}

/// `word` as 16 lower-case hex digits, most significant first.
fn hex16(word: u64) -> [u8; 16] {
    let mut digits = [0u8; 16];
    for (i, digit) in digits.iter_mut().enumerate() {
        *digit = b"0123456789abcdef"[((word >> ((15 - i) * 4)) & 0xf) as usize];
    }
    digits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_go() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("proxy-foo", "1"),
            ("x-kept", "1"),
        ]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn untrusted_peers_get_their_forwarded_headers_replaced() {
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-port", "1"),
            ("forwarded", "for=6.6.6.6"),
            ("host", "api.example.com"),
        ]);
        let host = h.get("host").cloned();
        let client = ClientSide {
            peer: "10.1.2.3".parse().unwrap(),
            peer_header: &HeaderValue::from_static("10.1.2.3"),
            trusted: false,
            proto: "http",
            host: host.as_ref(),
        };
        rewrite_request(&mut h, &client, &[]);
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        assert!(!h.contains_key("x-forwarded-port"));
        assert!(!h.contains_key("forwarded"));
    }

    #[test]
    fn trusted_peers_are_appended_to() {
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x-forwarded-proto", "https"),
        ]);
        let client = ClientSide {
            peer: "10.0.0.1".parse().unwrap(),
            peer_header: &HeaderValue::from_static("10.0.0.1"),
            trusted: true,
            proto: "http",
            host: None,
        };
        rewrite_request(&mut h, &client, &[]);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn forged_identity_headers_are_removed_whatever_their_spelling() {
        let mut h = map(&[
            ("x-auth-subject", "admin"),
            ("x_auth_subject", "admin"),
            ("x-other", "1"),
        ]);
        let client = ClientSide {
            peer: "127.0.0.1".parse().unwrap(),
            peer_header: &HeaderValue::from_static("127.0.0.1"),
            trusted: false,
            proto: "http",
            host: None,
        };
        rewrite_request(&mut h, &client, &["x-auth-subject".to_owned()]);
        assert!(!h.contains_key("x-auth-subject"));
        assert!(!h.contains_key("x_auth_subject"));
        assert!(h.contains_key("x-other"));
    }

    #[test]
    fn request_ids_are_kept_when_sane_and_replaced_otherwise() {
        let h = map(&[("x-request-id", "abc-123_x.y")]);
        assert_eq!(request_id(&h), "abc-123_x.y");
        let long = "a".repeat(129);
        for bad in [long.as_str(), "has space", "semi;colon", ""] {
            let h = map(&[("x-request-id", bad)]);
            let id = request_id(&h);
            assert_ne!(id, bad);
            assert_eq!(id.len(), 32);
        }
        let a = request_id(&HeaderMap::new());
        let b = request_id(&HeaderMap::new());
        assert_ne!(a, b);
    }
}
