//! Placement groups on a real cluster (head with its raylet + two more, 2
//! CPUs each): STRICT_SPREAD over three nodes with tasks and an actor in
//! the bundles, infeasible groups that say why, removal that kills what runs
//! inside and frees the resources (seen in `prism status`), and a lost
//! node's bundle placed again on a node that joins later.

use prism::{Bundle, PlacementGroup, PlacementStrategy};
use prism_test_support::*;
use std::time::Duration;

#[prism::remote]
fn where_am_i() -> String {
    std::env::var("PRISM_NODE_ID").unwrap_or_default()
}

#[prism::remote]
fn sleepy(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[prism::actor]
struct Holder {
    n: u64,
}

#[prism::actor]
impl Holder {
    fn new() -> Self {
        Holder { n: 0 }
    }
    fn bump(&mut self) -> u64 {
        self.n += 1;
        self.n
    }
}

fn cpus(n: f64) -> Bundle {
    Bundle::new().cpus(n)
}

fn spread_role() {
    let pg = PlacementGroup::create(vec![cpus(1.0); 3], PlacementStrategy::StrictSpread).unwrap();
    pg.ready(Duration::from_secs(20)).unwrap();
    let info = pg.info().unwrap();
    let mut nodes: Vec<String> = info.nodes.iter().map(|n| n.unwrap().to_string()).collect();
    let placed = nodes.clone();
    nodes.sort();
    nodes.dedup();
    check(
        nodes.len() == 3,
        "STRICT_SPREAD: three bundles on three nodes",
    );
    for (i, want) in placed.iter().enumerate() {
        let got = where_am_i::options()
            .placement_group(&pg, i as u32)
            .remote()
            .unwrap()
            .get()
            .unwrap();
        check(
            &got == want,
            &format!("a task in bundle {i} runs on its node"),
        );
    }
    // An actor holds bundle 0's CPU; a task asking for it there waits.
    let h = Holder::options()
        .num_cpus(1.0)
        .placement_group(&pg, 0)
        .spawn()
        .unwrap();
    check(
        h.bump().unwrap().get().unwrap() == 1,
        "an actor in bundle 0",
    );
    let waits = sleepy::options()
        .placement_group(&pg, 0)
        .remote(1u64)
        .unwrap();
    let (done, _) = prism::wait(
        std::slice::from_ref(&waits),
        1,
        Some(Duration::from_millis(700)),
    )
    .unwrap();
    check(done.is_empty(), "the bundle is full: a task in it waits");
    // A task too big for its bundle fails at once, naming the bundle.
    let big = sleepy::options()
        .num_cpus(2.0)
        .placement_group(&pg, 1)
        .remote(1u64)
        .unwrap();
    let e = big.get().unwrap_err().to_string();
    check(e.contains("bundle 1 reserves"), &format!("too big: {e}"));
    // Four STRICT_SPREAD bundles on three nodes: infeasible, with the reason.
    let four = PlacementGroup::create(vec![cpus(1.0); 4], PlacementStrategy::StrictSpread).unwrap();
    // Infeasible comes back at once; the timeout only bounds a slow machine.
    let e = four.ready(Duration::from_secs(20)).unwrap_err().to_string();
    println!("4 bundles: {e}");
    check(
        e.contains("infeasible"),
        "STRICT_SPREAD 4 on 3 nodes is infeasible",
    );
    check(
        e.contains('4') && e.contains('3'),
        "the reason counts nodes",
    );
    // STRICT_PACK of 3 CPUs fits on no 2-CPU node.
    let pack = PlacementGroup::create(vec![cpus(1.0); 3], PlacementStrategy::StrictPack).unwrap();
    let e = pack.ready(Duration::from_secs(20)).unwrap_err().to_string();
    println!("STRICT_PACK 3: {e}");
    check(
        e.contains("infeasible"),
        "STRICT_PACK that fits nowhere is infeasible",
    );
    // A group that fits but not now: ready() times out saying it waits.
    let big2 = PlacementGroup::create(vec![cpus(2.0); 3], PlacementStrategy::Spread).unwrap();
    let t = std::time::Instant::now();
    let e = big2
        .ready(Duration::from_millis(800))
        .unwrap_err()
        .to_string();
    println!("busy: {e}");
    check(
        e.contains("pending") && t.elapsed() < Duration::from_secs(5),
        "ready() on a group waiting for resources returns at its timeout with the reason",
    );
    // Removal kills the actor (with the reason) and fails the waiting task.
    // (Like Ray's, removal returns at once; the bundles go back in the background.)
    pg.remove().unwrap();
    let mut e = String::new();
    for _ in 0..100 {
        match h.bump().unwrap().get() {
            Ok(_) => std::thread::sleep(Duration::from_millis(100)),
            Err(err) => {
                e = err.to_string();
                break;
            }
        }
    }
    check(
        e.contains("placement group"),
        &format!("the actor died with its group: {e}"),
    );
    let e = waits.get().unwrap_err().to_string();
    check(
        e.contains("was removed") || e.contains("placement group"),
        &format!("the waiting task failed with its group: {e}"),
    );
    // The freed CPUs let the waiting group in.
    let freed = big2.ready(Duration::from_secs(20));
    check(
        freed.is_ok(),
        &format!("removing a group freed its resources for another: {freed:?}"),
    );
    big2.remove().unwrap();
    four.remove().unwrap();
    pack.remove().unwrap();
    let e = pg.remove().unwrap_err().to_string();
    check(
        e.contains("already removed"),
        "removing twice is a clear error",
    );
    println!("ALL OK");
}

#[test]
#[ignore = "a job driver, started by the tests in this file with PRISM_TEST_ROLE"]
fn child_role() {
    let _c = prism::init().unwrap();
    match std::env::var("PRISM_TEST_ROLE").unwrap().as_str() {
        "spread" => spread_role(),
        "hold" => {
            let pg = PlacementGroup::create_named(
                "held",
                vec![cpus(2.0); 3],
                PlacementStrategy::StrictSpread,
                true,
            )
            .unwrap();
            pg.ready(Duration::from_secs(20)).unwrap();
            println!("ALL OK");
        }
        "release" => {
            prism::get_placement_group("held")
                .unwrap()
                .remove()
                .unwrap();
            println!("ALL OK");
        }
        other => panic!("unknown role {other}"),
    }
}

fn free_cpus(sb: &Sandbox) -> Vec<f64> {
    sb.status()["nodes"]
        .as_array()
        .map(|ns| {
            ns.iter()
                .filter(|n| n["state"] == "alive")
                .map(|n| n["resources"]["available"]["CPU"].as_f64().unwrap_or(0.0))
                .collect()
        })
        .unwrap_or_default()
}

fn group(sb: &Sandbox, name: &str) -> serde_json::Value {
    let out = sb.run(&["list", "placement-groups", "--json"]);
    let all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    all.into_iter()
        .find(|g| g["name"] == name)
        .unwrap_or_default()
}

#[test]
fn placement_groups_on_three_nodes() {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--num-cpus", "2"]);
    let b = sb.start_raylet("b", &head, &["--num-cpus", "2"]);
    let mut c = sb.start_raylet("c", &head, &["--num-cpus", "2"]);
    assert!(wait_until(Duration::from_secs(10), || sb
        .nodes_in_state("alive")
        .len()
        == 3));
    let envs = sb.driver_envs(&head, &head);
    let run = |role: &str| {
        let mut job = Job::spawn(role, &envs);
        let (ok, out) = job.finish(Duration::from_secs(120));
        assert!(
            ok && out.contains("ALL OK"),
            "role {role}:\n{out}\n--- head:\n{}\n--- b:\n{}",
            head.log(),
            b.log()
        );
    };
    run("spread");
    // A detached group holding every CPU outlives its job; status shows it.
    run("hold");
    assert_eq!(group(&sb, "held")["state"], "created");
    let all_taken = wait_until(Duration::from_secs(10), || {
        free_cpus(&sb) == vec![0.0, 0.0, 0.0]
    });
    assert!(all_taken, "{:?}", free_cpus(&sb));
    // Lose a node: its bundle is placed again on a node that joins.
    let lost = c.node_id();
    c.kill9();
    let resched = wait_until(Duration::from_secs(15), || {
        group(&sb, "held")["state"] == "rescheduling"
    });
    assert!(resched, "{:#}", group(&sb, "held"));
    let d = sb.start_raylet("d", &head, &["--num-cpus", "2"]);
    let again = wait_until(Duration::from_secs(15), || {
        group(&sb, "held")["state"] == "created"
    });
    let g = group(&sb, "held");
    assert!(again, "{g:#}");
    assert_eq!(g["reschedules"], 1);
    let nodes: Vec<String> = g["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap_or_default().to_string())
        .collect();
    assert!(nodes.contains(&d.node_id()), "{nodes:?}");
    assert!(!nodes.contains(&lost), "{nodes:?}");
    // Removing it frees every CPU again.
    run("release");
    let freed = wait_until(Duration::from_secs(10), || {
        free_cpus(&sb) == vec![2.0, 2.0, 2.0]
    });
    assert!(freed, "{:?}", free_cpus(&sb));
    assert_eq!(group(&sb, "held")["state"], "removed");
}
