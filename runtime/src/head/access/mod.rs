//! Who may do what on the head: permissions, roles, the principal a
//! connection acts as, and the one decision [`authorize`]. Pure: no
//! sockets, no clock. The tables that hold users and the audit trail are
//! [`users`] and [`audit`]; `head::core::access` wires them into requests.
//!
//! Invariants:
//!
//! - **AC-1** an action is allowed only if the principal's role holds its
//!   permission and, for an action in a namespace, the principal was
//!   granted that namespace (or `*`);
//! - **AC-2** a refusal names the user, their role and namespaces, the
//!   action, and what was missing, and changes nothing;
//! - **AC-3** a revoked user is refused on every request from the moment of
//!   the revocation, on connections opened before it too.
//! - **AC-4** a caller granted some namespaces only sees their rows only
//!   ([`visibility`]);
//! - **AC-5** a request that changes the head's state is judged in the
//!   same turn of the head that acts on it, against the state it acts on:
//!   no change between the two (a model another tenant registers under
//!   that name meanwhile, a role changed) can slip past the judgement.
//!   (Listings and logs, which the server gathers over several turns, are
//!   judged as they arrive and scoped by the visibility of their turn.)
//! - **AC-6** a run in a namespace the caller was not granted is, to them,
//!   a run that does not exist: reading it, or registering a model version
//!   from it, gets the answer a missing run gets (no refusal naming its
//!   namespace, which would tell that it exists and where).
//!
//! Besides users, a connection that holds the join token may ask, in its
//! `Hello`, to act as a viewer of some namespaces only
//! ([`Principal::join_token_viewer`]): the dashboard's read-only token
//! reads the head that way.

pub mod audit;
pub mod users;
pub mod visibility;

use std::fmt;

/// Everything a role can allow. Names are `area:verb`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    /// Read cluster state: nodes, jobs, actors, tasks, objects, runs, models.
    StateRead,
    /// Read job and worker logs.
    LogsRead,
    /// Upload binaries and submit jobs.
    JobsSubmit,
    /// Stop one's own jobs.
    JobsStop,
    /// Stop anyone's jobs.
    JobsStopAny,
    /// Create actors directly through the head.
    ActorsCreate,
    /// Create and remove placement groups.
    PlacementCreate,
    /// Report training runs.
    RunsWrite,
    /// Register models and move their aliases.
    ModelsWrite,
    /// Point the `production` alias (deploy to production).
    ModelsProduction,
    /// Mint node certificates, drain nodes.
    NodesManage,
    /// Add and revoke users, define roles.
    UsersManage,
    /// Set namespaces' quotas and weights.
    QuotasManage,
    /// Read and verify the audit trail.
    AuditRead,
    /// Read unmasked personal data.
    PiiRead,
}

impl Permission {
    /// Every permission, in order.
    pub const ALL: [Permission; 15] = [
        Permission::StateRead,
        Permission::LogsRead,
        Permission::JobsSubmit,
        Permission::JobsStop,
        Permission::JobsStopAny,
        Permission::ActorsCreate,
        Permission::PlacementCreate,
        Permission::RunsWrite,
        Permission::ModelsWrite,
        Permission::ModelsProduction,
        Permission::NodesManage,
        Permission::UsersManage,
        Permission::QuotasManage,
        Permission::AuditRead,
        Permission::PiiRead,
    ];

    /// Its name (`jobs:submit`).
    pub fn name(self) -> &'static str {
        match self {
            Permission::StateRead => "state:read",
            Permission::LogsRead => "logs:read",
            Permission::JobsSubmit => "jobs:submit",
            Permission::JobsStop => "jobs:stop",
            Permission::JobsStopAny => "jobs:stop-any",
            Permission::ActorsCreate => "actors:create",
            Permission::PlacementCreate => "placement:create",
            Permission::RunsWrite => "runs:write",
            Permission::ModelsWrite => "models:write",
            Permission::ModelsProduction => "models:production",
            Permission::NodesManage => "nodes:manage",
            Permission::UsersManage => "users:manage",
            Permission::QuotasManage => "quotas:manage",
            Permission::AuditRead => "audit:read",
            Permission::PiiRead => "pii:read",
        }
    }

    /// The permission with this name.
    pub fn parse(name: &str) -> Result<Permission, String> {
        Permission::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| {
                let all: Vec<&str> = Permission::ALL.iter().map(|p| p.name()).collect();
                format!("unknown permission {name:?}; known: {}", all.join(", "))
            })
    }
}

/// The roles every cluster has.
pub const BUILTIN_ROLES: [&str; 3] = ["admin", "developer", "viewer"];

/// The permissions of a built-in role (`None`: not built in).
pub fn builtin_role(name: &str) -> Option<Vec<Permission>> {
    use Permission as P;
    match name {
        "admin" => Some(Permission::ALL.to_vec()),
        "developer" => Some(vec![
            P::StateRead,
            P::LogsRead,
            P::JobsSubmit,
            P::JobsStop,
            P::ActorsCreate,
            P::PlacementCreate,
            P::RunsWrite,
            P::ModelsWrite,
        ]),
        "viewer" => Some(vec![P::StateRead, P::LogsRead]),
        _ => None,
    }
}

/// The name a join-token viewer acts as (no user's name has a space).
pub const JOIN_TOKEN_VIEWER: &str = "join-token viewer";

/// Who a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user's name.
    pub name: String,
    /// Their role's name.
    pub role: String,
    /// What the role allows.
    pub permissions: Vec<Permission>,
    /// Namespaces granted (`*`: all).
    pub namespaces: Vec<String>,
}

