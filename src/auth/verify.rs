//! Verifying one compact JWS (RFC 7515) against the configured issuers.
//!
//! Order matters: the header is checked first (RFC 8725 §3.1: the algorithm must be one we
//! accept and must fit the issuer's key, never chosen by the token alone), the issuer is
//! picked by the unverified `iss`, the signature is checked with that issuer's keys only, and
//! only an authentic token's dates and audience are judged. `jku`, `x5u`, `x5c` and embedded
//! `jwk` headers are never used to find a key.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::Algorithm;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::claims::{self, Claims, Members, Text};
use super::json::parse_strict_object;
use super::keys::{KeySet, parse_algorithm};
use super::rules::ClaimPath;
use super::{Issuers, batch};

/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The longest signature of any key we accept: RSA with an 8192-bit modulus.
const MAX_SIGNATURE_BYTES: usize = 8192 / 8;

/// The base64url decoder for a token's parts, which every new token pays for: SIMD where the
/// CPU has it (AVX2 or SSE4.1 on x86-64, NEON on ARM), 130 ns for a token's signature and
/// claims where the `base64` crate's scalar decoder takes 490 (`cargo bench --bench verify --
/// base64url`). It refuses what that crate's
/// `URL_SAFE_NO_PAD` refuses (padding, other alphabets, non-canonical trailing bits, so that a
/// token's text has one spelling); a test holds the two to the same answers.
const BASE64URL: base64_simd::Base64 = base64_simd::URL_SAFE_NO_PAD;

/// A token whose signature, issuer, audience and dates were all found good.
#[derive(Debug)]
pub struct Verified {
    /// Index into the issuers of the snapshot that verified it.
    pub issuer: usize,
    pub claims: Claims,
    /// The scopes found at the issuer's `scopes_claim`: copies, allocated with the token's
    /// other parts after its signature check, where a cache hit finds them together.
    scopes: Vec<Box<str>>,
    /// `exp`, in Unix seconds.
    pub expires: f64,
    /// The key that verified the signature.
    pub key_fingerprint: u64,
    /// What revocation looks at on every request, cached or not: taken out once, so that a
    /// cache hit does not search the claims for them.
    jti: Option<Text>,
    sub: Option<Text>,
    pub iat: Option<f64>,
}

impl Verified {
    /// The token's scopes, in the order the token gives them.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scopes.iter().map(|scope| &**scope)
    }

    pub fn scope_count(&self) -> usize {
        self.scopes.len()
    }

    pub fn jti(&self) -> Option<&str> {
        self.jti.as_ref().map(|jti| self.claims.read(jti))
    }

    pub fn sub(&self) -> Option<&str> {
        self.sub.as_ref().map(|sub| self.claims.read(sub))
    }

    /// A verified token with the claims `map` and the `scopes` given, for tests elsewhere in
    /// the crate.
    #[cfg(test)]
    pub(crate) fn from_map(map: Map<String, Value>, scopes: &[&str], expires: f64) -> Self {
        let text = |name: &str| {
            map.get(name)
                .and_then(Value::as_str)
                .map(|s| Text::Owned(s.into()))
        };
        Self {
            issuer: 0,
            jti: text("jti"),
            sub: text("sub"),
            iat: map.get("iat").and_then(Value::as_f64),
            scopes: scopes.iter().map(|s| (*s).into()).collect(),
            claims: Claims::from_map(map),
            expires,
            key_fingerprint: 1,
        }
    }
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

