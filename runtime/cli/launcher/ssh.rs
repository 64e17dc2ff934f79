//! The ssh provider: nodes on machines reached with the system's `ssh` and
//! `rsync` (no SSH library to trust with keys; their messages are passed
//! on as they are). On each machine the `prism` binary lives
//! under `<remote_dir>/bin/prism-<hash>`, copied once per version by
//! content hash, and each node in `<remote_dir>/nodes/<key>`. The join
//! token reaches a node through ssh's standard input, never a command line
//! (which every user of either machine could read).

use super::config::{ClusterConfig, Provider};
use super::local::Starting;
use super::plan::{self, NodeSpec};
use prism::session::ClusterInfo;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    /// Name or address.
    pub name: String,
    /// SSH port.
    pub port: u16,
}

/// The provider's settings for one cluster.
#[derive(Debug, Clone)]
pub struct Ssh {
    cluster: String,
    user: String,
    key: PathBuf,
    head: Host,
    workers: Vec<Host>,
    remote_dir: String,
    known_hosts: PathBuf,
    /// The worker keys `up` asks for, in the order hosts are given to them.
    worker_keys: Vec<String>,
    /// The autoscaler's nodes on the hosts beyond those.
    pool: super::ssh_pool::Pool,
    /// Where ssh keeps one shared connection per machine.
    control: PathBuf,
    /// Binaries already found on each machine during this command.
    binaries: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
}

/// `host` or `host:port`.
fn host(s: &str, default_port: u16) -> Host {
    match s.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => Host {
            name: h.to_string(),
            port: p.parse().unwrap_or(default_port),
        },
        _ => Host {
            name: s.to_string(),
            port: default_port,
        },
    }
}

