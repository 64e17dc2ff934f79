//! Checkpoints: `<dir>/checkpoint-<step>/` holding `model.safetensors`
//! (the VarStore), `optim.safetensors` (momentum buffers) and `meta` (step
//! and epoch). Written under a temporary name and renamed, so a worker
//! killed mid-save never leaves a half checkpoint; the newest two are kept.

use super::optim::Sgd;
use crate::{MlError, Result};
use std::path::{Path, PathBuf};
use tch::nn::VarStore;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MlError + '_ {
    move |source| MlError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Checkpoint directories in `dir`, oldest first.
pub fn list(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let step = name.strip_prefix("checkpoint-")?.parse().ok()?;
            Some((step, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// Saves step `step` (epoch `epoch`).
pub fn save(dir: &Path, step: u64, epoch: u64, vs: &VarStore, opt: &Sgd) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = dir.join(format!(".tmp-{step}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    vs.save(tmp.join("model.safetensors"))?;
    let named: Vec<(String, &tch::Tensor)> = opt
        .state()
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("v{i}"), t))
        .collect();
    if !named.is_empty() {
        tch::Tensor::write_safetensors(&named, tmp.join("optim.safetensors"))?;
    }
    let meta = tmp.join("meta");
    std::fs::write(&meta, format!("{step} {epoch}\n")).map_err(io(&meta))?;
    let final_dir = dir.join(format!("checkpoint-{step}"));
    let _ = std::fs::remove_dir_all(&final_dir);
    std::fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
    let all = list(dir);
    for (_, old) in all.iter().take(all.len().saturating_sub(2)) {
        let _ = std::fs::remove_dir_all(old);
    }
    Ok(())
}

/// Loads the newest checkpoint into `vs` and `opt`: its (step, epoch).
pub fn load_latest(dir: &Path, vs: &mut VarStore, opt: &mut Sgd) -> Result<Option<(u64, u64)>> {
    let Some((_, path)) = list(dir).pop() else {
        return Ok(None);
    };
    load(&path, vs, opt).map(Some)
}

/// Loads one checkpoint directory into `vs` and `opt`: its (step, epoch).
pub fn load(path: &Path, vs: &mut VarStore, opt: &mut Sgd) -> Result<(u64, u64)> {
    vs.load(path.join("model.safetensors"))?;
    let optim = path.join("optim.safetensors");
    if optim.exists() {
        let mut named = tch::Tensor::read_safetensors(&optim)?;
        named.sort_by_key(|(k, _)| k.trim_start_matches('v').parse::<usize>().unwrap_or(0));
        opt.velocity = named.into_iter().map(|(_, t)| t).collect();
    }
    let meta_path = path.join("meta");
    let meta = std::fs::read_to_string(&meta_path).map_err(io(&meta_path))?;
    let mut it = meta.split_whitespace().map(|x| x.parse::<u64>());
    match (it.next(), it.next()) {
        (Some(Ok(step)), Some(Ok(epoch))) => Ok((step, epoch)),
        _ => Err(MlError::BadFile {
            path: meta_path,
            detail: format!("expected \"<step> <epoch>\", got {meta:?}"),
        }),
    }
}
