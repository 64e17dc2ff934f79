//! Shared by the access tests: a real head with users, the `prism` CLI as
//! each of them, jobs submitted as them, and the dashboard over HTTP.

#![allow(dead_code)] // each test binary uses some of these

use prism_test_support::*;
use serde_json::Value;
use std::process::Output;
use std::time::Duration;

#[prism::remote]
pub fn one() -> u64 {
    1
}

#[prism::actor]
struct Holder {
    /// A copy in the store made by the actor's worker (a worker's copies
    /// are listed as its job's, as a driver's are).
    _kept: prism::ObjectRef<Vec<u8>>,
}

#[prism::actor]
impl Holder {
    fn new() -> Self {
        Holder {
            _kept: prism::put(&vec![9u8; 256 << 10]).unwrap(),
        }
    }
    fn ping(&self) -> u64 {
        1
    }
}

/// A head with users, and the `prism` CLI as each of them.
pub struct Cluster {
    pub sb: Sandbox,
    pub head: Node,
    pub addr: String,
}

impl Cluster {
    /// `prism ARGS` as `user` (its token in PRISM_USER_TOKEN), or as the
    /// head's admin (the session's join token) when `user` is `None`.
    pub fn run(&self, user: Option<&str>, args: &[&str]) -> Output {
        let mut c = self.sb.cmd(args);
        if let Some(token) = user {
            c.env("PRISM_USER_TOKEN", token)
                .env("PRISM_ADDRESS", &self.addr);
        }
        c.stdin(std::process::Stdio::null()).output().unwrap()
    }

    pub fn ok(&self, user: Option<&str>, args: &[&str]) -> String {
        let out = self.run(user, args);
        assert!(
            out.status.success(),
            "prism {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn refused(&self, user: Option<&str>, args: &[&str], why: &str) {
        let out = self.run(user, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "prism {args:?} should be refused");
        assert!(
            err.contains(why),
            "prism {args:?}: expected {why:?} in {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }

    pub fn add_user(&self, name: &str, role: &str, ns: &[&str]) -> String {
        let mut args = vec!["user", "add", name, "--role", role];
        for n in ns {
            args.extend(["--namespace", n]);
        }
        self.ok(None, &args).trim().to_string()
    }

    /// Submits the holding driver as `user` into `ns`; returns the job id.
    pub fn submit(&self, user: &str, ns: &str, done: &str) -> Output {
        let exe = std::env::current_exe().unwrap();
        let exe = exe.to_str().unwrap();
        let env = format!("PRISM_TEST_DONE={done}");
        // `--temp-dir` must come before `--` (Sandbox::cmd puts it last).
        let mut c = std::process::Command::new(prism_bin());
        c.args(["submit", "--temp-dir"]).arg(self.sb.temp());
        c.args(["--no-wait", "--namespace", ns, "--env", &env, "--", exe]);
        c.args(["--ignored", "--exact", "child_role", "--nocapture"]);
        c.env_remove("PRISM_TOKEN")
            .envs(self.sb.envs.iter().cloned());
        c.env("PRISM_USER_TOKEN", user)
            .env("PRISM_ADDRESS", &self.addr);
        c.stdin(std::process::Stdio::null()).output().unwrap()
    }

    pub fn job_state(&self, job: &str) -> String {
        let jobs: Value = serde_json::from_str(&self.ok(None, &["job", "list", "--json"])).unwrap();
        let row = jobs.as_array().unwrap().iter().find(|j| j["job_id"] == job);
        row.map_or("absent".into(), |j| {
            j["state"].as_str().unwrap().to_string()
        })
    }

    pub fn audit(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["audit", "--json"];
        all.extend_from_slice(args);
        self.ok(None, &all)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// The same user token with one digit of its secret changed.
pub fn with_a_wrong_secret(token: &str) -> String {
    let at = token.find('@').unwrap() + 1;
    let first = &token[at..at + 1];
    let other = if first == "0" { "1" } else { "0" };
    format!("{}{other}{}", &token[..at], &token[at + 1..])
}

pub fn start() -> Cluster {
    start_with(&[])
}

pub fn start_with(extra: &[&str]) -> Cluster {
    let sb = Sandbox::new();
    let mut args = vec!["--num-cpus", "4"];
    args.extend_from_slice(extra);
    let head = sb.start_head(&args);
    let (addr, _) = head.cluster();
    Cluster { sb, head, addr }
}

/// The body of each access test binary's `child_role`: a driver that
/// runs a task, an actor and a training run, so that its job has rows in
/// each table (and workers with logs) for the tests to look at.
pub fn child_main() {
    let _c = prism::init().unwrap();
    assert_eq!(one::remote().unwrap().get().unwrap(), 1);
    let holder = Holder::options().num_cpus(0.0).spawn().unwrap();
    assert_eq!(holder.ping().unwrap().get().unwrap(), 1);
    // A copy in the store made by the driver, listed as this job's.
    let _object = prism::put(&vec![7u8; 256 << 10]).unwrap();
    let ns = std::env::var("PRISM_NAMESPACE").unwrap_or_default();
    let point = prism::proto::runs::RunPoint {
        step: 1,
        values: vec![("loss".into(), 0.5)],
        seconds: 1.0,
    };
    prism::report_run(&format!("run-{ns}"), "mlp", vec![point]).unwrap();
    prism::metrics::counter("tenant_hits", &[("ns", &ns)]).inc();
    println!("started");
    hold_until_done();
}

/// `(status, body)` of a dashboard request with a bearer token or a cookie.
pub fn http(method: &str, url: &str, bearer: Option<&str>, cookie: Option<&str>) -> (u16, String) {
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let mut req = agent.request(method, url).timeout(Duration::from_secs(30));
    if let Some(t) = bearer {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    if let Some(c) = cookie {
        req = req.set("Cookie", c);
    }
    match req.call() {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

/// Logs in through the form; returns the session cookie (`name=value`).
pub fn login(base: &str, token: &str) -> Result<String, (u16, String)> {
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let r = agent
        .post(&format!("{base}/login"))
        .timeout(Duration::from_secs(30))
        .send_form(&[("token", token), ("next", "/jobs")]);
    match r {
        Ok(r) => {
            let set = r
                .header("Set-Cookie")
                .expect("a session cookie")
                .to_string();
            Ok(set.split(';').next().unwrap().to_string())
        }
        Err(ureq::Error::Status(code, r)) => Err((code, r.into_string().unwrap_or_default())),
        Err(e) => panic!("login: {e}"),
    }
}

/// The rows of `prism list TABLE --json` as `user` (or the admin).
pub fn rows(c: &Cluster, user: Option<&str>, table: &str) -> Vec<Value> {
    serde_json::from_str(&c.ok(user, &["list", table, "--json"])).unwrap()
}

/// The job ids of a JSON array of rows (`/api/v0/*` pages hold them
/// under `rows`).
pub fn job_ids(v: &Value) -> Vec<String> {
    let rows = v.get("rows").unwrap_or(v);
    let mut ids: Vec<String> = rows
        .as_array()
        .unwrap_or_else(|| panic!("no rows in {v}"))
        .iter()
        .map(|r| r["job_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}
