//! Owner-based reference counting against real processes (a driver on
//! raylet a, its tasks and an actor on raylet b): refs passed inside values
//! to tasks on another node are freed on every node once every holder drops
//! them; an actor that keeps refs it received borrows them, so they outlive
//! the driver's own refs until the actor drops them, as do refs it reads
//! out of a `put` value after the value is gone; and a driver churning
//! thousands of refs through tasks ends owning nothing, with every store
//! back where it started; what the driver still owns when it exits goes
//! too, as do what a killed borrower held and what a driver killed with
//! SIGKILL put, and the refs inside a task's result once the result's
//! owner is killed or its node declared dead. Counts come from
//! `prism list objects --json`.

use prism_test_support::*;
use serde_json::Value;
use std::time::Duration;

#[path = "common/borrowing.rs"]
mod borrowing;
use borrowing::*;

fn role_borrow() {
    let _c = prism::init().unwrap();
    let on_b = || total::options().resource("x", 1.0);
    let soon = Duration::from_secs(30);

    // Refs inside a value, read on node b, then dropped by the driver.
    let (a1, a2) = (blob(1), blob(2));
    let ids = vec![a1.id().to_string(), a2.id().to_string()];
    let n = on_b().remote(vec![a1.clone(), a2.clone()]).unwrap();
    check(
        n.get().unwrap() == 4 * MB as u64,
        "the task read both blobs",
    );
    let held = copies(&ids);
    println!("copies while held: {held}");
    check(
        held >= 2,
        "the blobs are in the stores while the driver holds them",
    );
    drop((a1, a2));
    check(
        wait_until(soon, || copies(&ids) == 0),
        "refs passed inside a value are freed on every node once every holder drops them",
    );

    // An actor on b keeps a ref it received: it borrows it.
    let keeper = Keeper::options().resource("x", 1.0).spawn().unwrap();
    let kept = lend(&keeper, 3);
    check(
        keeper.read().unwrap().get().unwrap() == 2 * MB as u64,
        "the actor still reads the object it borrows",
    );
    check(keeper.forget().unwrap().get().unwrap() == 1, "forgotten");
    check(
        wait_until(soon, || copies(&kept) == 0),
        "freed on every node once the borrowing actor drops it",
    );

    // The owner frees what the actor borrows: the actor is told at once.
    let c1 = blob(4);
    let freed = vec![c1.id().to_string()];
    check(
        keeper.keep(vec![c1.clone()]).unwrap().get().unwrap() == 1,
        "kept",
    );
    prism::free(&c1).unwrap();
    check(
        wait_until(soon, || copies(&freed) == 0),
        "prism::free drops every copy",
    );
    let why = keeper.try_read().unwrap().get().unwrap();
    println!("a borrower reading a freed object: {why}");
    check(
        why.contains("its owner freed it"),
        "a borrower reading what its owner freed gets ObjectLost saying so",
    );
    check(keeper.forget().unwrap().get().unwrap() == 1, "forgotten");

    // A ref inside a `put` value: the actor that reads it out borrows it
    // from its owner, so it outlives the value and the driver's own ref,
    // and goes once the actor drops it.
    let inner = blob(6);
    let inside = vec![inner.id().to_string()];
    let outer = prism::put(&vec![inner.clone()]).unwrap();
    let outers = vec![outer.id().to_string()];
    drop(inner);
    check(
        keeper
            .keep_inside(vec![outer.clone()])
            .unwrap()
            .get()
            .unwrap()
            == 1,
        "the actor read the ref out of the value",
    );
    drop(outer);
    check(
        wait_until(soon, || copies(&outers) == 0),
        "the value goes once its refs are dropped",
    );
    check(
        copies(&inside) >= 1 && keeper.read().unwrap().get().unwrap() == 2 * MB as u64,
        "the ref read out of it outlives the value",
    );
    check(keeper.forget().unwrap().get().unwrap() == 1, "forgotten");
    check(
        wait_until(soon, || copies(&inside) == 0),
        "a ref read out of a put value is freed once its reader drops it",
    );

    // The same, with the `put` value passed to the actor by ref: the
    // actor registers what it keeps when its call ends.
    let inner = blob(8);
    let inside = vec![inner.id().to_string()];
    let outer = prism::put(&vec![inner.clone()]).unwrap();
    let outers = vec![outer.id().to_string()];
    drop(inner);
    check(
        keeper.keep(&outer).unwrap().get().unwrap() == 1,
        "the actor kept the refs of a value passed by ref",
    );
    drop(outer);
    check(
        wait_until(soon, || copies(&outers) == 0),
        "the value goes once its refs are dropped",
    );
    check(
        keeper.read().unwrap().get().unwrap() == 2 * MB as u64,
        "the ref kept from a value passed by ref outlives the value",
    );
    check(keeper.forget().unwrap().get().unwrap() == 1, "forgotten");
    check(
        wait_until(soon, || copies(&inside) == 0),
        "freed once the actor drops it",
    );

    // Its owner reads a ref back out of a `put` value: that copy keeps the
    // object after the value is gone, until it is dropped.
    let mine = blob(7);
    let own = vec![mine.id().to_string()];
    let outer = prism::put(&vec![mine]).unwrap();
    let outers = vec![outer.id().to_string()];
    let back = outer.get().unwrap();
    drop(outer);
    check(
        wait_until(soon, || copies(&outers) == 0),
        "the value goes once its refs are dropped",
    );
    check(
        back[0].get().unwrap().len() == 2 * MB,
        "the owner's copy read out of the value outlives it",
    );
    drop(back);
    check(
        wait_until(soon, || copies(&own) == 0),
        "freed once the owner drops the copy it read back",
    );

    // Refs inside a task's result: the worker that put them holds them
    // while the result lives (RR-1), and a reader's copies after that.
    let made = put_blobs::options()
        .resource("x", 1.0)
        .remote(10, 2)
        .unwrap();
    let inside = ids_of(&made.get().unwrap());
    let again = made.get().unwrap();
    check(
        on_b().remote(again.clone()).unwrap().get().unwrap() == 4 * MB as u64,
        "refs inside a live result stay readable after a reader's copies go",
    );
    drop(made);
    check(
        on_b().remote(again.clone()).unwrap().get().unwrap() == 4 * MB as u64,
        "the copies read out of a result outlive it",
    );
    drop(again);
    check(
        wait_until(soon, || copies(&inside) == 0),
        "refs inside a task's result are freed on every node once the result and its readers' copies are gone",
    );

    // An actor call's result holding refs the actor borrows: they go once
    // the actor, the result and the copies read out of it let them go.
    let lent = lend(&keeper, 11);
    let back = keeper.lend_back().unwrap();
    let mine = back.get().unwrap();
    check(keeper.forget().unwrap().get().unwrap() == 1, "forgotten");
    drop(back);
    check(
        mine[0].get().unwrap().len() == 2 * MB,
        "its owner's copy read out of an actor's result outlives the result",
    );
    drop(mine);
    check(
        wait_until(soon, || copies(&lent) == 0),
        "refs inside an actor call's result are freed once every holder lets them go",
    );

    // A borrower killed while it holds a ref: its raylet releases the
    // borrow in its name (BL-1), so the owner frees the object.
    let doomed = Keeper::options().resource("x", 1.0).spawn().unwrap();
    let dead = lend(&doomed, 5);
    prism::kill(&doomed, true).unwrap();
    check(
        wait_until(soon, || copies(&dead) == 0),
        "freed on every node once the borrowing actor is killed",
    );

    // An owner killed while an actor's worker holds the refs inside a
    // result of its: the raylets release the result in its name (HL-1).
    // The owner (an actor) here on a, then on b with the holder.
    let b = node_of_b();
    let maker = Maker::options().resource("x", 1.0).spawn().unwrap();
    let killed_owner = |owner: prism::ActorHandle<Caller>, seed: u8, what: &str| {
        let quick = Duration::from_secs(20);
        let inside = owner.fetch(maker.clone(), seed).unwrap().get().unwrap();
        check(
            wait_until(quick, || copies(&inside) == 2),
            "the blobs are on b",
        );
        prism::kill(&owner, true).unwrap();
        check(wait_until(quick, || copies(&inside) == 0), what);
    };
    let here = prism::node_id().unwrap();
    killed_owner(
        Caller::options()
            .node_affinity(here, false)
            .spawn()
            .unwrap(),
        12,
        "refs inside a result are freed once its owner on another node is killed",
    );
    killed_owner(
        Caller::options().node_affinity(b, false).spawn().unwrap(),
        13,
        "refs inside a result are freed once its owner on the same node is killed",
    );
    check(
        maker.made().unwrap().get().unwrap() == 2,
        "the holder lives on: the raylets freed the blobs, not its exit",
    );
    prism::kill(&maker, true).unwrap();

    // Churn: small refs through tasks on b, 100 in flight at a time.
    // The churned objects are small (the job binary's copies are not).
    let small = || {
        objects()
            .into_iter()
            .filter(|o| o["size"].as_u64().is_some_and(|s| s < 1024))
            .collect::<Vec<_>>()
    };
    let before = small().len();
    let owned = prism::ref_counts().unwrap().owned;
    for round in 0..20u8 {
        let sums: Vec<_> = (0..100)
            .map(|i| {
                let r = prism::put(&vec![round.wrapping_add(i); 64]).unwrap();
                on_b().remote(vec![r]).unwrap()
            })
            .collect();
        check(
            prism::get_all(&sums).unwrap().iter().all(|s| *s == 64),
            "every churned ref was read",
        );
    }
    let counts = prism::ref_counts().unwrap();
    println!("after churn: {counts:?}; before: {owned} owned, {before} objects");
    check(
        counts.owned == owned && counts.borrowed == 0,
        "the driver owns no more after the churn than before it",
    );
    let back = wait_until(soon, || small().len() <= before);
    if !back {
        println!("left: {:#?}", small());
    }
    check(back, "every store is back where it was before the churn");
    // Still held when the driver exits: a put here, a result on b.
    let (put_here, made_on_b) = (
        blob(9),
        make::options().resource("x", 1.0).remote(9).unwrap(),
    );
    check(
        prism::wait(std::slice::from_ref(&made_on_b), 1, Some(soon))
            .unwrap()
            .0
            .len()
            == 1,
        "made",
    );
    println!("HELD {} {}", put_here.id(), made_on_b.id());
    println!("ALL OK");
}

