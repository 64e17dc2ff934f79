//! What `object_borrowing.rs`'s drivers share: tasks and actors that put,
//! keep and return refs, and counts of copies from `prism list objects`.

use prism::ObjectRef;
use prism_test_support::*;
use serde_json::Value;

pub const MB: usize = 1 << 20;

/// Reads every blob (pulling copies to this node) and sums their sizes.
#[prism::remote]
pub fn total(blobs: Vec<ObjectRef<Vec<u8>>>) -> u64 {
    blobs.iter().map(|b| b.get().unwrap().len() as u64).sum()
}

/// A stored result (larger than the inline limit) on the node that runs it.
#[prism::remote]
pub fn make(seed: u8) -> Vec<u8> {
    vec![seed; 2 * MB]
}

/// Puts `n` blobs on the node that runs it; its result holds refs to them.
#[prism::remote]
pub fn put_blobs(seed: u8, n: u8) -> Vec<ObjectRef<Vec<u8>>> {
    (0..n)
        .map(|i| prism::put(&vec![seed.wrapping_add(i); 2 * MB]).unwrap())
        .collect()
}

/// The node that runs it.
#[prism::remote]
pub fn node_here() -> String {
    prism::node_id().unwrap().to_string()
}

/// Raylet b's node id (a task needing x runs there).
pub fn node_of_b() -> prism::NodeId {
    node_here::options()
        .resource("x", 1.0)
        .remote()
        .unwrap()
        .get()
        .unwrap()
        .parse()
        .unwrap()
}

/// Puts blobs and returns refs to them, keeping none: while a result of
/// its lives, its worker holds the refs inside (RR-1). An actor, so that
/// its worker lives as long as the test wants (a pooled worker may be
/// trimmed, which would free the blobs too).
#[prism::actor]
pub struct Maker {
    made: u64,
}

#[prism::actor]
impl Maker {
    pub fn new() -> Self {
        Maker { made: 0 }
    }
    fn make(&mut self, seed: u8) -> Vec<ObjectRef<Vec<u8>>> {
        self.made += 1;
        (0..2)
            .map(|i| prism::put(&vec![seed.wrapping_add(i); 2 * MB]).unwrap())
            .collect()
    }
    fn made(&self) -> u64 {
        self.made
    }
}

/// Keeps results of calls that return refs (it owns the results; the
/// maker's worker holds the refs inside).
#[prism::actor]
pub struct Caller {
    kept: Vec<ObjectRef<Vec<ObjectRef<Vec<u8>>>>>,
}

#[prism::actor]
impl Caller {
    pub fn new() -> Self {
        Caller { kept: Vec::new() }
    }
    /// Has `maker` make blobs and keeps the result; returns the ids of the
    /// blobs inside.
    fn fetch(&mut self, maker: prism::ActorHandle<Maker>, seed: u8) -> Vec<String> {
        let made = maker.make(seed).unwrap();
        let ids = ids_of(&made.get().unwrap());
        self.kept.push(made);
        ids
    }
}

pub fn ids_of<T>(refs: &[ObjectRef<T>]) -> Vec<String> {
    refs.iter().map(|r| r.id().to_string()).collect()
}

#[prism::actor]
pub struct Keeper {
    kept: Vec<ObjectRef<Vec<u8>>>,
}

#[prism::actor]
impl Keeper {
    pub fn new() -> Self {
        Keeper { kept: Vec::new() }
    }
    fn keep(&mut self, blobs: Vec<ObjectRef<Vec<u8>>>) -> usize {
        self.kept.extend(blobs);
        self.kept.len()
    }
    fn read(&self) -> u64 {
        self.kept
            .iter()
            .map(|b| b.get().unwrap().len() as u64)
            .sum()
    }
    /// What reading the kept objects gives, as text.
    fn try_read(&self) -> String {
        match self
            .kept
            .iter()
            .map(|b| b.get())
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(v) => format!("read {}", v.len()),
            Err(e) => e.to_string(),
        }
    }
    /// Keeps the refs inside the `put` values it is handed refs to.
    fn keep_inside(&mut self, outers: Vec<ObjectRef<Vec<ObjectRef<Vec<u8>>>>>) -> usize {
        for outer in outers {
            self.kept.extend(outer.get().unwrap());
        }
        self.kept.len()
    }
    /// Refs to what it keeps, in its result.
    fn lend_back(&self) -> Vec<ObjectRef<Vec<u8>>> {
        self.kept.clone()
    }
    fn forget(&mut self) -> usize {
        let n = self.kept.len();
        self.kept.clear();
        n
    }
}

/// Every object row of every store in the cluster (none if it cannot be
/// listed).
pub fn objects() -> Vec<Value> {
    listed().unwrap_or_default()
}

fn listed() -> Option<Vec<Value>> {
    let temp = std::env::var("PRISM_TEST_TEMP").unwrap();
    let out = std::process::Command::new(prism_bin())
        .args(["list", "objects", "--json", "--temp-dir", &temp])
        .output()
        .unwrap();
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Copies of `ids` held anywhere; `usize::MAX` when they cannot be listed
/// (so that a wait for none goes on).
pub fn copies(ids: &[String]) -> usize {
    let Some(objects) = listed() else {
        return usize::MAX;
    };
    objects
        .iter()
        .filter(|o| ids.iter().any(|id| o["object_id"] == id.as_str()))
        .count()
}

pub fn blob(seed: u8) -> ObjectRef<Vec<u8>> {
    prism::put(&vec![seed; 2 * MB]).unwrap()
}

/// Puts a blob, has `keeper` keep a ref to it and drops the driver's: the
/// keeper's borrow alone holds it now. Returns its id.
pub fn lend(keeper: &prism::ActorHandle<Keeper>, seed: u8) -> Vec<String> {
    let b = blob(seed);
    let ids = vec![b.id().to_string()];
    check(
        keeper.keep(vec![b.clone()]).unwrap().get().unwrap() == 1,
        "kept",
    );
    drop(b);
    check(
        copies(&ids) >= 1,
        "the driver's refs are gone, the actor's borrow keeps the object",
    );
    ids
}
