//! Data residency against a real cluster: a head in `region=in-south`, a
//! raylet in `region=in-west` and one in `region=eu-west`. An object put
//! with the rule `region in [in-south, in-west]` is read by a task pinned
//! to in-west, but a task pinned to eu-west cannot read it — as an
//! argument or inside a value — and gets an error naming the rule; a put
//! whose own node is outside its rule stores nothing. A resident task's
//! result, what it puts and what it submits stay inside the rule too, and
//! so does a resident actor, through restarts, with what its methods make.

use prism::{NodeId, Residency};
use prism_test_support::*;
use std::time::Duration;

#[prism::remote]
fn total(xs: Vec<u64>) -> u64 {
    xs.iter().sum()
}

#[prism::remote]
fn total_inside(refs: Vec<prism::ObjectRef<Vec<u64>>>) -> Result<u64, String> {
    let xs = prism::get(&refs[0]).map_err(|e| e.to_string())?;
    Ok(xs.iter().sum())
}

#[prism::remote]
fn tensor_rows(refs: Vec<prism::ObjectRef<prism::Tensor>>) -> Result<u64, String> {
    let v = prism::get_tensor(&refs[0]).map_err(|e| e.to_string())?;
    Ok(v.shape()[0])
}

#[prism::remote]
fn rows_of(n: u64) -> Vec<u64> {
    (1..=n).collect()
}

/// Where it ran, after holding its CPU a while (so that others queue or
/// spill back meanwhile).
#[prism::remote]
fn where_after(ms: u64) -> String {
    std::thread::sleep(std::time::Duration::from_millis(ms));
    prism::node_id().unwrap().to_string()
}

/// Its rows' sum and where it ran, after holding its CPU a while.
#[prism::remote]
fn sum_where(xs: Vec<u64>, ms: u64) -> (u64, String) {
    std::thread::sleep(std::time::Duration::from_millis(ms));
    (xs.iter().sum(), prism::node_id().unwrap().to_string())
}

/// Puts rows and submits a child from inside a (resident) task.
#[prism::remote]
fn derive(n: u64) -> Vec<prism::ObjectRef<Vec<u64>>> {
    let rows: Vec<u64> = (1..=n).collect();
    vec![prism::put(&rows).unwrap(), rows_of::remote(n).unwrap()]
}

/// Rows an actor holds, for the resident actor checks.
#[prism::actor]
struct Ledger {
    rows: Vec<u64>,
}

#[prism::actor]
impl Ledger {
    fn new(n: u64) -> Self {
        Ledger {
            rows: (1..=n).collect(),
        }
    }

    /// Its rows' sum and where it runs.
    fn sum_where(&mut self) -> (u64, String) {
        let at = prism::node_id().unwrap().to_string();
        (self.rows.iter().sum(), at)
    }

    fn rows(&mut self) -> Vec<u64> {
        self.rows.clone()
    }

    /// Its rows put in the store from inside the method.
    fn put_rows(&mut self) -> Vec<prism::ObjectRef<Vec<u64>>> {
        vec![prism::put(&self.rows).unwrap()]
    }

    /// The same from an async method (run interleaved with others when
    /// the actor allows more than one call at a time).
    async fn put_rows_async(&self) -> Vec<prism::ObjectRef<Vec<u64>>> {
        vec![prism::put(&self.rows).unwrap()]
    }
}

/// How the head's refusal names the rule and the place.
const OUTSIDE: [&str; 2] = [
    "may only be on nodes with region in [in-south, in-west]",
    "region=eu-west",
];

/// What a task pinned to `node` gets reading `r` as its argument.
fn read_as_arg(node: NodeId, r: &prism::ObjectRef<Vec<u64>>) -> prism::Result<u64> {
    prism::get(&total::options().node_affinity(node, false).remote(r)?)
}

/// What a task pinned to `node` gets reading `r` through a ref in a value.
fn read_inside(node: NodeId, r: prism::ObjectRef<Vec<u64>>) -> Result<u64, String> {
    let got = total_inside::options()
        .node_affinity(node, false)
        .remote(vec![r])
        .unwrap();
    prism::get(&got).unwrap()
}

