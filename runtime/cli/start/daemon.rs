//! `prism start` without `--block`: the node as a detached daemon that
//! this command starts, waits for, and leaves running.

use super::{print_head_banner, session_for, StartArgs};
use anyhow::{anyhow, bail, Context};
use prism::session::{ClusterInfo, ReadyInfo, SessionDir};
use prism::Config;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Starts `prism start ... --block` as a detached daemon and waits until it is ready.
pub(super) fn daemonize(args: StartArgs) -> anyhow::Result<()> {
    let (session, recovered) = session_for(&args)?;
    // A recovered head's log goes on where the dead one's stopped.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(session.log_file())
        .with_context(|| format!("cannot create {}", session.log_file().display()))?;
    let exe = std::env::current_exe().context("cannot find the prism executable")?;
    // The token travels in the environment, not in argv (readable by every
    // local user through /proc/<pid>/cmdline).
    let mut argv: Vec<String> = Vec::new();
    let mut args_in = std::env::args().skip(1);
    while let Some(a) = args_in.next() {
        if a == "--token" {
            args_in.next();
        } else if !a.starts_with("--token=") {
            argv.push(a);
        }
    }
    argv.push("--block".into());
    argv.push("--session-dir".into());
    argv.push(session.path().display().to_string());
    let mut cmd = std::process::Command::new(exe);
    cmd.args(&argv)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if let Some(token) = &args.token {
        cmd.env("PRISM_TOKEN", token);
    }
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid is async-signal-safe and touches no memory of the
        // forked child; it detaches the daemon from this terminal's session.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().context("cannot start the daemon")?;
    let waited = wait_ready(&args, &session, &mut child);
    if waited.is_err() {
        // Never leave a daemon behind that this command could not confirm,
        // nor a session directory that looks like a node (its log's last
        // lines are in the error); a recovered one keeps its state.
        let _ = child.kill();
        let _ = child.wait();
        if !recovered {
            let _ = std::fs::remove_dir_all(session.path());
        }
    }
    waited
}

/// The lines of a failed daemon's log worth showing: its error first, then
/// the last log lines, without backtrace frames (which bury the cause when
/// `RUST_BACKTRACE` is set).
fn failure_lines(log: &str) -> Vec<&str> {
    let is_frame = |l: &str| {
        let t = l.trim_start();
        t.starts_with("at ")
            || t.split_once(": ")
                .is_some_and(|(n, _)| n.parse::<u32>().is_ok())
            || t.starts_with("stack backtrace")
            || t.starts_with("note: ")
    };
    let lines: Vec<&str> = log.lines().filter(|l| !is_frame(l)).collect();
    let mut out: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("error: "))
        .copied()
        .collect();
    let tail = lines.len().saturating_sub(15);
    out.extend(lines[tail..].iter().filter(|l| !l.starts_with("error: ")));
    out
}

fn wait_ready(
    args: &StartArgs,
    session: &SessionDir,
    child: &mut std::process::Child,
) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let deadline = Instant::now() + Duration::from_millis(config.start_timeout_ms);
    loop {
        if let Some(ready) = session.read_json::<ReadyInfo>("ready.json")? {
            let info: ClusterInfo = session
                .read_json("cluster.json")?
                .ok_or_else(|| anyhow!("daemon is ready but wrote no cluster.json"))?;
            if args.head {
                if let Some(what) = &ready.recovered {
                    println!(
                        "Recovered cluster {what} from {}.",
                        session.file("head.db").display()
                    );
                }
                print_head_banner(
                    &info.head_address,
                    &info.token,
                    ready.dashboard.as_deref(),
                    session,
                );
            } else {
                println!(
                    "Prism raylet {} joined the cluster at {}; address {}.",
                    ready.node_id.as_deref().unwrap_or("?"),
                    info.head_address,
                    ready.node_address.as_deref().unwrap_or("?")
                );
                println!("Logs: {}", session.log_file().display());
            }
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(session.log_file()).unwrap_or_default();
            bail!(
                "the {} daemon exited ({status}) before it was ready. Its log:\n{}",
                args.kind(),
                failure_lines(&log).join("\n")
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the {} daemon was not ready within {} ms; see {}",
                args.kind(),
                config.start_timeout_ms,
                session.log_file().display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
