//! Verifying one compact JWS (RFC 7515) against the configured issuers.
//!
//! Order matters: the header is checked first (RFC 8725 §3.1: the algorithm must be one we
//! accept and must fit the issuer's key, never chosen by the token alone), the issuer is
//! picked by the unverified `iss`, the signature is checked with that issuer's keys only, and
//! only an authentic token's dates and audience are judged. `jku`, `x5u`, `x5c` and embedded
//! `jwk` headers are never used to find a key.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::json::parse_strict;
use super::keys::{KeySet, parse_algorithm};
use super::{Issuers, batch};

/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The longest signature of any key we accept: RSA with an 8192-bit modulus.
const MAX_SIGNATURE_BYTES: usize = 8192 / 8;
/// Room for that, and for base64's estimate of a decoded length, which can exceed it by two.
const SIGNATURE_BUFFER: usize = MAX_SIGNATURE_BYTES + 8;

/// A token whose signature, issuer, audience and dates were all found good.
#[derive(Debug)]
pub struct Verified {
    /// Index into the issuers of the snapshot that verified it.
    pub issuer: usize,
    pub claims: Map<String, Value>,
    /// The scopes found at the issuer's `scopes_claim`.
    pub scopes: Vec<String>,
    /// `exp`, in Unix seconds.
    pub expires: f64,
    /// The key that verified the signature.
    pub key_fingerprint: u64,
    /// What revocation looks at on every request, cached or not: taken out once, so that a
    /// cache hit does not search the claims for them.
    pub jti: Option<String>,
    pub sub: Option<String>,
    pub iat: Option<f64>,
}

/// Why a token was refused. Descriptions are fixed texts: they never echo the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Invalid(&'static str),
    Expired,
    UnknownKey,
    /// The issuer's keys are missing or too old to trust.
    Unavailable {
        issuer: usize,
    },
}

/// Verifies `token`. `allowed` limits the issuers the route accepts (`None`: any).
pub async fn verify(
    token: &str,
    issuers: &Issuers,
    allowed: Option<&[usize]>,
    now: SystemTime,
) -> Result<Verified, (Failure, Option<usize>)> {
    let Decoded {
        header,
        claims,
        message,
    } = decode(token).map_err(|why| (Failure::Invalid(why), None))?;

    let Some(Value::String(iss)) = claims.get("iss") else {
        return Err((Failure::Invalid("the token has no issuer"), None));
    };
    let Some(index) = issuers.by_iss(iss) else {
        return Err((Failure::Invalid("the token's issuer is not accepted"), None));
    };
    if allowed.is_some_and(|list| !list.contains(&index)) {
        return Err((
            Failure::Invalid("the token's issuer is not accepted on this route"),
            Some(index),
        ));
    }
    let issuer = &issuers.list[index];
    let fail = |f: Failure| (f, Some(index));
    if !issuer.algorithms.is_empty() && !issuer.algorithms.contains(&header.alg) {
        return Err(fail(Failure::Invalid(
            "the token's algorithm is not accepted",
        )));
    }
    if issuer.staleness(now).is_some() {
        return Err(fail(Failure::Unavailable { issuer: index }));
    }
    let Some(mut keys) = issuer.keys() else {
        return Err(fail(Failure::Unavailable { issuer: index }));
    };
    if let Some(kid) = header.kid.as_deref()
        && !keys.has_kid(kid)
    {
        keys = match issuer.refetch_for_kid(kid).await {
            Some(fresh) if fresh.has_kid(kid) => fresh,
            _ => return Err(fail(Failure::UnknownKey)),
        };
    }

    let fingerprint = batch::check(&keys, header.kid.as_ref(), header.alg, token, message.len())
        .await
        .ok_or(fail(Failure::Invalid("the token signature is invalid")))?;

    let config = &issuer.config;
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let leeway = config.leeway.as_secs_f64();
    let expires = match claims.get("exp") {
        Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
        Some(_) => return Err(fail(Failure::Invalid("the token's exp is not a number"))),
        None => return Err(fail(Failure::Invalid("the token has no expiry"))),
    };
    if !expires.is_finite() || now > expires + leeway {
        return Err(fail(Failure::Expired));
    }
    match claims.get("nbf") {
        None => {}
        Some(Value::Number(n)) if n.as_f64().is_some_and(|nbf| nbf <= now + leeway) => {}
        Some(Value::Number(_)) => return Err(fail(Failure::Invalid("the token is not valid yet"))),
        Some(_) => return Err(fail(Failure::Invalid("the token's nbf is not a number"))),
    }
    match claims.get("iat") {
        None => {}
        Some(Value::Number(n)) if n.as_f64().is_some_and(|iat| iat <= now + leeway) => {}
        Some(Value::Number(_)) => {
            return Err(fail(Failure::Invalid("the token was issued in the future")));
        }
        Some(_) => return Err(fail(Failure::Invalid("the token's iat is not a number"))),
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => config.audiences.iter().any(|a| a == aud),
        Some(Value::Array(list)) => list.iter().any(|v| {
            v.as_str()
                .is_some_and(|aud| config.audiences.iter().any(|a| a == aud))
        }),
        _ => false,
    };
    if !audience_ok {
        return Err(fail(Failure::Invalid(
            "the token is not meant for this audience",
        )));
    }

    let scopes = scopes_of(config.scopes_claim.find(&claims));
    let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
    Ok(Verified {
        issuer: index,
        jti: text("jti"),
        sub: text("sub"),
        iat: claims.get("iat").and_then(Value::as_f64),
        claims,
        scopes,
        expires,
        key_fingerprint: fingerprint,
    })
}

