//! The backend-independent conformance suite: every [`Store`] implementation
//! runs [`run`] on an empty database (SQLite in memory and on disk, MySQL on
//! a fresh and on a seed-schema database).

use std::collections::HashSet;

use std::time::Duration;

use super::{DeletedUser, NewOffline, OfflineStats, Store, StoreError, UserSummary, DELETE_CHUNK};

/// Runs every check. The store must start with no users and no offline rows.
pub(crate) fn run(store: &dyn Store) {
    store.ping().unwrap();
    assert!(!store.backend_name().is_empty());
    users(store);
    duplicate_race(store);
    offline_queue(store);
    offline_delete_many(store);
    offline_batch(store);
    offline_concurrent_writers(store);
    admin_listing_and_stats(store);
    admin_reset_and_delete(store);
    offline_purge_by_age(store);
}

fn users(store: &dyn Store) {
    assert_eq!(store.all_usernames().unwrap(), Vec::<String>::new());
    assert_eq!(store.find_user("alice").unwrap(), None);

    store.create_user("Alice", "hash-a", "a2V5LWE=").unwrap();
    store.create_user("bob", "hash-b", "a2V5LWI=").unwrap();
    store.create_user("Élodie", "hash-e", "a2V5LWU=").unwrap();

    // Case-insensitive lookups return the stored spelling.
    for query in ["Alice", "alice", "ALICE", "aLiCe"] {
        let u = store.find_user(query).unwrap().unwrap();
        assert_eq!(u.username, "Alice");
        assert_eq!(u.password_hash, "hash-a");
        assert_eq!(u.public_key, "a2V5LWE=");
    }
    assert_eq!(store.find_user("BOB").unwrap().unwrap().username, "bob");
    assert_eq!(
        store.find_user("élodie").unwrap().unwrap().username,
        "Élodie"
    );
    assert_eq!(
        store.find_user("ÉLODIE").unwrap().unwrap().username,
        "Élodie"
    );
    assert_eq!(store.find_user("alic").unwrap(), None);
    assert_eq!(store.find_user("").unwrap(), None);

    // Duplicates in any case are refused, and nothing is written.
    for dup in ["Alice", "alice", "ALICE", "BoB", "élodie"] {
        match store.create_user(dup, "other", "b3RoZXI=") {
            Err(StoreError::UsernameTaken) => {}
            other => panic!("create_user({dup:?}) should be UsernameTaken, got {other:?}"),
        }
    }
    let alice = store.find_user("alice").unwrap().unwrap();
    assert_eq!(alice.password_hash, "hash-a");

    // Ids are distinct.
    let bob = store.find_user("bob").unwrap().unwrap();
    assert_ne!(alice.id, bob.id);

    // Updates touch only the given user.
    store.set_password_hash(alice.id, "hash-a2").unwrap();
    store.set_public_key(alice.id, "bmV3LWtleQ==").unwrap();
    let alice2 = store.find_user("ALICE").unwrap().unwrap();
    assert_eq!(alice2.id, alice.id);
    assert_eq!(alice2.username, "Alice");
    assert_eq!(alice2.password_hash, "hash-a2");
    assert_eq!(alice2.public_key, "bmV3LWtleQ==");
    assert_eq!(store.find_user("bob").unwrap().unwrap(), bob);
    // Setting the same value again is fine.
    store.set_public_key(alice.id, "bmV3LWtleQ==").unwrap();

    // All names, stored spellings, in registration order.
    assert_eq!(
        store.all_usernames().unwrap(),
        vec!["Alice".to_string(), "bob".to_string(), "Élodie".to_string()]
    );
}

