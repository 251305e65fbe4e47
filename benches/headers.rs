//! The per-request cost of header work: the client request rewritten for the upstream
//! (hop-by-hop removal, forged identity headers, X-Forwarded-*), the upstream response
//! cleaned, and the request id checked.
//!
//!     cargo bench --bench headers

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use tokengate::proxy::headers::{ClientSide, remove_hop_by_hop, request_id, rewrite_request};

fn browser_like_request() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "api.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
        ),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, br"),
        ("accept-language", "en-GB,en;q=0.9"),
        (
            "authorization",
            "Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl",
        ),
        ("connection", "keep-alive"),
        ("x-request-id", "2f3a9c1e-0b7d-4c55-9a1e-1234567890ab"),
        ("content-type", "application/json"),
        ("x-forwarded-for", "203.0.113.7"),
    ] {
        h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    h
}

fn headers(c: &mut Criterion) {
    let host = HeaderValue::from_static("api.example.com");
    let peer_header = HeaderValue::from_static("10.1.2.3");
    let client = ClientSide {
        peer: "10.1.2.3".parse().unwrap(),
        peer_header: &peer_header,
        trusted: false,
        proto: "http",
        host: Some(&host),
    };
    let identity = vec!["x-auth-subject".to_owned(), "x-auth-tenant".to_owned()];
    c.bench_function("headers/rewrite_request", |b| {
        b.iter_batched(
            browser_like_request,
            |mut h| rewrite_request(black_box(&mut h), &client, &identity),
            BatchSize::SmallInput,
        )
    });
    let response = || {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("content-type", "application/json"),
            ("content-length", "512"),
            ("cache-control", "no-store"),
            ("date", "Mon, 23 Nov 2026 10:00:00 GMT"),
            ("keep-alive", "timeout=5"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    };
    c.bench_function("headers/remove_hop_by_hop_response", |b| {
        b.iter_batched(
            response,
            |mut h| remove_hop_by_hop(black_box(&mut h)),
            BatchSize::SmallInput,
        )
    });
    let request = browser_like_request();
    c.bench_function("headers/request_id_kept", |b| {
        b.iter(|| request_id(black_box(&request)))
    });
    let empty = HeaderMap::new();
    c.bench_function("headers/request_id_generated", |b| {
        b.iter(|| request_id(black_box(&empty)))
    });
}

criterion_group!(benches, headers);
criterion_main!(benches);
