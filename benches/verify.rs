//! The cost of authentication: full verification per algorithm (a cold token: header, claims,
//! signature, dates), a warm token served from the verified-token cache, and the base64url
//! decoding every new token pays for, with the SIMD decoder verify uses and with the `base64`
//! crate's scalar one; and the token cache's lookup beside the SHA-256 of a token, the price of
//! a digest as its key.
//!
//!     cargo bench --bench verify
//!     cargo bench --bench verify -- base64url
//!     cargo bench --bench verify -- token_cache

use std::hint::black_box;
use std::path::Path;
use std::time::SystemTime;

use criterion::{Criterion, criterion_group, criterion_main};
use http::HeaderMap;
use http::header::{AUTHORIZATION, HeaderValue};
use serde_json::json;
use tokengate::auth::cache::TokenCache;
use tokengate::auth::{Issuers, authenticate, verify};
use tokengate::metrics::Metrics;

#[path = "../tests/support/keys.rs"]
mod keys;

use keys::{TestKey, claims};

const ALGORITHMS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

fn verification(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let keys: Vec<TestKey> = ALGORITHMS
        .iter()
        .map(|alg| TestKey::generate(alg, &format!("{alg}-kid")))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let jwks = json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
    std::fs::write(dir.path().join("jwks.json"), jwks.to_string()).unwrap();
    let yaml = format!(
        "issuers:\n  - name: corp\n    issuer: \"{}\"\n    audiences: [{}]\n    jwks: {{ file: \"{}\" }}\n\
         upstreams:\n  app:\n    endpoints: [\"http://127.0.0.1:9\"]\n\
         routes:\n  - name: orders\n    match: {{ path_prefix: /orders }}\n    upstream: app\n    auth:\n      scopes: {{ all_of: [orders.read] }}\n  - name: billing\
         \n    match: {{ path_prefix: /billing }}\n    upstream: app\n    auth:\n      scopes: {{ all_of: [orders.read] }}\n      claims: {{ org.tier: gold, realm_access.roles: billing }}\n",
        keys::ISSUER,
        keys::AUDIENCE,
        dir.path().join("jwks.json").display()
    );
    let config = tokengate::config::parse(Path::new("bench.yaml"), &yaml).unwrap();
    let metrics = Metrics::new();
    let issuers = Issuers::start(&config.issuers, &metrics).unwrap();
    let route = &config.routes[0];
    let token_claims = claims(json!({
        "scope": "orders.read profile", "exp": keys::now() + 86_400,
        "org": {"tier": "gold"}, "realm_access": {"roles": ["staff", "billing"]}
    }));

    let mut cold = c.benchmark_group("verify/cold");
    for key in &keys {
        let token = key.token(&token_claims);
        cold.bench_function(key.alg_name, |b| {
            b.iter(|| {
                runtime
                    .block_on(verify::verify(
                        black_box(token.as_bytes()),
                        &issuers,
                        None,
                        SystemTime::now(),
                        false,
                    ))
                    .unwrap()
            })
        });
    }
    cold.finish();

    // The floor under `verify/cold`: the signature check alone (aws-lc, key parsed once), on
    // the same tokens. The difference is what the rest of the verify path costs.
    let key_set = tokengate::auth::keys::KeySet::parse(jwks.to_string().as_bytes()).unwrap();
    let mut floor = c.benchmark_group("verify/signature_only");
    for key in &keys {
        let token = key.token(&token_claims);
        let (message, signature) = token.rsplit_once('.').unwrap();
        let signature =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, signature)
                .unwrap();
        let verifier = key_set.candidates(Some(&key.kid), key.alg).next().unwrap();
        floor.bench_function(key.alg_name, |b| {
            b.iter(|| {
                assert!(verifier.verify(
                    key.alg,
                    black_box(message.as_bytes()),
                    black_box(&signature)
                ))
            })
        });
    }
    floor.finish();

    let cache = TokenCache::new();
    let token = keys[0].token(&token_claims);
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    let hit = |headers: &HeaderMap, route| {
        let outcome =
            runtime.block_on(authenticate(headers, route, &issuers, &cache, None, |_| {}));
        assert!(outcome.result.is_ok());
    };
    // Cached on its second verification.
    hit(&headers, route);
    hit(&headers, route);
    c.bench_function("verify/warm_cache_hit_with_route_rules", |b| {
        b.iter(|| hit(black_box(&headers), route))
    });
    // The same, on a route that also checks two claims by dotted path.
    let billing = &config.routes[1];
    c.bench_function("verify/warm_cache_hit_with_dotted_claim_rules", |b| {
        b.iter(|| hit(black_box(&headers), billing))
    });

    // The cache is keyed by the whole token. The other key a cache of bearer tokens could
    // safely have is a cryptographic digest of it (32 bytes instead of 600, compared in one
    // cache line); its price is the digest on every request, measured here beside a lookup
    // among 10 000 cached tokens of the same size, taken in a scattered order.
    let verified = runtime
        .block_on(verify::verify(
            token.as_bytes(),
            &issuers,
            None,
            SystemTime::now(),
            false,
        ))
        .map(std::sync::Arc::new)
        .unwrap();
    let many = TokenCache::new();
    let tokens: Vec<Vec<u8>> = (0..10_000)
        .map(|i| {
            let mut t = token.as_bytes().to_vec();
            let end = t.len();
            t[end - 12..].copy_from_slice(format!("{i:012}").as_bytes());
            t
        })
        .collect();
    for t in &tokens {
        many.offer(t, &verified);
        many.offer(t, &verified);
    }
    let mut group = c.benchmark_group("token_cache");
    let mut next = 0;
    group.bench_function("lookup_among_10000_tokens", |b| {
        b.iter(|| {
            next = (next + 7_919) % tokens.len();
            assert!(many.get(black_box(&tokens[next])).is_some());
        })
    });
    group.bench_function("lookup_of_one_token", |b| {
        b.iter(|| assert!(many.get(black_box(&tokens[0])).is_some()))
    });
    group.bench_function("sha256_of_a_token", |b| {
        b.iter(|| {
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, black_box(token.as_bytes()))
        })
    });
    group.finish();
}

/// A new RS256 token's signature (256 bytes) and claims (140), decoded as verify decodes them.
fn base64url(c: &mut Criterion) {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signature = URL_SAFE_NO_PAD.encode([7u8; 256]);
    let claims = URL_SAFE_NO_PAD.encode([b'x'; 140]);
    let mut buffer = [0u8; 1024];
    let mut group = c.benchmark_group("base64url/signature_and_claims");
    group.bench_function("base64-simd", |b| {
        b.iter(|| {
            let simd = base64_simd::URL_SAFE_NO_PAD;
            let out = base64_simd::Out::from_slice(&mut buffer[..256]);
            let decoded = simd.decode(black_box(signature.as_bytes()), out).unwrap();
            black_box(decoded.len());
            black_box(simd.decode_to_vec(black_box(claims.as_bytes())).unwrap())
        })
    });
    group.bench_function("base64", |b| {
        b.iter(|| {
            let length = URL_SAFE_NO_PAD
                .decode_slice(black_box(signature.as_bytes()), &mut buffer)
                .unwrap();
            black_box(length);
            black_box(
                URL_SAFE_NO_PAD
                    .decode(black_box(claims.as_bytes()))
                    .unwrap(),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, verification, base64url);
criterion_main!(benches);
