//! Login and registration throttling (PROTOCOL.md section 3).
//!
//! [`Table`] is the pure part: failures per key, a few free, then a lock-out
//! window that doubles with each further failure (from [`BASE_LOCKOUT`] up
//! to a cap), forgotten [`FORGET_AFTER`] after the last failure and lock-out
//! (or at once by [`Table::forgive`]). The table holds at most `capacity`
//! keys; a new key beyond that evicts the oldest one. Time is passed in, so
//! the unit tests drive a fake clock.
//!
//! [`AuthThrottle`] combines the tables the auth phase needs, behind one
//! mutex shared by every connection thread:
//! - failed password logins, per username (any address) and per address;
//! - failed challenge logins, per address only: a per-username limit there
//!   would let anyone block a user's auto-login (per connection they are
//!   bounded already: `LOGIN_FAILED` closes it);
//! - registrations, per address (every attempt that would cost argon2 work).
//!
//! Loopback addresses (every Android emulator on the host is 127.0.0.1)
//! get their own, much higher, per-address allowance.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The first lock-out window; each further failure doubles it.
pub const BASE_LOCKOUT: Duration = Duration::from_secs(1);

/// A key is forgotten this long after its last failure and lock-out end.
pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);

/// Longest key kept for a username, in bytes: registered names are at most
/// 64 characters, so a longer login name cannot exist, and the bound keeps
/// the table's memory small whatever a client sends.
const MAX_USER_KEY_BYTES: usize = 256;

/// How many failures are free and how long lock-outs may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Failures allowed before the first lock-out.
    pub free_failures: u32,
    /// Cap of the doubling lock-out window.
    pub max_lockout: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last_failure: Instant,
    locked_until: Option<Instant>,
    /// Matches the newest entry of this key in `Table::order`.
    generation: u64,
}

impl Record {
    fn expired(&self, now: Instant) -> bool {
        let since = self
            .locked_until
            .map_or(self.last_failure, |until| until.max(self.last_failure));
        since
            .checked_add(FORGET_AFTER)
            .is_some_and(|forgotten| now >= forgotten)
    }
}

/// Failure counts per key, bounded in size and in time.
#[derive(Debug)]
pub struct Table<K> {
    records: HashMap<K, Record>,
    /// Keys in insertion order, with the generation they were inserted
    /// with; entries whose key was removed or re-inserted since are stale
    /// and skipped.
    order: VecDeque<(K, u64)>,
    capacity: usize,
    next_generation: u64,
}

impl<K: Hash + Eq + Clone> Table<K> {
    /// A table of at most `capacity` keys (at least 1).
    pub fn new(capacity: usize) -> Table<K> {
        Table {
            records: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            next_generation: 0,
        }
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the table holds no key.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Whether `key` is locked out at `now`.
    pub fn is_locked(&mut self, key: &K, now: Instant) -> bool {
        match self.records.get(key) {
            Some(record) if record.expired(now) => {
                self.records.remove(key);
                false
            }
            Some(record) => record.locked_until.is_some_and(|until| now < until),
            None => false,
        }
    }

    /// Counts one failure of `key` at `now` under `policy`.
    pub fn fail(&mut self, key: &K, policy: Policy, now: Instant) {
        let generation = self.next_generation;
        let record = match self.records.entry(key.clone()) {
            Entry::Occupied(entry) => {
                let record = entry.into_mut();
                if record.expired(now) {
                    record.failures = 0;
                    record.locked_until = None;
                }
                record
            }
            Entry::Vacant(entry) => {
                self.next_generation += 1;
                self.order.push_back((key.clone(), generation));
                entry.insert(Record {
                    failures: 0,
                    last_failure: now,
                    locked_until: None,
                    generation,
                })
            }
        };
        record.failures = record.failures.saturating_add(1);
        record.last_failure = now;
        if record.failures >= policy.free_failures {
            let doublings = (record.failures - policy.free_failures).min(31);
            let window = BASE_LOCKOUT
                .saturating_mul(1u32 << doublings)
                .min(policy.max_lockout);
            // A huge configured cap must not overflow `Instant`.
            record.locked_until = Some(
                now.checked_add(window)
                    .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600)),
            );
        }
        self.evict(now);
    }

    /// Forgets `key` (after a success).
    pub fn forgive(&mut self, key: &K) {
        self.records.remove(key);
        self.compact();
    }

    /// Drops expired keys at the front and, while over capacity, the
    /// oldest ones.
    fn evict(&mut self, now: Instant) {
        while let Some((key, generation)) = self.order.front() {
            let current = self
                .records
                .get(key)
                .filter(|record| record.generation == *generation)
                .map(|record| record.expired(now));
            match current {
                None => {}
                Some(expired) if expired || self.records.len() > self.capacity => {
                    self.records.remove(key);
                }
                Some(_) => break,
            }
            self.order.pop_front();
        }
        self.compact();
    }

    /// Keeps the order queue from growing with stale entries.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.capacity + 16 {
            let records = &self.records;
            self.order.retain(|(key, generation)| {
                records
                    .get(key)
                    .is_some_and(|record| record.generation == *generation)
            });
        }
    }
}

