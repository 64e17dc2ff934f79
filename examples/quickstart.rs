//! Prism quickstart: runs on an embedded single-machine cluster with no
//! setup (`cargo run --release --example quickstart`), or on a running
//! cluster when `PRISM_ADDRESS` is set.
//!
//! 1. estimate π with thousands of tasks;
//! 2. a map-reduce word count over generated text, with refs as arguments;
//! 3. nested tasks (a task that submits tasks).

use std::collections::BTreeMap;
use std::time::Instant;

/// Counts how many of `n` seeded random points fall inside the unit circle.
#[prism::remote]
fn sample_pi(seed: u64, n: u64) -> u64 {
    // xorshift64*: deterministic per seed, no dependency needed.
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .filter(|_| {
            let (a, b) = (next(), next());
            a * a + b * b <= 1.0
        })
        .count() as u64
}

/// Generates a deterministic chunk of text.
#[prism::remote]
fn make_text(chunk: u64, words: u64) -> String {
    const VOCAB: [&str; 8] = [
        "prism", "ray", "actor", "task", "object", "store", "rust", "quic",
    ];
    (0..words)
        .map(|i| VOCAB[((chunk * 31 + i * 7 + i * i) % VOCAB.len() as u64) as usize])
        .collect::<Vec<_>>()
        .join(" ")
}

/// Map: word counts of one chunk.
#[prism::remote]
fn count_words(text: String) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for w in text.split_whitespace() {
        *m.entry(w.to_string()).or_insert(0) += 1;
    }
    m
}

/// Reduce: merges two partial counts.
#[prism::remote]
fn merge(a: BTreeMap<String, u64>, b: BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    let mut a = a;
    for (k, v) in b {
        *a.entry(k).or_insert(0) += v;
    }
    a
}

/// Nested: sums squares by submitting one task per item from inside a task.
#[prism::remote]
fn sum_of_squares(n: u64) -> u64 {
    let refs: Vec<_> = (0..n)
        .map(|i| square::remote(i).expect("submit from a task"))
        .collect();
    prism::get_all(&refs)
        .expect("nested results")
        .into_iter()
        .sum()
}

#[prism::remote]
fn square(x: u64) -> u64 {
    x * x
}

fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let cluster = prism::init()?;
    let first = square::remote(7u64)?.get()?;
    println!(
        "cluster up ({}), first task result {first} after {:.0} ms",
        if cluster.is_embedded() {
            "embedded"
        } else {
            "joined"
        },
        started.elapsed().as_secs_f64() * 1e3
    );

    // 1. π with 2,000 tasks.
    let t = Instant::now();
    let (tasks, per_task) = (2_000u64, 20_000u64);
    let refs = (0..tasks)
        .map(|seed| sample_pi::remote(seed, per_task))
        .collect::<prism::Result<Vec<_>>>()?;
    let inside: u64 = prism::get_all(&refs)?.into_iter().sum();
    let pi = 4.0 * inside as f64 / (tasks * per_task) as f64;
    println!(
        "pi ≈ {pi:.5} from {tasks} tasks ({:.0} tasks/s)",
        tasks as f64 / t.elapsed().as_secs_f64()
    );

    // 2. Word count: generate, map, tree-reduce; refs flow as arguments.
    let t = Instant::now();
    let chunks = (0..64)
        .map(|c| make_text::remote(c, 2_000))
        .collect::<prism::Result<Vec<_>>>()?;
    let mut level = chunks
        .iter()
        .map(count_words::remote)
        .collect::<prism::Result<Vec<_>>>()?;
    while level.len() > 1 {
        let mut next = Vec::new();
        for pair in level.chunks(2) {
            next.push(match pair {
                [a, b] => merge::remote(a, b)?,
                [a] => a.clone(),
                _ => unreachable!(),
            });
        }
        level = next;
    }
    let counts = level[0].get()?;
    let total: u64 = counts.values().sum();
    println!(
        "word count: {total} words in {:.0} ms, top: {:?}",
        t.elapsed().as_secs_f64() * 1e3,
        counts.iter().max_by_key(|(_, v)| **v)
    );
    assert_eq!(total, 64 * 2_000);

    // 3. Nested tasks.
    let nested = sum_of_squares::remote(100u64)?.get()?;
    assert_eq!(nested, (0..100u64).map(|i| i * i).sum::<u64>());
    println!("nested: sum of squares 0..100 = {nested}");
    Ok(())
}
