//! Residency claims (OD-3) answered by the raylet and told to the head in
//! batches.
//!
//! A process about to store an object under a rule asks its raylet, which
//! knows its own node's labels: a node outside the rule is refused at
//! once, and otherwise the claim is queued and granted. The loop that
//! reports this store's copies to the head (`object_refs.rs`, in the order
//! `copy_report.rs` gives) sends the queued rules first, in one durable
//! request, and only then the copies sealed meanwhile — so the head never
//! names a location of an object whose rule it does not hold (RC-1), and a
//! copy whose rule it refused is never reported at all, whenever it is
//! sealed (RC-2): no other node can learn where it is. Any answer but the
//! head's verdict on the batch keeps both the rules and the copies back,
//! to be sent again. One local round
//! trip per claim instead of one to the head; the price is that a claim
//! the head refuses (only a rule that conflicts with one the object
//! already has, since the raylet checks the labels) was granted already:
//! its copy stays readable on this node only.

use super::transfer::Transfer;
use crate::proto::common::Residency;
use crate::proto::head::{HeadRequest, HeadResponse};
use prism_objectstore::ObjectId;
use std::collections::{HashSet, VecDeque};
use tracing::warn;

/// Refused objects remembered (RC-2), the newest first to stay.
const REFUSED_KEPT: usize = 65_536;

/// Objects whose rule the head refused: their copies are never reported.
#[derive(Debug, Default)]
pub(super) struct Refused {
    order: VecDeque<ObjectId>,
    set: HashSet<ObjectId>,
}

impl Refused {
    pub(super) fn add(&mut self, id: ObjectId) {
        if self.set.insert(id) {
            self.order.push_back(id);
        }
        while self.order.len() > REFUSED_KEPT {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
}

/// A copy change for the head's directory: sealed (with its size) or gone.
pub(super) type Change = (ObjectId, Option<u64>);

impl Transfer {
    /// Grants `object` the rule `rule` on this node, or says why not.
    pub(super) fn claim(&self, object: ObjectId, rule: Residency) -> Result<(), String> {
        rule.check_put(object, self.node_id(), &self.labels)?;
        self.rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((object, rule));
        self.wake.notify_one();
        Ok(())
    }

    /// The claims queued since the last call.
    pub(super) fn take_claims(&self) -> Vec<(ObjectId, Residency)> {
        std::mem::take(&mut *self.rules.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Sends `rules` to the head in one durable request; hands them back
    /// with the objects it refused, or `None` when it gave no verdict
    /// (RC-1 in `copy_report.rs`).
    pub(super) async fn send_rules(
        &self,
        rules: Vec<(ObjectId, Residency)>,
    ) -> (Vec<(ObjectId, Residency)>, Option<Vec<ObjectId>>) {
        let req = HeadRequest::SetResidency {
            node_id: self.node_id(),
            rules,
        };
        let answer = self.link.request(&req).await;
        let HeadRequest::SetResidency { rules, .. } = req else {
            unreachable!("built above")
        };
        let n = rules.len();
        let verdict = match answer {
            Ok(HeadResponse::ResidencySet { refused }) => Some(
                refused
                    .into_iter()
                    .map(|(id, why)| {
                        warn!(object = %id, "the head refused a residency rule; its copy here stays unreported: {why}");
                        id
                    })
                    .collect(),
            ),
            Ok(other) => {
                warn!(n, "no verdict on residency rules yet: {other:?}");
                None
            }
            Err(e) => {
                warn!(n, "cannot send residency rules yet: {e}");
                None
            }
        };
        (rules, verdict)
    }
}

/// RC-2: no sealed copy of a refused object goes to the head.
pub(super) fn drop_refused(changes: &mut Vec<Change>, refused: &Refused) {
    if !refused.set.is_empty() {
        changes.retain(|(id, size)| size.is_none() || !refused.set.contains(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rc_2_refused_objects_lose_their_sealed_copies_in_every_later_batch() {
        let (a, b) = (ObjectId::random(), ObjectId::random());
        let mut refused = Refused::default();
        let mut changes = vec![(b, Some(4))];
        drop_refused(&mut changes, &refused);
        assert_eq!(changes, vec![(b, Some(4))]);
        // Refused in one batch, sealed in a later one: still dropped.
        refused.add(a);
        let mut changes = vec![(a, Some(8)), (b, Some(4)), (a, None)];
        drop_refused(&mut changes, &refused);
        assert_eq!(changes, vec![(b, Some(4)), (a, None)]);
    }

    #[test]
    fn refused_objects_are_remembered_up_to_a_bound() {
        let mut r = Refused::default();
        let first = ObjectId::random();
        r.add(first);
        r.add(first);
        assert_eq!(r.order.len(), 1);
        for _ in 0..REFUSED_KEPT {
            r.add(ObjectId::random());
        }
        assert_eq!(r.order.len(), REFUSED_KEPT);
        assert!(!r.set.contains(&first), "the oldest goes first");
    }
}
