//! Masking keys in the head core: the per-namespace key that hashes and
//! tokenises personal data (`Dataset::mask` in `prism-ml`), given only to
//! whoever holds `pii:read` in that namespace.
//!
//! Invariants:
//!
//! - **MK-1** a namespace's key is HMAC-SHA256 of the cluster's masking
//!   secret and the namespace's name: the same namespace gets the same key
//!   for as long as the secret lives (it is kept in `head.db` beside the
//!   audit trail and outlives clusters started there, so masked values
//!   stay joinable), and two namespaces never share one;
//! - **MK-2** the key goes only to a principal whose role holds `pii:read`
//!   and who was granted the namespace — for a raylet's request, the
//!   owner of the job the raylet names (a revoked owner is refused at
//!   once); anything else gets the AC-2 sentence;
//! - **MK-3** the first grant to each job (or user) and namespace, and
//!   every refusal, is in the audit trail as `pii.key`.

use super::access::origin;
use super::{Caller, Clock, HeadCore};
use crate::head::access::{authorize, Action, Permission, Principal};
use crate::ids::JobId;
use crate::proto::head::{ErrorKind, HeadResponse};

/// What the key is derived for (versioned: a new derivation is a new label).
const LABEL: &[u8] = b"prism masking key v1\0";

/// MK-1: the key of `namespace` under the cluster's `secret`.
pub fn namespace_key(secret: &[u8; 32], namespace: &str) -> [u8; 32] {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, &[LABEL, namespace.as_bytes()].concat());
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

fn refused(kind: ErrorKind, message: String) -> HeadResponse {
    HeadResponse::Error { kind, message }
}

impl HeadCore {
    /// MK-2/MK-3: the key of `namespace` for `caller` (or, relayed by a
    /// raylet, for `job`'s owner), or why not.
    pub(super) fn masking_key(
        &mut self,
        now: Clock,
        caller: Caller,
        job: Option<JobId>,
        namespace: String,
    ) -> HeadResponse {
        if namespace.is_empty() {
            return refused(
                ErrorKind::BadRequest,
                "a masking key is asked for a namespace; none was named".into(),
            );
        }
        let (who, origin) = match (caller, job) {
            (Caller::Node { .. }, None) => {
                return refused(
                    ErrorKind::Forbidden,
                    "a node asks for a masking key only for one of its jobs".into(),
                )
            }
            (Caller::Node { .. }, Some(job)) => match self.jobs.get(job).map(|j| j.owner.clone()) {
                // As for actor creation: a job the head never heard of was
                // started by whoever may reach the raylet's socket.
                None => (Principal::cluster_admin(), format!("job {job}")),
                Some(owner) => match self.users.principal_named(&owner) {
                    None => (Principal::cluster_admin(), format!("job {job}")),
                    Some(Ok(p)) => (p, format!("job {job}")),
                    Some(Err(revoked)) => {
                        self.key_audit(now, owner, format!("job {job}"), &namespace, Err(&revoked));
                        return refused(ErrorKind::Forbidden, revoked);
                    }
                },
            },
            (_, _) => match self.principal(caller) {
                Ok(Some(p)) => (p, origin(caller)),
                Ok(None) => return refused(ErrorKind::Forbidden, "nobody to judge".into()),
                Err(revoked) => return refused(ErrorKind::Forbidden, revoked),
            },
        };
        let action = Action {
            audit: Some("pii.key"),
            what: "read the masking key of personal data".into(),
            needs: Permission::PiiRead,
            namespace: Some(namespace.clone()),
        };
        if let Err(denied) = authorize(&who, &action) {
            self.key_audit(now, who.name, origin, &namespace, Err(&denied.message));
            return refused(ErrorKind::Forbidden, denied.message);
        }
        if self.keys_given.insert((origin.clone(), namespace.clone())) {
            self.key_audit(now, who.name, origin, &namespace, Ok(()));
        }
        HeadResponse::MaskingKey {
            key: namespace_key(&self.masking_secret, &namespace),
            namespace,
        }
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
    fn mk_1_one_key_per_namespace_and_secret() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert_eq!(namespace_key(&a, "vision"), namespace_key(&a, "vision"));
        assert_ne!(namespace_key(&a, "vision"), namespace_key(&a, "ads"));
        assert_ne!(namespace_key(&a, "vision"), namespace_key(&b, "vision"));
        // The label keeps a namespace's key apart from a plain HMAC of its name.
        let plain = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &a),
            b"vision",
        );
        assert_ne!(namespace_key(&a, "vision").as_slice(), plain.as_ref());
    }
}
