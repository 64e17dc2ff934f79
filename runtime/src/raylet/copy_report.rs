//! The order in which a raylet tells the head of its store's copies and of
//! the residency rules claimed here (`residency_claims.rs`): a pure state
//! machine, driven by the report loop in `object_refs.rs`, which takes the
//! copy changes from the store and then the claims queued since, and sends
//! what [`CopyReport`] says to.
//!
//! - **RC-1** no sealed copy is sent before the rule of every object that
//!   had one claimed before it was sealed has had the head's verdict: the
//!   rules go first, and a round whose rules got no verdict sends no copy
//!   (both are kept, and sent again, in order, with the next round's).
//! - **RC-2** a sealed copy of an object whose rule the head refused is
//!   never sent, whenever it is sealed.
//! - **OS-7** copy changes reach the head in the order they happened, one
//!   per object per batch (its last; none for one sealed and removed
//!   within the batch), and a batch the head could not be reached for is
//!   sent again with what came after it.

use super::residency_claims::{drop_refused, Change, Refused};
use crate::proto::common::Residency;
use prism_objectstore::ObjectId;

/// What to send the head next.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Next {
    /// These residency rules (in one durable request); answer with
    /// [`CopyReport::rules_answered`], handing them back.
    Rules(Vec<(ObjectId, Residency)>),
    /// These copy changes; answer with [`CopyReport::copies_answered`].
    Copies(Vec<Change>),
    /// Nothing this round.
    Idle,
}

/// What waits to be told to the head.
#[derive(Debug, Default)]
pub(super) struct CopyReport {
    changes: Vec<Change>,
    rules: Vec<(ObjectId, Residency)>,
    refused: Refused,
}

impl CopyReport {
    /// A round: `sealed`, the copy changes taken from the store, then
    /// `claimed`, the claims queued since the last round — taken in that
    /// order, so that every copy in `sealed` whose object has a rule had
    /// it claimed in this round or an earlier one (RC-1).
    pub(super) fn round(
        &mut self,
        sealed: Vec<Change>,
        claimed: Vec<(ObjectId, Residency)>,
    ) -> Next {
        self.changes.extend(sealed);
        self.changes = coalesce(std::mem::take(&mut self.changes));
        self.rules.extend(claimed);
        if !self.rules.is_empty() {
            return Next::Rules(std::mem::take(&mut self.rules));
        }
        self.copies()
    }

    /// The head's verdict on the rules last sent (`sent`, handed back):
    /// the objects it refused, or `None` when it gave none (the rules and
    /// the copies wait for the next round, RC-1).
    pub(super) fn rules_answered(
        &mut self,
        sent: Vec<(ObjectId, Residency)>,
        refused: Option<Vec<ObjectId>>,
    ) -> Next {
        let Some(refused) = refused else {
            self.rules = sent;
            return Next::Idle;
        };
        for id in refused {
            self.refused.add(id);
        }
        self.copies()
    }

    /// The head took the copies last sent (or refused them for good), or,
    /// with `false`, could not be reached: they go again with the next
    /// round's (OS-7).
    pub(super) fn copies_answered(&mut self, taken: bool) {
        if taken {
            self.changes.clear();
        }
    }

    fn copies(&mut self) -> Next {
        drop_refused(&mut self.changes, &self.refused);
        if self.changes.is_empty() {
            Next::Idle
        } else {
            Next::Copies(self.changes.clone())
        }
    }
}

