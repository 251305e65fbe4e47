//! Real keys for every accepted algorithm and tokens signed with them (or crafted to attack
//! a verifier). Self-contained, so benchmarks can include it too.

#![allow(dead_code)]

use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
    KeyPair as _,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

pub const ISSUER: &str = "https://idp.test";
pub const AUDIENCE: &str = "orders-api";

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims that pass: our issuer and audience, valid for five minutes.
pub fn claims(extra: Value) -> Value {
    let mut claims = json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "iat": now(),
        "exp": now() + 300,
    });
    if let (Some(base), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            if v.is_null() {
                base.remove(k);
            } else {
                base.insert(k.clone(), v.clone());
            }
        }
    }
    claims
}

/// A signing key and its public JWK.
#[derive(Clone)]
pub struct TestKey {
    pub alg: Algorithm,
    pub alg_name: &'static str,
    pub kid: String,
    pub encoding: EncodingKey,
    pub jwk: Value,
}

impl TestKey {
    /// A fresh key for `alg` (RSA keys are 2048 bits).
    pub fn generate(alg_name: &'static str, kid: &str) -> Self {
        let alg: Algorithm = alg_name.parse().unwrap();
        let (encoding, mut jwk) = match alg_name {
            "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => {
                let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
                let pkcs8 = pair.as_der().unwrap();
                let public = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
                (
                    EncodingKey::from_rsa_der(pkcs1_from_pkcs8(pkcs8.as_ref())),
                    json!({"kty": "RSA", "n": b64(&public.n), "e": b64(&public.e)}),
                )
            }
            "ES256" | "ES384" => {
                let (signing, size, crv) = if alg_name == "ES256" {
                    (&ECDSA_P256_SHA256_FIXED_SIGNING, 32, "P-256")
                } else {
                    (&ECDSA_P384_SHA384_FIXED_SIGNING, 48, "P-384")
                };
                let pair = EcdsaKeyPair::generate(signing).unwrap();
                let pkcs8 = pair.to_pkcs8v1().unwrap();
                let point = pair.public_key().as_ref().to_vec();
                (
                    EncodingKey::from_ec_der(pkcs8.as_ref()),
                    json!({"kty": "EC", "crv": crv, "x": b64(&point[1..1 + size]), "y": b64(&point[1 + size..])}),
                )
            }
            "EdDSA" => {
                let pair = Ed25519KeyPair::generate().unwrap();
                let pkcs8 = pair.to_pkcs8().unwrap();
                (
                    EncodingKey::from_ed_der(pkcs8.as_ref()),
                    json!({"kty": "OKP", "crv": "Ed25519", "x": b64(pair.public_key().as_ref())}),
                )
            }
            other => panic!("no test key for {other}"),
        };
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        Self {
            alg,
            alg_name,
            kid: kid.to_owned(),
            encoding,
            jwk,
        }
    }

    /// One key per algorithm, generated once per test process.
    pub fn shared(alg_name: &'static str) -> Self {
        static KEYS: OnceLock<Mutex<Vec<TestKey>>> = OnceLock::new();
        let keys = KEYS.get_or_init(|| Mutex::new(Vec::new()));
        let mut keys = keys.lock().unwrap();
        if let Some(k) = keys.iter().find(|k| k.alg_name == alg_name) {
            return k.clone();
        }
        let key = Self::generate(alg_name, &format!("{}-key", alg_name.to_lowercase()));
        keys.push(key.clone());
        key
    }

    /// A token with the usual header (`alg`, `kid`, `typ: JWT`).
    pub fn token(&self, claims: &Value) -> String {
        let header = json!({"alg": self.alg_name, "kid": self.kid, "typ": "JWT"});
        self.sign_raw(&header.to_string(), &claims.to_string())
    }

    /// Signs exactly these header and claims texts.
    pub fn sign_raw(&self, header: &str, claims: &str) -> String {
        let message = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &self.encoding, self.alg).unwrap();
        format!("{message}.{signature}")
    }
}

/// An unsigned compact JWS with exactly these texts and this signature part.
pub fn unsigned(header: &str, claims: &str, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(header.as_bytes()),
        b64(claims.as_bytes())
    )
}

/// The RSAPrivateKey inside a PKCS#8 PrivateKeyInfo (RFC 5208): the third element's contents.
fn pkcs1_from_pkcs8(der: &[u8]) -> &[u8] {
    fn tlv(bytes: &[u8]) -> (u8, &[u8], &[u8]) {
        let tag = bytes[0];
        let (len, header) = if bytes[1] & 0x80 == 0 {
            (bytes[1] as usize, 2)
        } else {
            let n = (bytes[1] & 0x7f) as usize;
            let len = bytes[2..2 + n]
                .iter()
                .fold(0usize, |acc, b| acc << 8 | *b as usize);
            (len, 2 + n)
        };
        (tag, &bytes[header..header + len], &bytes[header + len..])
    }
    let (_, info, _) = tlv(der);
    let (_, _version, rest) = tlv(info);
    let (_, _algorithm, rest) = tlv(rest);
    let (tag, key, _) = tlv(rest);
    assert_eq!(tag, 0x04, "PKCS#8 private key is an OCTET STRING");
    key
}
