//! The controller's side of rollouts: the new version runs as a
//! challenger deployment (`NAME~VERSION`) next to the live one; each tick
//! drives the pure [`Rollout`] from the challenger's window and applies its
//! effects: the traffic split callers read from the route table, promotion
//! (the two replica sets swap places, the old one drains), rollback (the
//! challenger drains). Every step lands in the history.

use crate::rollout::{Effect, Phase, Rollout};
use crate::spec::{RolloutSpec, Split, CHALLENGER_MARK};
use crate::upkeep::Dep;
use crate::window::Slices;

/// A rollout in progress, held by the live deployment.
pub(crate) struct Active {
    pub(crate) rollout: Rollout,
    pub(crate) challenger: String,
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) weight: u32,
    pub(crate) mirror: u32,
    pub(crate) sticky_header: Option<String>,
    pub(crate) retry_on_live: bool,
    /// Mirrored answers compared with the live version's, and agreeing.
    pub(crate) compared: u64,
    /// See `compared`.
    pub(crate) agreed: u64,
}

impl Active {
    /// The split callers apply (None while nothing goes to the challenger).
    pub(crate) fn split(&self) -> Option<Split> {
        (self.weight > 0 || self.mirror > 0).then(|| Split {
            to: self.challenger.clone(),
            version: self.to.clone(),
            weight: self.weight,
            mirror: self.mirror,
            sticky_header: self.sticky_header.clone(),
            retry_on_live: self.retry_on_live,
        })
    }
}

/// One line of `prism serve history`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct HistoryEntry {
    /// When, ms since the Unix epoch.
    pub at_unix_ms: u64,
    /// The deployment.
    pub deployment: String,
    /// The live version.
    pub from: String,
    /// The new version.
    pub to: String,
    /// started, step, promoted, rolled back, ended.
    pub event: String,
    /// What happened, and why.
    pub detail: String,
}

fn entry(d: &str, a: &Active, event: &str, detail: String) -> HistoryEntry {
    let at_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_millis() as u64);
    HistoryEntry {
        at_unix_ms,
        deployment: d.to_string(),
        from: a.from.clone(),
        to: a.to.clone(),
        event: event.to_string(),
        detail,
    }
}

/// A deployment's version label (its generation when it has none).
pub(crate) fn label(d: &Dep) -> String {
    match d.spec.version.as_str() {
        "" => format!("g{}", d.generation),
        v => v.to_string(),
    }
}

/// Starts a rollout: the challenger deployment is created and starts its
/// replicas; traffic moves once they are all up.
pub(crate) fn start(
    deps: &mut Vec<Dep>,
    history: &mut Vec<HistoryEntry>,
    r: RolloutSpec,
) -> Result<(), String> {
    let p = r.policy;
    p.strategy.validate()?;
    let name = &r.deployment;
    let Some(i) = deps.iter().position(|d| &d.spec.name == name) else {
        let known: Vec<&str> = deps.iter().map(|d| d.spec.name.as_str()).collect();
        return Err(format!(
            "no deployment named {name:?} (deployed: {known:?})"
        ));
    };
    if let Some(a) = &deps[i].rollout {
        return Err(format!(
            "deployment {name} already rolls out version {} (from {}); wait for it or roll it back",
            a.to, a.from
        ));
    }
    let from = label(&deps[i]);
    if r.version.is_empty() || r.version.contains(CHALLENGER_MARK) || r.version == from {
        if r.version == from && r.registry.is_some() {
            return Err(format!("deployment {name} already serves {from}"));
        }
        return Err(format!(
            "the new version needs a label other than the live one ({from:?}) and without {CHALLENGER_MARK:?}"
        ));
    }
    let challenger = format!("{name}{CHALLENGER_MARK}{}", r.version);
    if deps.iter().any(|d| d.spec.name == challenger) {
        return Err(format!(
            "version {} of {name} is still draining from an earlier rollout; try again shortly",
            r.version
        ));
    }
    let live = &deps[i];
    let mut spec = live.spec.clone();
    if let Some(m) = r.model {
        spec.model = m;
    }
    if let Some(c) = r.user_config {
        spec.user_config = c;
    }
    spec.version = r.version.clone();
    spec.validate()?;
    spec.name = challenger.clone();
    spec.route_prefix = None;
    spec.autoscaling = None;
    let rollout = Rollout::new(p.strategy.clone(), p.thresholds.clone());
    spec.replicas = rollout.replicas(live.target.max(1));
    let mut c = Dep::new(&live.app, spec);
    c.target = c.spec.replicas;
    c.window = Slices::new(p.thresholds.window_s);
    let a = Active {
        rollout,
        challenger,
        from,
        to: r.version.clone(),
        weight: 0,
        mirror: 0,
        sticky_header: p.sticky_header,
        retry_on_live: p.retry_on_live,
        compared: 0,
        agreed: 0,
    };
    history.push(entry(name, &a, "started", format!("{:?}", p.strategy)));
    tracing::info!(deployment = %name, "rollout {} -> {} started", a.from, a.to);
    deps[i].rollout = Some(a);
    deps.push(c);
    Ok(())
}

/// Two distinct elements of `v`, mutably.
fn two_mut<T>(v: &mut [T], i: usize, j: usize) -> (&mut T, &mut T) {
    assert_ne!(i, j);
    if i < j {
        let (l, r) = v.split_at_mut(j);
        (&mut l[i], &mut r[0])
    } else {
        let (l, r) = v.split_at_mut(i);
        (&mut r[0], &mut l[j])
    }
}

