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

fn typing_notices_reach_an_online_peer_only(backend: Backend) {
    let Some(server) = TestServer::start(backend) else {
        return;
    };
    let (mut alice, _) = user(&server, "alice");
    let (mut bob, _) = user(&server, "bob");
    common::register(&server, "carol");
    alice.typing("bob", true).unwrap();
    assert!(bob.wait_typing_from("alice", WAIT).unwrap());
    alice.typing("bob", false).unwrap();
    assert!(!bob.wait_typing_from("alice", WAIT).unwrap());
    // To an offline user: dropped silently, no error for the sender.
    alice.typing("carol", false).unwrap();
    let events = alice.drain_events(Duration::from_millis(300)).unwrap();
    assert!(
        !events.iter().any(|e| matches!(e, Event::Error(_))),
        "{events:?}"
    );
}

both_stores!(typing_notices_reach_an_online_peer_only);

fn user_list_lists_everyone_and_answers_the_requester_only(backend: Backend) {
    let Some(server) = TestServer::start(backend) else {
        return;
    };
    common::register(&server, "zoe");
    let (mut alice, _) = user(&server, "Alice");
    let (mut bob, _) = user(&server, "bob");
    alice.wait_user_online("bob", WAIT).unwrap();
    // Wait for the presence broadcast of bob's login to be over.
    alice.drain_events(Duration::from_millis(400)).unwrap();
    bob.drain_events(Duration::from_millis(50)).unwrap();
    bob.request_user_list().unwrap();
    let list = bob.wait_user_list(WAIT).unwrap();
    assert_eq!(
        list,
        vec![
            ("Alice".to_string(), true),
            ("bob".to_string(), true),
            ("zoe".to_string(), false),
        ],
        "every registered user, sorted case-insensitively, with online marks"
    );
    let events = alice.drain_events(Duration::from_millis(400)).unwrap();
    assert!(
        !events.iter().any(|e| matches!(e, Event::UserList(_))),
        "another user's request must not reach alice: {events:?}"
    );
    bob.close();
    alice.wait_user_offline("bob", WAIT).unwrap();
}

both_stores!(user_list_lists_everyone_and_answers_the_requester_only);

fn public_key_of_a_user_and_of_nobody(backend: Backend) {
    let Some(server) = TestServer::start(backend) else {
        return;
    };
    let (mut alice, _) = user(&server, "alice");
    let bob_id = common::register(&server, "Bob");
    alice.get_public_key("BOB").unwrap();
    let event = alice
        .wait_for(WAIT, |e| matches!(e, Event::PublicKey { .. }))
        .unwrap();
    assert_eq!(
        event,
        Event::PublicKey {
            username: "Bob".into(),
            public_key: bob_id.public_key_b64()
        }
    );
    alice.get_public_key("nobody").unwrap();
    assert_eq!(alice.wait_error(WAIT).unwrap(), "User not found");
}

both_stores!(public_key_of_a_user_and_of_nobody);

fn unknown_commands_get_an_error_and_the_session_lives_on(backend: Backend) {
    let Some(server) = TestServer::start(backend) else {
        return;
    };
    let (mut alice, _) = user(&server, "alice");
    alice
        .send(&json!({"type": "chat_message", "text": "hi"}))
        .unwrap();
    assert_eq!(alice.wait_error(WAIT).unwrap(), "unknown command");
    alice
        .send(&json!({"type": "E2E_MSG", "to": "alice", "payload": "not an object"}))
        .unwrap();
    assert!(alice.wait_error(WAIT).unwrap().contains("payload"));
    alice
        .send(&json!({"type": "E2E_HANDSHAKE", "to": "nobody", "payload": {}}))
        .unwrap();
    assert_eq!(alice.wait_error(WAIT).unwrap(), "User not found");
    alice.request_user_list().unwrap();
    alice.wait_user_list(WAIT).expect("still served");
}

both_stores!(unknown_commands_get_an_error_and_the_session_lives_on);

