//! Offline message expiry: with a tiny `offline_max_age` the background
//! thread deletes waiting messages by itself while the server keeps serving,
//! and the recipient then finds nothing waiting.

mod common;

use std::time::{Duration, Instant};

use chat_server::client::Event;
use common::{assert_server_works, login, register, Backend, TestServer};

/// Longer than the age (1 s), the database clock's whole seconds and a few
/// purge intervals (200 ms each).
const EXPIRY_WAIT: Duration = Duration::from_secs(20);

fn expired_offline_messages_are_purged_in_the_background(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |config| {
        config.offline_max_age = Some(Duration::from_secs(1));
    }) else {
        return;
    };
    let bob = register(&server, "bob");
    for n in 0..3 {
        server
            .store
            .store_offline("alice", "bob", &format!("{{\"n\":{n}}}"))
            .expect("stored");
    }
    let deadline = Instant::now() + EXPIRY_WAIT;
    while server.store.count_offline("bob").expect("count") > 0 {
        assert!(Instant::now() < deadline, "offline messages never expired");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_server_works(&server);
    let mut bob = login(&server, "bob", &bob);
    let events = bob
        .drain_events(Duration::from_millis(300))
        .expect("events");
    assert!(
        !events.iter().any(|e| matches!(e, Event::Message { .. })),
        "expired messages delivered: {events:?}"
    );
}

both_stores!(expired_offline_messages_are_purged_in_the_background);
