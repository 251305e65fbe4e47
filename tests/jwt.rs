//! Bearer JWT verification end to end: real keys for every algorithm, a real JWKS server, a
//! real upstream; the accept paths and the classic attacks.

mod support;

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;
use support::tokens::{
    AUDIENCE, ISSUER, JwksServer, TestKey, b64, claims, issuer_yaml, now, unsigned,
};
use support::{Gateway, Upstream, client, metric_value, raw_request};

const ALGORITHMS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

const ROUTES: &str = "routes:
  - name: public
    match: { path_prefix: /public }
    upstream: app
    auth: none
  - name: orders
    match: { path_prefix: /orders }
    upstream: app
    auth:
      scopes: { all_of: [orders.read] }
    forward:
      claims_to_headers: { sub: X-Auth-Subject, groups: X-Auth-Groups, org: X-Auth-Org }
  - name: any
    match: { path_prefix: /any }
    upstream: app
";

struct Setup {
    gw: Gateway,
    upstream: Upstream,
    _jwks: JwksServer,
}

async fn setup(keys: &[&TestKey], issuer_extra: &str, routes: &str) -> Setup {
    let upstream = Upstream::echo().await;
    let jwks = JwksServer::start(keys).await;
    let yaml = format!(
        "upstreams:\n  app:\n    endpoints: [\"{}\"]\nissuers:\n{}{routes}",
        upstream.url(),
        issuer_yaml("corp", ISSUER, &jwks.url(), issuer_extra),
    );
    let gw = Gateway::start(&yaml).await;
    gw.wait_ready().await;
    Setup {
        gw,
        upstream,
        _jwks: jwks,
    }
}

async fn get(gw: &Gateway, path: &str, token: &str) -> reqwest::Response {
    client()
        .get(gw.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// Asserts a 401 invalid_token whose challenge does not echo the token.
async fn assert_invalid(gw: &Gateway, token: &str, what: &str) {
    let response = get(gw, "/orders/1", token).await;
    assert_eq!(response.status(), 401, "{what}: expected 401");
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.contains("error=\"invalid_token\""),
        "{what}: {challenge}"
    );
    let body = response.text().await.unwrap();
    for part in token.split('.').filter(|p| p.len() > 8) {
        assert!(
            !challenge.contains(part) && !body.contains(part),
            "{what}: the token was echoed"
        );
    }
}

fn good_claims() -> serde_json::Value {
    claims(json!({"scope": "orders.read profile"}))
}

#[tokio::test]
async fn tokens_of_every_algorithm_are_verified_and_forwarded_with_identity_headers() {
    let keys: Vec<TestKey> = ALGORITHMS.iter().map(|a| TestKey::shared(a)).collect();
    let refs: Vec<&TestKey> = keys.iter().collect();
    let s = setup(&refs, "", ROUTES).await;
    for key in &keys {
        let token = key.token(&claims(json!({
            "scope": "orders.read",
            "sub": format!("user-{}", key.alg_name),
            "groups": ["a", "b"],
            "org": {"id": 7},
        })));
        let response = client()
            .get(s.gw.url("/orders/1"))
            .bearer_auth(&token)
            .header("x-auth-subject", "forged-admin")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{} token refused", key.alg_name);
    }
    let seen = s.upstream.seen();
    assert_eq!(seen.len(), ALGORITHMS.len());
    for (request, key) in seen.iter().zip(&keys) {
        assert_eq!(
            request.headers["x-auth-subject"],
            format!("user-{}", key.alg_name).as_str()
        );
        assert_eq!(request.headers.get_all("x-auth-subject").iter().count(), 1);
        assert_eq!(request.headers["x-auth-groups"], "a b");
        assert_eq!(request.headers["x-auth-org"], "{\"id\":7}");
        assert!(
            request.headers.contains_key("authorization"),
            "kept unless strip_authorization"
        );
    }
}

#[tokio::test]
async fn missing_scope_gets_403_naming_it_and_missing_token_gets_a_bare_401() {
    let key = TestKey::shared("ES256");
    let s = setup(&[&key], "", ROUTES).await;
    let no_scope = key.token(&claims(json!({"scope": "profile"})));
    let response = get(&s.gw, "/orders/1", &no_scope).await;
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"tokengate\", error=\"insufficient_scope\", scope=\"orders.read\""
    );
    // A route without rules takes any valid token from any issuer.
    assert_eq!(get(&s.gw, "/any/x", &no_scope).await.status(), 200);
    let bare = client().get(s.gw.url("/orders/1")).send().await.unwrap();
    assert_eq!(bare.status(), 401);
    assert_eq!(
        bare.headers()["www-authenticate"],
        "Bearer realm=\"tokengate\""
    );
    assert_eq!(s.upstream.seen().len(), 1);
}

