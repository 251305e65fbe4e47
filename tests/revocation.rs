//! Revocation end to end: lists from a watched file and a polled URL, revoking by jti and by
//! subject while traffic flows, malformed lines, failing sources and a saturated filter.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http::Response;
use serde_json::json;
use support::tokens::{ISSUER, JwksServer, TestKey, claims, issuer_yaml, now};
use support::{Gateway, Upstream, client, eventually, full, metric_value, status_with};

const ROUTES: &str = "routes:
  - name: api
    match: { path_prefix: / }
    upstream: app
";

struct Setup {
    gw: Gateway,
    key: TestKey,
    _upstream: Upstream,
    _jwks: JwksServer,
}

/// A gateway with this `revocation:` section, ready.
async fn setup(revocation: &str) -> Setup {
    let s = start(revocation).await;
    s.gw.wait_ready().await;
    s
}

/// The same, not waiting for `/readyz`.
async fn start(revocation: &str) -> Setup {
    let key = TestKey::shared("ES256");
    let upstream = Upstream::echo().await;
    let jwks = JwksServer::start(&[&key]).await;
    let yaml = format!(
        "upstreams:\n  app:\n    endpoints: [\"{}\"]\nissuers:\n{}revocation:\n{revocation}{ROUTES}",
        upstream.url(),
        issuer_yaml("corp", ISSUER, &jwks.url(), ""),
    );
    let gw = Gateway::start(&yaml).await;
    Setup {
        gw,
        key,
        _upstream: upstream,
        _jwks: jwks,
    }
}

/// The `revocation:` section of one URL source, polled every 200 ms.
fn polled(server: &Upstream) -> String {
    format!(
        "  sources:\n    - url: \"{}/revoked.txt\"\n      refresh_interval: 200ms\n",
        server.url()
    )
}

fn token(key: &TestKey, jti: &str, sub: &str) -> String {
    key.token(&claims(json!({"jti": jti, "sub": sub})))
}

/// Requests with `token` until stopped; counts every answer that is not 200.
fn keep_requesting(
    gw: &Gateway,
    token: String,
) -> (
    Arc<AtomicBool>,
    Arc<AtomicUsize>,
    tokio::task::JoinHandle<usize>,
) {
    let (stop, failures) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let url = gw.url("/x");
    let task = {
        let (stop, failures) = (stop.clone(), failures.clone());
        tokio::spawn(async move {
            let http = client();
            let mut sent = 0;
            while !stop.load(Ordering::SeqCst) && sent < 5_000 {
                let response = http.get(&url).bearer_auth(&token).send().await.unwrap();
                if response.status() != 200 {
                    failures.fetch_add(1, Ordering::SeqCst);
                }
                sent += 1;
            }
            sent
        })
    };
    (stop, failures, task)
}

#[tokio::test]
async fn revoking_by_jti_in_a_watched_file_takes_effect_at_once_even_for_cached_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revoked.txt");
    std::fs::write(&path, "# nothing revoked yet\n").unwrap();
    let s = setup(&format!("  sources:\n    - file: \"{}\"\n", path.display())).await;
    let victim = token(&s.key, "jti-victim", "mallory");
    let bystander = token(&s.key, "jti-bystander", "alice");
    // Cached on its second verification.
    assert_eq!(status_with(&s.gw, &victim).await, 200);
    assert_eq!(status_with(&s.gw, &victim).await, 200, "and now cached");

    let (stop, failures, traffic) = keep_requesting(&s.gw, bystander.clone());
    std::fs::write(&path, "# revoked\njti-victim\n").unwrap();
    eventually(
        "revocation of the cached token",
        Duration::from_secs(5),
        async || status_with(&s.gw, &victim).await == 401,
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let sent = traffic.await.unwrap();
    assert!(sent > 0);
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "a request that should pass failed"
    );

    let response = client()
        .get(s.gw.url("/x"))
        .bearer_auth(&victim)
        .send()
        .await
        .unwrap();
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.contains("invalid_token") && challenge.contains("revoked"),
        "{challenge}"
    );
    let text = s.gw.metrics().await;
    assert_eq!(
        metric_value(&text, "tokengate_revocation_entries", &[]),
        Some(1.0)
    );
    assert!(
        metric_value(
            &text,
            "tokengate_auth_decisions_total",
            &[("result", "revoked")]
        )
        .is_some_and(|n| n >= 1.0)
    );
    assert!(
        metric_value(
            &text,
            "tokengate_reload_total",
            &[("what", "revocation"), ("result", "ok")]
        )
        .is_some_and(|n| n >= 1.0)
    );
}

