//! The head's durable rows in an embedded SQLite database (`head.db` in the
//! head's session directory). WAL mode with `synchronous=NORMAL`: a commit
//! is written to the database file (its write-ahead log) before `commit`
//! returns, so it survives `kill -9` of the head; the file is fsynced at
//! checkpoints, so a power loss may take the last commits (the OS still had
//! them). The schema is versioned in `meta` and migrated on open.

use super::durable::{Change, DurableStore, Row, Snapshot, StoreError};
use crate::ids::ClusterId;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};

/// The schema this build writes.
const SCHEMA_VERSION: i64 = 1;

/// A head database.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

/// What an open found.
#[derive(Debug)]
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
                     PRIMARY KEY(tbl, key)) WITHOUT ROWID;",
            )
            .map_err(|e| store.err(e))?;
        let version: Option<i64> = store
            .meta("schema")?
            .and_then(|v| std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok()));
        match version {
            None => store.set_meta("schema", SCHEMA_VERSION.to_string().as_bytes())?,
            Some(v) if v == SCHEMA_VERSION => {}
            Some(v) => {
                return Err(store.err(format!(
                    "schema version {v} is not one this build reads (it writes {SCHEMA_VERSION}); start with --fresh"
                )))
            }
        }
        let clean = store.meta("clean_stop")?.is_some_and(|v| v == b"1");
        let cluster = store.meta("cluster_id")?;
        let opened = match cluster {
            Some(id) if !clean => {
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
        Ok(Snapshot::from_rows(rows))
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
                    }
                }
            }
        }
        tx.commit().map_err(db)
    }

    fn mark_clean_stop(&mut self) -> Result<(), StoreError> {
        self.set_meta("clean_stop", b"1")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::durable::{ObjectRow, Table};
    use crate::ids::NodeId;
    use prism_objectstore::ObjectId;

    fn object(n: u8) -> Row {
        Row::Object(ObjectRow {
            id: ObjectId([n; 16]),
            size: u64::from(n),
            nodes: vec![NodeId([n; 16])],
        })
    }

    #[test]
    fn dh_2_a_head_that_died_is_recovered_with_its_last_commit_and_a_clean_stop_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("head.db");
        let (mut s, opened) = SqliteStore::open(&path).unwrap();
        assert!(matches!(opened, Opened::Fresh));
        let cluster = ClusterId::random();
        s.begin_cluster(cluster).unwrap();
        s.commit(&[Change::Put(object(1)), Change::Put(object(2))])
            .unwrap();
        s.commit(&[
            Change::Delete(Table::Object, [1; 16]),
            Change::Put(object(3)),
        ])
        .unwrap();
        // The process "dies": the connection is dropped without a clean stop.
        drop(s);
        let (mut s, opened) = SqliteStore::open(&path).unwrap();
        match opened {
            Opened::Recovered {
                cluster_id,
                snapshot,
            } => {
                assert_eq!(cluster_id, cluster);
                let ids: Vec<u8> = snapshot.objects.iter().map(|o| o.id.0[0]).collect();
                assert_eq!(ids, vec![2, 3]);
            }
            other => panic!("{other:?}"),
        }
        s.resume().unwrap();
        s.mark_clean_stop().unwrap();
        drop(s);
        let (mut s, opened) = SqliteStore::open(&path).unwrap();
        assert!(matches!(opened, Opened::Fresh), "a clean stop starts fresh");
        s.begin_cluster(ClusterId::random()).unwrap();
        drop(s);
        match SqliteStore::open(&path).unwrap().1 {
            Opened::Recovered { snapshot, .. } => {
                assert!(snapshot.objects.is_empty(), "a new cluster starts empty")
            }
            other => panic!("{other:?}"),
        }
    }
}