#[tokio::test]
async fn the_classic_attacks_are_refused() {
    let key = TestKey::shared("RS256");
    let s = setup(&[&key], "", ROUTES).await;
    let good = good_claims().to_string();
    let header = json!({"alg": "RS256", "kid": key.kid, "typ": "JWT"}).to_string();
    let signed = key.sign_raw(&header, &good);
    let (message, signature) = signed.rsplit_once('.').unwrap();
    assert_eq!(
        get(&s.gw, "/orders/1", &signed).await.status(),
        200,
        "control"
    );

    let attacker = TestKey::generate("RS256", &key.kid);
    let hmac_with_public_key = {
        let secret = key.jwk.to_string();
        let h = json!({"alg": "HS256", "kid": key.kid}).to_string();
        let m = format!("{}.{}", b64(h.as_bytes()), b64(good.as_bytes()));
        let sig = jsonwebtoken::crypto::sign(
            m.as_bytes(),
            &EncodingKey::from_secret(secret.as_bytes()),
            Algorithm::HS256,
        )
        .unwrap();
        format!("{m}.{sig}")
    };
    let embedded_jwk = {
        let h = json!({"alg": "RS256", "jwk": attacker.jwk}).to_string();
        attacker.sign_raw(&h, &good)
    };
    let jku = {
        let h = json!({"alg": "RS256", "kid": "evil", "jku": "http://127.0.0.1:1/jwks.json"})
            .to_string();
        TestKey::generate("RS256", "evil").sign_raw(&h, &good)
    };
    let tampered = {
        let forged = claims(json!({"scope": "orders.read", "sub": "admin"})).to_string();
        format!(
            "{}.{}.{signature}",
            message.split('.').next().unwrap(),
            b64(forged.as_bytes())
        )
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "alg none",
            unsigned(&json!({"alg": "none"}).to_string(), &good, ""),
        ),
        (
            "alg none with a signature",
            unsigned(&json!({"alg": "none"}).to_string(), &good, "c2ln"),
        ),
        ("RS/HS confusion", hmac_with_public_key),
        ("stripped signature", format!("{message}.")),
        ("no signature part", message.to_owned()),
        ("wrong key, same kid", attacker.token(&good_claims())),
        ("embedded jwk", embedded_jwk),
        ("jku to another key set", jku),
        ("tampered claims", tampered),
        ("five parts", format!("{signed}.x.y")),
        (
            "expired",
            key.token(&claims(json!({"scope": "orders.read", "exp": now() - 120}))),
        ),
        (
            "future nbf",
            key.token(&claims(json!({"scope": "orders.read", "nbf": now() + 600}))),
        ),
        (
            "issued in the future",
            key.token(&claims(json!({"scope": "orders.read", "iat": now() + 600}))),
        ),
        (
            "wrong issuer",
            key.token(&claims(
                json!({"scope": "orders.read", "iss": "https://evil.test"}),
            )),
        ),
        (
            "wrong audience",
            key.token(&claims(json!({"scope": "orders.read", "aud": "other-api"}))),
        ),
        (
            "no audience",
            key.token(&claims(json!({"scope": "orders.read", "aud": null}))),
        ),
        (
            "no expiry",
            key.token(&claims(json!({"scope": "orders.read", "exp": null}))),
        ),
        (
            "exp as a string",
            key.token(&claims(
                json!({"scope": "orders.read", "exp": (now() + 300).to_string()}),
            )),
        ),
        (
            "nbf as a string",
            key.token(&claims(json!({"scope": "orders.read", "nbf": "0"}))),
        ),
        (
            "crit header",
            key.sign_raw(
                &json!({"alg": "RS256", "kid": key.kid, "crit": ["exp"], "exp": 1}).to_string(),
                &good,
            ),
        ),
        (
            "typ JOSE",
            key.sign_raw(
                &json!({"alg": "RS256", "kid": key.kid, "typ": "JOSE"}).to_string(),
                &good,
            ),
        ),
        (
            "duplicate claims",
            key.sign_raw(&header, &good.replacen("{", "{\"sub\":\"admin\",", 1)),
        ),
        (
            "duplicate header members",
            key.sign_raw(
                &format!(
                    "{{\"alg\":\"RS256\",\"alg\":\"none\",\"kid\":\"{}\"}}",
                    key.kid
                ),
                &good,
            ),
        ),
        ("not base64", "abc!.def.ghi".to_owned()),
        ("not JSON", unsigned("not json", &good, "c2ln")),
    ];
    for (what, token) in &cases {
        assert_invalid(&s.gw, token, what).await;
    }
    assert_eq!(
        s.upstream.seen().len(),
        1,
        "only the control request reached the upstream"
    );
}

