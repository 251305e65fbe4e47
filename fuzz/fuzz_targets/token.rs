//! The token as it arrives: the Authorization header (bearer extraction), the compact JWS
//! split, base64url and the strict JSON of header and claims.
//!
//! The first byte picks the shape of the rest:
//! - 0: an Authorization header value, then whatever token it yields, then the raw text;
//! - 1: a JOSE header and a claims set as JSON, split at the first newline, encoded into a
//!   token here (so the fuzzer reaches the JSON checks without having to invent base64);
//! - 2: strict JSON on its own, compared with serde_json.

#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tokengate::auth::bearer::{bearer_token, is_b64token};
use tokengate::auth::json::parse_strict;
use tokengate::auth::verify::{MAX_TOKEN_BYTES, decode_unverified};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => header_then_token(rest),
        1 => encoded_json(rest),
        _ => strict_json(rest),
    }
});

fn header_then_token(value: &[u8]) {
    if let Ok(value) = HeaderValue::from_bytes(value) {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, value);
        if let Ok(Some(token)) = bearer_token(&headers) {
            assert!(!token.is_empty(), "an empty token was extracted");
            assert_eq!(token.trim_ascii(), token, "a token with spaces around it");
            // As a request goes: the bytes are looked up in the cache as they are, and only a
            // b64token is decoded.
            if is_b64token(token) {
                assert!(
                    token.iter().all(|b| b.is_ascii_graphic()),
                    "a b64token with spaces, controls or non-ASCII bytes: {token:?}"
                );
                let token = std::str::from_utf8(token).expect("a b64token is ASCII");
                let _ = decode_unverified(token);
            }
        }
    }
    let _ = decode_unverified(&String::from_utf8_lossy(value));
}

fn encoded_json(rest: &[u8]) {
    let split = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let (header, claims) = (&rest[..split], rest.get(split + 1..).unwrap_or_default());
    let token = format!(
        "{}.{}.c2lnbmF0dXJl",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    match decode_unverified(&token) {
        Ok(decoded) => {
            assert!(token.len() <= MAX_TOKEN_BYTES);
            // What was accepted must be exactly what strict JSON says the claims are.
            let strict = parse_strict(claims).expect("accepted claims are strict JSON");
            assert_eq!(serde_json::Value::Object(decoded), strict);
            let header = parse_strict(header).expect("an accepted header is strict JSON");
            assert!(
                header.get("crit").is_none(),
                "a header with crit was accepted"
            );
            let alg = header.get("alg").and_then(|a| a.as_str());
            assert!(
                alg.is_some_and(|a| !a.starts_with("HS") && a != "none"),
                "alg {alg:?} was accepted"
            );
        }
        Err(why) => assert!(!why.is_empty()),
    }
}

fn strict_json(bytes: &[u8]) {
    let strict = parse_strict(bytes);
    let loose = serde_json::from_slice::<serde_json::Value>(bytes);
    if let Ok(strict) = strict {
        // Strict accepts a subset of what serde_json accepts, and reads it the same way.
        let loose = loose.expect("strict JSON is JSON");
        assert_eq!(strict, loose);
    }
}
