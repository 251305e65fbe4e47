//! The per-request cost of finding a route: normalising the path, then looking it up in the
//! route table (first match wins) at 10 and 1 000 routes.
//!
//! Run with `cargo bench --bench routing`.

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use http::Method;
use tokengate::routing::RouteTable;
use tokengate::routing::path::normalise_path;

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

/// A config with `n` routes in front of one upstream: host-bound prefix routes with a method
/// list, as an ingress would have, and a host-less catch-all at the end.
fn table_config(n: usize) -> String {
    let mut yaml =
        String::from("upstreams:\n  app:\n    endpoints: [\"http://127.0.0.1:9000\"]\nroutes:\n");
    for i in 0..n - 1 {
        let _ = write!(
            yaml,
            "  - name: service-{i:04}\n    match:\n      host: api.example.com\n      \
             path_prefix: /api/service-{i:04}\n      methods: [GET, HEAD]\n    \
             upstream: app\n    auth: none\n"
        );
    }
    yaml.push_str(
        "  - name: static\n    match: { path_prefix: /static }\n    upstream: app\n    auth: none\n",
    );
    yaml
}

fn find(c: &mut Criterion) {
    for n in [10, 1000] {
        let config = tokengate::config::parse(Path::new("bench.yaml"), &table_config(n))
            .expect("the benchmark config is valid");
        let table = RouteTable::new(&config.routes);
        let host = Some("api.example.com");
        let middle = format!("/api/service-{:04}/orders/1", n / 2);
        let cases = [
            ("first", "/api/service-0000/orders/1".to_owned(), Some(0)),
            ("middle", middle, Some(n / 2)),
            ("last", "/static/app.js".to_owned(), Some(n - 1)),
            ("miss", "/nowhere/at/all".to_owned(), None),
        ];
        let mut group = c.benchmark_group(format!("RouteTable::find/{n}_routes"));
        for (name, path, expected) in &cases {
            assert_eq!(table.find(host, &Method::GET, path), *expected, "{name}");
            group.bench_function(*name, |b| {
                b.iter(|| table.find(black_box(host), black_box(&Method::GET), black_box(path)))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, normalise, find);
criterion_main!(benches);