#[tokio::test]
async fn an_algorithm_outside_the_allow_list_or_unfit_for_the_key_is_refused() {
    let rs = TestKey::shared("RS256");
    let ps = TestKey::shared("PS256");
    let s = setup(&[&rs, &ps], "    algorithms: [RS256]\n", ROUTES).await;
    assert_eq!(
        get(&s.gw, "/orders/1", &rs.token(&good_claims()))
            .await
            .status(),
        200
    );
    assert_invalid(
        &s.gw,
        &ps.token(&good_claims()),
        "PS256 not in the allow-list",
    )
    .await;
    // An ES256 signature presented under the RSA key's kid.
    let es = TestKey::generate("ES256", &rs.kid);
    assert_invalid(&s.gw, &es.token(&good_claims()), "ES256 under an RSA kid").await;
}

#[tokio::test]
async fn leeway_applies_to_exp_and_nbf() {
    let key = TestKey::shared("ES256");
    let s = setup(&[&key], "    leeway: 30s\n", ROUTES).await;
    let just_expired = key.token(&claims(json!({"scope": "orders.read", "exp": now() - 10})));
    assert_eq!(get(&s.gw, "/orders/1", &just_expired).await.status(), 200);
    let almost_valid = key.token(&claims(json!({"scope": "orders.read", "nbf": now() + 10})));
    assert_eq!(get(&s.gw, "/orders/1", &almost_valid).await.status(), 200);
    assert_invalid(
        &s.gw,
        &key.token(&claims(json!({"scope": "orders.read", "exp": now() - 60}))),
        "past leeway",
    )
    .await;
}