/// A compact JWS split and decoded; nothing about it is trusted yet.
struct Decoded<'a> {
    header: Header,
    claims: Map<String, Value>,
    /// `header.payload`, the bytes the signature covers; the signature follows its `.`.
    message: &'a str,
}

/// Splits and decodes `token` (size, three parts, base64url, strict JSON, header fields):
/// everything done before any key is involved.
fn decode(token: &str) -> Result<Decoded<'_>, &'static str> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err("the token is too large");
    }
    // Three parts, two dots: found with SIMD, the token being hundreds of bytes.
    let mut dots = memchr::memchr_iter(b'.', token.as_bytes());
    let (Some(first), Some(second), None) = (dots.next(), dots.next(), dots.next()) else {
        return Err("the token is not a signed JWT");
    };
    let (header_b64, payload_b64, signature_b64) = (
        &token[..first],
        &token[first + 1..second],
        &token[second + 1..],
    );
    if signature_b64.is_empty() {
        return Err("the token is not signed");
    }
    let header = Header::decode(header_b64)?;
    let claims = decode_object(payload_b64).ok_or("the token claims are malformed")?;
    Ok(Decoded {
        header,
        claims,
        message: &token[..second],
    })
}

/// The decoding `verify` does before any key is involved, for the fuzz targets: the claims,
/// or why the token was refused.
#[doc(hidden)]
pub fn decode_unverified(token: &str) -> Result<Map<String, Value>, &'static str> {
    decode(token).map(|decoded| decoded.claims)
}

/// The JOSE header fields that matter; everything else is ignored, never trusted.
#[derive(Clone)]
struct Header {
    alg: Algorithm,
    kid: Option<Arc<str>>,
}

thread_local! {
    /// The header this thread decoded last, as it came (base64url) and decoded. An issuer's
    /// tokens all carry the same few headers (`{"alg":"RS256","kid":"k1","typ":"JWT"}`), so a
    /// new token's header is nearly always the one before it: a comparison of some fifty
    /// bytes then stands in for a base64 decoding, a JSON parse and eight allocations. Only
    /// headers found good are kept; what a header decodes to depends on its bytes alone.
    static LAST_HEADER: RefCell<Option<(Box<str>, Header)>> = const { RefCell::new(None) };
}

