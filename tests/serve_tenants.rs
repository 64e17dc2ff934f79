//! Two tenants serve on one cluster: Alice (developer in vision) and Bob
//! (developer in ads) each start serving from a driver of their own. Each
//! namespace gets its own controller, proxy and replicas, run as its
//! tenant's job: each answers on its own ingress, each tenant's `prism
//! serve status` lists their deployments only, and Bob cannot reach
//! vision's serving at all — the head refuses the lookup with its
//! sentence. Shutting one namespace's serving down leaves the other's
//! answering.

use prism_serve::{Application, Deployment};
use prism_test_support::*;
use serde_json::{json, Value};
use std::process::Output;
use std::time::Duration;

#[path = "common/adder.rs"]
mod adder;
use adder::Adder;

#[test]
#[ignore = "a tenant's driver, started by the test in this file with PRISM_TEST_ROLE"]
fn child_role() {
    let _c = prism::init().unwrap();
    let name = std::env::var("TENANT_DEPLOYMENT").unwrap();
    let add: i64 = std::env::var("TENANT_ADD").unwrap().parse().unwrap();
    let url = prism_serve::start("127.0.0.1", 0).unwrap();
    let d = Deployment::new::<Adder>(&name)
        .num_cpus(0.5)
        .route_prefix("/t")
        .user_config(json!({ "add": add }));
    prism_serve::run(Application::new("app").deployment(d)).unwrap();
    println!("URL={url}");
    println!("ALL OK");
}

/// The answer to `[1, 2]` on the deployment's route.
fn post(url: &str) -> Value {
    adder::post(&format!("{url}/t"), "[1, 2]")
}

/// `prism serve <args>` as the holder of `token` (the join token's admin
/// for `None`) in namespace `ns` (`""`: their first, as `prism submit`).
fn serve_as(sb: &Sandbox, token: Option<&str>, ns: &str, args: &[&str]) -> Output {
    let mut all = vec!["serve"];
    all.extend_from_slice(args);
    let mut c = sb.cmd(&all);
    if let Some(t) = token {
        c.env("PRISM_USER_TOKEN", t);
    }
    match ns {
        "" => c.env_remove("PRISM_NAMESPACE"),
        ns => c.env("PRISM_NAMESPACE", ns),
    };
    c.output().unwrap()
}

fn deployments(out: &Output) -> Vec<String> {
    let s: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    s["deployments"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| d["deployment"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn two_tenants_serve_apart_on_one_cluster() {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--num-cpus", "4"]);
    let alice = sb.add_user("alice", "developer", "vision");
    let bob = sb.add_user("bob", "developer", "ads");
    let start = |token: &str, ns: &str, name: &str, add: &str| -> String {
        let mut envs = sb.driver_envs(&head, &head);
        envs.retain(|(k, _)| k != "PRISM_TOKEN");
        for (k, v) in [
            ("PRISM_USER_TOKEN", token),
            ("PRISM_NAMESPACE", ns),
            ("TENANT_DEPLOYMENT", name),
            ("TENANT_ADD", add),
        ] {
            envs.push((k.into(), v.into()));
        }
        let (ok, out) = Job::spawn("tenant", &envs).finish(Duration::from_secs(180));
        assert!(
            ok && out.contains("ALL OK"),
            "{out}\n--- head:\n{}",
            head.log()
        );
        out.lines()
            .find_map(|l| l.split("URL=").nth(1))
            .unwrap()
            .trim()
            .to_string()
    };
    let vision_url = start(&alice, "vision", "detector", "1");
    let ads_url = start(&bob, "ads", "ranker", "100");
    assert_ne!(vision_url, ads_url, "each namespace has its own ingress");
    // Their drivers have ended; each namespace's serving answers (once its
    // proxy has the route).
    let answers =
        |url: &str, sum: i64| wait_until(Duration::from_secs(30), || post(url)["sum"] == sum);
    assert!(answers(&vision_url, 4), "{}", post(&vision_url));
    assert!(answers(&ads_url, 103), "{}", post(&ads_url));

    // Each tenant lists their own deployments only.
    let status = |token: Option<&str>, ns: &str| serve_as(&sb, token, ns, &["status", "--json"]);
    assert_eq!(deployments(&status(Some(&alice), "vision")), ["detector"]);
    assert_eq!(deployments(&status(Some(&bob), "ads")), ["ranker"]);
    // Unnamed, a tenant's namespace is their first, as for their jobs.
    assert_eq!(deployments(&status(Some(&alice), "")), ["detector"]);
    // Bob cannot reach vision's serving: the head refuses the lookup.
    let out = status(Some(&bob), "vision");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("bob (developer in ads) may not read actor prism-serve in namespace vision"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    // The admin reaches either by naming its namespace; none serves in
    // `default`.
    assert_eq!(deployments(&status(None, "vision")), ["detector"]);
    let out = status(None, "default");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no serve controller runs in namespace default"),
        "{err}"
    );

    // Alice shuts vision's serving down; ads' answers on.
    let out = serve_as(&sb, Some(&alice), "vision", &["shutdown"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gone = wait_until(Duration::from_secs(30), || post(&vision_url).is_null());
    assert!(gone, "vision's proxy stops with its serving");
    assert_eq!(post(&ads_url)["sum"], 103);
    assert_eq!(deployments(&status(Some(&bob), "ads")), ["ranker"]);
}
