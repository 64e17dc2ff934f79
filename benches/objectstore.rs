//! The object store's core, in process (no IPC yet): put bandwidth against
//! memcpy, get latency by size, and small put/get calls.
//! Run: `cargo bench --bench objectstore`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use prism_objectstore::{ClientId, ObjectId, Store};
use std::hint::black_box;

const MB: usize = 1 << 20;

fn put_bandwidth(c: &mut Criterion) {
    let mut store = Store::new("bench-put", 2200 * MB, None).unwrap();
    let client = ClientId(1);
    let mut g = c.benchmark_group("put");
    g.sample_size(10);
    for size in [100 * MB, 1024 * MB] {
        let data = vec![7u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("put", size / MB), &data, |b, data| {
            b.iter(|| {
                let id = ObjectId::random();
                store.put(id, data, client, true).unwrap();
                store.unpin(id).unwrap();
            })
        });
        let mut dst = vec![0u8; size];
        g.bench_with_input(BenchmarkId::new("memcpy", size / MB), &data, |b, data| {
            b.iter(|| dst.copy_from_slice(black_box(data)))
        });
    }
    g.finish();
}

fn get_latency(c: &mut Criterion) {
    let mut store = Store::new("bench-get", 1100 * MB, None).unwrap();
    let client = ClientId(1);
    let mut g = c.benchmark_group("get");
    for size in [1 << 10, MB, 1024 * MB] {
        let id = ObjectId::random();
        store.put(id, &vec![1u8; size], ClientId(0), true).unwrap();
        g.bench_function(BenchmarkId::new("get_release", size), |b| {
            b.iter(|| {
                let view = store.get_bytes(id, client).unwrap();
                black_box(view.len());
                store.release(id, client).unwrap();
            })
        });
    }
    g.finish();
}

fn small_calls(c: &mut Criterion) {
    let mut store = Store::new("bench-small", 64 * MB, None).unwrap();
    let client = ClientId(1);
    let mut g = c.benchmark_group("small");
    g.throughput(Throughput::Elements(1));
    g.bench_function("put_8B", |b| {
        b.iter(|| {
            let id = ObjectId::random();
            store.put(id, b"12345678", client, true).unwrap();
            store.unpin(id).unwrap();
        })
    });
    let id = ObjectId::random();
    store.put(id, b"12345678", ClientId(0), true).unwrap();
    g.bench_function("get_8B", |b| {
        b.iter(|| {
            black_box(store.get_bytes(id, client).unwrap().len());
            store.release(id, client).unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, put_bandwidth, get_latency, small_calls);
criterion_main!(benches);
