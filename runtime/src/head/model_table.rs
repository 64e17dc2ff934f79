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
//! - **MR-4** a model belongs to the namespace of its first version's run
//!   (that run's job's), and a version comes only from a run of that
//!   namespace, so what one tenant registers never mixes with another's.

use super::run_table::RunTable;
use crate::ids::JobId;
use crate::proto::models::{ModelEvent, ModelInfo, ModelRequest, ModelVersion};
use std::collections::{BTreeMap, BTreeSet};

/// The registry.
#[derive(Debug, Clone, Default)]
pub struct ModelTable {
    models: BTreeMap<String, ModelInfo>,
    dirty: BTreeSet<String>,
}

fn valid_name(kind: &str, s: &str) -> Result<(), String> {
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
            ModelRequest::Show { name } => self
                .models
                .get(&name)
                .cloned()
                .map(|m| vec![m])
                .ok_or_else(|| self.unknown(&name)),
            ModelRequest::Register {
                name,
                run_id,
                checkpoint,
                card,
                who,
            } => {
                valid_name("model name", &name)?;
                let (run, _) = runs
                    .get(&run_id)
                    .ok_or_else(|| format!("no run {run_id:?} (prism runs list shows them)"))?;
                let ns = namespace_of(run.job_id).unwrap_or_else(|| "default".into());
                if let Some(m) = self.models.get(&name).filter(|m| m.namespace != ns) {
                    return Err(format!(
                        "model {name} belongs to namespace {}, and run {run_id} is of namespace \
                         {ns} (MR-4): register it under another name",
                        m.namespace
                    ));
                }
                let m = self
                    .models
                    .entry(name.clone())
                    .or_insert_with(|| ModelInfo {
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
                self.changed(&name)
            }
            ModelRequest::SetAlias {
                name,
                alias,
                version,
                who,
            } => {
                valid_name("alias", &alias)?;
                let unknown = self.unknown(&name);
                let m = self.models.get_mut(&name).ok_or(unknown)?;
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
                self.changed(&name)
            }
            ModelRequest::SetCard {
                name,
                version,
                card,
                who,
            } => {
                let unknown = self.unknown(&name);
                let m = self.models.get_mut(&name).ok_or(unknown)?;
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
                self.changed(&name)
            }
        }
    }

    /// The namespace model `name` belongs to, if it exists.
    pub fn namespace_of(&self, name: &str) -> Option<String> {
        self.models.get(name).map(|m| m.namespace.clone())
    }

    fn unknown(&self, name: &str) -> String {
        // Not the names registered: some may be other tenants'.
        format!("no model named {name:?} (prism models list shows those you may see)")
    }

    fn changed(&mut self, name: &str) -> Result<Vec<ModelInfo>, String> {
        self.dirty.insert(name.to_string());
        Ok(self.models.get(name).cloned().into_iter().collect())
    }

    /// Models changed since the last call.
    pub fn take_dirty(&mut self) -> Vec<ModelInfo> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .filter_map(|n| self.models.get(&n).cloned())
            .collect()
    }

    /// The registry of a head that died.
    pub fn restore(models: Vec<ModelInfo>) -> ModelTable {
        ModelTable {
            models: models.into_iter().map(|m| (m.name.clone(), m)).collect(),
            dirty: BTreeSet::new(),
        }
    }
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
        let show = ModelRequest::Show { name: "x".into() };
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
        let back = ModelTable::restore(vec![m.clone()]);
        assert_eq!(back.models.get("digits"), Some(&m));
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
    fn a_model_keeps_the_namespace_of_its_first_run_mr4() {
        let mut t = ModelTable::default();
        let m = register(&mut t, "run-a").unwrap().remove(0);
        assert_eq!(m.namespace, "vision");
        assert_eq!(t.namespace_of("digits").as_deref(), Some("vision"));
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
        let e = other(&mut t, Some("ads")).unwrap_err();
        assert!(
            e.starts_with(
                "model digits belongs to namespace vision, and run run-b is of namespace ads"
            ),
            "{e}"
        );
        // A run of a job the head never registered counts as default's.
        assert!(other(&mut t, None)
            .unwrap_err()
            .contains("namespace default"));
        assert_eq!(t.models["digits"].versions.len(), 1);
        assert_eq!(other(&mut t, Some("vision")).unwrap()[0].versions.len(), 2);
        // An unknown name's error names no other model.
        let e = show_unknown(&mut t);
        assert!(!e.contains("digits"), "{e}");
    }
}
