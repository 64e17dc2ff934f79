//! What a residency rule costs: on an embedded cluster whose node is
//! labelled `region=in-south`, small tasks with and without
//! `.resident(rule)` (a resident result is claimed with the head and stored
//! rather than inlined), and small puts with and without a rule (each
//! `put_resident` asks the head first). Rounds alternate plain and
//! resident; the medians are printed with their ratio.
//!
//! Run: `cargo bench --bench residency` (5 rounds of 2,000). Without
//! `--bench` (as in the test command) one round of 100, so it cannot rot.

use prism::Residency;
use std::time::Instant;

#[prism::remote]
fn small(x: u64) -> u64 {
    x + 1
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs `f` (which does `n` operations) and returns operations a second.
fn rate(n: usize, f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    n as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    let _cluster = prism::InitOptions::new()
        .num_cpus(2.0)
        .label("region", "in-south")
        .init()
        .expect("an embedded cluster");
    let full = std::env::args().any(|a| a == "--bench");
    let (rounds, n) = if full { (5, 2_000) } else { (1, 100) };
    let rule = Residency::new("region", &["in-south", "in-west"]);
    // 0: plain; 1: placed by the rule's label selector only (what the rule
    // costs in placement); 2: resident.
    let tasks = |kind: u8| {
        rate(n, || {
            let refs: Vec<_> = (0..n as u64)
                .map(|i| {
                    let o = small::options();
                    let o = match kind {
                        0 => o,
                        1 => o.label_selector("region=in-south|in-west"),
                        _ => o.resident(rule.clone()),
                    };
                    o.remote(i).expect("submit")
                })
                .collect();
            let got = prism::get_all(&refs).expect("results");
            assert_eq!(got.len(), n);
        })
    };
    let puts = |resident: bool| {
        rate(n, || {
            let refs: Vec<_> = (0..n as u64)
                .map(|i| {
                    if resident {
                        prism::put_resident(&i, rule.clone()).expect("put")
                    } else {
                        prism::put(&i).expect("put")
                    }
                })
                .collect();
            assert_eq!(refs.len(), n);
        })
    };
    tasks(0);
    let (mut plain_t, mut res_t, mut plain_p, mut res_p) = (vec![], vec![], vec![], vec![]);
    let mut label_t = vec![];
    for _ in 0..rounds {
        plain_t.push(tasks(0));
        label_t.push(tasks(1));
        res_t.push(tasks(2));
        plain_p.push(puts(false));
        res_p.push(puts(true));
    }
    for (what, plain, resident) in [
        ("small tasks async, resident", plain_t.clone(), res_t),
        ("small tasks async, label selector only", plain_t, label_t),
        ("small puts, resident", plain_p, res_p),
    ] {
        let (p, r) = (median(plain), median(resident));
        println!(
            "{what}: {p:.0}/s plain, {r:.0}/s with it ({:.2}x), median of {rounds} rounds of {n}",
            r / p
        );
    }
}
