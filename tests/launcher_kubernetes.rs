//! `prism k8s manifests | secret cluster.yaml`: the shipped
//! `deploy/kubernetes/prism.yaml` is what the repository's cluster.yaml
//! makes, and it (and the Secret) pass the Kubernetes API schemas in strict
//! mode (kubernetes-validate, installed by scripts/test.sh; the test says
//! why it skips without it). No Kubernetes runs here, so the pods' own
//! commands are run as processes instead: the head container's arguments
//! and environment (the Secret's token and mounted CA) and a worker's make
//! a cluster whose readiness probes pass; the head "pod" killed and started
//! again recovers the cluster from its volume and the worker keeps its
//! node id; the worker's preStop hook drains its node, which then leaves.

use prism_test_support::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const K8S_VERSION: &str = "1.33.0";

fn prism(args: &[&str]) -> Output {
    Command::new(prism_bin())
        .args(args)
        .current_dir(REPO)
        .env("PRISM_CREDENTIALS", "/nonexistent")
        .stdin(Stdio::null())
        .output()
        .expect("run prism")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("a YAML document"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// kubernetes-validate from scripts/test.sh's `.tools/`, else the PATH.
fn validator() -> Option<Command> {
    let local = Path::new(REPO).join(".tools/k8s-validate");
    if local.join("complete").exists() {
        let mut c = Command::new("python3");
        c.args(["-m", "kubernetes_validate"])
            .env("PYTHONPATH", local);
        return Some(c);
    }
    let on_path = Command::new("kubernetes-validate")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    on_path.then(|| Command::new("kubernetes-validate"))
}

fn validate(file: &Path) -> Output {
    let mut c = validator().expect("a validator");
    c.args(["--strict", "-k", K8S_VERSION])
        .arg(file)
        .output()
        .expect("run kubernetes-validate")
}

#[test]
fn k8s_the_shipped_manifests_are_the_files_and_pass_the_kubernetes_schemas() {
    let made = prism(&["k8s", "manifests", "cluster.yaml"]);
    assert!(made.status.success(), "{}", text(&made));
    let shipped = Path::new(REPO).join("deploy/kubernetes/prism.yaml");
    let on_disk = std::fs::read_to_string(&shipped).unwrap_or_default();
    assert!(
        on_disk == String::from_utf8_lossy(&made.stdout),
        "deploy/kubernetes/prism.yaml is not what cluster.yaml makes; run\n  \
         cargo run -p prism-cli -- k8s manifests cluster.yaml -o deploy/kubernetes/prism.yaml"
    );
    let secret = prism(&["k8s", "secret", "cluster.yaml"]);
    assert!(secret.status.success(), "{}", text(&secret));
    if validator().is_none() {
        eprintln!(
            "skipped the schema check: kubernetes-validate is not installed \
             (scripts/test.sh installs it into .tools/k8s-validate with pip)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret.yaml");
    std::fs::write(&secret_file, &secret.stdout).unwrap();
    for f in [shipped.as_path(), secret_file.as_path()] {
        let o = validate(f);
        assert!(o.status.success(), "{}: {}", f.display(), text(&o));
    }
    // The check can fail: one misspelt field, and the file is refused.
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, on_disk.replacen("replicas:", "replicaz:", 1)).unwrap();
    let o = validate(&broken);
    assert!(!o.status.success(), "a misspelt field passed: {}", text(&o));
    assert!(text(&o).contains("replicaz"), "{}", text(&o));
}

/// A "pod": one container's command run as a process; killed on drop.
struct Pod {
    child: Option<Child>,
    log: PathBuf,
}

impl Pod {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, as the kubelet stops a container; waits for the exit.
    fn terminate(&mut self) -> bool {
        let Some(c) = self.child.as_mut() else {
            return true;
        };
        // SAFETY: kill(2) sends a signal to our own child process.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        wait_until(Duration::from_secs(30), || self.exited())
    }

    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some())
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// What a container of a Deployment runs: its arguments and environment
/// as the kubelet would make them (fieldRefs and the Secret's token
/// filled in; `$(VAR)` expanded).
struct Container {
    args: Vec<String>,
    env: BTreeMap<String, String>,
    spec: Value,
}

fn container(objects: &[Value], name: &str, pod: &str, token: &str) -> Container {
    let d = objects
        .iter()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no Deployment {name}"));
    let spec = d["spec"]["template"]["spec"]["containers"][0].clone();
    let mut env = BTreeMap::new();
    for e in spec["env"].as_array().unwrap() {
        let n = e["name"].as_str().unwrap().to_string();
        let v = if let Some(v) = e["value"].as_str() {
            v.to_string()
        } else if e["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP" {
            "127.0.0.1".into()
        } else if e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
            pod.into()
        } else if e["valueFrom"]["secretKeyRef"]["key"] == "token" {
            token.into()
        } else {
            panic!("an env var this test cannot fill: {e}")
        };
        env.insert(n, v);
    }
    let args = spec["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let mut a = a.as_str().unwrap().to_string();
            for (k, v) in &env {
                a = a.replace(&format!("$({k})"), v);
            }
            a
        })
        .collect();
    Container { args, env, spec }
}

impl Container {
    /// Replaces the value after `flag`.
    fn set(&mut self, flag: &str, value: &str) {
        let i = self.args.iter().position(|a| a == flag).expect(flag);
        self.args[i + 1] = value.to_string();
    }

    fn start(&self, log: &Path) -> Pod {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut c = Command::new(prism_bin());
        c.args(&self.args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&self.env)
            .env("PRISM_CREDENTIALS", "/nonexistent")
            .env("PRISM_HEARTBEAT_INTERVAL_MS", "100")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        Pod {
            child: Some(c.spawn().expect("start the container's command")),
            log: log.to_path_buf(),
        }
    }

    /// Runs one of its `sh -c` hooks (a probe, preStop) with its
    /// environment, `prism` on the PATH.
    fn hook(&self, command: &Value, port: u16) -> Output {
        let script = command[2]
            .as_str()
            .unwrap()
            .replace(":6379", &format!(":{port}"));
        let bin_dir = prism_bin().parent().unwrap().to_path_buf();
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Command::new("sh")
            .args(["-c", &script])
            .env_clear()
            .env("PATH", path)
            .envs(&self.env)
            .env("PRISM_CREDENTIALS", "/nonexistent")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn ready(&self, port: u16) -> Output {
        self.hook(&self.spec["readinessProbe"]["exec"]["command"], port)
    }
}

/// The head's address, from the session its volume holds.
fn head_port(volume: &Path) -> Option<u16> {
    std::fs::read_dir(volume).ok()?.flatten().find_map(|e| {
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(e.path().join("ready.json")).ok()?)
                .ok()?;
        v["head_address"].as_str()?.rsplit(':').next()?.parse().ok()
    })
}

fn node<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["name"] == name && n["state"] == "alive")
}

