//! Files that programs on the cluster keep at rest — checkpoints, a
//! parameter server's shards — sealed like spilled objects when the
//! cluster encrypts at rest (`prism start --head --encrypt-at-rest`), or
//! when the job's namespace is marked to (`prism namespace encrypt NS`).
//!
//! The head draws the cluster's 256-bit key and hands it to each raylet
//! when it registers; a raylet hands it to its drivers and workers in
//! their welcome, in memory only. A namespace's key is derived on the head
//! from a secret that never leaves it and given to any job whose owner
//! was granted the namespace (asked once per process, on its first file).
//! [`write_file`] seals with the namespace's key where the job's
//! namespace is marked, else with the cluster's where the cluster
//! encrypts: AES-256-GCM (a random nonce; the file's stem — and a
//! namespace's name — bound as associated data, so a file sealed as
//! `optim.*` does not open as `model.*` — but files of the same stem, from
//! two checkpoints, can be swapped unnoticed) behind a magic header;
//! otherwise it writes the bytes as they are. [`read_file`] opens a sealed
//! file with the key it names (a namespace-sealed file names its
//! namespace, and a job outside it is refused the key) and fails naming
//! why when it is missing, another cluster's, or changed; where this
//! process seals, an unsealed file is refused too (a plaintext file put in
//! place of a sealed one), elsewhere it is read as it is.

use super::error::{Error, Result};
use crate::proto::access::KeyUse;
use prism_objectstore::SpillKey;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{LazyLock, Mutex, RwLock};

/// What a file sealed with the cluster's key starts with.
const MAGIC: &[u8; 8] = b"PRISMAR1";
/// What a file sealed with a namespace's key starts with (then the
/// namespace's name, its length in one byte first).
const MAGIC_NS: &[u8; 8] = b"PRISMNS1";

static KEY: RwLock<Option<[u8; 32]>> = RwLock::new(None);

/// A namespace's at-rest key (none for a non-member of a namespace that
/// does not seal), and whether this job seals its files there.
type NamespaceKey = (Option<[u8; 32]>, bool);

/// Namespaces' at-rest keys and marks, as the head gave them.
static NAMESPACES: LazyLock<Mutex<HashMap<String, NamespaceKey>>> = LazyLock::new(Mutex::default);

/// The key this process's raylet handed it (none: the cluster does not
/// encrypt at rest).
pub(crate) fn set_key(key: Option<[u8; 32]>) {
    *KEY.write().unwrap_or_else(|p| p.into_inner()) = key;
}

fn cluster_key() -> Option<SpillKey> {
    KEY.read()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map(SpillKey::new)
}

/// Namespace `ns`'s at-rest key and whether it seals, from the head
/// (kept for the process once had).
fn namespace_key(ns: &str) -> std::result::Result<NamespaceKey, String> {
    let cached = NAMESPACES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(ns)
        .copied();
    if let Some(k) = cached {
        return Ok(k);
    }
    let got = super::masking::ask(KeyUse::AtRest, ns)?;
    NAMESPACES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(ns.to_string(), got);
    Ok(got)
}

/// What this process seals its files with.
enum Sealer {
    Plain,
    Cluster(SpillKey),
    Namespace(String, SpillKey),
}

/// The job's namespace's key where it seals, else the cluster's, else
/// none. A process on a cluster that cannot learn its namespace's mark
/// fails rather than write in the clear.
fn sealer() -> Result<Sealer> {
    if super::core::current().is_ok() {
        let ns = super::masking::namespace();
        match namespace_key(&ns) {
            Ok((Some(k), true)) => return Ok(Sealer::Namespace(ns, SpillKey::new(&k))),
            Ok((None, true)) => {
                return Err(Error::AtRest(format!(
                    "namespace {ns} seals its files at rest, and the head gave no key"
                )))
            }
            Ok((_, false)) => {}
            Err(e) => {
                return Err(Error::AtRest(format!(
                    "cannot learn whether namespace {ns} seals its files at rest: {e}"
                )))
            }
        }
    }
    Ok(cluster_key().map_or(Sealer::Plain, Sealer::Cluster))
}

/// Whether files written with [`write_file`] here are sealed (the cluster
/// encrypts at rest, or this job's namespace does; also when this process
/// cannot tell, so that nothing is written in the clear by mistake).
pub fn encrypting() -> bool {
    !matches!(sealer(), Ok(Sealer::Plain))
}

/// Whether `bytes` are a sealed file's (with the cluster's key or a
/// namespace's).
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC) || bytes.starts_with(MAGIC_NS)
}

