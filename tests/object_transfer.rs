//! Objects pulled between two real raylet processes over their TLS-on-TCP
//! bulk channel (QUIC where a peer has none).

use prism::object_store::{ObjectError, StoreClient};
use prism::proto::head::{HeadRequest, HeadResponse};
use prism_objectstore::ObjectId;
use prism_test_support::*;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[path = "common/as_node.rs"]
mod as_node;
use as_node::requests_as;

const MB: usize = 1 << 20;

/// The tests that move a GiB between raylets run one at a time (each
/// maps 2-3 GiB of shared memory).
static BIG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_big_test_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    BIG.lock().unwrap_or_else(|p| p.into_inner())
}

fn socket(node: &Node) -> PathBuf {
    PathBuf::from(node.ready()["store_socket"].as_str().unwrap())
}

/// Block `k` of a test object: 1 MiB (or less, for the tail) of a pattern
/// that differs per block, so misplaced chunks are caught.
fn block(k: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (j as u8) ^ (k as u8).wrapping_mul(7))
        .collect()
}

fn object_bytes(size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size);
    let full = block(1, MB);
    for k in 0..size.div_ceil(MB) {
        let len = MB.min(size - k * MB);
        if k % 256 == 1 && len == MB {
            out.extend_from_slice(&full);
        } else {
            out.extend_from_slice(&block(k, len));
        }
    }
    out
}

fn same_bytes(got: &[u8], size: usize) -> bool {
    got.len() == size
        && (0..size.div_ceil(MB))
            .all(|k| got[k * MB..size.min((k + 1) * MB)] == block(k, MB.min(size - k * MB))[..])
}

#[test]
fn object_pulled_between_raylets_is_byte_identical_at_every_size() {
    let _big = one_big_test_at_a_time();
    let sb = Sandbox::new();
    let head = sb.start_head(&["--head-only"]);
    let a = sb.start_raylet(
        "a",
        &head,
        &["--num-cpus", "1", "--object-store-memory", "1200M"],
    );
    let b = sb.start_raylet(
        "b",
        &head,
        &["--num-cpus", "1", "--object-store-memory", "1200M"],
    );
    let ca = StoreClient::connect(&socket(&a)).unwrap();
    let cb = StoreClient::connect(&socket(&b)).unwrap();
    for size in [0, 1, 100 << 10, 64 * MB, 1024 * MB] {
        let id = ca.put(&object_bytes(size)).unwrap();
        let view = cb
            .get(id, Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("{size} bytes: {e}"));
        assert!(
            same_bytes(&view, size),
            "{size}-byte object differs after transfer"
        );
        drop(view);
        assert!(cb.info(id).unwrap().is_some(), "B keeps a secondary copy");
        // Free the big ones on both sides before the next size.
        ca.unpin(id).unwrap();
    }

    // BK-3: B pulled every size over A's TLS bulk channel, not QUIC.
    let log = b.log();
    let pulled: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("pulled object"))
        .collect();
    eprintln!("{}", pulled.join("\n"));
    assert!(
        pulled.len() >= 4
            && pulled
                .iter()
                .all(|l| l.contains("via=\"tls\"") || l.contains("via=tls")),
        "pulls must go over the bulk channel:\n{log}"
    );

    // Two readers on B asking at once share one transfer.
    let id = ca.put(&object_bytes(32 * MB)).unwrap();
    let sock = socket(&b);
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                let c = StoreClient::connect(&sock).unwrap();
                let v = c.get(id, Duration::from_secs(60)).unwrap();
                same_bytes(&v, 32 * MB)
            })
        })
        .collect();
    assert!(readers.into_iter().all(|r| r.join().unwrap()));
    let pulls = b
        .log()
        .lines()
        .filter(|l| l.contains("pulled object") && l.contains(&id.to_string()))
        .count();
    assert_eq!(
        pulls,
        1,
        "concurrent gets must share one transfer:\n{}",
        b.log()
    );

    // An object nobody has: a bounded, typed wait.
    match cb.get(ObjectId::random(), Duration::from_millis(200)) {
        Err(ObjectError::GetTimeout { .. }) => {}
        other => panic!("expected GetTimeout, got {other:?}"),
    };
}

