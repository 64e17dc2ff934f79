//! The Slurm provider: the whole cluster is one batch job. `prism up`
//! writes an sbatch script from `cluster.yaml` — the head runs in the batch
//! step on the job's first node, each worker group is one `srun` step of
//! `min` tasks, each task a `prism start --block` node — submits it, and
//! waits until every node has joined; `prism down` cancels the job (its
//! script stops every node on the way out). Node directories are the local
//! provider's layout under the cluster's directory, which must be on a
//! file system the job's nodes share (as a Slurm home or scratch is), so
//! `--cluster cluster.yaml` works from the login node.

use super::config::{ClusterConfig, Provider};
use super::local::ClusterDir;
use super::plan;
use anyhow::{anyhow, bail, Context};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long `up` waits for the job to start and every node to join.
const UP_TIMEOUT: Duration = Duration::from_secs(180);

/// Quotes `s` for bash.
fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The sbatch script for `c` (pure: tested without Slurm).
pub fn script(c: &ClusterConfig, prism: &Path, dir: &ClusterDir) -> String {
    let nodes = plan::desired(c);
    let tasks = nodes.len();
    let mut s = String::from("#!/bin/bash\n");
    s += &format!("#SBATCH --job-name=prism-{}\n", c.cluster_name);
    s += &format!("#SBATCH --ntasks={tasks}\n");
    s += &format!("#SBATCH --output={}\n", dir.file("slurm-%j.out").display());
    if let Provider::Slurm {
        partition,
        time_limit,
        account,
        sbatch_args,
    } = &c.provider
    {
        if let Some(p) = partition {
            s += &format!("#SBATCH --partition={p}\n");
        }
        if let Some(t) = time_limit {
            s += &format!("#SBATCH --time={t}\n");
        }
        if let Some(a) = account {
            s += &format!("#SBATCH --account={a}\n");
        }
        for a in sbatch_args {
            s += &format!("#SBATCH {a}\n");
        }
    }
    s += "# Written by `prism up`; `prism down` cancels the job.\n";
    s += &format!("PRISM={}\n", q(&prism.display().to_string()));
    s += &format!("NODES={}\n", q(&dir.file("nodes").display().to_string()));
    s += &format!("NAME={}\n", q(&c.cluster_name));
    s += "export PRISM NODES NAME\n";
    for (k, v) in &c.env {
        s += &format!("export {k}={}\n", q(v));
    }
    s += "ip() { a=$(hostname -I 2>/dev/null | cut -d' ' -f1); echo \"${a:-127.0.0.1}\"; }\n";
    s += "stop_all() { for d in \"$NODES\"/*; do \"$PRISM\" stop --force --temp-dir \"$d\" >/dev/null 2>&1; done; }\n";
    s += "trap 'stop_all; exit 0' TERM INT\n";
    for cmd in &c.setup_commands {
        s += &format!("{cmd}\n");
    }
    let head = &nodes["head"];
    let head_args: Vec<String> = head.args.iter().map(|a| q(a)).collect();
    s += "mkdir -p \"$NODES/head\"\n";
    s += &format!(
        "\"$PRISM\" start {} --node-ip-address \"$(ip)\" --temp-dir \"$NODES/head\" --node-name \"$NAME/head\" --block &\n",
        head_args.join(" ")
    );
    s += "for _ in $(seq 600); do\n";
    s += "  eval \"$(\"$PRISM\" session-info --shell --temp-dir \"$NODES/head\")\"\n";
    s += "  [ -n \"${PRISM_ADDRESS:-}\" ] && break; sleep 0.1\n";
    s += "done\n";
    s += "[ -n \"${PRISM_ADDRESS:-}\" ] || { echo 'the head did not start' >&2; stop_all; exit 1; }\n";
    s += "export PRISM_ADDRESS PRISM_TOKEN\n";
    for g in &c.worker_groups {
        if g.min == 0 {
            continue;
        }
        let spec = plan::group_spec(c, &g.name).expect("the group is in the file");
        let args: Vec<String> = spec.args.iter().map(|a| q(a)).collect();
        // One step per group; each task is node `<group>-<task index>`.
        let node = format!(
            "a=$(hostname -I 2>/dev/null | cut -d\" \" -f1); exec \"$PRISM\" start --address \"$PRISM_ADDRESS\" {} --node-ip-address \"${{a:-127.0.0.1}}\" --temp-dir \"$NODES/{g}-$SLURM_PROCID\" --node-name \"$NAME/{g}-$SLURM_PROCID\" --block",
            args.join(" "),
            g = g.name
        );
        s += &format!(
            "srun --overlap --ntasks={} --kill-on-bad-exit=0 --export=ALL bash -c {} &\n",
            g.min,
            q(&node)
        );
    }
    s += "wait\n";
    s
}

fn job_file(dir: &ClusterDir) -> std::path::PathBuf {
    dir.file("slurm_job")
}

