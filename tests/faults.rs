//! Faults of the parties the gateway depends on: an upstream that resets, half-closes,
//! hangs, answers garbage or answers twice, and an IdP whose JWKS grows past the size cap.
//! Each fault costs the one request that met it; the next one is served normally.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;
use support::tokens::{ISSUER, JwksServer, Mode, TestKey, claims, issuer_yaml, jwks};
use support::{Gateway, RawUpstream, Upstream, client, eventually, metric_value, status_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the scripted upstream does on its first connection; later ones answer `200 ok`.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Reads the request, then resets the connection (RST, no response).
    Reset,
    /// Reads the request, then closes its sending side without a word.
    HalfClose,
    /// Reads the request and never answers.
    Hang,
    /// Answers bytes that are not HTTP.
    Noise,
    /// Answers a head with two different Content-Lengths (a response-splitting attempt).
    ConflictingLengths,
    /// Answers a good response followed by a second, unrequested one on a kept-alive
    /// connection: the next request must not get it.
    ExtraResponse,
    /// Answers a head promising 100 bytes, sends 5 and closes.
    TruncatedBody,
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";

/// A raw TCP upstream on 127.0.0.1 playing `fault` on its first connection.
async fn scripted(fault: Fault) -> RawUpstream {
    RawUpstream::start(move |mut stream, number| async move {
        support::read_head(&mut stream).await;
        if number > 0 {
            let _ = stream.write_all(OK).await;
            return;
        }
        match fault {
            Fault::Reset => {
                stream.set_zero_linger().unwrap();
                drop(stream);
            }
            Fault::HalfClose => {
                let _ = stream.shutdown().await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Fault::Hang => tokio::time::sleep(Duration::from_secs(30)).await,
            Fault::Noise => {
                let _ = stream.write_all(b"\x00\xff\x16\x03garbage\r\n\r\n").await;
            }
            Fault::ConflictingLengths => {
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 40\r\n\r\nok",
                    )
                    .await;
            }
            Fault::ExtraResponse => {
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\
                          HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil",
                    )
                    .await;
                // Kept open: were the connection reused, the next request would
                // read the second response.
                let mut rest = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
                    .await;
            }
            Fault::TruncatedBody => {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
                    .await;
            }
        }
    })
    .await
}

fn config(upstream: SocketAddr) -> String {
    format!(
        "upstreams:\n  app:\n    endpoints: [\"http://{upstream}\"]\n    connect_timeout: 1s\n    request_timeout: 500ms\n\
         routes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: app\n    auth: none\n"
    )
}

fn upstream_errors(metrics: &str, kind: &str) -> f64 {
    metric_value(
        metrics,
        "tokengate_upstream_errors_total",
        &[("upstream", "app"), ("kind", kind)],
    )
    .unwrap_or(0.0)
}

/// The first request meets `fault` and gets `status`; the next is served; one error of
/// `kind` is counted.
async fn only_the_faulty_request_fails(fault: Fault, status: u16, kind: &str) {
    let upstream = scripted(fault).await;
    let gw = Gateway::start(&config(upstream.addr)).await;
    let started = Instant::now();
    let first = client().get(gw.url("/first")).send().await.unwrap();
    assert_eq!(first.status(), status, "{fault:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{fault:?} took {:?}",
        started.elapsed()
    );
    let next = client().get(gw.url("/next")).send().await.unwrap();
    assert_eq!(next.status(), 200, "{fault:?}: the next request failed too");
    assert_eq!(next.text().await.unwrap(), "ok");
    let metrics = gw.metrics().await;
    assert_eq!(upstream_errors(&metrics, kind), 1.0, "{fault:?}\n{metrics}");
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 2, "{fault:?}");
}

#[tokio::test]
async fn an_upstream_reset_is_a_502_for_that_request_alone() {
    only_the_faulty_request_fails(Fault::Reset, 502, "protocol").await;
}

#[tokio::test]
async fn an_upstream_half_close_is_a_502_for_that_request_alone() {
    only_the_faulty_request_fails(Fault::HalfClose, 502, "protocol").await;
}

#[tokio::test]
async fn a_hanging_upstream_is_a_504_for_that_request_alone() {
    only_the_faulty_request_fails(Fault::Hang, 504, "timeout").await;
}

#[tokio::test]
async fn upstream_noise_is_a_502_for_that_request_alone() {
    only_the_faulty_request_fails(Fault::Noise, 502, "protocol").await;
}

