//! Which namespace a model request acts in (MR-5 of `model_table.rs`:
//! names are per namespace). A request that names its namespace acts
//! there. One that names none acts in its caller's:
//!
//! - **MN-1** a process's request, in its job's namespace;
//! - **MN-2** a user's (or the join token's), in the one namespace among
//!   those they may see that has a model of that name; in their first
//!   namespace when none has; and it is refused, naming those namespaces,
//!   when several have. Only namespaces the caller may see are searched, so
//!   the answer never tells whether another tenant has a model of that
//!   name.

use super::HeadCore;
use crate::head::access::Principal;
use crate::proto::head::HeadRequest;
use crate::proto::models::ModelRequest;

/// The namespace field of a model request that names a model by name.
fn namespace_field(req: &mut HeadRequest) -> Option<(&mut String, &str)> {
    match req {
        HeadRequest::Models(
            ModelRequest::Show { namespace, name }
            | ModelRequest::SetAlias {
                namespace, name, ..
            }
            | ModelRequest::SetCard {
                namespace, name, ..
            },
        ) => Some((namespace, name.as_str())),
        _ => None,
    }
}

impl HeadCore {
    /// MN-2: where `who`'s request for model `name` acts when it names no
    /// namespace.
    pub(super) fn model_home(&self, who: &Principal, name: &str) -> Result<String, String> {
        let seen: Vec<String> = self
            .models
            .namespaces_of(name)
            .into_iter()
            .filter(|ns| who.in_namespace(ns))
            .collect();
        match seen.as_slice() {
            [] => Ok(who.home_namespace()),
            [one] => Ok(one.clone()),
            many => Err(format!(
                "model {name} is in namespaces {}: name one (--namespace)",
                many.join(", ")
            )),
        }
    }

    /// MN-2: fills in the namespace of `who`'s model request that names none.
    pub(super) fn stamp_model_namespace(
        &self,
        who: &Principal,
        req: &mut HeadRequest,
    ) -> Result<(), String> {
        let Some((namespace, name)) = namespace_field(req) else {
            return Ok(());
        };
        if namespace.is_empty() {
            let home = self.model_home(who, name)?;
            *namespace = home;
        }
        Ok(())
    }
}

/// MN-1: a process's model request that names no namespace acts in its
/// job's, `job_ns`.
pub(super) fn stamp_job_namespace(req: &mut HeadRequest, job_ns: &str) {
    if let Some((namespace, _)) = namespace_field(req) {
        if namespace.is_empty() {
            *namespace = job_ns.to_string();
        }
    }
}
