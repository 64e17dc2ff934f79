//! Actors on a real cluster (head with its raylet + a second raylet):
//! creation spilled to the node with the resource, calls across nodes, a
//! named detached actor that outlives its creator, the actor table in
//! `prism list actors`, and actors dying with their node.

use prism_test_support::*;
use std::time::Duration;

#[prism::actor]
struct Keeper {
    n: u64,
}

#[prism::actor]
impl Keeper {
    fn new(n: u64) -> Self {
        Keeper { n }
    }
    fn add(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }
    fn node(&self) -> String {
        std::env::var("PRISM_NODE_ID").unwrap_or_default()
    }
}

#[test]
#[ignore = "a job driver, started by the tests in this file with PRISM_TEST_ROLE"]
fn child_role() {
    let c = prism::init().unwrap();
    match std::env::var("PRISM_TEST_ROLE").unwrap().as_str() {
        "create" => {
            let k = Keeper::options()
                .name("keeper")
                .detached()
                .resource("b_only", 0.5)
                .spawn(5u64)
                .unwrap();
            check(
                k.node().unwrap().get().unwrap() != c.node_id().to_string(),
                "created on the other node",
            );
            let refs: Vec<_> = (0..1_000).map(|_| k.add(1u64).unwrap()).collect();
            let got = prism::get_all(&refs).unwrap();
            check(
                got == (6..=1_005).collect::<Vec<u64>>(),
                "1,000 calls across nodes in order",
            );
            let t = Keeper::options().name("temp").spawn(0u64).unwrap();
            t.ready().unwrap();
            let far = Keeper::options()
                .name("far_temp")
                .resource("b_only", 0.5)
                .spawn(0u64)
                .unwrap();
            check(
                far.node().unwrap().get().unwrap() != c.node_id().to_string(),
                "an owned actor on the other node",
            );
            println!("ALL OK");
        }
        "find" => {
            let k: prism::ActorHandle<Keeper> = prism::get_actor("keeper").unwrap();
            check(
                k.add(1u64).unwrap().get().unwrap() == 1_006,
                "the detached actor outlived its creator, found by name",
            );
            check(
                prism::get_actor::<Keeper>("temp").is_err(),
                "the owned actor died with its creator's job",
            );
            println!("ALL OK");
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn detached_named_actor_outlives_its_creator_and_dies_with_its_node() {
    let sb = Sandbox::new().with_env("PRISM_IDLE_TIMEOUT_MS", "3000");
    let head = sb.start_head(&["--num-cpus", "1"]);
    let mut b = sb.start_raylet(
        "b",
        &head,
        &["--num-cpus", "1", "--resources", r#"{"b_only": 1}"#],
    );
    assert!(wait_until(Duration::from_secs(10), || sb
        .nodes_in_state("alive")
        .len()
        == 2));
    let envs = sb.driver_envs(&head, &head);
    for role in ["create", "find"] {
        let mut job = Job::spawn(role, &envs);
        let (ok, out) = job.finish(Duration::from_secs(120));
        assert!(
            ok && out.contains("ALL OK"),
            "role {role}:\n{out}\n--- head:\n{}\n--- b:\n{}",
            head.log(),
            b.log()
        );
    }
    let actors = || -> Vec<serde_json::Value> {
        let out = sb.run(&["list", "actors", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    };
    let state_of = |name: &str| {
        actors().into_iter().find(|a| a["name"] == name).map(|a| {
            (
                a["state"].as_str().unwrap_or_default().to_string(),
                a["death_reason"].as_str().unwrap_or_default().to_string(),
            )
        })
    };
    assert_eq!(
        state_of("keeper").map(|s| s.0),
        Some("alive".into()),
        "{:#?}",
        actors()
    );
    let (state, why) = state_of("temp").unwrap();
    assert_eq!(state, "dead");
    assert!(why.contains("job ended"), "{why}");
    // On the other node too: that raylet learns of the job's end from the head.
    let far_dead = wait_until(Duration::from_secs(10), || {
        state_of("far_temp").is_some_and(|(s, w)| s == "dead" && w.contains("job ended"))
    });
    assert!(far_dead, "{:#?}", actors());
    b.kill9();
    let dead = wait_until(Duration::from_secs(15), || {
        state_of("keeper").is_some_and(|(s, w)| s == "dead" && w.contains("died"))
    });
    assert!(dead, "{:#?}", actors());
}
