//! Presence: the directory of registered users, who of them is online, the
//! serialised `user_list_update` (built once per change, shared by every
//! recipient), and the coalescing window that turns a burst of logins and
//! logouts into one broadcast (PROTOCOL.md section 5). Owned by the
//! dispatcher thread; no locks, no I/O.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::protocol;

/// The longest a presence change may wait for its broadcast.
const MAX_WINDOW: Duration = Duration::from_secs(10);

/// The key that makes names case-insensitive: a Unicode lower-case fold.
pub fn fold(name: &str) -> String {
    name.to_lowercase()
}

/// [`fold`] for lookups: borrows the name when it is already folded
/// (lower-case ASCII, the usual case on the routing path), so a lookup
/// allocates nothing.
pub fn folded(name: &str) -> Cow<'_, str> {
    if name
        .bytes()
        .all(|b| b.is_ascii() && !b.is_ascii_uppercase())
    {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(fold(name))
    }
}

/// How presence changes are coalesced into broadcasts.
#[derive(Debug, Clone)]
pub struct Coalescing {
    /// The shortest window: changes within it go out as one broadcast.
    pub base_window: Duration,
    /// Presence bytes per second; the window grows to keep within it.
    pub budget_bytes_per_sec: u64,
    /// Changes within one window from which the window counts as a login
    /// burst: a `REQUEST_USER_LIST` is then answered by the window's
    /// broadcast instead of a list of its own (0: never).
    pub burst_changes: usize,
}

/// One registered user in the directory.
#[derive(Debug)]
struct Entry {
    name: Arc<str>,
    /// The name as a JSON string literal, for the list (escaped once).
    quoted: Box<str>,
    online: bool,
}

impl Entry {
    fn offline(name: Arc<str>) -> Entry {
        Entry {
            quoted: protocol::json_string(&name).into_boxed_str(),
            name,
            online: false,
        }
    }
}

/// Registered users, online marks and the broadcast schedule.
#[derive(Debug)]
pub struct Presence {
    /// fold -> stored spelling and online mark, in case-insensitive order.
    directory: BTreeMap<String, Entry>,
    /// How many entries are online.
    online: usize,
    /// The serialised list for the current state, built on demand.
    cached: Option<Arc<str>>,
    /// When to check next whether the pending broadcast may go.
    broadcast_due: Option<Instant>,
    /// The first change not broadcast yet.
    pending_since: Option<Instant>,
    /// Changes not broadcast yet.
    changes_pending: usize,
    last_broadcast: Option<Instant>,
    coalescing: Coalescing,
}

impl Presence {
    /// A directory of `names`, nobody online.
    pub fn new(names: impl IntoIterator<Item = String>, coalescing: Coalescing) -> Presence {
        let directory = names
            .into_iter()
            .map(|name| (fold(&name), Entry::offline(Arc::from(name))))
            .collect();
        Presence {
            directory,
            online: 0,
            cached: None,
            broadcast_due: None,
            pending_since: None,
            changes_pending: 0,
            last_broadcast: None,
            coalescing: Coalescing {
                budget_bytes_per_sec: coalescing.budget_bytes_per_sec.max(1),
                ..coalescing
            },
        }
    }

    /// The stored spelling of a registered name, matched case-insensitively.
    pub fn registered(&self, name: &str) -> Option<&Arc<str>> {
        self.directory.get(&fold(name)).map(|entry| &entry.name)
    }

    /// Adds a user; returns the stored spelling to use from now on.
    pub fn register(&mut self, name: &str, now: Instant) -> Arc<str> {
        let key = fold(name);
        if let Some(existing) = self.directory.get(&key) {
            return existing.name.clone();
        }
        let stored: Arc<str> = Arc::from(name);
        self.directory.insert(key, Entry::offline(stored.clone()));
        self.changed(now);
        stored
    }

    /// Marks a (registered) user online or offline.
    pub fn set_online(&mut self, name: &str, online: bool, now: Instant) {
        let entry = self
            .directory
            .entry(fold(name))
            .or_insert_with(|| Entry::offline(Arc::from(name)));
        if entry.online == online {
            return;
        }
        entry.online = online;
        if online {
            self.online += 1;
        } else {
            self.online -= 1;
        }
        self.changed(now);
    }

    /// The current list, serialised once per change.
    pub fn snapshot(&mut self) -> Arc<str> {
        if let Some(list) = &self.cached {
            return list.clone();
        }
        let list: Arc<str> = Arc::from(protocol::user_list_update_quoted(
            self.directory
                .values()
                .map(|entry| (&*entry.quoted, entry.online)),
        ));
        self.cached = Some(list.clone());
        list
    }

    /// When the pending broadcast is due, if one is pending.
    pub fn broadcast_due(&self) -> Option<Instant> {
        self.broadcast_due
    }

