//! The Slurm provider against a real Slurm: a private single-node Slurm
//! (slurmctld and slurmd from Debian's slurm-wlm, on free ports, with their
//! state in this test's temp dir; munge for authentication) runs the batch
//! job `prism up` submits. `prism status --cluster` sees the head and two
//! workers with the file's labels, a second `up` changes nothing, `prism
//! exec` reaches the cluster, and `prism down` cancels the job and leaves
//! no daemon; then the shipped `deploy/slurm/prism.sbatch`, submitted with
//! a job, brings up three nodes, runs the job on them and stops them all.
//! Skipped, saying why, where Slurm cannot run (not installed,
//! not root).

use prism_test_support::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// The private Slurm and the cluster go on drop.
struct Slurm {
    daemons: Vec<std::process::Child>,
    /// munged, when this test started it (stopped with the rest).
    munge: bool,
    conf: PathBuf,
    file: PathBuf,
    temp: PathBuf,
}

impl Slurm {
    fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", &self.conf);
        c
    }

    /// `prism <args>` in this test's temp dir (given before any `--`).
    fn prism(&self, args: &[&str]) -> Output {
        let cut = args.iter().position(|a| *a == "--").unwrap_or(args.len());
        self.cmd(prism_bin())
            .args(&args[..cut])
            .arg("--temp-dir")
            .arg(&self.temp)
            .args(&args[cut..])
            .env_remove("PRISM_ADDRESS")
            .env_remove("PRISM_TOKEN")
            .env("PRISM_DASHBOARD_PORT", "0")
            .output()
            .unwrap()
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        let _ = self.prism(&["down", self.file.to_str().unwrap(), "-y"]);
        let _ = self
            .cmd("scancel")
            .args(["--full", "--user", "root"])
            .output();
        for d in std::fs::read_dir(self.temp.join("clusters/hpc/nodes"))
            .into_iter()
            .flatten()
            .flatten()
        {
            kill_daemons(&d.path());
        }
        // slurmd first (its job steps end with it), then slurmctld; both
        // run in the foreground as this test's children, so they are reaped.
        for d in self.daemons.iter_mut().rev() {
            // SIGTERM lets each stop its own helpers (slurmscriptd, step
            // daemons); SIGKILL if it has not gone within 5 s.
            // SAFETY: kill(2) on a child of this test.
            unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
            let gone = wait_until(Duration::from_secs(5), || {
                d.try_wait().ok().flatten().is_some()
            });
            if !gone {
                let _ = d.kill();
                let _ = d.wait();
            }
        }
        if self.munge {
            let pid = std::fs::read_to_string("/run/munge/munged.pid").unwrap_or_default();
            if let Ok(pid) = pid.trim().parse::<i32>() {
                // SAFETY: kill(2) on the munged this test started.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
    }
}

fn why_not() -> Option<String> {
    for bin in [
        "slurmctld",
        "slurmd",
        "sbatch",
        "squeue",
        "scancel",
        "munged",
    ] {
        let found = ["/usr/sbin", "/usr/bin"]
            .iter()
            .any(|d| Path::new(d).join(bin).exists());
        if !found {
            return Some(format!(
                "{bin} is not installed (scripts/test.sh installs slurm-wlm and munge)"
            ));
        }
    }
    // SAFETY: geteuid only reads the process' user id.
    if unsafe { libc::geteuid() } != 0 {
        return Some("slurmd and munged need root here".into());
    }
    None
}

/// munged answers, starting it (with a key made for it) if it does not;
/// whether this test started it.
fn munge_ready() -> Result<bool, String> {
    let works = || {
        Command::new("sh")
            .args(["-c", "munge -n | unmunge >/dev/null 2>&1"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if works() {
        return Ok(false);
    }
    for d in [
        "/etc/munge",
        "/run/munge",
        "/var/lib/munge",
        "/var/log/munge",
    ] {
        let _ = std::fs::create_dir_all(d);
    }
    let key = Path::new("/etc/munge/munge.key");
    if !key.exists() {
        let bytes: Vec<u8> = (0..1024).map(|i| (i * 37 % 251) as u8 ^ 0x5a).collect();
        std::fs::write(key, bytes).map_err(|e| e.to_string())?;
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o400));
    }
    let out = Command::new("munged")
        .arg("--force")
        .output()
        .map_err(|e| e.to_string())?;
    if wait_until(Duration::from_secs(10), works) {
        Ok(true)
    } else {
        Err(format!(
            "munged did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn short_hostname() -> String {
    let out = Command::new("hostname").arg("-s").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn launcher_slurm_provider_runs_the_cluster_as_one_batch_job() {
    if let Some(why) = why_not() {
        eprintln!("skipped: {why}");
        return;
    }
    let started_munge = match munge_ready() {
        Ok(started) => started,
        Err(why) => {
            eprintln!("skipped: munge cannot run here: {why}");
            return;
        }
    };
    let sb = Sandbox::new();
    let dir = sb.temp().join("slurm");
    for d in ["state", "spool", "log"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let host = short_hostname();
    let conf = dir.join("slurm.conf");
    let d = dir.display();
    std::fs::write(
        &conf,
        format!(
            "ClusterName=prismtest\nSlurmctldHost={host}(127.0.0.1)\nSlurmctldPort={}\nSlurmdPort={}\n\
             AuthType=auth/munge\nProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n\
             JobAcctGatherType=jobacct_gather/none\nSelectType=select/cons_tres\n\
             SelectTypeParameters=CR_CPU\nSlurmdParameters=config_overrides\n\
             StateSaveLocation={d}/state\nSlurmdSpoolDir={d}/spool\n\
             SlurmctldPidFile={d}/slurmctld.pid\nSlurmdPidFile={d}/slurmd.pid\n\
             SlurmctldLogFile={d}/log/ctld.log\nSlurmdLogFile={d}/log/d.log\n\
             SlurmUser=root\nReturnToService=2\nMpiDefault=none\n\
             NodeName={host} NodeAddr=127.0.0.1 CPUs=8 State=UNKNOWN\n\
             PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP\n",
            free_port(),
            free_port()
        ),
    )
    .unwrap();
    let file = sb.temp().join("cluster.yaml");
    std::fs::write(
        &file,
        "cluster_name: hpc\nprovider:\n  type: slurm\n  time_limit: '10:00'\n\
         head:\n  resources: {num_cpus: 1}\n\
         worker_groups:\n  - name: cpu\n    min: 2\n    max: 2\n    resources: {num_cpus: 1}\n    labels: {pool: cpu}\n",
    )
    .unwrap();
    let mut slurm = Slurm {
        daemons: Vec::new(),
        munge: started_munge,
        conf,
        file: file.clone(),
        temp: sb.temp().to_path_buf(),
    };
    for daemon in ["slurmctld", "slurmd"] {
        let log = std::fs::File::create(dir.join(format!("log/{daemon}.out"))).unwrap();
        let child = slurm
            .cmd(daemon)
            .arg("-D")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        slurm.daemons.push(child);
    }
    let idle = wait_until(Duration::from_secs(30), || {
        let o = slurm
            .cmd("sinfo")
            .args(["-h", "-o", "%t"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim() == "idle"
    });
    if !idle {
        // Slurm itself cannot run in this environment (cgroups, hostnames):
        // that is not Prism's failure to test here.
        eprintln!(
            "skipped: the private Slurm did not come up:\n{}",
            std::fs::read_to_string(dir.join("log/ctld.log")).unwrap_or_default()
        );
        return;
    }

    let f = file.to_str().unwrap();
    let up = slurm.prism(&["up", f, "-y"]);
    let said = String::from_utf8_lossy(&up.stdout);
    assert!(
        up.status.success() && said.contains("is up as Slurm job"),
        "{said}\n{}",
        String::from_utf8_lossy(&up.stderr)
    );
    println!(
        "{}",
        said.lines()
            .find(|l| l.contains("is up"))
            .unwrap_or_default()
    );
    let st = slurm.prism(&["status", "--cluster", f, "--json"]);
    let st: Value = serde_json::from_slice(&st.stdout).unwrap();
    let nodes = st["nodes"].as_array().unwrap();
    let alive: Vec<&Value> = nodes.iter().filter(|n| n["state"] == "alive").collect();
    assert_eq!(alive.len(), 3, "{st:#}");
    assert_eq!(
        alive
            .iter()
            .filter(|n| n["labels"]["pool"] == "cpu")
            .count(),
        2,
        "{st:#}"
    );
    let again = slurm.prism(&["up", f, "-y"]);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("already up"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    let exec = slurm.prism(&[
        "exec",
        f,
        "--",
        prism_bin().to_str().unwrap(),
        "list",
        "nodes",
    ]);
    assert!(
        exec.status.success() && String::from_utf8_lossy(&exec.stdout).contains("alive"),
        "{}",
        String::from_utf8_lossy(&exec.stderr)
    );

    let down = slurm.prism(&["down", f, "-y"]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    let q = slurm.cmd("squeue").args(["-h"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&q.stdout).trim().is_empty(),
        "the job is gone"
    );
    let nodes_dir = sb.temp().join("clusters/hpc/nodes");
    let left = wait_until(Duration::from_secs(10), || {
        std::fs::read_dir(&nodes_dir)
            .into_iter()
            .flatten()
            .flatten()
            .all(|d| daemon_pids(&d.path()).is_empty())
    });
    assert!(left, "down leaves no prism daemon");

    // The shipped sbatch script on its own: the head and two raylets on
    // this one-node allocation, a job run on them (here `prism status`),
    // then nothing left and the job's status as the batch job's.
    let own = sb.temp().join("own");
    let out = sb.temp().join("own.out");
    let seen = sb.temp().join("own-status.json");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/slurm/prism.sbatch");
    let job = format!("\"$PRISM\" status --json > {}", seen.display());
    let o = slurm
        .cmd("sbatch")
        .args(["--wait", "--ntasks=3", "--ntasks-per-node=3", "--time=5"])
        .arg(format!("--output={}", out.display()))
        .arg(&script)
        .args(["sh", "-c", &job])
        .env("PRISM", prism_bin())
        .env("PRISM_TEMP_DIR", &own)
        .env("PRISM_PORT", "0")
        .env("PRISM_NODE_ARGS", "--num-cpus 1 --labels pool=own")
        .env("PRISM_DASHBOARD_PORT", "0")
        .env_remove("PRISM_ADDRESS")
        .env_remove("PRISM_TOKEN")
        .output()
        .unwrap();
    let log = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(
        o.status.success(),
        "{}\n{log}",
        String::from_utf8_lossy(&o.stderr)
    );
    let st: Value = serde_json::from_str(&std::fs::read_to_string(&seen).unwrap_or_default())
        .unwrap_or_else(|e| panic!("the job's status: {e}\n{log}"));
    let alive = st["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["state"] == "alive" && n["labels"]["pool"] == "own")
        .count();
    assert_eq!(alive, 3, "{st:#}");
    assert!(log.contains("Prism cluster up at"), "{log}");
    let left = wait_until(Duration::from_secs(10), || {
        std::fs::read_dir(&own)
            .into_iter()
            .flatten()
            .flatten()
            .all(|d| daemon_pids(&d.path()).is_empty())
    });
    assert!(left, "the script stops every node it started:\n{log}");
}
