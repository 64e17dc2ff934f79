//! Personal columns masked for those who may not read them, on a real head
//! with users: a data steward (a custom role with `pii:read`) masks a
//! click log's user ids (tokenised), phone numbers (hashed) and ages
//! (redacted) and shares the masked dataset through a named actor; a
//! developer's job in the same namespace reads it in its own tasks and
//! never sees a raw value, and is refused the key that would unmask it —
//! with the head's sentence, and the refusal in the audit trail. The
//! steward unmasks the tokens back to the exact ids. A viewer's driver is
//! refused by the head, so no task of hers runs to see anything.

use prism_ml::data::{Block, Dataset, Mask};
use prism_test_support::*;
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

const ROWS: u64 = 240;

/// The raw log: `[user id, phone, age, clicks]` per row, label = clicked.
fn raw_rows() -> Vec<[i64; 4]> {
    (0..ROWS as i64)
        .map(|i| {
            [
                1_000_000_000 + i * 7_919,
                9_800_000_000 + i * 13,
                20 + i % 50,
                i % 13,
            ]
        })
        .collect()
}

fn raw_dataset() -> Dataset {
    let rows = raw_rows();
    let flat: Vec<i64> = rows.concat();
    let labels: Vec<i64> = (0..ROWS as i64).map(|i| i % 2).collect();
    let f = prism::Tensor::from_slice(&[ROWS, 4], &flat).unwrap();
    let l = prism::Tensor::from_slice(&[ROWS], &labels).unwrap();
    Dataset::from_tensors(&f, Some(&l), 64).unwrap()
}

/// Holds the masked dataset for others in the namespace.
#[prism::actor]
struct Shelf {
    data: Dataset,
}

#[prism::actor]
impl Shelf {
    fn new(data: Dataset) -> Self {
        Shelf { data }
    }
    fn dataset(&self) -> Dataset {
        self.data.clone()
    }
}

/// Runs in the reader's job: every feature of the block, as it sees them.
#[prism::remote]
fn cells(block: Block) -> Result<Vec<i64>, String> {
    let v = block.read().map_err(|e| e.to_string())?;
    Ok(v.features::<i64>().map_err(|e| e.to_string())?.to_vec())
}

fn rows_of(ds: &Dataset) -> Vec<[i64; 4]> {
    let mut out = Vec::new();
    for b in ds.blocks() {
        let seen = cells::remote(b.clone()).unwrap().get().unwrap().unwrap();
        out.extend(seen.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]));
    }
    out
}

fn role_steward() {
    let _c = prism::init().unwrap();
    let raw = raw_dataset();
    let masked = raw
        .mask(&[0], Mask::Tokenize)
        .and_then(|d| d.mask(&[1], Mask::Hash))
        .and_then(|d| d.mask(&[2], Mask::Redact))
        .unwrap();
    // The steward may turn tokens back into the exact ids.
    let back = rows_of(&masked.unmask(&[0]).unwrap());
    let ids: Vec<i64> = back.iter().map(|r| r[0]).collect();
    let raw_ids: Vec<i64> = raw_rows().iter().map(|r| r[0]).collect();
    check(
        ids == raw_ids,
        "the steward unmasks the tokens to the exact ids",
    );
    let _shelf = Shelf::options().name("clicks").spawn(masked).unwrap();
    println!("READY");
    check(hold_until_done(), "released by the test");
    println!("ALL OK");
}

