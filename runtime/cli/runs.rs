//! `prism runs list | show | compare`: the training runs the head keeps
//! (durably, on a durable head): params, tags, status and per-step
//! metrics, as every `DdpTrainer` run (or any loop calling
//! `prism::report_run` / `prism::log_run_params`) records them.

use crate::job::ClusterArgs;
use crate::runs_filter::{self, Filter};
use anyhow::{anyhow, bail};
use prism::proto::head::{HeadRequest, HeadResponse};
use prism::proto::runs::{RunInfo, RunPoint};
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum RunsCommand {
    /// Every run, newest first (or --sort), with its status, step and last metrics.
    List {
        /// Keep runs where FIELD OP VALUE holds (repeatable): metrics.NAME,
        /// params.NAME, tags.NAME, status, name, step; OP one of < <= > >= = !=.
        #[arg(long)]
        filter: Vec<String>,
        /// Sort by a field (ascending; --desc for descending).
        #[arg(long)]
        sort: Option<String>,
        /// Sort descending.
        #[arg(long)]
        desc: bool,
        /// At most this many rows.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// One run: params, tags, status and every recorded step.
    Show {
        /// The run's id (a unique prefix is enough).
        run: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Runs side by side: params and last metrics; --plot draws a metric.
    Compare {
        /// Two or more run ids (unique prefixes are enough).
        #[arg(num_args = 2.., required = true)]
        runs: Vec<String>,
        /// The metric to plot (default: the first one of the first run).
        #[arg(long)]
        metric: Option<String>,
        /// Write an SVG plot of the metric over steps, one line per run.
        #[arg(long)]
        plot: Option<PathBuf>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Copy an artifact a run logged (prism_ml::track::Run::log_artifact)
    /// out of the head's artifact store; run it on the head's machine.
    Artifact {
        /// The run's id (a unique prefix is enough).
        run: String,
        /// The artifact's file name.
        name: String,
        /// Where to write it.
        #[arg(short, long)]
        output: PathBuf,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

/// Copies artifact `name` of run `run` from the head's artifact store (in
/// the head's session directory on this machine) to `output`.
fn artifact(cluster: &ClusterArgs, run: &str, name: &str, output: &PathBuf) -> anyhow::Result<()> {
    let id = resolve(&list(cluster)?, run)?;
    let (info, _) = get(cluster, &id)?;
    let key = format!("artifact.{name}");
    let Some((_, tag)) = info.tags.iter().find(|(k, _)| *k == key) else {
        let have: Vec<&str> = info
            .tags
            .iter()
            .filter_map(|(k, _)| k.strip_prefix("artifact."))
            .collect();
        bail!("run {id} has no artifact {name:?} (it has {have:?})");
    };
    let hash = tag
        .strip_prefix("sha256:")
        .and_then(|t| t.split_whitespace().next())
        .ok_or_else(|| anyhow!("artifact {name}: unreadable tag {tag:?}"))?;
    let head = cluster.info()?.head_address;
    let here = prism::session::SessionDir::list(cluster.temp_dir())
        .into_iter()
        .find(|s| {
            s.file(prism::session::ARTIFACTS_DIR).join(hash).is_file()
                && s.read_json::<prism::session::ReadyInfo>("ready.json")
                    .ok()
                    .flatten()
                    .is_some_and(|r| r.kind == "head" && r.head_address == head)
        });
    let Some(session) = here else {
        bail!(
            "artifact {name} (sha256 {hash}) is stored on the head's machine ({head}), not \
             here: run this there, or read it from a driver with prism_ml::artifacts::fetch"
        );
    };
    let from = session.file(prism::session::ARTIFACTS_DIR).join(hash);
    std::fs::copy(&from, output)
        .map_err(|e| anyhow!("{} -> {}: {e}", from.display(), output.display()))?;
    println!("{name} ({hash}) -> {}", output.display());
    Ok(())
}

fn list(cluster: &ClusterArgs) -> anyhow::Result<Vec<RunInfo>> {
    match cluster.connect()?.request(&HeadRequest::ListRuns)? {
        HeadResponse::Runs(r) => Ok(r),
        HeadResponse::Error { message, .. } => bail!("{message}"),
        other => bail!("unexpected answer from the head: {other:?}"),
    }
}

/// The run whose id is `prefix` or starts with it (one only).
fn resolve(all: &[RunInfo], prefix: &str) -> anyhow::Result<String> {
    if let Some(r) = all.iter().find(|r| r.run_id == prefix) {
        return Ok(r.run_id.clone());
    }
    let hits: Vec<&RunInfo> = all
        .iter()
        .filter(|r| r.run_id.starts_with(prefix))
        .collect();
    match hits.as_slice() {
        [one] => Ok(one.run_id.clone()),
        [] => bail!("no run {prefix:?} (prism runs list shows them)"),
        many => bail!(
            "{prefix:?} names {} runs: {}",
            many.len(),
            many.iter()
                .map(|r| r.run_id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn get(cluster: &ClusterArgs, run_id: &str) -> anyhow::Result<(RunInfo, Vec<RunPoint>)> {
    match cluster.connect()?.request(&HeadRequest::GetRun {
        run_id: run_id.to_string(),
    })? {
        HeadResponse::Run(Some(r)) => Ok(r),
        HeadResponse::Run(None) => bail!("no run {run_id:?}"),
        other => bail!("unexpected answer from the head: {other:?}"),
    }
}

fn metrics(values: &[(String, f64)]) -> String {
    values
        .iter()
        .map(|(k, v)| format!("{k}={v:.4}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn info_json(r: &RunInfo) -> Value {
    json!({
        "run_id": r.run_id, "name": r.name, "job_id": r.job_id.to_string(), "status": r.status,
        "steps": r.points, "last_step": r.last_step,
        "metrics": r.last_values.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "params": r.params.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "tags": r.tags.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "started_ms": r.started_ms, "updated_ms": r.updated_ms,
    })
}

pub fn run(cmd: RunsCommand) -> anyhow::Result<()> {
    match cmd {
        RunsCommand::List {
            filter,
            sort,
            desc,
            limit,
            json,
            cluster,
        } => {
            let filters = filter
                .iter()
                .map(|f| runs_filter::parse(f))
                .collect::<Result<Vec<Filter>, String>>()
                .map_err(|e| anyhow!(e))?;
            if let Some(s) = &sort {
                runs_filter::check_field(s).map_err(|e| anyhow!(e))?;
            }
            let mut runs: Vec<RunInfo> = list(&cluster)?
                .into_iter()
                .filter(|r| filters.iter().all(|f| f.matches(r)))
                .collect();
            if let Some(s) = &sort {
                // Runs without the field go last either way.
                runs.sort_by(
                    |a, b| match (runs_filter::field(a, s), runs_filter::field(b, s)) {
                        (Some(x), Some(y)) if desc => y.cmp(&x),
                        (Some(x), Some(y)) => x.cmp(&y),
                        (Some(_), None) => std::cmp::Ordering::Less,
                        (None, Some(_)) => std::cmp::Ordering::Greater,
                        (None, None) => std::cmp::Ordering::Equal,
                    },
                );
            }
            runs.truncate(limit);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&runs.iter().map(info_json).collect::<Vec<_>>())?
                );
                return Ok(());
            }
            println!(
                "{:<28} {:<18} {:<10} {:>7}  METRICS",
                "RUN", "NAME", "STATUS", "STEP"
            );
            for r in &runs {
                let status = r.status.split(':').next().unwrap_or("");
                println!(
                    "{:<28} {:<18} {:<10} {:>7}  {}",
                    r.run_id,
                    r.name,
                    status,
                    r.last_step,
                    metrics(&r.last_values)
                );
            }
            Ok(())
        }
        RunsCommand::Artifact {
            run,
            name,
            output,
            cluster,
        } => artifact(&cluster, &run, &name, &output),
        RunsCommand::Show { run, json, cluster } => {
            let id = resolve(&list(&cluster)?, &run)?;
            let (info, points) = get(&cluster, &id)?;
            if json {
                let mut v = info_json(&info);
                v["points"] = json!(points);
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            println!("run {}  ({}, job {})", info.run_id, info.name, info.job_id);
            println!("status: {}", info.status);
            for (title, kv) in [("params", &info.params), ("tags", &info.tags)] {
                println!("{title}:");
                for (k, v) in kv.iter() {
                    println!("  {k} = {v}");
                }
            }
            println!("{} steps (last {}):", info.points, info.last_step);
            for p in &points {
                println!(
                    "  {:>7}  {:>8.2}s  {}",
                    p.step,
                    p.seconds,
                    metrics(&p.values)
                );
            }
            Ok(())
        }
        RunsCommand::Compare {
            runs,
            metric,
            plot,
            cluster,
        } => {
            let all = list(&cluster)?;
            let got = runs
                .iter()
                .map(|r| resolve(&all, r).and_then(|id| get(&cluster, &id)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            print!("{}", compare_table(&got));
            if let Some(path) = plot {
                let metric = metric
                    .or_else(|| got[0].0.last_values.first().map(|(k, _)| k.clone()))
                    .ok_or_else(|| anyhow!("the runs have no metric to plot"))?;
                std::fs::write(&path, svg(&got, &metric))?;
                println!("plot of {metric}: {}", path.display());
            }
            Ok(())
        }
    }
}

/// Params and last metrics, one column per run.
fn compare_table(runs: &[(RunInfo, Vec<RunPoint>)]) -> String {
    let mut keys: Vec<String> = Vec::new();
    for (r, _) in runs {
        for (k, _) in &r.params {
            if !keys.contains(&format!("params.{k}")) {
                keys.push(format!("params.{k}"));
            }
        }
    }
    for (r, _) in runs {
        for (k, _) in &r.last_values {
            if !keys.contains(&format!("metrics.{k}")) {
                keys.push(format!("metrics.{k}"));
            }
        }
    }
    let mut out = format!("{:<24}", "");
    for (r, _) in runs {
        out.push_str(&format!(" {:>20}", truncate(&r.run_id, 20)));
    }
    out.push('\n');
    for k in ["status", "step"].iter().map(|s| s.to_string()).chain(keys) {
        out.push_str(&format!("{:<24}", truncate(&k, 24)));
        for (r, _) in runs {
            let v = match runs_filter::field(r, &k) {
                Some(runs_filter::Val::Num(n)) => format!("{n:.6}")
                    .trim_end_matches('0')
                    .trim_end_matches('.')
                    .to_string(),
                Some(runs_filter::Val::Text(t)) => t,
                None => "-".into(),
            };
            out.push_str(&format!(" {:>20}", truncate(&v, 20)));
        }
        out.push('\n');
    }
    out
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).collect::<String>() + "…"
    }
}

/// One polyline per run of `metric` over steps (an SVG file).
pub fn svg(runs: &[(RunInfo, Vec<RunPoint>)], metric: &str) -> String {
    let series: Vec<(String, Vec<(f64, f64)>)> = runs
        .iter()
        .map(|(r, pts)| {
            let xy = pts
                .iter()
                .filter_map(|p| {
                    p.values
                        .iter()
                        .find(|(k, _)| k == metric)
                        .map(|(_, v)| (p.step as f64, *v))
                })
                .filter(|(_, v)| v.is_finite())
                .collect();
            (r.run_id.clone(), xy)
        })
        .collect();
    let all = series.iter().flat_map(|(_, s)| s.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let (w, h, m) = (640.0, 360.0, 40.0);
    let sx = |x: f64| m + (x - x0) / (x1 - x0).max(1e-12) * (w - 2.0 * m);
    let sy = |y: f64| h - m - (y - y0) / (y1 - y0).max(1e-12) * (h - 2.0 * m);
    let colors = [
        "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
    ];
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{m}\" y=\"20\" font-family=\"sans-serif\" font-size=\"14\">{metric} over steps ({y0:.4} .. {y1:.4})</text>\n"
    );
    for (i, (id, s)) in series.iter().enumerate() {
        let c = colors[i % colors.len()];
        let pts: Vec<String> = s
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        out.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"1.5\" points=\"{}\"/>\n\
             <text x=\"{}\" y=\"{}\" fill=\"{c}\" font-family=\"sans-serif\" font-size=\"12\">{id}</text>\n",
            pts.join(" "),
            w - 200.0,
            40.0 + 16.0 * i as f64
        ));
    }
    out.push_str("</svg>\n");
    out
}
