//! The model registry's messages: named models with numbered versions made
//! from training runs, aliases (`champion`, `challenger`, any name) that
//! move between versions, model cards, and who changed what when
//! ([`crate::head::model_table`] keeps them, durably).

use rkyv::{Archive, Deserialize, Serialize};

/// One version of a model.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelVersion {
    /// 1, 2, …
    pub version: u32,
    /// The run that made it.
    pub run_id: String,
    /// Where its weights are (a file or directory), if given.
    pub checkpoint: String,
    /// The run's params when registered.
    pub params: Vec<(String, String)>,
    /// The run's last metrics when registered.
    pub metrics: Vec<(String, f64)>,
    /// Its model card: intent, training data, evaluation, limitations.
    pub card: String,
    /// When (Unix ms) and by whom.
    pub created_ms: u64,
    /// Who registered it.
    pub created_by: String,
}

/// A change, for the history.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelEvent {
    /// Unix ms.
    pub at_ms: u64,
    /// Who.
    pub who: String,
    /// What (`registered v3`, `champion: v2 -> v3`, `card of v3 edited`).
    pub what: String,
}

/// A named model.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelInfo {
    /// Its name (one per namespace: two tenants' models may share a name).
    pub name: String,
    /// The namespace it belongs to: that of its versions' runs' jobs.
    pub namespace: String,
    /// Its versions, oldest first.
    pub versions: Vec<ModelVersion>,
    /// Aliases and the versions they point at.
    pub aliases: Vec<(String, u32)>,
    /// Every change, oldest first.
    pub history: Vec<ModelEvent>,
}

/// A request to the registry.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum ModelRequest {
    /// Makes the next version of `name` from run `run_id`, in the run's
    /// namespace.
    Register {
        /// The model.
        name: String,
        /// The run (it must exist).
        run_id: String,
        /// Where its weights are.
        checkpoint: String,
        /// Its card.
        card: String,
        /// Who asks.
        who: String,
    },
    /// Points `alias` at `version` (moving it if it points elsewhere).
    SetAlias {
        /// The model's namespace; empty: the caller's (see [`ModelRequest::Show`]).
        namespace: String,
        /// The model.
        name: String,
        /// The alias.
        alias: String,
        /// The version.
        version: u32,
        /// Who asks.
        who: String,
    },
    /// Replaces a version's card.
    SetCard {
        /// The model's namespace; empty: the caller's (see [`ModelRequest::Show`]).
        namespace: String,
        /// The model.
        name: String,
        /// The version.
        version: u32,
        /// The new card.
        card: String,
        /// Who asks.
        who: String,
    },
    /// Every model.
    List,
    /// One model.
    Show {
        /// Its namespace. Empty: a process's job's; a user's one namespace
        /// (of those they may see) that has a model of that name, else their
        /// first.
        namespace: String,
        /// The model.
        name: String,
    },
}
