//! `prism k8s`: the cluster a cluster.yaml describes, on Kubernetes.

use crate::launcher::config::ClusterConfig;
use crate::launcher::kubernetes;
use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum K8sCommand {
    /// Write the manifests (a head Deployment + Service + volume, a
    /// Deployment per worker group) for `kubectl apply -f`.
    Manifests {
        /// The cluster's file.
        config: PathBuf,
        /// Write here instead of to standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Print a Secret with a new CA and join token for the cluster (apply
    /// it once, before the manifests; it is never written to a file here).
    Secret {
        /// The cluster's file.
        config: PathBuf,
    },
}

pub fn run(cmd: K8sCommand) -> anyhow::Result<()> {
    match cmd {
        K8sCommand::Manifests { config, output } => {
            let c = ClusterConfig::load(&config)?;
            for (what, empty) in [
                ("setup_commands", c.setup_commands.is_empty()),
                ("file_mounts", c.file_mounts.is_empty()),
            ] {
                if !empty {
                    eprintln!(
                        "note: {what} does not apply on Kubernetes: bake it into the image ({})",
                        c.kubernetes.image
                    );
                }
            }
            let yaml = kubernetes::manifests(&c, &config.display().to_string())?;
            match output {
                Some(path) => std::fs::write(&path, yaml)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => std::io::stdout().write_all(yaml.as_bytes())?,
            }
            Ok(())
        }
        K8sCommand::Secret { config } => {
            let c = ClusterConfig::load(&config)?;
            let id = prism::head::identity::ClusterIdentity::generate()?;
            let header =
                "# A new CA and join token for the cluster: `kubectl apply -f -` it once.\n";
            let yaml = kubernetes::to_yaml(header, &[kubernetes::secret(&c, &id)])?;
            std::io::stdout().write_all(yaml.as_bytes())?;
            Ok(())
        }
    }
}
