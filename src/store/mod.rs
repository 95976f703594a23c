//! Persistent storage: the [`Store`] trait (registered users, their password
//! hashes and public keys, and the offline message queue), its record and
//! error types, and the two backends, [`mysql::MysqlStore`] and
//! [`sqlite::SqliteStore`]. The schemas live in `sql/` and are applied when a
//! store is opened. Everything here is blocking; callers are connection
//! threads or store workers, never the dispatcher.
//!
//! Names: callers pass names as typed for lookups and the canonical stored
//! spelling for offline rows. Matching is always case-insensitive: MySQL uses
//! the column's collation (utf8mb4_unicode_ci for new databases, whatever the
//! seed database has otherwise), SQLite uses [`name_key`] (Unicode
//! `str::to_lowercase`).

pub mod mysql;
pub mod sqlite;
#[doc(hidden)]
pub mod testdb;

#[cfg(test)]
pub(crate) mod conformance;

pub use self::mysql::{MysqlSettings, MysqlStore};
pub use self::sqlite::SqliteStore;

/// A registered user as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: i64,
    /// The spelling stored at registration (sessions, presence and routing use it).
    pub username: String,
    /// PHC string (argon2id).
    pub password_hash: String,
    /// Base64 text as stored.
    pub public_key: String,
}

/// One row of the offline queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineMessage {
    pub id: i64,
    /// Sender's stored spelling, as written by `store_offline`.
    pub sender: String,
    /// The payload as JSON text.
    pub payload: String,
}

/// One message for [`Store::store_offline_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewOffline<'a> {
    pub sender: &'a str,
    pub recipient: &'a str,
    /// JSON text.
    pub payload: &'a str,
}

/// One registered user as the admin listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    /// The stored spelling.
    pub username: String,
    /// Whether a public key is stored (an empty key, after
    /// [`Store::reset_public_key`], means the next login must use the password).
    pub has_key: bool,
    /// Offline messages waiting for this user.
    pub offline_waiting: u64,
}

/// What [`Store::delete_user`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedUser {
    /// The stored spelling of the deleted user.
    pub username: String,
    /// Offline messages that were waiting for the user, deleted with it.
    pub offline_deleted: u64,
}

/// The offline queue at a glance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OfflineStats {
    /// Messages waiting in total.
    pub total: u64,
    /// `(recipient, waiting)`, most waiting first, then by name.
    pub per_recipient: Vec<(String, u64)>,
    /// Age of the oldest message, in whole seconds (`None`: the queue is
    /// empty or no row has a time).
    pub oldest_age_secs: Option<u64>,
}

/// Rows deleted per statement by [`Store::purge_offline_older_than`], so a
/// large purge never holds a lock for long.
pub(crate) const PURGE_BATCH: usize = 1000;

/// Errors of every store operation.
#[derive(thiserror::Error, Debug)]
pub enum StoreError {
    /// A user with this name (compared case-insensitively) already exists.
    #[error("username already exists")]
    UsernameTaken,
    /// The payload is larger than the offline column can hold.
    #[error("payload too large for the offline store")]
    PayloadTooLarge,
    /// The database cannot be reached right now (connect, timeout, pool exhausted, lock busy).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A bad setting (URL, path) given to open the store.
    #[error("invalid store configuration: {0}")]
    Config(String),
    /// Any other database error.
    #[error("store error: {0}")]
    Backend(String),
}

/// The storage interface. Object safe; shared as `Arc<dyn Store>` by many threads.
pub trait Store: Send + Sync {
    /// Where the data lives, without secrets, for the start log line
    /// (e.g. `mysql://root@127.0.0.1:3306/chat` or `sqlite:chat_server.db`).
    fn backend_name(&self) -> String;

