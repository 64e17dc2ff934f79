//! The model registry: named models whose versions are made from training
//! runs (their params and last metrics copied in), aliases that move
//! between versions, model cards, and a history of every change with who
//! made it. Pure; each changed model is a durable row.
//!
//! Invariants:
//!
//! - **MR-1** versions of a model are numbered 1, 2, … in registration
//!   order and never reused;
//! - **MR-2** an alias points at an existing version, and at one only;
//! - **MR-3** every accepted change appends one history event;
//! - **MR-4** a model belongs to the namespace of its versions' runs (their
//!   jobs'): a version of `NAME` made from a run of namespace `ns` is a
//!   version of `ns`'s `NAME`, so what one tenant registers never mixes
//!   with another's;
//! - **MR-5** names are per namespace: two tenants may each have a model
//!   `NAME`, and neither's requests can tell whether the other's exists
//!   (every request is judged in the namespace it names, or its caller's,
//!   `core/model_names.rs`).

use super::run_table::RunTable;
use crate::ids::JobId;
use crate::proto::models::{ModelEvent, ModelInfo, ModelRequest, ModelVersion};
use std::collections::{BTreeMap, BTreeSet};

/// A model's key: its namespace and its name (MR-5).
type Key = (String, String);

/// The registry.
#[derive(Debug, Clone, Default)]
pub struct ModelTable {
    models: BTreeMap<Key, ModelInfo>,
    dirty: BTreeSet<Key>,
    /// Names whose rows may still be stored under the key of a registry
    /// with names across the cluster (before MR-5): deleted at the next
    /// write, which rewrites every model under its own key.
    legacy: Vec<String>,
}

/// The namespace a request names (`default` for none left by the gate).
fn ns_of(namespace: String) -> String {
    if namespace.is_empty() {
        "default".into()
    } else {
        namespace
    }
}

pub(crate) fn valid_name(kind: &str, s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    match ok {
        true => Ok(()),
        false => Err(format!(
            "{kind} {s:?} must be 1-128 letters, digits, '-', '_' or '.'"
        )),
    }
}

/// The answer to a version registered from run `run_id`, which the head
/// does not have (or the caller may not see, AC-6).
pub fn no_run(run_id: &str) -> String {
    format!("no run {run_id:?} (prism runs list shows them)")
}

impl ModelTable {
    /// Applies a request at `now_ms`; `runs` supplies a registered run's
    /// params and metrics, `namespace_of` its job's namespace (a job the
    /// head never registered, a driver's started before there were users,
    /// counts as `default`'s). Answers the models named (or all, for
    /// `List`).
    pub fn handle(
        &mut self,
        req: ModelRequest,
        runs: &RunTable,
        namespace_of: impl Fn(JobId) -> Option<String>,
        now_ms: u64,
    ) -> Result<Vec<ModelInfo>, String> {
        match req {
            ModelRequest::List => Ok(self.models.values().cloned().collect()),
            ModelRequest::Show { namespace, name } => {
                let key = (ns_of(namespace), name);
                self.models
                    .get(&key)
                    .cloned()
                    .map(|m| vec![m])
                    .ok_or_else(|| unknown(&key))
            }
            ModelRequest::Register {
                name,
                run_id,
                checkpoint,
                card,
                who,
            } => {
                valid_name("model name", &name)?;
                let (run, _) = runs.get(&run_id).ok_or_else(|| no_run(&run_id))?;
                let ns = namespace_of(run.job_id).unwrap_or_else(|| "default".into());
                let key = (ns.clone(), name.clone());
                let m = self.models.entry(key.clone()).or_insert_with(|| ModelInfo {
                    name: name.clone(),
                    namespace: ns,
                    versions: Vec::new(),
                    aliases: Vec::new(),
                    history: Vec::new(),
                });
                let version = m.versions.last().map_or(1, |v| v.version + 1);
                m.versions.push(ModelVersion {
                    version,
                    run_id: run_id.clone(),
                    checkpoint,
                    params: run.params.clone(),
                    metrics: run.last_values.clone(),
                    card,
                    created_ms: now_ms,
                    created_by: who.clone(),
                });
                m.history.push(ModelEvent {
                    at_ms: now_ms,
                    who,
                    what: format!("registered v{version} from run {run_id}"),
                });
                self.changed(key)
            }
            ModelRequest::SetAlias {
                namespace,
                name,
                alias,
                version,
                who,
            } => {
                valid_name("alias", &alias)?;
                let key = (ns_of(namespace), name.clone());
                let m = self.models.get_mut(&key).ok_or_else(|| unknown(&key))?;
                if !m.versions.iter().any(|v| v.version == version) {
                    return Err(format!(
                        "model {name} has no version {version} (it has 1..={})",
                        m.versions.len()
                    ));
                }
                let what = match m.aliases.iter_mut().find(|(a, _)| *a == alias) {
                    Some((_, v)) if *v == version => return Ok(vec![m.clone()]),
                    Some((_, v)) => {
                        let was = std::mem::replace(v, version);
                        format!("{alias}: v{was} -> v{version}")
                    }
                    None => {
                        m.aliases.push((alias.clone(), version));
                        m.aliases.sort();
                        format!("{alias}: -> v{version}")
                    }
                };
                m.history.push(ModelEvent {
                    at_ms: now_ms,
                    who,
                    what,
                });
                self.changed(key)
            }
            ModelRequest::SetCard {
                namespace,
                name,
                version,
                card,
                who,
            } => {
                let key = (ns_of(namespace), name.clone());
                let m = self.models.get_mut(&key).ok_or_else(|| unknown(&key))?;
                let v = m
                    .versions
                    .iter_mut()
                    .find(|v| v.version == version)
                    .ok_or_else(|| format!("model {name} has no version {version}"))?;
                v.card = card;
                m.history.push(ModelEvent {
                    at_ms: now_ms,
                    who,
                    what: format!("card of v{version} edited"),
                });
                self.changed(key)
            }
        }
    }

