//! Limits and liveness (issue 3, README.md, "Limits and security"): each test shows a limit
//! holding and the server still serving others afterwards. Settings are
//! short here so the suite stays fast.

mod common;

use std::time::{Duration, Instant};

use chat_server::client::Client;
use common::{user, Backend, TestServer, WAIT};
use serde_json::json;

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "not in time: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Asserts that a deadline of `timeout` was not cut short. `lasted` is
/// measured from before the client's last act, so it can only be longer
/// than the server's own interval, however slow the machine; the 10 ms allow
/// for the kernel's timer granularity.
fn not_cut_short(lasted: Duration, timeout: Duration) {
    assert!(
        lasted + Duration::from_millis(10) >= timeout,
        "closed after {lasted:?}, before its {timeout:?} deadline"
    );
}

fn envelope() -> serde_json::Value {
    json!({"iv": "aXY=", "ct": "Y3Q=", "mac": "bWFj"})
}

/// A client that stops reading never answers pings: after the idle timeout
/// its session is closed, it is shown offline, and the next message to it
/// goes to the offline store. A client that reads (and so answers pings)
/// stays online through the same time.
fn silent_client_is_closed_and_its_messages_go_offline(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |config| {
        config.ping_interval = Duration::from_millis(100);
        config.idle_timeout = Duration::from_millis(600);
    }) else {
        return;
    };
    let (mut alice, _) = user(&server, "alice");
    // Bob's last frame is sent inside `user`: his idle clock starts after this.
    let before_bob = Instant::now();
    let (bob, _) = user(&server, "bob");
    alice.wait_user_online("bob", WAIT).expect("bob online");
    // Bob never reads again; alice keeps reading (and answering pings).
    alice
        .wait_user_offline("bob", WAIT)
        .expect("bob shown offline");
    not_cut_short(before_bob.elapsed(), Duration::from_millis(600));
    alice
        .send(&json!({"type": "E2E_MSG", "to": "bob", "payload": envelope()}))
        .unwrap();
    wait_until("message stored", || {
        server.store.count_offline("bob").unwrap() == 1
    });
    // Alice outlived several idle timeouts and is still served.
    std::thread::sleep(Duration::from_millis(300));
    alice.drain_events(Duration::from_millis(700)).unwrap();
    alice.request_user_list().unwrap();
    let users = alice.wait_user_list(WAIT).unwrap();
    assert!(users.contains(&("alice".to_string(), true)), "{users:?}");
    drop(bob);
}

both_stores!(silent_client_is_closed_and_its_messages_go_offline);

/// Sends `bytes` one at a time, `gap` apart, until the server closes the
/// socket; returns how long the server let it go on.
fn trickle_until_closed(url: &str, bytes: &[u8], gap: Duration) -> Duration {
    use std::io::{Read, Write};
    let address = url.trim_start_matches("ws://");
    let started = Instant::now();
    let mut socket = std::net::TcpStream::connect(address).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    for byte in bytes.iter().cycle() {
        assert!(started.elapsed() < WAIT, "slow client never cut");
        if socket.write_all(&[*byte]).is_err() {
            break;
        }
        let mut buffer = [0u8; 512];
        match socket.read(&mut buffer) {
            Ok(0) => break,
            Ok(_) => {}
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
        std::thread::sleep(gap);
    }
    started.elapsed()
}

/// A slowloris upgrade (a byte every 50 ms, never finished) is cut at the
/// handshake deadline, not kept alive by each byte; others still log in.
fn slowloris_is_cut_at_the_handshake_deadline(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |config| {
        config.handshake_timeout = Duration::from_millis(500);
    }) else {
        return;
    };
    let request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let lasted = trickle_until_closed(&server.url, request, Duration::from_millis(50));
    not_cut_short(lasted, Duration::from_millis(500));
    assert!(lasted < Duration::from_millis(2500), "{lasted:?}");
    let (mut alice, _) = user(&server, "alice");
    alice.request_user_list().unwrap();
    alice.wait_user_list(WAIT).unwrap();
}

both_stores!(slowloris_is_cut_at_the_handshake_deadline);

