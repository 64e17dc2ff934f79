//! `prism stop`: signals exactly the daemons this machine started, found
//! through their session directories' pid files (checked against the
//! process start time, so a reused pid is never signalled).

use crate::TempDirArg;
use prism::session::{process_start_time, DaemonInfo, SessionDir};
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
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", d.pid)).unwrap_or_default();
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    process_start_time(d.pid) == Some(d.start_time)
        && !matches!(state, Some("Z") | Some("X") | None)
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) only sends a signal; the pid was checked against its start time.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

pub fn run(args: StopArgs) -> anyhow::Result<()> {
    let mut daemons: Vec<(SessionDir, DaemonInfo)> = Vec::new();
    for s in SessionDir::list(&args.temp.temp_dir) {
        match s.read_json::<DaemonInfo>("daemon.json") {
            Ok(Some(d)) if running(&d) => daemons.push((s, d)),
            Ok(Some(_)) => s.remove("daemon.json"),
            Ok(None) => {}
            Err(e) => eprintln!("skipping {}: {e}", s.path().display()),
        }
    }
    // Raylets first, so they unregister while their head still listens.
    daemons.sort_by_key(|(_, d)| d.kind == "head");
    for (_, d) in &daemons {
        signal(
            d.pid,
            if args.force {
                libc::SIGKILL
            } else {
                libc::SIGTERM
            },
        );
    }
    let deadline = Instant::now() + Duration::from_secs(args.grace);
    while daemons.iter().any(|(_, d)| running(d)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut killed = 0;
    for (s, d) in &daemons {
        if running(d) {
            signal(d.pid, libc::SIGKILL);
            killed += 1;
        }
        s.remove("daemon.json");
        s.remove("ready.json");
    }
    match daemons.len() {
        0 => println!("No Prism daemons are running on this machine."),
        n => println!(
            "Stopped {n} Prism daemon(s){}.",
            if killed > 0 {
                format!(" ({killed} needed SIGKILL)")
            } else {
                String::new()
            }
        ),
    }
    Ok(())
}
