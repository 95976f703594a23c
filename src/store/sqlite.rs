//! The SQLite backend of [`Store`] (bundled SQLite): one connection behind a
//! mutex, WAL journal, `synchronous=NORMAL`, a busy timeout, schema from
//! `sql/sqlite.sql`.
//!
//! Case-insensitive matching: SQLite's NOCASE folds ASCII only, so each name
//! is also stored as a key, [`name_key`] (`str::to_lowercase`), in
//! `usuarios.name_key` (UNIQUE) and `mensagens_offline.recipient_key`; all
//! lookups go through the key columns.
//!
//! Durability: in WAL mode with `synchronous=NORMAL` a committed transaction
//! survives a crash of the process; the last commits may be lost on power
//! failure. Payloads are limited to [`MAX_PAYLOAD_BYTES`], the size of the
//! MySQL MEDIUMTEXT column, so both backends accept the same messages.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, params_from_iter, Connection, ErrorCode, OptionalExtension};

use super::{
    delete_chunks, name_key, placeholders, DeletedUser, NewOffline, OfflineMessage, OfflineStats,
    Store, StoreError, UserRecord, UserSummary, PURGE_BATCH,
};

/// The schema applied at open.
pub const SCHEMA: &str = include_str!("../../sql/sqlite.sql");

/// Largest payload accepted (bytes): 16 MiB - 1, like MySQL MEDIUMTEXT.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024 * 1024 - 1;

/// How long a statement waits for a lock held by another connection.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// [`Store`] on an SQLite file (or in memory, for tests).
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
    name: String,
}

impl SqliteStore {
    /// Opens (creating it and its directory if missing) the database at
    /// `path` and applies the schema. Errors name the path.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let describe = |e: &dyn std::fmt::Display| {
            StoreError::Config(format!(
                "cannot open SQLite database {}: {e}",
                path.display()
            ))
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::create_dir_all(dir).map_err(|e| describe(&e))?;
            }
        }
        let conn = Connection::open(path).map_err(|e| describe(&e))?;
        let wal: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(|e| describe(&e))?;
        if !wal.eq_ignore_ascii_case("wal") {
            log::warn!(
                "SQLite database {}: journal_mode is {wal}, not WAL",
                path.display()
            );
        }
        Self::init(conn, format!("sqlite:{}", path.display())).map_err(|e| describe(&e))
    }

    /// A private in-memory database (tests).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().map_err(map_err)?;
        Self::init(conn, "sqlite::memory:".to_string())
    }

    fn init(conn: Connection, name: String) -> Result<Self, StoreError> {
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(map_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(map_err)?;
        conn.execute_batch(SCHEMA).map_err(map_err)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            name,
        })
    }

    /// The file behind this store, if any.
    pub fn path(&self) -> Option<PathBuf> {
        self.name
            .strip_prefix("sqlite:")
            .filter(|p| *p != ":memory:")
            .map(PathBuf::from)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a transaction open
        // (rusqlite rolls back on drop), so the connection is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn map_err(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::Unavailable(e.to_string())
        }
        Some(ErrorCode::CannotOpen) => StoreError::Unavailable(e.to_string()),
        Some(ErrorCode::TooBig) => StoreError::PayloadTooLarge,
        _ => StoreError::Backend(e.to_string()),
    }
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == ErrorCode::ConstraintViolation
                && (f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
    )
}

impl Store for SqliteStore {
    fn backend_name(&self) -> String {
        self.name.clone()
    }

    fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        public_key: &str,
    ) -> Result<(), StoreError> {
        let key = name_key(username);
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "INSERT INTO usuarios (userName, senha, public_key, name_key) \
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(map_err)?;
        match stmt.execute(params![username, password_hash, public_key, key]) {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::UsernameTaken),
            Err(e) => Err(map_err(e)),
        }
    }

    fn find_user(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let key = name_key(username);
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, userName, senha, public_key FROM usuarios WHERE name_key = ?1",
            )
            .map_err(map_err)?;
        stmt.query_row(params![key], |r| {
            Ok(UserRecord {
                id: r.get(0)?,
                username: r.get(1)?,
                password_hash: r.get(2)?,
                public_key: r.get(3)?,
            })
        })
        .optional()
        .map_err(map_err)
    }

    fn set_password_hash(&self, user_id: i64, password_hash: &str) -> Result<(), StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached("UPDATE usuarios SET senha = ?1 WHERE id = ?2")
            .map_err(map_err)?;
        stmt.execute(params![password_hash, user_id])
            .map(drop)
            .map_err(map_err)
    }

    fn set_public_key(&self, user_id: i64, public_key: &str) -> Result<(), StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached("UPDATE usuarios SET public_key = ?1 WHERE id = ?2")
            .map_err(map_err)?;
        stmt.execute(params![public_key, user_id])
            .map(drop)
            .map_err(map_err)
    }

    fn all_usernames(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached("SELECT userName FROM usuarios ORDER BY id")
            .map_err(map_err)?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(map_err)?;
        rows.collect::<Result<Vec<String>, _>>().map_err(map_err)
    }

    fn store_offline(
        &self,
        sender: &str,
        recipient: &str,
        payload: &str,
    ) -> Result<i64, StoreError> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(StoreError::PayloadTooLarge);
        }
        let key = name_key(recipient);
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "INSERT INTO mensagens_offline \
                 (remetente_username, destinatario_username, recipient_key, conteudo) \
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(map_err)?;
        stmt.insert(params![sender, recipient, key, payload])
            .map_err(map_err)
    }

    fn store_offline_batch(
        &self,
        msgs: &[NewOffline<'_>],
    ) -> Result<Vec<Result<i64, StoreError>>, StoreError> {
        let mut out = Vec::with_capacity(msgs.len());
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(map_err)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO mensagens_offline \
                     (remetente_username, destinatario_username, recipient_key, conteudo) \
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(map_err)?;
            for m in msgs {
                if m.payload.len() > MAX_PAYLOAD_BYTES {
                    out.push(Err(StoreError::PayloadTooLarge));
                    continue;
                }
                let id = stmt
                    .insert(params![
                        m.sender,
                        m.recipient,
                        name_key(m.recipient),
                        m.payload
                    ])
                    .map_err(map_err)?;
                out.push(Ok(id));
            }
        }
        tx.commit().map_err(map_err)?;
        Ok(out)
    }

    fn fetch_offline(
        &self,
        recipient: &str,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<OfflineMessage>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let key = name_key(recipient);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, remetente_username, conteudo FROM mensagens_offline \
                 WHERE recipient_key = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            )
            .map_err(map_err)?;
        let rows = stmt
            .query_map(params![key, after_id, limit], |r| {
                Ok(OfflineMessage {
                    id: r.get(0)?,
                    sender: r.get(1)?,
                    payload: r.get(2)?,
                })
            })
            .map_err(map_err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(map_err)
    }

    fn delete_offline(&self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(map_err)?;
        for chunk in delete_chunks(ids) {
            let sql = format!(
                "DELETE FROM mensagens_offline WHERE id IN ({})",
                placeholders(chunk.len())
            );
            let mut stmt = tx.prepare_cached(&sql).map_err(map_err)?;
            stmt.execute(params_from_iter(chunk.iter()))
                .map_err(map_err)?;
        }
        tx.commit().map_err(map_err)
    }

    fn count_offline(&self, recipient: &str) -> Result<u64, StoreError> {
        let key = name_key(recipient);
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached("SELECT COUNT(*) FROM mensagens_offline WHERE recipient_key = ?1")
            .map_err(map_err)?;
        let n: i64 = stmt
            .query_row(params![key], |r| r.get(0))
            .map_err(map_err)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn ping(&self) -> Result<(), StoreError> {
        let conn = self.lock();
        conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
            .map(drop)
            .map_err(map_err)
    }

    fn list_users(&self) -> Result<Vec<UserSummary>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT u.userName, u.public_key <> '', \
                 (SELECT COUNT(*) FROM mensagens_offline m WHERE m.recipient_key = u.name_key) \
                 FROM usuarios u ORDER BY u.id",
            )
            .map_err(map_err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(UserSummary {
                    username: r.get(0)?,
                    has_key: r.get(1)?,
                    offline_waiting: count(r.get(2)?),
                })
            })
            .map_err(map_err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(map_err)
    }

    fn delete_user(&self, username: &str) -> Result<Option<DeletedUser>, StoreError> {
        let key = name_key(username);
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(map_err)?;
        let stored: Option<String> = tx
            .query_row(
                "SELECT userName FROM usuarios WHERE name_key = ?1",
                params![key],
                |r| r.get(0),
            )
            .optional()
            .map_err(map_err)?;
        let Some(username) = stored else {
            return Ok(None);
        };
        let offline_deleted = tx
            .execute(
                "DELETE FROM mensagens_offline WHERE recipient_key = ?1",
                params![key],
            )
            .map_err(map_err)?;
        tx.execute("DELETE FROM usuarios WHERE name_key = ?1", params![key])
            .map_err(map_err)?;
        tx.commit().map_err(map_err)?;
        Ok(Some(DeletedUser {
            username,
            offline_deleted: offline_deleted as u64,
        }))
    }

    fn reset_public_key(&self, username: &str) -> Result<Option<String>, StoreError> {
        let key = name_key(username);
        let conn = self.lock();
        conn.query_row(
            "UPDATE usuarios SET public_key = '' WHERE name_key = ?1 RETURNING userName",
            params![key],
            |r| r.get(0),
        )
        .optional()
        .map_err(map_err)
    }

    fn offline_stats(&self) -> Result<OfflineStats, StoreError> {
        let conn = self.lock();
        let (total, oldest): (i64, Option<i64>) = conn
            .query_row(
                "SELECT COUNT(*), \
                 CAST(strftime('%s', 'now') AS INTEGER) \
                   - CAST(strftime('%s', MIN(data_envio)) AS INTEGER) \
                 FROM mensagens_offline",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(map_err)?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT MIN(destinatario_username), COUNT(*) AS n FROM mensagens_offline \
                 GROUP BY recipient_key ORDER BY n DESC, recipient_key",
            )
            .map_err(map_err)?;
        let per_recipient = stmt
            .query_map([], |r| Ok((r.get(0)?, count(r.get(1)?))))
            .map_err(map_err)?
            .collect::<Result<Vec<(String, u64)>, _>>()
            .map_err(map_err)?;
        Ok(OfflineStats {
            total: count(total),
            per_recipient,
            oldest_age_secs: oldest.map(count),
        })
    }

    fn purge_offline_older_than(&self, age: Duration) -> Result<u64, StoreError> {
        let modifier = format!("-{} seconds", age.as_secs());
        let batch = i64::try_from(PURGE_BATCH).unwrap_or(i64::MAX);
        let mut purged = 0u64;
        loop {
            // The lock is taken per batch, so other threads interleave.
            let conn = self.lock();
            let mut stmt = conn
                .prepare_cached(
                    "DELETE FROM mensagens_offline WHERE id IN (\
                     SELECT id FROM mensagens_offline \
                     WHERE data_envio < datetime('now', ?1) ORDER BY id LIMIT ?2)",
                )
                .map_err(map_err)?;
            let deleted = stmt.execute(params![modifier, batch]).map_err(map_err)?;
            purged += deleted as u64;
            if deleted < PURGE_BATCH {
                return Ok(purged);
            }
        }
    }
}

