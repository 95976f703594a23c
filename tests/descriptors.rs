//! Open files per connection (README.md, "Open files"): a logged-in client
//! costs the server one descriptor, its socket; the dispatcher wakes the
//! connection's thread with a signal, not a descriptor of its own. The
//! server runs in this process, so each client counts twice here: the
//! server's socket and the client's.
//!
//! The only test in this file: no other test opens descriptors meanwhile.

mod common;

use std::time::{Duration, Instant};

use chat_server::client::Client;
use common::{login, register, Backend, TestServer, WAIT};

/// Logged-in clients held at once.
const CLIENTS: usize = 40;

/// Descriptors this process has open.
fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// The descriptor count once it has not changed for a while (closing
/// connections linger up to a second on the server side).
fn settled_descriptors() -> usize {
    let deadline = Instant::now() + WAIT;
    let mut last = open_descriptors();
    let mut steady = 0;
    while steady < 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let now = open_descriptors();
        steady = if now == last { steady + 1 } else { 0 };
        last = now;
    }
    last
}

#[test]
fn each_logged_in_client_costs_the_server_one_descriptor() {
    let server = TestServer::start(Backend::Sqlite).expect("SQLite server");
    let names: Vec<String> = (0..CLIENTS).map(|n| format!("fd{n}")).collect();
    let identities: Vec<_> = names.iter().map(|name| register(&server, name)).collect();
    let before = settled_descriptors();
    let mut clients: Vec<Client> = names
        .iter()
        .zip(&identities)
        .map(|(name, identity)| login(&server, name, identity))
        .collect();
    // Every session is live: the first client sees the last one online.
    let last = &names[CLIENTS - 1];
    clients[0]
        .wait_user_online(last, WAIT)
        .expect("last online");
    let held = settled_descriptors() - before;
    assert!(
        held <= 2 * CLIENTS + CLIENTS / 4,
        "{held} descriptors for {CLIENTS} clients: more than the two sockets each"
    );
    assert!(held >= 2 * CLIENTS, "{held} descriptors: clients not held?");
    // And the woken threads still relay at once.
    let (first, rest) = clients.split_at_mut(1);
    let (a, b) = (&mut first[0], &mut rest[CLIENTS - 2]);
    Client::pair_e2ee(a, b, WAIT).expect("pairing");
    a.send_message(last, "one descriptor").expect("send");
    assert_eq!(
        b.wait_message_from(&names[0], WAIT).expect("message"),
        "one descriptor"
    );
}
