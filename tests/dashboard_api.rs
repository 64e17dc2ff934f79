//! The dashboard's HTTP API on a live cluster (head with its raylet +
//! raylet b): a driver runs 100 tasks that each bump a user counter, holds
//! a named actor, a placement group and an object; then every `/api/v0`
//! table answers with the cluster's rows (filters, sorting, paging), the
//! summary and `/metrics` add up, bad queries get precise 400s, a viewer
//! cannot stop a job, and nothing answers without a token or leaks the
//! join secret.

use prism_test_support::*;
use serde_json::{json, Value};
use std::time::Duration;

#[prism::remote]
fn bump(i: u64) -> u64 {
    prism::metrics::counter("dash_bumps", &[("kind", "test")]).inc();
    i
}

#[prism::actor]
struct Keeper {
    n: u64,
}

#[prism::actor]
impl Keeper {
    fn new() -> Self {
        Keeper { n: 0 }
    }
    fn add(&mut self, x: u64) -> u64 {
        self.n += x;
        self.n
    }
}

fn hold_role() {
    let refs: Vec<_> = (0..100u64).map(|i| bump::remote(i).unwrap()).collect();
    let sum: u64 = prism::get_all(&refs).unwrap().into_iter().sum();
    check(sum == 4950, "the tasks ran");
    let k = Keeper::options().name("dash_keeper").spawn().unwrap();
    check(k.add(2).unwrap().get().unwrap() == 2, "the actor answered");
    let pg = prism::PlacementGroup::create_named(
        "dash_group",
        vec![prism::Bundle::new().cpus(0.5)],
        prism::PlacementStrategy::Pack,
        false,
    )
    .unwrap();
    check(
        pg.ready(Duration::from_secs(30)).is_ok(),
        "the group was created",
    );
    let blob = prism::put(&vec![1u8; 1 << 20]).unwrap();
    let points = (1..=5u64)
        .map(|step| prism::proto::runs::RunPoint {
            step,
            values: vec![("loss".into(), 1.0 / step as f64)],
            seconds: step as f64,
        })
        .collect();
    prism::report_run("dash-run-1", "mlp", points).unwrap();
    println!("READY {}", blob.id());
    check(hold_until_done(), "the test looked");
    println!("ALL OK");
}

#[test]
#[ignore = "a job driver, started by the tests in this file with PRISM_TEST_ROLE"]
fn child_role() {
    let _c = prism::init().unwrap();
    match std::env::var("PRISM_TEST_ROLE").unwrap().as_str() {
        "hold" => hold_role(),
        other => panic!("unknown role {other}"),
    }
}

