//! [`MeteredStore`]: a [`Store`] that forwards every call to the real one,
//! timing it into the store latency histogram and counting offline
//! messages stored (`store_offline`, each stored message of a batch) and
//! delivered (`delete_offline`, which only offline delivery calls, after
//! the messages were written to the recipient).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Metrics;
use crate::store::{
    DeletedUser, NewOffline, OfflineMessage, OfflineStats, Store, StoreError, UserRecord,
    UserSummary,
};

/// The server's store, measured.
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Metrics,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn Store>, metrics: Metrics) -> MeteredStore {
        MeteredStore { inner, metrics }
    }

    /// Runs `call`, recording its duration under `operation`.
    fn timed<T>(&self, operation: &str, call: impl FnOnce(&dyn Store) -> T) -> T {
        let started = Instant::now();
        let result = call(self.inner.as_ref());
        self.metrics
            .store_latency
            .with_label_values(&[operation])
            .observe(started.elapsed().as_secs_f64());
        result
    }
}

impl Store for MeteredStore {
    fn backend_name(&self) -> String {
        self.inner.backend_name()
    }

    fn create_user(&self, username: &str, hash: &str, key: &str) -> Result<(), StoreError> {
        self.timed("create_user", |s| s.create_user(username, hash, key))
    }

    fn find_user(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        self.timed("find_user", |s| s.find_user(username))
    }

    fn set_password_hash(&self, user_id: i64, hash: &str) -> Result<(), StoreError> {
        self.timed("set_password_hash", |s| s.set_password_hash(user_id, hash))
    }

    fn set_public_key(&self, user_id: i64, key: &str) -> Result<(), StoreError> {
        self.timed("set_public_key", |s| s.set_public_key(user_id, key))
    }

    fn all_usernames(&self) -> Result<Vec<String>, StoreError> {
        self.timed("all_usernames", |s| s.all_usernames())
    }

    fn store_offline(
        &self,
        sender: &str,
        recipient: &str,
        payload: &str,
    ) -> Result<i64, StoreError> {
        let stored = self.timed("store_offline", |s| {
            s.store_offline(sender, recipient, payload)
        });
        if stored.is_ok() {
            self.metrics.offline_stored.inc();
        }
        stored
    }

    fn store_offline_batch(
        &self,
        msgs: &[NewOffline<'_>],
    ) -> Result<Vec<Result<i64, StoreError>>, StoreError> {
        let stored = self.timed("store_offline_batch", |s| s.store_offline_batch(msgs));
        if let Ok(results) = &stored {
            let n = results.iter().filter(|r| r.is_ok()).count();
            self.metrics.offline_stored.inc_by(n as u64);
        }
        stored
    }

    fn fetch_offline(
        &self,
        recipient: &str,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<OfflineMessage>, StoreError> {
        self.timed("fetch_offline", |s| {
            s.fetch_offline(recipient, after_id, limit)
        })
    }

    fn delete_offline(&self, ids: &[i64]) -> Result<(), StoreError> {
        let deleted = self.timed("delete_offline", |s| s.delete_offline(ids));
        if deleted.is_ok() {
            self.metrics.offline_delivered.inc_by(ids.len() as u64);
        }
        deleted
    }

    fn count_offline(&self, recipient: &str) -> Result<u64, StoreError> {
        self.timed("count_offline", |s| s.count_offline(recipient))
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.timed("ping", |s| s.ping())
    }

    fn list_users(&self) -> Result<Vec<UserSummary>, StoreError> {
        self.timed("list_users", |s| s.list_users())
    }

    fn delete_user(&self, username: &str) -> Result<Option<DeletedUser>, StoreError> {
        self.timed("delete_user", |s| s.delete_user(username))
    }

    fn reset_public_key(&self, username: &str) -> Result<Option<String>, StoreError> {
        self.timed("reset_public_key", |s| s.reset_public_key(username))
    }

    fn offline_stats(&self) -> Result<OfflineStats, StoreError> {
        self.timed("offline_stats", |s| s.offline_stats())
    }

    fn purge_offline_older_than(&self, age: Duration) -> Result<u64, StoreError> {
        let purged = self.timed("purge_offline", |s| s.purge_offline_older_than(age));
        if let Ok(n) = purged {
            self.metrics.offline_expired.inc_by(n);
        }
        purged
    }
}