fn signalling_to_an_offline_user_is_refused(backend: Backend) {
    let Some(server) = TestServer::start(backend) else {
        return;
    };
    let (mut alice, _) = user(&server, "alice");
    common::register(&server, "bob");
    alice
        .send(&json!({"type": "E2E_HANDSHAKE", "to": "bob", "payload": {"subType": "INIT"}}))
        .unwrap();
    assert_eq!(alice.wait_error(WAIT).unwrap(), "recipient is offline");
    assert_eq!(server.store.count_offline("bob").unwrap(), 0);
}

both_stores!(signalling_to_an_offline_user_is_refused);

/// A session is ready at its first chat command: relays wait until then.
fn relays_wait_for_the_first_command_of_a_new_session(backend: Backend) {
    let Some(server) = TestServer::start(backend) else {
        return;
    };
    let (mut alice, _) = user(&server, "alice");
    let bob_id = common::register(&server, "bob");
    let mut bob = Client::connect(&server.url).unwrap();
    assert!(bob.login_challenge("bob", &bob_id).unwrap().is_success());
    alice.wait_user_online("bob", WAIT).unwrap();
    let payload = json!({"iv": "AAAA", "ct": "BBBB", "mac": "CCCC"});
    alice
        .send(&json!({"type": "E2E_MSG", "to": "bob", "payload": payload}))
        .unwrap();
    let early = bob.connection().recv(Duration::from_millis(300)).unwrap();
    assert!(
        early
            .as_ref()
            .is_none_or(|c| c["type"] == "user_list_update"),
        "nothing but presence before bob's first command: {early:?}"
    );
    bob.send(&json!({"type": "REQUEST_USER_LIST"})).unwrap();
    let relayed = wait_command(&mut bob, "E2E_MSG");
    assert_eq!(relayed["from"], "alice");
    assert_eq!(
        relayed["payload"], payload,
        "payload relayed as the same JSON"
    );
}

both_stores!(relays_wait_for_the_first_command_of_a_new_session);

fn wait_command(client: &mut Client, kind: &str) -> serde_json::Map<String, serde_json::Value> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let command = client
            .connection()
            .recv(left)
            .unwrap()
            .expect("command in time");
        if command["type"] == kind {
            return command;
        }
    }
}

/// Messages waiting for a connection that closes go to the offline store.
fn undelivered_messages_of_a_closing_connection_are_stored(backend: Backend) {
    let Some(server) = TestServer::start(backend) else {
        return;
    };
    let (mut alice, _) = user(&server, "alice");
    let bob_id = common::register(&server, "bob");
    let mut bob = Client::connect(&server.url).unwrap();
    assert!(bob.login_challenge("bob", &bob_id).unwrap().is_success());
    alice.wait_user_online("bob", WAIT).unwrap();
    for n in 0..3 {
        alice
            .send(&json!({"type": "E2E_MSG", "to": "bob", "payload": {"n": n}}))
            .unwrap();
    }
    // bob never sent a command: the three wait for him. A round trip on
    // alice's connection makes sure the dispatcher has them; now he leaves.
    alice.get_public_key("alice").unwrap();
    alice
        .wait_for(WAIT, |e| matches!(e, Event::PublicKey { .. }))
        .unwrap();
    bob.close();
    wait_until(|| server.store.count_offline("bob").unwrap() == 3);
    let mut bob = Client::connect(&server.url).unwrap();
    assert!(bob.login_challenge("bob", &bob_id).unwrap().is_success());
    bob.send(&json!({"type": "REQUEST_OFFLINE_MESSAGES"}))
        .unwrap();
    for n in 0..3 {
        let message = wait_command(&mut bob, "E2E_MSG");
        assert_eq!(message["payload"], json!({"n": n}));
        assert_eq!(message["from"], "alice");
    }
}

both_stores!(undelivered_messages_of_a_closing_connection_are_stored);

