//! Checkpoints: `<dir>/checkpoint-<step>/` holding `model.safetensors`
//! (the VarStore), `optim.safetensors` (momentum buffers) and `meta` (step
//! and epoch). Written under a temporary name and renamed, so a worker
//! killed mid-save never leaves a half checkpoint; the newest two are kept.
//! On a cluster that encrypts at rest every file is sealed with its key
//! (`prism::at_rest`) and an unsealed one is refused; libtorch writes and
//! reads the plaintext only in a 0600 scratch file in memory (`/dev/shm`;
//! the system's temp directory on a machine without it).

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
    sealed(&tmp.join("model.safetensors"), |p| Ok(vs.save(p)?))?;
    let named: Vec<(String, &tch::Tensor)> = opt
        .state()
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("v{i}"), t))
        .collect();
    if !named.is_empty() {
        sealed(&tmp.join("optim.safetensors"), |p| {
            Ok(tch::Tensor::write_safetensors(&named, p)?)
        })?;
    }
    let meta = tmp.join("meta");
    prism::at_rest::write_file(&meta, format!("{step} {epoch}\n").as_bytes())?;
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
    opened(&path.join("model.safetensors"), |p| Ok(vs.load(p)?))?;
    let optim = path.join("optim.safetensors");
    if optim.exists() {
        let mut named = opened(&optim, |p| Ok(tch::Tensor::read_safetensors(p)?))?;
        named.sort_by_key(|(k, _)| k.trim_start_matches('v').parse::<usize>().unwrap_or(0));
        opt.velocity = named.into_iter().map(|(_, t)| t).collect();
    }
    let meta_path = path.join("meta");
    let meta = String::from_utf8_lossy(&prism::at_rest::read_file(&meta_path)?).into_owned();
    let mut it = meta.split_whitespace().map(|x| x.parse::<u64>());
    match (it.next(), it.next()) {
        (Some(Ok(step)), Some(Ok(epoch))) => Ok((step, epoch)),
        _ => Err(MlError::BadFile {
            path: meta_path,
            detail: format!("expected \"<step> <epoch>\", got {meta:?}"),
        }),
    }
}

/// A scratch file in memory (`/dev/shm`; the system's temp directory
/// where there is none) for libtorch to write or read: created 0600 by
/// this process, removed when dropped, and swept by a later scratch if its
/// process died holding it. Named after `path` (libtorch picks the format
/// by extension).
struct Scratch(PathBuf);

const SCRATCH_PREFIX: &str = "prism-ckpt-";

impl Scratch {
    fn for_file(path: &Path) -> Result<Scratch> {
        use std::os::unix::fs::OpenOptionsExt;
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        sweep(&dir);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let p = dir.join(format!("{SCRATCH_PREFIX}{}-{n}-{name}", std::process::id()));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)
            .map_err(io(&p))?;
        Ok(Scratch(p))
    }
}

/// Removes scratch files whose process is gone (killed mid-save or -load).
fn sweep(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix(SCRATCH_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Has `save` write `path`, sealed through `prism::at_rest` when the
/// cluster, or the job's namespace, encrypts at rest (by way of a
/// scratch file in memory).
fn sealed(path: &Path, save: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if !prism::at_rest::encrypting() {
        return save(path);
    }
    let scratch = Scratch::for_file(path)?;
    save(&scratch.0)?;
    let bytes = std::fs::read(&scratch.0).map_err(io(&scratch.0))?;
    Ok(prism::at_rest::write_file(path, &bytes)?)
}

/// Has `load` read `path`, opened first (into a scratch file in memory)
/// if it is sealed.
fn opened<T>(path: &Path, load: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let mut head = [0u8; 8];
    let Ok(mut file) = std::fs::File::open(path) else {
        // Missing or unreadable: the loader says so.
        return load(path);
    };
    let sealed =
        std::io::Read::read_exact(&mut file, &mut head).is_ok() && prism::at_rest::is_sealed(&head);
    if !sealed {
        prism::at_rest::refuse_plain(path)?;
        return load(path);
    }
    let plain = prism::at_rest::read_file(path)?;
    let scratch = Scratch::for_file(path)?;
    std::fs::write(&scratch.0, plain).map_err(io(&scratch.0))?;
    load(&scratch.0)
}
