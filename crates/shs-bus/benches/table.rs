//! Micro-benchmarks of the subscription table: matching an event type against 10,000
//! subscriptions (some of them wildcards), and subscribing and unsubscribing. Run with
//! `cargo bench -p shs-bus`.

#![allow(missing_docs)] // criterion_group! defines undocumented public functions.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use shs_bus::SubscriptionTable;

const SUBSCRIPTIONS: usize = 10_000;

/// 10,000 subscriptions of 997 functions over 100 services: exact types
/// (`svcS.entityE.eventN`), and one in 20 a wildcard (`svcS.*.created` or `svcS.>`).
fn table() -> SubscriptionTable {
    let mut table = SubscriptionTable::new();
    for i in 0..SUBSCRIPTIONS {
        let function = format!("fn-{}", i % 997);
        let pattern = match i % 40 {
            0 => format!("svc{}.*.created", (i / 40) % 100),
            20 => format!("svc{}.>", (i / 40) % 100),
            _ => exact(i),
        };
        if let Err(e) = table.insert(&function, &pattern) {
            panic!("cannot subscribe {function} to {pattern}: {e}");
        }
    }
    assert_eq!(table.len(), SUBSCRIPTIONS);
    table
}

/// The exact type of subscription `i` (when it is not a wildcard).
fn exact(i: usize) -> String {
    format!("svc{}.entity{}.event{i}", i % 100, i % 37)
}

fn matching(c: &mut Criterion) {
    let table = table();
    let mut group = c.benchmark_group("SubscriptionTable::matching (10,000 subscriptions)");
    let exact_type = exact(1007);
    for (name, event_type) in [
        // An exact subscription and the service's `>` wildcard.
        ("exact + wildcard", exact_type.as_str()),
        // Only the wildcards of its service.
        ("wildcards only", "svc7.entity3.created"),
        // Walks into a service that exists, matches only its `>`.
        ("deep miss, `>` only", "svc7.entity3.nothing.here"),
        // No service of that name: nothing matches.
        ("no match", "billing.invoice.paid"),
    ] {
        let found = table.matching(event_type).len();
        group.bench_function(format!("{name} ({found} functions)"), |b| {
            b.iter(|| table.matching(black_box(event_type)))
        });
    }
    group.finish();
}

fn insert_remove(c: &mut Criterion) {
    let mut table = table();
    c.bench_function(
        "SubscriptionTable insert + remove (10,000 subscriptions)",
        |b| {
            b.iter(|| {
                let added = table.insert(black_box("fn-new"), black_box("svc7.entity3.updated"));
                let removed = table.remove(black_box("fn-new"), black_box("svc7.entity3.updated"));
                (added.is_ok(), removed)
            })
        },
    );
    c.bench_function("SubscriptionTable insert + remove, wildcard", |b| {
        b.iter(|| {
            let added = table.insert(black_box("fn-new"), black_box("svc7.*.updated"));
            let removed = table.remove(black_box("fn-new"), black_box("svc7.*.updated"));
            (added.is_ok(), removed)
        })
    });
}

criterion_group!(benches, matching, insert_remove);
criterion_main!(benches);
