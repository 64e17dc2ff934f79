//! Residency claims (OD-3) answered by the raylet and told to the head in
//! batches.
//!
//! A process about to store an object under a rule asks its raylet, which
//! knows its own node's labels: a node outside the rule is refused at
//! once, and otherwise the claim is queued and granted. The loop that
//! reports this store's copies to the head (`object_refs.rs`) sends the
//! queued rules first, in one durable request, and only then the copies
//! sealed meanwhile — so the head never names a location of an object
//! whose rule it does not hold (RC-1), and a copy whose rule it refused is
//! never reported at all (RC-2): no other node can learn where it is.
//! One local round trip per claim instead of one to the head.

use super::transfer::Transfer;
use crate::proto::common::Residency;
use crate::proto::head::{HeadRequest, HeadResponse};
use prism_objectstore::ObjectId;
use tracing::warn;

/// A copy change for the head's directory: sealed (with its size) or gone.
pub(super) type Change = (ObjectId, Option<u64>);

impl Transfer {
    /// Grants `object` the rule `rule` on this node, or says why not.
    pub(super) fn claim(&self, object: ObjectId, rule: Residency) -> Result<(), String> {
        if rule.label.is_empty() || rule.allowed.is_empty() {
            return Err(format!("the residency rule {rule} names no place"));
        }
        if !rule.permits(&self.labels) {
            return Err(format!(
                "cannot put object {object} with the residency rule {rule} on node {}, which has {}",
                self.node_id(),
                rule.place_of(&self.labels)
            ));
        }
        self.rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((object, rule));
        self.wake.notify_one();
        Ok(())
    }

    /// Sends the claims queued since the last call (with `pending`, those
    /// not sent yet) to the head before `changes` may go (RC-1), and
    /// takes the copies of refused ones out of `changes` (RC-2). `false`
    /// when the head could not be reached: everything stays for later.
    pub(super) async fn send_claims(
        &self,
        pending: &mut Vec<(ObjectId, Residency)>,
        changes: &mut Vec<Change>,
    ) -> bool {
        pending.append(&mut self.rules.lock().unwrap_or_else(|p| p.into_inner()));
        if pending.is_empty() {
            return true;
        }
        let req = HeadRequest::SetResidency {
            node_id: self.node_id(),
            rules: pending.clone(),
        };
        let refused = match self.link.request(&req).await {
            Ok(HeadResponse::ResidencySet { refused }) => refused,
            Ok(other) => {
                // Not knowing which held, report none of their copies.
                let why = format!("unexpected answer {other:?}");
                pending.iter().map(|(id, _)| (*id, why.clone())).collect()
            }
            Err(e) => {
                warn!(n = pending.len(), "cannot send residency rules yet: {e}");
                return false;
            }
        };
        for (id, why) in &refused {
            warn!(object = %id, "the head refused a residency rule; its copy here stays unreported: {why}");
        }
        drop_refused(changes, &refused);
        pending.clear();
        true
    }
}

/// RC-2: no sealed copy of a refused object goes to the head.
pub(super) fn drop_refused(changes: &mut Vec<Change>, refused: &[(ObjectId, String)]) {
    if refused.is_empty() {
        return;
    }
    let no: std::collections::HashSet<ObjectId> = refused.iter().map(|(id, _)| *id).collect();
    changes.retain(|(id, size)| size.is_none() || !no.contains(id));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rc_2_refused_objects_lose_their_sealed_copies_only() {
        let (a, b) = (ObjectId::random(), ObjectId::random());
        let mut changes = vec![(a, Some(8)), (b, Some(4)), (a, None)];
        drop_refused(&mut changes, &[(a, "outside".into())]);
        assert_eq!(changes, vec![(b, Some(4)), (a, None)]);
        drop_refused(&mut changes, &[]);
        assert_eq!(changes.len(), 2);
    }
}
