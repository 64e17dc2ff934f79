//! Objects pulled between two real raylet processes over their TLS-on-TCP
//! bulk channel (QUIC where a peer has none).

use prism::object_store::{ObjectError, StoreClient};
use prism_objectstore::ObjectId;
use prism_test_support::*;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const MB: usize = 1 << 20;

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

#[test]
fn object_source_killed_mid_transfer_gives_a_clear_error_not_a_hang() {
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
    let sock = socket(&b);
    let reader = std::thread::spawn(move || {
        let c = StoreClient::connect(&sock).unwrap();
        let started = Instant::now();
        let result = c
            .get(id, Duration::from_secs(60))
            .map(|v| same_bytes(&v, 1024 * MB));
        (result, started.elapsed())
    });
    // Kill the source while B pulls (its copy exists, not sealed yet): a
    // 1 GB transfer takes seconds here.
    let probe = StoreClient::connect(&socket(&b)).unwrap();
    let pulling = wait_until(
        Duration::from_secs(30),
        || matches!(probe.info(id), Ok(Some(i)) if !i.sealed),
    );
    assert!(pulling, "B never started pulling {id}");
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