fn role_developer() {
    let _c = prism::init().unwrap();
    let shelf = prism::get_actor::<Shelf>("clicks").unwrap();
    let ds = shelf.dataset().unwrap().get().unwrap();
    let seen = rows_of(&ds);
    let raw = raw_rows();
    check(seen.len() == raw.len(), "every row arrives");
    let raw_ids: HashSet<i64> = raw.iter().map(|r| r[0]).collect();
    let raw_phones: HashSet<i64> = raw.iter().map(|r| r[1]).collect();
    check(
        seen.iter()
            .all(|r| !raw_ids.contains(&r[0]) && !raw_phones.contains(&r[0])),
        "no raw id reaches the developer's tasks",
    );
    check(
        seen.iter()
            .all(|r| !raw_phones.contains(&r[1]) && !raw_ids.contains(&r[1])),
        "no raw phone number reaches them",
    );
    check(seen.iter().all(|r| r[2] == 0), "ages are redacted");
    check(
        seen.iter().zip(&raw).all(|(s, r)| s[3] == r[3]),
        "columns not named stay as they were",
    );
    let tokens: HashSet<i64> = seen.iter().map(|r| r[0]).collect();
    check(
        tokens.len() == raw.len(),
        "distinct ids keep distinct tokens",
    );
    let want = "alice (developer in vision) may not read the masking key of personal data in namespace vision: the role lacks permission pii:read";
    let refused = ds.unmask(&[0]).unwrap_err().to_string();
    println!("unmask: {refused}");
    check(
        refused.contains(want),
        "unmasking is refused with the head's sentence",
    );
    let refused = ds.mask(&[3], Mask::Hash).unwrap_err().to_string();
    check(
        refused.contains(want),
        "so is hashing (the key is the same)",
    );
    let redacted = rows_of(&ds.mask(&[3], Mask::Redact).unwrap());
    check(redacted.iter().all(|r| r[3] == 0), "redacting needs no key");
    println!("ALL OK");
}

/// A viewer's driver: the head refuses its job, so it runs no task at all.
fn role_viewer() {
    match prism::init() {
        Ok(_) => println!("STARTED"),
        Err(e) => println!("REFUSED {e}"),
    }
}

#[test]
#[ignore = "a driver role, run by the test in this file"]
fn child_role() {
    match std::env::var("PRISM_TEST_ROLE").unwrap().as_str() {
        "steward" => role_steward(),
        "developer" => role_developer(),
        "viewer" => role_viewer(),
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn masked_columns_never_reach_a_developers_tasks() {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--num-cpus", "2"]);
    sb.run_ok(&[
        "role",
        "add",
        "steward",
        "--permission",
        "pii:read",
        "--permission",
        "actors:create",
        "--permission",
        "state:read",
        "--permission",
        "jobs:submit",
    ]);
    let sara = sb.add_user("sara", "steward", "vision");
    let alice = sb.add_user("alice", "developer", "vision");
    let vera = sb.add_user("vera", "viewer", "vision");
    let done = sb.temp().join("done");
    let envs_for = |token: &str| {
        let mut e = sb.driver_envs(&head, &head);
        e.push(("PRISM_USER_TOKEN".into(), token.into()));
        e.push(("PRISM_NAMESPACE".into(), "vision".into()));
        e.push(("PRISM_TEST_DONE".into(), done.display().to_string()));
        e
    };
    let mut steward = Job::spawn("steward", &envs_for(&sara));
    let ready = wait_until(Duration::from_secs(240), || {
        steward.stdout().contains("READY")
            || steward
                .child
                .as_mut()
                .unwrap()
                .try_wait()
                .unwrap()
                .is_some()
    });
    assert!(
        ready && steward.stdout().contains("READY"),
        "{}\n{}",
        steward.stdout(),
        steward.stderr()
    );
    let mut developer = Job::spawn("developer", &envs_for(&alice));
    let (ok, said) = developer.finish(Duration::from_secs(240));
    std::fs::write(&done, b"").unwrap();
    println!("developer:\n{said}");
    assert!(ok && said.contains("ALL OK"), "developer:\n{said}");
    // A viewer runs no task to see anything in: her job is refused.
    let (_, said) = Job::spawn("viewer", &envs_for(&vera)).finish(Duration::from_secs(60));
    assert!(
        said.contains("REFUSED cannot start or join the cluster: the head refused this job: vera (viewer in vision) may not start job")
            && said.contains("the role lacks permission jobs:submit")
            && !said.contains("STARTED"),
        "viewer:\n{said}"
    );
    let (ok, said) = steward.finish(Duration::from_secs(60));
    assert!(ok && said.contains("ALL OK"), "steward:\n{said}");

    // MK-3: the steward's grant and the developer's refusals are on record.
    let trail = sb.run(&["audit", "--action", "pii.key", "--json"]);
    let trail = String::from_utf8_lossy(&trail.stdout);
    let lines: Vec<&str> = trail.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"user\":\"sara\"") && l.contains("\"outcome\":\"ok\"")),
        "{trail}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"user\":\"alice\"") && l.contains("lacks permission pii:read")),
        "{trail}"
    );
    assert!(Path::new(&done).exists());
}