/// Verifies `token`. `allowed` limits the issuers the route accepts (`None`: any). With
/// `by_map` (the route reads claims by path, so it needs them all), the claims are parsed
/// into their map at once and read from it; otherwise only their top-level members are read.
pub async fn verify(
    token: &[u8],
    issuers: &Issuers,
    allowed: Option<&[usize]>,
    now: SystemTime,
    by_map: bool,
) -> Result<Verified, (Failure, Option<usize>)> {
    let Decoded {
        header,
        claims,
        message,
    } = decode(token).map_err(|why| (Failure::Invalid(why), None))?;
    let malformed = || (Failure::Invalid(MALFORMED_CLAIMS), None);
    let claims = if by_map {
        Claims::parsed(claims).ok_or_else(malformed)?
    } else {
        Claims::new(claims)
    };
    let source = match claims.parsed_map() {
        Some(map) => Source::Map(map),
        None => Source::Members(Members::parse(claims.json()).map_err(|_| malformed())?),
    };

    let Some(iss) = source.text("iss") else {
        return Err((Failure::Invalid("the token has no issuer"), None));
    };
    let Some(index) = issuers.by_iss(&iss) else {
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
    let expires = match source.number("exp") {
        Ok(Some(exp)) => exp,
        Err(()) => return Err(fail(Failure::Invalid("the token's exp is not a number"))),
        Ok(None) => return Err(fail(Failure::Invalid("the token has no expiry"))),
    };
    if !expires.is_finite() || now > expires + leeway {
        return Err(fail(Failure::Expired));
    }
    match source.number("nbf") {
        Ok(None) => {}
        Ok(Some(nbf)) if nbf <= now + leeway => {}
        Ok(Some(_)) => return Err(fail(Failure::Invalid("the token is not valid yet"))),
        Err(()) => return Err(fail(Failure::Invalid("the token's nbf is not a number"))),
    }
    let iat = match source.number("iat") {
        Ok(None) => None,
        Ok(Some(iat)) if iat <= now + leeway => Some(iat),
        Ok(Some(_)) => return Err(fail(Failure::Invalid("the token was issued in the future"))),
        Err(()) => return Err(fail(Failure::Invalid("the token's iat is not a number"))),
    };
    if !source.audience_in(&config.audiences) {
        return Err(fail(Failure::Invalid(
            "the token is not meant for this audience",
        )));
    }

    let scopes = source.scopes(&claims, &config.scopes_claim);
    let text = |name: &str| source.text(name).map(|text| claims.keep(text));
    let (jti, sub) = (text("jti"), text("sub"));
    drop(source);
    Ok(Verified {
        issuer: index,
        jti,
        sub,
        iat,
        claims,
        scopes,
        expires,
        key_fingerprint: fingerprint,
    })
}

/// Where `verify` reads a token's registered claims: its top-level members, or the map of all
/// its claims when the route needs that anyway.
enum Source<'a> {
    Members(Members<'a>),
    Map(&'a Map<String, Value>),
}

impl<'a> Source<'a> {
    /// The claim `name` if it is a string.
    fn text(&self, name: &str) -> Option<Cow<'a, str>> {
        match self {
            Self::Members(members) => members.text(name),
            Self::Map(map) => map.get(name).and_then(Value::as_str).map(Cow::Borrowed),
        }
    }

    /// The claim `name` if it is a number; `Err` when it is there but something else.
    fn number(&self, name: &str) -> Result<Option<f64>, ()> {
        match self {
            Self::Members(members) => members.number(name),
            Self::Map(map) => match map.get(name) {
                None => Ok(None),
                Some(Value::Number(n)) => Ok(Some(n.as_f64().unwrap_or(f64::NAN))),
                Some(_) => Err(()),
            },
        }
    }

    /// Whether `aud`, a string or an array of strings, names one of `audiences`.
    fn audience_in(&self, audiences: &[String]) -> bool {
        let wanted = |aud: &str| audiences.iter().any(|a| a == aud);
        match self {
            Self::Members(members) => {
                members
                    .get("aud")
                    .is_some_and(|aud| match claims::text(aud) {
                        Some(aud) => wanted(&aud),
                        // An array: its items read one by one, which a token with one audience never
                        // needs.
                        None => {
                            serde_json::from_str::<Vec<&RawValue>>(aud.get()).is_ok_and(|list| {
                                list.into_iter()
                                    .filter_map(claims::text)
                                    .any(|a| wanted(&a))
                            })
                        }
                    })
            }
            Self::Map(map) => match map.get("aud") {
                Some(Value::String(aud)) => wanted(aud),
                Some(Value::Array(list)) => list.iter().any(|v| v.as_str().is_some_and(wanted)),
                _ => false,
            },
        }
    }

    /// The scopes at `path`: by its exact name from the members, as `ClaimPath::find` looks
    /// first; a path into nested claims (`realm_access.roles`) from the map, which `claims`
    /// then keeps.
    fn scopes(&self, claims: &Claims, path: &ClaimPath) -> Vec<Box<str>> {
        let from_map = |map: &Map<String, Value>| scopes_of(path.find(map));
        match self {
            Self::Members(members) => match members.get(path.name()) {
                Some(scopes) => scopes_in(scopes),
                None => from_map(claims.map()),
            },
            Self::Map(map) => from_map(map),
        }
    }
}

/// A compact JWS split and decoded; nothing about it is trusted yet.
struct Decoded<'a> {
    header: Header,
    /// The claims set's JSON text, not yet parsed.
    claims: String,
    /// `header.payload`, the bytes the signature covers; the signature follows its `.`.
    message: &'a [u8],
}

