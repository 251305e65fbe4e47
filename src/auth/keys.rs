//! A parsed JSON Web Key Set (RFC 7517): the public keys of one issuer, immutable once built.
//!
//! Only keys that can verify a signature we accept are kept: RSA (2048 bits or more), EC P-256
//! and P-384, and Ed25519. Symmetric (`oct`) keys are dropped outright, so a public key can
//! never become an HMAC secret (RFC 8725 §3.1). A key's `use` and `key_ops`, when present,
//! must allow signature verification.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::sync::OnceLock;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{self, ParsedPublicKey, VerificationAlgorithm};
use jsonwebtoken::Algorithm;
use serde::Deserialize;

/// The kinds of key a token's algorithm can require.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFamily {
    Rsa,
    P256,
    P384,
    Ed25519,
}

/// The algorithms tokengate accepts, and the key family each needs.
pub fn family_of(alg: Algorithm) -> Option<KeyFamily> {
    match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => Some(KeyFamily::Rsa),
        Algorithm::ES256 => Some(KeyFamily::P256),
        Algorithm::ES384 => Some(KeyFamily::P384),
        Algorithm::EdDSA => Some(KeyFamily::Ed25519),
        // HMAC is never accepted from a JWKS issuer.
        _ => None,
    }
}

/// Parses an algorithm name we accept (`none` and `HS*` are not among them).
pub fn parse_algorithm(name: &str) -> Option<Algorithm> {
    let alg = match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    };
    Some(alg)
}

/// One verification key.
pub struct Key {
    pub kid: Option<String>,
    pub family: KeyFamily,
    /// The JWK's own `alg`, which then is the only algorithm it verifies.
    pub alg: Option<Algorithm>,
    /// The public key bytes in the form aws-lc parses.
    public: Vec<u8>,
    /// Parsed once per algorithm, on first use: a verification then costs only the math.
    parsed: [OnceLock<Option<ParsedPublicKey>>; ALGORITHM_COUNT],
    /// A hash of the key material: a cached verification stays valid only while a key with
    /// this fingerprint is still in the set.
    pub fingerprint: u64,
}

const ALGORITHM_COUNT: usize = 9;

impl Key {
    /// Checks `signature` over `message` with `alg` (which the caller made sure this key
    /// verifies).
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        self.parsed(alg)
            .is_some_and(|key| key.verify_sig(message, signature).is_ok())
    }

    fn parsed(&self, alg: Algorithm) -> Option<&ParsedPublicKey> {
        let (slot, algorithm): (usize, &'static dyn VerificationAlgorithm) = match alg {
            Algorithm::RS256 => (0, &signature::RSA_PKCS1_2048_8192_SHA256),
            Algorithm::RS384 => (1, &signature::RSA_PKCS1_2048_8192_SHA384),
            Algorithm::RS512 => (2, &signature::RSA_PKCS1_2048_8192_SHA512),
            Algorithm::PS256 => (3, &signature::RSA_PSS_2048_8192_SHA256),
            Algorithm::PS384 => (4, &signature::RSA_PSS_2048_8192_SHA384),
            Algorithm::PS512 => (5, &signature::RSA_PSS_2048_8192_SHA512),
            Algorithm::ES256 => (6, &signature::ECDSA_P256_SHA256_FIXED),
            Algorithm::ES384 => (7, &signature::ECDSA_P384_SHA384_FIXED),
            Algorithm::EdDSA => (8, &signature::ED25519),
            _ => return None,
        };
        self.parsed[slot]
            .get_or_init(|| ParsedPublicKey::new(algorithm, &self.public).ok())
            .as_ref()
    }

    /// Can this key verify a token signed with `alg`?
    pub fn verifies(&self, alg: Algorithm) -> bool {
        family_of(alg) == Some(self.family) && self.alg.is_none_or(|own| own == alg)
    }
}

/// The usable keys of one issuer, as fetched or read at `loaded_at`.
pub struct KeySet {
    pub keys: Vec<Key>,
    pub loaded_at: SystemTime,
    /// What the source said was skipped, for the log.
    pub skipped: Vec<String>,
}

