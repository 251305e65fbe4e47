//! Path normalisation (RFC 3986 §6.2.2): routes are matched on, and upstreams receive, one
//! canonical form of the request path.
//!
//! Without it `/public/../admin` or `/%61dmin` could reach a protected route through a public
//! one. Unreserved percent-escapes are decoded, other escapes kept (hex upper-cased), `//`
//! collapsed and dot-segments resolved. Refused outright: an encoded `/`, `\` or NUL (the
//! upstream may decode them into separators we did not see), a raw `\`, a `..` that climbs
//! above the root, and `..;`-style dot-segments with parameters (servlet containers resolve
//! them as `..`). The common case, an already-normal path, is returned borrowed.

use std::borrow::Cow;

/// Why a request path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path must start with `/`")]
    NotAbsolute,
    #[error("the path contains a backslash")]
    Backslash,
    #[error("the path contains an encoded `/`, `\\` or NUL")]
    EncodedSeparator,
    #[error("the path contains a malformed percent-escape")]
    BadEscape,
    #[error("the path climbs above `/`")]
    ClimbsAboveRoot,
    #[error("the path has a dot-segment with parameters")]
    DotSegmentParameters,
}

/// Returns the canonical form of `path` (no query), or why it is refused.
pub fn normalise_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(bytes) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(bytes)?;
    resolve_segments(&decoded).map(Cow::Owned)
}

/// True when `path` needs no work: no escapes, backslashes, empty or dot segments.
fn is_normal(path: &[u8]) -> bool {
    let mut segment_start = 0;
    for (i, &b) in path.iter().enumerate() {
        match b {
            b'%' | b'\\' => return false,
            b'/' if i > 0 => {
                if is_suspicious_segment(&path[segment_start + 1..i]) {
                    return false;
                }
                segment_start = i;
            }
            _ => {}
        }
    }
    let last = &path[segment_start + 1..];
    // An empty last segment is a trailing slash, which is normal.
    last.is_empty() || !is_suspicious_segment(last)
}

/// Empty (from `//`), `.`, `..`, or a dot-segment with `;` parameters.
fn is_suspicious_segment(segment: &[u8]) -> bool {
    segment.is_empty()
        || segment.starts_with(b".;")
        || segment.starts_with(b"..;")
        || segment == b"."
        || segment == b".."
}