/// Splits and decodes `token` (size, three parts, base64url, the header's strict JSON and
/// fields, the claims as UTF-8 text): everything done before any key is involved. The claims'
/// JSON is read by `verify`, with [`Members::parse`].
fn decode(token: &[u8]) -> Result<Decoded<'_>, &'static str> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err("the token is too large");
    }
    // Three parts, two dots: found with SIMD, the token being hundreds of bytes.
    let mut dots = memchr::memchr_iter(b'.', token);
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
    let claims = BASE64URL
        .decode_to_vec(payload_b64)
        .ok()
        .and_then(|json| String::from_utf8(json).ok())
        .ok_or(MALFORMED_CLAIMS)?;
    Ok(Decoded {
        header,
        claims,
        message: &token[..second],
    })
}

const MALFORMED_CLAIMS: &str = "the token claims are malformed";

/// The decoding `verify` does before any key is involved, for the fuzz targets: the claims,
/// or why the token was refused.
#[doc(hidden)]
pub fn decode_unverified(token: &str) -> Result<Map<String, Value>, &'static str> {
    let claims = Claims::new(decode(token.as_bytes())?.claims);
    Members::parse(claims.json()).map_err(|_| MALFORMED_CLAIMS)?;
    Ok(claims.map().clone())
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
    static LAST_HEADER: RefCell<Option<(Box<[u8]>, Header)>> = const { RefCell::new(None) };
}

impl Header {
    /// Decodes the base64url header `b64`, or takes it from the last one this thread decoded.
    fn decode(b64: &[u8]) -> Result<Self, &'static str> {
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

fn decode_object(b64: &[u8]) -> Option<Map<String, Value>> {
    parse_strict_object(&BASE64URL.decode_to_vec(b64).ok()?)
}

/// Tries the candidate keys; returns the fingerprint of the one that verifies.
pub(super) fn verify_signature(
    keys: &KeySet,
    kid: Option<&str>,
    alg: Algorithm,
    message: &[u8],
    signature: &[u8],
) -> Option<u64> {
    let mut buffer = [0; MAX_SIGNATURE_BYTES];
    let signature = decode_signature(signature, &mut buffer)?;
    keys.candidates(kid, alg)
        .find(|key| key.verify(alg, message, signature))
        .map(|key| key.fingerprint)
}

/// Decodes a signature onto the stack (nothing keeps it, so nothing allocates it); `None`
/// when it is not base64url or is longer than any key we accept makes.
fn decode_signature<'b>(b64: &[u8], buffer: &'b mut [u8; MAX_SIGNATURE_BYTES]) -> Option<&'b [u8]> {
    let length = BASE64URL.decoded_length(b64).ok()?;
    let out = buffer.get_mut(..length)?;
    let signature = BASE64URL
        .decode(b64, base64_simd::Out::from_slice(out))
        .ok()?;
    Some(signature)
}