/// Upgrade done but no `HANDSHAKE_START`: closed at the handshake deadline.
/// Channel up but no auth command: closed at the auth deadline (1008).
fn silent_clients_are_closed_at_their_deadlines(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |config| {
        config.handshake_timeout = Duration::from_millis(300);
        config.auth_timeout = Duration::from_millis(500);
    }) else {
        return;
    };
    let options = chat_server::client::connection::ConnectOptions::default();
    let mut raw =
        chat_server::client::connection::ClientConnection::connect_websocket(&server.url, &options)
            .unwrap();
    raw.get_mut()
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let started = Instant::now();
    loop {
        match raw.read() {
            Ok(tungstenite::Message::Close(_)) => {}
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    let lasted = started.elapsed();
    assert!(lasted < Duration::from_millis(1200), "{lasted:?}");

    let started = Instant::now();
    let mut idle = Client::connect(&server.url).unwrap();
    let close = idle.wait_closed(WAIT).unwrap();
    assert_eq!(close.code, 1008, "{close:?}");
    not_cut_short(started.elapsed(), Duration::from_millis(500));
    let (mut alice, _) = user(&server, "alice");
    alice.request_user_list().unwrap();
    alice.wait_user_list(WAIT).unwrap();
}

both_stores!(silent_clients_are_closed_at_their_deadlines);

fn active(server: &TestServer) -> usize {
    server.handle.as_ref().unwrap().active_connections()
}

/// Total limit 3: with three sessions open the 4th and 5th sockets are
/// refused at accept, the three still chat, and once one closes a new
/// connection is accepted again.
fn connections_beyond_the_total_limit_are_refused(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |config| {
        config.max_connections = 3;
    }) else {
        return;
    };
    let mut identities = Vec::new();
    for name in ["alice", "bob", "carol"] {
        wait_until("registration connections closed", || active(&server) == 0);
        identities.push(common::register(&server, name));
    }
    wait_until("registration connections closed", || active(&server) == 0);
    let mut alice = common::login(&server, "alice", &identities[0]);
    let mut bob = common::login(&server, "bob", &identities[1]);
    let mut carol = common::login(&server, "carol", &identities[2]);
    assert_eq!(active(&server), 3);
    assert!(Client::connect(&server.url).is_err(), "4th accepted");
    assert!(Client::connect(&server.url).is_err(), "5th accepted");
    Client::pair_e2ee(&mut alice, &mut bob, WAIT).expect("peer handshake");
    alice.send_message("bob", "still here").unwrap();
    assert_eq!(bob.wait_message_from("alice", WAIT).unwrap(), "still here");
    carol.close();
    wait_until("carol's connection ended", || active(&server) == 2);
    let mut carol = common::login(&server, "carol", &identities[2]);
    carol.request_user_list().unwrap();
    carol.wait_user_list(WAIT).unwrap();
}

both_stores!(connections_beyond_the_total_limit_are_refused);

/// Per-address limit 2 (everything here comes from 127.0.0.1).
fn connections_beyond_the_per_address_limit_are_refused(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |config| {
        config.max_connections_per_address = 2;
    }) else {
        return;
    };
    let first = Client::connect(&server.url).unwrap();
    let second = Client::connect(&server.url).unwrap();
    assert!(Client::connect(&server.url).is_err(), "3rd accepted");
    drop(first);
    drop(second);
    wait_until("connections ended", || active(&server) == 0);
    let (mut alice, _) = user(&server, "alice");
    alice.request_user_list().unwrap();
    alice.wait_user_list(WAIT).unwrap();
}

both_stores!(connections_beyond_the_per_address_limit_are_refused);

