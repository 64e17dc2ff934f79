//! `prism serve deploy | status | delete | shutdown | rollout | rollback |
//! history | bench`: talk to the serve controller of the namespace
//! `PRISM_NAMESPACE` names (else the caller's first) as a driver. The
//! controller, its proxy and replicas run the binary that started serving
//! (the one holding the models: `prism_serve::run_config` or
//! `prism_serve::start` in a program of yours), so `deploy` updates
//! applications that binary can build.

use crate::job::ClusterArgs;
use crate::serve_rollout::{BenchArgs, RolloutArgs};
use anyhow::{anyhow, Context};
use serde_json::Value;
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum ServeCommand {
    /// Deploy or update the applications of a serve config file (serve.yaml)
    /// on the running controller: replicas roll over one at a time with one
    /// extra, a user_config change alone reconfigures them in place.
    Deploy {
        /// The serve config file.
        config: PathBuf,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Applications, deployments and replicas with their counters.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Remove one application (its replicas finish their requests first).
    Delete {
        /// The application.
        app: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Remove every application, the HTTP proxy and the controller.
    Shutdown {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Roll a new version out over a running deployment (canary, blue-green
    /// or shadow) with automatic rollback when it fails its thresholds.
    Rollout(Box<RolloutArgs>),
    /// Roll a deployment's rollout back now.
    Rollback {
        /// The deployment.
        deployment: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Every rollout, step, promotion and rollback of a deployment.
    History {
        /// The deployment (all when absent).
        deployment: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Open-loop HTTP load (requests leave on schedule whatever the
    /// server does; latency counts from the due time): p50/p95/p99/p99.9.
    Bench(BenchArgs),
}

/// Joins the cluster the flags name as a driver, in the namespace whose
/// serving it reaches: `PRISM_NAMESPACE`, else the caller's first (the
/// one `prism submit` runs their jobs in).
pub(crate) fn join(cluster: &ClusterArgs) -> anyhow::Result<prism::Cluster> {
    let info = cluster.info()?;
    if std::env::var("PRISM_NAMESPACE").map_or(true, |n| n.is_empty()) {
        let ns = crate::access::home_namespace(cluster)
            .context("cannot ask the head which namespace is yours")?;
        // Set before the runtime starts a thread: nothing reads it yet.
        std::env::set_var("PRISM_NAMESPACE", ns);
    }
    std::env::set_var("PRISM_ADDRESS", &info.head_address);
    std::env::set_var("PRISM_TOKEN", &info.token);
    std::env::set_var("PRISM_TEMP_DIR", cluster.temp_dir());
    prism::init().with_context(|| format!("cannot join the cluster at {}", info.head_address))
}

pub(crate) fn no_controller(e: prism_serve::ServeError) -> anyhow::Error {
    match e {
        prism_serve::ServeError::Prism(prism::Error::Task(prism::TaskError::NoSuchActor {
            ..
        })) => anyhow!(
            "no serve controller runs in namespace {} (each namespace serves its own; \
             PRISM_NAMESPACE picks it, else your first): start serving from the program that \
             holds your models (prism_serve::run_config(\"serve.yaml\") or prism_serve::start), \
             e.g. with `prism submit -- ./your-models serve.yaml`",
            prism::masking::namespace()
        ),
        other => anyhow!(other),
    }
}

pub fn run(cmd: ServeCommand) -> anyhow::Result<()> {
    match cmd {
        ServeCommand::Deploy { config, cluster } => {
            let cfg = prism_serve::ServeConfig::load(&config)?;
            let _c = join(&cluster)?;
            prism_serve::status().map_err(no_controller)?;
            let info = cluster.info()?;
            for app in cfg.apps() {
                let name = app.name.clone();
                prism_serve::deploy(app).with_context(|| format!("application {name}"))?;
                println!("application {name}: running");
                let target = format!("application {name} from {}", config.display());
                crate::access::note(&info, "serve.deploy", target);
            }
            Ok(())
        }
        ServeCommand::Status { json, cluster } => {
            let _c = join(&cluster)?;
            let s = prism_serve::status().map_err(no_controller)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print!("{}", table(&s));
            }
            Ok(())
        }
        ServeCommand::Delete { app, cluster } => {
            let _c = join(&cluster)?;
            prism_serve::status().map_err(no_controller)?;
            prism_serve::delete(&app)?;
            println!("application {app}: deleted");
            crate::access::note(
                &cluster.info()?,
                "serve.delete",
                format!("application {app}"),
            );
            Ok(())
        }
        ServeCommand::Shutdown { cluster } => {
            let _c = join(&cluster)?;
            prism_serve::status()
                .map_err(no_controller)
                .context("nothing to shut down")?;
            prism_serve::shutdown()?;
            println!("serve: shut down");
            Ok(())
        }
        ServeCommand::Rollout(a) => crate::serve_rollout::rollout(*a),
        ServeCommand::Rollback {
            deployment,
            cluster,
        } => {
            let _c = join(&cluster)?;
            prism_serve::rollback(&deployment).map_err(no_controller)?;
            println!("{deployment}: rolled back");
            Ok(())
        }
        ServeCommand::History {
            deployment,
            json,
            cluster,
        } => {
            let _c = join(&cluster)?;
            let h =
                prism_serve::history(deployment.as_deref().unwrap_or("")).map_err(no_controller)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&h)?);
            } else {
                print!("{}", crate::serve_rollout::history_table(&h));
            }
            Ok(())
        }
        ServeCommand::Bench(a) => crate::serve_rollout::bench(a),
    }
}

/// The human form of `status`.
fn table(s: &Value) -> String {
    let mut out = String::new();
    let empty = Vec::new();
    let deps = s["deployments"].as_array().unwrap_or(&empty);
    if deps.is_empty() {
        out.push_str("no applications\n");
    }
    out.push_str(&format!(
        "{:<12} {:<16} {:<12} {:>7} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8}\n",
        "APP",
        "DEPLOYMENT",
        "ROUTE",
        "VERSION",
        "REPLICAS",
        "REQUESTS",
        "ERRORS",
        "REQ/S",
        "P50 ms",
        "P99 ms"
    ));
    for d in deps {
        let replicas = d["replicas"].as_array().unwrap_or(&empty);
        let requests: u64 = replicas.iter().filter_map(|r| r["requests"].as_u64()).sum();
        let errors: u64 = replicas.iter().filter_map(|r| r["errors"].as_u64()).sum();
        let w = &d["window"];
        let f = |k: &str| w[k].as_f64().unwrap_or(0.0);
        out.push_str(&format!(
            "{:<12} {:<16} {:<12} {:>7} {:>9} {:>10} {:>8} {:>8.1} {:>8.3} {:>8.3}\n",
            d["application"].as_str().unwrap_or("-"),
            d["deployment"].as_str().unwrap_or("-"),
            d["route_prefix"].as_str().unwrap_or("-"),
            d["version_label"].as_str().unwrap_or("-"),
            format!("{}/{}", replicas.len(), d["target_replicas"]),
            requests,
            errors,
            f("rate"),
            f("p50_ms"),
            f("p99_ms"),
        ));
        if let Some(r) = d["rollout"].as_object() {
            out.push_str(&format!(
                "  rollout {} -> {}: {} ({}% of traffic, {}% mirrored)\n",
                r["from"].as_str().unwrap_or("?"),
                r["to"].as_str().unwrap_or("?"),
                r["phase"].as_str().unwrap_or("?"),
                r["weight"],
                r["mirror"],
            ));
        }
        if let Some(e) = d["last_error"].as_str() {
            out.push_str(&format!("  last error: {e}\n"));
        }
    }
    if let Some(p) = s["proxies"].as_array() {
        for a in p {
            out.push_str(&format!(
                "HTTP proxy: http://{}\n",
                a["address"].as_str().unwrap_or("?")
            ));
        }
    }
    out
}