/// A reader's get of the `size`-byte test object `id` on `node`, started
/// in the background and returned once `node`'s copy exists but is not
/// sealed (the pull is under way): whether the bytes were right, and how
/// long the get took.
fn pull_underway(
    node: &Node,
    id: ObjectId,
    size: usize,
    timeout: Duration,
) -> std::thread::JoinHandle<(Result<bool, ObjectError>, Duration)> {
    let sock = socket(node);
    let reader = std::thread::spawn(move || {
        let c = StoreClient::connect(&sock).unwrap();
        let started = Instant::now();
        let result = c.get(id, timeout).map(|v| same_bytes(&v, size));
        (result, started.elapsed())
    });
    let probe = StoreClient::connect(&socket(node)).unwrap();
    let pulling = wait_until(
        Duration::from_secs(30),
        || matches!(probe.info(id), Ok(Some(i)) if !i.sealed),
    );
    assert!(pulling, "{} never started pulling {id}", node.node_id());
    reader
}

#[test]
fn object_source_killed_mid_transfer_gives_a_clear_error_not_a_hang() {
    let _big = one_big_test_at_a_time();
    let sb = Sandbox::new().with_env("PRISM_TRANSFER_CHUNK_TIMEOUT_MS", "2000");
    let head = sb.start_head(&["--head-only"]);
    let mut a = sb.start_raylet(
        "a",
        &head,
        &["--num-cpus", "1", "--object-store-memory", "1100M"],
    );
    let b = sb.start_raylet(
        "b",
        &head,
        &["--num-cpus", "1", "--object-store-memory", "1100M"],
    );
    let ca = StoreClient::connect(&socket(&a)).unwrap();
    let id = ca.put(&object_bytes(1024 * MB)).unwrap();
    drop(ca);
    // Kill the source while B pulls: a 1 GB transfer takes seconds here.
    let reader = pull_underway(&b, id, 1024 * MB, Duration::from_secs(60));
    a.kill9();
    let (result, took) = reader.join().unwrap();
    match result {
        Err(ObjectError::TransferFailed { message }) => {
            assert!(message.contains(&id.to_string()), "{message}");
            eprintln!("transfer failed as expected after {took:?}: {message}");
        }
        // The transfer may have finished before the kill landed: then it must be whole.
        Ok(identical) => assert!(identical, "a completed transfer must be byte-identical"),
        Err(other) => panic!("expected TransferFailed, got {other}"),
    }
    assert!(took < Duration::from_secs(30), "the get took {took:?}");
    // B keeps serving.
    let cb = StoreClient::connect(&socket(&b)).unwrap();
    let local = cb.put(b"after the failure").unwrap();
    assert_eq!(
        &*cb.get(local, Duration::from_secs(1)).unwrap(),
        b"after the failure"
    );
}

/// The head's list of nodes holding `id`, asked as node `asker` would.
fn holders(head: &Node, asker: &Node, id: ObjectId) -> Vec<String> {
    let ask = [HeadRequest::GetObjectLocations { object: id }];
    match requests_as(head, asker, &ask).pop() {
        Some(Ok(HeadResponse::ObjectLocations { nodes, .. })) => {
            nodes.into_iter().map(|(n, _)| n.to_string()).collect()
        }
        other => panic!("expected ObjectLocations, got {other:?}"),
    }
}

