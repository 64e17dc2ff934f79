//! The dashboard as each user and as its read-only token, against a real
//! head: each sees what the head lets them (their namespaces' jobs, tasks,
//! workers, actors, runs and logs), a revocation ends an open session, and
//! the read-only token reads only the namespaces it was given at start.

use prism_test_support::*;
use serde_json::Value;
use std::time::Duration;

#[path = "common/access.rs"]
mod access;
use access::*;

#[test]
#[ignore = "a job driver, started by `prism submit` in the tests in this file"]
fn child_role() {
    child_main();
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
    // Both jobs' task, actor creation and call ran and are listed (the
    // admin sees every row; a task that ran on a lease is listed from its
    // worker's report, sent a few times a second).
    let finished = |job: &str| -> Vec<Value> {
        rows(&c, None, "tasks")
            .into_iter()
            .filter(|t| t["job_id"] == job && t["state"] == "finished")
            .collect()
    };
    assert!(wait_until(Duration::from_secs(90), || finished(&job_a)
        .len()
        >= 3
        && finished(&job_b).len() >= 3));

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
    assert_eq!(job_ids(&get("/api/v0/objects")), vec![job_a.clone()]);
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
    // AC-6: another namespace's run reads as one that does not exist.
    assert_eq!(status, 404, "{body}");
    assert!(body.contains(r#"no run \"run-ads\""#), "{body}");
    let me = get("/api/v0/whoami");
    assert_eq!(
        (me["role"].as_str(), me["namespaces"].clone()),
        (Some("viewer"), serde_json::json!(["vision"]))
    );
    // Logs: vision's worker's yes, ads' worker's no, with the reason.
    let log_of = |job: &str| {
        let t = finished(job).into_iter().next().unwrap();
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
    // Users' metrics: those of the viewer's namespace's jobs only (the
    // admin's scrape waits for both drivers' counters, sent once a second).
    let scrape = |token: &str| http("GET", &format!("{base}/metrics"), Some(token), None).1;
    let (_, join_token) = c.head.cluster();
    let (vision, ads) = (
        "tenant_hits_total{ns=\"vision\"} 1",
        "tenant_hits_total{ns=\"ads\"} 1",
    );
    let mut text = String::new();
    let both = wait_until(Duration::from_secs(30), || {
        text = scrape(&join_token);
        text.contains(vision) && text.contains(ads)
    });
    assert!(both, "{text}");
    let text = scrape(viewer);
    assert!(
        text.contains(vision) && !text.contains("ns=\"ads\""),
        "{text}"
    );
    let text = scrape(&bob);
    assert!(
        text.contains(ads) && !text.contains("ns=\"vision\""),
        "{text}"
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
    // Objects: each user sees the copies their job's processes made (its
    // driver's put and its actor's).
    let bobs = rows(&c, Some(&bob), "objects");
    assert_eq!(job_ids(&Value::Array(bobs.clone())), vec![job_b.clone()]);
    assert!(bobs.len() >= 2, "the driver's and the actor's: {bobs:?}");
    assert_eq!(
        job_ids(&Value::Array(rows(&c, Some(&alice), "objects"))),
        vec![job_a.clone()]
    );
    // The admin still sees both.
    let all = job_ids(&Value::Array(rows(&c, None, "tasks")));
    assert!(all.contains(&job_a) && all.contains(&job_b), "{all:?}");
    let objects = rows(&c, None, "objects");
    let owned: Vec<&str> = objects
        .iter()
        .filter_map(|o| o["job_id"].as_str())
        .collect();
    assert!(
        owned.contains(&job_a.as_str()) && owned.contains(&job_b.as_str()),
        "{objects:?}"
    );

    // Models belong to the namespace of their run (MR-4, AC-4).
    assert!(wait_until(Duration::from_secs(30), || {
        let runs = c.ok(None, &["runs", "list", "--json"]);
        runs.contains("run-vision") && runs.contains("run-ads")
    }));
    let register = |who: &str, model: &str, run: &str| {
        c.run(Some(who), &["models", "register", model, "--run", run])
    };
    let out = register(&alice, "detector", "run-vision");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Names are per namespace (MR-5): Bob's `detector` is ads's own model,
    // and Alice's is untouched.
    let out = register(&bob, "detector", "run-ads");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // AC-6: vision's run is, to Bob, a run that does not exist.
    c.refused(
        Some(&bob),
        &["models", "register", "ranker", "--run", "run-vision"],
        r#"no run "run-vision" (prism runs list shows them)"#,
    );
    let out = register(&bob, "ranker", "run-ads");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Vision's models are reached only by naming vision, and refused.
    c.refused(
        Some(&bob),
        &[
            "models",
            "alias",
            "detector",
            "1",
            "champion",
            "--namespace",
            "vision",
        ],
        "bob (developer in ads) may not point detector@champion at version 1 in namespace vision",
    );
    c.refused(
        Some(&bob),
        &["models", "show", "detector", "--namespace", "vision"],
        "bob (developer in ads) may not read model detector in namespace vision",
    );
    let own: Value =
        serde_json::from_str(&c.ok(Some(&bob), &["models", "show", "detector", "--json"])).unwrap();
    assert_eq!(own["namespace"], "ads", "{own}");
    c.ok(Some(&bob), &["models", "alias", "ranker", "1", "champion"]);
    let names = |who: Option<&str>| -> Vec<String> {
        let v: Vec<Value> =
            serde_json::from_str(&c.ok(who, &["models", "list", "--json"])).unwrap();
        let mut n: Vec<String> = v
            .iter()
            .map(|m| {
                format!(
                    "{}@{}",
                    m["name"].as_str().unwrap(),
                    m["namespace"].as_str().unwrap()
                )
            })
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(Some(&bob)), ["detector@ads", "ranker@ads"]);
    // The read-only token of vision, on the dashboard: vision's only, and
    // a name only ads has reads as unknown, not as forbidden.
    let page = get("/api/v0/models");
    assert_eq!(page["total"], 1, "{page}");
    assert_eq!(page["rows"][0]["name"], "detector");
    let (status, body) = http(
        "GET",
        &format!("{base}/api/v0/models/ranker"),
        Some(viewer),
        None,
    );
    assert_eq!(status, 404, "{body}");
    assert!(
        body.contains("in namespace vision") && !body.contains("ads"),
        "{body}"
    );
    let (status, body) = http(
        "GET",
        &format!("{base}/api/v0/models/ranker?namespace=ads"),
        Some(viewer),
        None,
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(names(Some(&alice)), ["detector@vision"]);
    assert_eq!(
        names(None),
        ["detector@ads", "detector@vision", "ranker@ads"]
    );
    std::fs::write(&done, "").unwrap();
}
