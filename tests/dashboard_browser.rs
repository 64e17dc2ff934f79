//! The dashboard in a real browser: headless Chromium logs in with the
//! read-only token through the login link, loads the overview, actors,
//! training, models and serve pages, runs their JavaScript against the
//! live cluster, and shows the node ids, actor names, runs, models and
//! deployments the cluster holds. Screenshots go to
//! `target/tmp/dashboard-*.png`. Skipped, saying why, where Chromium is
//! not installed (`scripts/test.sh` installs Debian's package).

use prism_serve::{Application, Deployment};
use prism_test_support::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

#[prism::actor]
struct Greeter {
    n: u64,
}

#[prism::actor]
impl Greeter {
    fn new() -> Self {
        Greeter { n: 0 }
    }
    fn hi(&mut self) -> u64 {
        self.n += 1;
        self.n
    }
}

// Its POST helper is the serve tests'; this one only deploys the model.
#[allow(dead_code)]
#[path = "common/adder.rs"]
mod adder;

fn hold_role() {
    // Something served, for the Serve page.
    prism_serve::start("127.0.0.1", 0).unwrap();
    let d = Deployment::new::<adder::Adder>("browser-adder")
        .num_cpus(0.25)
        .route_prefix("/browser-add");
    prism_serve::run(Application::new("browser-app").deployment(d)).unwrap();
    let g = Greeter::options().name("browser_greeter").spawn().unwrap();
    check(g.hi().unwrap().get().unwrap() == 1, "the actor answered");
    let points = (1..=20u64)
        .map(|step| prism::proto::runs::RunPoint {
            step,
            values: vec![
                ("loss".into(), 2.0 / step as f64),
                ("accuracy".into(), step as f64 / 20.0),
            ],
            seconds: step as f64 * 0.1,
        })
        .collect();
    prism::report_run("browser-run", "mlp", points).unwrap();
    println!("READY");
    check(hold_until_done(), "the browser looked");
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

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH")?
                .to_str()?
                .split(':')
                .map(|d| PathBuf::from(d).join(name))
                .find(|p| p.is_file())
        })
}

/// Loads `url` in headless Chromium, lets its scripts run, and returns the
/// DOM; also writes a screenshot.
fn browse(
    browser: &PathBuf,
    profile: &std::path::Path,
    url: &str,
    shot: &std::path::Path,
) -> String {
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--window-size=1400,900",
        "--virtual-time-budget=6000",
    ];
    let profile = format!("--user-data-dir={}", profile.display());
    let dom = Command::new(browser)
        .args(common)
        .arg(&profile)
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("run chromium");
    let shot_arg = format!("--screenshot={}", shot.display());
    let _ = Command::new(browser)
        .args(common)
        .arg(&profile)
        .arg(shot_arg)
        .arg(url)
        .output();
    String::from_utf8_lossy(&dom.stdout).into_owned()
}

#[test]
fn dashboard_pages_render_the_live_cluster_in_chromium() {
    let Some(browser) = chromium() else {
        println!("skipped: Chromium is not installed (scripts/test.sh installs it: apt-get install chromium)");
        return;
    };
    let sb = Sandbox::new();
    let head = sb.start_head(&["--num-cpus", "2", "--dashboard-port", "0"]);
    let base = head.ready()["dashboard"].as_str().unwrap().to_string();
    let viewer = std::fs::read_to_string(head.session.join("dashboard_token")).unwrap();
    let (mut job, done) = sb.held_driver("hold", &head, &head);
    assert!(
        wait_until(Duration::from_secs(60), || job.stdout().contains("READY")),
        "{}",
        job.stderr()
    );
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let profile = sb.temp().join("chromium-profile");
    let login = |next: &str| format!("{base}/login?token={}&next={next}", viewer.trim());

    let overview = browse(
        &browser,
        &profile,
        &login("/"),
        &out_dir.join("dashboard-overview.png"),
    );
    let short = &head.node_id()[..12];
    assert!(
        overview.contains(short),
        "the overview shows node {short}:\n{overview}"
    );
    assert!(overview.contains("Cluster"), "{overview}");

    let actors = browse(
        &browser,
        &profile,
        &login("/actors"),
        &out_dir.join("dashboard-actors.png"),
    );
    assert!(
        actors.contains("browser_greeter"),
        "the actors page shows the actor:\n{actors}"
    );
    assert!(actors.contains("Greeter"), "{actors}");
    assert!(
        !actors.contains(viewer.trim()),
        "the page does not echo the token"
    );
    let training = browse(
        &browser,
        &profile,
        &login("/training"),
        &out_dir.join("dashboard-training.png"),
    );
    assert!(
        training.contains("browser-run"),
        "the training page lists the run:\n{training}"
    );
    assert_eq!(
        training.matches("<polyline").count(),
        2,
        "one chart per metric:\n{training}"
    );
    let card = sb.temp().join("card.md");
    std::fs::write(&card, "intent: greet in a browser").unwrap();
    let card = card.display().to_string();
    for args in [
        &[
            "models",
            "register",
            "browser-model",
            "--run",
            "browser-run",
            "--card",
            &card,
        ][..],
        &["models", "alias", "browser-model", "1", "champion"],
    ] {
        let out = sb.run(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let models = browse(
        &browser,
        &profile,
        &login("/models"),
        &out_dir.join("dashboard-models.png"),
    );
    for shown in [
        "browser-model",
        "champion",
        "browser-run",
        "intent: greet in a browser",
    ] {
        assert!(
            models.contains(shown),
            "the models page shows {shown}:\n{models}"
        );
    }
    let serve = browse(
        &browser,
        &profile,
        &login("/serve"),
        &out_dir.join("dashboard-serve.png"),
    );
    for shown in [
        "Namespace default",
        "browser-app",
        "browser-adder",
        "/browser-add",
        "Replicas",
    ] {
        assert!(
            serve.contains(shown),
            "the serve page shows {shown}:\n{serve}"
        );
    }
    println!("screenshots: {}", out_dir.join("dashboard-*.png").display());

    std::fs::write(&done, b"").unwrap();
    let (ok, out) = job.finish(Duration::from_secs(30));
    assert!(ok && out.contains("ALL OK"), "{out}");
}
