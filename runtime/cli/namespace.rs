//! `prism namespace encrypt NS [--off]`: seal (or stop sealing) the files
//! a namespace's jobs keep at rest — checkpoints, parameter-server shards
//! — with the namespace's own key (`prism::at_rest`). The mark is the
//! head's (durable, audited as `namespace.at_rest`, `quotas:manage`);
//! `prism queue` lists the namespaces that seal.

use crate::job::ClusterArgs;
use prism::proto::queue::QueueRequest;

/// `prism namespace`'s subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum NamespaceCommand {
    /// Seal the files this namespace's jobs keep at rest with its own key
    /// (files written before stay as they are).
    Encrypt {
        /// The namespace.
        namespace: String,
        /// Stop sealing (files sealed before still open for its members).
        #[arg(long)]
        off: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

pub fn run(c: NamespaceCommand) -> anyhow::Result<()> {
    match c {
        NamespaceCommand::Encrypt {
            namespace,
            off,
            cluster,
        } => {
            let req = QueueRequest::SetAtRest {
                namespace: namespace.clone(),
                seal: !off,
            };
            let view = crate::queue::ask(&cluster, req)?;
            let sealed = view.sealed.contains(&namespace);
            println!(
                "namespace {namespace}: files at rest {}",
                if sealed {
                    "are sealed with its own key"
                } else {
                    "are written as they are (or sealed with the cluster's key where the cluster encrypts)"
                }
            );
            Ok(())
        }
    }
}
