//! The object store hosted by a real raylet process, used by several real
//! processes on one machine over its Unix socket and shared segment.
//!
//! Helper processes are this test binary re-executed with PRISM_TEST_ROLE
//! set, running the ignored `child_role` test.

use prism::object_store::{ObjectError, StoreClient};
use prism_objectstore::{DType, ObjectId, TensorMeta};
use prism_test_support::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const MB: usize = 1 << 20;

fn socket(node: &Node) -> PathBuf {
    PathBuf::from(
        node.ready()["store_socket"]
            .as_str()
            .expect("ready.json names the store socket"),
    )
}

fn id_hex(id: ObjectId) -> String {
    id.0.iter().map(|b| format!("{b:02x}")).collect()
}

fn id_from_hex(s: &str) -> ObjectId {
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    ObjectId(out)
}

/// The memfd mapping that contains `addr` in process `pid`: (path, inode).
fn mapping_of(pid: &str, addr: usize) -> Option<(String, u64)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    maps.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (lo, hi) = f[0].split_once('-')?;
        let (lo, hi) = (
            usize::from_str_radix(lo, 16).ok()?,
            usize::from_str_radix(hi, 16).ok()?,
        );
        (lo <= addr && addr < hi).then(|| {
            (
                f.get(5..).map(|p| p.join(" ")).unwrap_or_default(),
                f[4].parse().unwrap_or(0),
            )
        })
    })
}

/// The inode of process `pid`'s mapping of the Prism store segment.
fn store_inode(pid: u32) -> Option<u64> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    maps.lines()
        .find(|l| l.contains("memfd:prism-store"))
        .and_then(|l| l.split_whitespace().nth(4)?.parse().ok())
}

/// A helper process; killed and reaped on drop.
struct Helper(Child);

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_helper(
    role: &str,
    sock: &Path,
    id: ObjectId,
) -> (Helper, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_role",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("PRISM_TEST_ROLE", role)
        .env("PRISM_TEST_SOCKET", sock)
        .env("PRISM_TEST_OBJECT", id_hex(id))
        // A holder blocks on its stdin, which this end keeps open.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    (Helper(child), out)
}

/// Reads helper output until a line containing `prefix`; returns it from there.
fn expect_line(out: &mut BufReader<std::process::ChildStdout>, prefix: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "helper exited before printing {prefix}"
        );
        // libtest prints "test child_role ... " before the test's own output.
        if let Some(at) = line.find(prefix) {
            return line[at..].trim().to_string();
        }
    }
}

fn value(i: usize) -> f32 {
    (i % 1_000_003) as f32
}