#[tokio::test]
async fn a_configmap_style_rename_is_noticed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revoked.txt");
    std::fs::write(&path, "").unwrap();
    let s = setup(&format!("  sources:\n    - file: \"{}\"\n", path.display())).await;
    let victim = token(&s.key, "renamed-victim", "u");
    assert_eq!(status_with(&s.gw, &victim).await, 200);
    let staged = dir.path().join(".revoked.txt.new");
    std::fs::write(&staged, "jti:renamed-victim\n").unwrap();
    std::fs::rename(&staged, &path).unwrap();
    eventually(
        "the renamed file to be read",
        Duration::from_secs(5),
        async || status_with(&s.gw, &victim).await == 401,
    )
    .await;
}

/// Publishes `content` as `lists/revoked.txt` the way the kubelet updates a ConfigMap volume:
/// a new timestamped directory, a `..data` symlink swapped to it, the old directory deleted.
/// `lists` is a symlink through `..data`, so the watched directory itself is replaced.
#[cfg(unix)]
fn publish_configmap(volume: &std::path::Path, version: u32, content: &str) {
    use std::os::unix::fs::symlink;
    let fresh = volume.join(format!("..v{version}"));
    std::fs::create_dir_all(fresh.join("lists")).unwrap();
    std::fs::write(fresh.join("lists/revoked.txt"), content).unwrap();
    let staged = volume.join("..data_tmp");
    symlink(format!("..v{version}"), &staged).unwrap();
    std::fs::rename(&staged, volume.join("..data")).unwrap();
    if version == 1 {
        symlink("..data/lists", volume.join("lists")).unwrap();
    } else {
        std::fs::remove_dir_all(volume.join(format!("..v{}", version - 1))).unwrap();
    }
}

#[cfg(unix)]
#[tokio::test]
async fn a_file_in_a_configmap_subdirectory_is_followed_through_every_update() {
    let volume = tempfile::tempdir().unwrap();
    publish_configmap(volume.path(), 1, "");
    let path = volume.path().join("lists/revoked.txt");
    let s = setup(&format!("  sources:\n    - file: \"{}\"\n", path.display())).await;
    let victims: Vec<String> = (2..=4)
        .map(|n| token(&s.key, &format!("cm-victim-{n}"), "u"))
        .collect();
    for victim in &victims {
        assert_eq!(status_with(&s.gw, victim).await, 200);
    }
    // Each update revokes one more token; each must be seen long before the 30 s poll.
    for (n, victim) in (2..=4).zip(&victims) {
        let list: String = (2..=n).map(|k| format!("jti:cm-victim-{k}\n")).collect();
        publish_configmap(volume.path(), n, &list);
        eventually(
            &format!("update {n} to be read"),
            Duration::from_secs(5),
            async || status_with(&s.gw, victim).await == 401,
        )
        .await;
    }
}

#[tokio::test]
async fn subjects_are_revoked_through_a_url_source_while_others_pass() {
    let list = Arc::new(std::sync::Mutex::new(String::from("# empty\n")));
    let server = {
        let list = list.clone();
        Upstream::start(move |_req, _| {
            let body = list.lock().unwrap().clone();
            async move { Response::new(full(body)) }
        })
        .await
    };
    let s = setup(&polled(&server)).await;
    let mallory = token(&s.key, "m-1", "mallory");
    let older = s.key.token(&claims(
        json!({"jti": "o-1", "sub": "oscar", "iat": now() - 100}),
    ));
    let newer = s
        .key
        .token(&claims(json!({"jti": "o-2", "sub": "oscar", "iat": now()})));
    let alice = token(&s.key, "a-1", "alice");
    for t in [&mallory, &older, &newer, &alice] {
        assert_eq!(status_with(&s.gw, t).await, 200);
    }
    let (stop, failures, traffic) = keep_requesting(&s.gw, alice.clone());
    *list.lock().unwrap() = format!("sub:mallory\nsub:oscar@{}\n", now() - 50);
    eventually(
        "the subject's revocation",
        Duration::from_secs(5),
        async || status_with(&s.gw, &mallory).await == 401,
    )
    .await;
    assert_eq!(
        status_with(&s.gw, &token(&s.key, "m-2", "mallory")).await,
        401,
        "every token of the subject"
    );
    assert_eq!(
        status_with(&s.gw, &older).await,
        401,
        "issued before the cutoff"
    );
    assert_eq!(
        status_with(&s.gw, &newer).await,
        200,
        "issued after the cutoff"
    );
    stop.store(true, Ordering::SeqCst);
    traffic.await.unwrap();
    assert_eq!(failures.load(Ordering::SeqCst), 0);
}

