//! Revocation cost: lookups (negative, positive, by subject) against a 1M-entry set, and the
//! rebuild time and memory of 1M- and 10M-entry lists, with the worst lookup latency seen on
//! another thread while a rebuild runs.
//!
//!     cargo bench --bench revocation
//!     REVOCATION_SIZES=1000000 cargo bench --bench revocation   # skip the 10M rebuild

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use tokengate::revocation::RevocationSet;
use tokengate::revocation::list::RevocationList;

/// A UUID-shaped id for `i` (36 bytes), spread so sorting is not trivially presorted.
fn id(i: u64) -> String {
    let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i >> 7);
    let y = x.rotate_left(29).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        x >> 32,
        (x >> 16) & 0xffff,
        x & 0xffff,
        y >> 48,
        y & 0xffff_ffff_ffff
    )
}

fn list_text(n: u64) -> String {
    let mut text = String::with_capacity(n as usize * 37);
    for i in 0..n {
        text.push_str(&id(i));
        text.push('\n');
    }
    text
}

/// Parses and builds a set of `n` entries as a reload does; prints time and bytes per entry,
/// and the slowest lookup another thread saw on the old set meanwhile.
fn rebuild_report(n: u64) -> Arc<RevocationSet> {
    let text = list_text(n);
    let old = Arc::new(RevocationSet::build(
        vec![Arc::new(RevocationList::parse(b"x\n"))],
        1,
        0.0001,
    ));
    let building = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (old, building) = (old.clone(), building.clone());
        std::thread::spawn(move || {
            let (mut worst, mut lookups, mut over_100us) = (Duration::ZERO, 0u64, 0u64);
            while building.load(Ordering::Relaxed) {
                let started = Instant::now();
                black_box(old.is_revoked(Some("not-revoked"), Some("nobody"), None));
                let took = started.elapsed();
                worst = worst.max(took);
                over_100us += u64::from(took > Duration::from_micros(100));
                lookups += 1;
            }
            (worst, lookups, over_100us)
        })
    };
    let started = Instant::now();
    let list = RevocationList::parse(text.as_bytes());
    let parsed = started.elapsed();
    let set = RevocationSet::build(vec![Arc::new(list)], n, 0.0001);
    let total = started.elapsed();
    building.store(false, Ordering::Relaxed);
    let (worst, lookups, over_100us) = watcher.join().unwrap();
    println!(
        "rebuild {n} entries: parse {:.2} s, total {:.2} s; {:.1} bytes/entry ({:.0} MiB); \
         {lookups} lookups on another thread meanwhile, {over_100us} over 100 µs, slowest {:?}",
        parsed.as_secs_f64(),
        total.as_secs_f64(),
        set.memory_bytes() as f64 / set.entries() as f64,
        set.memory_bytes() as f64 / (1 << 20) as f64,
        worst
    );
    Arc::new(set)
}

fn revocation(c: &mut Criterion) {
    // `cargo test --benches` runs each benchmark once, unoptimised: keep the lists small there.
    let quick = !std::env::args().any(|a| a == "--bench");
    let default_sizes = if quick { "10000" } else { "1000000,10000000" };
    let sizes: Vec<u64> = std::env::var("REVOCATION_SIZES")
        .unwrap_or_else(|_| default_sizes.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let mut one_million = None;
    for &n in &sizes {
        let set = rebuild_report(n);
        if n == 1_000_000 {
            one_million = Some(set);
        }
    }
    let set = one_million.unwrap_or_else(|| rebuild_report(if quick { 10_000 } else { 1_000_000 }));
    let present = id(1_234);
    c.bench_function("revocation/1M/negative", |b| {
        b.iter(|| {
            set.is_revoked(
                black_box(Some("4b1d8a3e-0000-4000-8000-000000000000")),
                black_box(Some("alice")),
                None,
            )
        })
    });
    c.bench_function("revocation/1M/positive", |b| {
        b.iter(|| set.is_revoked(black_box(Some(present.as_str())), None, None))
    });
}

criterion_group!(benches, revocation);
criterion_main!(benches);
