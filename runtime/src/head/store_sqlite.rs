//! The head's durable rows in an embedded SQLite database (`head.db` in the
//! head's session directory). WAL mode with `synchronous=NORMAL`: a commit
//! is written to the database file (its write-ahead log) before `commit`
//! returns, so it survives `kill -9` of the head; the file is fsynced at
//! checkpoints, so a power loss may take the last commits (the OS still had
//! them). The file stays readable by other processes while the head runs
//! (an operator's `sqlite3`, the audit trail's tamper test): exclusive
//! locking would make a placement group's commits ~20% cheaper but lock
//! them out. The schema is versioned in `meta` and migrated on open.

use super::durable::{run_key, Change, DurableStore, Row, Snapshot, StoreError, Table};
use crate::ids::ClusterId;
use crate::proto::access::AuditEntry;
use crate::proto::codec;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};

/// The schema this build writes (2: runs' points in `run_points`; 3:
/// models keep their namespace; 4: model rows keyed by namespace and name,
/// MR-5). A database of version 3 is recovered (a recovered registry moves
/// its rows to their new keys); one older is taken over when it holds no
/// cluster to recover, and refused when it holds one.
const SCHEMA_VERSION: i64 = 4;

/// A head database.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

/// What an open found.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // made once, at the head's start
pub enum Opened {
    /// No cluster, or one that stopped cleanly: start a new one.
    Fresh,
    /// The cluster of a head that died: recover it.
    Recovered {
        /// Its id.
        cluster_id: ClusterId,
        /// Its rows.
        snapshot: Snapshot,
    },
}

