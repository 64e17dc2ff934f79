//! Data residency against a real cluster: a head in `region=in-south`, a
//! raylet in `region=in-west` and one in `region=eu-west`. An object put
//! with the rule `region in [in-south, in-west]` is read by a task pinned
//! to in-west, but a task pinned to eu-west cannot read it — as an
//! argument or inside a value — and gets an error naming the rule; a put
//! whose own node is outside its rule stores nothing.

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

fn node(var: &str) -> NodeId {
    std::env::var(var).unwrap().parse().unwrap()
}

fn role_residency() {
    let _c = prism::init().unwrap();
    let (west, eu) = (node("PRISM_TEST_WEST"), node("PRISM_TEST_EU"));
    let rule = Residency::new("region", &["in-south", "in-west"]);
    let data: Vec<u64> = (1..=1000).collect();
    let r = prism::put_resident(&data, rule.clone()).unwrap();

    let ok = total::options()
        .node_affinity(west, false)
        .remote(&r)
        .unwrap();
    check(
        prism::get(&ok).unwrap() == 500_500,
        "a node inside the rule reads it",
    );

    let far = total::options()
        .node_affinity(eu, false)
        .remote(&r)
        .unwrap();
    let err = prism::get(&far).unwrap_err().to_string();
    println!("REFUSED ARG: {err}");
    check(
        err.contains("may only be on nodes with region in [in-south, in-west]")
            && err.contains("region=eu-west"),
        "a task pinned outside the rule cannot read it as an argument",
    );
    let inside = total_inside::options()
        .node_affinity(eu, false)
        .remote(vec![r.clone()])
        .unwrap();
    let err = prism::get(&inside).unwrap().unwrap_err();
    println!("REFUSED GET: {err}");
    check(
        err.contains("region in [in-south, in-west]"),
        "nor through a ref inside a value",
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
    println!("ALL OK");
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
    for line in out.lines().filter(|l| l.starts_with("REFUSED")) {
        eprintln!("{line}");
    }
}