/// The file's stem (and a namespace's name) is bound to its seal:
/// `shard-0.tmp` renamed to `shard-0.bin` still opens; `optim.*` does not
/// open as `model.*`.
fn aad(magic: &[u8], namespace: &str, path: &Path) -> Vec<u8> {
    let name = path
        .file_stem()
        .map(|n| n.as_encoded_bytes())
        .unwrap_or_default();
    match namespace {
        "" => [magic, name].concat(),
        ns => [magic, ns.as_bytes(), b"\0", name].concat(),
    }
}

fn failed(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::AtRest(format!("{}: {why}", path.display()))
}

/// Writes `bytes` to `path`, sealed under the namespace's or the
/// cluster's key where this process seals (see the module's
/// documentation).
///
/// ```no_run
/// let _c = prism::init()?;
/// prism::at_rest::write_file(std::path::Path::new("/ckpt/shard-0.bin"), b"weights")?;
/// let back = prism::at_rest::read_file(std::path::Path::new("/ckpt/shard-0.bin"))?;
/// # Ok::<(), prism::Error>(())
/// ```
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(&sealer()?, path, bytes)
}

fn write_with(sealer: &Sealer, path: &Path, bytes: &[u8]) -> Result<()> {
    let out = match sealer {
        Sealer::Plain => bytes.to_vec(),
        Sealer::Cluster(k) => [MAGIC.as_slice(), &k.seal(&aad(MAGIC, "", path), bytes)].concat(),
        Sealer::Namespace(ns, k) => {
            let len = u8::try_from(ns.len())
                .map_err(|_| failed(path, format!("namespace name of {} bytes", ns.len())))?;
            let sealed = k.seal(&aad(MAGIC_NS, ns, path), bytes);
            [MAGIC_NS.as_slice(), &[len], ns.as_bytes(), &sealed].concat()
        }
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
    let lookup = |ns: &str| match namespace_key(ns)? {
        (Some(k), _) => Ok(SpillKey::new(&k)),
        (None, _) => Err(format!("this job is not in namespace {ns}")),
    };
    if is_sealed(&bytes) {
        // A sealed file needs no knowledge of this process's own mark.
        return open_with(&Sealer::Plain, cluster_key().as_ref(), lookup, path, bytes);
    }
    open_with(&sealer()?, cluster_key().as_ref(), lookup, path, bytes)
}

/// Fails, naming why, when this process seals its files: a plaintext
/// file where a sealed one belongs (what [`read_file`] refuses).
pub fn refuse_plain(path: &Path) -> Result<()> {
    match sealer()? {
        Sealer::Plain => Ok(()),
        s => Err(plain_refused(&s, path)),
    }
}

fn plain_refused(sealer: &Sealer, path: &Path) -> Error {
    let who = match sealer {
        Sealer::Namespace(ns, _) => format!("namespace {ns} seals its files at rest"),
        _ => "this cluster encrypts at rest".into(),
    };
    failed(
        path,
        format!(
            "it is not sealed, though {who} (a plaintext file may have been put in place of a \
             sealed one; write it again from here to seal it)"
        ),
    )
}

fn open_with(
    sealer: &Sealer,
    cluster: Option<&SpillKey>,
    lookup: impl Fn(&str) -> std::result::Result<SpillKey, String>,
    path: &Path,
    bytes: Vec<u8>,
) -> Result<Vec<u8>> {
    if let Some(rest) = bytes.strip_prefix(MAGIC_NS.as_slice()) {
        let Some((&len, rest)) = rest.split_first() else {
            return Err(failed(path, "its namespace seal is cut short"));
        };
        let (ns, sealed) = rest
            .split_at_checked(len as usize)
            .ok_or_else(|| failed(path, "its namespace seal is cut short"))?;
        let ns = std::str::from_utf8(ns).map_err(|_| failed(path, "its namespace is not UTF-8"))?;
        let k = lookup(ns).map_err(|why| {
            failed(
                path,
                format!("it is sealed for namespace {ns}, whose key this job may not have: {why}"),
            )
        })?;
        return k.open(&aad(MAGIC_NS, ns, path), sealed).ok_or_else(|| {
            failed(
                path,
                format!(
                    "it does not open with namespace {ns}'s at-rest key (changed, renamed, or \
                     sealed by another cluster)"
                ),
            )
        });
    }
    let Some(sealed) = bytes.strip_prefix(MAGIC.as_slice()) else {
        return match sealer {
            Sealer::Plain => Ok(bytes),
            _ => Err(plain_refused(sealer, path)),
        };
    };
    let Some(k) = cluster else {
        return Err(failed(
            path,
            "it is sealed with a cluster's at-rest key, and this process has none (it is not \
             on a cluster started with --encrypt-at-rest)",
        ));
    };
    k.open(&aad(MAGIC, "", path), sealed).ok_or_else(|| {
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

    fn no_namespaces(ns: &str) -> std::result::Result<SpillKey, String> {
        Err(format!("no key for {ns}"))
    }

    #[test]
    fn sealed_files_hold_no_plaintext_and_open_only_here_under_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.tmp"), dir.path().join("b.bin"));
        let secret = b"PATIENT-RECORD-4711;".repeat(100);
        let read = |s: &Sealer, k: Option<&SpillKey>, p: &Path| {
            open_with(s, k, no_namespaces, p, std::fs::read(p).unwrap())
        };
        let (mine, theirs) = (SpillKey::new(&[3; 32]), SpillKey::new(&[4; 32]));
        let sealing = Sealer::Cluster(SpillKey::new(&[3; 32]));
        write_with(&Sealer::Plain, &a, &secret).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), secret, "plain without a key");
        assert_eq!(read(&Sealer::Plain, None, &a).unwrap(), secret);
        let swapped = read(&sealing, Some(&mine), &a).unwrap_err().to_string();
        assert!(
            swapped.contains("not sealed, though this cluster"),
            "{swapped}"
        );
        write_with(&sealing, &a, &secret).unwrap();
        let on_disk = std::fs::read(&a).unwrap();
        assert!(is_sealed(&on_disk));
        assert!(!on_disk.windows(14).any(|w| w == b"PATIENT-RECORD"));
        assert_eq!(read(&sealing, Some(&mine), &a).unwrap(), secret);
        let a_bin = dir.path().join("a.bin");
        std::fs::rename(&a, &a_bin).unwrap();
        assert_eq!(
            read(&sealing, Some(&mine), &a_bin).unwrap(),
            secret,
            "renamed, same stem"
        );
        let a = a_bin;
        std::fs::copy(&a, &b).unwrap();
        let renamed = read(&sealing, Some(&mine), &b).unwrap_err().to_string();
        assert!(renamed.contains("does not open"), "{renamed}");
        let foreign = read(&sealing, Some(&theirs), &a).unwrap_err().to_string();
        assert!(foreign.contains("another cluster"), "{foreign}");
        let keyless = read(&Sealer::Plain, None, &a).unwrap_err().to_string();
        assert!(keyless.contains("this process has none"), "{keyless}");
    }

    #[test]
    fn namespace_sealed_files_open_only_with_their_namespaces_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.bin");
        let secret = b"PATIENT-RECORD-4711;".repeat(100);
        let vision = Sealer::Namespace("vision".into(), SpillKey::new(&[5; 32]));
        write_with(&vision, &path, &secret).unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        assert!(on_disk.starts_with(b"PRISMNS1\x06vision") && is_sealed(&on_disk));
        assert!(!on_disk.windows(14).any(|w| w == b"PATIENT-RECORD"));
        let lookup = |k: [u8; 32]| {
            move |ns: &str| match ns {
                "vision" => Ok(SpillKey::new(&k)),
                other => Err(format!(
                    "alice may not read the at-rest key in namespace {other}"
                )),
            }
        };
        let read = |k: [u8; 32], p: &Path| {
            open_with(
                &Sealer::Plain,
                None,
                lookup(k),
                p,
                std::fs::read(p).unwrap(),
            )
        };
        assert_eq!(read([5; 32], &path).unwrap(), secret, "any member opens it");
        let other = read([6; 32], &path).unwrap_err().to_string();
        assert!(
            other.contains("does not open with namespace vision's"),
            "{other}"
        );
        // The namespace's name is bound: rewritten as ads's, it is refused;
        // with ads's name but vision's key, it does not open.
        let mut as_ads = b"PRISMNS1\x03ads".to_vec();
        as_ads.extend_from_slice(&on_disk[8 + 1 + 6..]);
        std::fs::write(&path, &as_ads).unwrap();
        let refused = read([5; 32], &path).unwrap_err().to_string();
        assert!(
            refused.contains("sealed for namespace ads, whose key this job may not have: alice"),
            "{refused}"
        );
        let open_as_ads =
            |_: &str| -> std::result::Result<SpillKey, String> { Ok(SpillKey::new(&[5; 32])) };
        let renamed = open_with(&Sealer::Plain, None, open_as_ads, &path, as_ads.clone());
        assert!(renamed.unwrap_err().to_string().contains("does not open"));
        // A plaintext file where the namespace seals is refused, naming it.
        std::fs::write(&path, &secret).unwrap();
        let plain = open_with(&vision, None, no_namespaces, &path, secret.clone());
        let plain = plain.unwrap_err().to_string();
        assert!(
            plain.contains("namespace vision seals its files at rest"),
            "{plain}"
        );
        // Cut short: an error, not a panic.
        let cut = open_with(
            &Sealer::Plain,
            None,
            no_namespaces,
            &path,
            b"PRISMNS1\x09vis".to_vec(),
        );
        assert!(cut.unwrap_err().to_string().contains("cut short"));
    }
}
