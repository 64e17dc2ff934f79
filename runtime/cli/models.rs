//! `prism models register | alias | card | list | show`: the model
//! registry on the head (durable on a durable head): versions made from
//! training runs, aliases such as `champion`, model cards, and who
//! changed what when. Names are per namespace: `--namespace` (or
//! `PRISM_NAMESPACE`) picks one; without it the head takes the one of the
//! caller's namespaces that has a model of that name (MN-2).

use crate::job::ClusterArgs;
use anyhow::{anyhow, bail};
use prism::proto::head::{HeadRequest, HeadResponse};
use prism::proto::models::{ModelInfo, ModelRequest};
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum ModelsCommand {
    /// Make the next version of NAME from a training run.
    Register {
        /// The model's name.
        name: String,
        /// The run that trained it (prism runs list).
        #[arg(long)]
        run: String,
        /// Where its weights are (a file or directory).
        #[arg(long, default_value = "")]
        checkpoint: String,
        /// A file holding its model card (intent, training data,
        /// evaluation, limitations).
        #[arg(long)]
        card: Option<PathBuf>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Point ALIAS (champion, challenger, any name) at VERSION.
    Alias {
        /// The model.
        name: String,
        /// The version.
        version: u32,
        /// The alias.
        alias: String,
        /// The model's namespace (default: the one of yours that has it).
        #[arg(long, env = "PRISM_NAMESPACE", default_value = "")]
        namespace: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Replace a version's model card with a file's text.
    Card {
        /// The model.
        name: String,
        /// The version.
        version: u32,
        /// The card's file.
        file: PathBuf,
        /// The model's namespace (default: the one of yours that has it).
        #[arg(long, env = "PRISM_NAMESPACE", default_value = "")]
        namespace: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Move ALIAS to VERSION only if it scores at least as well as the
    /// version holding it on a golden data set (both scored in tasks).
    /// Runs `prism-models-promote` (prism-ml's binary, which links
    /// libtorch) from beside this binary or the PATH.
    Promote {
        /// The model.
        name: String,
        /// The challenger version.
        version: u32,
        /// The alias to move.
        #[arg(long)]
        to: String,
        /// The golden data set (a .pdsf tensor file with labels).
        #[arg(long)]
        gate: PathBuf,
        /// What to compare (accuracy).
        #[arg(long, default_value = "accuracy")]
        metric: String,
        /// The model's namespace (default: the promoting job's).
        #[arg(long, env = "PRISM_NAMESPACE", default_value = "")]
        namespace: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Every model with its versions and aliases.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// One model: versions with their runs, metrics and cards, aliases,
    /// and its history.
    Show {
        /// The model.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The model's namespace (default: the one of yours that has it).
        #[arg(long, env = "PRISM_NAMESPACE", default_value = "")]
        namespace: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

fn ask(cluster: &ClusterArgs, req: ModelRequest) -> anyhow::Result<Vec<ModelInfo>> {
    match cluster.connect()?.request(&HeadRequest::Models(req))? {
        HeadResponse::Models(m) => Ok(m),
        HeadResponse::Error { message, .. } => bail!("{message}"),
        other => bail!("unexpected answer from the head: {other:?}"),
    }
}

fn read(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// Runs the promotion gate binary against the cluster `cluster` names.
fn promote(args: &[String], namespace: &str, cluster: &ClusterArgs) -> anyhow::Result<()> {
    const BIN: &str = "prism-models-promote";
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(BIN)))
        .filter(|p| p.is_file());
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(BIN))
            .find(|p| p.is_file())
    });
    let Some(bin) = beside.or(on_path) else {
        bail!(
            "prism models promote runs {BIN} (it links libtorch; this CLI does not), which is \
             neither beside this binary nor on the PATH: build it with \
             `cargo build --release -p prism-ml --bin {BIN}`"
        );
    };
    let info = cluster.info()?;
    let status = std::process::Command::new(&bin)
        .args(args)
        .env("PRISM_ADDRESS", &info.head_address)
        .env("PRISM_TOKEN", &info.token)
        .env("PRISM_TEMP_DIR", cluster.temp_dir())
        .env("PRISM_NAMESPACE", namespace)
        .status()
        .map_err(|e| anyhow!("{}: {e}", bin.display()))?;
    if !status.success() {
        bail!("not promoted ({BIN} {status})");
    }
    Ok(())
}

pub fn run(cmd: ModelsCommand) -> anyhow::Result<()> {
    match cmd {
        ModelsCommand::Promote {
            name,
            version,
            to,
            gate,
            metric,
            namespace,
            cluster,
        } => {
            let args = [
                name,
                version.to_string(),
                "--to".into(),
                to,
                "--gate".into(),
                gate.display().to_string(),
                "--metric".into(),
                metric,
            ];
            promote(&args, &namespace, &cluster)
        }
        ModelsCommand::Register {
            name,
            run,
            checkpoint,
            card,
            cluster,
        } => {
            let card = card.as_ref().map(read).transpose()?.unwrap_or_default();
            let m = ask(
                &cluster,
                ModelRequest::Register {
                    name,
                    run_id: run,
                    checkpoint,
                    card,
                    who: prism::models::who(),
                },
            )?;
            if let Some(v) = m.first().and_then(|m| m.versions.last().map(|v| (m, v))) {
                println!(
                    "{} v{} registered in namespace {} from run {}",
                    v.0.name, v.1.version, v.0.namespace, v.1.run_id
                );
            }
            Ok(())
        }
        ModelsCommand::Alias {
            name,
            version,
            alias,
            namespace,
            cluster,
        } => {
            ask(
                &cluster,
                ModelRequest::SetAlias {
                    namespace,
                    name: name.clone(),
                    alias: alias.clone(),
                    version,
                    who: prism::models::who(),
                },
            )?;
            println!("{name}@{alias} -> v{version}");
            Ok(())
        }
        ModelsCommand::Card {
            name,
            version,
            file,
            namespace,
            cluster,
        } => {
            let card = read(&file)?;
            ask(
                &cluster,
                ModelRequest::SetCard {
                    namespace,
                    name: name.clone(),
                    version,
                    card,
                    who: prism::models::who(),
                },
            )?;
            println!("card of {name} v{version} replaced");
            Ok(())
        }
        ModelsCommand::List { json, cluster } => {
            let models = ask(&cluster, ModelRequest::List)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&models)?);
                return Ok(());
            }
            println!(
                "{:<24} {:<16} {:>8}  ALIASES",
                "MODEL", "NAMESPACE", "VERSIONS"
            );
            for m in &models {
                let aliases: Vec<String> =
                    m.aliases.iter().map(|(a, v)| format!("{a}=v{v}")).collect();
                println!(
                    "{:<24} {:<16} {:>8}  {}",
                    m.name,
                    m.namespace,
                    m.versions.len(),
                    aliases.join(" ")
                );
            }
            Ok(())
        }
        ModelsCommand::Show {
            name,
            json,
            namespace,
            cluster,
        } => {
            let m = ask(&cluster, ModelRequest::Show { namespace, name })?
                .pop()
                .ok_or_else(|| anyhow!("no such model"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&m)?);
                return Ok(());
            }
            println!("model {} (namespace {})", m.name, m.namespace);
            for v in &m.versions {
                let aliases: Vec<&str> = m
                    .aliases
                    .iter()
                    .filter(|(_, n)| *n == v.version)
                    .map(|(a, _)| a.as_str())
                    .collect();
                let metrics: Vec<String> = v
                    .metrics
                    .iter()
                    .map(|(k, x)| format!("{k}={x:.4}"))
                    .collect();
                println!(
                    "  v{} {}  run {}  by {}  {}",
                    v.version,
                    if aliases.is_empty() {
                        String::new()
                    } else {
                        format!("[{}]", aliases.join(", "))
                    },
                    v.run_id,
                    v.created_by,
                    metrics.join(" ")
                );
                if !v.checkpoint.is_empty() {
                    println!("      weights: {}", v.checkpoint);
                }
                for line in v.card.lines() {
                    println!("      | {line}");
                }
            }
            println!("history:");
            for e in &m.history {
                println!("  {}  {:<12} {}", utc(e.at_ms), e.who, e.what);
            }
            Ok(())
        }
    }
}

/// `YYYY-MM-DD hh:mm:ss UTC` of a Unix time in ms.
pub(crate) fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_times_read_as_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc(1_796_162_755_135), "2026-12-01 22:05:55 UTC");
        assert_eq!(super::utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }
}
