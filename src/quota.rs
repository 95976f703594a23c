//! Offline quota per recipient (README.md, "Limits and security"): at most `quota` stored
//! messages wait for one user; beyond, the sender gets `ERROR` "mailbox
//! full" and the message is not stored (never silently dropped).
//!
//! Kept cheap: the count of a recipient's mailbox comes from the store at
//! most once per [`COUNT_TTL`] and is kept up to date in between by the
//! stores that pass through here (every thread shares one cache). A
//! delivery of offline messages forgets the recipient's count. Time is
//! passed in, so the unit tests drive a fake clock.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::presence::fold;
use crate::store::StoreError;

/// How long a count read from the store is trusted.
pub const COUNT_TTL: Duration = Duration::from_secs(2);

/// Most recipients cached; beyond, stale entries go, then all.
const CACHE_LIMIT: usize = 10_000;

/// Mailbox counts shared by all connection threads.
pub struct MailboxQuota {
    quota: u64,
    counts: Mutex<HashMap<String, (u64, Instant)>>,
}

impl MailboxQuota {
    pub fn new(quota: u64) -> MailboxQuota {
        MailboxQuota {
            quota,
            counts: Mutex::new(HashMap::new()),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, Instant)>> {
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reserves room for one message to `recipient`: `Ok(true)` if it fits
    /// (then call [`MailboxQuota::release`] if storing it fails), `Ok(false)`
    /// if the mailbox is full. `count` reads the mailbox size from the store
    /// when the cached one is missing or stale (outside the lock).
    pub fn reserve(
        &self,
        recipient: &str,
        now: Instant,
        count: impl FnOnce() -> Result<u64, StoreError>,
    ) -> Result<bool, StoreError> {
        let key = fold(recipient);
        let fresh = self
            .counts()
            .get(&key)
            .is_some_and(|(_, read)| now.saturating_duration_since(*read) < COUNT_TTL);
        let counted = if fresh { None } else { Some(count()?) };
        let mut counts = self.counts();
        if counts.len() >= CACHE_LIMIT {
            counts.retain(|_, (_, read)| now.saturating_duration_since(*read) < COUNT_TTL);
            if counts.len() >= CACHE_LIMIT {
                counts.clear();
            }
        }
        let entry = counts.entry(key).or_insert((0, now));
        if let Some(counted) = counted {
            *entry = (counted, now);
        }
        if entry.0 >= self.quota {
            return Ok(false);
        }
        entry.0 += 1;
        Ok(true)
    }

    /// Gives back a reservation whose message was not stored.
    pub fn release(&self, recipient: &str) {
        if let Some((count, _)) = self.counts().get_mut(&fold(recipient)) {
            *count = count.saturating_sub(1);
        }
    }

    /// Forgets the cached count of `recipient` (its mailbox was read).
    pub fn forget(&self, recipient: &str) {
        self.counts().remove(&fold(recipient));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn counts_once_per_ttl_and_stops_at_the_quota() {
        let quota = MailboxQuota::new(3);
        let now = Instant::now();
        let reads = Cell::new(0);
        let count = || {
            reads.set(reads.get() + 1);
            Ok(1)
        };
        assert!(quota.reserve("Bob", now, count).unwrap());
        assert!(quota.reserve("bob", now, count).unwrap());
        assert!(!quota.reserve("BOB", now, count).unwrap());
        assert_eq!(reads.get(), 1);
        quota.release("bob");
        assert!(quota.reserve("bob", now, count).unwrap());
        // Stale: read again (the store says 0 now).
        let later = now + COUNT_TTL;
        assert!(quota.reserve("bob", later, || Ok(0)).unwrap());
        quota.forget("bob");
        assert!(!quota.reserve("bob", later, || Ok(3)).unwrap());
        assert!(quota.reserve("other", later, || Ok(2)).unwrap());
        assert!(quota
            .reserve("broken", later, || Err(StoreError::PayloadTooLarge))
            .is_err());
    }
}
