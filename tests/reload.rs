//! Config hot reload: under continuous traffic, with broken files among good ones; requests in
//! flight finish on the config they started with; listener changes wait for a restart.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http::Response;
use serde_json::json;
use support::tokens::{ISSUER, JwksServer, TestKey, claims, issuer_yaml};
use support::{Gateway, Upstream, client, eventually, full, metric_value};

fn config(upstream: &str, jwks: &str, extra_route: &str) -> String {
    format!(
        "server:\n  listen: \"127.0.0.1:0\"\nadmin:\n  listen: \"127.0.0.1:0\"\n\
         upstreams:\n  app:\n    endpoints: [\"{upstream}\"]\n\
         issuers:\n{}\
         routes:\n  - name: stable\n    match: {{ path_prefix: /stable }}\n    upstream: app\n    auth: none\n  \
         - name: protected\n    match: {{ path_prefix: /p }}\n    upstream: app\n{extra_route}",
        issuer_yaml("corp", ISSUER, jwks, "")
    )
}

fn extra(name: &str) -> String {
    format!("  - name: {name}\n    match: {{ path: /{name} }}\n    upstream: app\n    auth: none\n")
}

async fn reloads(gw: &Gateway, result: &str) -> f64 {
    let text = gw.metrics().await;
    metric_value(
        &text,
        "tokengate_reload_total",
        &[("what", "config"), ("result", result)],
    )
    .unwrap_or(0.0)
}

fn write(path: &Path, text: &str) {
    // Write beside and rename over, as editors and ConfigMaps do: never a half-written file.
    let staged = path.with_extension("staged");
    std::fs::write(&staged, text).unwrap();
    std::fs::rename(&staged, path).unwrap();
}

/// A gateway serving `text` from a config file it watches, ready; the directory lives as
/// long as the first element.
async fn start_from_file(text: &str) -> (tempfile::TempDir, std::path::PathBuf, Gateway) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokengate.yaml");
    write(&path, text);
    let gw = Gateway::start_file(&path).await;
    gw.wait_ready().await;
    (dir, path, gw)
}

