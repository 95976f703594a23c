//! Idle connections cost no CPU: each connection thread sleeps in poll(2)
//! until its socket, its outbox or a channel deadline needs it. Its own
//! test binary, so no other test's work is counted.

mod common;

use std::time::Duration;

use chat_server::client::Client;
use common::{Backend, TestServer};

/// CPU time this process has used (the server runs in it), from /proc.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<u64> = after_name
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|field| field.parse().unwrap())
        .collect();
    let ticks_per_second = 100; // USER_HZ on Linux
    Duration::from_millis((fields[0] + fields[1]) * 1000 / ticks_per_second)
}

/// Idle connections sleep in poll: after key renewals with output holds
/// (mobile-like clients), an idle second costs next to no CPU.
fn idle_connections_cost_no_cpu(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |config| {
        config.renewal.min_frames = 2;
        config.renewal.max_frames = 2;
        config.renewal.hold = Duration::from_millis(50);
    }) else {
        return;
    };
    let options = chat_server::client::connection::ConnectOptions {
        renewal: chat_server::channel::ClientRenewalMode::MobileLike,
        ..Default::default()
    };
    let mut clients = Vec::new();
    for name in ["ana", "bia", "caio"] {
        let id = common::register(&server, name);
        let mut client = Client::connect_with(&server.url, &options).unwrap();
        assert!(client.login_challenge(name, &id).unwrap().is_success());
        for _ in 0..6 {
            client.request_user_list().unwrap();
            client.poll(Duration::from_millis(30)).unwrap();
        }
        assert!(
            client.connection().renewals_completed() >= 1,
            "a renewal with a hold happened"
        );
        // A last renewal the client never follows with a frame: the
        // server's hold can only end by its timer.
        let renewals = client.connection().renewals_completed();
        client.connection().request_renewal().unwrap();
        while client.connection().renewals_completed() == renewals {
            client.poll(Duration::from_millis(20)).unwrap();
        }
        clients.push(client);
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = process_cpu();
    std::thread::sleep(Duration::from_millis(1500));
    let used = process_cpu() - before;
    eprintln!("idle server used {used:?} of CPU in 1.5 s");
    assert!(
        used < Duration::from_millis(100),
        "idle server used {used:?} of CPU in 1.5 s"
    );
}

#[test]
fn idle_connections_cost_no_cpu_sqlite() {
    idle_connections_cost_no_cpu(Backend::Sqlite);
}
