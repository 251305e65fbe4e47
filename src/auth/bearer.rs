//! Finding the bearer token: exactly one `Authorization` header with scheme `Bearer`
//! (RFC 6750 §2.1, scheme compared case-insensitively). Never from the query string.

use http::HeaderMap;
use http::header::AUTHORIZATION;

/// Why the Authorization header could not yield a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerError {
    /// Several Authorization headers: which one would a backend believe? Refused, never
    /// "first wins".
    Several,
    /// `Bearer` with nothing after it, or bytes that cannot be a token.
    Malformed,
}

/// Is every byte one of RFC 6750's b64token (`A-Z a-z 0-9 - . _ ~ + / =`)?
///
/// [`bearer_token`] leaves this to its caller, which runs it only for a token not already in
/// the verified-token cache (every cached token passed it). One table lookup a byte and no
/// early exit: testing each byte's class instead cost about 11 instructions a byte.
pub fn is_b64token(token: &[u8]) -> bool {
    token
        .iter()
        .fold(true, |ok, &b| ok & B64TOKEN[usize::from(b)])
}

/// `B64TOKEN[b]`: is byte `b` allowed in a b64token.
static B64TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=');
        i += 1;
    }
    table
};

/// The token, `None` when there is no bearer credential at all. Its bytes are not yet known
/// to be a b64token, nor even text: see [`is_b64token`]. (A cached token is looked up by its
/// bytes; checking them as UTF-8 first cost a cached request some 360 instructions.)
pub fn bearer_token(headers: &HeaderMap) -> Result<Option<&[u8]>, BearerError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(BearerError::Several);
    }
    let bytes = value.as_bytes();
    let Some(scheme_end) = bytes.iter().position(|&b| b == b' ') else {
        return if bytes.eq_ignore_ascii_case(b"bearer") {
            Err(BearerError::Malformed)
        } else {
            Ok(None)
        };
    };
    if !bytes[..scheme_end].eq_ignore_ascii_case(b"bearer") {
        // Another scheme (Basic, DPoP, ...): no bearer token was presented.
        return Ok(None);
    }
    let token = bytes[scheme_end..].trim_ascii();
    if token.is_empty() {
        return Err(BearerError::Malformed);
    }
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn b64token_bytes_are_exactly_rfc_6750s() {
        for b in 0..=255u8 {
            // RFC 6750 §2.1, spelled out.
            const SPELLED_OUT: &[u8] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/=";
            let expected = SPELLED_OUT.contains(&b);
            assert_eq!(is_b64token(&[b]), expected, "byte {b:#04x}");
            // Also deep inside a long token.
            let long = [&[b'a'; 77][..], &[b], &[b'b'; 22]].concat();
            assert_eq!(
                is_b64token(&long),
                expected,
                "byte {b:#04x} in a long token"
            );
        }
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn one_bearer_header_yields_its_token_whatever_the_scheme_case() {
        assert_eq!(
            bearer_token(&headers(&["Bearer abc.def.ghi"])),
            Ok(Some(&b"abc.def.ghi"[..]))
        );
        assert_eq!(
            bearer_token(&headers(&["bEaReR  abc"])),
            Ok(Some(&b"abc"[..]))
        );
    }

    #[test]
    fn absent_or_other_schemes_mean_no_token() {
        assert_eq!(bearer_token(&headers(&[])), Ok(None));
        assert_eq!(bearer_token(&headers(&["Basic dXNlcjpwYXNz"])), Ok(None));
    }

    #[test]
    fn several_headers_and_malformed_tokens_are_refused() {
        assert_eq!(
            bearer_token(&headers(&["Bearer a", "Bearer b"])),
            Err(BearerError::Several)
        );
        assert_eq!(
            bearer_token(&headers(&["Bearer"])),
            Err(BearerError::Malformed)
        );
        assert_eq!(
            bearer_token(&headers(&["Bearer "])),
            Err(BearerError::Malformed)
        );
        // Bytes outside b64token (text or not) are found by `is_b64token`, run for uncached
        // tokens.
        for bad in [&b"a b"[..], b"a,b", b"a\"b", "ä".as_bytes(), b"a\xffb"] {
            let mut map = HeaderMap::new();
            let value = [&b"Bearer "[..], bad].concat();
            map.append(AUTHORIZATION, HeaderValue::from_bytes(&value).unwrap());
            let found = bearer_token(&map).unwrap().unwrap();
            assert!(!is_b64token(found), "{bad:?}");
        }
    }
}