/// Settings of [`AuthThrottle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleSettings {
    /// Failed logins allowed per username, and per non-loopback address,
    /// before lock-outs start.
    pub free_failures: u32,
    /// The same per loopback address.
    pub loopback_free_failures: u32,
    /// Registrations allowed per non-loopback address before lock-outs
    /// start (forgotten with time only).
    pub free_registrations: u32,
    /// Cap of the doubling lock-out window.
    pub max_lockout: Duration,
    /// Most keys per table; beyond, the oldest is evicted.
    pub table_capacity: usize,
}

/// What a throttled client is told, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttled {
    Username,
    Address,
}

struct Tables {
    users: Table<String>,
    addresses: Table<IpAddr>,
    registrations: Table<IpAddr>,
}

/// The throttle of the auth phase, shared by all connection threads.
pub struct AuthThrottle {
    settings: ThrottleSettings,
    tables: Mutex<Tables>,
}

impl AuthThrottle {
    pub fn new(settings: ThrottleSettings) -> AuthThrottle {
        let capacity = settings.table_capacity;
        AuthThrottle {
            settings,
            tables: Mutex::new(Tables {
                users: Table::new(capacity),
                addresses: Table::new(capacity),
                registrations: Table::new(capacity),
            }),
        }
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn address_policy(&self, address: IpAddr) -> Policy {
        let free_failures = if address.to_canonical().is_loopback() {
            self.settings.loopback_free_failures
        } else {
            self.settings.free_failures
        };
        Policy {
            free_failures,
            max_lockout: self.settings.max_lockout,
        }
    }

    fn user_policy(&self) -> Policy {
        Policy {
            free_failures: self.settings.free_failures,
            max_lockout: self.settings.max_lockout,
        }
    }

    /// Whether a password login for `username` from `address` may proceed.
    pub fn password_login(
        &self,
        username: &str,
        address: IpAddr,
        now: Instant,
    ) -> Result<(), Throttled> {
        let mut tables = self.tables();
        if tables.users.is_locked(&user_key(username), now) {
            return Err(Throttled::Username);
        }
        if tables.addresses.is_locked(&address.to_canonical(), now) {
            return Err(Throttled::Address);
        }
        Ok(())
    }

    /// Counts a failed password login.
    pub fn password_failed(&self, username: &str, address: IpAddr, now: Instant) {
        let user_policy = self.user_policy();
        let address_policy = self.address_policy(address);
        let mut tables = self.tables();
        tables.users.fail(&user_key(username), user_policy, now);
        tables
            .addresses
            .fail(&address.to_canonical(), address_policy, now);
    }

    /// A successful login forgives the username (not the address: one
    /// valid account must not reset a password-spraying address).
    pub fn login_succeeded(&self, username: &str) {
        self.tables().users.forgive(&user_key(username));
    }

    /// Whether a challenge login from `address` may proceed (per address
    /// only, never per username).
    pub fn challenge_login(&self, address: IpAddr, now: Instant) -> Result<(), Throttled> {
        if self
            .tables()
            .addresses
            .is_locked(&address.to_canonical(), now)
        {
            return Err(Throttled::Address);
        }
        Ok(())
    }

    /// Counts a failed challenge login against the address only.
    pub fn challenge_failed(&self, address: IpAddr, now: Instant) {
        let policy = self.address_policy(address);
        self.tables()
            .addresses
            .fail(&address.to_canonical(), policy, now);
    }

    /// Counts a registration attempt from `address`; `Err` if the address
    /// is over its allowance (the attempt is then not counted).
    pub fn registration(&self, address: IpAddr, now: Instant) -> Result<(), Throttled> {
        let address = address.to_canonical();
        let mut policy = self.address_policy(address);
        if !address.is_loopback() {
            policy.free_failures = self.settings.free_registrations;
        } else {
            policy.free_failures = policy.free_failures.max(self.settings.free_registrations);
        }
        let mut tables = self.tables();
        if tables.registrations.is_locked(&address, now) {
            return Err(Throttled::Address);
        }
        tables.registrations.fail(&address, policy, now);
        Ok(())
    }
}

/// The table key of a username: case-folded, bounded in length.
fn user_key(username: &str) -> String {
    let mut key = crate::presence::fold(username);
    if key.len() > MAX_USER_KEY_BYTES {
        let mut end = MAX_USER_KEY_BYTES;
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        key.truncate(end);
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        free_failures: 5,
        max_lockout: Duration::from_secs(300),
    };

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn free_failures_then_doubling_lockouts_capped() {
        let start = Instant::now();
        let mut table = Table::new(10);
        let key = "alice".to_string();
        for _ in 0..4 {
            table.fail(&key, POLICY, start);
            assert!(!table.is_locked(&key, start));
        }
        table.fail(&key, POLICY, start);
        assert!(table.is_locked(&key, start));
        assert!(table.is_locked(&key, start + Duration::from_millis(999)));
        assert!(!table.is_locked(&key, start + secs(1)));
        // The 6th failure locks for 2 s, the 7th for 4 s.
        let t = start + secs(1);
        table.fail(&key, POLICY, t);
        assert!(table.is_locked(&key, t + Duration::from_millis(1999)));
        assert!(!table.is_locked(&key, t + secs(2)));
        table.fail(&key, POLICY, t + secs(2));
        assert!(table.is_locked(&key, t + secs(5)));
        assert!(!table.is_locked(&key, t + secs(6)));
        // Many more: capped at 5 minutes.
        let mut now = t + secs(6);
        for _ in 0..40 {
            table.fail(&key, POLICY, now);
            now += secs(1);
        }
        assert!(table.is_locked(&key, now + secs(298)));
        assert!(!table.is_locked(&key, now + secs(300)));
    }

    #[test]
    fn forgiven_after_success_and_after_time() {
        let start = Instant::now();
        let mut table = Table::new(10);
        let key = "bob".to_string();
        for _ in 0..5 {
            table.fail(&key, POLICY, start);
        }
        assert!(table.is_locked(&key, start));
        table.forgive(&key);
        assert!(!table.is_locked(&key, start));
        assert!(table.is_empty());
        for _ in 0..4 {
            table.fail(&key, POLICY, start);
        }
        // Long after: the count starts again.
        let later = start + FORGET_AFTER + secs(1);
        table.fail(&key, POLICY, later);
        assert!(!table.is_locked(&key, later));
    }

    #[test]
    fn capacity_evicts_the_oldest_and_expired_keys_go() {
        let start = Instant::now();
        let mut table = Table::new(3);
        for n in 0..5 {
            table.fail(&n, POLICY, start);
        }
        assert_eq!(table.len(), 3);
        for n in 0..2 {
            assert!(!table.records.contains_key(&n));
        }
        for _ in 0..5 {
            table.fail(&4, POLICY, start);
        }
        assert!(table.is_locked(&4, start));
        // Expired keys are dropped as new ones come in.
        table.fail(&10, POLICY, start + FORGET_AFTER + secs(400));
        assert_eq!(table.len(), 1);
        // The order queue stays bounded whatever the churn.
        for n in 0..1000 {
            table.fail(&(n % 7), POLICY, start);
            table.forgive(&(n % 5));
        }
        assert!(table.order.len() <= 2 * 3 + 16 + 1);
        assert!(table.len() <= 3);
    }

    fn settings() -> ThrottleSettings {
        ThrottleSettings {
            free_failures: 5,
            loopback_free_failures: 100,
            free_registrations: 3,
            max_lockout: secs(300),
            table_capacity: 100,
        }
    }

    #[test]
    fn usernames_and_addresses_are_separate_and_loopback_is_generous() {
        let throttle = AuthThrottle::new(settings());
        let now = Instant::now();
        let remote: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        for address in [remote, other, loopback, remote, other] {
            throttle.password_failed("Alice", address, now);
        }
        assert_eq!(
            throttle.password_login("alice", loopback, now),
            Err(Throttled::Username)
        );
        assert_eq!(throttle.password_login("bob", loopback, now), Ok(()));
        for n in 0..5 {
            throttle.password_failed(&format!("user{n}"), remote, now);
        }
        assert_eq!(
            throttle.password_login("carol", remote, now),
            Err(Throttled::Address)
        );
        assert_eq!(
            throttle.challenge_login(remote, now),
            Err(Throttled::Address)
        );
        for n in 0..50 {
            throttle.password_failed(&format!("x{n}"), loopback, now);
        }
        assert_eq!(throttle.password_login("carol", loopback, now), Ok(()));
        throttle.login_succeeded("ALICE");
        assert_eq!(throttle.password_login("alice", other, now), Ok(()));
    }

    #[test]
    fn challenge_failures_never_lock_the_username() {
        let throttle = AuthThrottle::new(settings());
        let now = Instant::now();
        let remote: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..5 {
            throttle.challenge_failed(remote, now);
        }
        assert_eq!(
            throttle.challenge_login(remote, now),
            Err(Throttled::Address)
        );
        let elsewhere: IpAddr = "192.0.2.9".parse().unwrap();
        assert_eq!(throttle.password_login("alice", elsewhere, now), Ok(()));
        assert_eq!(throttle.challenge_login(elsewhere, now), Ok(()));
    }

    #[test]
    fn registrations_per_address() {
        let throttle = AuthThrottle::new(settings());
        let now = Instant::now();
        let remote: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(throttle.registration(remote, now), Ok(()));
        }
        assert_eq!(throttle.registration(remote, now), Err(Throttled::Address));
        assert_eq!(throttle.registration(remote, now + secs(1)), Ok(()));
        let loopback: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        for _ in 0..50 {
            assert_eq!(throttle.registration(loopback, now), Ok(()));
        }
    }

    #[test]
    fn long_usernames_are_bounded_keys() {
        assert_eq!(user_key(&"é".repeat(1000)).len(), MAX_USER_KEY_BYTES);
        assert_eq!(user_key("ALICE"), user_key("alice"));
    }
}