/// Ready means revocations hold: `/readyz` turns 200 only once a URL source's first list is
/// in the set that requests check, not as soon as it is fetched (the set is built afterwards,
/// on another thread; a long list makes that take a while).
#[tokio::test]
async fn a_revoked_token_is_refused_from_the_moment_the_gateway_is_ready() {
    let list: String = std::iter::once("jti:revoked-at-start\n".to_owned())
        .chain((0..300_000).map(|i| format!("jti:filler-{i}\n")))
        .collect();
    let list = bytes::Bytes::from(list);
    let server = Upstream::start(move |_req, _| {
        let list = list.clone();
        async move { Response::new(full(list)) }
    })
    .await;
    // `setup` returns as soon as `/readyz` answers 200.
    let s = setup(&format!(
        "  sources:\n    - url: \"{}/revoked.txt\"\n",
        server.url()
    ))
    .await;
    assert_eq!(
        status_with(&s.gw, &token(&s.key, "revoked-at-start", "u")).await,
        401
    );
}

/// Until a URL source has answered once, a revoked token cannot be told from a good one: a
/// valid token on a protected route gets 503 with Retry-After (as before an issuer's keys
/// load), and `/readyz` says not ready.
#[tokio::test]
async fn protected_routes_wait_for_every_revocation_source_to_load_once() {
    let up = Arc::new(AtomicBool::new(false));
    let server = Upstream::switchable("jti:revoked-at-start\n", up.clone()).await;
    let s = start(&polled(&server)).await;
    let (good, revoked) = (
        token(&s.key, "good", "u"),
        token(&s.key, "revoked-at-start", "u"),
    );
    // The issuer's keys load at once; the list does not.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ready = client()
        .get(s.gw.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    for token in [&good, &revoked] {
        let response = client()
            .get(s.gw.url("/x"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 503);
        assert!(response.headers().contains_key("retry-after"));
        // For the lists, not for the issuer's keys, which answer 503 too while missing.
        let body: serde_json::Value =
            serde_json::from_str(&response.text().await.unwrap()).unwrap();
        assert_eq!(
            body["error_description"], "the revocation lists have not loaded yet",
            "{body}"
        );
    }
    let decisions = metric_value(
        &s.gw.metrics().await,
        "tokengate_auth_decisions_total",
        &[("result", "invalid_token")],
    );
    assert_eq!(decisions, Some(2.0), "counted as invalid_token");
    up.store(true, Ordering::SeqCst);
    s.gw.wait_ready().await;
    assert_eq!(status_with(&s.gw, &good).await, 200);
    assert_eq!(status_with(&s.gw, &revoked).await, 401);
}

#[tokio::test]
async fn a_failing_url_source_keeps_its_last_good_entries() {
    let up = Arc::new(AtomicBool::new(true));
    let server = Upstream::switchable("jti:kept-revoked\n", up.clone()).await;
    let s = setup(&polled(&server)).await;
    let victim = token(&s.key, "kept-revoked", "u");
    assert_eq!(status_with(&s.gw, &victim).await, 401);
    up.store(false, Ordering::SeqCst);
    let before = server.seen().len();
    eventually("failed refreshes", Duration::from_secs(5), async || {
        server.seen().len() >= before + 2
    })
    .await;
    assert_eq!(
        status_with(&s.gw, &victim).await,
        401,
        "revocations are never dropped because a source is down"
    );
    let text = s.gw.metrics().await;
    assert!(
        metric_value(
            &text,
            "tokengate_reload_total",
            &[("what", "revocation"), ("result", "error")]
        )
        .is_some_and(|n| n >= 1.0)
    );
}

#[tokio::test]
async fn several_sources_merge_and_malformed_lines_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.txt");
    let b = dir.path().join("b.txt");
    std::fs::write(&a, "from-a\njti:\nsub:\n").unwrap();
    std::fs::write(&b, "sub:from-b\n").unwrap();
    let s = setup(&format!(
        "  sources:\n    - file: \"{}\"\n    - file: \"{}\"\n",
        a.display(),
        b.display()
    ))
    .await;
    assert_eq!(status_with(&s.gw, &token(&s.key, "from-a", "x")).await, 401);
    assert_eq!(
        status_with(&s.gw, &token(&s.key, "other", "from-b")).await,
        401
    );
    assert_eq!(status_with(&s.gw, &token(&s.key, "other", "x")).await, 200);
    let text = s.gw.metrics().await;
    assert_eq!(
        metric_value(&text, "tokengate_revocation_entries", &[]),
        Some(2.0)
    );
}

#[tokio::test]
async fn a_saturated_filter_never_refuses_a_valid_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revoked.txt");
    let list: String = (0..500).map(|i| format!("revoked-{i}\n")).collect();
    std::fs::write(&path, list).unwrap();
    // Sized for one entry at a 99 % false-positive rate: nearly every lookup is a "maybe".
    let s = setup(&format!(
        "  sources:\n    - file: \"{}\"\n  expected_entries: 1\n  false_positive_rate: 0.99\n",
        path.display()
    ))
    .await;
    for i in 0..50 {
        assert_eq!(
            status_with(&s.gw, &token(&s.key, &format!("valid-{i}"), "v")).await,
            200
        );
    }
    assert_eq!(
        status_with(&s.gw, &token(&s.key, "revoked-499", "v")).await,
        401
    );
}