fn node(var: &str) -> NodeId {
    std::env::var(var).unwrap().parse().unwrap()
}

fn role_residency() {
    let _c = prism::init().unwrap();
    let (west, eu) = (node("PRISM_TEST_WEST"), node("PRISM_TEST_EU"));
    let rule = Residency::new("region", &["in-south", "in-west"]);
    let data: Vec<u64> = (1..=1000).collect();
    let r = prism::put_resident(&data, rule.clone()).unwrap();

    check(
        read_as_arg(west, &r).unwrap() == 500_500,
        "a node inside the rule reads it",
    );
    let err = read_as_arg(eu, &r).unwrap_err().to_string();
    println!("REFUSED ARG: {err}");
    check(
        OUTSIDE.iter().all(|w| err.contains(w)),
        "a task pinned outside the rule cannot read it as an argument",
    );
    let err = read_inside(eu, r.clone()).unwrap_err();
    println!("REFUSED GET: {err}");
    check(
        OUTSIDE.iter().all(|w| err.contains(w)),
        "nor through a ref inside a value",
    );

    // Tasks reading it, allowed here (in-south, 1 CPU) or on eu-west by
    // their own selector, are placed inside its rule: all four here,
    // queued rather than spilled to the idle eu-west node to fail.
    let here = prism::node_id().unwrap().to_string();
    let reads: Vec<_> = (0..4)
        .map(|_| {
            sum_where::options()
                .label_selector("region!=in-west")
                .remote(&r, 200u64)
                .unwrap()
        })
        .collect();
    let got = prism::get_all(&reads).unwrap();
    println!("RESIDENT READS RAN ON: {got:?}");
    check(
        got.iter().all(|(sum, at)| *sum == 500_500 && *at == here),
        "a task reading a resident object is placed inside its rule",
    );

    // A resident tensor (a dataset block) the same way.
    let bytes: Vec<u8> = (0..64u32).flat_map(|x| (x as f32).to_le_bytes()).collect();
    let t =
        prism::put_tensor_resident(prism::DType::F32, &[16u64, 4], &bytes, rule.clone()).unwrap();
    let near = tensor_rows::options()
        .node_affinity(west, false)
        .remote(vec![t.clone()])
        .unwrap();
    check(
        prism::get(&near).unwrap() == Ok(16),
        "a node inside the rule reads the tensor",
    );
    let far = tensor_rows::options()
        .node_affinity(eu, false)
        .remote(vec![t])
        .unwrap();
    let err = prism::get(&far).unwrap().unwrap_err();
    check(
        err.contains("region in [in-south, in-west]"),
        "a node outside cannot read the tensor",
    );

    let elsewhere = prism::put_resident(&data, Residency::new("region", &["eu-west"])).unwrap_err();
    println!("REFUSED PUT: {elsewhere}");
    check(
        elsewhere
            .to_string()
            .contains("with the residency rule region in [eu-west]")
            && elsewhere.to_string().contains("which has region=in-south"),
        "a put outside its own rule is refused",
    );
    task_results(west, eu, &rule);
    actor_results(eu, &rule);
    println!("ALL OK");
}