    /// Whether a `REQUEST_USER_LIST` should be left to the pending
    /// broadcast: during a login burst every list sealed at once would be
    /// outdated by that broadcast within one window, and sealing one list
    /// (hundreds of KB at 10,000 users) per login is what would cap the
    /// login rate. The requester is online, so the broadcast reaches it.
    pub fn request_waits_for_broadcast(&self) -> bool {
        let burst = self.coalescing.burst_changes;
        self.broadcast_due.is_some() && burst > 0 && self.changes_pending >= burst
    }

    /// Takes the pending broadcast if it may go at `now`. When the check
    /// was due but the budget, weighed with who is online now, says later,
    /// the check moves to then.
    pub fn take_due_broadcast(&mut self, now: Instant) -> Option<Arc<str>> {
        let (Some(due), Some(since)) = (self.broadcast_due, self.pending_since) else {
            return None;
        };
        if due > now {
            return None;
        }
        let ready = self.ready_at(since);
        if ready > now {
            self.broadcast_due = Some(ready);
            return None;
        }
        self.broadcast_due = None;
        self.pending_since = None;
        self.changes_pending = 0;
        self.last_broadcast = Some(now);
        Some(self.snapshot())
    }

    /// Number of users online.
    pub fn online_count(&self) -> usize {
        self.online
    }

    fn changed(&mut self, now: Instant) {
        self.cached = None;
        self.changes_pending += 1;
        if self.pending_since.is_none() {
            self.pending_since = Some(now);
            self.broadcast_due = Some(self.ready_at(now));
        }
    }

    /// When changes pending since `since` may be broadcast: one base window
    /// after the first of them, and one budget window after the previous
    /// broadcast, so presence traffic keeps within the budget however fast
    /// users come online. That is never later than [`MAX_WINDOW`] after the
    /// first change: the budget window is capped, and the previous
    /// broadcast went before that change.
    fn ready_at(&self, since: Instant) -> Instant {
        let coalesced = since + self.coalescing.base_window;
        let spaced = self
            .last_broadcast
            .map_or(coalesced, |last| last + self.window());
        coalesced.max(spaced)
    }

    /// The budget window: the base window, stretched so that one broadcast
    /// to everyone online now (sealed list size x online users) per window
    /// stays within budget.
    fn window(&self) -> Duration {
        let list_bytes = 45 * self.directory.len() as u64 + 48;
        let broadcast_bytes = sealed_frame_bytes(list_bytes).saturating_mul(self.online as u64);
        let Coalescing {
            base_window,
            budget_bytes_per_sec,
            ..
        } = self.coalescing;
        let budget_window =
            Duration::from_secs_f64(broadcast_bytes as f64 / budget_bytes_per_sec as f64);
        budget_window.clamp(base_window, MAX_WINDOW.max(base_window))
    }
}

