//! The per-request cost of finding a route: normalising the path, then scanning the route
//! table in config order (first match wins).
//!
//! Run with `cargo bench --bench routing`.

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use http::Method;
use tokengate::routing::RouteTable;
use tokengate::routing::path::normalise_path;

/// Routes in the benchmark table.
const ROUTES: usize = 20;

fn normalise(c: &mut Criterion) {
    let mut group = c.benchmark_group("normalise_path");
    group.bench_function("already_normal", |b| {
        b.iter(|| normalise_path(black_box("/api/v2/orders/12345/items")))
    });
    group.bench_function("dot_segments_and_escapes", |b| {
        b.iter(|| {
            normalise_path(black_box(
                "/api/./public/../v2/%6Frders//12345/%7Eitems/%20x",
            ))
        })
    });
    group.finish();
}

/// A config with `ROUTES` routes in front of one upstream: host-bound prefix routes with a
/// method list, as an ingress would have, and a host-less catch-all at the end.
fn table_config() -> String {
    let mut yaml =
        String::from("upstreams:\n  app:\n    endpoints: [\"http://127.0.0.1:9000\"]\nroutes:\n");
    for i in 0..ROUTES - 1 {
        let _ = write!(
            yaml,
            "  - name: service-{i:02}\n    match:\n      host: api.example.com\n      \
             path_prefix: /api/service-{i:02}\n      methods: [GET, HEAD]\n    \
             upstream: app\n    auth: none\n"
        );
    }
    yaml.push_str(
        "  - name: static\n    match: { path_prefix: /static }\n    upstream: app\n    auth: none\n",
    );
    yaml
}

fn find(c: &mut Criterion) {
    let config = tokengate::config::parse(Path::new("bench.yaml"), &table_config())
        .expect("the benchmark config is valid");
    assert_eq!(config.routes.len(), ROUTES);
    let table = RouteTable::new(&config.routes);
    let host = Some("api.example.com");
    let cases = [
        ("first", "/api/service-00/orders/1", Some(0)),
        ("middle", "/api/service-10/orders/1", Some(10)),
        ("last", "/static/app.js", Some(ROUTES - 1)),
        ("miss", "/nowhere/at/all", None),
    ];
    let mut group = c.benchmark_group("RouteTable::find");
    for (name, path, expected) in cases {
        assert_eq!(table.find(host, &Method::GET, path), expected, "{name}");
        group.bench_function(name, |b| {
            b.iter(|| table.find(black_box(host), black_box(&Method::GET), black_box(path)))
        });
    }
    group.finish();
}

criterion_group!(benches, normalise, find);
criterion_main!(benches);