    /// Registers a user; returns only once the row is committed. A name equal
    /// to an existing one case-insensitively gives [`StoreError::UsernameTaken`]
    /// (also when the database itself reports the duplicate key).
    fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        public_key: &str,
    ) -> Result<(), StoreError>;

    /// Case-insensitive lookup; the record carries the stored spelling.
    fn find_user(&self, username: &str) -> Result<Option<UserRecord>, StoreError>;

    /// Replaces a user's password hash (committed on return).
    fn set_password_hash(&self, user_id: i64, password_hash: &str) -> Result<(), StoreError>;

    /// Replaces a user's public key (committed on return).
    fn set_public_key(&self, user_id: i64, public_key: &str) -> Result<(), StoreError>;

    /// Every registered name (stored spellings), in registration order.
    fn all_usernames(&self) -> Result<Vec<String>, StoreError>;

    /// Queues a payload for `recipient`; committed on return. Returns the row id.
    /// A payload larger than the column can hold gives [`StoreError::PayloadTooLarge`].
    fn store_offline(
        &self,
        sender: &str,
        recipient: &str,
        payload: &str,
    ) -> Result<i64, StoreError>;

    /// Queues many messages with a single commit (one disk flush instead of
    /// one per message), in order; committed on return. `Err` means nothing
    /// was stored. Otherwise there is one result per message: its row id, or
    /// [`StoreError::PayloadTooLarge`] for a payload that does not fit (the
    /// others are still stored).
    ///
    /// The default implementation calls [`Store::store_offline`] for each
    /// message and is not atomic; both real backends override it.
    fn store_offline_batch(
        &self,
        msgs: &[NewOffline<'_>],
    ) -> Result<Vec<Result<i64, StoreError>>, StoreError> {
        let mut out = Vec::with_capacity(msgs.len());
        for m in msgs {
            match self.store_offline(m.sender, m.recipient, m.payload) {
                Err(StoreError::PayloadTooLarge) => out.push(Err(StoreError::PayloadTooLarge)),
                Err(e) => return Err(e),
                Ok(id) => out.push(Ok(id)),
            }
        }
        Ok(out)
    }

    /// Up to `limit` messages for `recipient` (case-insensitive) with
    /// `id > after_id`, oldest first.
    fn fetch_offline(
        &self,
        recipient: &str,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<OfflineMessage>, StoreError>;

    /// Deletes exactly these rows (by id; unknown ids are ignored).
    fn delete_offline(&self, ids: &[i64]) -> Result<(), StoreError>;

    /// Number of queued messages for `recipient` (case-insensitive).
    fn count_offline(&self, recipient: &str) -> Result<u64, StoreError>;

    /// Checks that the database answers.
    fn ping(&self) -> Result<(), StoreError>;

    // The admin operations below have defaults that fail, so wrapper
    // stores (tests) need not forward them; both real backends override
    // every one.

    /// Every registered user with whether a key is stored and how many
    /// offline messages wait, in registration order.
    fn list_users(&self) -> Result<Vec<UserSummary>, StoreError> {
        Err(unsupported("listing users"))
    }

    /// Deletes a user (found case-insensitively) and the offline messages
    /// waiting for it, in one transaction. `None`: no such user.
    fn delete_user(&self, username: &str) -> Result<Option<DeletedUser>, StoreError> {
        let _ = username;
        Err(unsupported("deleting users"))
    }

    /// Clears a user's public key (an empty key never verifies a challenge,
    /// so the next login must be a password login, which may store a new
    /// key). Returns the stored spelling; `None`: no such user.
    fn reset_public_key(&self, username: &str) -> Result<Option<String>, StoreError> {
        let _ = username;
        Err(unsupported("resetting keys"))
    }

    /// Counts of the offline queue.
    fn offline_stats(&self) -> Result<OfflineStats, StoreError> {
        Err(unsupported("offline statistics"))
    }

    /// Deletes offline messages stored more than `age` ago (whole seconds,
    /// by the database clock), in batches of [`PURGE_BATCH`] rows; returns
    /// how many were deleted.
    fn purge_offline_older_than(&self, age: std::time::Duration) -> Result<u64, StoreError> {
        let _ = age;
        Err(unsupported("purging offline messages"))
    }
}

/// The error of an admin operation a (test) store does not implement.
fn unsupported(what: &str) -> StoreError {
    StoreError::Backend(format!("{what} is not supported by this store"))
}

/// The case-insensitive key of a name where the database cannot compare
/// case-insensitively itself (SQLite): Unicode default lowercase mapping,
/// `str::to_lowercase()`, locale-independent.
pub fn name_key(name: &str) -> String {
    name.to_lowercase()
}

/// Largest number of ids in one `DELETE ... WHERE id IN (...)` statement.
pub(crate) const DELETE_CHUNK: usize = 512;

/// Splits `ids` into chunks padded (by repeating the last id, which is
/// harmless in `IN (...)`) to a power-of-two length of at most
/// [`DELETE_CHUNK`], so only a handful of distinct statements are ever
/// prepared.
pub(crate) fn delete_chunks(ids: &[i64]) -> Vec<Vec<i64>> {
    ids.chunks(DELETE_CHUNK)
        .map(|chunk| {
            let mut v = chunk.to_vec();
            let padded = chunk.len().next_power_of_two().min(DELETE_CHUNK);
            if let Some(&last) = chunk.last() {
                v.resize(padded, last);
            }
            v
        })
        .collect()
}

/// `?, ?, ?` with `n` placeholders.
pub(crate) fn placeholders(n: usize) -> String {
    let mut s = String::with_capacity(n * 3);
    for i in 0..n {
        if i > 0 {
            s.push_str(", ");
        }
        s.push('?');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_key_folds_unicode() {
        assert_eq!(name_key("ALICE"), "alice");
        assert_eq!(name_key("ÉLODIE"), "élodie");
        assert_eq!(name_key("Straße"), "straße");
    }

    #[test]
    fn delete_chunks_pad_to_powers_of_two() {
        assert!(delete_chunks(&[]).is_empty());
        assert_eq!(delete_chunks(&[1, 2, 3]), vec![vec![1, 2, 3, 3]]);
        let ids: Vec<i64> = (0..1100).collect();
        let chunks = delete_chunks(&ids);
        let lens: Vec<usize> = chunks.iter().map(Vec::len).collect();
        assert_eq!(lens, vec![512, 512, 128]);
        let mut all: Vec<i64> = chunks.concat();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all, ids);
        assert_eq!(placeholders(3), "?, ?, ?");
    }
}