/// The scopes in `value`, a member of the claims: a space-separated string (`scope`) or an
/// array of strings (`scp`, roles).
fn scopes_in(value: &RawValue) -> Vec<Box<str>> {
    if let Some(list) = claims::text(value) {
        return list.split_ascii_whitespace().map(Box::from).collect();
    }
    serde_json::from_str::<Vec<&RawValue>>(value.get())
        .map(|items| {
            items
                .into_iter()
                .filter_map(claims::text)
                .map(Box::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Scopes from the scopes claim: a space-separated string (`scope`) or an array of strings
/// (`scp`, roles).
fn scopes_of(claim: Option<&Value>) -> Vec<Box<str>> {
    match claim {
        Some(Value::String(s)) => s.split_ascii_whitespace().map(Box::from).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(Box::from))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::rules::ClaimPath;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use proptest::prelude::*;

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
        let decoded = |b64: &str| {
            Header::decode(b64.as_bytes()).map(|h| (h.alg, h.kid.as_deref().map(str::to_owned)))
        };
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
        let decoded = decode(token.as_bytes()).unwrap();
        assert_eq!(decoded.message, format!("{header}.{claims}").as_bytes());
        assert_eq!(decoded.header.kid.as_deref(), Some("k"));
        assert_eq!(decoded.claims, r#"{"iss":"i"}"#);
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
            assert_eq!(decode_unverified(&refused).err(), Some(why), "{refused:?}");
        }
    }

    /// What the `base64` crate's strict decoder says of `b64`, and what ours says.
    fn both_decoders(b64: &[u8]) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        let ours = BASE64URL.decode_to_vec(b64).ok();
        let mut buffer = [0; MAX_SIGNATURE_BYTES];
        let on_stack = decode_signature(b64, &mut buffer).map(<[u8]>::to_vec);
        let theirs = URL_SAFE_NO_PAD.decode(b64).ok();
        if theirs
            .as_ref()
            .is_none_or(|t| t.len() <= MAX_SIGNATURE_BYTES)
        {
            assert_eq!(on_stack, theirs, "{:?}", String::from_utf8_lossy(b64));
        }
        (theirs, ours)
    }

    #[test]
    fn base64url_is_decoded_and_refused_as_the_base64_crate_does() {
        // Every text of up to three characters from the alphabet, padding, the other
        // alphabet's two and a few that belong to neither: non-canonical trailing bits
        // (`QR`, `QUF`), lengths no encoding has (`Q`), padding in any place.
        let chars = b"AQRUgw09-_+/= .\n";
        let mut texts = vec![Vec::new()];
        for _ in 0..3 {
            let longer: Vec<Vec<u8>> = texts
                .iter()
                .flat_map(|t: &Vec<u8>| chars.iter().map(move |&c| [t.as_slice(), &[c]].concat()))
                .collect();
            texts.extend(longer);
        }
        texts.sort();
        texts.dedup();
        assert!(texts.len() > 4_000);
        // Encodings of every length up to a long signature's, each also with one character
        // changed (to any of `chars`) at the end and in the middle.
        for length in 0..600 {
            let bytes: Vec<u8> = (0..length).map(|i| (i * 37 + length) as u8).collect();
            let b64 = URL_SAFE_NO_PAD.encode(&bytes).into_bytes();
            for (at, &c) in [b64.len().saturating_sub(1), b64.len() / 2]
                .iter()
                .zip(chars.iter().cycle().skip(length % chars.len()))
            {
                let mut changed = b64.clone();
                if let Some(slot) = changed.get_mut(*at) {
                    *slot = c;
                }
                texts.push(changed);
            }
            texts.push(b64);
        }
        for text in &texts {
            let (theirs, ours) = both_decoders(text);
            assert_eq!(ours, theirs, "{:?}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn signatures_up_to_the_longest_a_key_makes_are_decoded_and_longer_ones_refused() {
        let mut buffer = [0; MAX_SIGNATURE_BYTES];
        for length in [1, 64, 256, 512, 1023, MAX_SIGNATURE_BYTES] {
            let bytes: Vec<u8> = (0..length).map(|i| i as u8).collect();
            let b64 = URL_SAFE_NO_PAD.encode(&bytes);
            assert_eq!(
                decode_signature(b64.as_bytes(), &mut buffer),
                Some(&bytes[..]),
                "{length}"
            );
        }
        for length in [MAX_SIGNATURE_BYTES + 1, MAX_SIGNATURE_BYTES + 8, 64 * 1024] {
            let b64 = URL_SAFE_NO_PAD.encode(vec![7; length]);
            assert_eq!(
                decode_signature(b64.as_bytes(), &mut buffer),
                None,
                "{length}"
            );
        }
        assert_eq!(decode_signature(b"not base64!", &mut buffer), None);
    }

    #[test]
    fn scopes_are_read_from_the_members_text_as_the_map_reads_them() {
        let json = r#"{"scope":"a b  c","scp":["x","y",3,"z\u0021"],"esc":"p\u0071 r","n":7}"#;
        let claims = Claims::new(json.to_owned());
        let members = Members::parse(claims.json()).unwrap();
        let read = |name: &str| scopes_in(members.get(name).unwrap());
        for name in ["scope", "scp", "esc", "n"] {
            assert_eq!(read(name), scopes_of(claims.map().get(name)), "{name}");
        }
        assert_eq!(read("scp"), ["x".into(), "y".into(), "z!".into()]);
    }

    #[test]
    fn members_and_map_read_the_registered_claims_alike() {
        let documents = [
            r#"{"iss":"i","exp":1.7e9,"nbf":0,"iat":-5,"aud":"a","jti":"j","sub":"s","scope":"x y"}"#,
            r#"{"iss":"i\u0021","exp":"soon","nbf":null,"aud":["b","a"],"sub":7,"scope":["x",1]}"#,
            r#"{"aud":["b"],"iat":[1],"scope":{"x":1},"realm":{"roles":["r"]}}"#,
            r#"{"realm.roles":"top","realm":{"roles":["nested"]},"aud":[]}"#,
        ];
        for json in documents {
            let by_members = Claims::new(json.to_owned());
            let members = Source::Members(Members::parse(by_members.json()).unwrap());
            let by_map = Claims::parsed(json.to_owned()).unwrap();
            let map = Source::Map(by_map.map());
            for name in ["iss", "jti", "sub", "exp"] {
                assert_eq!(members.text(name), map.text(name), "{json} {name}");
            }
            for name in ["exp", "nbf", "iat", "missing"] {
                assert_eq!(members.number(name), map.number(name), "{json} {name}");
            }
            for audiences in [&["a".to_owned()][..], &["c".to_owned()], &[]] {
                assert_eq!(
                    members.audience_in(audiences),
                    map.audience_in(audiences),
                    "{json} {audiences:?}"
                );
            }
            for path in ["scope", "realm.roles", "missing"] {
                let path = ClaimPath::new(path);
                assert_eq!(
                    members.scopes(&by_members, &path),
                    map.scopes(&by_map, &path),
                    "{json} {path}"
                );
            }
        }
        assert!(Claims::parsed(r#"{"a":1,"a":2}"#.to_owned()).is_none());
        assert!(Claims::parsed("[1]".to_owned()).is_none());
    }

    /// A JSON string's text: with and without escapes, lone surrogates and raw control
    /// characters among them.
    fn json_string() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "a",
            "b",
            " ",
            "é",
            "😀",
            "\\\"",
            "\\\\",
            "\\/",
            "\\n",
            "\\u0041",
            "\\u00e9",
            "\\ud83d\\ude00",
            "\\ud800",
            "\\udc00x",
            "\\u0000",
            "\u{1}",
            "\\x",
        ]);
        prop::collection::vec(piece, 0..4).prop_map(|p| format!("\"{}\"", p.concat()))
    }

    /// A number in every spelling strict JSON has, a few it refuses (`+1`, `01`, `1.`, `1e`)
    /// and some out of range; long ones, which a reading may round differently.
    fn json_number() -> impl Strategy<Value = String> {
        (
            prop::sample::select(vec!["", "", "-", "+"]),
            prop::sample::select(vec![
                "0",
                "1",
                "01",
                "7",
                "1700000000",
                "4102444800",
                "9007199254740993",
                "18446744073709551616",
                "123456789012345678901234567890",
            ]),
            prop::sample::select(vec![
                "",
                "",
                ".5",
                ".0000000001",
                ".",
                ".12345678901234567890123",
            ]),
            prop::sample::select(vec![
                "", "", "e5", "E-3", "e+0", "e-7", "e308", "e400", "e-400", "e",
            ]),
        )
            .prop_map(|(sign, int, frac, exp)| format!("{sign}{int}{frac}{exp}"))
    }

    /// JSON text for a claim's value, valid or nearly so: strings, numbers, literals, and
    /// arrays and objects of those.
    fn json_value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            json_string(),
            json_number(),
            prop::sample::select(vec!["true", "false", "null", "nul", "True"])
                .prop_map(str::to_owned),
        ];
        leaf.prop_recursive(3, 12, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec((prop::sample::select(vec!["x", "y", "roles"]), inner), 0..3)
                    .prop_map(|m| {
                        let members: Vec<String> =
                            m.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                        format!("{{{}}}", members.join(","))
                    }),
            ]
        })
    }

    proptest::proptest! {
        // Enough cases that a number read differently by the two (a long mantissa with an
        // exponent) turns up in every run, not one in a few.
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Any claims set: the members pass accepts exactly what the strict map does, and
        /// where both accept, every reading `verify` makes comes out the same, to the bit.
        #[test]
        fn members_and_map_accept_and_read_any_claims_alike(
            members in prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "iss", "sub", "jti", "exp", "nbf", "iat", "aud", "scope", "scp",
                        "realm", "realm.roles", "n\\u0061me",
                    ]),
                    prop_oneof![json_number(), json_string(), json_value()],
                    prop::sample::select(vec!["", " ", "\n\t", "\r\n  "]),
                ),
                0..6,
            )
        ) {
            let json = format!(
                "{{{}}}",
                members
                    .iter()
                    .map(|(name, value, space)| format!("{space}\"{name}\"{space}:{space}{value}{space}"))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let by_map = Claims::parsed(json.clone());
            let by_members = Members::parse(&json);
            prop_assert_eq!(by_map.is_some(), by_members.is_ok(), "{}", json);
            let (Some(by_map), Ok(by_members)) = (by_map, by_members) else {
                return Ok(());
            };
            let claims = Claims::new(json.clone());
            let (members, map) = (Source::Members(by_members), Source::Map(by_map.map()));
            for name in ["iss", "sub", "jti", "aud", "name", "exp"] {
                prop_assert_eq!(members.text(name), map.text(name), "{} {}", json, name);
            }
            for name in ["exp", "nbf", "iat", "scope"] {
                let (a, b) = (members.number(name), map.number(name));
                prop_assert_eq!(a.map(|n| n.map(f64::to_bits)), b.map(|n| n.map(f64::to_bits)), "{} {}", json, name);
            }
            for audiences in [&["a".to_owned()][..], &["é😀".to_owned()], &[]] {
                prop_assert_eq!(members.audience_in(audiences), map.audience_in(audiences), "{}", json);
            }
            for path in ["scope", "scp", "realm.roles", "missing"] {
                let path = ClaimPath::new(path);
                prop_assert_eq!(members.scopes(&claims, &path), map.scopes(&by_map, &path), "{} {}", json, path);
            }
        }
    }

    /// A claim that is valid JSON, most often a string, with and without escapes.
    fn text_claim() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            r#""u1""#,
            r#""\u0075\u0031""#,
            r#""é😀""#,
            r#""a\"b""#,
            r#""\ud83d\ude00""#,
            "7",
            "null",
            r#"["u"]"#,
        ])
        .prop_map(str::to_owned)
    }

    /// A whole token verified both ways, its claims read member by member (a route without
    /// claim rules) and from the map (a route with them): the same verdict, and for a token let
    /// through, the same issuer, subject, token id, scopes and times. Signed by an Ed25519 key
    /// that an issuer reads from a JWKS file, as a configured one does.
    #[test]
    fn a_token_verifies_alike_whichever_way_its_claims_are_read() {
        use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
        use proptest::test_runner::{Config, TestRunner};

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _entered = runtime.enter();
        let pair = Ed25519KeyPair::generate().unwrap();
        let jwks = serde_json::json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "kid": "k1",
            "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
        }]});
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("jwks.json");
        std::fs::write(&file, jwks.to_string()).unwrap();
        let yaml = format!(
            "issuers:\n  - name: idp\n    issuer: \"https://idp.test\"\n    audiences: [api]\n    \
             jwks: {{ file: \"{}\" }}\nupstreams:\n  app:\n    endpoints: [\"http://127.0.0.1:9\"]\n\
             routes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: app\n",
            file.display()
        );
        let config = crate::config::parse(std::path::Path::new("test.yaml"), &yaml).unwrap();
        let issuers = Issuers::start(&config.issuers, &crate::metrics::Metrics::new()).unwrap();

        let claims = (
            prop::sample::select(vec![
                r#""https://idp.test""#,
                r#""https://idp.test""#,
                r#""https:\/\/idp.test""#,
                r#""https://other.test""#,
                "7",
            ]),
            prop::sample::select(vec![
                r#""api""#,
                r#""api""#,
                r#"["x","api"]"#,
                r#""\u0061pi""#,
                r#"["x"]"#,
                "[]",
                "1",
            ]),
            prop::sample::select(vec![
                "4102444800",
                "4.1024448e9",
                "41024448e2",
                "4102444800.5",
                "1000",
                "\"soon\"",
                "4102444800.000000000000000001",
            ]),
            prop::sample::select(vec!["", "0", "1e9", "4102444800", "null", "-1.5e-300"]),
            prop::sample::select(vec!["", "1700000000", "17e8", "4102444800", "[1]"]),
            prop_oneof![3 => text_claim(), 1 => json_string()],
            prop_oneof![3 => text_claim(), 1 => json_string()],
            prop_oneof![
                3 => prop::sample::select(vec![
                    r#""a b""#, r#""a  b \u0063""#, r#"["a","b",3,"\u00e9"]"#, "[]", r#"{"x":1}"#,
                    r#""""#, "null",
                ]).prop_map(str::to_owned),
                1 => json_value(),
            ],
        );
        let mut runner = TestRunner::new(Config {
            cases: 1_000,
            source_file: Some(file!()),
            ..Config::default()
        });
        let outcome = runner.run(&claims, |(iss, aud, exp, nbf, iat, sub, jti, scope)| {
            let mut members = vec![
                format!(r#""iss":{iss}"#),
                format!(r#""aud":{aud}"#),
                format!(r#""exp":{exp}"#),
                format!(r#""sub":{sub}"#),
                format!(r#""jti":{jti}"#),
                format!(r#""scope":{scope}"#),
            ];
            for (name, value) in [("nbf", nbf), ("iat", iat)] {
                if !value.is_empty() {
                    members.push(format!(r#""{name}":{value}"#));
                }
            }
            let claims = format!("{{{}}}", members.join(","));
            let message = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","kid":"k1"}"#),
                URL_SAFE_NO_PAD.encode(&claims)
            );
            let signature = URL_SAFE_NO_PAD.encode(pair.sign(message.as_bytes()));
            let token = format!("{message}.{signature}");
            let verified = |by_map| {
                let now = SystemTime::now();
                runtime.block_on(verify(token.as_bytes(), &issuers, None, now, by_map))
            };
            match (verified(false), verified(true)) {
                (Ok(a), Ok(b)) => {
                    prop_assert_eq!(a.issuer, b.issuer, "{}", claims);
                    prop_assert_eq!(a.sub(), b.sub(), "{}", claims);
                    prop_assert_eq!(a.jti(), b.jti(), "{}", claims);
                    let scopes = |v: &Verified| v.scopes().map(str::to_owned).collect::<Vec<_>>();
                    prop_assert_eq!(scopes(&a), scopes(&b), "{}", claims);
                    prop_assert_eq!(a.expires.to_bits(), b.expires.to_bits(), "{}", claims);
                    let iat = |v: &Verified| v.iat.map(f64::to_bits);
                    prop_assert_eq!(iat(&a), iat(&b), "{}", claims);
                }
                (Err(a), Err(b)) => prop_assert_eq!(a, b, "{}", claims),
                (a, b) => {
                    let (a, b) = (a.map(|_| ()), b.map(|_| ()));
                    prop_assert!(false, "{}: {:?} against {:?}", claims, a, b);
                }
            }
            Ok(())
        });
        if let Err(failure) = outcome {
            panic!("{failure}");
        }
    }

    #[test]
    fn scopes_come_from_strings_or_arrays() {
        let claims = serde_json::json!({
            "scope": "a b  c",
            "scp": ["x", "y", 3],
            "realm_access": {"roles": ["admin"]}
        });
        let claims = claims.as_object().unwrap();
        let at = |path: &str| -> Vec<String> {
            scopes_of(ClaimPath::new(path).find(claims))
                .into_iter()
                .map(String::from)
                .collect()
        };
        assert_eq!(at("scope"), ["a", "b", "c"]);
        assert_eq!(at("scp"), ["x", "y"]);
        assert_eq!(at("realm_access.roles"), ["admin"]);
        assert!(at("missing").is_empty());
        assert!(at("realm_access.missing").is_empty());
    }
}