/// Quotes `s` for a POSIX shell.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Ssh {
    /// The provider of `c` (None for another provider); `state_dir` is the
    /// launcher's local directory for the cluster.
    pub fn of(c: &ClusterConfig, state_dir: &Path) -> Option<Ssh> {
        let Provider::Ssh {
            head_ip,
            worker_ips,
            ssh_user,
            ssh_private_key,
            ssh_port,
            remote_dir,
        } = &c.provider
        else {
            return None;
        };
        Some(Ssh {
            cluster: c.cluster_name.clone(),
            user: ssh_user.clone(),
            key: ssh_private_key.clone(),
            head: host(head_ip, *ssh_port),
            workers: worker_ips.iter().map(|w| host(w, *ssh_port)).collect(),
            remote_dir: remote_dir
                .clone()
                .unwrap_or_else(|| format!("prism-{}", c.cluster_name)),
            known_hosts: state_dir.join("known_hosts"),
            control: state_dir.join("ssh-%C"),
            binaries: Default::default(),
            worker_keys: plan::desired(c)
                .into_keys()
                .filter(|k| k != "head")
                .collect(),
            pool: super::ssh_pool::Pool::new(state_dir),
        })
    }

    /// The machine of node `key`.
    pub fn host_of(&self, key: &str) -> Option<&Host> {
        if key == "head" {
            return Some(&self.head);
        }
        let i = self
            .worker_keys
            .iter()
            .position(|k| k == key)
            .or_else(|| self.pool.host_index(key))?;
        self.workers.get(i)
    }

    /// Whether the autoscaler has hosts to grow on (beyond the groups' min).
    pub fn has_pool(&self) -> bool {
        self.workers.len() > self.worker_keys.len()
    }

    fn node_dir(&self, key: &str) -> String {
        format!("{}/nodes/{key}", self.remote_dir)
    }

    /// `ssh … user@host` ready for a remote command.
    fn ssh(&self, h: &Host) -> Command {
        let mut c = Command::new("ssh");
        c.arg("-i")
            .arg(&self.key)
            .args(["-p", &h.port.to_string()])
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=accept-new",
            ])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .args(["-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"])
            // One connection per machine, reused by the next commands for a
            // minute: a handshake costs more than most of what we run.
            .args(["-o", "ControlMaster=auto", "-o", "ControlPersist=60"])
            .arg("-o")
            .arg(format!("ControlPath={}", self.control.display()))
            .arg(format!("{}@{}", self.user, h.name));
        c
    }

    /// Runs `script` on `h`; its stdout, or an error with its stderr.
    fn run(&self, h: &Host, script: &str, stdin: Option<&str>) -> anyhow::Result<String> {
        let mut c = self.ssh(h);
        c.arg(script)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn()?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            anyhow::bail!(
                "{}@{}:{}: {} ({})",
                self.user,
                h.name,
                h.port,
                String::from_utf8_lossy(&out.stderr).trim(),
                out.status
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The remote path of this `prism` binary, copied there if missing.
    pub fn binary(&self, h: &Host) -> anyhow::Result<String> {
        let at = format!("{}:{}", h.name, h.port);
        if let Some(b) = self
            .binaries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&at)
        {
            return Ok(b.clone());
        }
        let remote = self.copy_binary(h)?;
        self.binaries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(at, remote.clone());
        Ok(remote)
    }

    fn copy_binary(&self, h: &Host) -> anyhow::Result<String> {
        let exe = std::env::current_exe()?;
        let hash = prism::raylet::workers::file_hash(&exe)?;
        let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
        let remote = format!("{}/bin/prism-{hex}", self.remote_dir);
        let have = format!(
            "test -x {r} && echo yes || mkdir -p {d}",
            r = quote(&remote),
            d = quote(&format!("{}/bin", self.remote_dir))
        );
        if self.run(h, &have, None)?.trim() == "yes" {
            return Ok(remote);
        }
        // Streamed through ssh itself: no sftp subsystem needed there.
        let tmp = format!("{remote}.tmp");
        let mut c = self.ssh(h);
        c.arg(format!("cat > {}", quote(&tmp)))
            .stdin(std::fs::File::open(&exe)?)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let out = c.output()?;
        if !out.status.success() {
            anyhow::bail!(
                "cannot copy prism to {}:{}: {} ({})",
                h.name,
                h.port,
                String::from_utf8_lossy(&out.stderr).trim(),
                out.status
            );
        }
        self.run(
            h,
            &format!(
                "chmod +x {t} && mv {t} {r}",
                t = quote(&tmp),
                r = quote(&remote)
            ),
            None,
        )?;
        Ok(remote)
    }

    /// Whether node `key`'s daemon runs.
    pub fn live(&self, key: &str) -> bool {
        let Some(h) = self.host_of(key) else {
            return false;
        };
        let Ok(bin) = self.binary(h) else {
            return false;
        };
        let script = format!(
            "{} session-info --temp-dir {}",
            quote(&bin),
            quote(&self.node_dir(key))
        );
        self.run(h, &script, None)
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .is_some_and(|v| v["live"] == true)
    }

    /// Starts node `key` over ssh (`prism start` there returns once ready).
    pub fn start(
        &self,
        key: &str,
        spec: &NodeSpec,
        head: Option<&ClusterInfo>,
    ) -> anyhow::Result<Starting> {
        if self.host_of(key).is_none() {
            // A node the autoscaler adds: the first idle pool host.
            self.pool
                .assign(key, self.worker_keys.len(), self.workers.len());
        }
        let h = self.host_of(key).ok_or_else(|| {
            anyhow::anyhow!("no host for {key}: every host of provider.worker_ips is in use")
        })?;
        let bin = self.binary(h)?;
        let mut cmd = vec![quote(&bin), "start".into()];
        cmd.extend(spec.args.iter().map(|a| quote(a)));
        cmd.extend([
            "--temp-dir".into(),
            quote(&self.node_dir(key)),
            "--node-name".into(),
            quote(&format!("{}/{key}", self.cluster)),
            "--node-ip-address".into(),
            quote(&h.name),
        ]);
        if let Some(head) = head {
            cmd.extend(["--address".into(), quote(&head.head_address)]);
        }
        let env: String = spec
            .env
            .iter()
            .map(|(k, v)| format!("export {k}={}; ", quote(v)))
            .collect();
        let script = format!(
            "mkdir -p {d} && read -r PRISM_TOKEN; export PRISM_TOKEN; {env}exec {}",
            cmd.join(" "),
            d = quote(&self.node_dir(key))
        );
        let mut c = self.ssh(h);
        c.arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn()?;
        if let Some(mut pipe) = child.stdin.take() {
            let token = head.map(|h| h.token.as_str()).unwrap_or("");
            writeln!(pipe, "{token}")?;
        }
        Ok(Starting::new(key, child))
    }

    /// Stops node `key`'s daemon.
    pub fn stop(&self, key: &str) -> usize {
        let Some(h) = self.host_of(key) else { return 0 };
        let Ok(bin) = self.binary(h) else { return 0 };
        let script = format!(
            "{} stop --temp-dir {}",
            quote(&bin),
            quote(&self.node_dir(key))
        );
        let stopped = match self.run(h, &script, None) {
            Ok(out) if out.contains("Stopped") => 1,
            _ => 0,
        };
        self.pool.release(key);
        stopped
    }

    /// The head's address and token, read on the head's machine.
    pub fn head_info(&self) -> anyhow::Result<ClusterInfo> {
        let bin = self.binary(&self.head)?;
        let script = format!(
            "{} session-info --temp-dir {}",
            quote(&bin),
            quote(&self.node_dir("head"))
        );
        let v: serde_json::Value = serde_json::from_str(&self.run(&self.head, &script, None)?)?;
        match v.get("cluster") {
            Some(c) if !c.is_null() => Ok(serde_json::from_value(c.clone())?),
            _ => anyhow::bail!(
                "the cluster's head is not running on {}:{}; start it with `prism up`",
                self.head.name,
                self.head.port
            ),
        }
    }

    /// The dashboard's URL, if the head serves one.
    pub fn dashboard(&self) -> Option<String> {
        let bin = self.binary(&self.head).ok()?;
        let script = format!(
            "{} session-info --temp-dir {}",
            quote(&bin),
            quote(&self.node_dir("head"))
        );
        let v: serde_json::Value =
            serde_json::from_str(&self.run(&self.head, &script, None).ok()?).ok()?;
        v["dashboard"].as_str().map(str::to_string)
    }

    /// Runs the setup commands on every machine, and syncs the file mounts
    /// to it with rsync.
    pub fn prepare(&self, c: &ClusterConfig) -> anyhow::Result<()> {
        let mut hosts = vec![&self.head];
        hosts.extend(self.workers.iter());
        for h in hosts {
            for (from, to) in &c.file_mounts {
                let ssh = format!(
                    "ssh -i {} -p {} -o BatchMode=yes -o UserKnownHostsFile={} -o StrictHostKeyChecking=accept-new",
                    quote(&self.key.display().to_string()),
                    h.port,
                    quote(&self.known_hosts.display().to_string())
                );
                let status = Command::new("rsync")
                    .args(["-a", "-e", &ssh, from])
                    .arg(format!("{}@{}:{to}", self.user, h.name))
                    .status()?;
                if !status.success() {
                    anyhow::bail!(
                        "file_mounts: rsync of {from} to {}:{to} failed ({status})",
                        h.name
                    );
                }
            }
            for cmd in &c.setup_commands {
                self.run(h, cmd, None).map_err(|e| {
                    anyhow::anyhow!("setup command {cmd:?} failed: {e}; nothing was started")
                })?;
            }
        }
        Ok(())
    }

    /// Runs `command` (or, `interactive`, a login shell) on the head's
    /// machine, with `prism` on its PATH and the cluster's address in its
    /// environment (the token stays in the head's session, where the CLI
    /// and drivers there find it).
    pub fn exec_on_head(
        &self,
        command: &[String],
        interactive: bool,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let head = self.head_info()?;
        let bin = self.binary(&self.head)?;
        let bin_dir = format!("{}/bin", self.remote_dir);
        let run = if interactive {
            "exec \"${SHELL:-/bin/sh}\" -l".to_string()
        } else {
            let cmd: Vec<String> = command.iter().map(|a| quote(a)).collect();
            format!("exec {}", cmd.join(" "))
        };
        let script = format!(
            "ln -sf {bin} {dir}/prism && export PATH={dir}:\"$PATH\" PRISM_TEMP_DIR={node} PRISM_ADDRESS={addr} && {run}",
            bin = quote(&bin),
            dir = quote(&bin_dir),
            node = quote(&self.node_dir("head")),
            addr = quote(&head.head_address),
        );
        let mut c = self.ssh(&self.head);
        if interactive {
            c.arg("-t");
        }
        Ok(c.arg(script).status()?)
    }

    /// Every node key the provider may have started.
    pub fn node_keys(&self) -> Vec<String> {
        let mut keys = vec!["head".to_string()];
        keys.extend(self.worker_keys.iter().cloned());
        keys.extend(self.pool.keys());
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_may_carry_their_port_and_quoting_is_shell_safe() {
        assert_eq!(
            host("10.0.0.2:2201", 22),
            Host {
                name: "10.0.0.2".into(),
                port: 2201
            }
        );
        assert_eq!(
            host("node-a", 22),
            Host {
                name: "node-a".into(),
                port: 22
            }
        );
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