/// One change per object, its last; none for an object sealed and removed
/// within the batch (the head never knew it: a short-lived `put`).
fn coalesce(changes: Vec<Change>) -> Vec<Change> {
    if changes.len() < 2 {
        return changes;
    }
    // Object → (sealed first in this batch, its last change), in order.
    let mut seen: std::collections::HashMap<ObjectId, usize> = Default::default();
    let mut out: Vec<(ObjectId, bool, Option<u64>)> = Vec::with_capacity(changes.len());
    for (id, change) in changes {
        match seen.get(&id) {
            Some(&i) => out[i].2 = change,
            None => {
                seen.insert(id, out.len());
                out.push((id, change.is_some(), change));
            }
        }
    }
    out.into_iter()
        .filter(|(_, sealed_first, last)| !(*sealed_first && last.is_none()))
        .map(|(id, _, last)| (id, last))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn a_batch_says_each_objects_last_change_and_nothing_of_short_lives() {
        let (a, b, c, d) = (
            ObjectId::random(),
            ObjectId::random(),
            ObjectId::random(),
            ObjectId::random(),
        );
        let batch = vec![
            (a, Some(8)), // sealed, then removed: never told
            (b, None),    // removed (sealed in an earlier batch)
            (c, Some(4)),
            (a, None),
            (d, None), // removed, then sealed again: sealed
            (d, Some(2)),
        ];
        assert_eq!(coalesce(batch), vec![(b, None), (c, Some(4)), (d, Some(2))]);
        assert_eq!(coalesce(vec![(a, None)]), vec![(a, None)]);
    }

    fn rule() -> Residency {
        Residency::new("region", &["in-south"])
    }

    #[test]
    fn rc_1_rules_go_first_and_a_round_without_their_verdict_sends_no_copy() {
        let (a, b) = (ObjectId::random(), ObjectId::random());
        let mut r = CopyReport::default();
        // a claimed, then sealed: its rule goes first.
        assert_eq!(
            r.round(vec![(a, Some(8))], vec![(a, rule())]),
            Next::Rules(vec![(a, rule())])
        );
        // No verdict: nothing more this round.
        assert_eq!(r.rules_answered(vec![(a, rule())], None), Next::Idle);
        // b sealed with no rule: a's rule is still sent before both copies.
        assert_eq!(
            r.round(vec![(b, Some(4))], vec![]),
            Next::Rules(vec![(a, rule())])
        );
        assert_eq!(
            r.rules_answered(vec![(a, rule())], Some(vec![])),
            Next::Copies(vec![(a, Some(8)), (b, Some(4))])
        );
        // The head cannot be reached: the copies go again, after the
        // next round's rules.
        r.copies_answered(false);
        let c = ObjectId::random();
        assert_eq!(
            r.round(vec![(c, Some(2))], vec![(c, rule())]),
            Next::Rules(vec![(c, rule())])
        );
        assert_eq!(
            r.rules_answered(vec![(c, rule())], Some(vec![c])),
            Next::Copies(vec![(a, Some(8)), (b, Some(4))]),
            "c's rule was refused: its copy is never sent (RC-2)"
        );
        r.copies_answered(true);
        assert_eq!(r.round(vec![(c, Some(2))], vec![]), Next::Idle);
        assert_eq!(
            r.round(vec![(c, None)], vec![]),
            Next::Copies(vec![(c, None)])
        );
    }

    /// What a script of events does to an object.
    #[derive(Debug, Clone)]
    enum Event {
        /// Claimed with a rule (then sealed, in a later step or the same).
        Claim(usize),
        /// Sealed (after its claim, if it has one).
        Seal(usize),
        /// A round; the rules' verdict comes (refusing these), or not.
        Round {
            verdict: bool,
            refuse: Vec<usize>,
            copies_taken: bool,
        },
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (0usize..6).prop_map(Event::Claim),
            (0usize..6).prop_map(Event::Seal),
            (
                any::<bool>(),
                proptest::collection::vec(0usize..6, 0..2),
                any::<bool>()
            )
                .prop_map(|(verdict, refuse, copies_taken)| Event::Round {
                    verdict,
                    refuse,
                    copies_taken
                }),
        ]
    }

    proptest! {
        /// RC-1 and RC-2 for any order of claims, seals and answers: a
        /// sealed copy is sent only once the head gave its verdict on the
        /// object's rule (if it was claimed before the seal) and did not
        /// refuse it; and once every answer comes, every copy is told.
        #[test]
        fn rc_1_and_rc_2_hold_in_any_order(script in proptest::collection::vec(event(), 0..40)) {
            let ids: Vec<ObjectId> = (0..6).map(|_| ObjectId::random()).collect();
            let mut r = CopyReport::default();
            let (mut claims, mut seals) = (Vec::new(), Vec::new());
            let (mut claimed, mut sealed) = (HashSet::new(), HashSet::new());
            let (mut judged, mut refused) = (HashSet::new(), HashSet::new());
            let mut told = HashSet::new();
            let at = |id: &ObjectId| ids.iter().position(|x| x == id).unwrap();
            // RC-1 and RC-2 for what is sent; what the head took is told,
            // once (OS-7: a batch not taken goes again, a taken one never).
            let check = |send: &Next, taken: bool, claimed: &HashSet<usize>, judged: &HashSet<usize>, refused: &HashSet<usize>, told: &mut HashSet<usize>| {
                if let Next::Copies(changes) = send {
                    for (id, size) in changes {
                        let i = at(id);
                        if size.is_some() && claimed.contains(&i) {
                            assert!(judged.contains(&i), "RC-1: a copy before its rule's verdict");
                            assert!(!refused.contains(&i), "RC-2: a copy of a refused object");
                        }
                        if taken {
                            assert!(told.insert(i), "OS-7: object {i}'s seal told twice");
                        }
                    }
                }
            };
            for ev in script.into_iter().chain(std::iter::once(Event::Round {
                verdict: true,
                refuse: vec![],
                copies_taken: true,
            })) {
                match ev {
                    Event::Claim(i) if !claimed.contains(&i) && !sealed.contains(&i) => {
                        claimed.insert(i);
                        claims.push((ids[i], rule()));
                    }
                    Event::Seal(i) if !sealed.contains(&i) => {
                        sealed.insert(i);
                        seals.push((ids[i], Some(1)));
                    }
                    Event::Round { verdict, refuse, copies_taken } => {
                        let mut send = r.round(std::mem::take(&mut seals), std::mem::take(&mut claims));
                        if let Next::Rules(rules) = send {
                            let in_flight: Vec<usize> = rules.iter().map(|(id, _)| at(id)).collect();
                            let no: Vec<usize> = refuse.into_iter().filter(|i| in_flight.contains(i)).collect();
                            send = r.rules_answered(rules, verdict.then(|| no.iter().map(|i| ids[*i]).collect()));
                            if verdict {
                                judged.extend(in_flight);
                                refused.extend(no);
                            }
                        }
                        check(&send, copies_taken, &claimed, &judged, &refused, &mut told);
                        if matches!(send, Next::Copies(_)) {
                            r.copies_answered(copies_taken);
                        }
                    }
                    _ => {}
                }
            }
            // One more round with every answer: whatever was sealed and not
            // refused has been told.
            let send = r.round(vec![], vec![]);
            check(&send, true, &claimed, &judged, &refused, &mut told);
            for i in &sealed {
                prop_assert!(told.contains(i) || refused.contains(i), "object {i} never told");
            }
        }
    }
}
