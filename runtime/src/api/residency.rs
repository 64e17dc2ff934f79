//! Data residency: an object that may live only on nodes whose label names
//! an allowed place (`region in [in-south, in-west]`). The head keeps the
//! rule with the object's locations and refuses to name a copy to, or
//! record one on, a node outside it (OD-3), so a task placed elsewhere —
//! pinned, spilled back, or an actor restarted on another node — cannot
//! read the object, and gets an error naming the rule.
//!
//! A task that reads a resident object its submitter owns — as an
//! argument, or through a ref inside one — is placed inside that object's
//! rule the same way (its result is not resident unless it asks).
//!
//! A task can carry a rule too (`f::options().resident(rule)`): it runs
//! only on nodes inside the rule (its placement is narrowed by the rule's
//! label selector), its result is kept under the rule (never inlined, so
//! every reader pulls it through the head), and so is everything it puts
//! and every task it submits — what is derived from resident data stays
//! where the data may be. A resident task that lands outside its rule
//! (pinned there) fails, naming the rule, before its result is stored.
//!
//! An actor can carry a rule (`Type::options().resident(rule)`): it is
//! placed and restarted only inside the rule (a spread spreads over the
//! nodes inside, a soft affinity to a node outside goes inside) and
//! refuses to be built outside it (pinned there); every method's result, everything its
//! methods put and every task they submit is kept under the rule. The
//! handles `spawn` and `get_actor` return, and handles passed in a value
//! from those, place tasks reading those results inside the rule.

use super::core::{current, Core};
use super::error::{Error, Result};
use super::object_ref::ObjectRef;
use super::value::Value;
pub use crate::proto::common::Residency;
use crate::proto::head::HeadResponse;
use crate::proto::task::LocalRequest;
use crate::proto::task::WireStrategy;
use prism_objectstore::ObjectId;
use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

thread_local! {
    /// The rule of the resident task this thread is running, if any.
    static INHERITED: RefCell<Option<Residency>> = const { RefCell::new(None) };
}

/// The rule everything this thread puts or submits inherits (the running
/// task's), if any.
pub(crate) fn inherited() -> Option<Residency> {
    INHERITED.with(|r| r.borrow().clone())
}

/// Runs `f` with `rule` inherited by what it puts and submits; the
/// thread's previous rule is back afterwards, even if `f` panicked.
pub(crate) fn within<R>(rule: Option<&Residency>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Residency>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let before = self.0.take();
            INHERITED.with(|r| *r.borrow_mut() = before);
        }
    }
    let _restore = Restore(INHERITED.with(|r| r.replace(rule.cloned())));
    f()
}

/// Where a task that must produce inside `rule` may run: the default and
/// label placements, a spread and a soft affinity are narrowed to the
/// nodes inside it (a soft affinity to a node outside goes inside
/// instead); a hard affinity or a bundle stays as asked (a node outside
/// fails the task, naming the rule).
pub(crate) fn confine(strategy: &WireStrategy, rule: &Residency) -> WireStrategy {
    let sel = rule.selector();
    match strategy {
        WireStrategy::Hybrid => WireStrategy::Labels(sel),
        WireStrategy::Labels(s) => WireStrategy::Labels(format!("{s}, {sel}")),
        WireStrategy::Spread => WireStrategy::SpreadLabels(sel),
        WireStrategy::SpreadLabels(s) => WireStrategy::SpreadLabels(format!("{s}, {sel}")),
        WireStrategy::NodeAffinity { node, soft: true } => WireStrategy::PreferNode {
            node: *node,
            within: sel,
        },
        WireStrategy::PreferNode { node, within } => WireStrategy::PreferNode {
            node: *node,
            within: format!("{within}, {sel}"),
        },
        other => other.clone(),
    }
}

