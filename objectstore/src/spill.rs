//! Spill files: one per object, `<dir>/<object id>.spill`, with a header
//! (magic, version, id, length, CRC-32 of the data) so that a missing,
//! truncated, foreign or corrupt file is an error, never wrong data (OS-5).

use crate::id::ObjectId;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"PZSP";
const VERSION: u32 = 1;
const HEADER: usize = 4 + 4 + 16 + 8 + 4;

/// A spill file could not be written or read back.
#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    /// Writing or reading failed.
    #[error("spill file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is gone.
    #[error("spill file {0} is missing")]
    Missing(PathBuf),
    /// The file does not hold this object, or its bytes changed.
    #[error("spill file {path} is corrupt: {why}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What check failed.
        why: String,
    },
}

/// Where an object's spill file lives.
pub fn path_for(dir: &Path, id: ObjectId) -> PathBuf {
    dir.join(format!("{id}.spill"))
}

/// Writes `data` for `id`; returns the file's path.
pub fn write(dir: &Path, id: ObjectId, data: &[u8]) -> Result<PathBuf, SpillError> {
    let path = path_for(dir, id);
    let written = write_file(dir, &path, id, data);
    if written.is_err() {
        // Never leave a partial file behind (a full disk, say).
        remove(&path);
    }
    written.map(|_| path)
}

fn write_file(dir: &Path, path: &Path, id: ObjectId, data: &[u8]) -> Result<(), SpillError> {
    let io = |source| SpillError::Io {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut f = std::fs::File::create(path).map_err(io)?;
    let mut header = Vec::with_capacity(HEADER);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&id.0);
    header.extend_from_slice(&(data.len() as u64).to_le_bytes());
    header.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    f.write_all(&header).map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_data().map_err(io)
}

/// Reads `id`'s bytes from `path` into `out` (exactly `out.len()` bytes).
pub fn read(path: &Path, id: ObjectId, out: &mut [u8]) -> Result<(), SpillError> {
    let corrupt = |why: String| SpillError::Corrupt {
        path: path.to_path_buf(),
        why,
    };
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SpillError::Missing(path.to_path_buf()))
        }
        Err(source) => {
            return Err(SpillError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut h = [0u8; HEADER];
    f.read_exact(&mut h)
        .map_err(|e| corrupt(format!("short header ({e})")))?;
    if &h[..4] != MAGIC || u32::from_le_bytes(h[4..8].try_into().unwrap_or_default()) != VERSION {
        return Err(corrupt("not a Prism spill file of this version".into()));
    }
    if h[8..24] != id.0 {
        return Err(corrupt(format!("holds another object, not {id}")));
    }
    let len = u64::from_le_bytes(h[24..32].try_into().unwrap_or_default());
    if len != out.len() as u64 {
        return Err(corrupt(format!("length {len}, expected {}", out.len())));
    }
    let want = u32::from_le_bytes(h[32..36].try_into().unwrap_or_default());
    f.read_exact(out)
        .map_err(|e| corrupt(format!("short data ({e})")))?;
    let got = crc32fast::hash(out);
    if got != want {
        return Err(corrupt(format!("checksum {got:08x}, expected {want:08x}")));
    }
    Ok(())
}

/// Deletes a spill file, ignoring one that is already gone.
pub fn remove(path: &Path) {
    let _ = std::fs::remove_file(path);
}
