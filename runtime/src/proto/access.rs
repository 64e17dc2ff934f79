//! Users, roles and the audit trail on the wire: what `prism user`,
//! `prism role` and `prism audit` ask the head, and its answers. The rules
//! themselves live in `head::access`.

use rkyv::{Archive, Deserialize, Serialize};

/// One person's account.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, serde::Serialize)]
pub struct UserInfo {
    /// Their name (`alice`).
    pub name: String,
    /// Their role (`developer`, or a custom role).
    pub role: String,
    /// Namespaces they may act in (`*`: every one).
    pub namespaces: Vec<String>,
    /// Who created the account.
    pub created_by: String,
    /// Milliseconds since the epoch.
    pub created_ms: u64,
    /// When their token was revoked (it no longer works).
    pub revoked_ms: Option<u64>,
}

/// A role: a named set of permissions.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, serde::Serialize)]
pub struct RoleInfo {
    /// Its name.
    pub name: String,
    /// Its permissions (`jobs:submit`, …; `*` is every one).
    pub permissions: Vec<String>,
    /// One of `admin`, `developer`, `viewer` (these cannot be changed).
    pub builtin: bool,
}

/// Who a connection acts as, with what it may do.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, serde::Serialize)]
pub struct Me {
    /// The user (`admin` for the holder of the cluster's join token).
    pub name: String,
    /// Their role.
    pub role: String,
    /// Their namespaces.
    pub namespaces: Vec<String>,
    /// Their role's permissions.
    pub permissions: Vec<String>,
}

/// Which audit entries to return.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct AuditQuery {
    /// Only this user's actions.
    pub user: Option<String>,
    /// Only actions whose name starts with this (`job`, `job.stop`).
    pub action: Option<String>,
    /// Only entries at or after this time (milliseconds since the epoch).
    pub since_ms: Option<u64>,
    /// At most this many, the newest (0: all).
    pub limit: u32,
}

/// One line of the audit trail. `hash` is the SHA-256 of the entry's
/// fields and `prev`, the hash of the entry before it, so an edited or
/// missing entry breaks the chain.
#[derive(
    Archive, Serialize, Deserialize, Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize,
)]
pub struct AuditEntry {
    /// Its position, from 1, never reused.
    pub seq: u64,
    /// Milliseconds since the epoch.
    pub ts_ms: u64,
    /// Who acted (`alice`, `admin`, `node n-…`, `job j-…`).
    pub user: String,
    /// Where from (the client's address, `join token`, `cluster`).
    pub origin: String,
    /// What (`job.submit`, `job.stop`, `user.add`, `actor.create`, …).
    pub action: String,
    /// On what (`job j-…`, `user bob`, `node n-…`).
    pub target: String,
    /// In which namespace (empty: cluster-wide).
    pub namespace: String,
    /// `ok`, `denied: …` or `failed: …`.
    pub outcome: String,
    /// Hex SHA-256 of the previous entry (zeros for the first).
    pub prev: String,
    /// Hex SHA-256 of this entry.
    pub hash: String,
}

/// A request about users, roles or the audit trail.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum AccessRequest {
    /// Create a user; the answer carries their token, shown once.
    AddUser {
        /// Name: letters, digits, `-`, `_`.
        name: String,
        /// A built-in or custom role.
        role: String,
        /// Namespaces granted (empty: `default`).
        namespaces: Vec<String>,
    },
    /// Revoke a user's token at once (open connections included).
    RevokeUser {
        /// The user.
        name: String,
    },
    /// Every user.
    ListUsers,
    /// Who this connection acts as.
    WhoAmI,
    /// Create or replace a custom role.
    AddRole {
        /// Its name.
        name: String,
        /// Its permissions.
        permissions: Vec<String>,
    },
    /// Every role.
    ListRoles,
    /// Entries of the audit trail.
    Audit(AuditQuery),
    /// Re-read the whole trail from its file and check its hash chain.
    VerifyAudit,
    /// Append an action the head did not see itself (`cluster.up`,
    /// `serve.deploy`: what the launcher or the serve CLI did), in the
    /// caller's name; answered with the entry.
    Record {
        /// `area.verb`.
        action: String,
        /// On what.
        target: String,
    },
}

/// What a namespace key (`HeadRequest::NamespaceKey`) is for.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyUse {
    /// Hashing and tokenising personal data: only for `pii:read`.
    Masking,
    /// Sealing files at rest: for any member of the namespace.
    AtRest,
}

/// The head's answer to an [`AccessRequest`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum AccessReply {
    /// A user was created; `token` is shown only now.
    UserAdded {
        /// The account.
        user: UserInfo,
        /// `name@secret.fingerprint`, for `PRISM_USER_TOKEN` or `prism login`.
        token: String,
    },
    /// Users.
    Users(Vec<UserInfo>),
    /// Roles.
    Roles(Vec<RoleInfo>),
    /// Who the connection acts as.
    Me(Me),
    /// Audit entries, oldest first.
    Audit(Vec<AuditEntry>),
    /// The chain was checked.
    Verified {
        /// Entries read.
        entries: u64,
        /// The first break, in words (`None`: intact).
        broken: Option<String>,
    },
}
