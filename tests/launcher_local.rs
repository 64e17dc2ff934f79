//! `prism up | down | exec cluster.yaml` with the local provider, on the
//! repository's own cluster.yaml: 1 head + 2 workers come up with the
//! file's labels, a second `up` changes nothing and says so, a killed node
//! is started again, `exec` runs a command connected to the cluster,
//! `down` leaves no process; and a broken file starts nothing and says
//! where it is broken.

use prism_test_support::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

/// Every daemon under the cluster's node directories is killed on drop,
/// whatever the test did.
struct Launched<'a> {
    sb: &'a Sandbox,
    file: PathBuf,
}

impl Launched<'_> {
    fn nodes_dir(&self) -> PathBuf {
        self.sb.temp().join("clusters/demo/nodes")
    }

    fn node_dirs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.nodes_dir())
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    fn pids(&self) -> Vec<u32> {
        self.node_dirs()
            .iter()
            .flat_map(|d| daemon_pids(d))
            .collect()
    }

    fn run(&self, cmd: &str, extra: &[&str]) -> Output {
        let file = self.file.to_str().unwrap();
        let mut args = vec![cmd, file];
        args.extend_from_slice(extra);
        self.sb.run(&args)
    }
}

impl Drop for Launched<'_> {
    fn drop(&mut self) {
        let _ = self.run("down", &["-y"]);
        for d in self.node_dirs() {
            kill_daemons(&d);
        }
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn status(l: &Launched) -> Value {
    let o =
        l.sb.run(&["status", "--cluster", l.file.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn alive(l: &Launched) -> Vec<Value> {
    status(l)["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["state"] == "alive")
        .cloned()
        .collect()
}

#[test]
fn launcher_up_is_idempotent_restarts_the_dead_and_down_leaves_nothing() {
    let sb = Sandbox::new();
    let file = sb.temp().join("cluster.yaml");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster.yaml"),
        &file,
    )
    .unwrap();
    let l = Launched { sb: &sb, file };

    let up = l.run("up", &["-y"]);
    assert!(up.status.success(), "{}", text(&up));
    assert!(
        text(&up).contains("Cluster demo is up (3 node(s)"),
        "{}",
        text(&up)
    );
    let nodes = alive(&l);
    assert_eq!(nodes.len(), 3, "{nodes:#?}");
    let labels: Vec<String> = nodes.iter().map(|n| n["labels"].to_string()).collect();
    assert_eq!(
        labels
            .iter()
            .filter(|l| l.contains("\"pool\":\"cpu\""))
            .count(),
        2,
        "{labels:?}"
    );
    assert_eq!(
        labels
            .iter()
            .filter(|l| l.contains("\"role\":\"head\""))
            .count(),
        1,
        "{labels:?}"
    );
    let names: Vec<&str> = nodes.iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert!(
        names.contains(&"demo/cpu-0") && names.contains(&"demo/head"),
        "{names:?}"
    );
    let mut ids: Vec<String> = nodes.iter().map(|n| n["node_id"].to_string()).collect();
    ids.sort();

    // A second up changes nothing and says so.
    let again = l.run("up", &["-y"]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("already up"), "{}", text(&again));
    let mut same: Vec<String> = alive(&l).iter().map(|n| n["node_id"].to_string()).collect();
    same.sort();
    assert_eq!(ids, same, "the same nodes");

    // A killed worker is started again by the next up; the rest are kept.
    let victim = l.nodes_dir().join("cpu-1");
    assert_eq!(kill_daemons(&victim).len(), 1);
    assert!(wait_until(Duration::from_secs(10), || daemon_pids(&victim).is_empty()));
    let heal = l.run("up", &["-y"]);
    assert!(heal.status.success(), "{}", text(&heal));
    let out = text(&heal);
    assert!(
        out.contains("cpu-1        started") && out.contains("cpu-0        already running"),
        "{out}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || alive(&l).len() == 3),
        "{:#?}",
        status(&l)
    );

    // exec: a command connected to the cluster.
    let o = std::process::Command::new(prism_bin())
        .args([
            "exec",
            l.file.to_str().unwrap(),
            "--",
            prism_bin().to_str().unwrap(),
            "list",
            "nodes",
            "--json",
        ])
        .env("PRISM_TEMP_DIR", sb.temp())
        .env_remove("PRISM_ADDRESS")
        .env_remove("PRISM_TOKEN")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let listed: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert!(listed.len() >= 3, "{listed:#?}");

    // What the launcher did is in the head's audit trail.
    let trail = l.sb.run(&[
        "audit",
        "--cluster",
        l.file.to_str().unwrap(),
        "--action",
        "cluster",
        "--json",
    ]);
    let trail = text(&trail);
    assert_eq!(
        trail.matches("\"action\":\"cluster.up\"").count(),
        2,
        "{trail}"
    );

    // down: every daemon goes.
    let pids = l.pids();
    assert_eq!(pids.len(), 3, "{pids:?}");
    let down = l.run("down", &["-y"]);
    assert!(down.status.success(), "{}", text(&down));
    assert!(
        text(&down).contains("Cluster demo is down (3 daemon(s) stopped)"),
        "{}",
        text(&down)
    );
    assert!(
        pids.iter().all(|p| !process_running(*p)),
        "left running: {pids:?}"
    );
    assert!(text(&l.run("down", &["-y"])).contains("not running"));
}

#[test]
fn launcher_a_broken_file_starts_nothing_and_says_where() {
    let sb = Sandbox::new();
    let original =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster.yaml"))
            .unwrap();
    let cases = [
        (
            original.replacen("max: 4", "max: ten", 1),
            ": worker_groups[0].max: invalid type: string \"ten\", expected u32",
        ),
        (
            original.replacen("  type: local", "  type: cloud", 1),
            "provider.type: unknown variant `cloud`, expected one of `local`, `ssh`, `slurm`",
        ),
        (
            original.replacen("min: 2", "min: 9", 1),
            ": worker_groups[0].min: 9 is above max (4)",
        ),
        (
            original.replacen("    min: 2\n", "    min: 2\n    replicas: 2\n", 1),
            "unknown field `replicas`",
        ),
    ];
    for (i, (yaml, want)) in cases.iter().enumerate() {
        let file = sb.temp().join(format!("broken{i}.yaml"));
        std::fs::write(&file, yaml).unwrap();
        let o = sb.run(&["up", file.to_str().unwrap(), "-y"]);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.starts_with(&format!("error: {}", file.display())),
            "{err}"
        );
        assert!(err.contains(want), "case {i}: want {want:?} in {err}");
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "{err}"
        );
    }
    assert!(!sb.temp().join("clusters").exists(), "nothing was started");
    // The line and column of the first case.
    let line = original.lines().position(|l| l.contains("max: 4")).unwrap() + 1;
    let o = sb.run(&["up", sb.temp().join("broken0.yaml").to_str().unwrap(), "-y"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("broken0.yaml:{line}:10: worker_groups[0].max")),
        "{err}"
    );
}
