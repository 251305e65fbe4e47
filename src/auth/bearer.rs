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

/// The bytes of RFC 6750's b64token.
const B64TOKEN: [bool; 256] = {
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

/// The token, `None` when there is no bearer credential at all.
pub fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, BearerError> {
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
    // RFC 6750 §2.1 b64token. A table lookup per byte: tokens are long and this runs on
    // every request (it was the hottest user-space loop in a profile before the table).
    let valid = !token.is_empty() && token.iter().all(|&b| B64TOKEN[usize::from(b)]);
    if !valid {
        return Err(BearerError::Malformed);
    }
    // Every byte was checked to be ASCII above.
    std::str::from_utf8(token)
        .map(Some)
        .map_err(|_| BearerError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Ok(Some("abc.def.ghi"))
        );
        assert_eq!(bearer_token(&headers(&["bEaReR  abc"])), Ok(Some("abc")));
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
        assert_eq!(
            bearer_token(&headers(&["Bearer a b"])),
            Err(BearerError::Malformed)
        );
        assert_eq!(
            bearer_token(&headers(&["Bearer a,b"])),
            Err(BearerError::Malformed)
        );
    }
}
