//! Group commit of the messages a user sends to offline recipients.
//!
//! The dispatcher hands each such message back to its sender's thread as
//! [`crate::outbox::Outgoing::StoreOffline`]. Committing them one by one
//! costs a durable commit (a disk flush) each: a few hundred per second on
//! MariaDB. Instead the thread collects what is queued in its outbox into an
//! [`OfflineBatch`] and stores it with [`Store::store_offline_batch`], one
//! transaction per batch, before anything queued after those messages is
//! written to the client (so an answer the client sees after its messages
//! means they are committed).
//!
//! The per-recipient quota is still checked message by message, in order,
//! when a message joins the batch: a refusal is known at once. Messages of
//! the batch not stored (payload too large, store failure) give back their
//! reservation and produce one `ERROR` each, never silence.

use std::sync::Arc;
use std::time::Instant;

use log::{info, warn};

use crate::presence::fold;
use crate::protocol::{messages, Payload};
use crate::quota::MailboxQuota;
use crate::store::{NewOffline, Store, StoreError};

/// Most messages committed in one transaction.
pub const MAX_BATCH: usize = 256;

/// One message waiting for the batch's commit.
struct Pending {
    recipient: Arc<str>,
    payload: String,
}

/// Messages of one sender waiting to be stored together.
#[derive(Default)]
pub struct OfflineBatch {
    pending: Vec<Pending>,
}

impl OfflineBatch {
    /// Whether the batch reached [`MAX_BATCH`] and should be committed now.
    pub fn is_full(&self) -> bool {
        self.pending.len() >= MAX_BATCH
    }

    /// Reserves room in `recipient`'s mailbox and queues the message.
    /// `Err` is the `ERROR` text for the sender (mailbox full, or its size
    /// could not be read).
    pub fn push(
        &mut self,
        sender: &str,
        recipient: Arc<str>,
        payload: Payload,
        store: &dyn Store,
        quota: &MailboxQuota,
    ) -> Result<(), &'static str> {
        // Rows of this batch are reserved but not yet committed: a fresh
        // count from the store must include them.
        let waiting = self.waiting_for(&recipient);
        let reserved = quota.reserve(&recipient, Instant::now(), || {
            store
                .count_offline(&recipient)
                .map(|stored| stored + waiting)
        });
        match reserved {
            Ok(true) => {
                self.pending.push(Pending {
                    recipient,
                    payload: payload.into_string(),
                });
                Ok(())
            }
            Ok(false) => {
                info!("{sender}: offline message for {recipient} refused: mailbox full");
                Err(messages::MAILBOX_FULL)
            }
            Err(error) => {
                warn!("{sender}: mailbox of {recipient} not counted: {error}");
                Err(messages::STORE_UNAVAILABLE)
            }
        }
    }

    /// The distinct recipients of the messages in the batch.
    pub fn recipients(&self) -> Vec<Arc<str>> {
        distinct_recipients(self.pending.iter().map(|p| &p.recipient))
    }

    fn waiting_for(&self, recipient: &str) -> u64 {
        let key = fold(recipient);
        self.pending
            .iter()
            .filter(|p| fold(&p.recipient) == key)
            .count() as u64
    }

    /// Stores every queued message in one transaction, in order. Returns
    /// one `ERROR` text per message that was not stored.
    pub fn commit(
        &mut self,
        sender: &str,
        store: &dyn Store,
        quota: &MailboxQuota,
    ) -> Vec<&'static str> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        let pending = std::mem::take(&mut self.pending);
        let rows: Vec<NewOffline<'_>> = pending
            .iter()
            .map(|p| NewOffline {
                sender,
                recipient: &p.recipient,
                payload: &p.payload,
            })
            .collect();
        let results = match store.store_offline_batch(&rows) {
            Ok(results) => results,
            Err(error) => {
                warn!(
                    "{sender}: {} offline messages not stored: {error}",
                    pending.len()
                );
                for p in &pending {
                    quota.release(&p.recipient);
                }
                return vec![messages::STORE_UNAVAILABLE; pending.len()];
            }
        };
        let mut notices = Vec::new();
        for (p, result) in pending.iter().zip(results) {
            let notice = match result {
                Ok(_) => continue,
                Err(StoreError::PayloadTooLarge) => messages::PAYLOAD_TOO_LARGE,
                Err(error) => {
                    warn!(
                        "{sender}: offline message for {} not stored: {error}",
                        p.recipient
                    );
                    messages::STORE_UNAVAILABLE
                }
            };
            quota.release(&p.recipient);
            notices.push(notice);
        }
        notices
    }
}

