//! The audit trail: every state-changing action, appended with who, when,
//! from where, what, on what and the outcome, each entry hash-chained to
//! the one before it so that an edited, inserted or deleted entry is found
//! by [`verify`].
//!
//! Invariants:
//!
//! - **AU-1** entries are numbered from 1 without gaps, and each `prev` is
//!   the `hash` of the entry before it (zeros for the first);
//! - **AU-2** `hash` covers every other field, so changing any byte of an
//!   entry makes [`verify`] name that entry;
//! - **AU-3** the trail outlives the cluster: a head that starts a fresh
//!   cluster in the same database continues the chain.

use crate::proto::access::{AuditEntry, AuditQuery};

/// The `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The trail, in memory (oldest first), and the entries not yet persisted.
#[derive(Debug, Default)]
pub struct AuditLog {
    entries: Vec<AuditEntry>,
    fresh: Vec<AuditEntry>,
}

/// What one entry records, before it is numbered and chained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Who acted.
    pub user: String,
    /// From where.
    pub origin: String,
    /// What (`job.stop`).
    pub action: String,
    /// On what.
    pub target: String,
    /// In which namespace (empty: cluster-wide).
    pub namespace: String,
    /// `ok`, `denied: …`, `failed: …`.
    pub outcome: String,
}

/// AU-2: the hex SHA-256 of every field but `hash`, each length-prefixed.
pub fn entry_hash(e: &AuditEntry) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&e.seq.to_le_bytes());
    ctx.update(&e.ts_ms.to_le_bytes());
    for field in [
        &e.user,
        &e.origin,
        &e.action,
        &e.target,
        &e.namespace,
        &e.outcome,
        &e.prev,
    ] {
        ctx.update(&(field.len() as u64).to_le_bytes());
        ctx.update(field.as_bytes());
    }
    crate::raylet::workers::hex(ctx.finish().as_ref())
}

/// Checks AU-1 and AU-2 over `entries` (oldest first); returns how many
/// were read and the first break, in words.
pub fn verify(entries: &[AuditEntry]) -> (u64, Option<String>) {
    let mut prev = GENESIS.to_string();
    for (expected, e) in (1u64..).zip(entries) {
        if e.seq != expected {
            let gap = if e.seq > expected {
                format!(
                    "entry {expected} is missing: entry {} comes after entry {}",
                    e.seq,
                    expected - 1
                )
            } else {
                format!(
                    "entry {} appears out of order after entry {}",
                    e.seq,
                    expected - 1
                )
            };
            return (entries.len() as u64, Some(gap));
        }
        if e.prev != prev {
            return (
                entries.len() as u64,
                Some(format!(
                    "entry {} does not follow entry {}: its link to the entry before was changed",
                    e.seq,
                    e.seq - 1
                )),
            );
        }
        if entry_hash(e) != e.hash {
            return (
                entries.len() as u64,
                Some(format!(
                    "entry {} was altered: its contents no longer match its hash",
                    e.seq
                )),
            );
        }
        prev = e.hash.clone();
    }
    (entries.len() as u64, None)
}

impl AuditLog {
    /// The trail read back from its file (AU-3).
    pub fn restore(entries: Vec<AuditEntry>) -> AuditLog {
        AuditLog {
            entries,
            fresh: Vec::new(),
        }
    }

    /// Appends one entry (AU-1).
    pub fn append(&mut self, ts_ms: u64, r: Record) -> &AuditEntry {
        let (seq, prev) = match self.entries.last() {
            Some(last) => (last.seq + 1, last.hash.clone()),
            None => (1, GENESIS.to_string()),
        };
        let mut e = AuditEntry {
            seq,
            ts_ms,
            user: r.user,
            origin: r.origin,
            action: r.action,
            target: r.target,
            namespace: r.namespace,
            outcome: r.outcome,
            prev,
            hash: String::new(),
        };
        e.hash = entry_hash(&e);
        self.fresh.push(e.clone());
        self.entries.push(e);
        self.entries.last().expect("just pushed")
    }

