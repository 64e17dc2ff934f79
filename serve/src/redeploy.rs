//! How a deployed application meets the deployments running: each of its
//! specs is new (started), differs only in its user config (reconfigured
//! in place), differs only in its version while a rollout is declared
//! (rolled out by it), or differs otherwise (rolled over to a new
//! generation); deployments it no longer has scale to zero. Decided on the
//! controller's table alone; what must be sent to replicas or started as a
//! rollout is returned. A registry drift reference the deploying process
//! could not resolve (the registry unreachable, or the model out of its
//! reach now) keeps the file the running deployment watches when its drift
//! settings are unchanged; otherwise the deploy fails, saying why, before
//! anything changes.

use crate::autoscale::Autoscaler;
use crate::replica::Replica;
use crate::spec::{AppSpec, RolloutSpec, CHALLENGER_MARK};
use crate::upkeep::Dep;
use prism::ActorHandle;

/// What a deploy leaves to do beyond the table.
#[derive(Default)]
pub(crate) struct Applied {
    /// Declared rollouts to start.
    pub(crate) rollouts: Vec<RolloutSpec>,
    /// Replicas to hand a new user config.
    pub(crate) reconfigure: Vec<(ActorHandle<Replica>, String)>,
}

/// Applies `app` to the table `deps`, or says why it cannot be.
pub(crate) fn apply(deps: &mut Vec<Dep>, app: &AppSpec) -> Result<Applied, String> {
    let mut applied = Applied::default();
    for d in &app.deployments {
        if let Some(o) = deps
            .iter()
            .find(|o| o.spec.name == d.name && o.app != app.name)
        {
            return Err(format!(
                "deployment {} already belongs to application {}",
                d.name, o.app
            ));
        }
    }
    let kept = kept_references(deps, app)?;
    // Updated or removed by this deploy: either way not while a
    // rollout runs on it.
    if let Some(o) = deps
        .iter()
        .find(|o| o.rollout.is_some() && o.app == app.name)
    {
        return Err(format!(
            "deployment {} has a rollout in progress; wait for it or roll it back first",
            o.spec.name
        ));
    }
    // Deployments the app no longer has: scale to zero, then forget
    // (a rollout's challenger belongs to its live deployment).
    for o in deps
        .iter_mut()
        .filter(|o| o.app == app.name && !o.spec.name.contains(CHALLENGER_MARK))
    {
        if !app.deployments.iter().any(|d| d.name == o.spec.name) {
            o.target = 0;
            o.scaler = None;
        }
    }
    for d in &app.deployments {
        let mut d = d.clone();
        // A spec from a config file learns its content type from
        // its first replica; keep it, or every redeploy would roll.
        if d.content_type.is_empty() {
            if let Some(o) = deps.iter().find(|o| o.spec.name == d.name) {
                d.content_type = o.spec.content_type.clone();
            }
        }
        if let (Some(x), Some(file)) = (d.drift.as_mut(), kept.get(&d.name)) {
            x.resolved = Some(file.clone());
            x.unresolved = None;
        }
        let d = &d;
        match deps.iter_mut().find(|o| o.spec.name == d.name) {
            // A declared rollout: the new version goes out by it.
            Some(o) if d.rollout.is_some() && o.spec.only_version_differs(d) => {
                applied.rollouts.push(RolloutSpec {
                    deployment: d.name.clone(),
                    version: d.version.clone(),
                    model: Some(d.model.clone()),
                    user_config: Some(d.user_config.clone()),
                    policy: d.rollout.clone().expect("checked"),
                    registry: None,
                    registry_pinned: None,
                });
                o.spec.rollout = d.rollout.clone();
                o.spec.replicas = d.replicas;
                set_target(o);
            }
            Some(o) if o.spec.same_but_config(d) => {
                if o.spec.user_config != d.user_config {
                    let c = d.user_config.clone();
                    applied
                        .reconfigure
                        .extend(o.members.iter().map(|m| (m.handle.clone(), c.clone())));
                }
                // The drift reference the running replicas
                // watch against stays theirs (the same name may
                // resolve elsewhere now: no new version).
                let kept = o.spec.drift.as_mut().and_then(|x| x.resolved.take());
                o.spec = d.clone();
                if let (Some(x), Some(kept)) = (o.spec.drift.as_mut(), kept) {
                    x.resolved = Some(kept);
                }
                set_target(o);
            }
            Some(o) => {
                o.spec = d.clone();
                o.generation += 1;
                o.last_error = None;
                set_target(o);
            }
            None => {
                let mut o = Dep::new(&app.name, d.clone());
                set_target(&mut o);
                deps.push(o);
            }
        }
    }
    Ok(applied)
}

