//! Keys for masking personal data (what `prism_ml::data::Dataset::mask`
//! hashes and tokenises with). Each namespace has its own 256-bit key,
//! derived on the head from a secret that never leaves it; the head gives
//! a namespace's key only to a job whose owner holds `pii:read` there, and
//! refuses everyone else with a sentence naming the user, the namespace
//! and the missing permission (the refusal is in the audit trail). The key
//! is asked for afresh each time (no cache), so a revoked owner's tasks
//! lose it at once.

use super::core::current;
use super::error::{Error, Result};
use crate::proto::head::HeadResponse;
use crate::proto::task::LocalRequest;
use std::time::Duration;

/// The masking key of `namespace`, if this job's owner may read personal
/// data there.
///
/// ```no_run
/// let _c = prism::init()?;
/// let key: [u8; 32] = prism::masking::key(&prism::masking::namespace())?;
/// # Ok::<(), prism::Error>(())
/// ```
pub fn key(namespace: &str) -> Result<[u8; 32]> {
    let core = current()?;
    let namespace = namespace.to_string();
    let resp: HeadResponse =
        core.ask_raylet_quick("masking key", Duration::from_secs(30), |request_id| {
            LocalRequest::MaskingKey {
                request_id,
                namespace,
            }
        })?;
    match resp {
        HeadResponse::MaskingKey { key, .. } => Ok(key),
        HeadResponse::Error { message, .. } => Err(Error::Masking(message)),
        other => Err(Error::Masking(format!("unexpected answer {other:?}"))),
    }
}

/// The namespace this driver runs in (`PRISM_NAMESPACE`, set for
/// submitted jobs; else `default`). Workers are not told theirs: a task
/// that needs a key is handed the namespace by its submitter.
pub fn namespace() -> String {
    super::actor::default_namespace()
}
