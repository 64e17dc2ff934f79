//! Every `DdpTrainer` run is recorded by the head with no user code: its
//! params (trainer, scaling, config, data, code), every step's metrics and
//! its end; `prism runs list | show | compare` read them, with filters and
//! a plot; `prism models` registers versions from them; runs and models
//! survive `kill -9` of the head. Real head, raylet, driver
//! jobs and CLI processes.

mod common;

use prism_ml::train::{DdpTrainer, ScalingConfig};
use prism_test_support::*;
use serde_json::Value;
use std::time::Duration;

/// One of 8 workers logging its own metric for 50 steps.
#[prism::remote]
fn log_steps(run: prism_ml::track::Run, worker: u32) -> bool {
    (0..50u64).all(|step| {
        run.log_metric(
            &format!("w{worker}"),
            (worker as u64 * 1000 + step) as f64,
            step,
        )
        .is_ok()
    })
}

fn role_track() {
    let _c = prism::init().unwrap();
    let run = prism_ml::track::start_run("sweep").unwrap();
    run.log_params([("lr", "0.05"), ("optimizer", "sgd")])
        .unwrap();
    run.set_tag("team", "vision").unwrap();
    let file = std::env::temp_dir().join(format!("artifact-{}.txt", std::process::id()));
    std::fs::write(&file, b"weights").unwrap();
    let hash = run.log_artifact(&file).unwrap();
    // A bigger one (through the object store, from another node when the
    // driver's raylet is not the head's), read back from anywhere.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let big_file = std::env::temp_dir().join(format!("model-{}.bin", std::process::id()));
    std::fs::write(&big_file, &big).unwrap();
    let big_hash = run.log_artifact(&big_file).unwrap();
    assert_eq!(prism_ml::artifacts::fetch(&big_hash).unwrap(), big);
    assert_eq!(prism_ml::artifacts::fetch(&hash).unwrap(), b"weights");
    let _ = std::fs::remove_file(&big_file);
    println!("BIG={big_hash}");
    println!("NAME={}", file.file_name().unwrap().to_string_lossy());
    let refs: Vec<_> = (0..8u32)
        .map(|w| log_steps::remote(run.clone(), w).unwrap())
        .collect();
    assert!(prism::get_all(&refs).unwrap().into_iter().all(|ok| ok));
    run.end(Ok(())).unwrap();
    println!("RUN={}", run.id);
    println!("HASH={hash}");
    println!("ALL OK");
}

/// A small pipeline run and a parameter-server run: both recorded.
fn role_others() {
    use prism_ml::pipeline::{PipelineTrainer, Schedule};
    use prism_ml::ps::{Mode, ParameterServer};
    let _c = prism::init().unwrap();
    let (train, _) = common::digits();
    let cfg = common::digits_mlp(vec![64, 32, 16, 10], 1, 0.05);
    let p = PipelineTrainer::new(cfg.clone(), 2, 2, Schedule::OneFOneB)
        .dataset(train.clone())
        .fit()
        .unwrap();
    println!("PIPE={} {}", p.run_id, p.losses.len());
    let ps = ParameterServer::new(cfg, 2, 2, Mode::Sync)
        .dataset(train)
        .fit()
        .unwrap();
    println!(
        "PS={} {}",
        ps.run_id,
        ps.losses.iter().map(Vec::len).max().unwrap_or(0)
    );
    println!("ALL OK");
}

#[test]
#[ignore = "a job driver, started by the tests in this file with PRISM_TEST_ROLE"]
fn child_role() {
    match std::env::var("PRISM_TEST_ROLE").as_deref() {
        Ok("track") => return role_track(),
        Ok("others") => return role_others(),
        _ => {}
    }
    let _c = prism::init().unwrap();
    let lr: f64 = std::env::var("LR").unwrap().parse().unwrap();
    let (train, _) = common::digits();
    let cfg = common::digits_mlp(vec![64, 32, 10], 2, lr);
    let r = DdpTrainer::new("mlp_classifier", ScalingConfig::new(2))
        .unwrap()
        .config(cfg.to_bytes())
        .dataset(train)
        .fit()
        .unwrap();
    println!("STEPS={}", r.metrics.len());
    println!("ALL OK");
}