/// Keys are renewed along the way (threshold lowered) without losing or
/// reordering anything, with our clients (`immediate`) and mobile-like ones
/// (output hold after the response).
fn key_renewal_loses_nothing(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |config| {
        config.renewal.min_frames = 3;
        config.renewal.max_frames = 6;
    }) else {
        return;
    };
    let (mut alice, _) = user(&server, "alice");
    let bob_id = common::register(&server, "bob");
    let options = chat_server::client::connection::ConnectOptions {
        renewal: chat_server::channel::ClientRenewalMode::MobileLike,
        ..Default::default()
    };
    let mut bob = Client::connect_with(&server.url, &options).unwrap();
    assert!(bob.login_challenge("bob", &bob_id).unwrap().is_success());
    bob.open_home().unwrap();
    Client::pair_e2ee(&mut alice, &mut bob, WAIT).unwrap();
    // A burst, then ping-pong: renewals progress as clients read.
    for n in 0..20 {
        alice.send_message("bob", &format!("burst {n}")).unwrap();
    }
    for n in 0..20 {
        assert_eq!(
            bob.wait_message_from("alice", WAIT).unwrap(),
            format!("burst {n}")
        );
    }
    for n in 0..30 {
        alice.send_message("bob", &format!("a{n}")).unwrap();
        assert_eq!(
            bob.wait_message_from("alice", WAIT).unwrap(),
            format!("a{n}")
        );
        bob.send_message("alice", &format!("b{n}")).unwrap();
        assert_eq!(
            alice.wait_message_from("bob", WAIT).unwrap(),
            format!("b{n}")
        );
    }
    let (a, b) = (
        alice.connection().renewals_completed(),
        bob.connection().renewals_completed(),
    );
    assert!(a >= 3 && b >= 3, "renewals: alice {a}, bob {b}");
    // A client-initiated renewal is answered too (once any renewal the
    // server started is complete: only one may be in flight).
    let deadline = std::time::Instant::now() + WAIT;
    let mut before = alice.connection().renewals_completed();
    while !alice.connection().request_renewal().unwrap() {
        assert!(
            std::time::Instant::now() < deadline,
            "a renewal stays in flight"
        );
        alice.poll(Duration::from_millis(20)).unwrap();
        before = alice.connection().renewals_completed();
    }
    alice.request_user_list().unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while alice.connection().renewals_completed() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "no RENEGOTIATE_RESPONSE"
        );
        alice.poll(Duration::from_millis(20)).unwrap();
    }
}

both_stores!(key_renewal_loses_nothing);

