//! The ssh provider against real OpenSSH servers: three `sshd`s on
//! 127.0.0.1 ports (a throwaway host key and user key) stand for three
//! machines. `prism up` copies `prism` to each by content hash, starts the
//! head on the first and a worker on each other over ssh (the token through
//! ssh's stdin), `prism status --cluster` sees 3 alive nodes with the
//! file's labels, a second `up` changes nothing, `prism exec` runs on the
//! head's machine; a task needing `{"accel": 1}` makes the autoscaler start
//! an `accel` node over ssh on the one idle host of `worker_ips`, the task
//! runs there, and the idle node is drained and removed; `prism down`
//! leaves no daemon. Skipped, saying why, where sshd cannot run (not
//! installed, not root).

use prism_test_support::*;

#[prism::remote]
fn where_am_i() -> String {
    prism::node_id().map(|n| n.to_string()).unwrap_or_default()
}

/// The job `prism submit` runs on the head's machine: one task that only
/// an `accel` node (which the autoscaler must start) can run.
#[test]
#[ignore = "a job driver, submitted by the test in this file"]
fn child_role() {
    let _c = prism::init().unwrap();
    let node = where_am_i::options()
        .resource("accel", 1.0)
        .remote()
        .unwrap()
        .get_timeout(Duration::from_secs(120))
        .unwrap();
    println!("RAN ON {node}");
}
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// The sshds and every daemon they started go on drop.
struct Machines {
    sshd: Vec<Child>,
    remote: PathBuf,
    sb_temp: PathBuf,
    file: PathBuf,
}

