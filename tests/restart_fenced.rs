//! An actor's restart the head placed on a node that is then declared dead
//! before the constructor came up (head + raylets b and c, which alone have
//! resource `x`): the node, let go, fences the constructor, and the head
//! places the same restart again (DF-6, AT-5) — here on that node's new
//! incarnation, the only `x` node left, once it registers — instead of
//! declaring the actor dead.

use prism_test_support::*;
use std::path::Path;
use std::time::Duration;

#[prism::actor]
struct Held {
    node: String,
}

#[prism::actor]
impl Held {
    /// While `hold` exists, a constructor notes its pid in `<hold>.<pid>`
    /// and waits (at most 120 s) for the file to go.
    fn new(hold: String) -> Self {
        if Path::new(&hold).exists() {
            let _ = std::fs::write(format!("{hold}.{}", std::process::id()), "");
            wait_until(Duration::from_secs(120), || !Path::new(&hold).exists());
        }
        Held {
            node: std::env::var("PRISM_NODE_ID").unwrap_or_default(),
        }
    }
    fn node(&self) -> String {
        self.node.clone()
    }
}

/// The node id a task's worker reports as its own.
#[prism::remote]
fn node_of_worker() -> String {
    prism::node_id().map(|n| n.to_string()).unwrap_or_default()
}

fn restart_role() {
    let hold = std::env::var("PRISM_TEST_HOLD").unwrap();
    let kept = Held::options()
        .resource("x", 1.0)
        .max_restarts(2)
        .max_task_retries(2)
        .spawn(hold)
        .unwrap();
    let first = kept.node().unwrap().get().unwrap();
    // A task on the other `x` node (the survivor) leaves an idle worker
    // of this job there.
    let other = prism::cluster::nodes()
        .unwrap()
        .into_iter()
        .find(|n| n.node_id.to_string() != first && n.total.0.iter().any(|r| r.name == "x"))
        .expect("a second x node")
        .node_id;
    let there = node_of_worker::options()
        .node_affinity(other, false)
        .remote()
        .unwrap()
        .get()
        .unwrap();
    check(
        there == other.to_string(),
        "the task ran on the other x node",
    );
    println!("VICTIM {first}");
    // Calls wait while the actor restarts; each try is bounded.
    let mut answer = String::new();
    let back = wait_until(Duration::from_secs(180), || {
        answer = kept
            .node()
            .and_then(|r| r.get_timeout(Duration::from_secs(10)))
            .unwrap_or_default();
        !answer.is_empty() && answer != first
    });
    check(back, "the actor came back on another node");
    println!("ANSWERED {answer}");
    // The survivor registered again: a task there runs on a worker that
    // reports its new id, not on the idle one from before.
    let now = node_of_worker::options()
        .resource("x", 0.5)
        .remote()
        .unwrap()
        .get()
        .unwrap();
    println!("TASK ON {now}");
    println!("ALL OK");
}

#[test]
#[ignore = "a job driver, started by the test in this file with PRISM_TEST_ROLE"]
fn child_role() {
    let _c = prism::init().unwrap();
    match std::env::var("PRISM_TEST_ROLE").unwrap().as_str() {
        "restart" => restart_role(),
        other => panic!("unknown role {other}"),
    }
}

/// The pids of the constructors that wait on `hold`.
fn held_pids(hold: &Path) -> Vec<u32> {
    let name = hold.file_name().unwrap().to_string_lossy().to_string();
    let dir = std::fs::read_dir(hold.parent().unwrap()).unwrap();
    dir.filter_map(|e| e.ok())
        .filter_map(|e| {
            let f = e.file_name().to_string_lossy().to_string();
            f.strip_prefix(&format!("{name}."))?.parse().ok()
        })
        .collect()
}

#[test]
fn a_restart_fenced_before_its_actor_came_up_is_placed_again() {
    let sb = Sandbox::new();
    let (head, b, c) = sb.head_and_two_x_nodes();
    let hold = sb.temp().join("hold");
    let hold_env = hold.display().to_string();
    let (mut job, _done) =
        sb.held_driver_with("restart", &head, &head, &[("PRISM_TEST_HOLD", &hold_env)]);
    let line = Sandbox::line_of(&job, "VICTIM ", Duration::from_secs(60));
    let line = line.unwrap_or_else(|| panic!("no victim named:\n{}", job.stdout()));
    let victim = line.trim_start_matches("VICTIM ").to_string();
    let (mut dead, survivor) = if b.node_id() == victim {
        (b, c)
    } else {
        (c, b)
    };
    // From here on constructors wait; the victim's node dies, and the
    // head restarts the actor on the survivor, the only `x` node left.
    std::fs::write(&hold, "").unwrap();
    dead.kill9();
    let mut first = Vec::new();
    let started = wait_until(Duration::from_secs(60), || {
        first = held_pids(&hold);
        !first.is_empty()
    });
    assert!(started, "no restart began\n--- head:\n{}", head.log());
    let pid = first[0];
    // The survivor is frozen until declared dead, its constructor waiting.
    let old_id = survivor.node_id();
    survivor.signal(libc::SIGSTOP);
    let declared = wait_until(Duration::from_secs(30), || {
        sb.nodes_in_state("dead")
            .iter()
            .any(|n| n["node_id"] == old_id.as_str())
    });
    survivor.signal(libc::SIGCONT);
    assert!(declared, "{:#}", sb.status());
    // Let go, it fences the constructor, registers again, and the head
    // places the restart on its new incarnation.
    let fenced = wait_until(Duration::from_secs(30), || !process_running(pid));
    assert!(
        fenced,
        "the fenced constructor (pid {pid}) still runs\n--- survivor:\n{}",
        survivor.log()
    );
    let again = wait_until(Duration::from_secs(60), || {
        held_pids(&hold)
            .iter()
            .any(|p| *p != pid && process_running(*p))
    });
    assert!(
        again,
        "the restart was not placed again\n--- head:\n{}\n--- survivor:\n{}",
        head.log(),
        survivor.log()
    );
    std::fs::remove_file(&hold).unwrap();
    let (ok, out) = job.finish(Duration::from_secs(120));
    assert!(
        ok && out.contains("ALL OK"),
        "{out}\n--- head:\n{}\n--- survivor:\n{}",
        head.log(),
        survivor.log()
    );
    // It answered from the survivor's new incarnation.
    let answered = out
        .lines()
        .find_map(|l| l.strip_prefix("ANSWERED "))
        .unwrap_or_default();
    assert!(
        !answered.is_empty() && answered != victim && answered != old_id,
        "{out}"
    );
    let task_on = out
        .lines()
        .find_map(|l| l.strip_prefix("TASK ON "))
        .unwrap_or_default();
    assert_eq!(
        task_on, answered,
        "a task's worker reports the node's id now"
    );
}