/// This worker's node labels (the raylet passes them to its workers).
fn node_labels() -> Vec<(String, String)> {
    let lines = std::env::var(crate::raylet::workers::vars::NODE_LABELS).unwrap_or_default();
    lines
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Whether this worker's node is inside `rule` (a resident actor is built
/// only there); else why not, naming the rule and the node's place.
pub(crate) fn check_node(rule: &Residency) -> std::result::Result<(), String> {
    let labels = node_labels();
    if rule.permits(&labels) {
        return Ok(());
    }
    let node = std::env::var(crate::raylet::workers::vars::NODE_ID).unwrap_or_default();
    Err(format!(
        "cannot build an actor with the residency rule {rule} on node {node}, which has {}",
        rule.place_of(&labels)
    ))
}

/// Puts `value` where only nodes inside `rule` may hold or read it. This
/// node must itself be inside the rule, or nothing is stored.
///
/// ```no_run
/// let _c = prism::init()?;
/// let rule = prism::Residency::new("region", &["in-south", "in-west"]);
/// let records = prism::put_resident(&vec![1u32, 2, 3], rule)?;
/// # Ok::<(), prism::Error>(())
/// ```
pub fn put_resident<T: Value>(value: &T, rule: Residency) -> Result<ObjectRef<T>> {
    let id = claim(rule)?;
    current()?.put_as(id, value, false)
}

/// [`crate::put_tensor`] with a residency rule (a dataset block that must
/// stay in its region).
pub fn put_tensor_resident<D: super::tensor::Dim>(
    dtype: crate::DType,
    shape: &[D],
    data: &[u8],
    rule: Residency,
) -> Result<ObjectRef<super::tensor::Tensor>> {
    super::tensor::put_tensor_as(claim(rule)?, dtype, shape, data)
}

/// A fresh object id whose rule the head now holds (refused when this
/// node is outside it).
fn claim(rule: Residency) -> Result<ObjectId> {
    let id = ObjectId::random();
    claim_owned(&current()?, id, rule)?;
    Ok(id)
}

/// [`claim_as`] for an object this process will own: its rule is kept
/// too, so that tasks reading it are placed inside it.
pub(crate) fn claim_owned(core: &Arc<Core>, id: ObjectId, rule: Residency) -> Result<()> {
    claim_as(core, id, rule.clone())?;
    core.rules.insert(id, rule);
    Ok(())
}

/// The rule a task reading `args` (objects this process owns) must run
/// inside, if one of them has a rule (the first found).
pub(crate) fn rule_of_args<'a>(
    core: &Core,
    args: impl IntoIterator<Item = &'a ObjectId>,
) -> Option<Residency> {
    args.into_iter()
        .find_map(|id| core.rules.get(id).map(|r| r.clone()))
}

/// Claims `rule` for `id` before anything is stored under it: refused
/// when this node is outside the rule. The raylet grants it and sends it
/// to the head before it reports any copy of `id` (RC-1), so no other
/// node learns where the object is before the head holds its rule.
pub(crate) fn claim_as(core: &Arc<Core>, id: ObjectId, rule: Residency) -> Result<()> {
    let resp: HeadResponse =
        core.ask_raylet_quick("residency", Duration::from_secs(30), |request_id| {
            LocalRequest::Residency {
                request_id,
                object: id,
                rule,
            }
        })?;
    match resp {
        HeadResponse::Error { message, .. } => Err(Error::Residency(message)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_narrows_every_placement_but_a_hard_affinity() {
        let rule = Residency::new("region", &["in-south", "in-west"]);
        let labels = |s: &str| WireStrategy::Labels(s.into());
        assert_eq!(
            confine(&WireStrategy::Hybrid, &rule),
            labels("region=in-south|in-west")
        );
        assert_eq!(
            confine(&labels("gpu=a100"), &rule),
            labels("gpu=a100, region=in-south|in-west")
        );
        // The narrowed selector parses and means the rule.
        let WireStrategy::Labels(sel) = confine(&labels("gpu=a100"), &rule) else {
            unreachable!()
        };
        let sel = prism_scheduler::LabelSelector::parse(&sel).unwrap();
        let node = |region: &str| {
            [("gpu", "a100"), ("region", region)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(sel.matches(&node("in-west")));
        assert!(!sel.matches(&node("eu-west")));
        // Spread and soft affinity stay inside; hard affinity as asked (a
        // node outside fails the task).
        let sel = "region=in-south|in-west".to_string();
        assert_eq!(
            confine(&WireStrategy::Spread, &rule),
            WireStrategy::SpreadLabels(sel.clone())
        );
        let node = crate::NodeId::random();
        let pin = |soft| WireStrategy::NodeAffinity { node, soft };
        assert_eq!(
            confine(&pin(true), &rule),
            WireStrategy::PreferNode { node, within: sel }
        );
        assert_eq!(confine(&pin(false), &rule), pin(false));
    }

    #[test]
    fn a_task_rule_is_inherited_within_and_restored_after_even_a_panic() {
        let rule = Residency::new("region", &["in-south"]);
        assert_eq!(inherited(), None);
        within(Some(&rule), || {
            assert_eq!(inherited(), Some(rule.clone()));
            within(None, || assert_eq!(inherited(), None));
            assert_eq!(inherited(), Some(rule.clone()));
        });
        let panicked = std::panic::catch_unwind(|| within(Some(&rule), || panic!("boom")));
        assert!(panicked.is_err());
        assert_eq!(inherited(), None);
    }
}
