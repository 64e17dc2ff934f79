//! Serving on a real cluster through its config file and the CLI: a job
//! (this binary, which holds the model) starts serving from serve.yaml and
//! exits; the detached controller, proxy and replicas keep answering HTTP;
//! `prism serve status | deploy | shutdown` act on them as drivers; the
//! dashboard's Serve API shows what the controller reports to the head.

use prism_test_support::*;
use serde_json::Value;
use std::time::Duration;

#[path = "common/adder.rs"]
mod adder;
use adder::post;

#[test]
#[ignore = "a job driver, started by the tests in this file with PRISM_TEST_ROLE"]
fn child_role() {
    let _c = prism::init().unwrap();
    let path = std::env::var("SERVE_YAML").unwrap();
    let url = prism_serve::run_config(std::path::Path::new(&path)).unwrap();
    println!("URL={url}");
    println!("ALL OK");
}

/// The dashboard's `/api/v0/serve`, once `ok` holds for it (at most 30 s).
fn serve_page(base: &str, token: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let seen = wait_until(Duration::from_secs(30), || {
        let got = ureq::get(&format!("{base}/api/v0/serve"))
            .set("Authorization", &format!("Bearer {token}"))
            .timeout(Duration::from_secs(10))
            .call();
        last = match got {
            Ok(r) => {
                serde_json::from_str(&r.into_string().unwrap_or_default()).unwrap_or(Value::Null)
            }
            Err(e) => Value::String(e.to_string()),
        };
        ok(&last)
    });
    assert!(seen, "{last:#}");
    last
}

/// The replicas the Serve API lists for namespace `default`'s `adder`.
fn adder_replicas(v: &Value) -> Option<usize> {
    let ns = v["namespaces"]
        .as_array()?
        .iter()
        .find(|n| n["namespace"] == "default")?;
    let dep = &ns["status"]["deployments"][0];
    (dep["deployment"] == "adder" && ns["stale"] == false)
        .then(|| dep["replicas"].as_array().map(Vec::len))
        .flatten()
}

fn yaml(replicas: u32, add: i64) -> String {
    format!(
        "http: {{ port: 0 }}
applications:
  - name: math
    deployments:
      - name: adder
        model: Adder
        route_prefix: /add
        replicas: {replicas}
        num_cpus: 0.5
        user_config: {{ add: {add} }}
"
    )
}

#[test]
fn serve_yaml_and_the_cli_deploy_update_show_and_shut_down() {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--num-cpus", "4", "--dashboard-port", "0"]);
    let base = head.ready()["dashboard"].as_str().unwrap().to_string();
    let token = std::fs::read_to_string(head.session.join("dashboard_token")).unwrap();
    let token = token.trim();
    let out = sb.run(&["serve", "status"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no serve controller runs in namespace default"),
        "{err}"
    );

    let file = sb.temp().join("serve.yaml");
    std::fs::write(&file, yaml(1, 1)).unwrap();
    let mut envs = sb.driver_envs(&head, &head);
    envs.push(("SERVE_YAML".into(), file.display().to_string()));
    let mut job = Job::spawn("serve", &envs);
    let (ok, out) = job.finish(Duration::from_secs(120));
    assert!(
        ok && out.contains("ALL OK"),
        "{out}\n--- head:\n{}",
        head.log()
    );
    let url = out
        .lines()
        .find_map(|l| l.split("URL=").nth(1))
        .unwrap()
        .trim()
        .to_string();
    // The job has ended; serving goes on.
    assert_eq!(post(&format!("{url}/add"), "[1, 2]")["sum"], 4);

    let status = || -> Value {
        let out = sb.run(&["serve", "status", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    };
    let s = status();
    assert_eq!(s["deployments"][0]["deployment"], "adder", "{s}");
    assert_eq!(
        s["deployments"][0]["replicas"].as_array().map(Vec::len),
        Some(1),
        "{s}"
    );
    // The controller reports to the head: the dashboard shows it.
    let page = serve_page(&base, token, |v| adder_replicas(v) == Some(1));
    let ns = &page["namespaces"][0];
    assert_eq!(
        ns["status"]["deployments"][0]["route_prefix"], "/add",
        "{page}"
    );
    assert!(ns["status"]["proxies"][0]["address"].is_string(), "{page}");
    let table = String::from_utf8_lossy(&sb.run(&["serve", "status"]).stdout).into_owned();
    assert!(
        table.contains("adder") && table.contains("/add") && table.contains("1/1"),
        "{table}"
    );

    // An update from the CLI: two replicas, a new user config.
    std::fs::write(&file, yaml(2, 10)).unwrap();
    let out = sb.run(&["serve", "deploy", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = status();
    assert_eq!(
        s["deployments"][0]["replicas"].as_array().map(Vec::len),
        Some(2),
        "{s}"
    );
    assert_eq!(post(&format!("{url}/add"), "[1, 2]")["sum"], 13);
    serve_page(&base, token, |v| adder_replicas(v) == Some(2));

    // A broken file: its line and field, no backtrace, nothing changed.
    let bad = sb.temp().join("bad.yaml");
    std::fs::write(&bad, yaml(2, 10).replace("replicas: 2", "replicas: many")).unwrap();
    let out = sb.run(&["serve", "deploy", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("bad.yaml:8:") && err.contains("deployments[0].replicas"),
        "{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("stack backtrace"),
        "{err}"
    );
    assert_eq!(post(&format!("{url}/add"), "[0]")["sum"], 10);

    let out = sb.run(&["serve", "shutdown"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gone = wait_until(Duration::from_secs(30), || {
        ureq::post(&format!("{url}/add"))
            .timeout(Duration::from_secs(2))
            .send_string("[0]")
            .is_err()
    });
    assert!(gone, "the proxy stops with serving");
    // Its row goes from the head.
    serve_page(&base, token, |v| {
        v["namespaces"].as_array().is_some_and(Vec::is_empty)
    });
    let out = sb.run(&["serve", "status"]);
    assert!(!out.status.success());
}