/// What a list of `plain_bytes` weighs on the wire, sealed in the channel:
/// the AES-CBC ciphertext (padded to the next block) in base64, plus the
/// frame's IV, HMAC, JSON keys and WebSocket header.
fn sealed_frame_bytes(plain_bytes: u64) -> u64 {
    let ciphertext = (plain_bytes / 16 + 1) * 16;
    ciphertext.div_ceil(3) * 4 + 160
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn coalescing(base_window: Duration, budget_bytes_per_sec: u64) -> Coalescing {
        Coalescing {
            base_window,
            budget_bytes_per_sec,
            burst_changes: 3,
        }
    }

    fn presence(names: &[&str]) -> Presence {
        Presence::new(
            names.iter().map(|name| name.to_string()),
            coalescing(Duration::from_millis(100), 100_000_000),
        )
    }

    fn users(list: &str) -> Value {
        serde_json::from_str::<Value>(list).unwrap()["users"].clone()
    }

    #[test]
    fn folded_equals_fold_and_borrows_folded_names() {
        for name in ["alice", "Alice", "ÉLODIE", "élodie", "user_1", "ǅ", "İ", ""] {
            assert_eq!(folded(name), fold(name), "{name}");
        }
        assert!(matches!(folded("bob_2"), Cow::Borrowed("bob_2")));
        assert!(matches!(folded("Bob"), Cow::Owned(_)));
    }

    #[test]
    fn list_is_sorted_case_insensitively_with_online_marks() {
        let mut presence = presence(&["bob", "Alice", "carol"]);
        let now = Instant::now();
        presence.set_online("ALICE", true, now);
        assert_eq!(
            users(&presence.snapshot()),
            json!([
                {"username": "Alice", "isOnline": true},
                {"username": "bob", "isOnline": false},
                {"username": "carol", "isOnline": false},
            ])
        );
    }

    #[test]
    fn burst_of_changes_is_one_broadcast_after_the_window() {
        let mut presence = presence(&["a", "b", "c"]);
        let start = Instant::now();
        presence.set_online("a", true, start);
        presence.set_online("b", true, start + Duration::from_millis(10));
        presence.set_online("a", false, start + Duration::from_millis(20));
        assert_eq!(
            presence.broadcast_due(),
            Some(start + Duration::from_millis(100))
        );
        assert!(presence
            .take_due_broadcast(start + Duration::from_millis(50))
            .is_none());
        let list = presence
            .take_due_broadcast(start + Duration::from_millis(100))
            .expect("due");
        assert_eq!(users(&list)[1], json!({"username": "b", "isOnline": true}));
        assert_eq!(presence.broadcast_due(), None);
    }

    #[test]
    fn list_requests_wait_for_the_broadcast_only_during_a_burst() {
        let mut presence = presence(&["a", "b", "c", "d"]);
        let start = Instant::now();
        assert!(!presence.request_waits_for_broadcast(), "nothing pending");
        presence.set_online("a", true, start);
        presence.set_online("b", true, start);
        assert!(
            !presence.request_waits_for_broadcast(),
            "2 changes: no burst"
        );
        presence.set_online("c", true, start);
        assert!(presence.request_waits_for_broadcast(), "3 changes: a burst");
        presence
            .take_due_broadcast(start + Duration::from_millis(100))
            .expect("due");
        assert!(
            !presence.request_waits_for_broadcast(),
            "the burst went out"
        );
        presence.set_online("d", true, start + Duration::from_millis(150));
        assert!(
            !presence.request_waits_for_broadcast(),
            "one change after it"
        );

        let mut never = Presence::new(
            ["a", "b"].map(String::from),
            Coalescing {
                burst_changes: 0,
                ..coalescing(Duration::from_millis(100), 1)
            },
        );
        never.set_online("a", true, start);
        never.set_online("b", true, start);
        assert!(!never.request_waits_for_broadcast(), "0 turns it off");
    }

    #[test]
    fn snapshot_is_shared_until_something_changes() {
        let mut presence = presence(&["a"]);
        let first = presence.snapshot();
        assert!(Arc::ptr_eq(&first, &presence.snapshot()));
        presence.register("Zed", Instant::now());
        assert!(!Arc::ptr_eq(&first, &presence.snapshot()));
        assert_eq!(&**presence.registered("zed").unwrap(), "Zed");
    }

    /// `users` registered users, all online.
    fn everyone_online(users: usize, base_window: Duration, budget: u64) -> Presence {
        let names: Vec<String> = (0..users).map(|n| format!("user{n}")).collect();
        let mut presence = Presence::new(names.clone(), coalescing(base_window, budget));
        let now = Instant::now();
        for name in &names {
            presence.set_online(name, true, now);
        }
        presence
    }

    #[test]
    fn the_budget_counts_sealed_bytes() {
        // 45,048 plain bytes: 45,056 of ciphertext, 60,076 in base64.
        assert_eq!(sealed_frame_bytes(45_048), 60_076 + 160);
        assert_eq!(sealed_frame_bytes(0), 24 + 160);
        let presence = everyone_online(1000, Duration::from_millis(1), 100_000_000);
        // 1,000 online x ~60 KB sealed at 100 MB/s: 0.6 s between broadcasts.
        let window = presence.window();
        assert!(window > Duration::from_millis(590), "{window:?}");
        assert!(window < Duration::from_millis(610), "{window:?}");
    }

    #[test]
    fn broadcasts_keep_within_the_budget_weighed_when_they_go() {
        let ms = Duration::from_millis;
        // 1,000 registered users: lists of ~60 KB sealed; at 10 MB/s a
        // broadcast to 101 online users needs ~0.6 s, to 1,000 ~6 s.
        let names: Vec<String> = (0..1000).map(|n| format!("user{n}")).collect();
        let mut presence = Presence::new(names.clone(), coalescing(ms(100), 10_000_000));
        let start = Instant::now();
        for name in &names[..100] {
            presence.set_online(name, true, start);
        }
        let first = start + ms(100);
        assert_eq!(presence.broadcast_due(), Some(first), "no broadcast before");
        assert!(presence.take_due_broadcast(first).is_some());

        presence.set_online(&names[100], true, first + ms(10));
        let due = presence.broadcast_due().expect("pending");
        assert!(due > first + ms(600) && due < first + ms(620), "{due:?}");
        for name in &names[101..] {
            presence.set_online(name, true, first + ms(20));
        }
        assert!(presence.take_due_broadcast(due).is_none(), "weighed again");
        let later = presence.broadcast_due().expect("still pending");
        assert!(
            later > first + ms(6000) && later < first + ms(6100),
            "{later:?}"
        );
        assert!(presence.take_due_broadcast(later).is_some());

        // After a quiet spell, one change goes out a base window later.
        let quiet = later + ms(60_000);
        presence.set_online(&names[0], false, quiet);
        assert_eq!(presence.broadcast_due(), Some(quiet + ms(100)));
    }

    #[test]
    fn window_grows_with_online_users_within_the_cap() {
        let presence = everyone_online(2000, Duration::from_millis(100), 1_000_000);
        let window = presence.window();
        assert!(window > Duration::from_millis(100), "{window:?}");
        assert!(window <= MAX_WINDOW);
    }
}
