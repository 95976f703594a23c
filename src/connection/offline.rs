//! Delivery of stored offline messages (`REQUEST_OFFLINE_MESSAGES`).
//!
//! Messages are fetched in batches, oldest first, sent as `E2E_MSG` frames,
//! and deleted by id only once the frames carrying them were flushed to the
//! socket; a message stored meanwhile is never touched. An [`OfflineClaims`]
//! claim makes sure two sessions of one user (an old one being replaced and
//! the new one) never deliver the same mailbox at once.

use std::collections::{HashSet, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use log::warn;
use serde_json::Value;

use crate::presence::fold;
use crate::protocol::{self, Payload, RelayKind};
use crate::store::{OfflineMessage, Store};

/// Messages fetched per store round trip.
const BATCH: usize = 256;

/// How long a session waits for another session of its user to finish
/// delivering the same mailbox.
const CLAIM_WAIT: Duration = Duration::from_secs(5);

/// Mailboxes being delivered right now, by folded user name.
#[derive(Debug, Default)]
pub struct OfflineClaims {
    claimed: Mutex<HashSet<String>>,
    released: Condvar,
}

impl OfflineClaims {
    fn lock(&self) -> MutexGuard<'_, HashSet<String>> {
        self.claimed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Claims `user`'s mailbox, waiting up to `wait` for another holder.
    fn claim(&self, user: &str, wait: Duration) -> bool {
        let key = fold(user);
        let deadline = Instant::now() + wait;
        let mut claimed = self.lock();
        while claimed.contains(&key) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            claimed = self
                .released
                .wait_timeout(claimed, left)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
        claimed.insert(key)
    }

    fn release(&self, user: &str) {
        self.lock().remove(&fold(user));
        self.released.notify_all();
    }
}

/// One frame of offline delivery: the text to seal and the id to delete
/// once it is flushed.
pub struct OfflineFrame {
    pub text: String,
    pub id: i64,
}

/// The delivery state of one session.
#[derive(Default)]
pub struct OfflineDelivery {
    active: bool,
    after_id: i64,
    batch: VecDeque<OfflineMessage>,
    /// Ids written to the socket and not yet known to be flushed.
    written: Vec<i64>,
}

impl OfflineDelivery {
    /// Starts delivering `user`'s mailbox, unless already delivering.
    /// Returns false if the mailbox stays claimed by another session.
    /// Starting again while delivering makes the next fetch look at the
    /// whole mailbox once more: a message committed late (after one with a
    /// higher id was fetched) is not skipped.
    pub fn start(&mut self, user: &str, claims: &OfflineClaims) -> bool {
        if self.active {
            // Delivered rows are deleted before the next fetch, so
            // fetching from the start again sends nothing twice.
            self.after_id = 0;
            return true;
        }
        if !claims.claim(user, CLAIM_WAIT) {
            return false;
        }
        self.active = true;
        self.after_id = 0;
        true
    }

    /// Whether frames may still come from the mailbox.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// The next frame to send, fetching a batch when the previous one is
    /// flushed and deleted. Ends the delivery (and releases the claim) when
    /// the mailbox is empty or the store fails.
    pub fn next_frame(
        &mut self,
        user: &str,
        store: &dyn Store,
        claims: &OfflineClaims,
    ) -> Option<OfflineFrame> {
        if !self.active {
            return None;
        }
        if self.batch.is_empty() {
            if !self.written.is_empty() {
                return None;
            }
            match store.fetch_offline(user, self.after_id, BATCH) {
                Ok(batch) if !batch.is_empty() => self.batch = batch.into(),
                Ok(_) => {
                    self.finish(user, claims);
                    return None;
                }
                Err(error) => {
                    warn!("{user}: offline fetch failed: {error}");
                    self.finish(user, claims);
                    return None;
                }
            }
        }
        let message = self.batch.pop_front()?;
        self.after_id = message.id;
        self.written.push(message.id);
        Some(OfflineFrame {
            text: offline_frame_text(&message),
            id: message.id,
        })
    }

    /// Everything written so far reached the socket: delete it. Returns
    /// whether there was anything to delete.
    pub fn flushed(&mut self, user: &str, store: &dyn Store) -> bool {
        if self.written.is_empty() {
            return false;
        }
        if let Err(error) = store.delete_offline(&self.written) {
            warn!(
                "{user}: {} delivered offline messages not deleted: {error}",
                self.written.len()
            );
        }
        self.written.clear();
        true
    }

    /// Stops delivering (connection closing); written-but-unflushed ids stay
    /// in the store, to be delivered again.
    pub fn finish(&mut self, user: &str, claims: &OfflineClaims) {
        if self.active {
            claims.release(user);
        }
        self.active = false;
        self.batch.clear();
        self.written.clear();
    }
}

/// `{"type":"E2E_MSG","from":S,"payload":P}` with the stored JSON text parsed
/// back into a value (a stored text that is not JSON is sent as a string,
/// rather than lost).
fn offline_frame_text(message: &OfflineMessage) -> String {
    let payload = serde_json::from_str::<Value>(&message.payload)
        .unwrap_or_else(|_| Value::String(message.payload.clone()));
    protocol::relay(
        RelayKind::Message,
        &message.sender,
        &Payload::from_value(&payload),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_mailbox_waits_for_its_release() {
        let claims = OfflineClaims::default();
        assert!(claims.claim("Ana", Duration::ZERO));
        assert!(!claims.claim("ana", Duration::from_millis(20)));
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| claims.claim("ANA", Duration::from_secs(5)));
            std::thread::sleep(Duration::from_millis(20));
            claims.release("ana");
            assert!(waiter.join().unwrap());
        });
    }

    #[test]
    fn stored_payload_is_parsed_back_into_json() {
        let message = OfflineMessage {
            id: 1,
            sender: "ana".into(),
            payload: r#"{"iv":"a","ct":"b","mac":"c"}"#.into(),
        };
        let frame: Value = serde_json::from_str(&offline_frame_text(&message)).unwrap();
        assert_eq!(frame["type"], "E2E_MSG");
        assert_eq!(frame["from"], "ana");
        assert_eq!(frame["payload"]["ct"], "b");
    }

    /// MySQL hands out ids at INSERT and makes rows visible at COMMIT, so
    /// a row with a lower id can appear after the delivery fetched past it
    /// (two senders). Starting again (the announcement of that commit)
    /// delivers it, and nothing twice.
    #[test]
    fn a_late_commit_below_the_cursor_is_delivered_when_announced() {
        let path = std::env::temp_dir().join(format!(
            "chat-offline-late-{}-{:?}.db",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_file(&path);
        let store = crate::store::SqliteStore::open(&path).unwrap();
        let claims = OfflineClaims::default();
        let mut delivery = OfflineDelivery::default();
        store.store_offline("ana", "bob", r#"{"n":1}"#).unwrap();
        let fetched = store.store_offline("ana", "bob", r#"{"n":2}"#).unwrap();
        assert!(delivery.start("bob", &claims));
        let mut delivered = Vec::new();
        while delivered.len() < 2 {
            let frame = delivery.next_frame("bob", &store, &claims).unwrap();
            delivered.push(frame.id);
            delivery.flushed("bob", &store);
        }
        // The late row: committed now, with an id below the cursor.
        let raw = rusqlite::Connection::open(&path).unwrap();
        raw.execute(
            "INSERT INTO mensagens_offline (id, remetente_username, \
             destinatario_username, recipient_key, conteudo) \
             VALUES (?1, 'cleo', 'bob', 'bob', '{\"n\":0}')",
            [fetched - 1],
        )
        .unwrap();
        assert!(delivery.start("bob", &claims), "the announcement");
        let late = delivery.next_frame("bob", &store, &claims).unwrap();
        assert_eq!(late.id, fetched - 1);
        assert!(late.text.contains("cleo"));
        delivery.flushed("bob", &store);
        assert!(delivery.next_frame("bob", &store, &claims).is_none());
        assert!(!delivery.is_active(), "the mailbox is empty: done");
        assert_eq!(store.count_offline("bob").unwrap(), 0);
        drop((raw, store));
        let _ = std::fs::remove_file(&path);
    }
}