/// A deployment's replica target, from its spec (its autoscaler's bounds).
fn set_target(d: &mut Dep) {
    match &d.spec.autoscaling {
        Some(a) => {
            if d.scaler.as_ref().map(|s| s.config()) != Some(a) {
                d.scaler = Some(Autoscaler::new(a.clone()));
            }
            d.target = d.spec.replicas.clamp(a.min_replicas, a.max_replicas);
        }
        None => {
            d.scaler = None;
            d.target = d.spec.replicas;
        }
    }
}

/// For each deployment of `app` whose registry drift reference the
/// deployer could not resolve: the file its running deployment watches
/// with the same drift settings, or why the deploy cannot go on.
fn kept_references(
    deps: &[Dep],
    app: &AppSpec,
) -> Result<std::collections::HashMap<String, String>, String> {
    let mut kept = std::collections::HashMap::new();
    for d in &app.deployments {
        let Some(x) = d.drift.as_ref() else { continue };
        let Some(why) = &x.unresolved else { continue };
        let running = deps
            .iter()
            .filter(|o| o.spec.name == d.name && o.app == app.name)
            .find_map(|o| {
                o.spec
                    .drift
                    .as_ref()
                    .filter(|od| *od == x)?
                    .resolved
                    .clone()
            });
        match running {
            Some(file) => {
                tracing::warn!(
                    deployment = %d.name,
                    "{why}; the deployment keeps watching the reference it runs with ({file})"
                );
                kept.insert(d.name.clone(), file);
            }
            None => {
                return Err(format!(
                    "{why} (deployment {} runs with no such drift reference to keep)",
                    d.name
                ))
            }
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServeConfig;

    fn app(window: u32, resolved: &str, config: &str) -> AppSpec {
        let yaml = format!(
            "applications:\n  - name: a\n    deployments:\n      - name: d\n        model: M\n        \
             user_config: {config}\n        drift: {{ reference: m@champion, window: {window} }}\n"
        );
        let mut app = ServeConfig::parse("t.yaml", &yaml)
            .unwrap()
            .apps()
            .remove(0);
        app.deployments[0].drift.as_mut().unwrap().resolved = Some(resolved.into());
        app
    }

    fn watched(deps: &[Dep]) -> (u64, Option<String>) {
        let d = &deps[0];
        let resolved = d.spec.drift.as_ref().and_then(|x| x.resolved.clone());
        (d.generation, resolved)
    }

    #[test]
    fn a_redeploy_keeps_the_drift_reference_its_replicas_watch_against() {
        let mut deps = Vec::new();
        apply(&mut deps, &app(50, "/v1.drift.json", "1")).unwrap();
        assert_eq!(watched(&deps), (1, Some("/v1.drift.json".into())));
        // The alias moved: the same name resolves elsewhere, and nothing
        // that runs changes.
        let a = apply(&mut deps, &app(50, "/v2.drift.json", "1")).unwrap();
        assert!(a.rollouts.is_empty() && a.reconfigure.is_empty());
        assert_eq!(watched(&deps), (1, Some("/v1.drift.json".into())));
        // Nor with a new user config (a reconfigure in place).
        apply(&mut deps, &app(50, "/v2.drift.json", "2")).unwrap();
        assert_eq!(watched(&deps), (1, Some("/v1.drift.json".into())));
        // A new drift spec is a new generation, watching the new file.
        apply(&mut deps, &app(60, "/v2.drift.json", "2")).unwrap();
        assert_eq!(watched(&deps), (2, Some("/v2.drift.json".into())));
    }

    /// `app` whose drift reference the deployer could not resolve.
    fn unresolved(window: u32, config: &str) -> AppSpec {
        let mut a = app(window, "", config);
        let x = a.deployments[0].drift.as_mut().unwrap();
        x.resolved = None;
        x.unresolved = Some("drift reference m@champion: no such alias".into());
        a
    }

    #[test]
    fn a_redeploy_after_the_alias_went_keeps_the_file_it_watches() {
        // Nothing runs yet: nothing to keep, and the table stays empty.
        let mut deps = Vec::new();
        let e = apply(&mut deps, &unresolved(50, "1")).err().unwrap();
        assert!(
            e.contains("no such alias") && e.contains("no such drift reference to keep"),
            "{e}"
        );
        assert!(deps.is_empty());
        apply(&mut deps, &app(50, "/v1.drift.json", "1")).unwrap();
        // The alias is gone: the same settings keep the running file, a
        // new user config included.
        apply(&mut deps, &unresolved(50, "2")).unwrap();
        assert_eq!(watched(&deps), (1, Some("/v1.drift.json".into())));
        // New drift settings need the reference: refused, nothing changed.
        let e = apply(&mut deps, &unresolved(60, "2")).err().unwrap();
        assert!(e.contains("no such alias"), "{e}");
        assert_eq!(watched(&deps), (1, Some("/v1.drift.json".into())));
        assert_eq!(deps[0].spec.drift.as_ref().unwrap().window, 50);
    }
}
