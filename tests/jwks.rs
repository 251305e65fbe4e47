//! Key sets over time: rotation, outages, the unknown-kid refetch bound, staleness, the disk
//! cache, watched files, ETags and Cache-Control.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use support::tokens::{ISSUER, JwksServer, Mode, TestKey, claims, issuer_yaml, jwks};
use support::{Gateway, Upstream, client, eventually, metric_value, status_with};

const ROUTES: &str = "routes:
  - name: api
    match: { path_prefix: / }
    upstream: app
";

fn config(upstream: &Upstream, issuer: &str) -> String {
    format!(
        "upstreams:\n  app:\n    endpoints: [\"{}\"]\nissuers:\n{issuer}{ROUTES}",
        upstream.url()
    )
}

/// A distinct valid token each call, so the verified-token cache cannot answer for it.
fn fresh(key: &TestKey) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    key.token(&claims(
        json!({"jti": format!("t{}", N.fetch_add(1, Ordering::SeqCst))}),
    ))
}

#[tokio::test]
async fn keys_rotate_without_a_failed_request() {
    let old = TestKey::generate("ES256", "2026-old");
    let new = TestKey::generate("ES256", "2026-new");
    let upstream = Upstream::echo().await;
    let idp = JwksServer::start(&[&old]).await;
    let gw = Gateway::start(&config(
        &upstream,
        &issuer_yaml("corp", ISSUER, &idp.url(), ""),
    ))
    .await;
    gw.wait_ready().await;

    let failures = Arc::new(AtomicUsize::new(0));
    let current = Arc::new(std::sync::Mutex::new(old.clone()));
    let traffic = {
        let (failures, current, url) = (failures.clone(), current.clone(), gw.url("/x"));
        tokio::spawn(async move {
            let http = client();
            for _ in 0..300 {
                let token = fresh(&current.lock().unwrap().clone());
                let response = http.get(&url).bearer_auth(token).send().await.unwrap();
                if response.status() != 200 {
                    failures.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The IdP publishes the new key, then starts signing with it at once.
    idp.serve(&[&old, &new]);
    *current.lock().unwrap() = new.clone();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Later it retires the old key.
    idp.serve(&[&new]);
    traffic.await.unwrap();
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "a request failed during rotation"
    );
}

#[tokio::test]
async fn the_last_good_keys_survive_an_outage_of_any_kind() {
    let key = TestKey::shared("ES256");
    let upstream = Upstream::echo().await;
    let idp = JwksServer::start(&[&key]).await;
    let extra = "      refresh_interval: 300ms\n";
    let yaml = config(
        &upstream,
        &issuer_yaml("corp", ISSUER, &idp.url(), "").replace(
            "      min_refresh_interval",
            &format!("{extra}      min_refresh_interval"),
        ),
    );
    let gw = Gateway::start(&yaml).await;
    gw.wait_ready().await;
    for mode in [
        Mode::Fail,
        Mode::Garbage,
        Mode::Hang,
        Mode::Serve {
            body: "{\"keys\":[]}".into(),
            max_age: None,
        },
    ] {
        idp.set(mode);
        let before = idp.fetches();
        eventually("a refresh attempt", Duration::from_secs(5), async || {
            idp.fetches() > before
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(status_with(&gw, &fresh(&key)).await, 200);
    }
    let text = gw.metrics().await;
    let errors = metric_value(
        &text,
        "tokengate_jwks_refresh_total",
        &[("issuer", "corp"), ("result", "error")],
    );
    assert!(errors.is_some_and(|n| n >= 3.0), "{text}");
    assert_eq!(
        metric_value(&text, "tokengate_jwks_keys", &[("issuer", "corp")]),
        Some(1.0)
    );
}

#[tokio::test]
async fn unknown_kids_cause_at_most_one_refetch_per_cooldown() {
    let key = TestKey::shared("ES256");
    let upstream = Upstream::echo().await;
    let idp = JwksServer::start(&[&key]).await;
    let issuer = issuer_yaml("corp", ISSUER, &idp.url(), "")
        .replace("min_refresh_interval: 1s", "min_refresh_interval: 30s");
    let gw = Gateway::start(&config(&upstream, &issuer)).await;
    gw.wait_ready().await;
    let before = idp.fetches();
    let mut requests = Vec::new();
    for i in 0..40 {
        let stranger = TestKey::generate("ES256", &format!("unknown-{i}"));
        let url = gw.url("/x");
        requests.push(tokio::spawn(async move {
            client()
                .get(url)
                .bearer_auth(fresh(&stranger))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for request in requests {
        assert_eq!(request.await.unwrap(), 401);
    }
    assert!(
        idp.fetches() - before <= 1,
        "{} refetches for 40 unknown kids",
        idp.fetches() - before
    );
    let text = gw.metrics().await;
    assert_eq!(
        metric_value(
            &text,
            "tokengate_auth_decisions_total",
            &[("issuer", "corp"), ("result", "unknown_key")]
        ),
        Some(40.0)
    );
}

#[tokio::test]
async fn no_request_waits_longer_than_fetch_timeout_for_a_refetch() {
    let key = TestKey::shared("ES256");
    let upstream = Upstream::echo().await;
    let idp = JwksServer::start(&[&key]).await;
    let gw = Gateway::start(&config(
        &upstream,
        &issuer_yaml("corp", ISSUER, &idp.url(), ""),
    ))
    .await;
    gw.wait_ready().await;
    idp.set(Mode::Hang);
    let started = Instant::now();
    let stranger = TestKey::generate("ES256", "not-yet-published");
    assert_eq!(status_with(&gw, &fresh(&stranger)).await, 401);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_millis(1800),
        "waited {waited:?} with fetch_timeout 1s"
    );
    // Known keys are not held up meanwhile.
    let started = Instant::now();
    assert_eq!(status_with(&gw, &fresh(&key)).await, 200);
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn a_cached_token_whose_key_left_the_set_is_refused() {
    let leaving = TestKey::generate("ES256", "leaving");
    let staying = TestKey::generate("ES256", "staying");
    let upstream = Upstream::echo().await;
    let idp = JwksServer::start(&[&leaving, &staying]).await;
    let issuer = issuer_yaml("corp", ISSUER, &idp.url(), "").replace(
        "      min_refresh_interval",
        "      refresh_interval: 200ms\n      min_refresh_interval",
    );
    let gw = Gateway::start(&config(&upstream, &issuer)).await;
    gw.wait_ready().await;
    let token = fresh(&leaving);
    assert_eq!(status_with(&gw, &token).await, 200);
    assert_eq!(
        status_with(&gw, &token).await,
        200,
        "verified again, now cached"
    );
    assert_eq!(status_with(&gw, &token).await, 200, "served from the cache");
    idp.serve(&[&staying]);
    eventually(
        "the cached token to be refused",
        Duration::from_secs(5),
        async || status_with(&gw, &token).await == 401,
    )
    .await;
    assert_eq!(status_with(&gw, &fresh(&staying)).await, 200);
}

#[tokio::test]
async fn keys_older_than_max_stale_give_503_with_retry_after() {
    let key = TestKey::shared("ES256");
    let upstream = Upstream::echo().await;
    let idp = JwksServer::start(&[&key]).await;
    let issuer = issuer_yaml("corp", ISSUER, &idp.url(), "").replace(
        "      min_refresh_interval",
        "      refresh_interval: 200ms\n      max_stale: 1s\n      min_refresh_interval",
    );
    let gw = Gateway::start(&config(&upstream, &issuer)).await;
    gw.wait_ready().await;
    let token = fresh(&key);
    assert_eq!(status_with(&gw, &token).await, 200);
    idp.set(Mode::Fail);
    eventually("staleness", Duration::from_secs(6), async || {
        status_with(&gw, &token).await == 503
    })
    .await;
    let response = client()
        .get(gw.url("/x"))
        .bearer_auth(fresh(&key))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    // Recovery: a good fetch makes the keys fresh again.
    idp.serve(&[&key]);
    eventually("recovery", Duration::from_secs(6), async || {
        status_with(&gw, &token).await == 200
    })
    .await;
}

#[tokio::test]
async fn a_new_replica_starts_from_the_disk_cache_while_the_idp_is_down() {
    let key = TestKey::shared("ES256");
    let upstream = Upstream::echo().await;
    let idp = JwksServer::start(&[&key]).await;
    let dir = tempfile::tempdir().unwrap();
    let issuer = issuer_yaml("corp", ISSUER, &idp.url(), "").replace(
        "      min_refresh_interval",
        &format!(
            "      cache_dir: \"{}\"\n      min_refresh_interval",
            dir.path().display()
        ),
    );
    let first = Gateway::start(&config(&upstream, &issuer)).await;
    first.wait_ready().await;
    eventually("the cache file", Duration::from_secs(5), async || {
        dir.path().join("corp.jwks.json").exists()
    })
    .await;
    drop(first);
    idp.set(Mode::Fail);
    let second = Gateway::start(&config(&upstream, &issuer)).await;
    second.wait_ready().await;
    assert_eq!(status_with(&second, &fresh(&key)).await, 200);
}

/// A ready gateway whose issuer reads its keys from `dir/jwks.json`, holding `key` at first
/// (already checked to verify a token); `jwks_lines` are more lines of the issuer's `jwks:`.
async fn start_with_key_file(
    upstream: &Upstream,
    dir: &Path,
    key: &TestKey,
    jwks_lines: &str,
) -> (Gateway, PathBuf) {
    let path = dir.join("jwks.json");
    std::fs::write(&path, jwks(&[key])).unwrap();
    let issuer = format!(
        "  - name: corp\n    issuer: \"{ISSUER}\"\n    audiences: [orders-api]\n    jwks:\n      file: \"{}\"\n{jwks_lines}",
        path.display()
    );
    let gw = Gateway::start(&config(upstream, &issuer)).await;
    gw.wait_ready().await;
    assert_eq!(status_with(&gw, &fresh(key)).await, 200);
    (gw, path)
}

#[tokio::test]
async fn a_watched_jwks_file_is_reloaded_and_a_broken_one_ignored() {
    let first = TestKey::generate("EdDSA", "file-1");
    let second = TestKey::generate("EdDSA", "file-2");
    let upstream = Upstream::echo().await;
    let dir = tempfile::tempdir().unwrap();
    let (gw, path) = start_with_key_file(
        &upstream,
        dir.path(),
        &first,
        "      min_refresh_interval: 30s\n",
    )
    .await;
    std::fs::write(&path, jwks(&[&second])).unwrap();
    eventually("the new key", Duration::from_secs(5), async || {
        status_with(&gw, &fresh(&second)).await == 200
    })
    .await;
    std::fs::write(&path, "{ this is not json").unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        status_with(&gw, &fresh(&second)).await,
        200,
        "the last good file keeps serving"
    );
    assert_eq!(status_with(&gw, &fresh(&first)).await, 401);
}

/// Reading the file is not a change of it: after a change, an idle gateway reads its key file
/// once, then next after `refresh_interval` (here the default, five minutes), not again and
/// again on the events its own reads raise.
#[tokio::test]
async fn an_idle_gateway_does_not_keep_rereading_its_key_file() {
    let key = TestKey::generate("EdDSA", "idle");
    let upstream = Upstream::echo().await;
    let dir = tempfile::tempdir().unwrap();
    let (gw, path) = start_with_key_file(&upstream, dir.path(), &key, "").await;
    let reads = async || {
        let text = gw.metrics().await;
        ["ok", "not_modified", "error"]
            .iter()
            .filter_map(|result| {
                metric_value(
                    &text,
                    "tokengate_jwks_refresh_total",
                    &[("issuer", "corp"), ("result", result)],
                )
            })
            .sum::<f64>()
    };
    // One real change (the same keys written again) wakes the watch once.
    let at_start = reads().await;
    std::fs::write(&path, jwks(&[&key])).unwrap();
    eventually(
        "the rewritten file read",
        Duration::from_secs(5),
        async || reads().await > at_start,
    )
    .await;
    let before = reads().await;
    // Long enough for several rounds of the 250 ms debounce.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(reads().await, before, "the file was read again while idle");
}

#[tokio::test]
async fn refreshes_use_etags_and_honour_a_shorter_max_age() {
    let key = TestKey::shared("ES256");
    let upstream = Upstream::echo().await;
    let idp = JwksServer::start(&[&key]).await;
    idp.set(Mode::Serve {
        body: jwks(&[&key]),
        max_age: Some(1),
    });
    // refresh_interval is the default 5m: only max-age can explain further fetches.
    let gw = Gateway::start(&config(
        &upstream,
        &issuer_yaml("corp", ISSUER, &idp.url(), ""),
    ))
    .await;
    gw.wait_ready().await;
    eventually(
        "a refresh driven by max-age",
        Duration::from_secs(5),
        async || idp.fetches() >= 3,
    )
    .await;
    let text = gw.metrics().await;
    let not_modified = metric_value(
        &text,
        "tokengate_jwks_refresh_total",
        &[("issuer", "corp"), ("result", "not_modified")],
    );
    assert!(not_modified.is_some_and(|n| n >= 1.0), "{text}");
}

#[tokio::test]
async fn readiness_waits_for_the_first_key_set() {
    let key = TestKey::shared("ES256");
    let upstream = Upstream::echo().await;
    let idp = JwksServer::start(&[&key]).await;
    idp.set(Mode::Fail);
    let gw = Gateway::start(&config(
        &upstream,
        &issuer_yaml("corp", ISSUER, &idp.url(), ""),
    ))
    .await;
    eventually("a first failed fetch", Duration::from_secs(5), async || {
        idp.fetches() >= 1
    })
    .await;
    let ready = client().get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    idp.serve(&[&key]);
    gw.wait_ready().await;
    assert_eq!(status_with(&gw, &fresh(&key)).await, 200);
}
