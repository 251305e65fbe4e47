//! Routing and forwarding through a real gateway to real upstreams.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use support::{Gateway, RawUpstream, Upstream, client, raw_request};

fn config(upstream: &str, extra_server: &str, routes: &str) -> String {
    format!(
        "server:\n  listen: \"127.0.0.1:0\"\n{extra_server}\
         upstreams:\n  app:\n    endpoints: [\"{upstream}\"]\n    connect_timeout: 1s\n    request_timeout: 500ms\n\
         routes:\n{routes}"
    )
}

const PUBLIC_AND_PROTECTED: &str = "  - name: public
    match: { path_prefix: /public }
    upstream: app
    auth: none
  - name: orders-exact
    match: { path: /orders/export, methods: [POST] }
    upstream: app
    auth: none
  - name: orders
    match: { path_prefix: /orders }
    upstream: app
issuers:
  - name: corp
    issuer: https://idp.example.com
    audiences: [orders-api]
    jwks: { url: \"http://127.0.0.1:9/jwks.json\" }
";

#[tokio::test]
async fn anonymous_route_forwards_with_path_and_query() {
    let upstream = Upstream::echo().await;
    let gw = Gateway::start(&config(&upstream.url(), "", PUBLIC_AND_PROTECTED)).await;
    let response = client()
        .get(gw.url("/public/a/b?x=1&y=%20"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        format!("ok from {}", upstream.addr)
    );
    let seen = upstream.only_request();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.path_and_query, "/public/a/b?x=1&y=%20");
}

#[tokio::test]
async fn upstream_receives_the_normalised_path() {
    let upstream = Upstream::echo().await;
    let gw = Gateway::start(&config(&upstream.url(), "", PUBLIC_AND_PROTECTED)).await;
    let response = raw_request(
        gw.addr,
        b"GET /public//x/./y/../%7Ez%2e?q=%2e HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(
        upstream.only_request().path_and_query,
        "/public/x/~z.?q=%2e"
    );
}

#[tokio::test]
async fn dot_segments_cannot_reach_a_protected_route_through_a_public_one() {
    let upstream = Upstream::echo().await;
    let gw = Gateway::start(&config(&upstream.url(), "", PUBLIC_AND_PROTECTED)).await;
    for path in [
        "/public/../orders/1",
        "/public/%2e%2e/orders/1",
        "/public/.%2E/orders",
    ] {
        let response = raw_request(
            gw.addr,
            format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
            Duration::from_secs(5),
        )
        .await;
        assert!(response.starts_with("HTTP/1.1 401"), "{path}: {response}");
        assert!(
            response.contains("www-authenticate: Bearer realm=\"tokengate\""),
            "{response}"
        );
    }
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn refused_paths_get_400_and_never_reach_the_upstream() {
    let upstream = Upstream::echo().await;
    let gw = Gateway::start(&config(&upstream.url(), "", PUBLIC_AND_PROTECTED)).await;
    for path in [
        "/public/a%2Fb",
        "/public/a%5Cb",
        "/public/a%00",
        "/public/../../etc/passwd",
        "/public/..;/orders",
        "/public/%zz",
    ] {
        let response = raw_request(
            gw.addr,
            format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
            Duration::from_secs(5),
        )
        .await;
        assert!(response.starts_with("HTTP/1.1 400"), "{path}: {response}");
        assert!(
            response.contains("\"error\":\"invalid_request\""),
            "{response}"
        );
    }
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn prefixes_match_whole_segments_and_misses_get_a_json_404() {
    let upstream = Upstream::echo().await;
    let gw = Gateway::start(&config(&upstream.url(), "", PUBLIC_AND_PROTECTED)).await;
    let response = client().get(gw.url("/publicx")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(body["error"], "not_found");
    assert!(body["error_description"].is_string());
    assert_eq!(gw.status("/public").await, 200);
    assert_eq!(gw.status("/public/").await, 200);
    assert_eq!(upstream.seen().len(), 2);
}

#[tokio::test]
async fn methods_and_exact_paths_select_routes_in_order() {
    let upstream = Upstream::echo().await;
    let gw = Gateway::start(&config(&upstream.url(), "", PUBLIC_AND_PROTECTED)).await;
    // POST /orders/export hits the anonymous exact route; GET falls through to the protected one.
    let post = client()
        .post(gw.url("/orders/export"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 200);
    let get = client().get(gw.url("/orders/export")).send().await.unwrap();
    assert_eq!(get.status(), 401);
    let sub = client()
        .post(gw.url("/orders/export/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        sub.status(),
        401,
        "an exact path does not match below itself"
    );
    assert_eq!(upstream.seen().len(), 1);
}

#[tokio::test]
async fn hosts_match_case_insensitively_without_port_and_two_hosts_are_refused() {
    let upstream = Upstream::echo().await;
    let routes = "  - name: api
    match: { host: api.example.com, path_prefix: / }
    upstream: app
    auth: none
";
    let gw = Gateway::start(&config(&upstream.url(), "", routes)).await;
    let ok = raw_request(
        gw.addr,
        b"GET /x HTTP/1.1\r\nHost: API.Example.COM:8443\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let absolute = raw_request(
        gw.addr,
        b"GET http://api.example.com/y HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(absolute.starts_with("HTTP/1.1 200"), "{absolute}");
    assert_eq!(
        upstream.seen()[1].headers["host"],
        "api.example.com",
        "an absolute-form target's authority replaces the Host header"
    );
    let other = raw_request(
        gw.addr,
        b"GET /x HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    let twice = raw_request(
        gw.addr,
        b"GET /x HTTP/1.1\r\nHost: api.example.com\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(twice.starts_with("HTTP/1.1 400"), "{twice}");
    assert_eq!(upstream.seen().len(), 2);
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_both_ways() {
    let upstream = Upstream::echo().await;
    let gw = Gateway::start(&config(&upstream.url(), "", PUBLIC_AND_PROTECTED)).await;
    let response = raw_request(
        gw.addr,
        b"GET /public/h HTTP/1.1\r\nHost: a\r\nConnection: close, X-Listed\r\nX-Listed: 1\r\n\
          Keep-Alive: timeout=9\r\nTE: deflate\r\nProxy-Authorization: Basic eDp5\r\n\
          Proxy-Connection: keep-alive\r\nUpgrade: h2c\r\nX-Kept: yes\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let lower = response.to_ascii_lowercase();
    assert!(!lower.contains("x-hop"), "{response}");
    assert!(!lower.contains("keep-alive: timeout=5"), "{response}");
    let seen = upstream.only_request();
    for gone in [
        "x-listed",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
        "upgrade",
    ] {
        assert!(
            !seen.headers.contains_key(gone),
            "{gone} reached the upstream: {:?}",
            seen.headers
        );
    }
    assert_eq!(seen.headers["x-kept"], "yes");
}

#[tokio::test]
async fn te_trailers_is_the_one_te_value_passed_on() {
    let upstream = Upstream::echo().await;
    let gw = Gateway::start(&config(&upstream.url(), "", PUBLIC_AND_PROTECTED)).await;
    client()
        .get(gw.url("/public/t"))
        .header("te", "trailers")
        .send()
        .await
        .unwrap();
    assert_eq!(upstream.only_request().headers["te"], "trailers");
}

#[tokio::test]
async fn forwarded_headers_are_set_and_spoofed_ones_replaced() {
    let upstream = Upstream::echo().await;
    let gw = Gateway::start(&config(&upstream.url(), "", PUBLIC_AND_PROTECTED)).await;
    client()
        .get(gw.url("/public/f"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-prefix", "/admin")
        .header("forwarded", "for=6.6.6.6")
        .send()
        .await
        .unwrap();
    let seen = upstream.only_request();
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], gw.addr.to_string());
    assert!(!seen.headers.contains_key("x-forwarded-prefix"));
    assert!(!seen.headers.contains_key("forwarded"));
    assert_eq!(
        seen.headers["host"],
        gw.addr.to_string(),
        "the client's Host is kept"
    );
}

#[tokio::test]
async fn trusted_proxies_are_appended_to() {
    let upstream = Upstream::echo().await;
    let server = "  trusted_proxies: [\"127.0.0.0/8\"]\n";
    let gw = Gateway::start(&config(&upstream.url(), server, PUBLIC_AND_PROTECTED)).await;
    client()
        .get(gw.url("/public/f"))
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "api.example.com")
        .send()
        .await
        .unwrap();
    let seen = upstream.only_request();
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(seen.headers["x-forwarded-host"], "api.example.com");
}

#[tokio::test]
async fn request_ids_are_kept_or_generated_and_returned() {
    let upstream = Upstream::echo().await;
    let gw = Gateway::start(&config(&upstream.url(), "", PUBLIC_AND_PROTECTED)).await;
    let kept = client()
        .get(gw.url("/public/1"))
        .header("x-request-id", "abc-123.DEF_4")
        .send()
        .await
        .unwrap();
    assert_eq!(kept.headers()["x-request-id"], "abc-123.DEF_4");
    let replaced = client()
        .get(gw.url("/public/2"))
        .header("x-request-id", "evil value; with spaces")
        .send()
        .await
        .unwrap();
    let generated = replaced.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(generated, "evil value; with spaces");
    assert!(
        generated.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{generated}"
    );
    let seen = upstream.seen();
    assert_eq!(seen[0].headers["x-request-id"], "abc-123.DEF_4");
    assert_eq!(seen[1].headers["x-request-id"], generated.as_str());
    // The gateway's own answers carry one too.
    let not_found = client().get(gw.url("/nowhere")).send().await.unwrap();
    assert!(not_found.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn identity_headers_sent_by_clients_are_removed_on_every_route() {
    let upstream = Upstream::echo().await;
    let routes = "  - name: public
    match: { path_prefix: /public }
    upstream: app
    auth: none
  - name: orders
    match: { path_prefix: /orders }
    upstream: app
    forward:
      claims_to_headers: { sub: X-Auth-Subject }
issuers:
  - name: corp
    issuer: https://idp.example.com
    audiences: [orders-api]
    jwks: { url: \"http://127.0.0.1:9/jwks.json\" }
";
    let gw = Gateway::start(&config(&upstream.url(), "", routes)).await;
    let response = raw_request(
        gw.addr,
        b"GET /public/x HTTP/1.1\r\nHost: a\r\nX-Auth-Subject: admin\r\nX_Auth_Subject: admin\r\n\
          x-auth-subject: admin\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let seen = upstream.only_request();
    assert!(
        !seen.headers.contains_key("x-auth-subject"),
        "{:?}",
        seen.headers
    );
    assert!(
        !seen.headers.contains_key("x_auth_subject"),
        "{:?}",
        seen.headers
    );
}

#[tokio::test]
async fn strip_authorization_keeps_the_credential_from_the_upstream() {
    let upstream = Upstream::echo().await;
    let routes = "  - name: stripped
    match: { path_prefix: /stripped }
    upstream: app
    auth: none
    forward: { strip_authorization: true }
  - name: kept
    match: { path_prefix: /kept }
    upstream: app
    auth: none
";
    let gw = Gateway::start(&config(&upstream.url(), "", routes)).await;
    for path in ["/stripped/x", "/kept/x"] {
        let response = client()
            .get(gw.url(path))
            .bearer_auth("abc")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let seen = upstream.seen();
    assert!(
        !seen[0].headers.contains_key("authorization"),
        "{:?}",
        seen[0].headers
    );
    assert_eq!(seen[1].headers["authorization"], "Bearer abc");
}

#[tokio::test]
async fn protected_routes_never_forward_without_a_valid_token() {
    let upstream = Upstream::echo().await;
    let gw = Gateway::start(&config(&upstream.url(), "", PUBLIC_AND_PROTECTED)).await;
    let missing = client().get(gw.url("/orders/1")).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    assert_eq!(
        missing.headers()["www-authenticate"],
        "Bearer realm=\"tokengate\""
    );
    let with_token = client()
        .get(gw.url("/orders/1"))
        .bearer_auth("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln")
        .send()
        .await
        .unwrap();
    assert_eq!(with_token.status(), 401);
    let challenge = with_token.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(
        !challenge.contains("eyJ"),
        "the token is never echoed: {challenge}"
    );
    let twice = raw_request(
        gw.addr,
        b"GET /public/x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(twice.starts_with("HTTP/1.1 400"), "{twice}");
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn resource_metadata_is_advertised_in_401_challenges() {
    let upstream = Upstream::echo().await;
    let server =
        "  resource_metadata: \"https://api.example.com/.well-known/oauth-protected-resource\"\n";
    let gw = Gateway::start(&config(&upstream.url(), server, PUBLIC_AND_PROTECTED)).await;
    let missing = client().get(gw.url("/orders/1")).send().await.unwrap();
    assert_eq!(
        missing.headers()["www-authenticate"],
        "Bearer realm=\"tokengate\", resource_metadata=\"https://api.example.com/.well-known/oauth-protected-resource\""
    );
}

/// A raw HTTP/1.1 upstream that answers each request and then closes the connection without
/// saying so (no `Connection: close`), as an upstream's idle keep-alive timeout does.
async fn closing_upstream() -> RawUpstream {
    RawUpstream::start(|mut stream, _| async move {
        if support::read_head(&mut stream).await {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
        }
        // Dropped here: closed with no warning.
    })
    .await
}

#[tokio::test]
async fn an_upstream_closing_kept_connections_costs_no_request() {
    let upstream = closing_upstream().await;
    let gw = Gateway::start(&config(
        &format!("http://{}", upstream.addr),
        "",
        PUBLIC_AND_PROTECTED,
    ))
    .await;
    let client = client();
    for i in 0..20 {
        let response = client
            .get(gw.url(&format!("/public/{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "request {i}");
        assert_eq!(response.text().await.unwrap(), "ok");
        // Give the close time to arrive before the next request, as between real requests.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        upstream.connections.load(Ordering::SeqCst),
        20,
        "one connection per request"
    );
}

#[tokio::test]
async fn a_connection_is_reused_only_after_its_streamed_body_ended() {
    // Each response is streamed in three chunks with pauses between them.
    let upstream = Upstream::start(|_request, _addr| async move {
        let (tx, body) = support::channel_body();
        tokio::spawn(async move {
            for chunk in ["one ", "two ", "three"] {
                tokio::time::sleep(Duration::from_millis(30)).await;
                if tx.send(bytes::Bytes::from(chunk)).await.is_err() {
                    return;
                }
            }
        });
        http::Response::new(http_body_util::BodyExt::boxed(body))
    })
    .await;
    let gw = Gateway::start(&config(&upstream.url(), "", PUBLIC_AND_PROTECTED)).await;
    for i in 0..5 {
        let response = client()
            .get(gw.url(&format!("/public/{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.text().await.unwrap(), "one two three");
    }
    assert_eq!(
        upstream.connections(),
        1,
        "one connection, reused after each body"
    );

    // A client that leaves mid-body: that connection cannot be reused (the rest of its
    // response is still on the wire), and the next request gets a good answer on a new one.
    let mut response = client().get(gw.url("/public/left")).send().await.unwrap();
    assert_eq!(response.chunk().await.unwrap().unwrap(), "one ");
    drop(response);
    let response = client().get(gw.url("/public/after")).send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "one two three");
    assert_eq!(upstream.connections(), 2);
}

#[tokio::test]
async fn upstream_connections_are_pooled_and_reused() {
    let upstream = Upstream::echo().await;
    let gw = Gateway::start(&config(&upstream.url(), "", PUBLIC_AND_PROTECTED)).await;
    // Several client connections, sequential requests: the gateway keeps one upstream connection.
    for i in 0..20 {
        let fresh_client = client();
        let response = fresh_client
            .get(gw.url(&format!("/public/{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
    }
    assert_eq!(upstream.seen().len(), 20);
    assert_eq!(
        upstream.connections(),
        1,
        "every request after the first reused the pooled connection"
    );
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served_on_the_plain_port() {
    let upstream = Upstream::echo().await;
    let gw = Gateway::start(&config(&upstream.url(), "", PUBLIC_AND_PROTECTED)).await;
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2.get(gw.url("/public/h2?x=1")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let seen = upstream.only_request();
    assert_eq!(
        seen.version,
        http::Version::HTTP_11,
        "upstreams are spoken to in HTTP/1.1"
    );
    assert_eq!(seen.path_and_query, "/public/h2?x=1");
    assert_eq!(
        seen.headers["host"],
        gw.addr.to_string(),
        ":authority becomes Host"
    );
}
