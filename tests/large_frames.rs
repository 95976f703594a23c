//! Frames far larger than the server's 16 KiB write pieces: the server
//! sends them as fragmented WebSocket messages (RFC 6455 section 5.4), and a
//! client must see exactly the message that was sent, online or from the
//! offline store, with the connection still working afterwards.

mod common;

use std::time::Duration;

use chat_server::client::Client;
use common::{user, Backend, TestServer, WAIT};
use serde_json::{json, Value};

/// A payload whose sealed frame is ~200 KB, under the 256 KiB message limit.
fn big_payload(tag: &str) -> Value {
    let pad: String = (0..150_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    json!({"tag": tag, "pad": pad})
}

/// Reads raw commands until an `E2E_MSG` comes; returns its payload.
fn next_message(client: &mut Client) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        let cmd = client
            .connection()
            .recv(Duration::from_millis(100))
            .expect("connection stays up");
        if let Some(cmd) = cmd {
            if cmd.get("type").and_then(Value::as_str) == Some("E2E_MSG") {
                return cmd["payload"].clone();
            }
        }
    }
    panic!("no E2E_MSG within {WAIT:?}");
}

/// Sends an `E2E_MSG` with `payload` to `to`.
fn send_message(from: &mut Client, to: &str, payload: &Value) {
    from.connection()
        .send(&json!({"type": "E2E_MSG", "to": to, "payload": payload}))
        .expect("send");
}

fn a_large_message_arrives_whole_online_and_offline(backend: Backend) {
    let Some(server) = TestServer::start(backend) else {
        return;
    };
    let (mut alice, _) = user(&server, "alice");
    let (mut bob, bob_id) = user(&server, "bob");
    alice.wait_user_online("bob", WAIT).expect("bob online");
    let online = big_payload("online");
    send_message(&mut alice, "bob", &online);
    assert_eq!(next_message(&mut bob), online);
    // The link still carries small frames both ways.
    send_message(&mut bob, "alice", &json!({"small": 1}));
    assert_eq!(next_message(&mut alice), json!({"small": 1}));
    bob.close();
    alice.wait_user_offline("bob", WAIT).expect("bob offline");
    let stored = big_payload("stored");
    send_message(&mut alice, "bob", &stored);
    let mut bob = common::login(&server, "bob", &bob_id);
    assert_eq!(next_message(&mut bob), stored);
    common::assert_server_works(&server);
}

both_stores!(a_large_message_arrives_whole_online_and_offline);