/// A database count (never negative) as `u64`.
fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance;

    struct TempFile(PathBuf);

    impl TempFile {
        fn new(tag: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let dir = std::env::temp_dir().join(format!(
                "chat_store_test_{}_{tag}_{nanos}",
                std::process::id()
            ));
            TempFile(dir)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn sqlite_in_memory_conformance() {
        let store = SqliteStore::open_in_memory().unwrap();
        assert_eq!(store.backend_name(), "sqlite::memory:");
        assert_eq!(store.path(), None);
        conformance::run(&store);
    }

    #[test]
    fn sqlite_file_conformance_and_reopen() {
        let tmp = TempFile::new("file");
        // The directory does not exist yet: open creates it.
        let path = tmp.0.join("sub").join("chat.db");
        {
            let store = SqliteStore::open(&path).unwrap();
            assert_eq!(store.backend_name(), format!("sqlite:{}", path.display()));
            assert_eq!(store.path(), Some(path.clone()));
            conformance::run(&store);
            store.store_offline("Alice", "Zed", "{\"kept\":1}").unwrap();
            let mode: String = store
                .lock()
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
        }
        // Reopening applies the schema again and keeps the data.
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.find_user("alice").unwrap().unwrap().username, "Alice");
        assert_eq!(store.count_offline("ZED").unwrap(), 1);
    }

    #[test]
    fn sqlite_open_error_names_the_path() {
        let tmp = TempFile::new("err");
        std::fs::create_dir_all(&tmp.0).unwrap();
        // A directory is not a database file.
        match SqliteStore::open(&tmp.0) {
            Err(StoreError::Config(m)) => {
                assert!(m.contains(&tmp.0.display().to_string()), "{m}")
            }
            other => panic!("expected Config error, got {other:?}"),
        }
    }

    #[test]
    fn sqlite_payload_limit() {
        let store = SqliteStore::open_in_memory().unwrap();
        let too_big = "x".repeat(MAX_PAYLOAD_BYTES + 1);
        assert!(matches!(
            store.store_offline("a", "b", &too_big),
            Err(StoreError::PayloadTooLarge)
        ));
        let big = "x".repeat(70_000);
        let id = store.store_offline("a", "b", &big).unwrap();
        assert_eq!(store.fetch_offline("B", 0, 1).unwrap()[0].id, id);
    }

    #[test]
    fn sqlite_unicode_case_fold() {
        let store = SqliteStore::open_in_memory().unwrap();
        store.create_user("ΣΟΦΊΑ", "h", "k").unwrap();
        assert_eq!(store.find_user("σοφία").unwrap().unwrap().username, "ΣΟΦΊΑ");
        assert!(matches!(
            store.create_user("Σοφία", "h", "k"),
            Err(StoreError::UsernameTaken)
        ));
    }

    /// `cargo test --release --lib sqlite_offline_throughput -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn sqlite_offline_throughput() {
        let tmp = TempFile::new("bench");
        let store = SqliteStore::open(&tmp.0.join("bench.db")).unwrap();
        let payload = format!(
            "{{\"iv\":\"{}\",\"ct\":\"{}\"}}",
            "a".repeat(24),
            "b".repeat(300)
        );
        let n = 20_000;
        let start = std::time::Instant::now();
        for i in 0..n {
            store
                .store_offline(&format!("s{}", i % 8), "Target", &payload)
                .unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "sqlite file, 1 thread: {:.0} store_offline/s",
            n as f64 / secs
        );
    }
}
