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
//!   once); anything else gets the AC-2 sentence;
//! - **NK-3** the first masking-key grant to each job (or user) and
//!   namespace, and every masking-key refusal, is in the audit trail as
//!   `pii.key`;
//! - **NK-4** a namespace's at-rest mark is durable: a recovered head
//!   seals the same namespaces.

use super::access::origin;
use super::{Caller, Clock, HeadCore};
use crate::head::access::{authorize, authorize_member, Action, Permission, Principal};
use crate::ids::JobId;
use crate::proto::access::KeyUse;
use crate::proto::head::{ErrorKind, HeadResponse};

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

fn refused(kind: ErrorKind, message: String) -> HeadResponse {
    HeadResponse::Error { kind, message }
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
            return refused(
                ErrorKind::BadRequest,
                "a namespace key is asked for a namespace; none was named".into(),
            );
        }
        let audited = usage == KeyUse::Masking;
        let (who, origin) = match (caller, job) {
            (Caller::Node { .. }, None) => {
                return refused(
                    ErrorKind::Forbidden,
                    "a node asks for a namespace key only for one of its jobs".into(),
                )
            }
            (Caller::Node { .. }, Some(job)) => {
                let origin = format!("job {job}");
                match self.jobs.get(job).map(|j| j.owner.clone()) {
                    // As for actor creation: a job the head never heard of
                    // was started by whoever may reach the raylet's socket.
                    None => (Principal::cluster_admin(), origin),
                    Some(owner) => match self.users.principal_named(&owner) {
                        None => (Principal::cluster_admin(), origin),
                        Some(Ok(p)) => (p, origin),
                        Some(Err(revoked)) => {
                            if audited {
                                self.key_audit(now, owner, origin, &namespace, Err(&revoked));
                            }
                            return refused(ErrorKind::Forbidden, revoked);
                        }
                    },
                }
            }
            (_, _) => match self.principal(caller) {
                Ok(Some(p)) => (p, origin(caller)),
                Ok(None) => return refused(ErrorKind::Forbidden, "nobody to judge".into()),
                Err(revoked) => return refused(ErrorKind::Forbidden, revoked),
            },
        };
        let judged = match usage {
            KeyUse::Masking => authorize(
                &who,
                &Action {
                    audit: Some("pii.key"),
                    what: "read the masking key of personal data".into(),
                    needs: Permission::PiiRead,
                    namespace: Some(namespace.clone()),
                },
            ),
            KeyUse::AtRest => authorize_member(&who, "read the at-rest key", &namespace),
        };
        if let Err(denied) = judged {
            if audited {
                self.key_audit(now, who.name, origin, &namespace, Err(&denied.message));
            }
            return refused(ErrorKind::Forbidden, denied.message);
        }
        if audited && self.keys_given.insert((origin.clone(), namespace.clone())) {
            self.key_audit(now, who.name, origin, &namespace, Ok(()));
        }
        HeadResponse::NamespaceKey {
            key: namespace_key(&self.namespace_secret, usage, &namespace),
            seal: usage == KeyUse::AtRest && self.sealed.contains(&namespace),
            namespace,
        }
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