/// `names` without repeats (names compared case-insensitively).
pub fn distinct_recipients<'a>(names: impl Iterator<Item = &'a Arc<str>>) -> Vec<Arc<str>> {
    let mut distinct: Vec<(String, Arc<str>)> = Vec::new();
    for name in names {
        let key = fold(name);
        if !distinct.iter().any(|(seen, _)| *seen == key) {
            distinct.push((key, name.clone()));
        }
    }
    distinct.into_iter().map(|(_, name)| name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;
    use serde_json::{json, Value};

    fn payload(value: Value) -> Payload {
        Payload::from_value(&value)
    }

    fn push_n(batch: &mut OfflineBatch, n: usize, to: &str, store: &dyn Store, q: &MailboxQuota) {
        for i in 0..n {
            let payload = payload(json!({ "seq": i, "to": to }));
            batch.push("ana", to.into(), payload, store, q).unwrap();
        }
    }

    #[test]
    fn a_batch_is_stored_in_order_once() {
        let store = SqliteStore::open_in_memory().unwrap();
        let quota = MailboxQuota::new(100);
        let mut batch = OfflineBatch::default();
        push_n(&mut batch, 5, "Bob", &store, &quota);
        push_n(&mut batch, 2, "carol", &store, &quota);
        assert!(batch.commit("ana", &store, &quota).is_empty());
        // A second commit has nothing left to store.
        assert!(batch.commit("ana", &store, &quota).is_empty());
        let bob = store.fetch_offline("bob", 0, 100).unwrap();
        let seqs: Vec<i64> = bob
            .iter()
            .map(|m| {
                serde_json::from_str::<Value>(&m.payload).unwrap()["seq"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        assert_eq!(seqs, vec![0, 1, 2, 3, 4]);
        assert!(bob.iter().all(|m| m.sender == "ana"));
        assert_eq!(store.count_offline("carol").unwrap(), 2);
    }

    #[test]
    fn the_quota_counts_messages_of_the_open_batch() {
        let store = SqliteStore::open_in_memory().unwrap();
        store.store_offline("zed", "Bob", "{}").unwrap();
        let quota = MailboxQuota::new(4);
        let mut batch = OfflineBatch::default();
        push_n(&mut batch, 3, "bob", &store, &quota);
        let refused = batch.push("ana", "BOB".into(), payload(json!({})), &store, &quota);
        assert_eq!(refused, Err(messages::MAILBOX_FULL));
        // The cached count is forgotten (as after a delivery): the fresh
        // count must still see the three uncommitted messages.
        quota.forget("bob");
        let refused = batch.push("ana", "bob".into(), payload(json!({})), &store, &quota);
        assert_eq!(refused, Err(messages::MAILBOX_FULL));
        assert!(batch.commit("ana", &store, &quota).is_empty());
        assert_eq!(store.count_offline("bob").unwrap(), 4);
    }

    #[test]
    fn a_payload_too_large_is_refused_alone_and_gives_back_its_room() {
        let store = SqliteStore::open_in_memory().unwrap();
        let quota = MailboxQuota::new(3);
        let mut batch = OfflineBatch::default();
        push_n(&mut batch, 1, "bob", &store, &quota);
        let huge = payload(json!({ "pad": "x".repeat(16 << 20) }));
        batch
            .push("ana", "bob".into(), huge, &store, &quota)
            .unwrap();
        push_n(&mut batch, 1, "bob", &store, &quota);
        let notices = batch.commit("ana", &store, &quota);
        assert_eq!(notices, vec![messages::PAYLOAD_TOO_LARGE]);
        assert_eq!(store.count_offline("bob").unwrap(), 2);
        // The refused message's room was given back: one more fits.
        push_n(&mut batch, 1, "bob", &store, &quota);
        assert!(batch.commit("ana", &store, &quota).is_empty());
        assert_eq!(store.count_offline("bob").unwrap(), 3);
    }

    #[test]
    fn recipients_are_listed_once_whatever_their_case() {
        let names: Vec<Arc<str>> = ["Bob", "carol", "BOB", "bob", "Carol"]
            .into_iter()
            .map(Arc::from)
            .collect();
        let distinct = distinct_recipients(names.iter());
        let distinct: Vec<&str> = distinct.iter().map(|name| &**name).collect();
        assert_eq!(distinct, vec!["Bob", "carol"]);
    }
}