#[tokio::test]
async fn an_upstream_response_with_two_lengths_is_a_502() {
    only_the_faulty_request_fails(Fault::ConflictingLengths, 502, "protocol").await;
}

#[tokio::test]
async fn an_unrequested_second_response_never_reaches_the_next_client() {
    let upstream = scripted(Fault::ExtraResponse).await;
    let gw = Gateway::start(&config(upstream.addr)).await;
    let first = client().get(gw.url("/first")).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.text().await.unwrap(), "ok");
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..3 {
        let next = client()
            .get(gw.url(&format!("/next{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(next.status(), 200);
        assert_eq!(
            next.text().await.unwrap(),
            "ok",
            "request {i} got the stray response"
        );
    }
}

/// The head was already relayed when the body broke off: the client must see the break (an
/// incomplete body), never a silently shortened response.
#[tokio::test]
async fn a_truncated_upstream_body_is_a_broken_response_not_a_short_one() {
    let upstream = scripted(Fault::TruncatedBody).await;
    let gw = Gateway::start(&config(upstream.addr)).await;
    let first = client().get(gw.url("/first")).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(
        first.bytes().await.is_err(),
        "a body short of its Content-Length was delivered as complete"
    );
    let next = client().get(gw.url("/next")).send().await.unwrap();
    assert_eq!(next.text().await.unwrap(), "ok");
}

#[tokio::test]
async fn a_hanging_request_does_not_hold_up_the_others() {
    let upstream = scripted(Fault::Hang).await;
    let gw = Gateway::start(&config(upstream.addr)).await;
    let url = gw.url("/hangs");
    let hanging = tokio::spawn(async move { client().get(url).send().await.unwrap().status() });
    // Let the hanging request take the first connection.
    eventually("the first connection", Duration::from_secs(5), async || {
        upstream.connections.load(Ordering::SeqCst) >= 1
    })
    .await;
    for i in 0..5 {
        let started = Instant::now();
        let response = client().get(gw.url(&format!("/{i}"))).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(started.elapsed() < Duration::from_millis(400));
    }
    assert_eq!(hanging.await.unwrap(), 504);
}

/// An IdP whose JWKS grows past the 1 MiB cap: the oversized set is refused even though it
/// is valid JSON with a usable key, and the last good keys keep serving traffic that flows
/// all along.
#[tokio::test]
async fn a_jwks_over_the_size_cap_is_refused_and_the_last_good_keys_serve() {
    let good = TestKey::shared("ES256");
    let newer = TestKey::generate("ES256", "newer");
    let idp = JwksServer::start(&[&good]).await;
    let upstream = Upstream::echo().await;
    let issuer = issuer_yaml("corp", ISSUER, &idp.url(), "").replace(
        "      min_refresh_interval",
        "      refresh_interval: 200ms\n      min_refresh_interval",
    );
    let yaml = format!(
        "upstreams:\n  app:\n    endpoints: [\"{}\"]\nissuers:\n{issuer}\
         routes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: app\n",
        upstream.url()
    );
    let gw = Gateway::start(&yaml).await;
    gw.wait_ready().await;
    let good_token = good.token(&claims(json!({})));
    let newer_token = newer.token(&claims(json!({})));

    // The newer key alone, padded with whitespace to 2 MiB: valid JSON, over the cap.
    let set = jwks(&[&newer]);
    let padded = format!("{}{}}}", &set[..set.len() - 1], " ".repeat(2 << 20));
    let before = idp.fetches();
    idp.set(Mode::Serve {
        body: padded,
        max_age: None,
    });
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut statuses = Vec::new();
    while Instant::now() < deadline {
        statuses.push(status_with(&gw, &good_token).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(idp.fetches() >= before + 3, "the IdP was asked again");
    assert!(
        statuses.iter().all(|&s| s == 200),
        "good tokens failed during the outage: {statuses:?}"
    );
    // Had the oversized set been taken, the newer key would verify and the good one not.
    assert_eq!(status_with(&gw, &newer_token).await, 401);
    let metrics = gw.metrics().await;
    assert!(
        metric_value(
            &metrics,
            "tokengate_jwks_refresh_total",
            &[("issuer", "corp"), ("result", "error")]
        )
        .is_some_and(|n| n >= 2.0),
        "{metrics}"
    );

    // The same set at a normal size is taken: the size alone was the reason.
    idp.serve(&[&newer]);
    eventually("the newer key set", Duration::from_secs(5), async || {
        status_with(&gw, &newer_token).await == 200
    })
    .await;
}
