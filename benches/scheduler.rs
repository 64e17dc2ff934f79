//! Placement decisions per second at 100, 1,000 and 10,000 nodes, and the
//! wire codec. Run: `cargo bench --bench scheduler`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use prism::proto::codec;
use prism::proto::common::Resources;
use prism::proto::head::HeadRequest;
use prism::NodeId;
use prism_scheduler::*;
use std::collections::BTreeMap;
use std::hint::black_box;

/// A cluster of `n` nodes, 16 CPUs and 4 GPUs each, half busy, two zones.
fn cluster(n: u32) -> ClusterView<u32> {
    let mut view = ClusterView::new();
    for id in 0..n {
        let total = ResourceSet::new()
            .with(CPU, Quantity::whole(16))
            .with(GPU, Quantity::whole(4))
            .with(MEMORY, Quantity::whole(64));
        let zone = if id % 2 == 0 { "a" } else { "b" };
        let labels = BTreeMap::from([("zone".to_string(), zone.to_string())]);
        view.upsert(id, NodeResources::new(total).with_labels(labels));
        // Busy past the hybrid threshold, so hybrid must scan for the least loaded.
        view.allocate(
            id,
            &ResourceSet::new().with(CPU, Quantity::whole(9 + id % 5)),
        )
        .unwrap();
    }
    view
}

fn placement(c: &mut Criterion) {
    let ask = ResourceSet::new()
        .with(CPU, Quantity::ONE)
        .with(GPU, Quantity::from_f64(0.5).unwrap());
    let labels = Strategy::Labels(LabelSelector::parse("zone=b").unwrap());
    let mut g = c.benchmark_group("placement");
    g.throughput(Throughput::Elements(1));
    for n in [100u32, 1_000, 10_000] {
        let view = cluster(n);
        let mut s = Scheduler::new();
        g.bench_with_input(BenchmarkId::new("hybrid", n), &view, |b, v| {
            b.iter(|| black_box(s.decide(v, &ask, &Strategy::Hybrid, Some(n / 2))))
        });
        g.bench_with_input(BenchmarkId::new("spread", n), &view, |b, v| {
            b.iter(|| black_box(s.decide(v, &ask, &Strategy::Spread, None)))
        });
        g.bench_with_input(BenchmarkId::new("labels", n), &view, |b, v| {
            b.iter(|| black_box(s.decide(v, &ask, &labels, Some(0))))
        });
        // A saturated cluster (every CPU taken): the task queues.
        let mut full = view.clone();
        for id in 0..n {
            let free = full.node(id).unwrap().available().get(CPU);
            full.allocate(id, &ResourceSet::new().with(CPU, free))
                .unwrap();
        }
        g.bench_with_input(BenchmarkId::new("hybrid_saturated", n), &full, |b, v| {
            b.iter(|| black_box(s.decide(v, &ask, &Strategy::Hybrid, None)))
        });
        let bundles = vec![ask.clone(); 8];
        g.bench_with_input(BenchmarkId::new("pg_strict_spread_8", n), &view, |b, v| {
            b.iter(|| black_box(place_bundles(v, &bundles, PgStrategy::StrictSpread)))
        });
    }
    g.finish();
}

fn wire_codec(c: &mut Criterion) {
    let total = ResourceSet::new()
        .with(CPU, Quantity::whole(16))
        .with(GPU, Quantity::whole(4));
    let msg = HeadRequest::Heartbeat {
        node_id: NodeId::random(),
        available: Resources::from(&total),
        leased: Resources::default(),
        demand: Vec::new(),
    };
    let frame = codec::encode(&msg).unwrap();
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_heartbeat", |b| {
        b.iter(|| black_box(codec::encode(black_box(&msg)).unwrap()))
    });
    g.bench_function("decode_heartbeat", |b| {
        b.iter(|| {
            black_box(codec::decode_frame::<HeadRequest>(black_box(&frame), 1 << 20).unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, placement, wire_codec);
criterion_main!(benches);
