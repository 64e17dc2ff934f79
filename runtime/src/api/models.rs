//! The model registry from any driver or worker (through its raylet to the
//! head): register a version from a run, move aliases, read a model, and
//! resolve `NAME@alias` or `NAME@3` to a version (what serving loads).
//! `prism models` is the same from the command line. A process's requests
//! act on the models of `PRISM_NAMESPACE` when it is set (as its actors'
//! names do), else of its job's namespace (MN-1).

use super::core::current;
use super::error::{Error, Result};
use crate::proto::head::HeadResponse;
use crate::proto::models::{ModelInfo, ModelRequest, ModelVersion};
use crate::proto::task::LocalRequest;
use std::time::Duration;

/// The namespace a request names: `PRISM_NAMESPACE`, or none (the head
/// takes the job's).
fn namespace() -> String {
    std::env::var(crate::raylet::workers::vars::NAMESPACE).unwrap_or_default()
}

fn ask(request: ModelRequest) -> Result<Vec<ModelInfo>> {
    let core = current()?;
    let resp: HeadResponse =
        core.ask_raylet_quick("model registry", Duration::from_secs(30), |request_id| {
            LocalRequest::Models {
                request_id,
                request,
            }
        })?;
    match resp {
        HeadResponse::Models(m) => Ok(m),
        HeadResponse::Error { message, .. } => Err(Error::Registry(message)),
        other => Err(Error::Registry(format!("unexpected answer {other:?}"))),
    }
}

/// Who a registry change is made by: `$USER` (or `$LOGNAME`), else this
/// process's job, else its uid.
pub fn who() -> String {
    if let Ok(u) = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")) {
        return u;
    }
    if let Ok(c) = current() {
        return format!("job {}", c.job_id);
    }
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .unwrap_or_else(|| "?".into());
    format!("uid {uid}")
}

/// Makes the next version of `name` from run `run_id` (its params and last
/// metrics are copied in); returns the version.
pub fn register(name: &str, run_id: &str, checkpoint: &str, card: &str) -> Result<u32> {
    let m = ask(ModelRequest::Register {
        name: name.into(),
        run_id: run_id.into(),
        checkpoint: checkpoint.into(),
        card: card.into(),
        who: who(),
    })?;
    m.first()
        .and_then(|m| m.versions.last())
        .map(|v| v.version)
        .ok_or_else(|| Error::Registry("no version made".into()))
}

/// Points `alias` of `name` at `version`.
pub fn set_alias(name: &str, alias: &str, version: u32) -> Result<()> {
    ask(ModelRequest::SetAlias {
        namespace: namespace(),
        name: name.into(),
        alias: alias.into(),
        version,
        who: who(),
    })
    .map(|_| ())
}

/// One model: its versions, aliases and history.
pub fn get(name: &str) -> Result<ModelInfo> {
    ask(ModelRequest::Show {
        namespace: namespace(),
        name: name.into(),
    })?
    .pop()
    .ok_or_else(|| Error::Registry(format!("no model named {name:?}")))
}

/// The version `spec` names: `NAME@alias`, `NAME@3` or `NAME` (its newest).
pub fn resolve(spec: &str) -> Result<ModelVersion> {
    let (name, at) = spec.split_once('@').unwrap_or((spec, ""));
    let m = get(name)?;
    let version = match at {
        "" => m.versions.last().map(|v| v.version),
        a => match a.parse::<u32>() {
            Ok(n) => Some(n),
            Err(_) => m.aliases.iter().find(|(x, _)| x == a).map(|(_, v)| *v),
        },
    };
    let aliases: Vec<&str> = m.aliases.iter().map(|(a, _)| a.as_str()).collect();
    version
        .and_then(|v| m.versions.iter().find(|x| x.version == v).cloned())
        .ok_or_else(|| {
            Error::Registry(format!(
                "{spec}: no such version or alias (aliases: {aliases:?}, versions 1..={})",
                m.versions.len()
            ))
        })
}