#[test]
fn object_pull_fails_over_to_a_second_copy_when_its_source_dies() {
    let _big = one_big_test_at_a_time();
    let sb = Sandbox::new().with_env("PRISM_TRANSFER_CHUNK_TIMEOUT_MS", "2000");
    let head = sb.start_head(&["--head-only"]);
    let flags = ["--num-cpus", "1", "--object-store-memory", "1100M"];
    let a = sb.start_raylet("a", &head, &flags);
    let b = sb.start_raylet("b", &head, &flags);
    let c = sb.start_raylet("c", &head, &flags);
    let size = 1024 * MB;
    let id = StoreClient::connect(&socket(&a))
        .unwrap()
        .put(&object_bytes(size))
        .unwrap();
    // B takes a second copy, and the head learns of it.
    let cb = StoreClient::connect(&socket(&b)).unwrap();
    drop(cb.get(id, Duration::from_secs(120)).unwrap());
    let mut sources = Vec::new();
    let both = wait_until(Duration::from_secs(30), || {
        sources = holders(&head, &c, id);
        sources.len() == 2
    });
    assert!(both, "the head lists {sources:?}, not A and B");
    // C pulls from the first holder the head names; kill that one mid-transfer.
    let mut nodes = [a, b];
    let first = nodes
        .iter()
        .position(|n| n.node_id() == sources[0])
        .unwrap();
    let second = sources[1].clone();
    let reader = pull_underway(&c, id, size, Duration::from_secs(120));
    assert!(
        !reader.is_finished(),
        "the 1 GiB pull ended before the kill: no failover to check"
    );
    nodes[first].kill9();
    match reader.join().unwrap().0 {
        Ok(identical) => assert!(identical, "the object differs after the failover"),
        Err(e) => panic!("the pull must fail over to {second}: {e}\n{}", c.log()),
    }
    // C gave up on the dead source and took the object from the other.
    let log = c.log();
    let failed = log
        .lines()
        .any(|l| l.contains("pull failed") && l.contains(&sources[0]));
    let pulled = log
        .lines()
        .any(|l| l.contains("pulled object") && l.contains(&second));
    assert!(failed && pulled, "expected a failover in C's log:\n{log}");
}

/// Puts a `size`-byte test object on `from`, gets it on `to` and checks
/// its bytes.
fn put_then_pull(from: &Node, to: &Node, size: usize) -> ObjectId {
    let id = StoreClient::connect(&socket(from))
        .unwrap()
        .put(&object_bytes(size))
        .unwrap();
    let reader = StoreClient::connect(&socket(to)).unwrap();
    let view = reader.get(id, Duration::from_secs(60)).unwrap();
    assert!(same_bytes(&view, size), "{size}-byte object differs");
    id
}

#[test]
fn object_pull_falls_back_to_quic_when_a_peers_bulk_port_is_taken() {
    // Hold the TCP port that A's bulk channel would use, as another
    // program listening there would: B's connection is accepted by the
    // kernel but never answered, so B gives up on the handshake (5 s)
    // and pulls over QUIC.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let sb = Sandbox::new();
    let head = sb.start_head(&["--head-only"]);
    let a = sb.start_raylet("a", &head, &["--num-cpus", "1", "--port", &port]);
    let b = sb.start_raylet("b", &head, &["--num-cpus", "1"]);
    assert!(
        a.log().contains("no bulk channel"),
        "A must say it has no bulk channel:\n{}",
        a.log()
    );
    // B pulls from A over QUIC; A pulls from B over B's bulk channel.
    let from_a = put_then_pull(&a, &b, 3 * MB + 5);
    let from_b = put_then_pull(&b, &a, 2 * MB);
    let via = |node: &Node, id: ObjectId| {
        let log = node.log();
        let line = log
            .lines()
            .find(|l| l.contains("pulled object") && l.contains(&id.to_string()))
            .unwrap_or_else(|| panic!("no pull of {id} logged:\n{log}"))
            .to_string();
        line
    };
    let (b_pull, a_pull) = (via(&b, from_a), via(&a, from_b));
    assert!(b_pull.contains("quic"), "{b_pull}");
    assert!(a_pull.contains("tls"), "{a_pull}");
    drop(taken);
}

/// Shared memory `pid` has mapped and touched, in bytes (`RssShmem`).
fn rss_shmem(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("RssShmem:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    kb << 10
}

#[test]
fn object_store_prefault_commits_the_store_at_start() {
    let sb = Sandbox::new().with_env("PRISM_OBJECT_STORE_PREFAULT", "true");
    let head = sb.start_head(&["--head-only"]);
    let flags = ["--num-cpus", "1", "--object-store-memory", "96M"];
    let a = sb.start_raylet("a", &head, &flags);
    let b = sb.start_raylet("b", &head, &flags);
    // Before any object exists, each store's pages are already in memory
    // and mapped into its raylet.
    for node in [&a, &b] {
        let rss = rss_shmem(node.pid());
        assert!(rss >= 96 << 20, "RssShmem {rss} after a pre-fault");
        assert!(
            node.log().contains("object store pre-faulted"),
            "{}",
            node.log()
        );
    }
    put_then_pull(&a, &b, 40 * MB + 3);
}
