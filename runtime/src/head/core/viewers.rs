//! Join-token viewers and what gated callers see (AC-4 of
//! [`crate::head::access`]) in the head core.

use super::{Caller, HeadCore, Reply};
use crate::head::access::users::valid_namespace;
use crate::head::access::visibility::Visibility;
use crate::head::access::Principal;

/// The most distinct namespace lists viewers may act under.
const MAX_VIEWERS: usize = 256;

impl HeadCore {
    /// The id a join-token viewer of `namespaces` acts under: the same list
    /// (in any order) gets the same id.
    pub fn viewer(&mut self, mut namespaces: Vec<String>) -> Result<u32, String> {
        if namespaces.is_empty() {
            return Err("a viewer connection names the namespaces it reads (`*` for all); this one named none".into());
        }
        if let Some(bad) = namespaces.iter().find(|n| !valid_namespace(n)) {
            return Err(format!(
                "invalid namespace {bad:?} for a viewer connection: use 1-63 letters, digits, '-' or '_', or * for all"
            ));
        }
        namespaces.sort();
        namespaces.dedup();
        if let Some(i) = self.viewers.iter().position(|v| *v == namespaces) {
            return Ok(i as u32);
        }
        if self.viewers.len() >= MAX_VIEWERS {
            return Err(format!(
                "the head keeps at most {MAX_VIEWERS} distinct viewer namespace lists; use one of those in use"
            ));
        }
        self.viewers.push(namespaces);
        Ok(self.viewers.len() as u32 - 1)
    }

    /// Who viewer `id` acts as.
    pub(super) fn viewer_principal(&self, id: u32) -> Result<Principal, String> {
        self.viewers
            .get(id as usize)
            .map(|ns| Principal::join_token_viewer(ns.clone()))
            .ok_or_else(|| format!("no viewer {id} on this head (it restarted): connect again"))
    }

    /// AC-4: what `caller` may see of a listing; `None`: everything (nodes,
    /// the join token, and gated callers granted `*`). A caller the head
    /// cannot name any more (revoked) sees nothing.
    pub fn visibility(&self, caller: Caller) -> Option<Visibility> {
        if !caller.is_gated() {
            return None;
        }
        let who = match self.principal(caller) {
            Ok(Some(p)) => p,
            // Granted no namespace: sees nothing.
            _ => Principal::join_token_viewer(Vec::new()),
        };
        let jobs = self.jobs.namespaces();
        Visibility::new(who, jobs)
    }

    /// A gated caller's listing answered by the core keeps its rows only.
    pub(super) fn scope(&self, caller: Caller, reply: &mut Reply) {
        let Reply::Now(r) = reply else { return };
        // The job table is read only for answers scoping concerns.
        if Visibility::concerns(r) {
            if let Some(v) = self.visibility(caller) {
                v.scope(r);
            }
        }
    }
}