impl SqliteStore {
    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Database {
            path: self.path.display().to_string(),
            detail: e.to_string(),
        }
    }

    /// Opens (or creates) the database at `path` and says whether it holds
    /// a cluster to recover.
    pub fn open(path: &Path) -> Result<(SqliteStore, Opened), StoreError> {
        SqliteStore::open_with(path, false)
    }

    /// As [`SqliteStore::open`]; with `fresh`, whatever cluster the file
    /// holds is not read (it will be replaced), so a file another version
    /// wrote does not stop a fresh start.
    pub fn open_with(path: &Path, fresh: bool) -> Result<(SqliteStore, Opened), StoreError> {
        let conn = Connection::open(path).map_err(|e| StoreError::Database {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        let store = SqliteStore {
            conn,
            path: path.to_path_buf(),
        };
        store
            .conn
            .execute_batch(
                "PRAGMA journal_mode=WAL;
                 PRAGMA synchronous=NORMAL;
                 CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value BLOB NOT NULL);
                 CREATE TABLE IF NOT EXISTS rows(
                     tbl INTEGER NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL,
                     PRIMARY KEY(tbl, key)) WITHOUT ROWID;
                 CREATE TABLE IF NOT EXISTS run_points(
                     key BLOB NOT NULL, run TEXT NOT NULL, step INTEGER NOT NULL,
                     value BLOB NOT NULL, PRIMARY KEY(key, step)) WITHOUT ROWID;
                 CREATE TABLE IF NOT EXISTS audit(
                     seq INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, user BLOB NOT NULL,
                     origin BLOB NOT NULL, action BLOB NOT NULL, target BLOB NOT NULL,
                     namespace BLOB NOT NULL, outcome BLOB NOT NULL, prev BLOB NOT NULL,
                     hash BLOB NOT NULL);",
            )
            .map_err(|e| store.err(e))?;
        let clean = store.meta("clean_stop")?.is_some_and(|v| v == b"1");
        let cluster = store.meta("cluster_id")?;
        let recover = cluster.is_some() && !clean && !fresh;
        // A file with a cluster and no version is of the first schema.
        let version: Option<i64> = store
            .meta("schema")?
            .and_then(|v| std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok()))
            .or(cluster.is_some().then_some(1));
        match version {
            Some(v) if v == SCHEMA_VERSION => {}
            // 3 → 4: the same rows; models move keys when recovered.
            Some(3) => store.set_meta("schema", SCHEMA_VERSION.to_string().as_bytes())?,
            // Older rows (models without a namespace) are not read back;
            // with nothing to recover they all go at `begin_cluster`.
            Some(v) if v < SCHEMA_VERSION && recover => {
                return Err(store.err(format!(
                    "the cluster to recover was written by an older build (schema version {v}; \
                     this build reads {SCHEMA_VERSION}); start with --fresh"
                )))
            }
            None | Some(1 | 2) => {
                store.set_meta("schema", SCHEMA_VERSION.to_string().as_bytes())?
            }
            Some(v) => {
                return Err(store.err(format!(
                    "schema version {v} is not one this build reads (it writes {SCHEMA_VERSION}); start with --fresh"
                )))
            }
        }
        let opened = match cluster {
            Some(id) if recover => {
                let id = std::str::from_utf8(&id)
                    .ok()
                    .and_then(|s| s.parse::<ClusterId>().ok())
                    .ok_or_else(|| store.err("the stored cluster id is damaged"))?;
                Opened::Recovered {
                    cluster_id: id,
                    snapshot: store.load()?,
                }
            }
            _ => Opened::Fresh,
        };
        Ok((store, opened))
    }

    /// Starts a new cluster in this database: every old row goes.
    pub fn begin_cluster(&mut self, cluster_id: ClusterId) -> Result<(), StoreError> {
        let path = self.path.display().to_string();
        let tx = self.conn.transaction().map_err(|e| StoreError::Database {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        tx.execute("DELETE FROM rows", [])
            .and_then(|_| tx.execute("DELETE FROM run_points", []))
            .and_then(|_| tx.execute("DELETE FROM meta WHERE key = 'clean_stop'", []))
            .and_then(|_| {
                tx.execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES ('cluster_id', ?1)",
                    params![cluster_id.to_string().into_bytes()],
                )
            })
            .map_err(|e| StoreError::Database {
                path: path.clone(),
                detail: e.to_string(),
            })?;
        tx.commit().map_err(|e| StoreError::Database {
            path,
            detail: e.to_string(),
        })
    }

    /// The cluster is running again (after a recovery): a later clean stop
    /// is what makes the next start fresh.
    pub fn resume(&mut self) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM meta WHERE key = 'clean_stop'", [])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))
    }

    fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?1, ?2)",
                params![key, value],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Keeps (or, with `None`, forgets) the cluster's spill key.
    pub fn set_spill_key(&mut self, key: Option<&[u8; 32]>) -> Result<(), StoreError> {
        match key {
            Some(k) => self.set_meta("spill_key", k),
            None => self
                .conn
                .execute("DELETE FROM meta WHERE key = 'spill_key'", [])
                .map(drop)
                .map_err(|e| self.err(e)),
        }
    }

    /// The cluster's spill key, if it encrypts at rest.
    pub fn spill_key(&self) -> Result<Option<[u8; 32]>, StoreError> {
        match self.meta("spill_key")? {
            None => Ok(None),
            Some(k) => k
                .try_into()
                .map(Some)
                .map_err(|_| self.err("the stored spill key is damaged")),
        }
    }

    /// The secret namespaces' keys (masking, at rest) derive from: the one kept in
    /// the file, or a new one drawn and kept now. It outlives clusters
    /// started in this file (NK-1), like the audit trail.
    pub fn namespace_secret(&mut self) -> Result<[u8; 32], StoreError> {
        if let Some(k) = self.meta("namespace_secret")? {
            return k
                .try_into()
                .map_err(|_| self.err("the stored namespace secret is damaged"));
        }
        let k: [u8; 32] = rand::random();
        self.set_meta("namespace_secret", &k)?;
        Ok(k)
    }

    /// The audit trail as the file holds it, oldest first. Read field by
    /// field as bytes (never decoded as a row), so a damaged entry is shown
    /// to `verify` instead of stopping the head.
    pub fn audit_entries(&self) -> Result<Vec<AuditEntry>, StoreError> {
        let mut q = self
            .conn
            .prepare(
                "SELECT seq, ts_ms, user, origin, action, target, namespace, outcome, prev, hash
                 FROM audit ORDER BY seq",
            )
            .map_err(|e| self.err(e))?;
        let text = |r: &rusqlite::Row<'_>, i: usize| -> rusqlite::Result<String> {
            let v: rusqlite::types::Value = r.get(i)?;
            Ok(match v {
                rusqlite::types::Value::Text(t) => t,
                rusqlite::types::Value::Blob(b) => String::from_utf8_lossy(&b).into_owned(),
                other => format!("{other:?}"),
            })
        };
        let rows = q
            .query_map([], |r| {
                Ok(AuditEntry {
                    seq: r.get::<_, i64>(0)? as u64,
                    ts_ms: r.get::<_, i64>(1)? as u64,
                    user: text(r, 2)?,
                    origin: text(r, 3)?,
                    action: text(r, 4)?,
                    target: text(r, 5)?,
                    namespace: text(r, 6)?,
                    outcome: text(r, 7)?,
                    prev: text(r, 8)?,
                    hash: text(r, 9)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    fn load(&self) -> Result<Snapshot, StoreError> {
        let mut q = self
            .conn
            .prepare("SELECT value FROM rows ORDER BY tbl, key")
            .map_err(|e| self.err(e))?;
        let blobs = q
            .query_map([], |r| r.get::<_, Vec<u8>>(0))
            .map_err(|e| self.err(e))?;
        let mut rows = Vec::new();
        for b in blobs {
            let b = b.map_err(|e| self.err(e))?;
            rows.push(Row::decode(&b).map_err(|source| StoreError::Row {
                path: self.path.display().to_string(),
                source,
            })?);
        }
        let mut snapshot = Snapshot::from_rows(rows);
        let mut q = self
            .conn
            .prepare("SELECT run, value FROM run_points ORDER BY key, step")
            .map_err(|e| self.err(e))?;
        let points = q
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(|e| self.err(e))?;
        for p in points {
            let (run, bytes) = p.map_err(|e| self.err(e))?;
            let point =
                codec::decode_frame(&bytes, usize::MAX >> 1).map_err(|source| StoreError::Row {
                    path: self.path.display().to_string(),
                    source,
                })?;
            snapshot.run_points.push((run, point));
        }
        Ok(snapshot)
    }
}

impl DurableStore for SqliteStore {
    fn commit(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let path = self.path.display().to_string();
        let db = |e: rusqlite::Error| StoreError::Database {
            path: path.clone(),
            detail: e.to_string(),
        };
        let tx = self.conn.transaction().map_err(db)?;
        {
            let mut put = tx
                .prepare_cached("INSERT OR REPLACE INTO rows(tbl, key, value) VALUES (?1, ?2, ?3)")
                .map_err(db)?;
            let mut del = tx
                .prepare_cached("DELETE FROM rows WHERE tbl = ?1 AND key = ?2")
                .map_err(db)?;
            let mut del_points = tx
                .prepare_cached("DELETE FROM run_points WHERE key = ?1")
                .map_err(db)?;
            let mut audit = tx
                .prepare_cached(
                    "INSERT INTO audit(seq, ts_ms, user, origin, action, target, namespace, outcome, prev, hash)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .map_err(db)?;
            let mut point = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO run_points(key, run, step, value) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(db)?;
            for c in changes {
                match c {
                    Change::Put(row) => {
                        let (table, key) = row.key();
                        let value = row.encode().map_err(|e| StoreError::Database {
                            path: path.clone(),
                            detail: e.to_string(),
                        })?;
                        put.execute(params![table as i64, &key[..], value])
                            .map_err(db)?;
                    }
                    Change::Delete(table, key) => {
                        del.execute(params![*table as i64, &key[..]]).map_err(db)?;
                        if *table == Table::Run {
                            del_points.execute(params![&key[..]]).map_err(db)?;
                        }
                    }
                    Change::Audit(e) => {
                        audit
                            .execute(params![
                                e.seq as i64,
                                e.ts_ms as i64,
                                e.user.as_bytes(),
                                e.origin.as_bytes(),
                                e.action.as_bytes(),
                                e.target.as_bytes(),
                                e.namespace.as_bytes(),
                                e.outcome.as_bytes(),
                                e.prev.as_bytes(),
                                e.hash.as_bytes()
                            ])
                            .map_err(db)?;
                    }
                    Change::RunPoints(run, points) => {
                        let key = run_key(run);
                        for p in points {
                            let value = codec::encode(p).map_err(|e| StoreError::Database {
                                path: path.clone(),
                                detail: e.to_string(),
                            })?;
                            point
                                .execute(params![&key[..], run, p.step as i64, value])
                                .map_err(db)?;
                        }
                    }
                }
            }
        }
        tx.commit().map_err(db)
    }

    fn mark_clean_stop(&mut self) -> Result<(), StoreError> {
        self.set_meta("clean_stop", b"1")
    }

    fn audit_log(&self) -> Result<Option<Vec<AuditEntry>>, StoreError> {
        self.audit_entries().map(Some)
    }
}

#[cfg(test)]
#[path = "store_sqlite_tests.rs"]
mod tests;
