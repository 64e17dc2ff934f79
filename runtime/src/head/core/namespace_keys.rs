//! Namespace keys in the head core: the per-namespace key that hashes and
//! tokenises personal data (`Dataset::mask` in `prism-ml`), given only to
//! whoever holds `pii:read` in that namespace, and the per-namespace key
//! that seals files at rest (`prism::at_rest`) in namespaces marked to
//! encrypt, given to any member.
//!
//! Invariants:
//!
//! - **NK-1** a namespace's key for a use is HMAC-SHA256 of the head's
//!   namespace secret, the use and the namespace's name: the same
//!   namespace gets the same key for as long as the secret lives (it is
//!   kept in `head.db` beside the audit trail and outlives clusters started
//!   there, so masked values stay joinable and sealed files open), and two
//!   namespaces, or two uses, never share one;
//! - **NK-2** the masking key goes only to a principal whose role holds
//!   `pii:read` and who was granted the namespace, the at-rest key to
//!   anyone granted the namespace — for a raylet's request, judged as the
//!   owner of the job the raylet names (a revoked owner is refused at
//!   once; a job the head never registered is refused once the cluster
//!   has users); anything else gets the AC-2 sentence;
//! - **NK-3** the first masking-key grant to each job (or user) and
//!   namespace, and every masking-key refusal, is in the audit trail as
//!   `pii.key`;
//! - **NK-4** a namespace's at-rest mark is durable: a recovered head
//!   seals the same namespaces; a running job keeps the mark it first
//!   saw, for all its processes;
//! - **NK-5** whether a namespace seals is told to anyone who asks; where
//!   it does not seal, a non-member gets no key and is not refused (its
//!   files stay plain).

use super::access::{forbidden, origin};
use super::{Caller, Clock, HeadCore};
use crate::head::access::{authorize, authorize_member, Action, Permission, Principal};
use crate::ids::JobId;
use crate::proto::access::KeyUse;
use crate::proto::head::HeadResponse;

/// NK-1: the key of `namespace` for `usage` under the head's `secret`.
pub fn namespace_key(secret: &[u8; 32], usage: KeyUse, namespace: &str) -> [u8; 32] {
    // Versioned labels: a new derivation is a new label.
    let label: &[u8] = match usage {
        KeyUse::Masking => b"prism masking key v1\0",
        KeyUse::AtRest => b"prism at-rest key v1\0",
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, &[label, namespace.as_bytes()].concat());
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

impl HeadCore {
    /// NK-2/NK-3: the key of `namespace` for `usage`, for `caller` (or,
    /// relayed by a raylet, for `job`'s owner), or why not.
    pub(super) fn namespace_key(
        &mut self,
        now: Clock,
        caller: Caller,
        job: Option<JobId>,
        usage: KeyUse,
        namespace: String,
    ) -> HeadResponse {
        if namespace.is_empty() {
            return super::bad("a namespace key is asked for a namespace; none was named".into());
        }
        let audited = usage == KeyUse::Masking;
        let (who, origin): (Result<Principal, String>, String) = match (caller, job) {
            (Caller::Node { .. }, None) => {
                return forbidden("a node asks for a namespace key only for one of its jobs".into())
            }
            (Caller::Node { .. }, Some(job)) => (self.job_principal(job), format!("job {job}")),
            (Caller::Viewer { .. }, _) => {
                return forbidden(
                    "a viewer connection reads state and logs only; it is given no keys".into(),
                )
            }
            (_, _) => match self.principal(caller) {
                Ok(Some(p)) => (Ok(p), origin(caller)),
                Ok(None) => return forbidden("nobody to judge".into()),
                Err(revoked) => (Err(revoked), origin(caller)),
            },
        };
        let name = who
            .as_ref()
            .map_or_else(|_| "?".to_string(), |p| p.name.clone());
        let judged = who.and_then(|p| match usage {
            KeyUse::Masking => authorize(
                &p,
                &Action {
                    audit: Some("pii.key"),
                    what: "read the masking key of personal data".into(),
                    needs: Permission::PiiRead,
                    namespace: Some(namespace.clone()),
                },
            )
            .map_err(|d| d.message),
            KeyUse::AtRest => {
                authorize_member(&p, "read the at-rest key", &namespace).map_err(|d| d.message)
            }
        });
        let seal = usage == KeyUse::AtRest && self.seal_for(job, &namespace);
        match judged {
            // NK-5: whether to seal is no secret; nothing to seal, no key.
            Err(_) if usage == KeyUse::AtRest && !seal => HeadResponse::NamespaceKey {
                key: None,
                seal: false,
                namespace,
            },
            Err(why) => {
                if audited {
                    self.key_audit(now, name, origin, &namespace, Err(&why));
                }
                forbidden(why)
            }
            Ok(()) => {
                if audited && self.keys_given.insert((origin.clone(), namespace.clone())) {
                    self.key_audit(now, name, origin, &namespace, Ok(()));
                }
                HeadResponse::NamespaceKey {
                    key: Some(namespace_key(&self.namespace_secret, usage, &namespace)),
                    seal,
                    namespace,
                }
            }
        }
    }

    /// NK-4: whether `job` seals its files in `namespace` — the mark as the
    /// job first asked, for all its processes (a mark set while it runs
    /// does not split its files into plain and sealed ones); the mark now
    /// for a user asking without a job.
    fn seal_for(&mut self, job: Option<JobId>, namespace: &str) -> bool {
        let now = self.sealed.contains(namespace);
        match job {
            Some(job) => *self
                .at_rest_pins
                .entry((job, namespace.to_string()))
                .or_insert(now),
            None => now,
        }
    }

    /// A job ended: its pinned marks go.
    pub(super) fn forget_pins(&mut self, job: JobId) {
        self.at_rest_pins.retain(|(j, _), _| *j != job);
    }

    /// Marks `namespace` to seal its files at rest, or not (NK-4: kept at
    /// the next commit).
    pub(super) fn set_at_rest(&mut self, namespace: &str, seal: bool) {
        let changed = if seal {
            self.sealed.insert(namespace.to_string())
        } else {
            self.sealed.remove(namespace)
        };
        if changed {
            self.sealed_changes.push((namespace.to_string(), seal));
        }
    }

    /// Namespaces that seal their files at rest.
    pub(super) fn sealed_namespaces(&self) -> Vec<String> {
        self.sealed.iter().cloned().collect()
    }

    fn key_audit(
        &mut self,
        now: Clock,
        user: String,
        origin: String,
        namespace: &str,
        outcome: Result<(), &str>,
    ) {
        let record = crate::head::access::audit::Record {
            user,
            origin,
            action: "pii.key".into(),
            target: format!("masking key of namespace {namespace}"),
            namespace: namespace.into(),
            outcome: match outcome {
                Ok(()) => "ok".into(),
                Err(why) => format!("denied: {why}"),
            },
        };
        self.audit.append(now.wall_ms, record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nk_1_one_key_per_namespace_use_and_secret() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let m = |s: &[u8; 32], ns: &str| namespace_key(s, KeyUse::Masking, ns);
        assert_eq!(m(&a, "vision"), m(&a, "vision"));
        assert_ne!(m(&a, "vision"), m(&a, "ads"));
        assert_ne!(m(&a, "vision"), m(&b, "vision"));
        assert_ne!(m(&a, "vision"), namespace_key(&a, KeyUse::AtRest, "vision"));
        // The label keeps a namespace's key apart from a plain HMAC of its name.
        let plain = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &a),
            b"vision",
        );
        assert_ne!(m(&a, "vision").as_slice(), plain.as_ref());
    }
}
