//! `prism serve rollout | history | bench`: rollouts of a new version with
//! automatic rollback, their history, and the open-loop load generator.

use crate::job::ClusterArgs;
use crate::serve::{join, no_controller};
use anyhow::{bail, Context};
use prism_serve::{RolloutSpec, Strategy, Thresholds};
use std::time::Duration;

#[derive(clap::ValueEnum, Clone, Debug, PartialEq)]
pub enum StrategyArg {
    /// Traffic shares stepped up (--steps), analysed between steps.
    Canary,
    /// All traffic switched at once; the old set kept warm (--keep-warm-s).
    BlueGreen,
    /// A share of traffic mirrored (--percent); answers from the live version.
    Shadow,
}

#[derive(clap::Args, Debug)]
pub struct RolloutArgs {
    /// The running deployment.
    pub deployment: String,
    /// The new version's label (e.g. v2; with --registry it defaults to
    /// NAME@N).
    #[arg(long, default_value = "")]
    pub version: String,
    /// Serve a registry version (NAME@alias or NAME@3), pinned now: its
    /// checkpoint reaches the model as `checkpoint` in its user config.
    #[arg(long)]
    pub registry: Option<String>,
    /// Its registered model (default: the live one's).
    #[arg(long)]
    pub model: Option<String>,
    /// Its user config, JSON (default: the live one's).
    #[arg(long)]
    pub config: Option<String>,
    #[arg(long, value_enum, default_value = "canary")]
    pub strategy: StrategyArg,
    /// Canary traffic shares, percent.
    #[arg(long, value_delimiter = ',', default_value = "5,25,50,100")]
    pub steps: Vec<u32>,
    /// Seconds each canary step runs.
    #[arg(long, default_value_t = 60)]
    pub step_s: u64,
    /// Blue-green: seconds the old set stays warm after the switch.
    #[arg(long, default_value_t = 300)]
    pub keep_warm_s: u64,
    /// Shadow: percent of requests mirrored.
    #[arg(long, default_value_t = 100)]
    pub percent: u32,
    /// Shadow: seconds to mirror.
    #[arg(long, default_value_t = 300)]
    pub duration_s: u64,
    /// Shadow: promote the new version when it passed.
    #[arg(long)]
    pub promote: bool,
    /// Roll back above this error rate (0.01 = 1%).
    #[arg(long, default_value_t = 0.01)]
    pub max_error_rate: f64,
    /// Roll back above this p99 latency, ms.
    #[arg(long, default_value_t = 500.0)]
    pub max_p99_ms: f64,
    /// Shadow: roll back below this agreement with the live version (0-1).
    #[arg(long, default_value_t = 0.0)]
    pub min_agreement: f64,
    /// Seconds a threshold must stay crossed before the rollback.
    #[arg(long, default_value_t = 0)]
    pub for_s: u64,
    /// Seconds of traffic each analysis looks at.
    #[arg(long, default_value_t = 10)]
    pub window_s: u64,
    /// Requests a window needs before it is judged.
    #[arg(long, default_value_t = 20)]
    pub min_requests: u64,
    /// Keep each caller on one version by this header's value.
    #[arg(long)]
    pub sticky_header: Option<String>,
    /// Let clients see the new version's failures (by default a failed
    /// answer from it is retried on the live version).
    #[arg(long)]
    pub no_retry_on_live: bool,
    /// Wait for the rollout to end and print how (exit 1 on rollback).
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

pub fn rollout(a: RolloutArgs) -> anyhow::Result<()> {
    let strategy = match a.strategy {
        StrategyArg::Canary => Strategy::Canary {
            steps: a.steps.clone(),
            step_s: a.step_s,
        },
        StrategyArg::BlueGreen => Strategy::BlueGreen {
            keep_warm_s: a.keep_warm_s,
        },
        StrategyArg::Shadow => Strategy::Shadow {
            percent: a.percent,
            duration_s: a.duration_s,
            promote: a.promote,
        },
    };
    strategy.validate().map_err(anyhow::Error::msg)?;
    let mut spec = RolloutSpec::new(&a.deployment, &a.version, strategy)
        .thresholds(Thresholds {
            max_error_rate: a.max_error_rate,
            max_p99_ms: a.max_p99_ms,
            min_agreement: a.min_agreement,
            for_s: a.for_s,
            window_s: a.window_s,
            min_requests: a.min_requests,
        })
        .retry_on_live(!a.no_retry_on_live);
    if let Some(m) = &a.model {
        spec = spec.model(m);
    }
    if let Some(c) = &a.config {
        let v: serde_json::Value = serde_json::from_str(c).context("--config is not JSON")?;
        spec = spec.user_config(v);
    }
    if let Some(h) = &a.sticky_header {
        spec = spec.sticky_header(h);
    }
    match &a.registry {
        Some(r) => spec = spec.registry(r),
        None if a.version.is_empty() => {
            bail!("give the new version a --version label (or --registry NAME@alias)")
        }
        None => {}
    }
    let _c = join(&a.cluster)?;
    prism_serve::rollout(spec).map_err(no_controller)?;
    let what = format!(
        "{}: rolling out {}",
        a.deployment,
        a.registry.as_deref().unwrap_or(&a.version)
    );
    println!("{what}");
    crate::access::note(&a.cluster.info()?, "serve.rollout", what);
    if !a.wait {
        return Ok(());
    }
    let end = prism_serve::wait_rollout(&a.deployment, Duration::from_secs(24 * 3600))?;
    println!(
        "{}: {} {} → {}: {}",
        end.deployment, end.event, end.to, end.from, end.detail
    );
    if end.event == "rolled back" {
        bail!(
            "the rollout of {} {} was rolled back",
            a.deployment,
            a.version
        );
    }
    Ok(())
}

/// The human form of `history`.
pub fn history_table(h: &[prism_serve::HistoryEntry]) -> String {
    if h.is_empty() {
        return "no rollouts\n".into();
    }
    let mut out = format!(
        "{:<24} {:<16} {:<8} {:<8} {:<12} DETAIL\n",
        "WHEN (UTC)", "DEPLOYMENT", "FROM", "TO", "EVENT"
    );
    for e in h {
        out.push_str(&format!(
            "{:<24} {:<16} {:<8} {:<8} {:<12} {}\n",
            crate::models::utc(e.at_unix_ms),
            e.deployment,
            e.from,
            e.to,
            e.event,
            e.detail
        ));
    }
    out
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// http://host:port/path
    pub url: String,
    /// Requests per second.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Seconds to send.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// A request body (POST); `@FILE` reads it from a file.
    #[arg(long)]
    pub body: Option<String>,
    /// Connections at most.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// A request's time limit, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// Extra header, `Name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn bench(a: BenchArgs) -> anyhow::Result<()> {
    if !(a.duration > 0.0 && a.timeout > 0.0) {
        bail!("--duration and --timeout must be > 0");
    }
    let mut spec =
        prism_serve::loadgen::LoadSpec::new(&a.url, a.rate, Duration::from_secs_f64(a.duration));
    spec.connections = a.connections;
    spec.timeout = Duration::from_secs_f64(a.timeout);
    spec.body = match a.body {
        Some(b) => Some(match b.strip_prefix('@') {
            Some(f) => std::fs::read(f).with_context(|| format!("--body @{f}"))?,
            None => b.into_bytes(),
        }),
        None => None,
    };
    for h in &a.headers {
        let Some((k, v)) = h.split_once(':') else {
            bail!("--header {h:?} is not `Name: value`");
        };
        spec.headers
            .push((k.trim().to_string(), v.trim().to_string()));
    }
    let r = prism_serve::loadgen::run(&spec, None)?;
    if a.json {
        let v = serde_json::json!({
            "sent": r.sent, "ok": r.ok, "failed": r.failed, "by_version": r.by_version,
            "p50_us": r.p50_us, "p95_us": r.p95_us, "p99_us": r.p99_us,
            "p999_us": r.p999_us, "max_us": r.max_us, "elapsed_s": r.elapsed_s,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{r}");
    }
    Ok(())
}
