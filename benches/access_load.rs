//! What issue 21's multi-tenancy costs.
//!
//! 1. The gate: the same head request (`ListJobs`) as the join token's
//!    admin (no gate) and as a user (one more hop to the head's actor and
//!    a permission check), interleaved on two connections to one real
//!    head; p50 and p99 of each.
//! 2. The job queue's decisions with 10,000 waiting jobs over 20
//!    namespaces (the pure `JobQueue`): ranking them all when nothing can
//!    start, one admission after a job ends, and `prism queue`'s
//!    explanation of every position.
//!
//! Tasks and actor calls never reach the head (driver → raylet → worker),
//! so the gate is not on their path at all.
//!
//! Run: `cargo bench --bench access_load`; `-- --test` runs a tiny
//! version (CI keeps it compiling and working).

use prism::client::HeadClient;
use prism::head::job_queue::{JobQueue, Policy, QueuedJob};
use prism::proto::access::{AccessReply, AccessRequest};
use prism::proto::head::{HeadRequest, HeadResponse, PeerRole};
use prism::token::{Credential, JoinToken, UserToken};
use prism::transport::quic::QuicEndpoint;
use prism::transport::tls::ClientTrust;
use prism::Config;
use prism_scheduler::{Quantity, ResourceSet, CPU, GPU};
use std::time::Instant;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn gate(requests: usize) {
    std::env::set_var("PRISM_TEST_BIN", env!("CARGO_BIN_EXE_prism"));
    let sb = prism_test_support::Sandbox::new();
    let head = sb.start_head(&["--num-cpus", "1", "--no-dashboard"]);
    let (addr, token) = head.cluster();
    let token: JoinToken = token.parse().unwrap();
    let addr = addr.parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ep = QuicEndpoint::client([127, 0, 0, 1].into()).unwrap();
        let config = Config::default();
        let trust = ClientTrust::Pinned {
            ca_fingerprint: token.ca_fingerprint.clone(),
        };
        let admin = HeadClient::connect(&ep, addr, &trust, Some(&token), PeerRole::Client, &config)
            .await
            .unwrap();
        let add = HeadRequest::Access(AccessRequest::AddUser {
            name: "bench".into(),
            role: "developer".into(),
            namespaces: vec!["default".into()],
        });
        let HeadResponse::Access(AccessReply::UserAdded { token: user, .. }) =
            admin.request(&add).await.unwrap()
        else {
            panic!("no user token")
        };
        let user: UserToken = user.parse().unwrap();
        let as_user = HeadClient::connect_as(&ep, addr, &Credential::User(user), &config)
            .await
            .unwrap();
        let (mut a, mut u) = (Vec::new(), Vec::new());
        for i in 0..requests + 100 {
            for (client, out) in [(&admin, &mut a), (&as_user, &mut u)] {
                let t = Instant::now();
                client.request(&HeadRequest::ListJobs).await.unwrap();
                if i >= 100 {
                    out.push(t.elapsed().as_secs_f64() * 1e6);
                }
            }
        }
        let (a50, u50) = (pct(&mut a, 0.5), pct(&mut u, 0.5));
        println!(
            "head request ListJobs, {requests} each, interleaved: join token p50 {a50:.1} µs p99 {:.1} µs; user p50 {u50:.1} µs p99 {:.1} µs; the gate adds {:.1} µs at p50 ({:+.1}%)",
            pct(&mut a, 0.99),
            pct(&mut u, 0.99),
            u50 - a50,
            (u50 / a50 - 1.0) * 100.0
        );
        admin.close();
        as_user.close();
    });
}

fn queue(waiting: usize, rounds: usize) {
    let one = |r: &str, n: u32| ResourceSet::new().with(r, Quantity::whole(n));
    let mut q = JobQueue::default();
    for ns in 0..20 {
        let policy = Policy {
            quota: one(GPU, 16),
            max_jobs: None,
            weight: 1 + ns % 4,
        };
        q.set_policy(&format!("ns{ns}"), policy);
    }
    for i in 0..waiting {
        q.enqueue(QueuedJob {
            job: prism::JobId::random(),
            namespace: format!("ns{}", i % 20),
            demand: one(GPU, 1).with(CPU, Quantity::whole(2)),
            priority: (i % 3) as i32,
            spot: i % 5 == 0,
            seq: 0,
        });
    }
    // A cluster of 64 GPUs: the first admission fills it.
    let capacity = one(GPU, 64).with(CPU, Quantity::whole(512));
    let started: Vec<_> = q
        .admit(&capacity)
        .into_iter()
        .filter_map(|d| match d {
            prism::head::job_queue::Decision::Start(j) => Some(j),
            _ => None,
        })
        .collect();
    let (mut full, mut one_more, mut explain) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds {
        let t = Instant::now();
        let d = q.admit(&capacity);
        full.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(d.is_empty());
        q.forget(started[r % started.len()]);
        let t = Instant::now();
        let d = q.admit(&capacity);
        one_more.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(d.len(), 1);
        let t = Instant::now();
        let rows = q.explain(&capacity);
        explain.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(rows.len() >= waiting - started.len() - rounds);
    }
    println!(
        "job queue, {waiting} waiting over 20 namespaces: a pass that starts nothing p50 {:.2} ms, one admission after a job ends p50 {:.2} ms, every position explained p50 {:.2} ms",
        pct(&mut full, 0.5),
        pct(&mut one_more, 0.5),
        pct(&mut explain, 0.5)
    );
}

fn main() {
    let test_mode =
        !std::env::args().any(|a| a == "--bench") || std::env::args().any(|a| a == "--test");
    let (requests, waiting, rounds) = if test_mode {
        (50, 200, 3)
    } else {
        (2_000, 10_000, 20)
    };
    queue(waiting, rounds);
    gate(requests);
}
