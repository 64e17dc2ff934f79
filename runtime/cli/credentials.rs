//! A person's credentials for the CLI: `PRISM_USER_TOKEN`, or a 0600
//! credentials file (`PRISM_CREDENTIALS`, default `~/.prism/credentials`)
//! that `prism login` writes: `address = HOST:PORT` and `token = name@…`.

use anyhow::{anyhow, bail, Context};
use prism::token::UserToken;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// A user token and, from the file, the head it belongs to.
pub struct Credentials {
    pub token: UserToken,
    pub address: Option<String>,
}

/// The credentials file's path.
pub fn path() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("PRISM_CREDENTIALS") {
        return (!p.is_empty()).then(|| PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".prism").join("credentials"))
}

/// `PRISM_USER_TOKEN` if set, else the credentials file if there is one.
/// With `join_token_given` (an explicit `--token`/`PRISM_TOKEN`), the file
/// is not read: the join token was asked for.
pub fn find(join_token_given: bool) -> anyhow::Result<Option<Credentials>> {
    if let Ok(t) = std::env::var("PRISM_USER_TOKEN") {
        if !t.trim().is_empty() {
            let token = t.parse().context("PRISM_USER_TOKEN")?;
            return Ok(Some(Credentials {
                token,
                address: None,
            }));
        }
    }
    if join_token_given {
        return Ok(None);
    }
    let Some(path) = path() else { return Ok(None) };
    let Ok(meta) = std::fs::metadata(&path) else {
        return Ok(None);
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "the credentials file {} is open to others (mode {mode:o}); run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let (mut token, mut address) = (None, None);
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| anyhow!("{}:{}: expected KEY = VALUE", path.display(), n + 1))?;
        match k.trim() {
            "token" => token = Some(v.trim().to_string()),
            "address" => address = Some(v.trim().to_string()),
            other => bail!("{}:{}: unknown key {other:?}", path.display(), n + 1),
        }
    }
    let token = token
        .ok_or_else(|| anyhow!("{} has no `token = …` line", path.display()))?
        .parse()
        .with_context(|| format!("{}", path.display()))?;
    Ok(Some(Credentials { token, address }))
}

/// Writes the credentials file (mode 0600 from the start).
pub fn save(address: &str, token: &UserToken) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = path().ok_or_else(|| anyhow!("set HOME or PRISM_CREDENTIALS"))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    writeln!(f, "# Prism credentials of user {}", token.name)?;
    writeln!(f, "address = {address}")?;
    writeln!(f, "token = {token}")?;
    Ok(path)
}