    /// The namespaces that have a model named `name`.
    pub fn namespaces_of(&self, name: &str) -> Vec<String> {
        self.models
            .keys()
            .filter(|(_, n)| n == name)
            .map(|(ns, _)| ns.clone())
            .collect()
    }

    fn changed(&mut self, key: Key) -> Result<Vec<ModelInfo>, String> {
        let m = self.models.get(&key).cloned().into_iter().collect();
        self.dirty.insert(key);
        Ok(m)
    }

    /// Models changed since the last call.
    pub fn take_dirty(&mut self) -> Vec<ModelInfo> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .filter_map(|k| self.models.get(&k).cloned())
            .collect()
    }

    /// Names whose rows may be stored under a key from before MR-5, once.
    pub fn take_legacy(&mut self) -> Vec<String> {
        std::mem::take(&mut self.legacy)
    }

    /// The registry of a head that died. Every model is written again
    /// under its (namespace, name) key at the next write, and the key a
    /// registry from before MR-5 stored it under is deleted. Should both
    /// rows be there (a head stopped between the two), the one with the
    /// longer history is the newer (MR-3).
    pub fn restore(models: Vec<ModelInfo>) -> ModelTable {
        let mut t = ModelTable::default();
        for m in models {
            let key = (m.namespace.clone(), m.name.clone());
            match t.models.get(&key) {
                Some(have) if have.history.len() >= m.history.len() => {}
                _ => {
                    t.models.insert(key, m);
                }
            }
        }
        t.dirty = t.models.keys().cloned().collect();
        t.legacy = t.models.keys().map(|(_, n)| n.clone()).collect();
        t.legacy.sort();
        t.legacy.dedup();
        t
    }
}

