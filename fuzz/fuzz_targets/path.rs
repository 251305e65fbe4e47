//! Path normalisation and route matching. The input is lines: the last is the request path,
//! the ones before it (at most 8) are route paths, `=` first for an exact match, a prefix
//! otherwise. Checked: the normal form is idempotent and free of everything that could be
//! read as another path upstream, and the route table agrees with a segment-wise reference.

#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;
use tokengate::config::{Auth, Forward, PathMatch, Route};
use tokengate::routing::RouteTable;
use tokengate::routing::path::normalise_path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines: Vec<&str> = text.split('\n').collect();
    let request = lines.pop().unwrap_or_default();
    check_normal_form(request);
    let routes: Vec<Route> = lines.iter().take(8).filter_map(|l| route(l)).collect();
    if routes.is_empty() {
        return;
    }
    let Ok(path) = normalise_path(request) else {
        return;
    };
    let table = RouteTable::new(&routes);
    let found = table.find(None, &Method::GET, &path);
    let expected = routes
        .iter()
        .position(|r| reference_matches(&r.path, &path));
    assert_eq!(found, expected, "routes {routes:?}, path {path:?}");
});

fn route(line: &str) -> Option<Route> {
    let (raw, exact) = match line.strip_prefix('=') {
        Some(p) => (p, true),
        None => (line, false),
    };
    let normal = normalise_path(raw).ok()?.into_owned();
    Some(Route {
        name: "r".into(),
        host: None,
        path: PathMatch::new(normal, exact),
        methods: None,
        upstream: 0,
        auth: Auth::Anonymous,
        forward: Forward::default(),
    })
}

fn check_normal_form(raw: &str) {
    let Ok(once) = normalise_path(raw) else {
        return;
    };
    assert!(once.starts_with('/'));
    let twice = normalise_path(&once).expect("a normal path stays acceptable");
    assert_eq!(once, twice, "not idempotent for {raw:?}");
    assert!(!once.contains("//"), "{once:?}");
    assert!(!once.contains('\\'), "{once:?}");
    let upper = once.to_ascii_uppercase();
    for escape in ["%2F", "%5C", "%00"] {
        assert!(!upper.contains(escape), "{once:?} keeps {escape}");
    }
    assert!(
        !once
            .split('/')
            .any(|s| s == "." || s == ".." || s.starts_with("..;")),
        "{once:?} keeps a dot-segment"
    );
    // Unreserved characters are never left escaped.
    let bytes = once.as_bytes();
    for (i, _) in once.match_indices('%') {
        let hex = bytes.get(i + 1..i + 3).expect("escapes are complete");
        let value = u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap();
        assert!(
            !(value.is_ascii_alphanumeric() || b"-._~".contains(&value)),
            "{once:?} keeps an unreserved escape"
        );
    }
}

/// Segments of a normal path: none for `/`.
fn segments(path: &str) -> Vec<&str> {
    if path == "/" {
        Vec::new()
    } else {
        path[1..].split('/').collect()
    }
}

/// An independent statement of the contract: an exact path is equal; a prefix's segments
/// are the first segments of the path.
fn reference_matches(rule: &PathMatch, path: &str) -> bool {
    match rule {
        PathMatch::Exact(p) => p == path,
        PathMatch::Prefix(p) => {
            let (want, have) = (segments(p), segments(path));
            want.len() <= have.len() && want.iter().zip(&have).all(|(a, b)| a == b)
        }
    }
}
