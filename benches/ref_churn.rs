//! Memory under churn: a driver on an embedded cluster pushes short-lived
//! refs through tasks (each a small `put`, passed inside a `Vec` to a task
//! that reads it; 200 in flight) and reports its resident memory and what
//! it tracks at 10,000 refs and at the end. With owner-based reference
//! counting both stay flat: every ref, its store copy and its lineage go
//! when the task that borrowed it ends and the driver drops its result.
//!
//! Run: `cargo bench --bench ref_churn` (1,000,000 refs, or
//! `PRISM_CHURN_REFS`). Without `--bench` (as in the test command) it
//! churns 2,000, so it cannot rot.

use prism::ObjectRef;
use std::time::Instant;

#[prism::remote]
fn read_all(blobs: Vec<ObjectRef<Vec<u8>>>) -> u64 {
    blobs.iter().map(|b| b.get().unwrap().len() as u64).sum()
}

/// This process's resident memory in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let _cluster = prism::init().expect("an embedded cluster");
    let full = std::env::args().any(|a| a == "--bench");
    let total: usize = match std::env::var("PRISM_CHURN_REFS") {
        Ok(n) => n.parse().expect("PRISM_CHURN_REFS: a number of refs"),
        Err(_) if full => 1_000_000,
        Err(_) => 2_000,
    };
    let batch = 200;
    let start = Instant::now();
    let mut at_10k = None;
    let mut done = 0;
    while done < total {
        let sums: Vec<_> = (0..batch)
            .map(|i| {
                let r = prism::put(&vec![(done + i) as u8; 64]).expect("put");
                read_all::remote(vec![r]).expect("submit")
            })
            .collect();
        let got = prism::get_all(&sums).expect("results");
        assert!(got.iter().all(|s| *s == 64));
        drop(sums);
        done += batch;
        if done == 10_000 {
            at_10k = Some((rss_mib(), prism::ref_counts().expect("counts")));
        }
        if done % 100_000 == 0 {
            let secs = start.elapsed().as_secs_f64();
            eprintln!(
                "  {done} refs, {:.0}/s, RSS {:.1} MiB",
                done as f64 / secs,
                rss_mib()
            );
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let end = prism::ref_counts().expect("counts");
    println!(
        "ref churn: {total} refs through tasks in {secs:.1} s ({:.0} refs/s)",
        total as f64 / secs
    );
    if let Some((rss, counts)) = at_10k {
        println!(
            "  at 10,000: RSS {rss:.1} MiB, owned {}, borrowed {}",
            counts.owned, counts.borrowed
        );
    }
    println!(
        "  at {total}: RSS {:.1} MiB, owned {}, borrowed {}",
        rss_mib(),
        end.owned,
        end.borrowed
    );
    assert_eq!(
        end.owned, 0,
        "the driver still owns objects after the churn"
    );
}
