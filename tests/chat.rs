//! Chat commands between logged-in users (PROTOCOL.md sections 4 and 5),
//! over real sockets, against both stores.

mod common;

use std::time::Duration;

use chat_server::client::{Client, Event};
use common::{login, user, Backend, TestServer, WAIT};
use serde_json::json;

fn two_clients_chat_end_to_end_both_ways(backend: Backend) {
    let Some(server) = TestServer::start(backend) else {
        return;
    };
    let (mut alice, _) = user(&server, "alice");
    let (mut bob, _) = user(&server, "bob");
    alice
        .wait_user_online("bob", WAIT)
        .expect("alice sees bob online");
    Client::pair_e2ee(&mut alice, &mut bob, WAIT).expect("peer handshake");
    alice.send_message("bob", "hello bob").unwrap();
    assert_eq!(bob.wait_message_from("alice", WAIT).unwrap(), "hello bob");
    bob.send_message("alice", "olá, alice").unwrap();
    assert_eq!(alice.wait_message_from("bob", WAIT).unwrap(), "olá, alice");
}

both_stores!(two_clients_chat_end_to_end_both_ways);

fn offline_messages_arrive_once_oldest_first(backend: Backend) {
    let Some(server) = TestServer::start(backend) else {
        return;
    };
    let (mut alice, _) = user(&server, "alice");
    let (mut bob, bob_id) = user(&server, "bob");
    Client::pair_e2ee(&mut alice, &mut bob, WAIT).expect("peer handshake");
    bob.close();
    alice
        .wait_user_offline("bob", WAIT)
        .expect("bob shown offline");
    for n in 0..5 {
        alice.send_message("bob", &format!("offline {n}")).unwrap();
    }
    // The sender's thread stores them; wait until all five are committed.
    wait_until(|| server.store.count_offline("bob").unwrap() == 5);
    bob.reconnect(&server.url).unwrap();
    let reply = bob.login_challenge("bob", &bob_id).unwrap();
    assert!(reply.is_success(), "{reply:?}");
    bob.open_home().unwrap();
    for n in 0..5 {
        assert_eq!(
            bob.wait_message_from("alice", WAIT).unwrap(),
            format!("offline {n}")
        );
    }
    wait_until(|| server.store.count_offline("bob").unwrap() == 0);
    bob.close();
    let mut again = login(&server, "bob", &bob_id);
    let events = again.drain_events(Duration::from_millis(300)).unwrap();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Message { .. } | Event::PeerDropped { .. })),
        "delivered twice: {events:?}"
    );
}

both_stores!(offline_messages_arrive_once_oldest_first);

fn wait_until(mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not met in time"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn message_to_unknown_user_is_refused_not_stored(backend: Backend) {
    let Some(server) = TestServer::start(backend) else {
        return;
    };
    let (mut alice, _) = user(&server, "alice");
    alice
        .send(&json!({"type": "E2E_MSG", "to": "nobody", "payload": {"iv": "a", "ct": "b", "mac": "c"}}))
        .unwrap();
    assert_eq!(alice.wait_error(WAIT).unwrap(), "User not found");
    assert_eq!(server.store.count_offline("nobody").unwrap(), 0);
}

both_stores!(message_to_unknown_user_is_refused_not_stored);