fn json(sb: &Sandbox, args: &[&str]) -> Value {
    let out = sb.run(args);
    assert!(
        out.status.success(),
        "prism {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn param<'a>(run: &'a Value, key: &str) -> &'a str {
    run["params"][key].as_str().unwrap_or("")
}

#[test]
fn ddp_runs_are_recorded_listed_compared_and_survive_kill_9_of_the_head() {
    let sb = Sandbox::new();
    let mut head = sb.start_head(&["--head-only"]);
    let b = sb.start_raylet("b", &head, &["--num-cpus", "4"]);
    let mut steps = Vec::new();
    for lr in ["0.05", "0.1"] {
        let mut envs = sb.driver_envs(&head, &b);
        envs.push(("LR".into(), lr.into()));
        let mut job = Job::spawn("train", &envs);
        let (ok, out) = job.finish(Duration::from_secs(240));
        assert!(
            ok && out.contains("ALL OK"),
            "{out}\n--- head:\n{}",
            head.log()
        );
        let n: u64 = out
            .lines()
            .find_map(|l| l.strip_prefix("STEPS="))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        steps.push(n);
    }

    let runs = json(&sb, &["runs", "list", "--json"]);
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(
        param(&runs[0], "dataset.version"),
        param(&runs[1], "dataset.version"),
        "both runs read the same data"
    );
    let by_lr = |lr: &str| {
        runs.iter()
            .find(|r| param(r, "config.lr") == lr)
            .unwrap()
            .clone()
    };
    let (a, b_run) = (by_lr("0.05"), by_lr("0.1"));
    for r in [&a, &b_run] {
        assert_eq!(r["status"], "finished", "{r}");
        assert_eq!(param(r, "trainer"), "DdpTrainer");
        assert_eq!(param(r, "scaling.num_workers"), "2");
        assert_eq!(param(r, "config.layers"), "[64,32,10]");
        assert!(
            param(r, "dataset.rows").parse::<u64>().unwrap() > 1000,
            "{r}"
        );
        assert_eq!(param(r, "code.binary_hash").len(), 64, "{r}");
        assert!(param(r, "dataset.version").starts_with("sha256:"), "{r}");
    }
    let id = a["run_id"].as_str().unwrap();
    let shown = json(&sb, &["runs", "show", &id[..id.len() - 2], "--json"]);
    let points = shown["points"].as_array().unwrap();
    assert_eq!(
        points.len() as u64,
        steps[0],
        "every step of the trainer is recorded"
    );
    assert!(
        points.iter().all(|p| p["values"][0][0] == "loss"),
        "{shown}"
    );

    let only = json(
        &sb,
        &[
            "runs",
            "list",
            "--filter",
            "params.config.lr = 0.05",
            "--json",
        ],
    );
    assert_eq!(only.as_array().map(Vec::len), Some(1), "{only}");
    let sorted = json(
        &sb,
        &[
            "runs",
            "list",
            "--filter",
            "status = finished",
            "--sort",
            "params.config.lr",
            "--desc",
            "--json",
        ],
    );
    assert_eq!(param(&sorted[0], "config.lr"), "0.1");
    let bad = sb.run(&["runs", "list", "--filter", "loss < 1"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("unknown field \"loss\""),
        "{err}"
    );

    let plot = sb.temp().join("loss.svg");
    let out = sb.run(&[
        "runs",
        "compare",
        a["run_id"].as_str().unwrap(),
        b_run["run_id"].as_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
    ]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && table.contains("params.config.lr") && table.contains("0.05"),
        "{table}"
    );
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");

    // The registry: two versions from the two runs, an alias, a card.
    let card = sb.temp().join("card.md");
    std::fs::write(&card, "intent: 8x8 digits\nlimitations: toy data").unwrap();
    for r in [&a, &b_run] {
        let out = sb.run(&[
            "models",
            "register",
            "digits",
            "--run",
            r["run_id"].as_str().unwrap(),
            "--checkpoint",
            "/models/w",
            "--card",
            card.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = sb.run(&["models", "alias", "digits", "2", "champion"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = sb.run(&["models", "alias", "digits", "9", "champion"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("no version 9"),
        "{err}"
    );
    let model = json(&sb, &["models", "show", "digits", "--json"]);
    assert_eq!(
        model["versions"].as_array().map(Vec::len),
        Some(2),
        "{model}"
    );
    assert_eq!(model["aliases"][0], serde_json::json!(["champion", 2]));
    assert_eq!(model["versions"][1]["run_id"], b_run["run_id"]);
    assert!(model["versions"][0]["card"]
        .as_str()
        .unwrap()
        .contains("limitations"));
    assert_eq!(
        model["history"].as_array().map(Vec::len),
        Some(3),
        "{model}"
    );
    let text = String::from_utf8_lossy(&sb.run(&["models", "show", "digits"]).stdout).into_owned();
    assert!(
        text.contains("v2 [champion]") && text.contains("champion: -> v2"),
        "{text}"
    );

    // The head dies and comes back: its runs and models are still there.
    let (addr, _) = head.cluster();
    let port = addr.rsplit(':').next().unwrap().to_string();
    head.kill9();
    let _head2 = sb.spawn_in(
        "head2",
        &head.session,
        &["--head", "--head-only", "--port", &port],
    );
    let after = json(&sb, &["runs", "list", "--json"]);
    let again = after.as_array().unwrap();
    assert_eq!(again.len(), 2, "{after}");
    let shown = json(&sb, &["runs", "show", id, "--json"]);
    assert_eq!(
        shown["points"].as_array().map(Vec::len),
        Some(steps[0] as usize)
    );
    assert_eq!(shown["params"], a["params"]);
    assert_eq!(json(&sb, &["models", "show", "digits", "--json"]), model);
}

#[test]
fn eight_workers_logging_to_one_run_lose_no_metric() {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--num-cpus", "4"]);
    // The driver joins through a second raylet: artifacts cross nodes.
    let other = sb.start_raylet("other", &head, &["--num-cpus", "2"]);
    let mut job = Job::spawn("track", &sb.driver_envs(&head, &other));
    let (ok, out) = job.finish(Duration::from_secs(120));
    assert!(ok && out.contains("ALL OK"), "{out}");
    let field = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap()
            .trim()
            .to_string()
    };
    let (id, hash, big) = (field("RUN="), field("HASH="), field("BIG="));
    // Content-addressed next to the head's database.
    let stored = head.session.join("artifacts");
    assert_eq!(std::fs::read(stored.join(&hash)).unwrap(), b"weights");
    assert_eq!(std::fs::read(stored.join(&big)).unwrap().len(), 3_000_000);
    assert!(head.session.join("head.db").exists());
    // And out of it with the CLI, on the head's machine.
    let copy = sb.temp().join("copy.txt");
    let name = field("NAME=");
    let out = sb.run(&["runs", "artifact", &id, &name, "-o", copy.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&copy).unwrap(), b"weights");
    let out = sb.run(&[
        "runs",
        "artifact",
        &id,
        "nope.bin",
        "-o",
        copy.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(&name), "{err}");
    let complete = wait_until(Duration::from_secs(30), || {
        let shown = json(&sb, &["runs", "show", &id, "--json"]);
        shown["status"] == "finished"
            && shown["points"].as_array().is_some_and(|p| {
                p.len() == 50
                    && p.iter()
                        .all(|x| x["values"].as_array().map(Vec::len) == Some(8))
            })
    });
    let shown = json(&sb, &["runs", "show", &id, "--json"]);
    assert!(
        complete,
        "8 workers × 50 steps, every value recorded: {shown}"
    );
    assert_eq!(
        shown["points"][49]["values"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v[0] == "w7")
            .unwrap()[1],
        7049.0
    );
    assert_eq!(shown["params"]["lr"], "0.05");
    assert_eq!(shown["tags"]["team"], "vision");
    let artifact = shown["tags"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.starts_with("artifact."))
        .unwrap()
        .1
        .clone();
    assert!(
        artifact
            .as_str()
            .unwrap()
            .starts_with(&format!("sha256:{hash} 7 bytes stored at ")),
        "{artifact}"
    );
}

#[test]
fn pipeline_and_parameter_server_runs_are_recorded_too() {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--num-cpus", "4"]);
    let mut job = Job::spawn("others", &sb.driver_envs(&head, &head));
    let (ok, out) = job.finish(Duration::from_secs(240));
    assert!(ok && out.contains("ALL OK"), "{out}");
    for (key, trainer) in [("PIPE=", "PipelineTrainer"), ("PS=", "ParameterServer")] {
        let line = out
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap()
            .trim()
            .to_string();
        let (id, steps) = line.split_once(' ').unwrap();
        let steps: usize = steps.parse().unwrap();
        let recorded = wait_until(Duration::from_secs(30), || {
            let shown = json(&sb, &["runs", "show", id, "--json"]);
            shown["status"] == "finished" && shown["points"].as_array().map(Vec::len) == Some(steps)
        });
        let shown = json(&sb, &["runs", "show", id, "--json"]);
        assert!(recorded, "{trainer}: {steps} steps, finished: {shown}");
        assert_eq!(shown["params"]["trainer"], trainer);
        assert!(
            param(&shown, "dataset.version").starts_with("sha256:"),
            "{shown}"
        );
        assert!(shown["points"][0]["values"][0][0] == "loss", "{shown}");
    }
}
