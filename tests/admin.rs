//! The admin listener: health, readiness and the Prometheus exposition.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use support::tokens::{JwksServer, TestKey};
use support::{Gateway, Upstream, client, metric_value};

/// A config whose issuer fetches keys from `jwks` (loopback, or a closed port).
fn config(upstream: &str, jwks: &str) -> String {
    format!(
        "upstreams:\n  app:\n    endpoints: [\"{upstream}\"]\n\
         issuers:\n  - name: corp\n    issuer: https://idp.test\n    audiences: [api]\n    jwks: {{ url: \"{jwks}\", fetch_timeout: 1s }}\n\
         routes:\n  - name: public\n    match: {{ path_prefix: /public }}\n    upstream: app\n    auth: none\n\
         \x20 - name: private\n    match: {{ path_prefix: /private }}\n    upstream: app\n"
    )
}

const NO_JWKS: &str = "http://127.0.0.1:9/jwks.json";

#[tokio::test]
async fn health_and_readiness_answer_on_the_admin_port_only() {
    let upstream = Upstream::echo().await;
    let key = TestKey::shared("ES256");
    let jwks = JwksServer::start(&[&key]).await;
    let gw = Gateway::start(&config(&upstream.url(), &jwks.url())).await;
    let health = client().get(gw.admin_url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    gw.wait_ready().await;
    let ready = client().get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let unknown = client().get(gw.admin_url("/nope")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    // The gateway port does not expose admin endpoints.
    let leaked = client().get(gw.url("/metrics")).send().await.unwrap();
    assert_eq!(leaked.status(), 404);
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn not_ready_until_every_issuer_has_keys() {
    let upstream = Upstream::echo().await;
    let gw = Gateway::start(&config(&upstream.url(), NO_JWKS)).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let ready = client().get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "the issuer's keys never loaded");
    // Anonymous routes serve all the same; a protected one answers 503, not 401.
    assert_eq!(gw.status("/public/x").await, 200);
    let protected = client()
        .get(gw.url("/private/x"))
        .bearer_auth(TestKey::shared("ES256").token(&support::tokens::claims(
            serde_json::json!({"iss": "https://idp.test", "aud": "api"}),
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(protected.status(), 503);
    assert!(protected.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn requests_are_counted_by_route_method_and_status_with_bounded_labels() {
    let upstream = Upstream::echo().await;
    let gw = Gateway::start(&config(&upstream.url(), NO_JWKS)).await;
    let http = client();
    for _ in 0..3 {
        http.get(gw.url("/public/a")).send().await.unwrap();
    }
    http.post(gw.url("/public/b"))
        .body("x")
        .send()
        .await
        .unwrap();
    http.request(
        reqwest::Method::from_bytes(b"PURGE").unwrap(),
        gw.url("/public/c"),
    )
    .send()
    .await
    .unwrap();
    http.get(gw.url("/private/x")).send().await.unwrap();
    http.get(gw.url("/private/y"))
        .bearer_auth("a.b.c")
        .send()
        .await
        .unwrap();
    http.get(gw.url("/unrouted/secret-path-123"))
        .send()
        .await
        .unwrap();

    let text = gw.metrics().await;
    let requests = |route, method, status| {
        metric_value(
            &text,
            "tokengate_requests_total",
            &[("route", route), ("method", method), ("status", status)],
        )
    };
    assert_eq!(requests("public", "GET", "200"), Some(3.0), "{text}");
    assert_eq!(requests("public", "POST", "200"), Some(1.0));
    assert_eq!(requests("public", "other", "200"), Some(1.0));
    assert_eq!(requests("private", "GET", "401"), Some(2.0));
    assert_eq!(requests("_none", "GET", "404"), Some(1.0));
    assert!(
        !text.contains("secret-path-123"),
        "paths never become labels"
    );
    assert!(
        !text.contains("PURGE"),
        "unknown methods are labelled other"
    );
    assert_eq!(
        metric_value(
            &text,
            "tokengate_request_duration_seconds_count",
            &[("route", "public")]
        ),
        Some(5.0)
    );
    assert_eq!(
        metric_value(
            &text,
            "tokengate_upstream_request_duration_seconds_count",
            &[("upstream", "app")]
        ),
        Some(5.0)
    );
    assert_eq!(
        metric_value(
            &text,
            "tokengate_auth_decisions_total",
            &[("route", "public"), ("result", "anonymous")]
        ),
        Some(5.0)
    );
    assert_eq!(
        metric_value(
            &text,
            "tokengate_auth_decisions_total",
            &[("route", "private"), ("result", "missing_token")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &text,
            "tokengate_auth_decisions_total",
            &[("route", "private"), ("result", "invalid_token")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &text,
            "tokengate_auth_decisions_total",
            &[("route", "public"), ("result", "missing_token")]
        ),
        None,
        "series a route cannot produce are not exported"
    );
    for family in [
        "tokengate_requests_total",
        "tokengate_request_duration_seconds",
        "tokengate_auth_decisions_total",
        "tokengate_upstream_request_duration_seconds",
        "tokengate_upstream_errors_total",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{text}"
        );
    }
}

/// `promtool check metrics` is the reference parser; CI installs it. Without it, this test
/// says so and checks only what it can.
#[tokio::test]
async fn the_exposition_passes_promtool() {
    let upstream = Upstream::echo().await;
    let gw = Gateway::start(&config(&upstream.url(), NO_JWKS)).await;
    client().get(gw.url("/public/x")).send().await.unwrap();
    client().get(gw.url("/private/x")).send().await.unwrap();
    let text = gw.metrics().await;
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("promtool is not installed: skipping the reference check");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // promtool's lint warns about counters without _total etc.; any finding is a failure here.
    assert!(
        output.status.success(),
        "promtool refused the exposition:\n{report}\n{text}"
    );
    assert!(report.trim().is_empty(), "promtool findings:\n{report}");
}