/// The cluster's job id, if one was submitted.
pub fn job_id(dir: &ClusterDir) -> Option<String> {
    std::fs::read_to_string(job_file(dir))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The job's state (`PENDING`, `RUNNING`, …), or `None` once it is gone.
fn job_state(id: &str) -> anyhow::Result<Option<String>> {
    let out = Command::new("squeue")
        .args(["-h", "-j", id, "-o", "%T"])
        .output()
        .context("cannot run squeue (is Slurm installed here?)")?;
    let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok((!state.is_empty()).then_some(state))
}

/// `prism up` with the Slurm provider.
pub fn up(c: &ClusterConfig, dir: &ClusterDir, nodes_expected: usize) -> anyhow::Result<()> {
    if let Some(id) = job_id(dir) {
        if let Some(state) = job_state(&id)? {
            println!(
                "Cluster {} is already up as Slurm job {id} ({}); nothing to do.",
                c.cluster_name,
                state.to_lowercase()
            );
            return Ok(());
        }
    }
    std::fs::create_dir_all(dir.file("nodes"))?;
    let prism = std::env::current_exe()?;
    let path = dir.file("job.sbatch");
    std::fs::write(&path, script(c, &prism, dir))?;
    let began = Instant::now();
    let out = Command::new("sbatch")
        .arg("--parsable")
        .arg(&path)
        .output()
        .context("cannot run sbatch (is Slurm installed here?)")?;
    if !out.status.success() {
        bail!(
            "sbatch refused {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let id = String::from_utf8_lossy(&out.stdout)
        .trim()
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    std::fs::write(job_file(dir), &id)?;
    println!("  submitted Slurm job {id} ({})", path.display());
    // Up when every node has joined the head.
    loop {
        if began.elapsed() > UP_TIMEOUT {
            bail!(
                "Slurm job {id} did not bring up {nodes_expected} node(s) within {UP_TIMEOUT:?} (squeue -j {id}; its output: {})",
                dir.file(&format!("slurm-{id}.out")).display()
            );
        }
        match job_state(&id)? {
            None => bail!(
                "Slurm job {id} ended before the cluster was up; its output: {}",
                dir.file(&format!("slurm-{id}.out")).display()
            ),
            Some(s) if s == "RUNNING" => {
                if let Ok(n) = alive_nodes(dir) {
                    if n >= nodes_expected {
                        break;
                    }
                }
            }
            Some(_) => {}
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    println!(
        "Cluster {} is up as Slurm job {id} ({nodes_expected} node(s), {:.2} s).",
        c.cluster_name,
        began.elapsed().as_secs_f64()
    );
    Ok(())
}

fn alive_nodes(dir: &ClusterDir) -> anyhow::Result<usize> {
    let head = crate::status::HeadSession::connect(&dir.head_info()?)?;
    let st = head.rt.block_on(head.client.status())?;
    Ok(st
        .nodes
        .iter()
        .filter(|n| n.state == prism::proto::common::NodeState::Alive)
        .count())
}

/// `prism down` with the Slurm provider: cancels the job and waits until
/// it is gone.
pub fn down(c: &ClusterConfig, dir: &ClusterDir) -> anyhow::Result<()> {
    let Some(id) = job_id(dir) else {
        println!(
            "Cluster {} has no Slurm job; nothing to stop.",
            c.cluster_name
        );
        return Ok(());
    };
    if job_state(&id)?.is_some() {
        let st = Command::new("scancel")
            .arg(&id)
            .status()
            .context("cannot run scancel")?;
        if !st.success() {
            return Err(anyhow!("scancel {id} failed ({st})"));
        }
        let began = Instant::now();
        while job_state(&id)?.is_some() {
            if began.elapsed() > Duration::from_secs(60) {
                bail!("Slurm job {id} is still there 60 s after scancel");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let _ = std::fs::remove_file(job_file(dir));
    println!(
        "Cluster {} stopped (Slurm job {id} cancelled).",
        c.cluster_name
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_runs_the_head_then_one_step_per_group_with_quoted_values() {
        let yaml = "cluster_name: hpc\nprovider:\n  type: slurm\n  partition: gpu\n  time_limit: '1:00:00'\n\
                    head:\n  resources: {num_cpus: 2}\nworker_groups:\n  - name: cpu\n    min: 3\n    max: 3\n    labels: {pool: cpu}\n\
                    env:\n  GREETING: \"it's\"\n";
        let c: ClusterConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let dir = ClusterDir::new(Path::new("/shared/prism"), "hpc");
        let s = script(&c, Path::new("/opt/prism"), &dir);
        assert!(s.contains("#SBATCH --ntasks=4\n"), "{s}");
        assert!(s.contains("#SBATCH --partition=gpu\n") && s.contains("#SBATCH --time=1:00:00\n"));
        assert!(s.contains("export GREETING='it'\\''s'\n"), "{s}");
        assert!(s.contains("--temp-dir \"$NODES/head\""));
        assert!(s.contains("srun --overlap --ntasks=3"), "{s}");
        assert!(s.contains("--labels") && s.contains("pool=cpu"), "{s}");
        assert!(
            !s.contains("PRISM_TOKEN="),
            "the token is never written into the script"
        );
    }
}