/// A burst of logins reaches an online user as few coalesced lists, the
/// last of which shows everyone online.
fn presence_bursts_are_coalesced(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |config| {
        config.presence_window = Duration::from_millis(300);
    }) else {
        return;
    };
    let (mut observer, _) = user(&server, "observer");
    let names: Vec<String> = (0..8).map(|n| format!("user{n}")).collect();
    let identities: Vec<_> = names.iter().map(|n| common::register(&server, n)).collect();
    observer.drain_events(Duration::from_millis(400)).unwrap();
    let clients: Vec<Client> = std::thread::scope(|scope| {
        let handles: Vec<_> = names
            .iter()
            .zip(&identities)
            .map(|(name, id)| scope.spawn(|| login(&server, name, id)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let lists: Vec<Vec<(String, bool)>> = observer
        .drain_events(Duration::from_millis(1000))
        .unwrap()
        .into_iter()
        .filter_map(|event| match event {
            Event::UserList(list) => Some(list),
            _ => None,
        })
        .collect();
    assert!(
        !lists.is_empty() && lists.len() <= 3,
        "8 logins within one window give 1-3 broadcasts, got {}",
        lists.len()
    );
    let last = lists.last().unwrap();
    assert_eq!(last.len(), 9);
    assert!(last.iter().all(|(_, online)| *online), "{last:?}");
    drop(clients);
}

both_stores!(presence_bursts_are_coalesced);

/// Lists among `events`.
fn user_lists(events: Vec<Event>) -> Vec<Vec<(String, bool)>> {
    events
        .into_iter()
        .filter_map(|event| match event {
            Event::UserList(list) => Some(list),
            _ => None,
        })
        .collect()
}

/// In a login burst, a user who asks for the list gets the broadcast that
/// follows the burst (one list, everyone online), not a list of its own
/// as well; a login on its own is answered at once.
fn list_requests_of_a_login_burst_get_the_broadcast(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |config| {
        config.presence_window = Duration::from_millis(2500);
        config.list_burst = 4;
    }) else {
        return;
    };
    let names: Vec<String> = (0..8).map(|n| format!("burst{n}")).collect();
    let identities: Vec<_> = names.iter().map(|n| common::register(&server, n)).collect();
    let late = common::register(&server, "late");
    // Let the registrations' broadcast go (to nobody online).
    std::thread::sleep(Duration::from_millis(2600));
    let mut clients: Vec<Client> = std::thread::scope(|scope| {
        let handles: Vec<_> = names
            .iter()
            .zip(&identities)
            .map(|(name, id)| {
                let url = &server.url;
                scope.spawn(move || {
                    let mut client = Client::connect(url).unwrap();
                    let reply = client.login_challenge(name, id).unwrap();
                    assert!(reply.is_success(), "login {name}: {reply:?}");
                    client
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Eight logins waiting for one broadcast: a burst. Now the clients
    // open their home screens (user list, then offline messages).
    for client in &mut clients {
        client.open_home().unwrap();
    }
    // The broadcast goes 2.5 s after the first login; then every list is in.
    let mut wait = Duration::from_millis(3500);
    for (client, name) in clients.iter_mut().zip(&names) {
        let lists = user_lists(client.drain_events(wait).unwrap());
        wait = Duration::from_millis(300);
        assert_eq!(lists.len(), 1, "{name}: only the broadcast: {lists:?}");
        let online = lists[0].iter().filter(|(_, online)| *online).count();
        assert_eq!(online, 8, "{name}: {:?}", lists[0]);
    }
    let mut alone = login(&server, "late", &late);
    alone.request_user_list().unwrap();
    let list = alone.wait_user_list(WAIT).expect("at once");
    assert!(list.contains(&("late".to_string(), true)), "{list:?}");
    assert_eq!(list.iter().filter(|(_, online)| *online).count(), 9);
}

both_stores!(list_requests_of_a_login_burst_get_the_broadcast);

/// The client library's low-level calls, as the benchmark uses them: a
/// short wait after a long one still ends on time (the socket's read
/// timeout is set again when it must shrink), messages queued with
/// `queue_sealed_text` leave only at `flush`, and `recv_text` hands them
/// over as JSON text, in order.
#[test]
fn queued_messages_leave_at_flush_and_short_waits_end_on_time() {
    let server = TestServer::start(Backend::Sqlite).expect("SQLite server");
    let (mut alice, _) = user(&server, "alice");
    let (mut bob, _) = user(&server, "bob");
    alice
        .wait_user_online("bob", WAIT)
        .expect("alice sees bob online");
    // Whatever presence still sends bob, until a long wait finds nothing.
    while bob
        .connection()
        .recv(Duration::from_millis(600))
        .expect("bob reads")
        .is_some()
    {}
    let started = std::time::Instant::now();
    assert!(bob
        .connection()
        .recv_text(Duration::from_millis(20))
        .unwrap()
        .is_none());
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "a 20 ms wait after a 600 ms one took {:?}",
        started.elapsed()
    );

    for n in 0..3 {
        let text = json!({"type": "E2E_MSG", "to": "bob", "payload": {"n": n}}).to_string();
        alice.connection().queue_sealed_text(&text).unwrap();
    }
    assert!(
        bob.connection()
            .recv_text(Duration::from_millis(300))
            .unwrap()
            .is_none(),
        "queued messages were sent before flush"
    );
    alice.connection().flush().unwrap();
    for n in 0..3 {
        let text = bob
            .connection()
            .recv_text(WAIT)
            .unwrap()
            .expect("a queued message arrives after flush");
        let relayed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(relayed["type"], "E2E_MSG", "{text}");
        assert_eq!(relayed["from"], "alice", "{text}");
        assert_eq!(relayed["payload"], json!({"n": n}), "{text}");
    }
}