/// Why a JWKS document was refused as a whole (the last good set keeps serving).
#[derive(Debug, thiserror::Error)]
pub enum KeySetError {
    #[error("not a JWKS document: {0}")]
    Json(#[from] serde_json::Error),
    #[error("no usable signing key (skipped: {0})")]
    NoUsableKey(String),
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawKey {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

impl KeySet {
    /// Parses a JWKS document. Unusable keys are skipped (and named in `skipped`); a document
    /// with no usable key at all is an error.
    pub fn parse(bytes: &[u8]) -> Result<Self, KeySetError> {
        let raw: RawSet = serde_json::from_slice(bytes)?;
        let mut keys = Vec::with_capacity(raw.keys.len());
        let mut skipped = Vec::new();
        for (i, value) in raw.keys.into_iter().enumerate() {
            match serde_json::from_value::<RawKey>(value)
                .map_err(|e| e.to_string())
                .and_then(parse_key)
            {
                Ok(key) => keys.push(key),
                Err(why) => skipped.push(format!("key {i}: {why}")),
            }
        }
        if keys.is_empty() {
            return Err(KeySetError::NoUsableKey(if skipped.is_empty() {
                "the set is empty".to_owned()
            } else {
                skipped.join("; ")
            }));
        }
        Ok(Self {
            keys,
            loaded_at: SystemTime::now(),
            skipped,
        })
    }

    /// Keys that may verify a token with this `kid` (any key when the token has none) and `alg`.
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a Key> + 'a {
        self.keys
            .iter()
            .filter(move |k| kid.is_none_or(|kid| k.kid.as_deref() == Some(kid)))
            .filter(move |k| k.verifies(alg))
    }

    /// Whether any key has this `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    pub fn contains(&self, fingerprint: u64) -> bool {
        self.keys.iter().any(|k| k.fingerprint == fingerprint)
    }
}

fn parse_key(raw: RawKey) -> Result<Key, String> {
    if let Some(use_) = &raw.use_
        && use_ != "sig"
    {
        return Err(format!("use is `{use_}`, not `sig`"));
    }
    if let Some(ops) = &raw.key_ops
        && !ops.iter().any(|op| op == "verify")
    {
        return Err("key_ops does not allow `verify`".to_owned());
    }
    let alg = match raw.alg.as_deref() {
        None => None,
        Some(name) => {
            Some(parse_algorithm(name).ok_or_else(|| format!("alg `{name}` is not accepted"))?)
        }
    };
    let field = |v: &Option<String>, name: &str| {
        v.as_deref()
            .ok_or_else(|| format!("`{name}` is missing"))
            .and_then(|s| {
                URL_SAFE_NO_PAD
                    .decode(s)
                    .map_err(|_| format!("`{name}` is not base64url"))
            })
    };
    let mut material = DefaultHasher::new();
    // The public key as aws-lc parses it: SubjectPublicKeyInfo DER for RSA, the uncompressed
    // point for EC, the 32 raw bytes for Ed25519.
    let (family, public) = match (raw.kty.as_str(), raw.crv.as_deref()) {
        ("RSA", _) => {
            let n = field(&raw.n, "n")?;
            let e = field(&raw.e, "e")?;
            let bits = n.iter().skip_while(|&&b| b == 0).count() * 8;
            if bits < 2048 {
                return Err(format!(
                    "RSA modulus of about {bits} bits; at least 2048 are required"
                ));
            }
            (n.as_slice(), e.as_slice()).hash(&mut material);
            let components = aws_lc_rs::rsa::PublicKeyComponents {
                n: n.as_slice(),
                e: e.as_slice(),
            };
            let der = components
                .as_der()
                .map_err(|_| "the RSA key cannot be encoded".to_owned())?;
            (KeyFamily::Rsa, der.as_ref().to_vec())
        }
        ("EC", Some(crv @ ("P-256" | "P-384"))) => {
            let (family, size) = if crv == "P-256" {
                (KeyFamily::P256, 32)
            } else {
                (KeyFamily::P384, 48)
            };
            let x = field(&raw.x, "x")?;
            let y = field(&raw.y, "y")?;
            if x.len() != size || y.len() != size {
                return Err(format!("coordinates of the wrong length for {crv}"));
            }
            (x.as_slice(), y.as_slice()).hash(&mut material);
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            (family, point)
        }
        ("OKP", Some("Ed25519")) => {
            let x = field(&raw.x, "x")?;
            if x.len() != 32 {
                return Err("an Ed25519 key is 32 bytes".to_owned());
            }
            x.hash(&mut material);
            (KeyFamily::Ed25519, x)
        }
        ("oct", _) => return Err("symmetric keys are never used".to_owned()),
        (kty, crv) => {
            return Err(format!(
                "unsupported key type `{kty}`{}",
                crv.map(|c| format!(" with curve `{c}`"))
                    .unwrap_or_default()
            ));
        }
    };
    if let Some(alg) = alg
        && family_of(alg) != Some(family)
    {
        return Err(format!("alg `{alg:?}` does not fit a {} key", raw.kty));
    }
    family_tag(family).hash(&mut material);
    let key = Key {
        kid: raw.kid,
        family,
        alg,
        public,
        parsed: Default::default(),
        fingerprint: material.finish(),
    };
    // Refuse a key aws-lc cannot use (an EC point off the curve, say) now, not per request.
    let probe = match family {
        KeyFamily::Rsa => Algorithm::RS256,
        KeyFamily::P256 => Algorithm::ES256,
        KeyFamily::P384 => Algorithm::ES384,
        KeyFamily::Ed25519 => Algorithm::EdDSA,
    };
    if key.parsed(alg.unwrap_or(probe)).is_none() {
        return Err("the key material is not a valid public key".to_owned());
    }
    Ok(key)
}

fn family_tag(family: KeyFamily) -> u8 {
    match family {
        KeyFamily::Rsa => 1,
        KeyFamily::P256 => 2,
        KeyFamily::P384 => 3,
        KeyFamily::Ed25519 => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_keys_are_skipped_with_a_reason_and_good_ones_kept() {
        let off_curve = serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "bad",
            "x": URL_SAFE_NO_PAD.encode([1u8; 32]), "y": URL_SAFE_NO_PAD.encode([2u8; 32])});
        let small_rsa = serde_json::json!({"kty": "RSA", "kid": "small",
            "n": URL_SAFE_NO_PAD.encode([0xffu8; 128]), "e": "AQAB"});
        let hmac = serde_json::json!({"kty": "oct", "k": "c2VjcmV0"});
        let encryption = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "use": "enc",
            "x": URL_SAFE_NO_PAD.encode([3u8; 32])});
        let wrong_alg = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode([3u8; 32])});
        let doc = serde_json::json!({"keys": [off_curve, small_rsa, hmac, encryption, wrong_alg]});
        let err = KeySet::parse(doc.to_string().as_bytes())
            .err()
            .expect("no usable key");
        let text = err.to_string();
        for reason in [
            "not a valid public key",
            "2048",
            "symmetric",
            "`sig`",
            "does not fit",
        ] {
            assert!(text.contains(reason), "{reason} missing from: {text}");
        }
    }
}
