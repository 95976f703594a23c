//! Fuzz-style abuse: while two well-behaved users chat end to end, 8 threads
//! open 300 hostile connections (malformed first frames, low-order keys,
//! bad-HMAC frames, oversize frames, binary frames, half-closed sockets, raw
//! TCP garbage). Every message must arrive in order, and afterwards the
//! server must be back to the two connections and to its thread count.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use chat_server::channel::{ClientChannel, Frame};
use chat_server::client::connection::ClientStream;
use chat_server::client::{Client, ClientConnection, ConnectOptions, RekeyPolicy};
use chat_server::crypto::{b64_encode, random_bytes};
use common::{user, Backend, TestServer, WAIT};
use serde_json::json;
use tungstenite::{Message, WebSocket};

const ABUSERS: usize = 8;
const ABUSIVE_CONNECTIONS: usize = 300;
const MESSAGES: usize = 200;
/// How long one abusive connection may stay open before the server ends it.
const END_WITHIN: Duration = Duration::from_secs(15);

/// The order-8 Curve25519 point (a low-order X25519 key).
const ORDER_8_POINT: &str = "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800";

fn order_8_point() -> Vec<u8> {
    (0..32)
        .map(|i| u8::from_str_radix(&ORDER_8_POINT[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn thread_count() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("Threads: in /proc/self/status")
}

fn upgrade(url: &str) -> WebSocket<ClientStream> {
    ClientConnection::connect_websocket(url, &ConnectOptions::default()).expect("WebSocket upgrade")
}

/// Reads until the server ends the connection (close frame, EOF or reset);
/// panics when it is still open after [`END_WITHIN`].
fn until_closed(ws: &mut WebSocket<ClientStream>, what: &str) {
    let deadline = Instant::now() + END_WITHIN;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{what}: the server left it open");
        ws.get_ref().set_read_timeout(Some(left)).unwrap();
        match ws.read() {
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

/// A failed send means the server already closed: fine for an abuser.
fn send(ws: &mut WebSocket<ClientStream>, message: Message) {
    let _ = ws.send(message);
}

/// A real channel handshake over `ws`; `None` if the server closed first.
fn handshake(ws: &mut WebSocket<ClientStream>) -> Option<ClientChannel> {
    let (handshake, start) = ClientChannel::start();
    ws.send(Message::Text(start)).ok()?;
    ws.get_ref().set_read_timeout(Some(END_WITHIN)).unwrap();
    match ws.read().ok()? {
        Message::Text(response) => Some(handshake.finish(&response).expect("HANDSHAKE_RESPONSE")),
        other => panic!("a non-text HANDSHAKE_RESPONSE: {other:?}"),
    }
}

fn abuse(url: &str, n: usize) {
    let kind = n % 7;
    let what = [
        "malformed",
        "low-order",
        "bad HMAC",
        "oversize",
        "binary",
        "half-closed",
    ];
    match kind {
        0 => {
            let mut ws = upgrade(url);
            let junk = ["not json", "{}", "[1,2]", r#"{"type":"LOGIN"}"#, ""];
            send(&mut ws, Message::Text(junk[(n / 7) % junk.len()].into()));
            until_closed(&mut ws, what[kind]);
        }
        1 => {
            let mut ws = upgrade(url);
            let start = json!({"type": "HANDSHAKE_START",
                               "public_key": b64_encode(&order_8_point()),
                               "salt": b64_encode(&random_bytes::<32>())});
            send(&mut ws, Message::Text(start.to_string()));
            until_closed(&mut ws, what[kind]);
        }
        2 => {
            let mut ws = upgrade(url);
            if let Some(mut channel) = handshake(&mut ws) {
                let mut frame =
                    Frame::parse(&channel.seal(r#"{"type":"REQUEST_USER_LIST"}"#)).unwrap();
                frame.tag[0] ^= 0x80;
                send(&mut ws, Message::Text(frame.to_json()));
            }
            until_closed(&mut ws, what[kind]);
        }
        3 => {
            let mut ws = upgrade(url);
            send(&mut ws, Message::Text("x".repeat(9 * 1024)));
            until_closed(&mut ws, what[kind]);
        }
        4 => {
            let mut ws = upgrade(url);
            send(&mut ws, Message::Binary(vec![0x42; 64]));
            until_closed(&mut ws, what[kind]);
        }
        5 => {
            let mut ws = upgrade(url);
            ws.get_ref().shutdown(Shutdown::Write).unwrap();
            until_closed(&mut ws, what[kind]);
        }
        _ => {
            let address = url.trim_start_matches("ws://");
            let mut stream = TcpStream::connect(address).expect("TCP connect");
            let garbage: Vec<u8> = (0..512u32).map(|i| (i * 7 + 13) as u8).collect();
            let _ = stream.write_all(b"\x16\x03\x01\x02\x00\x01\x00");
            let _ = stream.write_all(&garbage);
            let _ = stream.write_all(b"\r\n\r\n");
            stream.set_read_timeout(Some(END_WITHIN)).unwrap();
            let mut sink = [0u8; 1024];
            loop {
                match stream.read(&mut sink) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
    }
}

#[test]
fn abusive_connections_do_not_disturb_chat_or_leak() {
    let server = TestServer::start(Backend::Sqlite).expect("SQLite server");
    let (mut alice, _) = user(&server, "alice");
    let (mut bob, _) = user(&server, "bob");
    alice.wait_user_online("bob", WAIT).expect("bob online");
    // Both users run in this one thread, so a peer re-key (which needs the
    // other side polled while a sender waits) would stall: keep one key.
    alice.set_rekey_policy(RekeyPolicy::Never);
    bob.set_rekey_policy(RekeyPolicy::Never);
    Client::pair_e2ee(&mut alice, &mut bob, WAIT).expect("peer handshake");
    let handle = server.handle.as_ref().unwrap();
    assert_eq!(handle.active_connections(), 2);
    let threads_before = thread_count();

    let started = Instant::now();
    let abusers: Vec<_> = (0..ABUSERS)
        .map(|t| {
            let url = server.url.clone();
            thread::spawn(move || {
                for n in (t..ABUSIVE_CONNECTIONS).step_by(ABUSERS) {
                    abuse(&url, n);
                }
            })
        })
        .collect();

    for n in 0..MESSAGES {
        alice.send_message("bob", &format!("a{n}")).unwrap();
        bob.send_message("alice", &format!("b{n}")).unwrap();
        assert_eq!(
            bob.wait_message_from("alice", WAIT)
                .unwrap_or_else(|e| panic!("message a{n}: {e:?}")),
            format!("a{n}")
        );
        assert_eq!(
            alice
                .wait_message_from("bob", WAIT)
                .unwrap_or_else(|e| panic!("message b{n}: {e:?}")),
            format!("b{n}")
        );
    }
    for abuser in abusers {
        abuser.join().expect("an abuser thread panicked");
    }
    eprintln!("abuse and chat took {:?}", started.elapsed());

    // Connection threads end after their lingering close; give them time.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let active = handle.active_connections();
        let threads = thread_count();
        if active == 2 && threads <= threads_before + 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leak: {active} active connections (want 2), \
             {threads} threads (started with {threads_before})"
        );
        thread::sleep(Duration::from_millis(50));
    }

    // The two users still chat.
    alice.send_message("bob", "after").unwrap();
    assert_eq!(bob.wait_message_from("alice", WAIT).unwrap(), "after");
}