#[test]
#[ignore = "helper process for the object_* tests, started by them with PRISM_TEST_ROLE"]
fn child_role() {
    let Ok(role) = std::env::var("PRISM_TEST_ROLE") else {
        panic!("run by the object_* tests only")
    };
    let client =
        StoreClient::connect(Path::new(&std::env::var("PRISM_TEST_SOCKET").unwrap())).unwrap();
    let id = id_from_hex(&std::env::var("PRISM_TEST_OBJECT").unwrap());
    match role.as_str() {
        "reader" => {
            let view = client.get(id, Duration::from_secs(30)).unwrap();
            let tensor = view.tensor().unwrap();
            let data = tensor.as_slice::<f32>().unwrap();
            assert_eq!(tensor.meta.shape, vec![64, (MB as u64)]);
            assert!(
                data.iter().enumerate().all(|(i, x)| *x == value(i)),
                "tensor bytes differ"
            );
            let addr = data.as_ptr() as usize;
            let (path, inode) = mapping_of("self", addr).expect("the data lies in a mapping");
            assert!(
                path.contains("memfd:prism-store"),
                "data is not in the shared segment: {path}"
            );
            println!("READER_OK inode={inode}");
        }
        "holder" => {
            let _view = client.get(id, Duration::from_secs(30)).unwrap();
            let unsealed = ObjectId([0xee; 16]);
            client
                .create(unsealed, 4096, true, Duration::from_secs(5))
                .unwrap();
            println!("HOLDING");
            std::io::stdout().flush().unwrap();
            // Holds until the test kills it (or drops its end of stdin).
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn object_two_processes_share_a_256mb_tensor_without_copying() {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--num-cpus", "1", "--object-store-memory", "600M"]);
    let sock = socket(&head);
    let client = StoreClient::connect(&sock).unwrap();
    let n = 64 * MB;
    let data: Vec<f32> = (0..n).map(value).collect();
    let bytes: &[u8] = bytemuck::cast_slice(&data);
    let id = client
        .put_tensor(&TensorMeta::contiguous(DType::F32, &[64, MB as u64]), bytes)
        .unwrap();
    drop(data);

    let (_reader, mut out) = spawn_helper("reader", &sock, id);
    let line = expect_line(&mut out, "READER_OK");
    let reader_inode: u64 = line.rsplit('=').next().unwrap().parse().unwrap();
    // The same memfd (same inode) in the raylet, this process and the reader: same pages.
    let raylet_inode = store_inode(head.pid()).expect("raylet maps the store");
    let (path, mine) = mapping_of("self", client.segment().base_addr()).unwrap();
    assert!(path.contains("memfd:prism-store"));
    assert_eq!(reader_inode, raylet_inode);
    assert_eq!(mine, raylet_inode);
    assert!(
        wait_until(Duration::from_secs(10), || client
            .info(id)
            .unwrap()
            .unwrap()
            .refs
            == 0),
        "the reader's reference was never released"
    );
}

#[test]
fn object_filling_the_store_spills_and_a_full_store_is_a_typed_error() {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--num-cpus", "1", "--object-store-memory", "64M"]);
    let client = StoreClient::connect(&socket(&head)).unwrap();
    let short = Duration::from_millis(300);
    let ids: Vec<ObjectId> = (0..8u8)
        .map(|i| {
            client
                .put_parts(ObjectId::random(), &[&vec![i; 16 * MB]], true, short)
                .unwrap()
        })
        .collect();
    let stats = client.stats().unwrap();
    assert!(
        stats.spills >= 4,
        "8 x 16 MB in 64 MB must spill: {stats:?}"
    );
    for (i, id) in ids.iter().enumerate() {
        let view = client.get(*id, short).unwrap();
        assert!(
            view.iter().all(|b| *b == i as u8),
            "object {i} changed across spill/restore"
        );
    }
    assert!(client.stats().unwrap().restores >= 4);

    // Hold four objects (all 64 MB): nothing can move, so a put fails, typed.
    let held: Vec<_> = ids[..4]
        .iter()
        .map(|id| client.get(*id, short).unwrap())
        .collect();
    match client.put_parts(ObjectId::random(), &[&vec![9u8; 16 * MB]], true, short) {
        Err(ObjectError::StoreFull {
            requested,
            available,
        }) => {
            assert_eq!(requested, 16 * MB as u64);
            assert!(available < 16 * MB as u64);
        }
        other => panic!("expected StoreFull, got {other:?}"),
    }
    // The raylet keeps serving: counters, held reads, and the cluster.
    assert!(held.iter().enumerate().all(|(i, v)| v[0] == i as u8));
    client.stats().unwrap();
    assert_eq!(sb.nodes_in_state("alive").len(), 1);
    drop(held);
    // With the holds gone, the same put succeeds (older objects spill).
    client
        .put_parts(ObjectId::random(), &[&vec![9u8; 16 * MB]], true, short)
        .unwrap();
}

#[test]
fn object_killed_process_references_are_released_and_unsealed_objects_reclaimed() {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--num-cpus", "1", "--object-store-memory", "32M"]);
    let sock = socket(&head);
    let client = StoreClient::connect(&sock).unwrap();
    let id = client
        .put(b"held by a process that will be killed")
        .unwrap();
    let (mut holder, mut out) = spawn_helper("holder", &sock, id);
    expect_line(&mut out, "HOLDING");
    let unsealed = ObjectId([0xee; 16]);
    assert_eq!(client.info(id).unwrap().unwrap().refs, 1);
    assert!(!client.info(unsealed).unwrap().unwrap().sealed);

    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(holder.0.id() as i32, libc::SIGKILL);
    }
    let _ = holder.0.wait();
    assert!(
        wait_until(Duration::from_secs(10), || client
            .info(id)
            .unwrap()
            .unwrap()
            .refs
            == 0
            && client.info(unsealed).unwrap().is_none()),
        "references of a killed process were not released"
    );
    // The store releases first and logs after: wait for the line.
    assert!(
        wait_until(Duration::from_secs(10), || head
            .log()
            .contains("released its references")),
        "{}",
        head.log()
    );
}

#[test]
fn object_rkyv_values_are_read_in_archived_form() {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--num-cpus", "1", "--object-store-memory", "16M"]);
    let client = StoreClient::connect(&socket(&head)).unwrap();
    let value: (String, Vec<u64>) = ("weights".into(), (0..1000).collect());
    let id = client.put_value(&value).unwrap();
    let view = client.get(id, Duration::from_secs(1)).unwrap();
    let archived = view.archived::<(String, Vec<u64>)>().unwrap();
    assert_eq!(archived.0.as_str(), "weights");
    assert_eq!(archived.1.len(), 1000);
    assert_eq!(archived.1[999].to_native(), 999);
    // The archive lives in the shared segment, not in a copy.
    let base = client.segment().base_addr();
    let at = archived as *const _ as usize;
    assert!(at >= base && at < base + client.segment().len());
    assert!(
        view.archived::<Vec<String>>().is_err(),
        "a mismatched type is a validation error"
    );
}

#[test]
fn object_garbage_on_the_store_socket_drops_only_that_client() {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--num-cpus", "1", "--object-store-memory", "16M"]);
    let sock = socket(&head);
    let client = StoreClient::connect(&sock).unwrap();
    let id = client.put(b"still here").unwrap();
    let mut raw = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.write_all(b"this is not a frame at all, just bytes")
        .unwrap();
    let mut rest = Vec::new();
    let _ = raw.read_to_end(&mut rest); // the raylet closes the connection
    assert!(rest.len() <= 1, "the raylet answered garbage with data");
    assert_eq!(
        &*client.get(id, Duration::from_secs(1)).unwrap(),
        b"still here"
    );
    assert!(
        head.log().contains("malformed object store request"),
        "{}",
        head.log()
    );
    // A missing object times out with a typed error rather than hanging.
    match client.get(ObjectId::random(), Duration::from_millis(100)) {
        Err(ObjectError::GetTimeout { .. }) => {}
        other => panic!("expected GetTimeout, got {other:?}"),
    };
}

#[test]
fn object_small_puts_travel_in_their_request_and_an_oversized_one_is_refused() {
    use prism::proto::codec;
    use prism::proto::store::{StoreErrorKind, StoreRequest, StoreResponse, SMALL_PUT_MAX};
    let sb = Sandbox::new();
    let head = sb.start_head(&["--num-cpus", "1", "--object-store-memory", "16M"]);
    let sock = socket(&head);
    let client = StoreClient::connect(&sock).unwrap();
    // Both sides of the one-request path, and the shared-memory one.
    for size in [0, 1, SMALL_PUT_MAX, SMALL_PUT_MAX + 1, MB] {
        let bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let id = client.put(&bytes).unwrap();
        let info = client.info(id).unwrap().expect("stored");
        assert!(info.sealed && info.pinned, "{size} bytes: {info:?}");
        assert_eq!(
            &*client.get(id, Duration::from_secs(1)).unwrap(),
            &bytes[..]
        );
        let other = StoreClient::connect(&sock).unwrap();
        assert_eq!(&*other.get(id, Duration::from_secs(1)).unwrap(), &bytes[..]);
    }
    // A client that sends more than a put request may carry is refused,
    // and nothing is stored.
    let mut raw = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let ask = |raw: &mut std::os::unix::net::UnixStream, req: &StoreRequest| {
        raw.write_all(&codec::encode(req).unwrap()).unwrap();
        codec::read_frame::<StoreResponse>(raw, 1 << 20)
            .unwrap()
            .unwrap()
    };
    // The door's first byte carries the segment's descriptor.
    let mut first = [0u8; 1];
    raw.read_exact(&mut first).unwrap();
    assert!(matches!(
        ask(&mut raw, &StoreRequest::Hello { pid: 1 }),
        StoreResponse::Welcome { .. }
    ));
    let id = ObjectId::random();
    let big = StoreRequest::PutSmall {
        id,
        pinned: true,
        owned: false,
        timeout_ms: 100,
        data: vec![7; SMALL_PUT_MAX + 1],
    };
    match ask(&mut raw, &big) {
        StoreResponse::Error {
            kind: StoreErrorKind::BadRequest,
            message,
        } => assert!(message.contains("at most 32768 bytes"), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(client.info(id).unwrap().is_none(), "nothing was stored");
}
