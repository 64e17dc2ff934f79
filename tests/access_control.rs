//! Users, roles, namespaces and the audit trail against a real head: each
//! role tries each action through the `prism` CLI with its own token
//! (allowed works; refused gets the precise sentence and changes nothing),
//! a revoked token stops working at once on a connection opened before,
//! and `prism audit verify` finds a byte flipped in head.db, before and
//! after the head is killed and recovers.

use prism::client::{ClientError, HeadClient};
use prism::proto::head::{ErrorKind, HeadRequest, HeadResponse};
use prism::token::{Credential, UserToken};
use prism::transport::quic::QuicEndpoint;
use prism::transport::Endpoint;
use prism::Config;
use prism_test_support::*;
use serde_json::Value;
use std::process::Output;
use std::time::Duration;

#[prism::remote]
fn one() -> u64 {
    1
}

#[prism::actor]
struct Holder;

#[prism::actor]
impl Holder {
    fn new() -> Self {
        Holder
    }
    fn ping(&self) -> u64 {
        1
    }
}

#[test]
#[ignore = "a job driver, started by `prism submit` in the tests in this file"]
fn child_role() {
    let _c = prism::init().unwrap();
    // A task, an actor and a training run, so that the job has rows in
    // each table (and workers with logs) for the tests to look at.
    assert_eq!(one::remote().unwrap().get().unwrap(), 1);
    let holder = Holder::options().num_cpus(0.0).spawn().unwrap();
    assert_eq!(holder.ping().unwrap().get().unwrap(), 1);
    let ns = std::env::var("PRISM_NAMESPACE").unwrap_or_default();
    let point = prism::proto::runs::RunPoint {
        step: 1,
        values: vec![("loss".into(), 0.5)],
        seconds: 1.0,
    };
    prism::report_run(&format!("run-{ns}"), "mlp", vec![point]).unwrap();
    println!("started");
    hold_until_done();
}

struct Cluster {
    sb: Sandbox,
    head: Node,
    addr: String,
}

impl Cluster {
    /// `prism ARGS` as `user` (its token in PRISM_USER_TOKEN), or as the
    /// head's admin (the session's join token) when `user` is `None`.
    fn run(&self, user: Option<&str>, args: &[&str]) -> Output {
        let mut c = self.sb.cmd(args);
        if let Some(token) = user {
            c.env("PRISM_USER_TOKEN", token)
                .env("PRISM_ADDRESS", &self.addr);
        }
        c.stdin(std::process::Stdio::null()).output().unwrap()
    }

