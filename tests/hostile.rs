//! Hostile HTTP/1.1 over raw sockets: request smuggling probes, head and URI size limits,
//! clients that stop sending a body, oversized tokens. Every probe is followed on the same
//! connection by a second request for `/smuggled`; a real upstream records what reaches it,
//! and no probe may ever get `/smuggled` there.

mod support;

use std::time::{Duration, Instant};

use support::tokens::{ISSUER, JwksServer, TestKey, claims, issuer_yaml};
use support::{Gateway, Upstream, exchange};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(upstream: &Upstream, server: &str) -> String {
    format!(
        "server:\n  listen: \"127.0.0.1:0\"\n{server}\
         upstreams:\n  app:\n    endpoints: [\"{}\"]\n    request_timeout: 1s\n\
         routes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: app\n    auth: none\n",
        upstream.url()
    )
}

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";

/// Each probe: a request whose framing is ambiguous or malformed, with `/smuggled` behind it.
const FRAMING_PROBES: &[(&str, &str)] = &[
    (
        "two different Content-Lengths",
        "POST /probe HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 38\r\n\r\n",
    ),
    (
        "a Content-Length list",
        "POST /probe HTTP/1.1\r\nHost: a\r\nContent-Length: 0, 38\r\n\r\n",
    ),
    (
        "a signed Content-Length",
        "POST /probe HTTP/1.1\r\nHost: a\r\nContent-Length: +0\r\n\r\n",
    ),
    (
        "a hex Content-Length",
        "POST /probe HTTP/1.1\r\nHost: a\r\nContent-Length: 0x0\r\n\r\n",
    ),
    (
        "a negative Content-Length",
        "POST /probe HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
    ),
    (
        "an overflowing Content-Length",
        "POST /probe HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    ),
    (
        "chunked not last",
        "POST /probe HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    ),
    (
        "a Transfer-Encoding that is not chunked",
        "POST /probe HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\nContent-Length: 0\r\n\r\n",
    ),
    (
        "two Transfer-Encodings, the last not chunked",
        "POST /probe HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\n",
    ),
    (
        "Transfer-Encoding in HTTP/1.0",
        "POST /probe HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "a space before the colon",
        "POST /probe HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "obs-fold of Transfer-Encoding",
        "POST /probe HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "obs-fold of an ordinary header",
        "GET /probe HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n",
    ),
    (
        "a bare CR in a header",
        "GET /probe HTTP/1.1\r\nHost: a\r\nX-A: 1\rContent-Length: 5\r\n\r\n",
    ),
    (
        "a NUL in a header value",
        "GET /probe HTTP/1.1\r\nHost: a\r\nX-A: 1\0\r\n\r\n",
    ),
    (
        "a space in the request target",
        "GET /probe /x HTTP/1.1\r\nHost: a\r\n\r\n",
    ),
    (
        "a header name with a control character",
        "GET /probe HTTP/1.1\r\nHost: a\r\nX\x01A: 1\r\n\r\n",
    ),
];

#[tokio::test]
async fn framing_probes_get_400_and_nothing_smuggled_reaches_the_upstream() {
    let upstream = Upstream::echo().await;
    let gw = Gateway::start(&config(&upstream, "")).await;
    let mut tasks = Vec::new();
    for &(name, probe) in FRAMING_PROBES {
        let addr = gw.addr;
        tasks.push(tokio::spawn(async move {
            let bytes = format!("{probe}{SMUGGLED}");
            (
                name,
                exchange(addr, bytes.as_bytes(), Duration::from_secs(3)).await,
            )
        }));
    }
    let mut wrong = Vec::new();
    for task in tasks {
        let (name, answer) = task.await.unwrap();
        if answer.status() != Some(400) || answer.responses() != 1 || !answer.closed {
            wrong.push(format!(
                "{name}: closed={} {:?}",
                answer.closed,
                answer.text.lines().next()
            ));
        }
    }
    let seen: Vec<String> = upstream
        .seen()
        .into_iter()
        .map(|s| s.path_and_query)
        .collect();
    assert!(
        wrong.is_empty(),
        "probes not answered with one 400 and a close:\n{}\nupstream saw {seen:?}",
        wrong.join("\n")
    );
    assert!(seen.is_empty(), "upstream saw {seen:?}");
}

/// Content-Length with Transfer-Encoding: hyper applies RFC 9112 §6.3 (chunked wins, the
/// Content-Length is removed before anything sees the request, the connection is closed after
/// the response), so the gateway cannot answer 400 but the framing is unambiguous: the
/// upstream gets the chunked body re-framed, without the client's Content-Length, and the
/// bytes behind it are never read as a request.
#[tokio::test]
async fn content_length_with_transfer_encoding_is_read_as_chunked_and_the_connection_closed() {
    let upstream = Upstream::start(
        |request: http::Request<hyper::body::Incoming>, _| async move {
            use http_body_util::BodyExt;
            let body = request.into_body().collect().await.map(|b| b.to_bytes());
            let answer = match body {
                Ok(bytes) => format!("body of {} bytes", bytes.len()),
                Err(_) => "broken body".to_owned(),
            };
            http::Response::new(support::full(answer))
        },
    )
    .await;
    let gw = Gateway::start(&config(&upstream, "")).await;
    // By Content-Length the body is `5\r\nh` and `ello…` would start the next request; by
    // chunked it is `hello`, and `/smuggled` would come next were the connection kept.
    let heads = [
        "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
    ];
    for head in heads {
        let bytes = format!(
            "POST /probe HTTP/1.1\r\nHost: a\r\n{head}\r\n5\r\nhello\r\n0\r\n\r\n{SMUGGLED}"
        );
        let answer = exchange(gw.addr, bytes.as_bytes(), Duration::from_secs(3)).await;
        assert_eq!(answer.status(), Some(200), "{head:?}: {}", answer.text);
        assert!(
            answer.text.ends_with("body of 5 bytes"),
            "{head:?}: {}",
            answer.text
        );
        assert_eq!(answer.responses(), 1, "{head:?}: {}", answer.text);
        assert!(answer.closed, "{head:?}: the connection was kept open");
    }
    let seen = upstream.seen();
    let paths: Vec<&str> = seen.iter().map(|s| s.path_and_query.as_str()).collect();
    assert_eq!(paths, ["/probe", "/probe"]);
    for request in &seen {
        assert!(
            request
                .headers
                .get("content-length")
                .is_none_or(|v| v == "5"),
            "the client's Content-Length was forwarded: {:?}",
            request.headers
        );
    }
}

/// Bad chunk sizes are found only while the body streams, after the head went upstream: the
/// probe's own request may reach the upstream (with a body that breaks off), but the client
/// gets 400 (its body, not the upstream, is at fault), the connection is closed, and
/// `/smuggled` never follows.
#[tokio::test]
async fn bad_chunk_sizes_break_the_connection_and_smuggle_nothing() {
    let probes = [
        "zz\r\nhello\r\n0\r\n\r\n",
        "-5\r\nhello\r\n0\r\n\r\n",
        "ffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        "5\r\nhelloXX\r\n0\r\n\r\n",
        "5 5\r\nhello\r\n0\r\n\r\n",
    ];
    let upstream = Upstream::echo().await;
    let gw = Gateway::start(&config(&upstream, "")).await;
    for chunks in probes {
        let bytes = format!(
            "POST /probe HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}{SMUGGLED}"
        );
        let answer = exchange(gw.addr, bytes.as_bytes(), Duration::from_secs(3)).await;
        assert!(answer.closed, "{chunks:?}: the connection stayed open");
        assert_eq!(answer.status(), Some(400), "{chunks:?}: {}", answer.text);
        assert_eq!(answer.responses(), 1, "{chunks:?}: {}", answer.text);
    }
    let seen: Vec<String> = upstream
        .seen()
        .into_iter()
        .map(|s| s.path_and_query)
        .collect();
    assert!(seen.iter().all(|p| p == "/probe"), "upstream saw {seen:?}");
    // The client's broken body is not the upstream's fault.
    let metrics = gw.metrics().await;
    assert_eq!(
        support::metric_value(
            &metrics,
            "tokengate_upstream_errors_total",
            &[("upstream", "app"), ("kind", "protocol")]
        )
        .unwrap_or(0.0),
        0.0,
        "{metrics}"
    );
}

/// The detector works: two well-framed pipelined requests both reach the upstream, so the
/// probes above would have shown a smuggled one.
#[tokio::test]
async fn well_framed_pipelined_requests_both_reach_the_upstream() {
    let upstream = Upstream::echo().await;
    let gw = Gateway::start(&config(&upstream, "")).await;
    let bytes = "POST /first HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
         GET /smuggled HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let answer = exchange(gw.addr, bytes.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(answer.responses(), 2, "{}", answer.text);
    let seen: Vec<String> = upstream
        .seen()
        .into_iter()
        .map(|s| s.path_and_query)
        .collect();
    assert_eq!(seen, ["/first", "/smuggled"]);
}

/// RFC 9112 §2.2 lets a recipient take a bare LF as a line end. The gateway (hyper) does, and
/// forwards each request re-framed with CRLF, so upstream and gateway agree on where headers
/// and requests end: the second request here is one the client framed, not a smuggled one.
#[tokio::test]
async fn bare_lf_line_ends_are_read_as_line_ends_and_reframed() {
    let upstream = Upstream::echo().await;
    let gw = Gateway::start(&config(&upstream, "")).await;
    let bytes = "POST /lf HTTP/1.1\nHost: a\nX-A: 1\nContent-Length: 5\n\nhello\
                 GET /smuggled HTTP/1.1\nHost: a\nConnection: close\n\n";
    let answer = exchange(gw.addr, bytes.as_bytes(), Duration::from_secs(5)).await;
    let seen = upstream.seen();
    let paths: Vec<&str> = seen.iter().map(|s| s.path_and_query.as_str()).collect();
    assert_eq!(answer.responses(), 2, "{}", answer.text);
    assert_eq!(paths, ["/lf", "/smuggled"]);
    // The upstream saw exactly the headers the gateway parsed, and the 5-byte body.
    assert_eq!(seen[0].headers["x-a"], "1");
    assert_eq!(seen[0].headers["content-length"], "5");
    assert!(answer.closed);
}

#[tokio::test]
async fn many_small_headers_and_huge_uris_are_refused_before_routing() {
    let upstream = Upstream::echo().await;
    let gw = Gateway::start(&config(&upstream, "  max_header_bytes: 16384\n")).await;
    // Well under max_header_bytes in bytes, but more header lines than are ever needed.
    let many: String = (0..200).map(|i| format!("X-{i}: 1\r\n")).collect();
    let bytes = format!("GET /many HTTP/1.1\r\nHost: a\r\n{many}\r\n");
    let answer = exchange(gw.addr, bytes.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(answer.status(), Some(431), "{}", answer.text);
    assert!(answer.closed);

    let long_uri = format!("/{}", "u".repeat(20_000));
    let bytes = format!("GET {long_uri} HTTP/1.1\r\nHost: a\r\n\r\n");
    let answer = exchange(gw.addr, bytes.as_bytes(), Duration::from_secs(5)).await;
    assert!(
        matches!(answer.status(), Some(414 | 431)),
        "{}",
        answer.text.lines().next().unwrap_or_default()
    );
    assert!(answer.closed);
    assert!(upstream.seen().is_empty());
}

/// A client that sends half its declared body and stops: the upstream waits for the rest, so
/// the request ends at the upstream's request_timeout (504) and the connection is then closed
/// by idle_timeout; nothing waits forever.
#[tokio::test]
async fn a_client_that_stops_mid_body_is_bounded_by_request_and_idle_timeouts() {
    let upstream = Upstream::echo().await;
    let gw = Gateway::start(&config(&upstream, "  idle_timeout: 500ms\n")).await;
    let mut conn = TcpStream::connect(gw.addr).await.unwrap();
    conn.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly ten.")
        .await
        .unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(6), conn.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    };
    let text = String::from_utf8_lossy(&out);
    assert!(closed, "the connection was still open after 6 s: {text}");
    assert!(text.starts_with("HTTP/1.1 504"), "{text}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "closed after {took:?}"
    );
    assert_eq!(upstream.seen().len(), 1, "the head was forwarded once");
}

#[tokio::test]
async fn oversized_tokens_are_refused_before_verification() {
    let key = TestKey::shared("ES256");
    let jwks = JwksServer::start(&[&key]).await;
    let upstream = Upstream::echo().await;
    let yaml = format!(
        "upstreams:\n  app:\n    endpoints: [\"{}\"]\nissuers:\n{}\
         routes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: app\n",
        upstream.url(),
        issuer_yaml("corp", ISSUER, &jwks.url(), ""),
    );
    let gw = Gateway::start(&yaml).await;
    gw.wait_ready().await;
    let fetches = jwks.fetches();
    // A genuinely signed token, made large by a claim: over 8 KiB is too large however good.
    let big = key.token(&claims(serde_json::json!({"pad": "p".repeat(9_000)})));
    let bytes = format!(
        "GET /x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {big}\r\nConnection: close\r\n\r\n"
    );
    let answer = exchange(gw.addr, bytes.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(answer.status(), Some(401), "{}", answer.text);
    assert!(
        answer.text.contains("the token is too large"),
        "{}",
        answer.text
    );
    // Beyond max_header_bytes the head itself is refused.
    let huge = "a".repeat(20_000);
    let bytes = format!("GET /x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {huge}\r\n\r\n");
    let answer = exchange(gw.addr, bytes.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(answer.status(), Some(431), "{}", answer.text);
    // The same claims at a normal size pass: the size alone was the reason.
    let normal = key.token(&claims(serde_json::json!({"pad": "p"})));
    let bytes = format!(
        "GET /x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {normal}\r\nConnection: close\r\n\r\n"
    );
    let answer = exchange(gw.addr, bytes.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(answer.status(), Some(200), "{}", answer.text);
    assert_eq!(upstream.seen().len(), 1);
    assert_eq!(
        jwks.fetches(),
        fetches,
        "no key fetch for an oversized token"
    );
}

/// Slow-loris against the connection cap: silent connections fill `max_connections`, new
/// ones are refused at once, and header_read_timeout frees the slots for real clients.
#[tokio::test]
async fn silent_connections_that_fill_max_connections_are_cleared_by_header_read_timeout() {
    let upstream = Upstream::echo().await;
    let server = "  max_connections: 4\n  header_read_timeout: 500ms\n";
    let gw = Gateway::start(&config(&upstream, server)).await;
    let mut loris = Vec::new();
    for _ in 0..4 {
        let mut conn = TcpStream::connect(gw.addr).await.unwrap();
        conn.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        loris.push(conn);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let request = b"GET /real HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let refused = exchange(gw.addr, request, Duration::from_secs(2)).await;
    assert!(
        refused.closed && refused.text.is_empty(),
        "a connection beyond the cap was served: {}",
        refused.text
    );
    // Once the silent ones are cut off, a real client gets in.
    let started = Instant::now();
    loop {
        let answer = exchange(gw.addr, request, Duration::from_secs(2)).await;
        if answer.status() == Some(200) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the cap stayed full: {}",
            answer.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for mut conn in loris {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(1), conn.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "a silent connection was still open"
        );
    }
    assert_eq!(upstream.seen().len(), 1);
}

/// A client that hangs up mid-body ends its own request; it is not an upstream failure.
#[tokio::test]
async fn a_client_hanging_up_mid_body_is_not_counted_against_the_upstream() {
    let upstream = Upstream::echo().await;
    let gw = Gateway::start(&config(&upstream, "")).await;
    let mut conn = TcpStream::connect(gw.addr).await.unwrap();
    conn.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly ten.")
        .await
        .unwrap();
    support::eventually(
        "the upload reached the upstream",
        Duration::from_secs(5),
        async || !upstream.seen().is_empty(),
    )
    .await;
    drop(conn);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = gw.metrics().await;
    let count = |kind: &str| {
        support::metric_value(
            &metrics,
            "tokengate_upstream_errors_total",
            &[("upstream", "app"), ("kind", kind)],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(
        count("protocol") + count("timeout") + count("connect"),
        0.0,
        "{metrics}"
    );
    assert!(
        support::metric_value(
            &metrics,
            "tokengate_requests_total",
            &[("route", "all"), ("status", "400")]
        )
        .is_some_and(|n| n == 1.0),
        "{metrics}"
    );
}

/// A request refused before its body was read (here: no route, so 404) leaves its body on
/// the connection. Those bytes are the body, whatever they look like: they must be drained
/// or the connection closed, never read as the next request. With `Expect: 100-continue`
/// the client may send them late, after the refusal.
#[tokio::test]
async fn the_unread_body_of_a_refused_request_is_never_read_as_a_request() {
    let upstream = Upstream::echo().await;
    let yaml = format!(
        "upstreams:\n  app:\n    endpoints: [\"{}\"]\n\
         routes:\n  - name: api\n    match: {{ path_prefix: /api }}\n    upstream: app\n    auth: none\n",
        upstream.url()
    );
    let gw = Gateway::start(&yaml).await;
    let hidden = "GET /api/smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    for expect in ["", "Expect: 100-continue\r\n"] {
        let mut conn = TcpStream::connect(gw.addr).await.unwrap();
        let head = format!(
            "POST /elsewhere HTTP/1.1\r\nHost: a\r\n{expect}Content-Length: {}\r\n\r\n",
            hidden.len()
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        if !expect.is_empty() {
            // The refusal comes before any body is sent.
            let mut buf = [0u8; 1024];
            let n = tokio::time::timeout(Duration::from_secs(3), conn.read(&mut buf))
                .await
                .expect("an answer without waiting for the body")
                .unwrap();
            let text = String::from_utf8_lossy(&buf[..n]);
            assert!(text.starts_with("HTTP/1.1 404"), "{text}");
        }
        let _ = conn.write_all(hidden.as_bytes()).await;
        let _ = conn
            .write_all(b"GET /api/after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), conn.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out);
        assert!(
            expect.is_empty() == text.starts_with("HTTP/1.1 404"),
            "{expect:?}: {text}"
        );
    }
    let seen: Vec<String> = upstream
        .seen()
        .into_iter()
        .map(|s| s.path_and_query)
        .collect();
    assert!(
        !seen.iter().any(|p| p == "/api/smuggled"),
        "a body was read as a request: {seen:?}"
    );
    // Without Expect the body is drained and the next request served; with it, no body was
    // ever asked for, so the connection is closed instead.
    assert_eq!(seen, ["/api/after"]);
}

/// Request targets that are not a path (CONNECT's authority-form, OPTIONS' asterisk) cannot
/// be routed: a tunnel or a server-wide request is never opened through the gateway.
#[tokio::test]
async fn connect_and_asterisk_targets_are_refused() {
    let upstream = Upstream::echo().await;
    let gw = Gateway::start(&config(&upstream, "")).await;
    for request in [
        "CONNECT api.example:443 HTTP/1.1\r\nHost: api.example:443\r\nConnection: close\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    ] {
        let answer = exchange(gw.addr, request.as_bytes(), Duration::from_secs(3)).await;
        assert_eq!(answer.status(), Some(400), "{request:?}: {}", answer.text);
    }
    assert!(upstream.seen().is_empty());
}

/// Over HTTP/2 (h2c by prior knowledge) the same head limit holds: an oversized header list
/// gets 431 for that stream alone, and the connection goes on serving.
#[tokio::test]
async fn http2_header_lists_over_the_limit_get_431_and_the_connection_lives_on() {
    let upstream = Upstream::echo().await;
    let gw = Gateway::start(&config(&upstream, "  max_header_bytes: 16384\n")).await;
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let big = h2
        .get(gw.url("/big"))
        .header("x-big", "b".repeat(20_000))
        .send()
        .await
        .unwrap();
    assert_eq!(big.version(), http::Version::HTTP_2);
    assert_eq!(big.status(), 431);
    let small = h2.get(gw.url("/small")).send().await.unwrap();
    assert_eq!(small.status(), 200);
    let seen: Vec<String> = upstream
        .seen()
        .into_iter()
        .map(|s| s.path_and_query)
        .collect();
    assert_eq!(seen, ["/small"]);
}

#[tokio::test]
async fn invalid_or_missing_hosts_get_400_and_reach_nothing() {
    let upstream = Upstream::echo().await;
    let gw = Gateway::start(&config(&upstream, "")).await;
    for (what, request) in [
        (
            "a space in Host",
            "GET /probe HTTP/1.1\r\nHost: a b\r\n\r\n",
        ),
        (
            "userinfo in Host",
            "GET /probe HTTP/1.1\r\nHost: evil@api.example.com\r\n\r\n",
        ),
        (
            "a path in Host",
            "GET /probe HTTP/1.1\r\nHost: api.example.com/x\r\n\r\n",
        ),
        (
            "a port that is no number",
            "GET /probe HTTP/1.1\r\nHost: a:b\r\n\r\n",
        ),
        (
            "HTTP/1.1 without Host",
            "GET /probe HTTP/1.1\r\nX-A: 1\r\n\r\n",
        ),
        (
            "userinfo in an absolute-form target",
            "GET http://evil@a/probe HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
    ] {
        let answer = exchange(gw.addr, request.as_bytes(), Duration::from_millis(300)).await;
        assert_eq!(answer.status(), Some(400), "{what}: {}", answer.text);
    }
    assert!(upstream.seen().is_empty(), "{:#?}", upstream.seen());

    // Control: good hosts pass, and HTTP/1.0 may go without one.
    for request in [
        "GET /probe HTTP/1.1\r\nHost: api.example.com:8443\r\nConnection: close\r\n\r\n",
        "GET /probe HTTP/1.1\r\nHost: [::1]:80\r\nConnection: close\r\n\r\n",
        "GET /probe HTTP/1.0\r\n\r\n",
    ] {
        let answer = exchange(gw.addr, request.as_bytes(), Duration::from_secs(2)).await;
        // An HTTP/1.0 request is answered in HTTP/1.0.
        let first = answer.text.lines().next().unwrap_or("");
        assert!(first.ends_with(" 200 OK"), "{request:?}: {}", answer.text);
    }
    assert_eq!(upstream.seen().len(), 3);
}
