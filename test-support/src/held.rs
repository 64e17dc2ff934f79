//! Drivers that hold until the test releases them, and a raylet stopped
//! under one.

use crate::{wait_until, Job, Node, Sandbox};
use std::path::PathBuf;
use std::time::Duration;

impl Sandbox {
    /// A head started with `head_args` and a raylet `b` with `b_args`,
    /// once the head lists both alive.
    pub fn head_and_b(&self, head_args: &[&str], b_args: &[&str]) -> (Node, Node) {
        let head = self.start_head(head_args);
        let b = self.start_raylet("b", &head, b_args);
        let alive = wait_until(Duration::from_secs(10), || {
            self.nodes_in_state("alive").len() == 2
        });
        assert!(alive, "head and b alive\n--- b:\n{}", b.log());
        (head, b)
    }

    /// The head (two CPUs, no `x`) and raylets b and c, which alone have
    /// resource `x` (2 each), once the head lists all three alive.
    pub fn head_and_two_x_nodes(&self) -> (Node, Node, Node) {
        let head = self.start_head(&["--num-cpus", "2"]);
        let x = ["--num-cpus", "2", "--resources", r#"{"x": 2}"#];
        let b = self.start_raylet("b", &head, &x);
        let c = self.start_raylet("c", &head, &x);
        let up = wait_until(Duration::from_secs(10), || {
            self.nodes_in_state("alive").len() == 3
        });
        assert!(up, "{:#}", self.status());
        (head, b, c)
    }

    /// The first line of `job`'s output that starts with `prefix`, once it
    /// prints one (at most `timeout`).
    pub fn line_of(job: &Job, prefix: &str, timeout: Duration) -> Option<String> {
        let mut line = None;
        wait_until(timeout, || {
            line = job
                .stdout()
                .lines()
                .find(|l| l.starts_with(prefix))
                .map(String::from);
            line.is_some()
        });
        line
    }

    /// A driver of `role` joining at `head` through `raylet`, which holds
    /// ([`crate::hold_until_done`]) until the test creates the returned file.
    pub fn held_driver(&self, role: &str, head: &Node, raylet: &Node) -> (Job, PathBuf) {
        self.held_driver_with(role, head, raylet, &[])
    }

    /// [`Sandbox::held_driver`] with extra environment.
    pub fn held_driver_with(
        &self,
        role: &str,
        head: &Node,
        raylet: &Node,
        extra: &[(&str, &str)],
    ) -> (Job, PathBuf) {
        let done = self.temp().join(format!("{role}.done"));
        let mut envs = self.driver_envs(head, raylet);
        envs.push(("PRISM_TEST_DONE".into(), done.display().to_string()));
        envs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        (Job::spawn(role, &envs), done)
    }

    /// Runs a held driver of `role` through `raylet` and stops that raylet
    /// (SIGSTOP) while the role works without it: the role prints `STOP ME`
    /// and holds; the raylet is stopped and the role released; when it
    /// prints `CONT ME` the raylet is continued. It must end with ALL OK.
    /// A sandbox whose dead timeout is shorter than the stop would have
    /// the raylet declared dead, and its actors fenced when it is let go.
    pub fn run_with_raylet_stopped(
        &self,
        role: &str,
        head: &Node,
        raylet: &Node,
        extra: &[(&str, &str)],
    ) {
        let (mut job, done) = self.held_driver_with(role, head, raylet, extra);
        let said = |what: &str| job.stdout().contains(what);
        let asked = wait_until(Duration::from_secs(60), || said("STOP ME"));
        assert!(asked, "{}\n--- raylet:\n{}", job.stdout(), raylet.log());
        raylet.signal(libc::SIGSTOP);
        std::fs::write(&done, "").unwrap();
        let reached = wait_until(Duration::from_secs(60), || said("CONT ME"));
        raylet.signal(libc::SIGCONT);
        assert!(reached, "{}", job.stdout());
        let (ok, out) = job.finish(Duration::from_secs(90));
        assert!(
            ok && out.contains("ALL OK"),
            "{out}\n--- raylet:\n{}",
            raylet.log()
        );
    }
}