    fn ok(&self, user: Option<&str>, args: &[&str]) -> String {
        let out = self.run(user, args);
        assert!(
            out.status.success(),
            "prism {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn refused(&self, user: Option<&str>, args: &[&str], why: &str) {
        let out = self.run(user, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "prism {args:?} should be refused");
        assert!(
            err.contains(why),
            "prism {args:?}: expected {why:?} in {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }

    fn add_user(&self, name: &str, role: &str, ns: &[&str]) -> String {
        let mut args = vec!["user", "add", name, "--role", role];
        for n in ns {
            args.extend(["--namespace", n]);
        }
        self.ok(None, &args).trim().to_string()
    }

    /// Submits the holding driver as `user` into `ns`; returns the job id.
    fn submit(&self, user: &str, ns: &str, done: &str) -> Output {
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

    fn job_state(&self, job: &str) -> String {
        let jobs: Value = serde_json::from_str(&self.ok(None, &["job", "list", "--json"])).unwrap();
        let row = jobs.as_array().unwrap().iter().find(|j| j["job_id"] == job);
        row.map_or("absent".into(), |j| {
            j["state"].as_str().unwrap().to_string()
        })
    }

    fn audit(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["audit", "--json"];
        all.extend_from_slice(args);
        self.ok(None, &all)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// The same user token with one digit of its secret changed.
fn with_a_wrong_secret(token: &str) -> String {
    let at = token.find('@').unwrap() + 1;
    let first = &token[at..at + 1];
    let other = if first == "0" { "1" } else { "0" };
    format!("{}{other}{}", &token[..at], &token[at + 1..])
}

fn start() -> Cluster {
    start_with(&[])
}

fn start_with(extra: &[&str]) -> Cluster {
    let sb = Sandbox::new();
    let mut args = vec!["--num-cpus", "4"];
    args.extend_from_slice(extra);
    let head = sb.start_head(&args);
    let (addr, _) = head.cluster();
    Cluster { sb, head, addr }
}

#[test]
fn each_role_does_what_it_may_and_is_refused_the_rest_with_a_trail() {
    let c = start();
    let done = c.sb.temp().join("release").display().to_string();
    let alice = c.add_user("alice", "developer", &["vision"]);
    let bob = c.add_user("bob", "developer", &["ads"]);
    let vera = c.add_user("vera", "viewer", &["*"]);
    c.ok(
        None,
        &[
            "role",
            "add",
            "submitter",
            "--permission",
            "jobs:submit",
            "--permission",
            "state:read",
        ],
    );
    let sam = c.add_user("sam", "submitter", &["ads"]);
    let (alice, bob, vera, sam) = (alice.as_str(), bob.as_str(), vera.as_str(), sam.as_str());
    assert!(c
        .ok(Some(alice), &["user", "whoami"])
        .starts_with("alice (developer in vision)"));
    // With no address, a person's token goes to this machine's head.
    let mut local = c.sb.cmd(&["user", "whoami"]);
    let out = local.env("PRISM_USER_TOKEN", alice).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with("alice (developer in vision)"),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Everyone reads state.
    for who in [alice, bob, vera, sam] {
        assert!(
            c.ok(Some(who), &["status"]).contains("ALIVE")
                || c.ok(Some(who), &["status", "--json"]).contains("nodes")
        );
    }
    // Submitting: into a granted namespace works; elsewhere, or as a viewer, is refused.
    let out = c.submit(alice, "vision", &done);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let out = c.submit(bob, "vision", &done);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bob (developer in ads) may not submit job"),
        "{err}"
    );
    assert!(
        err.contains("in namespace vision: namespace vision was not granted to bob"),
        "{err}"
    );
    let out = c.submit(vera, "vision", &done);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "vera (viewer in *) may not upload a job binary: the role lacks permission jobs:submit"
        ),
        "{err}"
    );
    let running = wait_until(Duration::from_secs(60), || c.job_state(&job) == "running");
    assert!(running, "{}", c.ok(None, &["job", "list", "--json"]));

    // Stopping someone else's job is refused and changes nothing.
    let refusal = format!("bob (developer in ads) may not stop job {job} in namespace vision: the role lacks permission jobs:stop-any");
    c.refused(Some(bob), &["job", "stop", &job], &refusal);
    c.refused(
        Some(vera),
        &["job", "stop", &job],
        "lacks permission jobs:stop",
    );
    c.refused(
        Some(sam),
        &["job", "stop", &job],
        "lacks permission jobs:stop",
    );
    assert_eq!(c.job_state(&job), "running");
    // Bob sees only his namespace; the viewer sees every one.
    assert!(!c.ok(Some(bob), &["job", "list", "--json"]).contains(&job));
    assert!(c.ok(Some(vera), &["job", "list", "--json"]).contains(&job));
    // Cluster-wide actions are the admin's.
    let node = c.head.node_id();
    c.refused(
        Some(alice),
        &["drain", &node],
        "the role lacks permission nodes:manage",
    );
    c.refused(
        Some(alice),
        &["user", "add", "eve", "--role", "admin"],
        "lacks permission users:manage",
    );
    c.refused(
        Some(vera),
        &["user", "list"],
        "lacks permission users:manage",
    );
    c.refused(Some(alice), &["audit"], "lacks permission audit:read");
    c.refused(
        None,
        &["user", "add", "x y", "--role", "viewer"],
        "invalid user name",
    );
    c.refused(
        None,
        &["user", "add", "zed", "--role", "pilot"],
        "unknown role \"pilot\"",
    );
    // Alice stops her own job.
    c.ok(Some(alice), &["job", "stop", &job]);
    assert!(wait_until(Duration::from_secs(30), || c.job_state(&job) == "stopped"));
    std::fs::write(&done, "").unwrap();

    // The trail: who did what from where, refusals included, chained.
    let mine = c.audit(&["--user", "bob", "--action", "job"]);
    let seen: Vec<(&str, &str)> = mine
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["outcome"].as_str().unwrap().split(':').next().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen, vec![("job.submit", "denied"), ("job.stop", "denied")]);
    assert!(mine[0]["origin"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    let all = c.audit(&[]);
    let has = |user: &str, action: &str, outcome: &str| {
        all.iter().any(|e| {
            e["user"] == user
                && e["action"] == action
                && e["outcome"].as_str().unwrap().starts_with(outcome)
        })
    };
    assert!(has("admin", "user.add", "ok") && has("admin", "role.add", "ok"));
    assert!(has("alice", "job.submit", "ok") && has("alice", "job.stop", "ok"));
    assert!(has("alice", "node.drain", "denied") && has("cluster", "node.join", "ok"));
    assert!(c
        .ok(None, &["audit", "verify"])
        .contains("audit trail intact"));
}

#[test]
fn a_revoked_token_stops_at_once_and_a_flipped_byte_in_the_trail_is_found() {
    let mut c = start();
    let bob_token = c.add_user("bob", "developer", &["ads"]);
    let carol = c.add_user("carol", "viewer", &[]);

    // Bob opens a connection before the revocation.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let token: UserToken = bob_token.parse().unwrap();
    let head_addr = c.addr.parse().unwrap();
    let (ep, client) = rt.block_on(async {
        let ep = QuicEndpoint::client([127, 0, 0, 1].into()).unwrap();
        let client =
            HeadClient::connect_as(&ep, head_addr, &Credential::User(token), &Config::default())
                .await
                .unwrap();
        (ep, client)
    });
    assert!(matches!(
        rt.block_on(client.request(&HeadRequest::ListJobs)),
        Ok(HeadResponse::Jobs(_))
    ));
    assert!(c
        .ok(None, &["user", "revoke", "bob"])
        .contains("revoked bob"));
    match rt.block_on(client.request(&HeadRequest::ListJobs)) {
        Err(ClientError::Refused {
            kind: ErrorKind::Forbidden,
            message,
        }) => {
            assert!(
                message.contains("the token of user bob was revoked"),
                "{message}"
            )
        }
        other => panic!("the open connection still works after the revocation: {other:?}"),
    }
    c.refused(
        Some(&bob_token),
        &["status"],
        "the token of user bob was revoked",
    );
    let wrong = with_a_wrong_secret(&bob_token);
    c.refused(Some(&wrong), &["status"], "invalid user token for \"bob\"");
    client.close();
    ep.close();

    // A byte flipped in head.db's trail is named by verify.
    assert!(c.ok(None, &["audit", "verify"]).contains("intact"));
    let db = c.head.session.join("head.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let (seq, user): (i64, Vec<u8>) = conn
        .query_row(
            "SELECT seq, user FROM audit WHERE action = CAST('user.revoke' AS BLOB)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let mut flipped = user.clone();
    flipped[0] ^= 0x01;
    conn.execute(
        "UPDATE audit SET user = ?1 WHERE seq = ?2",
        rusqlite::params![flipped, seq],
    )
    .unwrap();
    drop(conn);
    let out = c.run(None, &["audit", "verify"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains(&format!("entry {seq} was altered")), "{said}");

    // kill -9 the head; it recovers its users and the (still broken) trail.
    c.head.kill9();
    let session = c.head.session.clone();
    c.head = c.sb.spawn_in(
        "head",
        &session,
        &["--head", "--port", c.addr.rsplit(':').next().unwrap()],
    );
    assert!(c
        .ok(Some(&carol), &["user", "whoami"])
        .starts_with("carol (viewer in default)"));
    c.refused(Some(&bob_token), &["status"], "revoked");
    let out = c.run(None, &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("entry {seq} was altered")));
}

/// `(status, body)` of a dashboard request with a bearer token or a cookie.
fn http(method: &str, url: &str, bearer: Option<&str>, cookie: Option<&str>) -> (u16, String) {
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
fn login(base: &str, token: &str) -> Result<String, (u16, String)> {
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

#[test]
fn the_dashboard_shows_each_user_what_the_head_lets_them_and_a_revocation_ends_their_session() {
    let c = start();
    let base = c.head.ready()["dashboard"]
        .as_str()
        .expect("a dashboard")
        .to_string();
    let alice = c.add_user("alice", "developer", &["vision"]);
    let bob = c.add_user("bob", "developer", &["ads"]);
    let done = c.sb.temp().join("release").display().to_string();
    let out = c.submit(&alice, "vision", &done);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job = String::from_utf8_lossy(&out.stdout).trim().to_string();

    // Each sees their namespaces' jobs only.
    let (status, mine) = http("GET", &format!("{base}/api/v0/jobs"), Some(&alice), None);
    assert_eq!(status, 200, "{mine}");
    assert!(mine.contains(&job), "{mine}");
    let (status, theirs) = http("GET", &format!("{base}/api/v0/jobs"), Some(&bob), None);
    assert_eq!(status, 200, "{theirs}");
    assert!(!theirs.contains(&job), "{theirs}");
    let (_, who) = http("GET", &format!("{base}/api/v0/whoami"), Some(&bob), None);
    let who: Value = serde_json::from_str(&who).unwrap();
    assert_eq!(
        (who["user"].as_str(), who["role"].as_str()),
        (Some("bob"), Some("developer"))
    );
    // Bob may not stop Alice's job through the dashboard either.
    let stop = format!("{base}/api/v0/jobs/{job}/stop");
    let (status, body) = http("POST", &stop, Some(&bob), None);
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("bob (developer in ads) may not stop job"),
        "{body}"
    );
    assert_eq!(c.job_state(&job), "running");

    // A wrong user token gets the login page with the head's reason.
    let wrong = with_a_wrong_secret(&bob);
    let (status, page) = login(&base, &wrong).unwrap_err();
    assert_eq!(status, 401);
    assert!(page.contains("invalid user token"), "{page}");
    // Bob's open session stops working the moment he is revoked.
    let cookie = login(&base, &bob).expect("bob logs in");
    let (status, _) = http("GET", &format!("{base}/api/v0/jobs"), None, Some(&cookie));
    assert_eq!(status, 200);
    c.ok(None, &["user", "revoke", "bob"]);
    let (status, body) = http("GET", &format!("{base}/api/v0/jobs"), None, Some(&cookie));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("the token of user bob was revoked"), "{body}");
    let (status, _) = http(
        "GET",
        &format!("{base}/api/v0/summary"),
        None,
        Some(&cookie),
    );
    assert_eq!(status, 403);
    // Alice stops her own job from the dashboard.
    let (status, body) = http("POST", &stop, Some(&alice), None);
    assert_eq!(status, 200, "{body}");
    assert!(wait_until(Duration::from_secs(30), || c.job_state(&job) == "stopped"));
    std::fs::write(&done, "").unwrap();
}

/// The rows of `prism list TABLE --json` as `user` (or the admin).
fn rows(c: &Cluster, user: Option<&str>, table: &str) -> Vec<Value> {
    serde_json::from_str(&c.ok(user, &["list", table, "--json"])).unwrap()
}

/// The job ids of a JSON array of rows (`/api/v0/*` pages hold them
/// under `rows`).
fn job_ids(v: &Value) -> Vec<String> {
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

#[test]
fn the_read_only_dashboard_token_and_each_user_see_their_namespaces_rows_only() {
    let c = start_with(&["--dashboard-viewer-namespaces", "vision"]);
    let base = c.head.ready()["dashboard"].as_str().unwrap().to_string();
    let viewer = std::fs::read_to_string(c.head.session.join("dashboard_token")).unwrap();
    let viewer = viewer.trim();
    let alice = c.add_user("alice", "developer", &["vision"]);
    let bob = c.add_user("bob", "developer", &["ads"]);
    let done = c.sb.temp().join("release").display().to_string();
    let mut jobs = Vec::new();
    for (user, ns) in [(&alice, "vision"), (&bob, "ads")] {
        let out = c.submit(user, ns, &done);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        jobs.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    let (job_a, job_b) = (jobs[0].clone(), jobs[1].clone());
    // Both jobs' tasks ran (the admin sees every row).
    let finished = |job: &str| {
        rows(&c, None, "tasks")
            .into_iter()
            .find(|t| t["job_id"] == job && t["state"] == "finished")
    };
    assert!(wait_until(Duration::from_secs(90), || finished(&job_a)
        .is_some()
        && finished(&job_b).is_some()));

    // The read-only token: vision's rows only, in every table and page.
    let get = |path: &str| {
        let (status, body) = http("GET", &format!("{base}{path}"), Some(viewer), None);
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str::<Value>(&body).unwrap()
    };
    assert_eq!(job_ids(&get("/api/v0/jobs")), vec![job_a.clone()]);
    assert_eq!(job_ids(&get("/api/v0/tasks")), vec![job_a.clone()]);
    let page = get("/api/v0/tasks?state=finished");
    assert_eq!(job_ids(&page), vec![job_a.clone()]);
    assert_eq!(page["total"], 3, "a task, a creation and a call: {page}");
    // Each job's actor keeps a worker alive: vision's is listed, ads' not.
    assert_eq!(job_ids(&get("/api/v0/workers")), vec![job_a.clone()]);
    let actors = get("/api/v0/actors");
    let actors = actors["rows"].as_array().unwrap();
    assert!(!actors.is_empty() && actors.iter().all(|a| a["namespace"] == "vision"));
    let runs = get("/api/v0/runs");
    let runs: Vec<&str> = runs["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(runs, ["run-vision"]);
    let (status, body) = http(
        "GET",
        &format!("{base}/api/v0/runs/run-ads"),
        Some(viewer),
        None,
    );
    assert_eq!(status, 403, "{body}");
    let me = get("/api/v0/whoami");
    assert_eq!(
        (me["role"].as_str(), me["namespaces"].clone()),
        (Some("viewer"), serde_json::json!(["vision"]))
    );
    // Logs: vision's worker's yes, ads' worker's no, with the reason.
    let log_of = |job: &str| {
        let t = finished(job).unwrap();
        let (node, pid) = (
            t["node_id"].as_str().unwrap(),
            t["worker_pid"].as_u64().unwrap(),
        );
        (format!("{base}/api/v0/logs?node={node}&pid={pid}"), pid)
    };
    let (url, _) = log_of(&job_a);
    let (status, body) = http("GET", &url, Some(viewer), None);
    assert_eq!(status, 200, "{body}");
    let (url, pid) = log_of(&job_b);
    let (status, body) = http("GET", &url, Some(viewer), None);
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains(&format!(
            "join-token viewer (viewer in vision) may not read the log of worker {pid} in \
             namespace ads: namespace ads was not granted to join-token viewer"
        )),
        "{body}"
    );
    // It changes nothing.
    let (status, body) = http(
        "POST",
        &format!("{base}/api/v0/jobs/{job_a}/stop"),
        Some(viewer),
        None,
    );
    assert_eq!(status, 403, "{body}");

    // Users through the CLI: their namespaces' tasks and workers only.
    assert_eq!(
        job_ids(&Value::Array(rows(&c, Some(&bob), "tasks"))),
        vec![job_b.clone()]
    );
    assert_eq!(
        job_ids(&Value::Array(rows(&c, Some(&bob), "workers"))),
        vec![job_b.clone()]
    );
    assert_eq!(
        job_ids(&Value::Array(rows(&c, Some(&alice), "tasks"))),
        vec![job_a.clone()]
    );
    // The admin still sees both.
    let all = job_ids(&Value::Array(rows(&c, None, "tasks")));
    assert!(all.contains(&job_a) && all.contains(&job_b), "{all:?}");
    std::fs::write(&done, "").unwrap();
}