#[tokio::test]
async fn scopes_claims_and_issuer_rules_are_enforced_per_route() {
    let corp = TestKey::shared("ES256");
    let partner = TestKey::shared("EdDSA");
    let upstream = Upstream::echo().await;
    let corp_jwks = JwksServer::start(&[&corp]).await;
    let partner_jwks = JwksServer::start(&[&partner]).await;
    let yaml = format!(
        "upstreams:\n  app:\n    endpoints: [\"{}\"]\nissuers:\n{}{}\
routes:
  - name: roles
    match: {{ path_prefix: /roles }}
    upstream: app
    auth:
      issuers: [partner]
      scopes: {{ any_of: [admin, auditor] }}
      claims: {{ tenant: acme, level: 3, groups: ops }}
  - name: scp
    match: {{ path_prefix: /scp }}
    upstream: app
    auth:
      issuers: [corp]
      scopes: {{ all_of: [read, write] }}
",
        upstream.url(),
        issuer_yaml("corp", ISSUER, &corp_jwks.url(), "    scopes_claim: scp\n"),
        issuer_yaml(
            "partner",
            "https://partner.test",
            &partner_jwks.url(),
            "    scopes_claim: realm_access.roles\n"
        ),
    );
    let gw = Gateway::start(&yaml).await;
    gw.wait_ready().await;
    let partner_claims = |extra: serde_json::Value| {
        let mut c = claims(
            json!({"iss": "https://partner.test", "realm_access": {"roles": ["auditor"]},
                                   "tenant": "acme", "level": 3, "groups": ["dev", "ops"]}),
        );
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let cases = [
        (json!({}), 200, "meets every rule"),
        (json!({"tenant": "evil"}), 403, "wrong tenant"),
        (json!({"level": "3"}), 403, "a string is not the integer 3"),
        (json!({"groups": ["dev"]}), 403, "not in the ops group"),
        (
            json!({"realm_access": {"roles": ["user"]}}),
            403,
            "neither admin nor auditor",
        ),
    ];
    for (extra, expected, what) in cases {
        let token = partner.token(&partner_claims(extra));
        assert_eq!(
            get(&gw, "/roles/1", &token).await.status(),
            expected,
            "{what}"
        );
    }
    // A corp token is valid, but not from an issuer this route accepts.
    let corp_token = corp.token(&claims(json!({"scp": ["read", "write"], "tenant": "acme"})));
    assert_invalid_on(&gw, "/roles/1", &corp_token).await;
    assert_eq!(get(&gw, "/scp/1", &corp_token).await.status(), 200);
    let partial = corp.token(&claims(json!({"scp": ["read"]})));
    let response = get(&gw, "/scp/1", &partial).await;
    assert_eq!(response.status(), 403);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("scope=\"write\"")
    );
    assert_eq!(upstream.seen().len(), 2);
}

async fn assert_invalid_on(gw: &Gateway, path: &str, token: &str) {
    let response = get(gw, path, token).await;
    assert_eq!(response.status(), 401);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
}