/// Many threads register the same name in different cases at once: exactly
/// one wins, the rest get `UsernameTaken` (the database's duplicate key).
fn duplicate_race(store: &dyn Store) {
    let spellings = ["Racer", "racer", "RACER", "rAcEr", "RaceR", "raceR"];
    let results: Vec<Result<(), StoreError>> = std::thread::scope(|s| {
        let handles: Vec<_> = spellings
            .iter()
            .map(|name| s.spawn(move || store.create_user(name, "h", "k")))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "{results:?}");
    assert!(results
        .iter()
        .all(|r| matches!(r, Ok(()) | Err(StoreError::UsernameTaken))));
    let winner = store.find_user("racer").unwrap().unwrap().username;
    assert!(spellings.contains(&winner.as_str()));
}

fn offline_queue(store: &dyn Store) {
    assert_eq!(store.count_offline("Alice").unwrap(), 0);
    assert!(store.fetch_offline("Alice", 0, 10).unwrap().is_empty());

    let payload = |i: usize| format!("{{\"iv\":\"aXY=\",\"ct\":\"{i}\",\"mac\":\"ñ✓😀\"}}");
    let mut ids = Vec::new();
    for i in 0..5 {
        let sender = if i % 2 == 0 { "bob" } else { "Élodie" };
        ids.push(store.store_offline(sender, "Alice", &payload(i)).unwrap());
    }
    let other = store
        .store_offline("Alice", "bob", "{\"to\":\"bob\"}")
        .unwrap();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    // Count and fetch are case-insensitive on the recipient.
    assert_eq!(store.count_offline("Alice").unwrap(), 5);
    assert_eq!(store.count_offline("ALICE").unwrap(), 5);
    assert_eq!(store.count_offline("bob").unwrap(), 1);
    assert_eq!(store.count_offline("nobody").unwrap(), 0);

    let all = store.fetch_offline("alice", 0, 100).unwrap();
    assert_eq!(all.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
    for (i, m) in all.iter().enumerate() {
        assert_eq!(m.payload, payload(i));
        assert_eq!(m.sender, if i % 2 == 0 { "bob" } else { "Élodie" });
    }

    // limit and after_id page through the queue oldest first.
    let first = store.fetch_offline("Alice", 0, 2).unwrap();
    assert_eq!(first.iter().map(|m| m.id).collect::<Vec<_>>(), ids[..2]);
    let next = store.fetch_offline("Alice", first[1].id, 2).unwrap();
    assert_eq!(next.iter().map(|m| m.id).collect::<Vec<_>>(), ids[2..4]);
    let last = store.fetch_offline("Alice", next[1].id, 2).unwrap();
    assert_eq!(last.iter().map(|m| m.id).collect::<Vec<_>>(), ids[4..]);
    assert!(store.fetch_offline("Alice", ids[4], 2).unwrap().is_empty());
    assert!(store.fetch_offline("Alice", 0, 0).unwrap().is_empty());

    // Deliver-then-delete: a message stored after the fetch survives.
    let fetched = store.fetch_offline("Alice", 0, 100).unwrap();
    let late = store
        .store_offline("bob", "alice", "{\"late\":true}")
        .unwrap();
    let fetched_ids: Vec<i64> = fetched.iter().map(|m| m.id).collect();
    store.delete_offline(&fetched_ids).unwrap();
    let rest = store.fetch_offline("Alice", 0, 100).unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].id, late);
    assert_eq!(rest[0].payload, "{\"late\":true}");
    assert_eq!(store.count_offline("Alice").unwrap(), 1);
    // Another recipient's rows were not touched.
    assert_eq!(store.fetch_offline("bob", 0, 10).unwrap()[0].id, other);

    // Deleting unknown or already deleted ids, or nothing, is fine.
    store.delete_offline(&[]).unwrap();
    store.delete_offline(&fetched_ids).unwrap();
    store.delete_offline(&[late, other, i64::MAX]).unwrap();
    assert_eq!(store.count_offline("Alice").unwrap(), 0);
    assert_eq!(store.count_offline("bob").unwrap(), 0);

    // Ids keep growing after the newest row was deleted.
    let after = store.store_offline("bob", "Alice", "{}").unwrap();
    assert!(after > late);
    store.delete_offline(&[after]).unwrap();
}

/// Deleting more ids than one statement takes, in several chunks.
fn offline_delete_many(store: &dyn Store) {
    let n = DELETE_CHUNK * 2 + 37;
    let texts: Vec<String> = (0..n).map(|i| format!("{i}")).collect();
    let msgs: Vec<NewOffline<'_>> = texts
        .iter()
        .map(|t| NewOffline {
            sender: "bob",
            recipient: "Many",
            payload: t,
        })
        .collect();
    let ids: Vec<i64> = store
        .store_offline_batch(&msgs)
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let keep = store.store_offline("bob", "Many", "keep").unwrap();
    assert_eq!(store.count_offline("many").unwrap(), n as u64 + 1);
    let fetched = store.fetch_offline("MANY", 0, n).unwrap();
    assert_eq!(fetched.len(), n);
    assert_eq!(fetched.last().map(|m| m.id), ids.last().copied());
    store.delete_offline(&ids).unwrap();
    let rest = store.fetch_offline("many", 0, 10).unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].id, keep);
    store.delete_offline(&[keep]).unwrap();
}

