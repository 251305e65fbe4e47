//! The JWKS document parser: any bytes an IdP (or a file) serves become a key set or an
//! error, and every kept key can be asked to verify any signature without panicking.

#![no_main]

use jsonwebtoken::Algorithm;
use libfuzzer_sys::fuzz_target;
use tokengate::auth::keys::KeySet;

const ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

fuzz_target!(|data: &[u8]| {
    let Ok(set) = KeySet::parse(data) else {
        return;
    };
    assert!(!set.keys.is_empty(), "a key set without keys was accepted");
    for key in &set.keys {
        assert!(set.contains(key.fingerprint));
        if let Some(kid) = key.kid.as_deref() {
            assert!(set.has_kid(kid));
        }
        for alg in ALGORITHMS {
            let fits = key.verifies(alg);
            let candidate = set
                .candidates(key.kid.as_deref(), alg)
                .any(|k| k.fingerprint == key.fingerprint);
            assert_eq!(fits, candidate);
            if fits {
                // A garbage signature never verifies, and never panics.
                assert!(!key.verify(alg, b"header.payload", &[0u8; 64]));
                assert!(!key.verify(alg, b"header.payload", &[]));
            }
        }
    }
});