/// `(status, body)` of a request with an optional bearer token.
fn http(method: &str, url: &str, token: Option<&str>) -> (u16, String) {
    let mut req = ureq::request(method, url).timeout(Duration::from_secs(30));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    match req.call() {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

fn json(url: &str, token: &str) -> Value {
    let (status, body) = http("GET", url, Some(token));
    assert_eq!(status, 200, "{url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body}"))
}

#[test]
fn dashboard_api_serves_the_live_cluster() {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--num-cpus", "2", "--dashboard-port", "0"]);
    let b = sb.start_raylet("b", &head, &["--num-cpus", "2"]);
    assert!(wait_until(Duration::from_secs(10), || sb
        .nodes_in_state("alive")
        .len()
        == 2));
    let base = head.ready()["dashboard"]
        .as_str()
        .expect("the head serves a dashboard")
        .to_string();
    let (_, join_token) = head.cluster();
    let secret = join_token.split('.').next().unwrap().to_string();
    let viewer = std::fs::read_to_string(head.session.join("dashboard_token")).unwrap();
    let viewer = viewer.trim();

    let (mut job, done) = sb.held_driver("hold", &head, &head);
    assert!(
        wait_until(Duration::from_secs(60), || job.stdout().contains("READY ")),
        "{}\n{}",
        job.stdout(),
        job.stderr()
    );

    // No token, a wrong token: 401 and nothing else.
    for path in ["/api/v0/nodes", "/metrics", "/api/v0/summary"] {
        let (status, body) = http("GET", &format!("{base}{path}"), None);
        assert_eq!(status, 401, "{path}: {body}");
        assert!(
            !body.contains(&head.node_id()),
            "{path} leaked data: {body}"
        );
        let (status, _) = http("GET", &format!("{base}{path}"), Some("0123456789abcdef"));
        assert_eq!(status, 401, "{path} with a wrong token");
    }
    let (status, page) = http("GET", &format!("{base}/actors"), None);
    assert_eq!(status, 401);
    assert!(
        page.contains("<form") && !page.contains("dash_keeper"),
        "{page}"
    );

    // Nodes: both, under the ids the raylets registered with.
    let nodes = json(&format!("{base}/api/v0/nodes"), viewer);
    assert_eq!(nodes["total"], 2, "{nodes:#}");
    let ids: Vec<&str> = nodes["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node_id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&head.node_id().as_str()) && ids.contains(&b.node_id().as_str()),
        "{ids:?}"
    );
    let one = json(
        &format!("{base}/api/v0/nodes?node={}", &b.node_id()[..10]),
        viewer,
    );
    assert_eq!(one["total"], 1, "a short id filters: {one:#}");

    // Tasks: the 100 finished bumps, filtered, sorted and paged.
    let finished = format!("{base}/api/v0/tasks?state=finished&name=bump");
    assert!(
        wait_until(Duration::from_secs(10), || json(&finished, viewer)["total"]
            == 100),
        "{:#}",
        json(&finished, viewer)
    );
    let page = json(
        &format!("{finished}&sort=ended_us&order=desc&limit=10&offset=5"),
        viewer,
    );
    let rows = page["rows"].as_array().unwrap();
    assert_eq!(
        (rows.len(), page["total"].as_u64(), page["offset"].as_u64()),
        (10, Some(100), Some(5))
    );
    let ends: Vec<u64> = rows
        .iter()
        .map(|r| r["ended_us"].as_u64().unwrap())
        .collect();
    assert!(
        ends.windows(2).all(|w| w[0] >= w[1]),
        "sorted newest first: {ends:?}"
    );
    assert_eq!(
        json(
            &format!("{base}/api/v0/tasks?state=finished&name=bump"),
            viewer
        )["rows"]
            .as_array()
            .unwrap()
            .len(),
        100
    );
    assert_eq!(
        json(&format!("{base}/api/v0/tasks?name=bump"), viewer)["limit"],
        100,
        "the default page"
    );

    // Actors, jobs, groups, objects, workers.
    let actors = json(&format!("{base}/api/v0/actors?name=dash_keeper"), viewer);
    assert_eq!(
        (
            actors["total"].as_u64(),
            actors["rows"][0]["state"].as_str()
        ),
        (Some(1), Some("alive")),
        "{actors:#}"
    );
    let jobs = json(&format!("{base}/api/v0/jobs?state=running"), viewer);
    assert!(jobs["total"].as_u64().unwrap() >= 1, "{jobs:#}");
    let groups = json(
        &format!("{base}/api/v0/placement_groups?name=dash_group"),
        viewer,
    );
    assert_eq!(groups["rows"][0]["state"], "created", "{groups:#}");
    let objects = json(
        &format!("{base}/api/v0/objects?sort=size&order=desc&limit=1"),
        viewer,
    );
    assert!(
        objects["rows"][0]["size"].as_u64().unwrap() >= 1 << 20,
        "{objects:#}"
    );
    let workers = json(&format!("{base}/api/v0/workers?state=actor"), viewer);
    assert!(workers["total"].as_u64().unwrap() >= 1, "{workers:#}");
    let pid = workers["rows"][0]["pid"].as_u64().unwrap();
    let node = workers["rows"][0]["node_id"].as_str().unwrap().to_string();
    let log = json(&format!("{base}/api/v0/logs?node={node}&pid={pid}"), viewer);
    assert!(log["next"].as_u64().is_some(), "{log:#}");

    // Training runs: the reported points, in step order.
    let runs_url = format!("{base}/api/v0/runs?name=mlp");
    assert!(
        wait_until(Duration::from_secs(10), || json(&runs_url, viewer)["total"]
            == 1),
        "{:#}",
        json(&runs_url, viewer)
    );
    let run = json(&format!("{base}/api/v0/runs/dash-run-1"), viewer);
    let steps: Vec<u64> = run["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, vec![1, 2, 3, 4, 5], "{run:#}");
    assert_eq!(run["run"]["last_step"], 5);
    let (status, _) = http("GET", &format!("{base}/api/v0/runs/nope"), Some(viewer));
    assert_eq!(status, 404);

    // The model registry: a version made from that run, with its card.
    let card = sb.temp().join("card.md");
    std::fs::write(&card, "intent: dashboard test\nlimits: none").unwrap();
    let card = card.display().to_string();
    let out = sb.run(&[
        "models",
        "register",
        "dash-model",
        "--run",
        "dash-run-1",
        "--card",
        &card,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sb.run(&["models", "alias", "dash-model", "1", "champion"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let models = json(&format!("{base}/api/v0/models"), viewer);
    assert_eq!(models["total"], 1, "{models:#}");
    let row = &models["rows"][0];
    assert_eq!(
        (
            &row["name"],
            &row["namespace"],
            &row["versions"],
            &row["latest_run"]
        ),
        (
            &json!("dash-model"),
            &json!("default"),
            &json!(1),
            &json!("dash-run-1")
        ),
        "{row:#}"
    );
    assert_eq!(row["aliases"], json!(["champion=v1"]));
    assert_eq!(row["latest_metrics"], json!([["loss", 0.2]]), "{row:#}");
    let m = json(&format!("{base}/api/v0/models/dash-model"), viewer);
    assert_eq!(
        m["versions"][0]["card"],
        "intent: dashboard test\nlimits: none"
    );
    assert_eq!(m["history"].as_array().unwrap().len(), 2, "{m:#}");
    let (status, body) = http("GET", &format!("{base}/api/v0/models/nope"), Some(viewer));
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no model named \\\"nope\\\""), "{body}");

    // The summary adds up.
    let s = json(&format!("{base}/api/v0/summary"), viewer);
    assert_eq!(s["nodes"].as_array().unwrap().len(), 2);
    assert!(
        s["resources_total"]["CPU"].as_f64().unwrap() >= 4.0,
        "{s:#}"
    );
    assert_eq!(s["actors"]["alive"], 1, "{s:#}");
    assert_eq!(s["placement_groups"]["created"], 1, "{s:#}");

    // Bad queries say what is wrong.
    let (status, body) = http(
        "GET",
        &format!("{base}/api/v0/actors?colour=red"),
        Some(viewer),
    );
    assert!(
        status == 400 && body.contains("colour") && body.contains("actor_id"),
        "{status} {body}"
    );
    let (status, body) = http(
        "GET",
        &format!("{base}/api/v0/tasks?limit=many"),
        Some(viewer),
    );
    assert!(status == 400 && body.contains("limit"), "{status} {body}");
    let (status, body) = http("GET", &format!("{base}/api/v0/teapots"), Some(viewer));
    assert!(
        status == 404 && body.contains("placement_groups"),
        "{status} {body}"
    );

    // A viewer may not stop jobs; the cluster token may (on a bogus id: 400).
    let job_id = jobs["rows"][0]["job_id"].as_str().unwrap();
    let (status, body) = http(
        "POST",
        &format!("{base}/api/v0/jobs/{job_id}/stop"),
        Some(viewer),
    );
    assert_eq!(status, 403, "{body}");
    let (status, _) = http(
        "POST",
        &format!("{base}/api/v0/jobs/nonsense/stop"),
        Some(&join_token),
    );
    assert_eq!(status, 400);

    // Metrics: the user counter from 100 tasks reads 100; cluster series are there.
    let mut text = String::new();
    let counted = wait_until(Duration::from_secs(10), || {
        text = http("GET", &format!("{base}/metrics"), Some(viewer)).1;
        text.contains("dash_bumps_total{kind=\"test\"} 100")
    });
    assert!(counted, "{text}");
    for series in [
        "prism_node_resource_total{",
        "prism_tasks_finished_total{",
        "prism_task_seconds_bucket{",
        "prism_actors{state=\"alive\"} 1",
        "prism_head_request_seconds_count",
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }

    // Neither the pages nor the API reveal the join secret.
    for path in [
        "/",
        "/actors",
        "/static/app.js",
        "/api/v0/summary",
        "/api/v0/jobs",
        "/metrics",
    ] {
        let (_, body) = http("GET", &format!("{base}{path}"), Some(&join_token));
        assert!(!body.contains(&secret), "{path} shows the join secret");
    }

    std::fs::write(&done, b"").unwrap();
    let (ok, out) = job.finish(Duration::from_secs(30));
    assert!(ok && out.contains("ALL OK"), "{out}");
}