impl Drop for Machines {
    fn drop(&mut self) {
        let _ = Command::new(prism_bin())
            .args(["down", self.file.to_str().unwrap(), "-y", "--temp-dir"])
            .arg(&self.sb_temp)
            .output();
        for d in std::fs::read_dir(self.remote.join("nodes"))
            .into_iter()
            .flatten()
            .flatten()
        {
            kill_daemons(&d.path());
        }
        for c in &mut self.sshd {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn why_not() -> Option<String> {
    if !Path::new("/usr/sbin/sshd").exists() {
        return Some(
            "/usr/sbin/sshd is not installed (scripts/test.sh installs openssh-server)".into(),
        );
    }
    // SAFETY: geteuid only reads the process' user id.
    if unsafe { libc::geteuid() } != 0 {
        return Some("sshd needs root for its privilege separation here".into());
    }
    None
}

fn keygen(path: &Path) {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "ssh-keygen");
}

fn start_sshd(dir: &Path, port: u16) -> Child {
    let cfg = dir.join(format!("sshd_{port}.conf"));
    std::fs::write(
        &cfg,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/hostkey\nAuthorizedKeysFile {d}/authorized_keys\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
             PermitRootLogin prohibit-password\nPidFile {d}/sshd_{port}.pid\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let _ = std::fs::create_dir_all("/run/sshd");
    let child = Command::new("/usr/sbin/sshd")
        .args(["-D", "-f"])
        .arg(&cfg)
        .arg("-E")
        .arg(dir.join(format!("sshd_{port}.log")))
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "sshd on {port} did not listen"
    );
    child
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn launcher_ssh_provider_starts_a_cluster_on_three_sshd_machines() {
    if let Some(why) = why_not() {
        println!("skipped: {why}");
        return;
    }
    let sb = Sandbox::new();
    let keys = sb.temp().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    keygen(&keys.join("hostkey"));
    keygen(&keys.join("userkey"));
    std::fs::copy(keys.join("userkey.pub"), keys.join("authorized_keys")).unwrap();
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let remote = sb.temp().join("remote");
    let file = sb.temp().join("cluster.yaml");
    std::fs::write(
        &file,
        format!(
            "cluster_name: demo
provider:
  type: ssh
  head_ip: 127.0.0.1:{}
  worker_ips: [127.0.0.1:{}, 127.0.0.1:{}, 127.0.0.1:{}]
  ssh_user: root
  ssh_private_key: {}
  remote_dir: {}
head:
  port: 0
  resources: {{num_cpus: 1, memory: 1G, object_store_memory: 256M}}
  labels: {{role: head}}
worker_groups:
  - name: cpu
    min: 2
    max: 2
    resources: {{num_cpus: 1, memory: 1G, object_store_memory: 256M}}
    labels: {{pool: cpu}}
  - name: accel
    min: 0
    max: 1
    resources: {{num_cpus: 1, memory: 1G, object_store_memory: 256M, custom: {{accel: 1}}}}
autoscaler:
  idle_timeout_s: 2
",
            ports[0],
            ports[1],
            ports[2],
            ports[3],
            keys.join("userkey").display(),
            remote.display()
        ),
    )
    .unwrap();
    let mut m = Machines {
        sshd: Vec::new(),
        remote: remote.clone(),
        sb_temp: sb.temp().to_path_buf(),
        file: file.clone(),
    };
    for p in &ports {
        m.sshd.push(start_sshd(&keys, *p));
    }
    let f = file.to_str().unwrap();

    let t = std::time::Instant::now();
    let up = sb.run(&["up", f, "-y"]);
    assert!(up.status.success(), "{}", text(&up));
    println!(
        "prism up of 1 + 2 ssh nodes: {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert!(
        text(&up).contains("Cluster demo is up (3 node(s)"),
        "{}",
        text(&up)
    );
    let bins: Vec<_> = std::fs::read_dir(remote.join("bin"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(
        bins.len(),
        1,
        "one copy of prism, by content hash: {bins:?}"
    );

    let status = sb.run(&["status", "--cluster", f, "--json"]);
    assert!(status.status.success(), "{}", text(&status));
    let v: Value = serde_json::from_slice(&status.stdout).unwrap();
    let alive: Vec<&Value> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["state"] == "alive")
        .collect();
    assert_eq!(alive.len(), 3, "{v:#}");
    let mut names: Vec<&str> = alive.iter().map(|n| n["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, vec!["demo/cpu-0", "demo/cpu-1", "demo/head"]);
    assert_eq!(
        alive
            .iter()
            .filter(|n| n["labels"]["pool"] == "cpu")
            .count(),
        2
    );

    let again = sb.run(&["up", f, "-y"]);
    assert!(text(&again).contains("already up"), "{}", text(&again));

    let exec = Command::new(prism_bin())
        .args(["exec", f, "--", "prism", "list", "nodes", "--json"])
        .env("PRISM_TEMP_DIR", sb.temp())
        .output()
        .unwrap();
    assert!(exec.status.success(), "{}", text(&exec));
    let listed: Vec<Value> = serde_json::from_slice(&exec.stdout).unwrap_or_default();
    assert_eq!(listed.len(), 3, "{}", text(&exec));

    // The autoscaler, on the pool's idle host (the fourth sshd).
    let me = std::env::current_exe().unwrap();
    let job = Command::new(prism_bin())
        .args([
            "submit",
            "--cluster",
            f,
            "--env",
            "PRISM_TEST_ROLE=accel",
            "--",
        ])
        .arg(&me)
        .args(["--ignored", "--exact", "child_role", "--nocapture"])
        .env("PRISM_TEMP_DIR", sb.temp())
        .output()
        .unwrap();
    let said = text(&job);
    assert!(job.status.success(), "{said}");
    let ran_on = said
        .lines()
        .find_map(|l| l.split_once("RAN ON ").map(|(_, n)| n.trim().to_string()))
        .unwrap_or_else(|| panic!("{said}"));
    let nodes = || -> Vec<Value> {
        let o = sb.run(&["status", "--cluster", f, "--json"]);
        serde_json::from_slice::<Value>(&o.stdout).unwrap_or_default()["nodes"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let accel = nodes()
        .into_iter()
        .find(|n| n["node_id"] == ran_on.as_str())
        .unwrap_or_else(|| panic!("no node {ran_on}"));
    assert_eq!(accel["name"], "demo/accel-0", "{accel:#}");
    assert!(
        remote.join("nodes/accel-0").exists(),
        "started over ssh in the remote directory"
    );
    let removed = wait_until(Duration::from_secs(60), || {
        nodes()
            .iter()
            .any(|n| n["node_id"] == ran_on.as_str() && n["death_reason"] == "drained (scale-down)")
            && daemon_pids(&remote.join("nodes/accel-0")).is_empty()
    });
    assert!(
        removed,
        "accel-0 was not drained away; autoscaler log:\n{}",
        std::fs::read_to_string(sb.temp().join("clusters/demo/autoscaler.log")).unwrap_or_default()
    );

    let pids: Vec<u32> = std::fs::read_dir(remote.join("nodes"))
        .unwrap()
        .flatten()
        .flat_map(|d| daemon_pids(&d.path()))
        .collect();
    assert_eq!(pids.len(), 3, "{pids:?}");
    let down = sb.run(&["down", f, "-y"]);
    assert!(down.status.success(), "{}", text(&down));
    assert!(
        text(&down).contains("Cluster demo is down"),
        "{}",
        text(&down)
    );
    assert!(
        pids.iter().all(|p| !process_running(*p)),
        "left running: {pids:?}"
    );
}