/// A resident task's result, what it puts and what it submits stay inside
/// the rule; a resident task pinned outside fails before storing anything.
fn task_results(west: NodeId, eu: NodeId, rule: &Residency) {
    let made = rows_of::options()
        .resident(rule.clone())
        .remote(1000u64)
        .unwrap();
    check(
        prism::get(&made).unwrap().len() == 1000,
        "the driver, inside the rule, reads a resident result",
    );
    check(
        read_as_arg(west, &made).unwrap() == 500_500,
        "a node inside the rule reads a resident result",
    );
    // A small result too: it is stored, not inlined, so the head decides.
    let small = rows_of::options()
        .resident(rule.clone())
        .remote(3u64)
        .unwrap();
    for (what, r) in [("large", &made), ("small", &small)] {
        let err = read_as_arg(eu, r).unwrap_err().to_string();
        println!("REFUSED RESULT ({what}): {err}");
        check(
            OUTSIDE.iter().all(|w| err.contains(w)),
            "a task outside the rule cannot read a resident result",
        );
    }

    // What a resident task puts and submits inherits its rule.
    let derived = derive::options()
        .resident(rule.clone())
        .remote(10u64)
        .unwrap();
    let refs = prism::get(&derived).unwrap();
    for (what, r) in ["put", "child"].into_iter().zip(refs) {
        check(
            prism::get(&r).unwrap().len() == 10,
            "the driver reads what a resident task derived",
        );
        let err = read_inside(eu, r).unwrap_err();
        println!("REFUSED DERIVED ({what}): {err}");
        check(
            OUTSIDE.iter().all(|w| err.contains(w)),
            "what a resident task derived stays inside the rule",
        );
    }

    // Six 300 ms resident tasks on two allowed CPUs: they queue or spill
    // back between the allowed nodes, never to the idle eu-west node.
    let many: Vec<_> = (0..6)
        .map(|_| {
            where_after::options()
                .resident(rule.clone())
                .remote(300u64)
                .unwrap()
        })
        .collect();
    let ran = prism::get_all(&many).unwrap();
    println!("RESIDENT TASKS RAN ON: {ran:?}");
    check(
        !ran.contains(&eu.to_string()),
        "resident tasks never run outside their rule",
    );

    let pinned = rows_of::options()
        .resident(rule.clone())
        .node_affinity(eu, false)
        .remote(10u64)
        .unwrap();
    let err = prism::get(&pinned).unwrap_err().to_string();
    println!("REFUSED PINNED: {err}");
    check(
        err.contains("with the residency rule region in [in-south, in-west]")
            && err.contains("region=eu-west"),
        "a resident task pinned outside its rule fails naming it",
    );
}