#[tokio::test]
async fn decisions_and_cache_use_are_counted() {
    let key = TestKey::shared("ES256");
    let s = setup(&[&key], "", ROUTES).await;
    let token = key.token(&good_claims());
    for _ in 0..3 {
        assert_eq!(get(&s.gw, "/orders/1", &token).await.status(), 200);
    }
    get(
        &s.gw,
        "/orders/1",
        &key.token(&claims(json!({"scope": "x"}))),
    )
    .await;
    get(
        &s.gw,
        "/orders/1",
        &key.token(&claims(json!({"scope": "orders.read", "exp": now() - 600}))),
    )
    .await;
    get(
        &s.gw,
        "/orders/1",
        &TestKey::generate("ES256", "nobody").token(&good_claims()),
    )
    .await;
    client().get(s.gw.url("/public/x")).send().await.unwrap();
    client().get(s.gw.url("/orders/x")).send().await.unwrap();

    let text = s.gw.metrics().await;
    let decision = |route, issuer, result| {
        metric_value(
            &text,
            "tokengate_auth_decisions_total",
            &[("route", route), ("issuer", issuer), ("result", result)],
        )
    };
    assert_eq!(decision("orders", "corp", "allowed"), Some(3.0), "{text}");
    assert_eq!(decision("orders", "corp", "insufficient_scope"), Some(1.0));
    assert_eq!(decision("orders", "corp", "expired"), Some(1.0));
    assert_eq!(decision("orders", "corp", "unknown_key"), Some(1.0));
    assert_eq!(decision("orders", "_none", "missing_token"), Some(1.0));
    assert_eq!(decision("public", "_none", "anonymous"), Some(1.0));
    let cache = |result| {
        metric_value(
            &text,
            "tokengate_token_cache_requests_total",
            &[("result", result)],
        )
    };
    // A token is cached on its second verification: miss, miss, hit.
    assert_eq!(cache("hit"), Some(1.0));
    assert_eq!(cache("miss"), Some(5.0));
    assert_eq!(
        metric_value(&text, "tokengate_jwks_keys", &[("issuer", "corp")]),
        Some(1.0)
    );
    assert!(
        metric_value(
            &text,
            "tokengate_jwks_last_success_timestamp_seconds",
            &[("issuer", "corp")]
        )
        .is_some_and(|t| t > 1.7e9)
    );
    assert_eq!(
        metric_value(
            &text,
            "tokengate_jwks_refresh_total",
            &[("issuer", "corp"), ("result", "ok")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_cached_token_is_still_checked_against_each_route() {
    let key = TestKey::shared("ES256");
    let s = setup(&[&key], "", ROUTES).await;
    let profile_only = key.token(&claims(json!({"scope": "profile"})));
    // Cached on its second verification.
    for _ in 0..2 {
        assert_eq!(get(&s.gw, "/any/1", &profile_only).await.status(), 200);
    }
    // A route needing orders.read still refuses it, from the cache.
    assert_eq!(get(&s.gw, "/orders/1", &profile_only).await.status(), 403);
    let text = s.gw.metrics().await;
    let cache = |result| {
        metric_value(
            &text,
            "tokengate_token_cache_requests_total",
            &[("result", result)],
        )
    };
    assert_eq!((cache("miss"), cache("hit")), (Some(2.0), Some(1.0)));
}

#[tokio::test]
async fn strip_authorization_removes_the_verified_token() {
    let key = TestKey::shared("ES256");
    let routes = "routes:
  - name: orders
    match: { path_prefix: /orders }
    upstream: app
    forward: { strip_authorization: true, claims_to_headers: { sub: X-Auth-Subject } }
";
    let s = setup(&[&key], "", routes).await;
    assert_eq!(
        get(&s.gw, "/orders/1", &key.token(&good_claims()))
            .await
            .status(),
        200
    );
    let seen = s.upstream.only_request();
    assert!(!seen.headers.contains_key("authorization"));
    assert_eq!(seen.headers["x-auth-subject"], "user-1");
}

#[tokio::test]
async fn tokens_are_never_taken_from_the_query_string_and_oversized_ones_are_refused() {
    let key = TestKey::shared("ES256");
    let s = setup(&[&key], "", ROUTES).await;
    let token = key.token(&good_claims());
    let via_query = client()
        .get(s.gw.url(&format!("/orders/1?access_token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(via_query.status(), 401);
    let huge = key.token(&claims(
        json!({"scope": "orders.read", "pad": "x".repeat(9000)}),
    ));
    let response = raw_request(
        s.gw.addr,
        format!("GET /orders/1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {huge}\r\nConnection: close\r\n\r\n").as_bytes(),
        std::time::Duration::from_secs(5),
    )
    .await;
    assert!(
        response.starts_with("HTTP/1.1 401"),
        "{}",
        &response[..response.len().min(200)]
    );
    assert!(s.upstream.seen().is_empty());
}

#[tokio::test]
async fn audience_may_be_an_array() {
    let key = TestKey::shared("ES256");
    let s = setup(&[&key], "", ROUTES).await;
    let token = key.token(&claims(
        json!({"scope": "orders.read", "aud": ["other", AUDIENCE]}),
    ));
    assert_eq!(get(&s.gw, "/orders/1", &token).await.status(), 200);
}