    /// Entries passing `q`, oldest first (the newest `q.limit` when set).
    pub fn query(&self, q: &AuditQuery) -> Vec<AuditEntry> {
        let pass = |e: &&AuditEntry| {
            q.user.as_ref().is_none_or(|u| &e.user == u)
                && q.action
                    .as_ref()
                    .is_none_or(|a| e.action.starts_with(a.as_str()))
                && q.since_ms.is_none_or(|t| e.ts_ms >= t)
        };
        let mut out: Vec<AuditEntry> = self.entries.iter().filter(pass).cloned().collect();
        if q.limit > 0 && out.len() > q.limit as usize {
            out.drain(..out.len() - q.limit as usize);
        }
        out
    }

    /// Every entry in memory.
    pub fn entries(&self) -> &[AuditEntry] {
        &self.entries
    }

    /// Entries appended since the last call (to persist).
    pub fn take_fresh(&mut self) -> Vec<AuditEntry> {
        std::mem::take(&mut self.fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(n: usize) -> AuditLog {
        let mut l = AuditLog::default();
        for i in 0..n {
            l.append(
                1000 + i as u64,
                Record {
                    user: if i % 2 == 0 { "alice" } else { "bob" }.into(),
                    origin: "127.0.0.1:9".into(),
                    action: if i % 3 == 0 { "job.submit" } else { "job.stop" }.into(),
                    target: format!("job j-{i}"),
                    namespace: "vision".into(),
                    outcome: "ok".into(),
                },
            );
        }
        l
    }

    #[test]
    fn au_1_au_2_an_intact_chain_verifies_and_any_change_is_named() {
        let l = log(6);
        assert_eq!(verify(l.entries()), (6, None));
        let mut flipped = l.entries().to_vec();
        flipped[2].user = "mallory".into();
        assert_eq!(
            verify(&flipped).1.unwrap(),
            "entry 3 was altered: its contents no longer match its hash"
        );
        let mut flipped = l.entries().to_vec();
        flipped[4].ts_ms += 1;
        assert!(verify(&flipped)
            .1
            .unwrap()
            .starts_with("entry 5 was altered"));
        let mut gone = l.entries().to_vec();
        gone.remove(3);
        assert!(verify(&gone).1.unwrap().starts_with("entry 4 is missing"));
        let mut relinked = l.entries().to_vec();
        relinked.remove(3);
        for (i, e) in relinked.iter_mut().enumerate().skip(3) {
            e.seq = i as u64 + 1;
        }
        assert!(verify(&relinked).1.unwrap().contains("does not follow"));
    }

    #[test]
    fn au_3_a_restored_trail_continues_its_chain() {
        let l = log(3);
        let mut back = AuditLog::restore(l.entries().to_vec());
        back.append(
            5,
            Record {
                user: "admin".into(),
                origin: "join token".into(),
                action: "user.add".into(),
                target: "user carol".into(),
                namespace: String::new(),
                outcome: "ok".into(),
            },
        );
        assert_eq!(back.entries()[3].seq, 4);
        assert_eq!(verify(back.entries()), (4, None));
        assert_eq!(back.take_fresh().len(), 1);
    }

    #[test]
    fn queries_filter_by_user_action_time_and_keep_the_newest() {
        let l = log(6);
        let q = |user: Option<&str>, action: Option<&str>, since, limit| AuditQuery {
            user: user.map(str::to_string),
            action: action.map(str::to_string),
            since_ms: since,
            limit,
        };
        assert_eq!(l.query(&q(Some("alice"), None, None, 0)).len(), 3);
        assert_eq!(l.query(&q(None, Some("job.submit"), None, 0)).len(), 2);
        assert_eq!(l.query(&q(None, Some("job"), Some(1004), 0)).len(), 2);
        let newest = l.query(&q(None, None, None, 2));
        assert_eq!(newest.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![5, 6]);
    }
}