/// An actor on b keeps a blob put here; the test then kills b's raylet:
/// once the head declares b dead, a's raylet releases what b's processes
/// borrowed (BL-1), so the driver frees the blob.
/// An actor on b also keeps a result of a task that ran here and returned
/// refs: once b is declared dead, a's raylet releases the result in its
/// name (HL-1), so the worker here frees the blobs inside.
fn role_dead_node() {
    let _c = prism::init().unwrap();
    let b = node_of_b();
    let keeper = Keeper::options().resource("x", 1.0).spawn().unwrap();
    let ids = lend(&keeper, 6);
    let here = prism::node_id().unwrap();
    let maker = Maker::options().node_affinity(here, false).spawn().unwrap();
    let owner = Caller::options().node_affinity(b, false).spawn().unwrap();
    let inside = owner.fetch(maker.clone(), 14).unwrap().get().unwrap();
    check(
        wait_until(Duration::from_secs(20), || copies(&inside) == 2),
        "the blobs are here on a",
    );
    println!("KEPT");
    check(
        wait_until(Duration::from_secs(60), || copies(&ids) == 0),
        "freed once the borrower's node is declared dead",
    );
    check(
        wait_until(Duration::from_secs(30), || copies(&inside) == 0),
        "refs inside a result are freed once its owner's node is declared dead",
    );
    check(
        maker.made().unwrap().get().unwrap() == 1,
        "the holder lives on: the raylet freed the blobs, not its exit",
    );
    println!("ALL OK");
}

