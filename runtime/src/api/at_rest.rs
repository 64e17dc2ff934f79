//! Files that programs on the cluster keep at rest — checkpoints, a
//! parameter server's shards — sealed like spilled objects when the
//! cluster encrypts at rest (`prism start --head --encrypt-at-rest`).
//!
//! The head draws the cluster's 256-bit key and hands it to each raylet
//! when it registers; a raylet hands it to its drivers and workers in
//! their welcome, in memory only. [`write_file`] then seals with
//! AES-256-GCM (a random nonce; the file's stem is bound as associated
//! data, so a file sealed as `optim.*` does not open as `model.*` — but
//! files of the same stem, from two checkpoints, can be swapped unnoticed)
//! behind a magic header; without the flag it writes the bytes as they
//! are. [`read_file`] opens a sealed file with this cluster's key and fails
//! naming why when it is missing, another cluster's, or changed; where the
//! cluster encrypts, an unsealed file is refused too (a plaintext file put
//! in place of a sealed one), elsewhere it is read as it is.

use super::error::{Error, Result};
use prism_objectstore::SpillKey;
use std::path::Path;
use std::sync::RwLock;

/// What a sealed file starts with.
const MAGIC: &[u8; 8] = b"PRISMAR1";

static KEY: RwLock<Option<[u8; 32]>> = RwLock::new(None);

/// The key this process's raylet handed it (none: the cluster does not
/// encrypt at rest).
pub(crate) fn set_key(key: Option<[u8; 32]>) {
    *KEY.write().unwrap_or_else(|p| p.into_inner()) = key;
}

fn key() -> Option<SpillKey> {
    KEY.read()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map(SpillKey::new)
}

/// Whether files written with [`write_file`] here are sealed (this process
/// joined a cluster that encrypts at rest).
pub fn encrypting() -> bool {
    KEY.read().unwrap_or_else(|p| p.into_inner()).is_some()
}

/// Whether `bytes` are a sealed file's.
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// The file's stem is bound to its seal: `shard-0.tmp` renamed to
/// `shard-0.bin` still opens; `optim.*` does not open as `model.*`.
fn aad(path: &Path) -> Vec<u8> {
    let name = path
        .file_stem()
        .map(|n| n.as_encoded_bytes())
        .unwrap_or_default();
    [MAGIC.as_slice(), name].concat()
}

fn failed(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::AtRest(format!("{}: {why}", path.display()))
}

/// Writes `bytes` to `path`, sealed under the cluster's key when it
/// encrypts at rest (see the module's documentation).
///
/// ```no_run
/// let _c = prism::init()?;
/// prism::at_rest::write_file(std::path::Path::new("/ckpt/shard-0.bin"), b"weights")?;
/// let back = prism::at_rest::read_file(std::path::Path::new("/ckpt/shard-0.bin"))?;
/// # Ok::<(), prism::Error>(())
/// ```
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(key().as_ref(), path, bytes)
}

fn write_with(key: Option<&SpillKey>, path: &Path, bytes: &[u8]) -> Result<()> {
    let out = match key {
        Some(k) => [MAGIC.as_slice(), &k.seal(&aad(path), bytes)].concat(),
        None => bytes.to_vec(),
    };
    std::fs::write(path, out).map_err(|e| failed(path, e))
}

/// Reads a file [`write_file`] wrote (sealed or not).
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| failed(path, e))?;
    open(path, bytes)
}

/// `bytes` read from `path`, opened if sealed.
pub fn open(path: &Path, bytes: Vec<u8>) -> Result<Vec<u8>> {
    open_with(key().as_ref(), path, bytes)
}

fn open_with(key: Option<&SpillKey>, path: &Path, bytes: Vec<u8>) -> Result<Vec<u8>> {
    if !is_sealed(&bytes) {
        if key.is_some() {
            return Err(failed(
                path,
                "it is not sealed, though this cluster encrypts at rest (a plaintext file may \
                 have been put in place of a sealed one; write it again from this cluster to \
                 seal it)",
            ));
        }
        return Ok(bytes);
    }
    let Some(k) = key else {
        return Err(failed(
            path,
            "it is sealed with a cluster's at-rest key, and this process has none (it is not \
             on a cluster started with --encrypt-at-rest)",
        ));
    };
    k.open(&aad(path), &bytes[MAGIC.len()..]).ok_or_else(|| {
        failed(
            path,
            "it does not open with this cluster's at-rest key (changed, renamed, or sealed by \
             another cluster)",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_files_hold_no_plaintext_and_open_only_here_under_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.tmp"), dir.path().join("b.bin"));
        let secret = b"PATIENT-RECORD-4711;".repeat(100);
        let read = |k: Option<&SpillKey>, p: &Path| open_with(k, p, std::fs::read(p).unwrap());
        let (mine, theirs) = (SpillKey::new(&[3; 32]), SpillKey::new(&[4; 32]));
        write_with(None, &a, &secret).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), secret, "plain without a key");
        assert_eq!(read(None, &a).unwrap(), secret);
        let swapped = read(Some(&mine), &a).unwrap_err().to_string();
        assert!(swapped.contains("not sealed"), "{swapped}");
        write_with(Some(&mine), &a, &secret).unwrap();
        let on_disk = std::fs::read(&a).unwrap();
        assert!(is_sealed(&on_disk));
        assert!(!on_disk.windows(14).any(|w| w == b"PATIENT-RECORD"));
        assert_eq!(read(Some(&mine), &a).unwrap(), secret);
        let a_bin = dir.path().join("a.bin");
        std::fs::rename(&a, &a_bin).unwrap();
        assert_eq!(
            read(Some(&mine), &a_bin).unwrap(),
            secret,
            "renamed, same stem"
        );
        let a = a_bin;
        std::fs::copy(&a, &b).unwrap();
        let renamed = read(Some(&mine), &b).unwrap_err().to_string();
        assert!(renamed.contains("does not open"), "{renamed}");
        let foreign = read(Some(&theirs), &a).unwrap_err().to_string();
        assert!(foreign.contains("another cluster"), "{foreign}");
        let keyless = read(None, &a).unwrap_err().to_string();
        assert!(keyless.contains("this process has none"), "{keyless}");
    }
}
