//! Keys for masking personal data (what `prism_ml::data::Dataset::mask`
//! hashes and tokenises with). Each namespace has its own 256-bit key,
//! derived on the head from a secret that never leaves it; the head gives
//! a namespace's key only to a job whose owner holds `pii:read` there, and
//! refuses everyone else with a sentence naming the user, the namespace
//! and the missing permission (the refusal is in the audit trail). The key
//! is asked for afresh each time (no cache), so a revoked owner's tasks
//! lose it at once. The same request brings a namespace's at-rest key
//! ([`super::at_rest`]); one crate-private `ask` serves both.

use super::core::current;
use super::error::{Error, Result};
use crate::proto::access::KeyUse;
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
    match ask(KeyUse::Masking, namespace).map_err(Error::Masking)? {
        (Some(key), _) => Ok(key),
        (None, _) => Err(Error::Masking(format!(
            "the head gave no masking key for namespace {namespace}"
        ))),
    }
}

/// A key of `namespace` for `usage` from the head, through this process's
/// raylet (judged as this job's owner; `None`: an at-rest key this job
/// needs not, the namespace not sealing and the job not in it), and for
/// `AtRest` whether this job seals its files there; else the head's
/// refusal, or why there is no answer.
pub(crate) fn ask(
    usage: KeyUse,
    namespace: &str,
) -> std::result::Result<(Option<[u8; 32]>, bool), String> {
    let core = current().map_err(|e| e.to_string())?;
    let namespace = namespace.to_string();
    let resp: HeadResponse = core
        .ask_raylet_quick("namespace key", Duration::from_secs(30), |request_id| {
            LocalRequest::NamespaceKey {
                request_id,
                usage,
                namespace,
            }
        })
        .map_err(|e| e.to_string())?;
    match resp {
        HeadResponse::NamespaceKey { key, seal, .. } => Ok((key, seal)),
        HeadResponse::Error { message, .. } => Err(message),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

/// The namespace this job runs in (`PRISM_NAMESPACE`, set for submitted
/// jobs and passed on to the job's workers; else `default`).
pub fn namespace() -> String {
    super::actor::default_namespace()
}