impl Header {
    /// Decodes the base64url header `b64`, or takes it from the last one this thread decoded.
    fn decode(b64: &str) -> Result<Self, &'static str> {
        let last = LAST_HEADER.with_borrow(|last| {
            last.as_ref()
                .filter(|(seen, _)| **seen == *b64)
                .map(|(_, header)| header.clone())
        });
        if let Some(header) = last {
            return Ok(header);
        }
        let json = decode_object(b64).ok_or("the token header is malformed")?;
        let header = Self::from_json(json)?;
        LAST_HEADER.set(Some((b64.into(), header.clone())));
        Ok(header)
    }

    fn from_json(mut header: Map<String, Value>) -> Result<Self, &'static str> {
        // RFC 7515 §4.1.11: we understand no extension, so any `crit` means refuse.
        if header.contains_key("crit") {
            return Err("the token header has critical extensions");
        }
        let alg = match header.get("alg") {
            Some(Value::String(name)) => {
                parse_algorithm(name).ok_or("the token's algorithm is not accepted")?
            }
            _ => return Err("the token header has no algorithm"),
        };
        match header.get("typ") {
            None => {}
            Some(Value::String(typ)) if acceptable_typ(typ) => {}
            Some(_) => return Err("the token type is not accepted"),
        }
        let kid = match header.remove("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.into()),
            Some(_) => return Err("the token's key id is not a string"),
        };
        Ok(Self { alg, kid })
    }
}

/// `JWT` or `at+jwt` (RFC 9068), any case, optionally with the `application/` prefix.
fn acceptable_typ(typ: &str) -> bool {
    let prefix = "application/";
    let bare = match typ.get(..prefix.len()) {
        Some(start) if start.eq_ignore_ascii_case(prefix) => &typ[prefix.len()..],
        _ => typ,
    };
    bare.eq_ignore_ascii_case("jwt") || bare.eq_ignore_ascii_case("at+jwt")
}

fn decode_object(b64: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(b64).ok()?;
    match parse_strict(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// Tries the candidate keys; returns the fingerprint of the one that verifies.
pub(super) fn verify_signature(
    keys: &KeySet,
    kid: Option<&str>,
    alg: Algorithm,
    message: &str,
    signature: &str,
) -> Option<u64> {
    let mut buffer = [0; SIGNATURE_BUFFER];
    let signature = decode_signature(signature, &mut buffer)?;
    keys.candidates(kid, alg)
        .find(|key| key.verify(alg, message.as_bytes(), signature))
        .map(|key| key.fingerprint)
}

/// Decodes a signature onto the stack (nothing keeps it, so nothing allocates it); `None`
/// when it is not base64url or is longer than any key we accept makes.
fn decode_signature<'b>(b64: &str, buffer: &'b mut [u8; SIGNATURE_BUFFER]) -> Option<&'b [u8]> {
    let length = URL_SAFE_NO_PAD.decode_slice(b64, buffer).ok()?;
    (length <= MAX_SIGNATURE_BYTES).then(|| &buffer[..length])
}