fn status(port: u16, token: &str) -> Value {
    let o = Command::new(prism_bin())
        .args([
            "status",
            "--json",
            "--address",
            &format!("127.0.0.1:{port}"),
        ])
        .env("PRISM_TOKEN", token)
        .env("PRISM_CREDENTIALS", "/nonexistent")
        .output()
        .unwrap();
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

#[test]
fn k8s_the_pods_commands_make_a_cluster_that_outlives_its_head_pod() {
    let sb = Sandbox::new();
    let root = sb.temp().to_path_buf();
    // The Secret, "mounted" as the head's identity directory.
    let secret = prism(&["k8s", "secret", "cluster.yaml"]);
    assert!(secret.status.success(), "{}", text(&secret));
    let data = docs(&String::from_utf8_lossy(&secret.stdout))[0]["stringData"].clone();
    let identity = root.join("identity");
    std::fs::create_dir_all(&identity).unwrap();
    for f in ["ca.pem", "ca.key", "token"] {
        std::fs::write(identity.join(f), data[f].as_str().unwrap()).unwrap();
    }
    let token = data["token"].as_str().unwrap().to_string();
    let made = prism(&["k8s", "manifests", "cluster.yaml"]);
    let objects = docs(&String::from_utf8_lossy(&made.stdout));

    let mut head = container(&objects, "demo-head", "demo-head-7f9c", &token);
    head.set("--identity", identity.to_str().unwrap());
    // Port 0: the test's; a restarted head takes its cluster's port again.
    head.set("--port", "0");
    head.set("--dashboard-port", "0");
    let volume = root.join("head-volume");
    head.env
        .insert("PRISM_TEMP_DIR".into(), volume.display().to_string());
    let head_log = root.join("head.log");
    let mut head_pod = head.start(&head_log);
    let mut port = 0;
    let up = wait_until(Duration::from_secs(30), || {
        port = head_port(&volume).unwrap_or(0);
        port != 0 && head.ready(port).status.success()
    });
    assert!(up, "the head pod never became ready:\n{}", head_pod.log());

    let mut worker = container(&objects, "demo-worker-cpu", "demo-worker-cpu-0", &token);
    worker
        .env
        .insert("PRISM_ADDRESS".into(), format!("127.0.0.1:{port}"));
    worker.env.insert(
        "PRISM_TEMP_DIR".into(),
        root.join("worker-dir").display().to_string(),
    );
    let mut worker_pod = worker.start(&root.join("worker.log"));
    let ready = wait_until(Duration::from_secs(30), || {
        worker.ready(port).status.success()
    });
    assert!(
        ready,
        "the worker pod never became ready:\n{}",
        worker_pod.log()
    );

    let s = status(port, &token);
    let w = node(&s, "demo-worker-cpu-0")
        .expect("the worker's node")
        .clone();
    assert_eq!(w["labels"]["pool"], "cpu", "{s:#}");
    assert_eq!(
        node(&s, "demo-head-7f9c").expect("the head's node")["labels"]["role"],
        "head"
    );
    let cluster_id = s["cluster_id"].clone();

    // The head pod dies (kill -9), then is stopped (SIGTERM, an eviction):
    // each time its replacement mounts the same volume and recovers the
    // cluster, and the worker's node comes back under its id.
    for how in ["killed", "stopped"] {
        if how == "killed" {
            head_pod.kill9();
        } else {
            assert!(head_pod.terminate(), "the head ignored SIGTERM");
        }
        let _ = std::fs::write(&head_log, "");
        head_pod = head.start(&head_log);
        let back = wait_until(Duration::from_secs(40), || {
            let s = status(port, &token);
            s["cluster_id"] == cluster_id
                && node(&s, "demo-worker-cpu-0").is_some_and(|n| n["node_id"] == w["node_id"])
                && head.ready(port).status.success()
                && head_pod.log().contains("Recovered cluster")
        });
        assert!(
            back,
            "the cluster was not recovered after its head pod was {how}:\n{}",
            head_pod.log()
        );
    }

    // Stopping the worker pod: its preStop hook drains the node first.
    let stop = &worker.spec["lifecycle"]["preStop"]["exec"]["command"];
    let o = worker.hook(stop, port);
    assert!(o.status.success(), "preStop: {}", text(&o));
    let left = wait_until(Duration::from_secs(30), || worker_pod.exited());
    assert!(
        left,
        "the drained raylet did not exit:\n{}",
        worker_pod.log()
    );
    let o = worker.ready(port);
    assert!(!o.status.success(), "a drained node is not ready");
    assert!(text(&o).contains("demo-worker-cpu-0"), "{}", text(&o));
}
