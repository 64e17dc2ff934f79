//! Spill files: one per object, `<dir>/<object id>.spill`, with a header
//! (magic, version, id, length, CRC-32 of the data) so that a missing,
//! truncated, foreign or corrupt file is an error, never wrong data (OS-5).
//!
//! With a [`SpillKey`] (a cluster that encrypts at rest) the data is
//! sealed with AES-256-GCM (version 2: a random 96-bit nonce after the
//! header, the object id as associated data, the tag after the data), so
//! the file holds no plaintext and a changed byte fails to open.

use crate::id::ObjectId;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"PZSP";
const VERSION: u32 = 1;
const SEALED: u32 = 2;
const HEADER: usize = 4 + 4 + 16 + 8 + 4;
const NONCE: usize = ring::aead::NONCE_LEN;

/// The key spill files are sealed with (held in memory only; the head
/// hands it to each raylet when it registers).
pub struct SpillKey(ring::aead::LessSafeKey);

impl SpillKey {
    /// A key from 32 bytes.
    pub fn new(bytes: &[u8; 32]) -> SpillKey {
        let key = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, bytes)
            .expect("AES-256-GCM takes any 32-byte key");
        SpillKey(ring::aead::LessSafeKey::new(key))
    }
}

impl SpillKey {
    /// `plain` sealed with AES-256-GCM under this key: a random 96-bit
    /// nonce, then the ciphertext and its tag; `aad` is bound to it (a
    /// spill file binds its object id; `prism::at_rest` a file's stem).
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE] = rand::random();
        let mut body = plain.to_vec();
        self.0
            .seal_in_place_append_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(aad),
                &mut body,
            )
            .expect("AES-256-GCM seals any length a Vec holds");
        [nonce.as_slice(), &body].concat()
    }

    /// What [`SpillKey::seal`] sealed with this key and `aad`; `None` when
    /// it does not open (changed, another key, another `aad`, too short).
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        let (nonce, body) = sealed.split_at_checked(NONCE)?;
        let mut body = body.to_vec();
        let n = self
            .open_body(aad, nonce.try_into().ok()?, &mut body)?
            .len();
        body.truncate(n);
        Some(body)
    }

    /// Opens `body` (ciphertext and tag) sealed with `nonce` in place: the
    /// plaintext at its start.
    fn open_body<'b>(
        &self,
        aad: &[u8],
        nonce: [u8; NONCE],
        body: &'b mut [u8],
    ) -> Option<&'b [u8]> {
        self.0
            .open_in_place(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(aad),
                body,
            )
            .ok()
            .map(|p| &*p)
    }
}

impl std::fmt::Debug for SpillKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpillKey(<secret>)")
    }
}

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

/// Writes `data` for `id` (sealed with `key` if given); returns the
/// file's path.
pub fn write(
    dir: &Path,
    id: ObjectId,
    data: &[u8],
    key: Option<&SpillKey>,
) -> Result<PathBuf, SpillError> {
    let path = path_for(dir, id);
    let written = write_file(dir, &path, id, data, key);
    if written.is_err() {
        // Never leave a partial file behind (a full disk, say).
        remove(&path);
    }
    written.map(|_| path)
}

fn write_file(
    dir: &Path,
    path: &Path,
    id: ObjectId,
    data: &[u8],
    key: Option<&SpillKey>,
) -> Result<(), SpillError> {
    let io = |source| SpillError::Io {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut f = std::fs::File::create(path).map_err(io)?;
    let mut header = Vec::with_capacity(HEADER);
    header.extend_from_slice(MAGIC);
    let version = if key.is_some() { SEALED } else { VERSION };
    header.extend_from_slice(&version.to_le_bytes());
    header.extend_from_slice(&id.0);
    header.extend_from_slice(&(data.len() as u64).to_le_bytes());
    header.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    f.write_all(&header).map_err(io)?;
    match key {
        None => f.write_all(data).map_err(io)?,
        Some(key) => f.write_all(&key.seal(&id.0, data)).map_err(io)?,
    }
    f.sync_data().map_err(io)
}

/// Reads `id`'s bytes from `path` into `out` (exactly `out.len()` bytes),
/// opening a sealed file with `key`.
pub fn read(
    path: &Path,
    id: ObjectId,
    out: &mut [u8],
    key: Option<&SpillKey>,
) -> Result<(), SpillError> {
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
    let version = u32::from_le_bytes(h[4..8].try_into().unwrap_or_default());
    if &h[..4] != MAGIC || (version != VERSION && version != SEALED) {
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
    if version == SEALED {
        let key = key.ok_or_else(|| corrupt("it is encrypted and this store has no key".into()))?;
        let mut nonce = [0u8; NONCE];
        f.read_exact(&mut nonce)
            .map_err(|e| corrupt(format!("short nonce ({e})")))?;
        let mut sealed = vec![0u8; out.len() + key.0.algorithm().tag_len()];
        f.read_exact(&mut sealed)
            .map_err(|e| corrupt(format!("short data ({e})")))?;
        let plain = key.open_body(&id.0, nonce, &mut sealed).ok_or_else(|| {
            corrupt("it does not open with this cluster's key (changed, or another key)".into())
        })?;
        out.copy_from_slice(plain);
    } else {
        f.read_exact(out)
            .map_err(|e| corrupt(format!("short data ({e})")))?;
    }
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