impl Principal {
    /// The holder of the cluster's join token: the admin of every namespace.
    pub fn cluster_admin() -> Principal {
        Principal {
            name: "admin".into(),
            role: "admin".into(),
            permissions: Permission::ALL.to_vec(),
            namespaces: vec!["*".into()],
        }
    }

    /// A connection that holds the join token but asked to act as a
    /// viewer of `namespaces` (`*`: all): it reads state and logs there,
    /// and nothing else.
    pub fn join_token_viewer(namespaces: Vec<String>) -> Principal {
        Principal {
            name: JOIN_TOKEN_VIEWER.into(),
            role: "viewer".into(),
            permissions: builtin_role("viewer").unwrap_or_default(),
            namespaces,
        }
    }

    /// Whether the role holds `p`.
    pub fn can(&self, p: Permission) -> bool {
        self.permissions.contains(&p)
    }

    /// Whether the user may act in namespace `ns`.
    pub fn in_namespace(&self, ns: &str) -> bool {
        self.namespaces.iter().any(|n| n == "*" || n == ns)
    }

    /// The namespace a request that names none acts in: the first granted
    /// (`default` for `*`).
    pub fn home_namespace(&self) -> String {
        match self.namespaces.first() {
            Some(n) if n != "*" => n.clone(),
            _ => "default".into(),
        }
    }
}

/// What a request would do, for [`authorize`] and the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// Its audit name (`job.stop`); `None`: a read, not audited.
    pub audit: Option<&'static str>,
    /// In words for a refusal (`stop job j-…`).
    pub what: String,
    /// What it needs.
    pub needs: Permission,
    /// The namespace it touches (`None`: cluster-wide).
    pub namespace: Option<String>,
}

/// A refused action (AC-2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The sentence.
    pub message: String,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The start of a refusal (AC-2): `alice (developer in vision) may not
/// stop job j-… in namespace ads`.
fn refusal(who: &Principal, what: &str, namespace: Option<&str>) -> String {
    let scope = match namespace {
        Some(ns) => format!(" in namespace {ns}"),
        None => String::new(),
    };
    format!(
        "{} ({} in {}) may not {what}{scope}",
        who.name,
        who.role,
        who.namespaces.join(", ")
    )
}

/// Whether `who` may do `what` in namespace `ns` as a member, whatever
/// the role's permissions (AC-1 without a permission; AC-2's sentence).
pub fn authorize_member(who: &Principal, what: &str, ns: &str) -> Result<(), Denied> {
    if who.in_namespace(ns) {
        return Ok(());
    }
    Err(Denied {
        message: format!(
            "{}: namespace {ns} was not granted to {}",
            refusal(who, what, Some(ns)),
            who.name
        ),
    })
}

/// AC-1: whether `who` may do `action`.
pub fn authorize(who: &Principal, action: &Action) -> Result<(), Denied> {
    let head = refusal(who, &action.what, action.namespace.as_deref());
    if !who.can(action.needs) {
        return Err(Denied {
            message: format!("{head}: the role lacks permission {}", action.needs.name()),
        });
    }
    if let Some(ns) = &action.namespace {
        if !who.in_namespace(ns) {
            return Err(Denied {
                message: format!("{head}: namespace {ns} was not granted to {}", who.name),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(role: &str, ns: &[&str]) -> Principal {
        Principal {
            name: "alice".into(),
            role: role.into(),
            permissions: builtin_role(role).unwrap(),
            namespaces: ns.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn act(needs: Permission, ns: Option<&str>) -> Action {
        Action {
            audit: None,
            what: "stop job j-1".into(),
            needs,
            namespace: ns.map(str::to_string),
        }
    }

    #[test]
    fn ac_1_role_and_namespace_both_decide() {
        let dev = user("developer", &["vision"]);
        assert!(authorize(&dev, &act(Permission::JobsStop, Some("vision"))).is_ok());
        assert!(authorize(&dev, &act(Permission::StateRead, None)).is_ok());
        assert!(authorize(&dev, &act(Permission::JobsStop, Some("ads"))).is_err());
        assert!(authorize(&dev, &act(Permission::UsersManage, None)).is_err());
        let viewer = user("viewer", &["*"]);
        assert!(authorize(&viewer, &act(Permission::LogsRead, Some("ads"))).is_ok());
        assert!(authorize(&viewer, &act(Permission::JobsSubmit, Some("ads"))).is_err());
        let admin = Principal::cluster_admin();
        for p in Permission::ALL {
            assert!(authorize(&admin, &act(p, Some("any"))).is_ok());
        }
    }

    #[test]
    fn ac_2_a_refusal_names_user_role_action_and_what_is_missing() {
        let dev = user("developer", &["vision"]);
        let e = authorize(&dev, &act(Permission::JobsStop, Some("ads"))).unwrap_err();
        assert_eq!(
            e.message,
            "alice (developer in vision) may not stop job j-1 in namespace ads: namespace ads was not granted to alice"
        );
        let e = authorize(&dev, &act(Permission::JobsStopAny, Some("vision"))).unwrap_err();
        assert!(
            e.message
                .ends_with("the role lacks permission jobs:stop-any"),
            "{e}"
        );
    }

    #[test]
    fn permissions_parse_by_name() {
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.name()), Ok(p));
        }
        assert!(Permission::parse("jobs:fly")
            .unwrap_err()
            .contains("jobs:submit"));
        assert_eq!(user("viewer", &[]).home_namespace(), "default");
        assert_eq!(
            user("viewer", &["vision", "ads"]).home_namespace(),
            "vision"
        );
    }
}