/// One pass over every rollout at `now` (ms); true when routes changed.
pub(crate) fn drive(deps: &mut Vec<Dep>, history: &mut Vec<HistoryEntry>, now: u64) -> bool {
    let mut changed = false;
    for i in 0..deps.len() {
        let Some(mut a) = deps[i].rollout.take() else {
            continue;
        };
        let effects = match deps.iter().position(|d| d.spec.name == a.challenger) {
            None => a.rollout.abort("the new version's deployment is gone"),
            Some(j) => {
                let c = &mut deps[j];
                match (a.rollout.phase(), &c.last_error) {
                    (Phase::Starting, Some(e)) => a
                        .rollout
                        .abort(&format!("the new version did not start: {e}")),
                    (_, Some(e)) => a
                        .rollout
                        .abort(&format!("the new version's replicas fail: {e}")),
                    (Phase::Starting, None) if c.settled() && c.target > 0 => a.rollout.ready(now),
                    (Phase::Starting, None) => Vec::new(),
                    // Replicas starting or being replaced: the window says
                    // so, and the machine holds its steps (not its breaches).
                    _ => {
                        let mut w = c.window.summary(now).window;
                        w.settled = c.settled();
                        a.rollout.tick(now, &w)
                    }
                }
            }
        };
        let name = deps[i].spec.name.clone();
        let mut done = false;
        for fx in effects {
            changed = true;
            match fx {
                Effect::Weight(w) => {
                    a.weight = w;
                    // The challenger grows with its share.
                    let live = deps[i].target.max(1);
                    let want = a.rollout.replicas(live);
                    if let Some(c) = deps.iter_mut().find(|d| d.spec.name == a.challenger) {
                        c.target = c.target.max(want);
                    }
                }
                Effect::Mirror(m) => a.mirror = m,
                Effect::Note(n) => history.push(entry(&name, &a, "step", n)),
                Effect::Promote => {
                    if let Some(j) = deps.iter().position(|d| d.spec.name == a.challenger) {
                        promote(deps, i, j);
                    }
                    let detail = format!(
                        "{} serves all traffic; {} retired{}",
                        a.to,
                        a.from,
                        agreement(&a)
                    );
                    tracing::info!(deployment = %name, "promoted: {detail}");
                    history.push(entry(&name, &a, "promoted", detail));
                    done = true;
                }
                Effect::Rollback(why) => {
                    retire(deps, &a.challenger);
                    tracing::warn!("rolled back {name} {} → {}: {why}", a.to, a.from);
                    history.push(entry(&name, &a, "rolled back", why));
                    done = true;
                }
                Effect::End => {
                    retire(deps, &a.challenger);
                    let detail = format!("shadowing done{}", agreement(&a));
                    history.push(entry(&name, &a, "ended", detail));
                    done = true;
                }
            }
        }
        if !done {
            deps[i].rollout = Some(a);
        }
    }
    // Challengers whose replicas are all gone are forgotten.
    let before = deps.len();
    deps.retain(|d| {
        !(d.spec.name.contains(CHALLENGER_MARK)
            && d.target == 0
            && d.members.is_empty()
            && d.starting == 0
            && d.draining == 0)
    });
    changed || deps.len() != before
}

fn agreement(a: &Active) -> String {
    match a.compared {
        0 => String::new(),
        n => format!("; {} of {n} mirrored answers agreed", a.agreed),
    }
}

/// The challenger's replicas become the live set; the live set drains.
fn promote(deps: &mut [Dep], live: usize, challenger: usize) {
    let (a, b) = two_mut(deps, live, challenger);
    std::mem::swap(&mut a.members, &mut b.members);
    std::mem::swap(&mut a.spec.content_type, &mut b.spec.content_type);
    std::mem::swap(&mut a.spec.model, &mut b.spec.model);
    std::mem::swap(&mut a.spec.user_config, &mut b.spec.user_config);
    std::mem::swap(&mut a.spec.version, &mut b.spec.version);
    a.generation += 1;
    for m in &mut a.members {
        m.generation = a.generation;
    }
    b.target = 0;
    b.scaler = None;
}

fn retire(deps: &mut [Dep], challenger: &str) {
    if let Some(c) = deps.iter_mut().find(|d| d.spec.name == challenger) {
        c.target = 0;
        c.scaler = None;
    }
}

/// Ends the rollouts of the deployments `gone` is true for (deleted, shut
/// down), with a history entry each.
pub(crate) fn end_with(
    deps: &mut [Dep],
    history: &mut Vec<HistoryEntry>,
    gone: impl Fn(&Dep) -> bool,
    why: &str,
) {
    for d in deps.iter_mut().filter(|d| gone(d)) {
        if let Some(a) = d.rollout.take() {
            history.push(entry(&d.spec.name, &a, "rolled back", why.to_string()));
        }
    }
}

/// A user's rollback of `deployment`'s rollout.
pub(crate) fn rollback(
    deps: &mut [Dep],
    history: &mut Vec<HistoryEntry>,
    deployment: &str,
    who: &str,
) -> Result<(), String> {
    let d = deps
        .iter_mut()
        .find(|d| d.spec.name == deployment)
        .ok_or_else(|| format!("no deployment named {deployment:?}"))?;
    let a = d
        .rollout
        .take()
        .ok_or_else(|| format!("deployment {deployment} has no rollout in progress"))?;
    let why = format!("rolled back by {who}");
    retire(deps, &a.challenger);
    tracing::warn!("rolled back {deployment} {} → {}: {why}", a.to, a.from);
    history.push(entry(deployment, &a, "rolled back", why));
    Ok(())
}