fn decode_unreserved(path: &[u8]) -> Result<String, PathError> {
    // Bytes, not chars: a byte pushed as a char would turn each byte of a multi-byte UTF-8
    // character into a character of its own.
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        match path[i] {
            b'\\' => return Err(PathError::Backslash),
            b'%' => {
                let hi = path.get(i + 1).and_then(|&b| hex(b));
                let lo = path.get(i + 2).and_then(|&b| hex(b));
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathError::BadEscape);
                };
                let value = hi << 4 | lo;
                match value {
                    b'/' | b'\\' | 0 => return Err(PathError::EncodedSeparator),
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        out.push(value);
                    }
                    _ => out.extend_from_slice(&[
                        b'%',
                        HEX_UPPER[usize::from(hi)],
                        HEX_UPPER[usize::from(lo)],
                    ]),
                }
                i += 3;
            }
            // hyper only hands us ASCII in the path (config paths may hold more); keep any
            // other byte as is.
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    // Only ASCII escapes were replaced, by ASCII: what was UTF-8 still is.
    String::from_utf8(out).map_err(|_| PathError::BadEscape)
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 §5.2.4 remove_dot_segments, collapsing empty segments and refusing to climb.
fn resolve_segments(path: &str) -> Result<String, PathError> {
    let mut kept: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in path.split('/').skip(1) {
        trailing_slash = false;
        match segment {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                if kept.pop().is_none() {
                    return Err(PathError::ClimbsAboveRoot);
                }
                trailing_slash = true;
            }
            s if s.starts_with(".;") || s.starts_with("..;") => {
                return Err(PathError::DotSegmentParameters);
            }
            s => kept.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn norm(p: &str) -> Result<String, PathError> {
        normalise_path(p).map(Cow::into_owned)
    }

    #[test]
    fn normal_paths_are_borrowed_unchanged() {
        for p in [
            "/",
            "/orders",
            "/orders/1",
            "/orders/",
            "/a.b/c..d/.e",
            "/a;b/c",
        ] {
            assert!(
                matches!(normalise_path(p), Ok(Cow::Borrowed(x)) if x == p),
                "{p}"
            );
        }
    }

    #[test]
    fn dot_segments_and_double_slashes_are_resolved() {
        assert_eq!(norm("/public/../admin").unwrap(), "/admin");
        assert_eq!(norm("/a/./b").unwrap(), "/a/b");
        assert_eq!(norm("//a///b").unwrap(), "/a/b");
        assert_eq!(norm("/a/b/..").unwrap(), "/a/");
        assert_eq!(norm("/a/.").unwrap(), "/a/");
        assert_eq!(norm("/a/b/").unwrap(), "/a/b/");
        assert_eq!(norm("/..a/b").unwrap(), "/..a/b");
    }

    #[test]
    fn unreserved_escapes_are_decoded_before_dot_segments() {
        assert_eq!(norm("/%61dmin").unwrap(), "/admin");
        assert_eq!(norm("/public/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(norm("/public/%2E./admin").unwrap(), "/admin");
        assert_eq!(norm("/a%20b").unwrap(), "/a%20b");
        assert_eq!(norm("/a%3fb").unwrap(), "/a%3Fb");
        assert_eq!(norm("/%7Euser").unwrap(), "/~user");
    }

    /// Found by the `path` fuzz target: each byte of a multi-byte character came out as a
    /// character of its own, so the result was neither the input nor idempotent.
    #[test]
    fn non_ascii_characters_survive_the_slow_path_unchanged() {
        assert_eq!(norm("/\u{14d}s/Arx%3f").unwrap(), "/\u{14d}s/Arx%3F");
        assert_eq!(norm("/caf\u{e9}/./%61").unwrap(), "/caf\u{e9}/a");
        let once = norm("/\u{14d}/%7e/../x").unwrap();
        assert_eq!(once, "/\u{14d}/x");
        assert_eq!(norm(&once).unwrap(), once);
    }

    #[test]
    fn dangerous_paths_are_refused() {
        assert_eq!(norm("/a%2Fb"), Err(PathError::EncodedSeparator));
        assert_eq!(norm("/a%2fb"), Err(PathError::EncodedSeparator));
        assert_eq!(norm("/a%5Cb"), Err(PathError::EncodedSeparator));
        assert_eq!(norm("/a%00"), Err(PathError::EncodedSeparator));
        assert_eq!(norm("/a\\b"), Err(PathError::Backslash));
        assert_eq!(norm("/.."), Err(PathError::ClimbsAboveRoot));
        assert_eq!(norm("/a/../../b"), Err(PathError::ClimbsAboveRoot));
        assert_eq!(norm("/%2e%2e/x"), Err(PathError::ClimbsAboveRoot));
        assert_eq!(norm("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(norm("/a%2"), Err(PathError::BadEscape));
        assert_eq!(
            norm("/public/..;/admin"),
            Err(PathError::DotSegmentParameters)
        );
        assert_eq!(
            norm("/public/.;x/admin"),
            Err(PathError::DotSegmentParameters)
        );
        assert_eq!(norm("orders"), Err(PathError::NotAbsolute));
        assert_eq!(norm(""), Err(PathError::NotAbsolute));
    }

    proptest! {
        #[test]
        fn normalising_is_idempotent(p in "(/(\\.|\\.\\.|%2[eE]|%6[1-4]|%20|[a-c]{0,2})){1,8}/?") {
            if let Ok(once) = norm(&p) {
                let twice = norm(&once).expect("a normal path stays acceptable");
                prop_assert_eq!(&once, &twice);
                // Kept escapes (`%20`) send a path down the slow path, which must agree.
                if !once.contains('%') {
                    prop_assert!(matches!(normalise_path(&once), Ok(Cow::Borrowed(_))));
                }
                prop_assert!(!once.contains("//"));
                prop_assert!(!once.split('/').any(|s| s == "." || s == ".."));
            }
        }

        /// Over hostile pieces (encoded separators, backslashes, NUL, `;` parameters, every
        /// spelling of a dot): whatever is accepted is canonical and can be read in no
        /// other way upstream.
        #[test]
        fn accepted_paths_hold_nothing_an_upstream_could_read_differently(
            pieces in prop::collection::vec(prop::sample::select(vec![
                "/", "//", ".", "..", "%2e", "%2E", "%2e%2E", ".%2e", "%2f", "%2F", "%5c", "%5C",
                "%00", "\\", ";", "..;", "%3B", "%25", "%41", "%7e", "%20", "a", "b", "~", "%",
                "%g1", "%4",
            ]), 0..12)
        ) {
            let raw = format!("/{}", pieces.concat());
            if let Ok(once) = norm(&raw) {
                prop_assert!(once.starts_with('/'));
                prop_assert_eq!(norm(&once), Ok(once.clone()), "idempotent");
                let upper = once.to_ascii_uppercase();
                for banned in ["%2F", "%5C", "%00", "%2E", "%41", "%7E", "\\", "//"] {
                    prop_assert!(!upper.contains(banned), "{} kept {} from {}", once, banned, raw);
                }
                prop_assert!(
                    !once.split('/').any(|s| s == "." || s == ".." || s.starts_with("..;")),
                    "{} kept a dot-segment from {}", once, raw
                );
            }
        }
    }
}
