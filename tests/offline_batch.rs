//! Messages for an offline user, sent in a burst: the sender's thread stores
//! what is queued in one transaction per batch (group commit). What a user
//! sees must not change: every message arrives once, in order, and the
//! mailbox quota refuses exactly the messages beyond it, each with
//! `ERROR` "mailbox full".

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{user, Backend, TestServer, WAIT};
use serde_json::{json, Value};

/// Sends `count` raw `E2E_MSG`s to `to`, numbered from `first`, without
/// waiting: they queue up in the sender's outbox and are stored in batches.
fn burst(client: &mut chat_server::client::Client, to: &str, first: u64, count: u64) {
    for seq in first..first + count {
        let cmd = json!({"type": "E2E_MSG", "to": to, "payload": {"seq": seq}});
        client.connection().send(&cmd).expect("send");
    }
}

/// What a client read: raw `E2E_MSG` payload numbers, `ERROR` texts.
#[derive(Default)]
struct Seen {
    seqs: Vec<u64>,
    errors: HashMap<String, usize>,
}

impl Seen {
    fn error_count(&self) -> usize {
        self.errors.values().sum()
    }
}

/// Reads until `done` holds (or a generous deadline), then a little longer
/// so that anything extra (a duplicate, a stray error) is seen too.
fn read_until(client: &mut chat_server::client::Client, done: impl Fn(&Seen) -> bool) -> Seen {
    let mut seen = Seen::default();
    let deadline = Instant::now() + WAIT * 4;
    let mut quiet_until = None;
    loop {
        let now = Instant::now();
        if now >= deadline || quiet_until.is_some_and(|t| now >= t) {
            return seen;
        }
        if quiet_until.is_none() && done(&seen) {
            quiet_until = Some(now + Duration::from_millis(300));
        }
        let Some(cmd) = client
            .connection()
            .recv(Duration::from_millis(50))
            .expect("connection stays up")
        else {
            continue;
        };
        match cmd.get("type").and_then(Value::as_str) {
            Some("E2E_MSG") => seen.seqs.push(cmd["payload"]["seq"].as_u64().expect("seq")),
            Some("ERROR") => {
                let text = cmd["message"].as_str().unwrap_or_default().to_string();
                *seen.errors.entry(text).or_default() += 1;
            }
            _ => {}
        }
    }
}

/// 600 messages in a burst to an offline user: all stored (more than one
/// batch), then delivered at login exactly once and in the order sent.
fn a_burst_to_an_offline_user_arrives_once_in_order(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |config| {
        config.rate.commands.per_sec = 100_000.0;
        config.rate.commands.burst = 100_000.0;
    }) else {
        return;
    };
    let (mut alice, _) = user(&server, "alice");
    let bob = common::register(&server, "bob");
    burst(&mut alice, "bob", 0, 600);
    // Signalling an offline user is answered with ERROR after the stores
    // queued before it: then all 600 are committed.
    alice
        .connection()
        .send(&json!({"type": "E2E_AUTH", "to": "bob", "payload": {}}))
        .expect("send");
    let answer = read_until(&mut alice, |seen| seen.error_count() >= 1);
    assert!(answer.seqs.is_empty());
    assert_eq!(
        answer.error_count(),
        1,
        "only the signalling answer: {:?}",
        answer.errors
    );
    assert_eq!(server.store.count_offline("bob").unwrap(), 600);
    let mut bob = common::login(&server, "bob", &bob);
    let delivered = read_until(&mut bob, |seen| seen.seqs.len() >= 600);
    assert!(delivered.errors.is_empty(), "{:?}", delivered.errors);
    assert_eq!(delivered.seqs, (0..600).collect::<Vec<u64>>());
    let deadline = Instant::now() + WAIT;
    while server.store.count_offline("bob").unwrap() > 0 {
        assert!(Instant::now() < deadline, "delivered messages are deleted");
        std::thread::sleep(Duration::from_millis(20));
    }
    common::assert_server_works(&server);
}

/// Quota 100 and a burst of 130: exactly the first 100 are stored (in
/// order), the other 30 are each refused with "mailbox full"; a second
/// mailbox in the same burst is counted on its own.
fn a_burst_over_the_quota_is_refused_message_by_message(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |config| {
        config.offline_quota = 100;
        config.rate.commands.per_sec = 100_000.0;
        config.rate.commands.burst = 100_000.0;
    }) else {
        return;
    };
    let (mut alice, _) = user(&server, "alice");
    let bob = common::register(&server, "bob");
    common::register(&server, "carol");
    burst(&mut alice, "bob", 0, 60);
    burst(&mut alice, "carol", 0, 10);
    burst(&mut alice, "bob", 60, 70);
    let refused = read_until(&mut alice, |seen| seen.error_count() >= 30);
    assert_eq!(
        refused.errors.get("mailbox full"),
        Some(&30),
        "{:?}",
        refused.errors
    );
    assert_eq!(refused.error_count(), 30, "{:?}", refused.errors);
    assert_eq!(server.store.count_offline("bob").unwrap(), 100);
    assert_eq!(server.store.count_offline("carol").unwrap(), 10);
    let mut bob = common::login(&server, "bob", &bob);
    let delivered = read_until(&mut bob, |seen| seen.seqs.len() >= 100);
    assert_eq!(delivered.seqs, (0..100).collect::<Vec<u64>>());
    common::assert_server_works(&server);
}

both_stores!(
    a_burst_to_an_offline_user_arrives_once_in_order,
    a_burst_over_the_quota_is_refused_message_by_message,
);
