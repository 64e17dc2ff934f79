//! `prism stop`: signals exactly the daemons this machine started, found
//! through their session directories' pid files (checked against the
//! process start time, so a reused pid is never signalled).

use crate::TempDirArg;
use prism::session::{process_alive, DaemonInfo, SessionDir};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct StopArgs {
    /// Send SIGKILL at once instead of SIGTERM first.
    #[arg(long)]
    force: bool,
    /// Seconds to wait for a clean exit before SIGKILL.
    #[arg(long, default_value_t = 10)]
    grace: u64,
    #[command(flatten)]
    temp: TempDirArg,
}

/// True while the daemon runs (a zombie has exited).
fn running(d: &DaemonInfo) -> bool {
    process_alive(d.pid, d.start_time)
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) only sends a signal; the pid was checked against its start time.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

pub fn run(args: StopArgs) -> anyhow::Result<()> {
    let s = stop_in(
        &args.temp.temp_dir,
        args.force,
        Duration::from_secs(args.grace),
    );
    if s.stale > 0 {
        println!(
            "Cleaned up {} session(s) of daemons that had died.",
            s.stale
        );
    }
    match s.stopped {
        0 => println!("No Prism daemons are running on this machine."),
        n => println!(
            "Stopped {n} Prism daemon(s){}.",
            if s.killed > 0 {
                format!(" ({} needed SIGKILL)", s.killed)
            } else {
                String::new()
            }
        ),
    }
    Ok(())
}

/// What [`stop_in`] did.
#[derive(Debug, Default)]
pub struct Stopped {
    /// Daemons stopped.
    pub stopped: usize,
    /// Of those, how many needed SIGKILL.
    pub killed: usize,
    /// Sessions of dead daemons cleaned up.
    pub stale: usize,
}

/// Stops the daemons whose sessions are in `temp` (raylets first): SIGTERM
/// (or SIGKILL with `force`), then SIGKILL after `grace`.
pub fn stop_in(temp: &std::path::Path, force: bool, grace: Duration) -> Stopped {
    let mut daemons: Vec<(SessionDir, DaemonInfo)> = Vec::new();
    let mut stale = 0;
    for s in SessionDir::list(temp) {
        match s.read_json::<DaemonInfo>("daemon.json") {
            Ok(Some(d)) if running(&d) => daemons.push((s, d)),
            // A daemon that died without `prism stop` (kill -9, a crash):
            // its ready file and sockets would mislead the next driver.
            Ok(Some(_)) => stale += usize::from(s.clear_stale()),
            Ok(None) if !s.is_live() => stale += usize::from(s.clear_stale()),
            Ok(None) => {}
            Err(e) => eprintln!("skipping {}: {e}", s.path().display()),
        }
    }
    // Raylets first, so they unregister while their head still listens.
    daemons.sort_by_key(|(_, d)| d.kind == "head");
    for (_, d) in &daemons {
        signal(d.pid, if force { libc::SIGKILL } else { libc::SIGTERM });
    }
    let deadline = Instant::now() + grace;
    while daemons.iter().any(|(_, d)| running(d)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut killed = 0;
    for (s, d) in &daemons {
        if running(d) {
            signal(d.pid, libc::SIGKILL);
            killed += 1;
        }
        s.clear_stale();
    }
    Stopped {
        stopped: daemons.len(),
        killed,
        stale,
    }
}
