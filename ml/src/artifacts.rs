//! Artifacts stored on the head's machine, next to its database: a file a
//! run logs is put in the object store, and a task pinned to the head's
//! node (the raylet beside the head shares its session directory) writes
//! it to `<head session>/artifacts/<sha256>`, content-addressed, written to
//! a temporary name and renamed, so a second copy of the same bytes is one
//! file. The bytes move between raylets over the object transfer path,
//! never through the head's control connection. [`fetch`] reads one back
//! from anywhere in the cluster; on the head's machine the file is there.

use crate::{MlError, Result};
use prism::raylet::workers::vars::SESSION_DIR;
use prism::raylet::workers::{hex, sha256};
use std::path::PathBuf;

fn here() -> std::result::Result<PathBuf, String> {
    let s = std::env::var(SESSION_DIR)
        .map_err(|_| format!("{SESSION_DIR} is not set: not a worker of a raylet"))?;
    Ok(std::path::Path::new(&s).join(prism::session::ARTIFACTS_DIR))
}

fn valid(hash: &str) -> std::result::Result<(), String> {
    match hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        true => Ok(()),
        false => Err(format!("{hash:?} is not a SHA-256 in hex")),
    }
}

/// Writes `bytes` (whose SHA-256 is `hash`) into this node's artifact
/// directory; returns the file's path.
#[prism::remote]
pub fn store_artifact(hash: String, bytes: Vec<u8>) -> std::result::Result<String, String> {
    valid(&hash)?;
    if hex(&sha256(&bytes)) != hash {
        return Err(format!(
            "artifact {hash}: the bytes that arrived hash differently"
        ));
    }
    let dir = here()?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(&hash);
    if !path.exists() {
        let tmp = dir.join(format!(".{hash}.{}", std::process::id()));
        std::fs::write(&tmp, &bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(path.display().to_string())
}

/// Reads an artifact from this node's artifact directory.
#[prism::remote]
pub fn read_artifact(hash: String) -> std::result::Result<Vec<u8>, String> {
    valid(&hash)?;
    let path = here()?.join(&hash);
    std::fs::read(&path).map_err(|e| format!("artifact {hash} at {}: {e}", path.display()))
}

/// The head's node (its raylet writes the artifacts).
fn head_node() -> Result<prism::NodeId> {
    let nodes = prism::cluster::nodes()?;
    nodes
        .iter()
        .find(|n| n.is_head && n.state == prism::proto::common::NodeState::Alive)
        .map(|n| n.node_id)
        .ok_or_else(|| MlError::Train("no live raylet beside the head to store artifacts".into()))
}

/// Stores `bytes` on the head's machine; returns (SHA-256, path there).
pub fn store(bytes: Vec<u8>) -> Result<(String, String)> {
    let hash = hex(&sha256(&bytes));
    let data = prism::put(&bytes)?;
    let path = store_artifact::options()
        .node_affinity(head_node()?, false)
        .remote(hash.clone(), data)?
        .get()?
        .map_err(MlError::Train)?;
    Ok((hash, path))
}

/// The bytes of the artifact whose SHA-256 is `hash` (from a run's
/// `artifact.<name>` tag), from the head's machine.
pub fn fetch(hash: &str) -> Result<Vec<u8>> {
    read_artifact::options()
        .node_affinity(head_node()?, false)
        .remote(hash.to_string())?
        .get()?
        .map_err(MlError::Train)
}