/// One argon2 at a time, two waiters: a burst of concurrent password logins
/// each gets exactly one answer (success, or `SERVER_ERROR` "server busy"),
/// none hangs, and logins work again afterwards.
fn argon2_work_is_bounded_and_every_login_is_answered(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |config| {
        config.hash_concurrency = 1;
        config.hash_queue = 2;
        config.hash.memory_kib = 4096;
    }) else {
        return;
    };
    let names: Vec<String> = (0..10).map(|n| format!("user{n}")).collect();
    for name in &names {
        common::register(&server, name);
    }
    let url = server.url.clone();
    let replies: Vec<_> = std::thread::scope(|scope| {
        let threads: Vec<_> = names
            .iter()
            .map(|name| {
                let url = url.clone();
                scope.spawn(move || {
                    let identity = chat_server::client::identity::Identity::generate();
                    let mut client = Client::connect(&url).unwrap();
                    let reply = client
                        .login_password(name, &common::password_of(name), Some(&identity))
                        .expect("one answer in time");
                    // Nothing else follows the answer in the auth phase.
                    let more = client.connection().recv(Duration::from_millis(200));
                    (
                        reply,
                        more.map(|m| m.map(|m| m["type"].clone())).ok().flatten(),
                    )
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let mut busy = 0;
    for (reply, more) in &replies {
        if !reply.is_success() {
            assert_eq!(reply.status, "SERVER_ERROR", "{reply:?}");
            assert_eq!(reply.message.as_deref(), Some("server busy"), "{reply:?}");
            busy += 1;
            assert!(more.is_none(), "a second answer: {more:?}");
        }
    }
    assert!(busy < names.len(), "nobody got a turn");
    let mut client = Client::connect(&server.url).unwrap();
    let reply = client
        .login_password(
            "user0",
            &common::password_of("user0"),
            Some(&chat_server::client::identity::Identity::generate()),
        )
        .unwrap();
    assert!(reply.is_success(), "{reply:?}");
}

both_stores!(argon2_work_is_bounded_and_every_login_is_answered);

/// Registration refuses names with whitespace or control characters and
/// passwords under 6 bytes (SERVER_ERROR, connection kept); a valid
/// registration on the same connection then works.
fn registration_rules_are_enforced(backend: Backend) {
    let Some(server) = TestServer::start(backend) else {
        return;
    };
    let identity = chat_server::client::identity::Identity::generate();
    let mut client = Client::connect(&server.url).unwrap();
    for (name, password) in [("ana maria", "long enough"), ("ana", "short")] {
        let reply = client.register(name, password, &identity).unwrap();
        assert_eq!(reply.status, "SERVER_ERROR", "{name}: {reply:?}");
    }
    let reply = client.register("ana", "long enough", &identity).unwrap();
    assert!(reply.is_success(), "{reply:?}");
}

both_stores!(registration_rules_are_enforced);

/// Command rate limit (small settings): a flooding client is told once
/// ("rate limit exceeded") and, as it keeps going, closed with 1008; typing
/// notices have their own smaller bucket; the other users keep chatting.
fn flooding_client_is_told_then_closed(backend: Backend) {
    use chat_server::rate::{BucketSettings, RateSettings};
    let Some(server) = TestServer::start_with(backend, |config| {
        config.rate = RateSettings {
            commands: BucketSettings {
                per_sec: 0.1,
                burst: 20.0,
            },
            typing: BucketSettings {
                per_sec: 1.0,
                burst: 2.0,
            },
            strikes: 5,
        };
    }) else {
        return;
    };
    let (mut alice, _) = user(&server, "alice");
    let (mut bob, _) = user(&server, "bob");
    let (mut carol, _) = user(&server, "carol");
    Client::pair_e2ee(&mut bob, &mut carol, WAIT).expect("bob and carol paired");
    // Alice's login used 2 tokens (home screen). 18 more pass, 1 is told,
    // 5 are dropped, the next closes. Exactly that many: a socket closed
    // with unread input is reset, which could lose the notice in flight.
    for _ in 0..(18 + 1 + 5 + 1) {
        alice
            .send(&json!({"type": "REQUEST_USER_LIST"}))
            .expect("sent");
    }
    let notice = alice.wait_error(WAIT).expect("a rate-limit notice");
    assert_eq!(notice, "rate limit exceeded");
    let close = alice.wait_closed(WAIT).expect("closed");
    assert_eq!(close.code, 1008, "{close:?}");
    // Typing notices: 2 pass, the third is over its own bucket.
    for _ in 0..3 {
        bob.typing("carol", true).unwrap();
    }
    assert_eq!(bob.wait_error(WAIT).unwrap(), "rate limit exceeded");
    bob.send_message("carol", "still here").unwrap();
    assert_eq!(carol.wait_message_from("bob", WAIT).unwrap(), "still here");
    carol.send_message("bob", "me too").unwrap();
    assert_eq!(bob.wait_message_from("carol", WAIT).unwrap(), "me too");
}

both_stores!(flooding_client_is_told_then_closed);

/// Offline quota 3: a fourth message for an offline recipient is refused
/// with `ERROR` "mailbox full" (not stored, not silently dropped); other
/// mailboxes still take messages, and once the recipient has read its
/// mailbox it takes messages again.
fn offline_quota_refuses_with_mailbox_full(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |config| {
        config.offline_quota = 3;
    }) else {
        return;
    };
    let (mut alice, _) = user(&server, "alice");
    let bob = common::register(&server, "bob");
    common::register(&server, "carol");
    let to = |name: &str| json!({"type": "E2E_MSG", "to": name, "payload": envelope()});
    for _ in 0..3 {
        alice.send(&to("bob")).unwrap();
    }
    wait_until("three stored", || {
        server.store.count_offline("bob").unwrap() == 3
    });
    alice.send(&to("bob")).unwrap();
    assert_eq!(alice.wait_error(WAIT).unwrap(), "mailbox full");
    assert_eq!(server.store.count_offline("bob").unwrap(), 3);
    alice.send(&to("carol")).unwrap();
    wait_until("carol's mailbox takes one", || {
        server.store.count_offline("carol").unwrap() == 1
    });
    // Bob reads his mailbox; then it takes messages again.
    let mut bob_client = common::login(&server, "bob", &bob);
    wait_until("bob's mailbox read", || {
        server.store.count_offline("bob").unwrap() == 0
    });
    bob_client.close();
    alice.wait_user_offline("bob", WAIT).unwrap();
    alice.send(&to("bob")).unwrap();
    wait_until("bob's mailbox takes one again", || {
        server.store.count_offline("bob").unwrap() == 1
    });
    common::assert_server_works(&server);
}

both_stores!(offline_quota_refuses_with_mailbox_full);