/// Puts a blob, names it, and holds it until it is killed (or, as a
/// deadline, until the test's release file appears).
fn role_killed() {
    let _c = prism::init().unwrap();
    let held = blob(5);
    let n = total::options()
        .resource("x", 1.0)
        .remote(vec![held.clone()])
        .unwrap();
    check(
        n.get().unwrap() == 2 * MB as u64,
        "read on b: a copy there too",
    );
    println!("HELD {}", held.id());
    hold_until_done();
    drop(held);
}

#[test]
#[ignore = "a job driver, started by the tests in this file with PRISM_TEST_ROLE"]
fn child_role() {
    match std::env::var("PRISM_TEST_ROLE")
        .expect("run by the tests in this file")
        .as_str()
    {
        "borrow" => role_borrow(),
        "killed" => role_killed(),
        "dead_node" => role_dead_node(),
        other => panic!("unknown role {other}"),
    }
}

/// A head alone, raylet a (the driver's, 1 CPU) and raylet b with `n` CPUs
/// and `n` of resource x; the driver's environment.
fn cluster(n: &str) -> (Sandbox, Node, Node, Node, Vec<(String, String)>) {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--head-only"]);
    let a = sb.start_raylet("a", &head, &["--num-cpus", "1"]);
    let x = format!(r#"{{"x": {n}}}"#);
    let b = sb.start_raylet("b", &head, &["--num-cpus", n, "--resources", &x]);
    assert!(wait_until(Duration::from_secs(10), || sb
        .nodes_in_state("alive")
        .len()
        == 2));
    let mut envs = sb.driver_envs(&head, &a);
    envs.push(("PRISM_TEST_TEMP".into(), sb.temp().display().to_string()));
    (sb, head, a, b, envs)
}

#[test]
fn borrowed_refs_are_freed_everywhere_once_every_holder_drops_them() {
    let (sb, _head, a, b, mut envs) = cluster("2");
    let mut job = Job::spawn("borrow", &envs);
    let (ok, out) = job.finish(Duration::from_secs(300));
    assert!(
        ok && out.contains("ALL OK"),
        "{out}\n--- a:\n{}\n--- b:\n{}",
        a.log(),
        b.log()
    );
    // What the driver still owned when it exited goes from every store.
    let held_by = |out: &str| -> Vec<String> {
        out.lines()
            .find_map(|l| l.strip_prefix("HELD "))
            .expect("the driver names what it holds")
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let held = held_by(&out);
    let listed = |held: &[String]| {
        let objects: Vec<Value> =
            serde_json::from_slice(&sb.run(&["list", "objects", "--json"]).stdout)
                .unwrap_or_default();
        objects
            .iter()
            .filter(|o| held.iter().any(|id| o["object_id"] == id.as_str()))
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(30), || listed(&held) == 0),
        "objects its driver still owned outlive it: {held:?}"
    );
    // A driver killed with SIGKILL: what it put goes from every store too.
    // (The release file is never made: the driver is killed holding.)
    let done = sb.temp().join("killed.done");
    envs.push(("PRISM_TEST_DONE".into(), done.display().to_string()));
    let mut job = Job::spawn("killed", &envs);
    assert!(
        wait_until(Duration::from_secs(60), || job.stdout().contains("HELD ")),
        "{}",
        job.stdout()
    );
    let held = held_by(&job.stdout());
    assert_eq!(listed(&held), 2, "the blob is on a and b");
    job.kill9();
    assert!(
        wait_until(Duration::from_secs(30), || listed(&held) == 0),
        "a put of a killed driver outlives it: {held:?}\n--- a:\n{}\n--- b:\n{}",
        a.log(),
        b.log()
    );
}

#[test]
fn a_dead_borrowers_node_gives_back_what_it_borrowed() {
    let (_sb, _head, a, mut b, envs) = cluster("1");
    let mut job = Job::spawn("dead_node", &envs);
    assert!(
        wait_until(Duration::from_secs(60), || job.stdout().contains("KEPT")),
        "{}",
        job.stdout()
    );
    b.kill9();
    let (ok, out) = job.finish(Duration::from_secs(120));
    assert!(ok && out.contains("ALL OK"), "{out}\n--- a:\n{}", a.log());
}