#[tokio::test]
async fn twenty_reloads_under_traffic_fail_no_request() {
    let key = TestKey::shared("ES256");
    let upstream = Upstream::echo().await;
    let jwks = JwksServer::start(&[&key]).await;
    let (_dir, path, gw) = start_from_file(&config(&upstream.url(), &jwks.url(), "")).await;

    let token = key.token(&claims(json!({})));
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let traffic: Vec<_> = ["/stable/x", "/p/x"]
        .into_iter()
        .map(|path| {
            let (stop, sent, failures, url, token) = (
                stop.clone(),
                sent.clone(),
                failures.clone(),
                gw.url(path),
                token.clone(),
            );
            tokio::spawn(async move {
                let http = client();
                while !stop.load(Ordering::SeqCst) {
                    let status = http
                        .get(&url)
                        .bearer_auth(&token)
                        .send()
                        .await
                        .map(|r| r.status());
                    sent.fetch_add(1, Ordering::SeqCst);
                    if !status.is_ok_and(|s| s == 200) {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();

    let mut last_good: Option<String> = None;
    let (mut good, mut broken) = (0.0, 0.0);
    for i in 0..20 {
        if i % 4 == 3 {
            let variants = [
                "routes: [\n",
                "server:\n  listen: nowhere\n",
                "routes:\n  - name: x\n    match: { path: /x }\n    upstream: missing\n",
                "bogus_key: 1\n",
            ];
            write(&path, variants[(i / 4) % variants.len()]);
            broken += 1.0;
            eventually(
                "the broken file to be refused",
                Duration::from_secs(5),
                async || reloads(&gw, "error").await >= broken,
            )
            .await;
        } else {
            let name = format!("extra-{i}");
            write(&path, &config(&upstream.url(), &jwks.url(), &extra(&name)));
            good += 1.0;
            eventually("the reload", Duration::from_secs(5), async || {
                reloads(&gw, "ok").await >= good
            })
            .await;
            last_good = Some(name);
        }
        // Whatever was refused, the last good config serves.
        let name = last_good.as_deref().unwrap();
        let response = client()
            .get(gw.url(&format!("/{name}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "after reload {i}, /{name} serves");
    }
    stop.store(true, Ordering::SeqCst);
    for task in traffic {
        task.await.unwrap();
    }
    assert!(
        sent.load(Ordering::SeqCst) > 40,
        "traffic flowed: {}",
        sent.load(Ordering::SeqCst)
    );
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "a request failed during reloads"
    );
    assert_eq!(
        jwks.fetches(),
        1,
        "the unchanged issuer kept its keys across reloads"
    );
    // A route from an earlier config is gone.
    assert_eq!(gw.status("/extra-0").await, 404);
}

#[tokio::test]
async fn requests_in_flight_finish_on_the_config_they_started_with() {
    let upstream = Upstream::start(|_req, _| async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        Response::new(full("done"))
    })
    .await;
    let key = TestKey::shared("ES256");
    let jwks = JwksServer::start(&[&key]).await;
    let (_dir, path, gw) =
        start_from_file(&config(&upstream.url(), &jwks.url(), &extra("slow"))).await;
    let url = gw.url("/slow");
    let in_flight = tokio::spawn(async move { client().get(url).send().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(200)).await;
    write(&path, &config(&upstream.url(), &jwks.url(), ""));
    eventually("the reload", Duration::from_secs(5), async || {
        reloads(&gw, "ok").await >= 1.0
    })
    .await;
    let response = in_flight.await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "done");
    assert_eq!(gw.status("/slow").await, 404);
}

#[tokio::test]
async fn a_new_listen_address_waits_for_a_restart_and_the_rest_applies() {
    let upstream = Upstream::echo().await;
    let key = TestKey::shared("ES256");
    let jwks = JwksServer::start(&[&key]).await;
    let (_dir, path, gw) = start_from_file(&config(&upstream.url(), &jwks.url(), "")).await;
    let moved = config(&upstream.url(), &jwks.url(), &extra("added")).replacen(
        "listen: \"127.0.0.1:0\"",
        "listen: \"127.0.0.1:1\"",
        1,
    );
    write(&path, &moved);
    eventually("the reload", Duration::from_secs(5), async || {
        reloads(&gw, "ok").await >= 1.0
    })
    .await;
    assert_eq!(gw.status("/added").await, 200, "served on the old address");
}

/// A reload that changes the revocation section starts its sources again, but a URL source it
/// had before keeps its last list: down at that moment, its revocations still hold, and good
/// tokens still pass rather than wait for it.
#[tokio::test]
async fn a_reload_that_changes_the_revocation_section_keeps_a_url_sources_last_list() {
    let up = Arc::new(AtomicBool::new(true));
    let lists = Upstream::switchable("jti:revoked\n", up.clone()).await;
    let upstream = Upstream::echo().await;
    let key = TestKey::shared("ES256");
    let jwks = JwksServer::start(&[&key]).await;
    let with_revocation = |refresh: &str| {
        format!(
            "{}revocation:\n  sources:\n    - url: \"{}/revoked.txt\"\n      refresh_interval: {refresh}\n",
            config(&upstream.url(), &jwks.url(), ""),
            lists.url()
        )
    };
    let (_dir, path, gw) = start_from_file(&with_revocation("200ms")).await;
    let status = async |jti: &str| {
        client()
            .get(gw.url("/p/x"))
            .bearer_auth(key.token(&claims(json!({ "jti": jti }))))
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(status("revoked").await, 401);
    up.store(false, Ordering::SeqCst);
    write(&path, &with_revocation("300ms"));
    eventually("the reload", Duration::from_secs(5), async || {
        reloads(&gw, "ok").await >= 1.0
    })
    .await;
    assert_eq!(status("good").await, 200);
    assert_eq!(status("revoked").await, 401);
}
