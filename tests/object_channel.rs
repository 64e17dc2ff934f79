//! Same-node shared-memory channels (`prism::channel`) between real
//! processes: the driver and worker processes of its embedded raylet,
//! in both directions, in order, with the errors a user can hit (a full
//! channel, no writer, an oversized message, another node's channel).

use prism::channel::{channel, ChannelSpec};
use prism_test_support::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

/// Connects to `spec` and sends `n` messages: message i is `i` (8 bytes
/// LE) followed by `i % 251` repeated `i % 100` times.
#[prism::remote]
fn send_numbers(spec: ChannelSpec, n: u64) -> u32 {
    let mut tx = spec.connect().expect("connect from a worker");
    for i in 0..n {
        let mut m = i.to_le_bytes().to_vec();
        m.extend(std::iter::repeat_n((i % 251) as u8, (i % 100) as usize));
        tx.send(&m, T).expect("send");
    }
    std::process::id()
}

/// Connects to `spec` and then dies (SIGKILL) without dropping anything.
#[prism::remote]
fn connect_and_die(spec: ChannelSpec) -> u32 {
    let tx = spec.connect().expect("connect from a worker");
    std::mem::forget(tx);
    // SAFETY: kill(2) on this very process.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    0
}

/// Makes a channel in the worker and reads `n` u64s from it (sent later by
/// the driver), returning their sum.
#[prism::actor]
struct Summer {
    rx: std::sync::Mutex<Option<prism::channel::Receiver>>,
}

#[prism::actor]
impl Summer {
    fn new() -> Self {
        Summer {
            rx: std::sync::Mutex::new(None),
        }
    }

    fn open(&self) -> ChannelSpec {
        let (spec, rx) = channel(2, 8).expect("channel in a worker");
        *self.rx.lock().unwrap() = Some(rx);
        spec
    }

    fn sum(&self, n: u64) -> u64 {
        let mut rx = self.rx.lock().unwrap().take().expect("opened");
        (0..n)
            .map(|_| {
                rx.recv_with(T, |m| u64::from_le_bytes(m.try_into().unwrap()))
                    .unwrap()
            })
            .sum()
    }
}

fn channel_files() -> usize {
    let me = format!("prism-channel-{}-", std::process::id());
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&me))
                .count()
        })
        .unwrap_or(0)
}

fn role_local() {
    let _c = prism::InitOptions::new().num_cpus(2.0).init().unwrap();

    // Worker -> driver: 4 slots, 2000 messages of varying length, in order.
    let (spec, mut rx) = channel(4, 128).unwrap();
    let n = 2000u64;
    let sender = send_numbers::remote(spec, n).unwrap();
    for i in 0..n {
        let ok = rx
            .recv_with(T, |m| {
                m.len() == 8 + (i % 100) as usize
                    && u64::from_le_bytes(m[..8].try_into().unwrap()) == i
                    && m[8..].iter().all(|b| *b == (i % 251) as u8)
            })
            .unwrap();
        assert!(ok, "message {i} arrived whole and in order");
    }
    let pid = prism::get(&sender).unwrap();
    check(
        pid != std::process::id(),
        "2000 messages from a worker process arrived whole and in order",
    );
    check(
        channel_files() == 0,
        "the channel file is gone once both ends mapped it",
    );

    // Driver -> actor in its worker process.
    let summer = Summer::options().spawn().unwrap();
    let spec = prism::get(&summer.open().unwrap()).unwrap();
    let total = summer.sum(500).unwrap();
    let mut tx = spec.connect().unwrap();
    for i in 0..500u64 {
        tx.send(&i.to_le_bytes(), T).unwrap();
    }
    check(
        prism::get(&total).unwrap() == 499 * 500 / 2,
        "an actor read 500 messages the driver wrote",
    );

    // Errors.
    let (spec, mut rx) = channel(2, 16).unwrap();
    let mut tx = spec.connect().unwrap();
    let big = tx.send(&[0u8; 17], T).unwrap_err().to_string();
    check(
        big.contains("17-byte message") && big.contains("16-byte slots"),
        &format!("an oversized message is refused: {big}"),
    );
    tx.send(b"a", T).unwrap();
    tx.send(b"b", T).unwrap();
    let full = tx
        .send(b"c", Duration::from_millis(100))
        .unwrap_err()
        .to_string();
    check(
        full.contains("reader stalled"),
        &format!("a full channel times out naming the reader: {full}"),
    );
    assert_eq!(rx.recv_with(T, |m| m.to_vec()).unwrap(), b"a");
    assert_eq!(rx.recv_with(T, |m| m.to_vec()).unwrap(), b"b");
    let empty = rx
        .recv_with(Duration::from_millis(100), |_| ())
        .unwrap_err()
        .to_string();
    check(
        empty.contains("writer stalled"),
        &format!("an empty channel times out naming the writer: {empty}"),
    );
    let odd = channel(3, 8).unwrap_err().to_string();
    check(
        odd.contains("power-of-two number of slots (got 3)"),
        &format!("slot counts must be powers of two: {odd}"),
    );
    let (spec, mut rx) = channel(2, 8).unwrap();
    let tx = spec.connect().unwrap();
    let twice = spec.connect().unwrap_err().to_string();
    check(
        // Its name is gone after the first connect; a racing second one
        // that still found it is refused by the writer slot instead.
        twice.contains("cannot open channel") || twice.contains("already has a writer"),
        &format!("a second writer is refused: {twice}"),
    );
    drop(tx);
    let t = std::time::Instant::now();
    let closed = rx.recv_with(T, |_| ()).unwrap_err().to_string();
    check(
        closed.contains("the writer closed the channel") && t.elapsed() < Duration::from_secs(5),
        &format!("a dropped writer ends the reader's wait at once: {closed}"),
    );
    let (spec, mut rx) = channel(2, 8).unwrap();
    let _ = connect_and_die::options()
        .max_retries(0)
        .remote(spec)
        .unwrap()
        .get();
    let t = std::time::Instant::now();
    let died = rx.recv_with(T, |_| ()).unwrap_err().to_string();
    check(
        died.contains("exited") && t.elapsed() < Duration::from_secs(5),
        &format!("a writer whose process died ends the wait at once: {died}"),
    );
    let (mut bogus, _rx) = channel(1, 8).unwrap();
    bogus.path = "/etc/passwd".into();
    let e = bogus.connect().unwrap_err().to_string();
    check(
        e.contains("not a channel file"),
        &format!("a spec naming another file is refused: {e}"),
    );
    let (mut far, _rx) = channel(1, 8).unwrap();
    far.node = "n-elsewhere".into();
    let e = far.connect().unwrap_err().to_string();
    check(
        e.contains("n-elsewhere") && e.contains("same-node only"),
        &format!("another node's channel is refused: {e}"),
    );
    println!("ALL OK");
}

#[test]
#[ignore = "a job driver, started by the tests in this file with PRISM_TEST_ROLE"]
fn child_role() {
    match std::env::var("PRISM_TEST_ROLE")
        .expect("run by the tests in this file")
        .as_str()
    {
        "local" => role_local(),
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn channels_carry_messages_between_processes_in_order() {
    run_role("local", Duration::from_secs(120));
}