/// A name the registry does not hold in that namespace. It names no other
/// model, nor whether another namespace has one of that name (MR-5).
fn unknown((ns, name): &Key) -> String {
    format!("no model named {name:?} in namespace {ns} (prism models list shows those you may see)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::runs::{RunPoint, RunReport};

    fn runs() -> RunTable {
        let mut t = RunTable::default();
        for (id, loss) in [("run-a", 0.5), ("run-b", 0.2)] {
            let mut r = RunReport::points(
                id,
                "mlp",
                crate::JobId::random(),
                vec![RunPoint {
                    step: 1,
                    values: vec![("loss".into(), loss)],
                    seconds: 1.0,
                }],
            );
            r.params = vec![("config.lr".into(), "0.1".into())];
            t.report(r, 1);
        }
        t
    }

    fn show_unknown(t: &mut ModelTable) -> String {
        let show = ModelRequest::Show {
            namespace: "vision".into(),
            name: "x".into(),
        };
        t.handle(show, &runs(), |_| None, 1).unwrap_err()
    }

    fn register(t: &mut ModelTable, run: &str) -> Result<Vec<ModelInfo>, String> {
        t.handle(
            ModelRequest::Register {
                name: "digits".into(),
                run_id: run.into(),
                checkpoint: "/w".into(),
                card: "intent: digits".into(),
                who: "alice".into(),
            },
            &runs(),
            |_| Some("vision".into()),
            10,
        )
    }

    #[test]
    fn versions_are_numbered_and_copy_their_run_mr1() {
        let mut t = ModelTable::default();
        register(&mut t, "run-a").unwrap();
        let m = register(&mut t, "run-b").unwrap().remove(0);
        assert_eq!(
            m.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(m.versions[1].metrics, vec![("loss".to_string(), 0.2)]);
        assert_eq!(m.versions[1].params[0].0, "config.lr");
        assert!(register(&mut t, "nope").unwrap_err().contains("no run"));
    }

    #[test]
    fn aliases_move_and_every_change_is_in_the_history_mr2_mr3() {
        let mut t = ModelTable::default();
        register(&mut t, "run-a").unwrap();
        register(&mut t, "run-b").unwrap();
        let alias = |t: &mut ModelTable, v| {
            t.handle(
                ModelRequest::SetAlias {
                    namespace: "vision".into(),
                    name: "digits".into(),
                    alias: "champion".into(),
                    version: v,
                    who: "bob".into(),
                },
                &runs(),
                |_| None,
                20,
            )
        };
        alias(&mut t, 1).unwrap();
        let m = alias(&mut t, 2).unwrap().remove(0);
        assert_eq!(m.aliases, vec![("champion".to_string(), 2)]);
        let what: Vec<&str> = m.history.iter().map(|e| e.what.as_str()).collect();
        assert_eq!(
            what,
            vec![
                "registered v1 from run run-a",
                "registered v2 from run run-b",
                "champion: -> v1",
                "champion: v1 -> v2"
            ]
        );
        assert!(alias(&mut t, 3).unwrap_err().contains("no version 3"));
        assert_eq!(t.take_dirty().len(), 1);
        assert!(t.take_dirty().is_empty());
        // A restored registry keeps the newer of two rows of one model
        // (one stored before MR-5), and rewrites it under its own key.
        let mut older = m.clone();
        older.history.pop();
        let mut back = ModelTable::restore(vec![m.clone(), older.clone()]);
        let key = ("vision".to_string(), "digits".to_string());
        assert_eq!(back.models.get(&key), Some(&m));
        assert_eq!(ModelTable::restore(vec![older, m.clone()]).models[&key], m);
        assert_eq!(back.take_dirty(), vec![m]);
        assert_eq!(back.take_legacy(), vec!["digits".to_string()]);
        assert!(back.take_legacy().is_empty());
    }

    #[test]
    fn bad_names_and_unknown_models_say_so() {
        let mut t = ModelTable::default();
        let e = show_unknown(&mut t);
        assert!(e.contains("no model named \"x\""), "{e}");
        let e = t
            .handle(
                ModelRequest::Register {
                    name: "a b".into(),
                    run_id: "run-a".into(),
                    checkpoint: String::new(),
                    card: String::new(),
                    who: String::new(),
                },
                &runs(),
                |_| None,
                1,
            )
            .unwrap_err();
        assert!(e.contains("model name"), "{e}");
    }

    #[test]
    fn a_name_is_per_namespace_and_an_unknown_one_tells_nothing_mr4_mr5() {
        let mut t = ModelTable::default();
        let m = register(&mut t, "run-a").unwrap().remove(0);
        assert_eq!(m.namespace, "vision");
        let other = |t: &mut ModelTable, ns: Option<&str>| {
            t.handle(
                ModelRequest::Register {
                    name: "digits".into(),
                    run_id: "run-b".into(),
                    checkpoint: String::new(),
                    card: String::new(),
                    who: "bob".into(),
                },
                &runs(),
                |_| ns.map(String::from),
                11,
            )
        };
        // ads's digits is another model, whose first version is its own.
        let ads = other(&mut t, Some("ads")).unwrap().remove(0);
        assert_eq!((ads.namespace.as_str(), ads.versions.len()), ("ads", 1));
        // A run of a job the head never registered counts as default's.
        assert_eq!(other(&mut t, None).unwrap()[0].namespace, "default");
        assert_eq!(other(&mut t, Some("vision")).unwrap()[0].versions.len(), 2);
        assert_eq!(t.namespaces_of("digits"), vec!["ads", "default", "vision"]);
        let show = |t: &mut ModelTable, ns: &str| {
            let req = ModelRequest::Show {
                namespace: ns.into(),
                name: "digits".into(),
            };
            t.handle(req, &runs(), |_| None, 12)
        };
        assert_eq!(show(&mut t, "vision").unwrap()[0].versions.len(), 2);
        assert_eq!(show(&mut t, "").unwrap()[0].namespace, "default");
        // Unknown in a namespace: the error names that namespace only.
        let e = show(&mut t, "audio").unwrap_err();
        assert!(
            e.starts_with("no model named \"digits\" in namespace audio"),
            "{e}"
        );
        assert!(!e.contains("vision") && !e.contains("ads"), "{e}");
    }
}
