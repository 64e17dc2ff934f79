//! The head's users and custom roles (durable rows). A user's token secret
//! is drawn by the shell and kept here only as its SHA-256; a connection
//! that presented it acts as the user's id, looked up again on every
//! request so that a revocation holds at once (AC-3).

use super::{builtin_role, Permission, Principal, BUILTIN_ROLES};
use crate::proto::access::{RoleInfo, UserInfo};
use rkyv::{Archive, Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The durable row of a user.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct UserRow {
    /// Stable id (what an authenticated connection holds).
    pub id: u64,
    /// The account.
    pub info: UserInfo,
    /// SHA-256 of the token's secret.
    pub token_hash: [u8; 32],
}

/// Users and custom roles.
#[derive(Debug, Default)]
pub struct UserTable {
    users: BTreeMap<String, UserRow>,
    by_id: HashMap<u64, String>,
    roles: BTreeMap<String, Vec<Permission>>,
    next_id: u64,
    dirty_users: BTreeSet<String>,
    dirty_roles: BTreeSet<String>,
}

fn digest(secret: &str) -> [u8; 32] {
    crate::raylet::workers::sha256(secret.as_bytes())
}

/// A namespace name users may be granted (`*`: all).
pub fn valid_namespace(ns: &str) -> bool {
    ns == "*"
        || ((1..=63).contains(&ns.len())
            && ns
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
}

impl UserTable {
    /// Tables rebuilt from their rows.
    pub fn restore(users: Vec<UserRow>, roles: Vec<RoleInfo>) -> UserTable {
        let mut t = UserTable::default();
        for r in roles {
            let perms = r
                .permissions
                .iter()
                .filter_map(|p| Permission::parse(p).ok())
                .collect();
            t.roles.insert(r.name, perms);
        }
        for u in users {
            t.next_id = t.next_id.max(u.id + 1);
            t.by_id.insert(u.id, u.info.name.clone());
            t.users.insert(u.info.name.clone(), u);
        }
        t
    }

    /// The permissions of role `name`, built in or custom.
    fn role(&self, name: &str) -> Option<Vec<Permission>> {
        builtin_role(name).or_else(|| self.roles.get(name).cloned())
    }

    /// Creates `name` with `role` in `namespaces`, whose token's secret is
    /// `secret`. A revoked user's name may be given again (a new id: old
    /// connections stay refused).
    pub fn add(
        &mut self,
        now_ms: u64,
        by: &str,
        name: &str,
        role: &str,
        namespaces: Vec<String>,
        secret: &str,
    ) -> Result<UserInfo, String> {
        if !crate::token::UserToken::valid_name(name) || name == "admin" {
            return Err(format!(
                "invalid user name {name:?}: use 1-32 letters, digits, '-' or '_' (and not \"admin\")"
            ));
        }
        if self
            .users
            .get(name)
            .is_some_and(|u| u.info.revoked_ms.is_none())
        {
            return Err(format!(
                "user {name} exists; revoke it first to issue a new token"
            ));
        }
        if self.role(role).is_none() {
            return Err(format!(
                "unknown role {role:?}; roles: {}",
                self.role_names().join(", ")
            ));
        }
        if let Some(bad) = namespaces.iter().find(|n| !valid_namespace(n)) {
            return Err(format!(
                "invalid namespace {bad:?}: use 1-63 letters, digits, '-' or '_', or * for all"
            ));
        }
        let namespaces = if namespaces.is_empty() {
            vec!["default".to_string()]
        } else {
            namespaces
        };
        let id = self.next_id;
        self.next_id += 1;
        let info = UserInfo {
            name: name.into(),
            role: role.into(),
            namespaces,
            created_by: by.into(),
            created_ms: now_ms,
            revoked_ms: None,
        };
        if let Some(old) = self.users.insert(
            name.into(),
            UserRow {
                id,
                info: info.clone(),
                token_hash: digest(secret),
            },
        ) {
            self.by_id.remove(&old.id);
        }
        self.by_id.insert(id, name.into());
        self.dirty_users.insert(name.into());
        Ok(info)
    }

    /// Revokes `name`'s token (AC-3).
    pub fn revoke(&mut self, now_ms: u64, name: &str) -> Result<(), String> {
        match self.users.get_mut(name) {
            Some(u) if u.info.revoked_ms.is_none() => {
                u.info.revoked_ms = Some(now_ms);
                self.dirty_users.insert(name.into());
                Ok(())
            }
            Some(_) => Err(format!("user {name} is already revoked")),
            None => Err(format!("no user {name}")),
        }
    }

    /// The id of the user whose token secret this is.
    pub fn authenticate(&self, name: &str, secret: &str) -> Result<u64, String> {
        let refused = || format!("invalid user token for {name:?}");
        let u = self.users.get(name).ok_or_else(refused)?;
        if !crate::token::same_bytes(&u.token_hash, &digest(secret)) {
            return Err(refused());
        }
        if u.info.revoked_ms.is_some() {
            return Err(format!("the token of user {name} was revoked"));
        }
        Ok(u.id)
    }

    /// Who user `id` is now (AC-3: refused once revoked).
    pub fn principal(&self, id: u64) -> Result<Principal, String> {
        let name = self
            .by_id
            .get(&id)
            .ok_or("this connection's user no longer exists (its token was replaced)")?;
        let u = &self.users[name];
        if u.info.revoked_ms.is_some() {
            return Err(format!(
                "the token of user {name} was revoked; this connection may do nothing more"
            ));
        }
        let permissions = self.role(&u.info.role).unwrap_or_default();
        Ok(Principal {
            name: name.clone(),
            role: u.info.role.clone(),
            permissions,
            namespaces: u.info.namespaces.clone(),
        })
    }

    /// Who user `name` is now (`None`: no such user, e.g. `admin`).
    pub fn principal_named(&self, name: &str) -> Option<Result<Principal, String>> {
        self.users.get(name).map(|u| self.principal(u.id))
    }

    /// Creates or replaces custom role `name`.
    pub fn add_role(&mut self, name: &str, permissions: &[String]) -> Result<RoleInfo, String> {
        if BUILTIN_ROLES.contains(&name) {
            return Err(format!("role {name} is built in and cannot be changed"));
        }
        if !crate::token::UserToken::valid_name(name) {
            return Err(format!(
                "invalid role name {name:?}: use 1-32 letters, digits, '-' or '_'"
            ));
        }
        let perms = permissions
            .iter()
            .map(|p| Permission::parse(p))
            .collect::<Result<Vec<_>, _>>()?;
        if perms.is_empty() {
            return Err(format!("role {name} needs at least one permission"));
        }
        self.roles.insert(name.into(), perms);
        self.dirty_roles.insert(name.into());
        Ok(self.role_info(name))
    }

    fn role_names(&self) -> Vec<String> {
        BUILTIN_ROLES
            .iter()
            .map(|s| s.to_string())
            .chain(self.roles.keys().cloned())
            .collect()
    }

    fn role_info(&self, name: &str) -> RoleInfo {
        RoleInfo {
            name: name.into(),
            permissions: self
                .role(name)
                .unwrap_or_default()
                .iter()
                .map(|p| p.name().to_string())
                .collect(),
            builtin: BUILTIN_ROLES.contains(&name),
        }
    }

    /// Every role.
    pub fn roles(&self) -> Vec<RoleInfo> {
        self.role_names()
            .iter()
            .map(|n| self.role_info(n))
            .collect()
    }

    /// Whether anyone has a user account (revoked ones count).
    pub fn any(&self) -> bool {
        !self.users.is_empty()
    }

    /// Every user.
    pub fn list(&self) -> Vec<UserInfo> {
        self.users.values().map(|u| u.info.clone()).collect()
    }

    /// Rows changed since the last call.
    pub fn take_dirty(&mut self) -> (Vec<UserRow>, Vec<RoleInfo>) {
        let users = std::mem::take(&mut self.dirty_users)
            .into_iter()
            .filter_map(|n| self.users.get(&n).cloned())
            .collect();
        let roles = std::mem::take(&mut self.dirty_roles)
            .into_iter()
            .map(|n| self.role_info(&n))
            .collect();
        (users, roles)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ac_3_a_revoked_user_is_refused_at_once_and_a_new_token_gets_a_new_id() {
        let mut t = UserTable::default();
        t.add(
            1,
            "admin",
            "alice",
            "developer",
            vec!["vision".into()],
            "s1",
        )
        .unwrap();
        let id = t.authenticate("alice", "s1").unwrap();
        assert_eq!(t.principal(id).unwrap().namespaces, vec!["vision"]);
        assert!(t.authenticate("alice", "s2").is_err());
        assert!(t.authenticate("bob", "s1").is_err());
        t.revoke(2, "alice").unwrap();
        assert!(t.principal(id).unwrap_err().contains("revoked"));
        assert!(t
            .authenticate("alice", "s1")
            .unwrap_err()
            .contains("revoked"));
        t.add(3, "admin", "alice", "viewer", vec![], "s3").unwrap();
        assert!(t.principal(id).is_err(), "the old connection stays refused");
        let id2 = t.authenticate("alice", "s3").unwrap();
        assert_eq!(t.principal(id2).unwrap().namespaces, vec!["default"]);
    }

    #[test]
    fn bad_names_roles_and_duplicates_are_refused() {
        let mut t = UserTable::default();
        assert!(t.add(1, "a", "al ice", "viewer", vec![], "s").is_err());
        assert!(t.add(1, "a", "admin", "viewer", vec![], "s").is_err());
        assert!(t
            .add(1, "a", "bob", "pilot", vec![], "s")
            .unwrap_err()
            .contains("developer"));
        assert!(t
            .add(1, "a", "bob", "viewer", vec!["a b".into()], "s")
            .is_err());
        t.add(1, "a", "bob", "viewer", vec![], "s").unwrap();
        assert!(t
            .add(1, "a", "bob", "viewer", vec![], "s")
            .unwrap_err()
            .contains("exists"));
    }

    #[test]
    fn custom_roles_apply_to_their_users_and_survive_a_restore() {
        let mut t = UserTable::default();
        assert!(t.add_role("viewer", &["jobs:submit".into()]).is_err());
        assert!(t.add_role("trainer", &["jobs:fly".into()]).is_err());
        t.add_role("trainer", &["jobs:submit".into(), "state:read".into()])
            .unwrap();
        t.add(1, "a", "carol", "trainer", vec!["ads".into()], "s")
            .unwrap();
        let (users, roles) = t.take_dirty();
        let back = UserTable::restore(users, roles);
        let p = back
            .principal(back.authenticate("carol", "s").unwrap())
            .unwrap();
        assert!(p.can(Permission::JobsSubmit) && !p.can(Permission::JobsStop));
        assert_eq!(back.roles().len(), 4);
    }
}
