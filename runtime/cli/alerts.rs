//! `prism alerts`: the serve controller's alert rules, what fires now and
//! every notice sent; `prism alerts set rules.yaml` replaces the rules.

use crate::job::ClusterArgs;
use crate::serve::{join, no_controller};
use serde_json::Value;
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum AlertsCommand {
    /// Rules, alerts firing now and the notices sent (newest last).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Replace the rules with a rules file (see serve/alerts.yaml).
    Set {
        /// The rules file.
        rules: PathBuf,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

pub fn run(cmd: AlertsCommand) -> anyhow::Result<()> {
    match cmd {
        AlertsCommand::List { json, cluster } => {
            let _c = join(&cluster)?;
            let a = prism_serve::alerts().map_err(no_controller)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&a)?);
            } else {
                print!("{}", table(&a));
            }
            Ok(())
        }
        AlertsCommand::Set { rules, cluster } => {
            let r = prism_serve::alerts::Rules::load(&rules)?;
            let n = r.rules.len();
            let _c = join(&cluster)?;
            prism_serve::set_alert_rules(r).map_err(no_controller)?;
            println!("{n} alert rules set from {}", rules.display());
            Ok(())
        }
    }
}

fn table(a: &Value) -> String {
    let empty = Vec::new();
    let mut out = format!(
        "{:<16} {:<16} {:>10} {:>6} {:<9} WEBHOOKS\n",
        "RULE", "METRIC", "THRESHOLD", "FOR S", "SEVERITY"
    );
    for r in a["rules"].as_array().unwrap_or(&empty) {
        out.push_str(&format!(
            "{:<16} {:<16} {:>10} {:>6} {:<9} {}\n",
            r["name"].as_str().unwrap_or("?"),
            r["metric"].as_str().unwrap_or("?"),
            r["threshold"],
            r["for_s"],
            r["severity"].as_str().unwrap_or("?"),
            r["webhooks"].as_array().map_or(0, |w| w.len()),
        ));
    }
    let firing = a["firing"].as_array().unwrap_or(&empty);
    out.push_str(&format!("firing now: {}\n", firing.len()));
    for f in firing {
        out.push_str(&format!(
            "  {} on {}\n",
            f[0].as_str().unwrap_or("?"),
            f[1].as_str().unwrap_or("?")
        ));
    }
    for n in a["notices"].as_array().unwrap_or(&empty) {
        let text = n["rule"].as_str().map(|_| {
            format!(
                "{} {} {} of {} = {:.4} (threshold {})",
                crate::models::utc(n["at_unix_ms"].as_u64().unwrap_or(0)),
                n["kind"].as_str().unwrap_or("?"),
                n["metric"].as_str().unwrap_or("?"),
                n["deployment"].as_str().unwrap_or("?"),
                n["value"].as_f64().unwrap_or(0.0),
                n["threshold"],
            )
        });
        out.push_str(&format!("  {}\n", text.unwrap_or_default()));
    }
    out.push_str(&format!(
        "webhook deliveries: {} ok, {} failed\n",
        a["delivered"], a["delivery_failures"]
    ));
    out
}