/// Scopes from the scopes claim: a space-separated string (`scope`) or an array of strings
/// (`scp`, roles).
fn scopes_of(claim: Option<&Value>) -> Vec<String> {
    match claim {
        Some(Value::String(s)) => s.split_ascii_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::rules::ClaimPath;

    #[test]
    fn typ_values_of_jwts_are_accepted_and_others_refused() {
        for ok in [
            "JWT",
            "jwt",
            "at+jwt",
            "AT+JWT",
            "application/jwt",
            "application/at+jwt",
            "Application/At+JWT",
        ] {
            assert!(acceptable_typ(ok), "{ok}");
        }
        for bad in [
            "JOSE",
            "dpop+jwt",
            "application/json",
            "application/",
            "applicationjwt",
            "xapplication/jwt",
            "jwt ",
            "applicatión/jwt",
            "",
        ] {
            assert!(!acceptable_typ(bad), "{bad}");
        }
    }

    #[test]
    fn headers_with_crit_none_or_hmac_are_refused() {
        let h = |v: Value| Header::from_json(v.as_object().unwrap().clone());
        assert!(h(serde_json::json!({"alg": "RS256", "crit": ["exp"]})).is_err());
        assert!(h(serde_json::json!({"alg": "none"})).is_err());
        assert!(h(serde_json::json!({"alg": "HS256"})).is_err());
        assert!(h(serde_json::json!({"alg": "RS256", "typ": "JOSE"})).is_err());
        assert!(h(serde_json::json!({"alg": "RS256", "kid": 7})).is_err());
        assert!(h(serde_json::json!({"typ": "JWT"})).is_err());
        let ok =
            h(serde_json::json!({"alg": "ES256", "kid": "k1", "jku": "https://evil"})).unwrap();
        assert_eq!((ok.alg, ok.kid.as_deref()), (Algorithm::ES256, Some("k1")));
    }

    #[test]
    fn a_header_decoded_before_decodes_the_same_and_no_other_header_takes_its_place() {
        let b64 = |json: &str| URL_SAFE_NO_PAD.encode(json);
        let (one, two) = (
            b64(r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#),
            b64(r#"{"alg":"ES256","kid":"k2","typ":"JWT"}"#),
        );
        let refused = b64(r#"{"alg":"RS256","kid":"k1","crit":["exp"]}"#);
        let decoded =
            |b64: &str| Header::decode(b64).map(|h| (h.alg, h.kid.as_deref().map(str::to_owned)));
        let first = Ok((Algorithm::RS256, Some("k1".to_owned())));
        let second = Ok((Algorithm::ES256, Some("k2".to_owned())));
        for _ in 0..2 {
            assert_eq!(decoded(&one), first);
            assert_eq!(decoded(&one), first);
            assert_eq!(decoded(&two), second);
            // A refused header is never remembered, and does not stand in for the one before.
            assert!(decoded(&refused).is_err());
            assert!(decoded(&refused).is_err());
            assert_eq!(decoded(&two), second);
            // Headers that differ from the last one only at their end are decoded anew.
            assert!(decoded(&one).is_ok());
            let last = if one.ends_with('A') { "B" } else { "A" };
            assert!(decoded(&(one[..one.len() - 1].to_owned() + last)).is_err());
            assert!(decoded(&one).is_ok());
            assert!(decoded(&one[..one.len() - 1]).is_err());
        }
    }

    #[test]
    fn only_three_parts_with_a_signature_are_decoded() {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"k"}"#);
        let claims = URL_SAFE_NO_PAD.encode(r#"{"iss":"i"}"#);
        let token = format!("{header}.{claims}.c2ln");
        let decoded = decode(&token).unwrap();
        assert_eq!(decoded.message, format!("{header}.{claims}"));
        assert_eq!(decoded.header.kid.as_deref(), Some("k"));
        assert_eq!(decoded.claims["iss"], "i");
        for (refused, why) in [
            (
                format!("{header}.{claims}"),
                "the token is not a signed JWT",
            ),
            (
                format!("{header}.{claims}.c2ln.c2ln"),
                "the token is not a signed JWT",
            ),
            (String::new(), "the token is not a signed JWT"),
            (format!("{header}.{claims}."), "the token is not signed"),
            (format!(".{claims}.c2ln"), "the token header is malformed"),
            (format!("{header}..c2ln"), "the token claims are malformed"),
        ] {
            assert_eq!(decode(&refused).err(), Some(why), "{refused:?}");
        }
    }

    #[test]
    fn signatures_up_to_the_longest_a_key_makes_are_decoded_and_longer_ones_refused() {
        let mut buffer = [0; SIGNATURE_BUFFER];
        for length in [1, 64, 256, 512, 1023, MAX_SIGNATURE_BYTES] {
            let bytes: Vec<u8> = (0..length).map(|i| i as u8).collect();
            let b64 = URL_SAFE_NO_PAD.encode(&bytes);
            assert_eq!(
                decode_signature(&b64, &mut buffer),
                Some(&bytes[..]),
                "{length}"
            );
        }
        for length in [MAX_SIGNATURE_BYTES + 1, SIGNATURE_BUFFER, 64 * 1024] {
            let b64 = URL_SAFE_NO_PAD.encode(vec![7; length]);
            assert_eq!(decode_signature(&b64, &mut buffer), None, "{length}");
        }
        assert_eq!(decode_signature("not base64!", &mut buffer), None);
    }

    #[test]
    fn scopes_come_from_strings_or_arrays() {
        let claims = serde_json::json!({
            "scope": "a b  c",
            "scp": ["x", "y", 3],
            "realm_access": {"roles": ["admin"]}
        });
        let claims = claims.as_object().unwrap();
        let at = |path: &str| scopes_of(ClaimPath::new(path).find(claims));
        assert_eq!(at("scope"), ["a", "b", "c"]);
        assert_eq!(at("scp"), ["x", "y"]);
        assert_eq!(at("realm_access.roles"), ["admin"]);
        assert!(at("missing").is_empty());
        assert!(at("realm_access.missing").is_empty());
    }
}