/// Concurrent writers: every store is committed, ids are unique, and each
/// sender's messages come back in the order they were written.
fn offline_concurrent_writers(store: &dyn Store) {
    let writers = 4;
    let per_writer = 50;
    std::thread::scope(|s| {
        for w in 0..writers {
            s.spawn(move || {
                for i in 0..per_writer {
                    store
                        .store_offline(&format!("w{w}"), "Busy", &format!("{i}"))
                        .unwrap();
                }
            });
        }
    });
    let all = store.fetch_offline("busy", 0, 10_000).unwrap();
    assert_eq!(all.len(), writers * per_writer);
    let unique: HashSet<i64> = all.iter().map(|m| m.id).collect();
    assert_eq!(unique.len(), all.len());
    for w in 0..writers {
        let seq: Vec<usize> = all
            .iter()
            .filter(|m| m.sender == format!("w{w}"))
            .map(|m| m.payload.parse().unwrap())
            .collect();
        assert_eq!(seq, (0..per_writer).collect::<Vec<_>>());
    }
    let ids: Vec<i64> = all.iter().map(|m| m.id).collect();
    store.delete_offline(&ids).unwrap();
    assert_eq!(store.count_offline("Busy").unwrap(), 0);
}

/// A batch keeps its order, returns one id per stored message, refuses
/// only the payloads that do not fit, and an empty batch is a no-op.
fn offline_batch(store: &dyn Store) {
    assert!(store.store_offline_batch(&[]).unwrap().is_empty());
    // Larger than any backend's limit (16 MiB - 1 at most).
    let too_big = "x".repeat(16 * 1024 * 1024);
    let texts = ["{\"n\":0}", "{\"n\":1}", too_big.as_str(), "{\"n\":3}"];
    let msgs: Vec<NewOffline<'_>> = texts
        .iter()
        .enumerate()
        .map(|(i, payload)| NewOffline {
            sender: if i % 2 == 0 { "bob" } else { "Alice" },
            recipient: if i == 3 { "BATCH" } else { "Batch" },
            payload,
        })
        .collect();
    let results = store.store_offline_batch(&msgs).unwrap();
    assert_eq!(results.len(), 4);
    assert!(matches!(results[2], Err(StoreError::PayloadTooLarge)));
    let ids: Vec<i64> = [0, 1, 3]
        .iter()
        .map(|&i| match &results[i] {
            Ok(id) => *id,
            Err(e) => panic!("message {i}: {e}"),
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let got = store.fetch_offline("batch", 0, 10).unwrap();
    assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
    assert_eq!(
        got.iter().map(|m| m.payload.as_str()).collect::<Vec<_>>(),
        vec![texts[0], texts[1], texts[3]]
    );
    assert_eq!(got[1].sender, "Alice");
    // A batch of nothing but oversized payloads stores nothing.
    let only_big = [NewOffline {
        sender: "bob",
        recipient: "Batch",
        payload: &too_big,
    }];
    let r = store.store_offline_batch(&only_big).unwrap();
    assert!(matches!(r.as_slice(), [Err(StoreError::PayloadTooLarge)]));
    store.delete_offline(&ids).unwrap();
    assert_eq!(store.count_offline("Batch").unwrap(), 0);
}

/// The admin view: users with their key state and waiting messages, and
/// the offline statistics. Runs after the suites above (users Alice, bob,
/// Élodie and one racer; an empty offline queue).
fn admin_listing_and_stats(store: &dyn Store) {
    assert_eq!(store.offline_stats().unwrap(), OfflineStats::default());
    store.store_offline("bob", "alice", "{\"n\":1}").unwrap();
    store.store_offline("bob", "ALICE", "{\"n\":2}").unwrap();
    store.store_offline("Alice", "Élodie", "{\"n\":3}").unwrap();
    store.store_offline("Alice", "ghost", "{\"n\":4}").unwrap();
    store.store_offline("Alice", "ghost", "{\"n\":5}").unwrap();
    store.store_offline("Alice", "ghost", "{\"n\":6}").unwrap();

    let users = store.list_users().unwrap();
    let names: Vec<&str> = users.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names.len(), 4, "{users:?}");
    assert_eq!(names[..3], ["Alice", "bob", "Élodie"]);
    assert_eq!(
        users[0],
        UserSummary {
            username: "Alice".into(),
            has_key: true,
            offline_waiting: 2
        }
    );
    assert_eq!(users[1].offline_waiting, 0);
    assert_eq!(users[2].offline_waiting, 1);
    assert!(users.iter().all(|u| u.has_key));

    let stats = store.offline_stats().unwrap();
    assert_eq!(stats.total, 6);
    let per: Vec<(String, u64)> = stats
        .per_recipient
        .iter()
        .map(|(name, n)| (name.to_lowercase(), *n))
        .collect();
    assert_eq!(
        per,
        vec![
            ("ghost".to_string(), 3),
            ("alice".to_string(), 2),
            ("élodie".to_string(), 1)
        ]
    );
    // Just stored: at most a few seconds old (clock steps aside).
    assert!(
        stats.oldest_age_secs.is_some_and(|age| age < 3600),
        "{stats:?}"
    );
}

fn admin_reset_and_delete(store: &dyn Store) {
    // Reset: the key is cleared, the rest of the record kept.
    assert_eq!(store.reset_public_key("nobody").unwrap(), None);
    let before = store.find_user("bob").unwrap().unwrap();
    assert_eq!(
        store.reset_public_key("BOB").unwrap().as_deref(),
        Some("bob")
    );
    let after = store.find_user("bob").unwrap().unwrap();
    assert_eq!(after.public_key, "");
    assert_eq!(after.password_hash, before.password_hash);
    assert_eq!(after.id, before.id);
    let bob = store.list_users().unwrap();
    assert!(!bob.iter().find(|u| u.username == "bob").unwrap().has_key);
    // A password login may store a new key again.
    store.set_public_key(after.id, "bmV3").unwrap();
    assert_eq!(store.find_user("bob").unwrap().unwrap().public_key, "bmV3");

    // Delete: the user and the messages waiting for it go, others stay.
    assert_eq!(store.delete_user("nobody").unwrap(), None);
    assert_eq!(
        store.delete_user("aLiCe").unwrap(),
        Some(DeletedUser {
            username: "Alice".into(),
            offline_deleted: 2
        })
    );
    assert_eq!(store.find_user("alice").unwrap(), None);
    assert_eq!(store.count_offline("alice").unwrap(), 0);
    assert_eq!(store.count_offline("ghost").unwrap(), 3);
    assert_eq!(store.count_offline("élodie").unwrap(), 1);
    assert!(!store
        .all_usernames()
        .unwrap()
        .contains(&"Alice".to_string()));
    assert_eq!(store.delete_user("alice").unwrap(), None);
    // The name is free again.
    store.create_user("Alice", "h", "a2V5").unwrap();
    assert_eq!(store.find_user("alice").unwrap().unwrap().username, "Alice");
}

/// Purging by age deletes only what is older; the database clock has
/// whole-second resolution, so the old rows are given two seconds.
fn offline_purge_by_age(store: &dyn Store) {
    let waiting = store.offline_stats().unwrap().total;
    assert_eq!(waiting, 4);
    assert_eq!(
        store
            .purge_offline_older_than(Duration::from_secs(3600))
            .unwrap(),
        0
    );
    std::thread::sleep(Duration::from_millis(2100));
    let fresh = store
        .store_offline("bob", "ghost", "{\"fresh\":1}")
        .unwrap();
    assert_eq!(
        store
            .purge_offline_older_than(Duration::from_secs(1))
            .unwrap(),
        waiting
    );
    let rest = store.fetch_offline("ghost", 0, 10).unwrap();
    assert_eq!(rest.iter().map(|m| m.id).collect::<Vec<_>>(), vec![fresh]);
    let stats = store.offline_stats().unwrap();
    assert_eq!(stats.total, 1);
    assert_eq!(stats.per_recipient, vec![("ghost".to_string(), 1)]);
    store.delete_offline(&[fresh]).unwrap();
}