/// A resident actor is placed and restarted inside its rule only, is not
/// built outside it, and what its methods return or put stays inside.
fn actor_results(eu: NodeId, rule: &Residency) {
    let outside = eu.to_string();
    let ledger = || Ledger::options().resident(rule.clone()).num_cpus(1.0);
    // Two 1-CPU actors fill the two allowed nodes; a third waits rather
    // than go to the idle eu-west node, and takes the CPU one frees.
    let a = ledger()
        .max_restarts(1)
        .max_task_retries(1)
        .spawn(1000u64)
        .unwrap();
    let b = ledger().spawn(1000u64).unwrap();
    for h in [&a, &b] {
        h.ready().unwrap();
    }
    let c = ledger().spawn(1000u64).unwrap();
    prism::kill(&b, true).unwrap();
    let (sum, at) = prism::get(&c.sum_where().unwrap()).unwrap();
    println!("RESIDENT ACTOR RAN ON: {at}");
    check(
        sum == 500_500 && at != outside,
        "a resident actor waits for room inside its rule",
    );
    prism::kill(&a, false).unwrap();
    let (sum, at) = prism::get(&a.sum_where().unwrap()).unwrap();
    println!("RESTARTED RESIDENT ACTOR RAN ON: {at}");
    check(
        sum == 500_500 && at != outside,
        "a restarted resident actor stays inside its rule",
    );

    let rows = c.rows().unwrap();
    let put = prism::get(&c.put_rows().unwrap()).unwrap().remove(0);
    let concurrent = Ledger::options()
        .resident(rule.clone())
        .max_concurrency(2)
        .spawn(1000u64)
        .unwrap();
    let put_async = prism::get(&concurrent.put_rows_async().unwrap())
        .unwrap()
        .remove(0);
    let made = [("result", &rows), ("put", &put), ("async put", &put_async)];
    for (what, r) in made {
        check(
            prism::get(r).unwrap().len() == 1000,
            "the driver, inside the rule, reads what a resident actor made",
        );
        let err = read_as_arg(eu, r).unwrap_err().to_string();
        println!("REFUSED ACTOR {what}: {err}");
        check(
            OUTSIDE.iter().all(|w| err.contains(w)),
            "a task outside the rule cannot read what a resident actor made",
        );
    }
    // A task reading its result is placed inside the rule, not on eu-west.
    let read = sum_where::options()
        .num_cpus(0.0)
        .label_selector("region!=in-west")
        .remote(&rows, 0u64)
        .unwrap();
    let (sum, at) = prism::get(&read).unwrap();
    check(
        sum == 500_500 && at == prism::node_id().unwrap().to_string(),
        "a task reading a resident actor's result runs inside its rule",
    );

    // A handle found by name knows the rule too: a task reading what the
    // actor returns, with a soft affinity to eu-west, runs inside it.
    let named = Ledger::options()
        .resident(rule.clone())
        .name("resident-ledger")
        .spawn(1000u64)
        .unwrap();
    named.ready().unwrap();
    let found: prism::ActorHandle<Ledger> = prism::get_actor("resident-ledger").unwrap();
    // So does a handle passed in a value (through the store and back).
    let passed = prism::put(&found).unwrap();
    let passed: prism::ActorHandle<Ledger> = prism::get(&passed).unwrap();
    for (how, handle) in [("found by name", &found), ("passed in a value", &passed)] {
        let rows = handle.rows().unwrap();
        let read = sum_where::options()
            .num_cpus(0.0)
            .node_affinity(eu, true)
            .remote(&rows, 0u64)
            .unwrap();
        let (sum, at) = prism::get(&read).unwrap();
        println!("TASK READING THE RESULT OF A RESIDENT ACTOR'S HANDLE {how} RAN ON: {at}");
        check(
            sum == 500_500 && at != outside,
            "a handle found by name or passed in a value places the readers of its results inside the rule",
        );
    }

    // Spread over the three nodes, or soft affinity to eu-west: the rule
    // narrows both, so none is built outside it (and dies there).
    let resident = || Ledger::options().resident(rule.clone()).num_cpus(0.0);
    let mut placed: Vec<_> = (0..3)
        .map(|_| resident().spread().spawn(10u64).unwrap())
        .collect();
    placed.push(resident().node_affinity(eu, true).spawn(10u64).unwrap());
    for h in &placed {
        let (sum, at) = prism::get(&h.sum_where().unwrap()).unwrap();
        println!("SPREAD OR SOFT RESIDENT ACTOR RAN ON: {at}");
        check(
            sum == 55 && at != outside,
            "spread and soft affinity keep a resident actor inside its rule",
        );
    }

    let pinned = ledger().node_affinity(eu, false).spawn(3u64).unwrap();
    let err = pinned.ready().unwrap_err().to_string();
    println!("REFUSED ACTOR PINNED: {err}");
    check(
        err.contains("with the residency rule region in [in-south, in-west]")
            && err.contains("region=eu-west"),
        "a resident actor pinned outside its rule is not built",
    );
}

#[test]
#[ignore = "a job driver, started by the test in this file with PRISM_TEST_ROLE"]
fn child_role() {
    match std::env::var("PRISM_TEST_ROLE")
        .expect("run by the test in this file")
        .as_str()
    {
        "residency" => role_residency(),
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn a_resident_object_never_reaches_a_node_outside_its_rule() {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--num-cpus", "1", "--labels", "region=in-south"]);
    let west = sb.start_raylet(
        "west",
        &head,
        &["--num-cpus", "1", "--labels", "region=in-west"],
    );
    let eu = sb.start_raylet(
        "eu",
        &head,
        &["--num-cpus", "1", "--labels", "region=eu-west"],
    );
    assert!(wait_until(Duration::from_secs(10), || sb
        .nodes_in_state("alive")
        .len()
        == 3));
    let mut envs = sb.driver_envs(&head, &head);
    envs.push(("PRISM_TEST_WEST".into(), west.node_id()));
    envs.push(("PRISM_TEST_EU".into(), eu.node_id()));
    let mut job = Job::spawn_exe(&std::env::current_exe().unwrap(), "residency", &envs);
    let (ok, out) = job.finish(Duration::from_secs(120));
    assert!(ok && out.contains("ALL OK"), "{out}");
    for line in out
        .lines()
        .filter(|l| l.starts_with("REFUSED") || l.starts_with("RESIDENT"))
    {
        eprintln!("{line}");
    }
}
