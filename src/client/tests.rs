//! Tests of `ClientConnection` and `Client` against a small in-process fake
//! relay (server side of the channel built from `crypto` directly): login,
//! channel renewal, close codes, and two clients doing the peer handshake
//! and exchanging messages through it.

use std::collections::HashMap;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

use super::*;
use crate::crypto::{b64_decode, b64_encode, random_bytes, verify_ed25519, KeyPair, SymmetricKeys};

const T: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Shared {
    keys: HashMap<String, String>,
    online: HashMap<String, Sender<Value>>,
}

struct Fake {
    url: String,
    immediate_inits: Arc<AtomicUsize>,
}

/// Server side of one connection.
struct Conn {
    ws: WebSocket<TcpStream>,
    keys: SymmetricKeys,
    old: Option<SymmetricKeys>,
    sent: usize,
    renew_every: usize,
    pending_request: bool,
}

impl Conn {
    fn send(&mut self, v: &Value) {
        let iv = random_bytes::<16>();
        let (ct, tag) = self.keys.seal(&iv, v.to_string().as_bytes());
        let frame =
            json!({"iv": b64_encode(&iv), "payload": b64_encode(&ct), "hmac": b64_encode(&tag)});
        self.ws.send(Message::Text(frame.to_string())).unwrap();
        self.sent += 1;
        if self.renew_every > 0
            && self.sent.is_multiple_of(self.renew_every)
            && !self.pending_request
        {
            self.pending_request = true;
            let req = json!({"type": "RENEGOTIATE_REQUEST", "public_key": b64_encode(&KeyPair::generate().public_bytes()), "salt": b64_encode(&random_bytes::<32>())});
            let iv = random_bytes::<16>();
            let (ct, tag) = self.keys.seal(&iv, req.to_string().as_bytes());
            let frame = json!({"iv": b64_encode(&iv), "payload": b64_encode(&ct), "hmac": b64_encode(&tag)});
            self.ws.send(Message::Text(frame.to_string())).unwrap();
        }
    }

    fn open(&mut self, text: &str) -> Option<Map<String, Value>> {
        let v: Value = serde_json::from_str(text).ok()?;
        let iv = b64_decode(v["iv"].as_str()?).ok()?;
        let ct = b64_decode(v["payload"].as_str()?).ok()?;
        let tag = b64_decode(v["hmac"].as_str()?).ok()?;
        let pt = match self.keys.open(&iv, &ct, &tag) {
            Ok(pt) => {
                self.old = None;
                pt
            }
            Err(_) => self.old.as_ref()?.open(&iv, &ct, &tag).ok()?,
        };
        serde_json::from_slice(&pt).ok()
    }

    fn close(&mut self, code: u16, reason: &str) {
        let _ = self.ws.close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: reason.to_string().into(),
        }));
        let _ = self.ws.flush();
    }
}

fn start_fake(renew_every: usize) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "ws://127.0.0.1:{}/any/path",
        listener.local_addr().unwrap().port()
    );
    let shared = Arc::new(Mutex::new(Shared::default()));
    let immediate_inits = Arc::new(AtomicUsize::new(0));
    let (s2, i2) = (shared.clone(), immediate_inits.clone());
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (s3, i3) = (s2.clone(), i2.clone());
            thread::spawn(move || serve(stream, s3, i3, renew_every));
        }
    });
    Fake {
        url,
        immediate_inits,
    }
}

fn serve(
    stream: TcpStream,
    shared: Arc<Mutex<Shared>>,
    immediate: Arc<AtomicUsize>,
    renew_every: usize,
) {
    let mut ws = tungstenite::accept(stream).unwrap();
    let Ok(Message::Text(first)) = ws.read() else {
        return;
    };
    let start: Value = serde_json::from_str(&first).unwrap();
    if start["type"] != "HANDSHAKE_START" {
        let _ = ws.close(Some(CloseFrame {
            code: CloseCode::from(1002),
            reason: "bad handshake".into(),
        }));
        let _ = ws.flush();
        return;
    }
    let kp = KeyPair::generate();
    let shared_secret = kp
        .agree(&b64_decode(start["public_key"].as_str().unwrap()).unwrap())
        .unwrap();
    let keys = SymmetricKeys::derive(
        &shared_secret,
        &b64_decode(start["salt"].as_str().unwrap()).unwrap(),
        b"handshake_info",
    );
    ws.send(Message::Text(
        json!({"type": "HANDSHAKE_RESPONSE", "public_key": b64_encode(&kp.public_bytes())})
            .to_string(),
    ))
    .unwrap();
    ws.get_ref()
        .set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    let mut c = Conn {
        ws,
        keys,
        old: None,
        sent: 0,
        renew_every,
        pending_request: false,
    };
    let (tx, rx): (Sender<Value>, Receiver<Value>) = channel();
    let mut me: Option<String> = None;
    let mut nonce: Vec<u8> = Vec::new();
    loop {
        while let Ok(v) = rx.try_recv() {
            c.send(&v);
        }
        let text = match c.ws.read() {
            Ok(Message::Text(t)) => t,
            Ok(Message::Binary(_)) => return c.close(1002, "binary frame"),
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                continue
            }
            Err(_) => break,
        };
        let Some(cmd) = c.open(&text) else {
            return c.close(1008, "bad frame");
        };
        let kind = cmd["type"].as_str().unwrap_or_default().to_string();
        let reply = |c: &mut Conn, v: Value| c.send(&v);
        match kind.as_str() {
            "RENEGOTIATE_INIT" => {
                if cmd.get("immediate") == Some(&json!(true)) {
                    immediate.fetch_add(1, Ordering::SeqCst);
                }
                let kp = KeyPair::generate();
                let s = kp
                    .agree(&b64_decode(cmd["public_key"].as_str().unwrap()).unwrap())
                    .unwrap();
                let new = SymmetricKeys::derive(
                    &s,
                    &b64_decode(cmd["salt"].as_str().unwrap()).unwrap(),
                    b"handshake_info",
                );
                let resp = json!({"type": "RENEGOTIATE_RESPONSE", "public_key": b64_encode(&kp.public_bytes())});
                let renew = std::mem::replace(&mut c.renew_every, 0);
                c.send(&resp);
                c.renew_every = renew;
                c.old = Some(std::mem::replace(&mut c.keys, new));
                c.pending_request = false;
            }
            "REGISTER" => {
                let name = cmd["username"].as_str().unwrap().to_string();
                let mut sh = shared.lock().unwrap();
                let status = match sh.keys.entry(name) {
                    std::collections::hash_map::Entry::Occupied(_) => {
                        "REGISTER_FAILED:USERNAME_EXISTS"
                    }
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(cmd["public_key"].as_str().unwrap().to_string());
                        "REGISTER_SUCCESS"
                    }
                };
                drop(sh);
                reply(&mut c, json!({"type": "auth_response", "status": status}));
            }
            "LOGIN_CHALLENGE_REQUEST" => {
                nonce = random_bytes::<32>().to_vec();
                reply(
                    &mut c,
                    json!({"type": "LOGIN_CHALLENGE", "nonce": b64_encode(&nonce)}),
                );
            }
            "LOGIN_CHALLENGE_RESPONSE" => {
                let name = cmd["username"].as_str().unwrap().to_string();
                let key = shared
                    .lock()
                    .unwrap()
                    .keys
                    .get(&name)
                    .cloned()
                    .unwrap_or_default();
                let sig = b64_decode(cmd["signature"].as_str().unwrap()).unwrap();
                if verify_ed25519(&b64_decode(&key).unwrap(), &nonce, &sig) {
                    shared
                        .lock()
                        .unwrap()
                        .online
                        .insert(name.clone(), tx.clone());
                    me = Some(name);
                    reply(
                        &mut c,
                        json!({"type": "auth_response", "status": "LOGIN_SUCCESS"}),
                    );
                    broadcast_users(&shared);
                } else {
                    reply(
                        &mut c,
                        json!({"type": "auth_response", "status": "LOGIN_FAILED", "message": "Invalid signature"}),
                    );
                    return c.close(1008, "login failed");
                }
            }
            "REQUEST_USER_LIST" => broadcast_users(&shared),
            "GET_PUBLIC_KEY" => {
                let name = cmd["target_username"].as_str().unwrap_or_default();
                match shared.lock().unwrap().keys.get(name) {
                    Some(k) => reply(
                        &mut c,
                        json!({"type": "PUBLIC_KEY_RESPONSE", "username": name, "public_key": k}),
                    ),
                    None => reply(
                        &mut c,
                        json!({"type": "ERROR", "message": "User not found"}),
                    ),
                }
            }
            "E2E_HANDSHAKE" | "E2E_AUTH" | "E2E_MSG" | "START_TYPING" | "STOP_TYPING" => {
                let to = cmd["to"].as_str().unwrap_or_default();
                let from = me.clone().unwrap_or_default();
                let out = if kind.ends_with("_TYPING") {
                    json!({"type": "TYPING_STATUS_UPDATE", "from": from, "isTyping": kind == "START_TYPING"})
                } else {
                    json!({"type": kind, "from": from, "payload": cmd["payload"]})
                };
                let target = shared.lock().unwrap().online.get(to).cloned();
                match target {
                    Some(t) => {
                        let _ = t.send(out);
                    }
                    None => reply(&mut c, json!({"type": "ERROR", "message": "user offline"})),
                }
            }
            "CLOSE_ME" => return c.close(1008, "asked to"),
            _ => reply(
                &mut c,
                json!({"type": "ERROR", "message": "unknown command"}),
            ),
        }
    }
    if let Some(name) = me {
        shared.lock().unwrap().online.remove(&name);
        broadcast_users(&shared);
    }
}

fn broadcast_users(shared: &Arc<Mutex<Shared>>) {
    let sh = shared.lock().unwrap();
    let mut names: Vec<&String> = sh.keys.keys().collect();
    names.sort();
    let users: Vec<Value> = names
        .iter()
        .map(|n| json!({"username": n, "isOnline": sh.online.contains_key(*n)}))
        .collect();
    let msg = json!({"type": "user_list_update", "users": users});
    for tx in sh.online.values() {
        let _ = tx.send(msg.clone());
    }
}

#[test]
fn register_login_renewal_and_close_code() {
    let fake = start_fake(3);
    let (mut alice, _id) = Client::register_and_login(&fake.url, "alice", "pw").unwrap();
    let mut dup = Client::connect(&fake.url).unwrap();
    let reply = dup.register("alice", "pw", &Identity::generate()).unwrap();
    assert_eq!(reply.status, REGISTER_FAILED_USERNAME_EXISTS);
    assert!(matches!(reply.into_result(), Err(ClientError::Auth { .. })));
    // A wrong key fails the challenge, then the server closes with 1008.
    let mut mallory = Client::connect(&fake.url).unwrap();
    let reply = mallory
        .login_challenge("alice", &Identity::generate())
        .unwrap();
    assert_eq!(
        (reply.status.as_str(), reply.message.as_deref()),
        (LOGIN_FAILED, Some("Invalid signature"))
    );
    assert_eq!(mallory.wait_closed(T).unwrap().code, 1008);
    assert!(matches!(
        mallory.send(&json!({"type": "X"})),
        Err(ClientError::Closed { code: 1008, .. })
    ));
    // Many round trips: the fake renews every 3 frames it sends.
    alice.wait_user_online("alice", T).unwrap();
    for _ in 0..10 {
        alice.request_user_list().unwrap();
        let users = alice.wait_user_list(T).unwrap();
        assert_eq!(users, vec![("alice".to_string(), true)]);
    }
    assert!(alice.connection().renewals_completed() >= 3);
    assert_eq!(
        fake.immediate_inits.load(Ordering::SeqCst) as u64,
        alice.connection().renewals_completed()
    );
    alice.send(&json!({"type": "NOPE"})).unwrap();
    assert_eq!(alice.wait_error(T).unwrap(), "unknown command");
    alice.send(&json!({"type": "CLOSE_ME"})).unwrap();
    let info = alice.wait_closed(T).unwrap();
    assert_eq!((info.code, info.reason.as_str()), (1008, "asked to"));
    assert_eq!(alice.connection().close_info(), Some(&info));
}

#[test]
fn raw_frames_and_bad_first_frame() {
    let fake = start_fake(0);
    let mut ws =
        ClientConnection::connect_websocket(&fake.url, &ConnectOptions::default()).unwrap();
    ws.send(Message::Text("{\"type\":\"nope\"}".into()))
        .unwrap();
    loop {
        match ws.read() {
            Ok(Message::Close(Some(f))) => {
                assert_eq!(u16::from(f.code), 1002);
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let mut conn = ClientConnection::connect(&fake.url).unwrap();
    conn.send_raw_text("{\"iv\":\"AAAA\"}").unwrap();
    assert_eq!(conn.wait_closed(T).unwrap().code, 1008);
    let mut conn = ClientConnection::connect(&fake.url).unwrap();
    conn.send_raw_binary(&[1, 2, 3]).unwrap();
    assert_eq!(conn.wait_closed(T).unwrap().code, 1002);
    assert!(matches!(
        Client::connect("ws://127.0.0.1:1"),
        Err(ClientError::Io(_))
    ));
}

#[test]
fn two_clients_talk_end_to_end() {
    let fake = start_fake(4);
    let (mut alice, _) = Client::register_and_login(&fake.url, "alice", "pw").unwrap();
    let (mut bob, bob_id) = Client::register_and_login(&fake.url, "bob", "pw").unwrap();
    alice.wait_user_online("bob", T).unwrap();
    assert_eq!(
        alice.fetch_public_key("bob", T).unwrap(),
        bob_id.public_key_b64()
    );
    assert!(matches!(
        alice.fetch_public_key("zed", T),
        Err(ClientError::Protocol(_))
    ));
    // Messages sent before the handshake are queued behind it.
    alice.send_message("bob", "first").unwrap();
    alice.send_message("bob", "second").unwrap();
    Client::pair_e2ee(&mut alice, &mut bob, T).unwrap();
    assert_eq!(bob.wait_message_from("alice", T).unwrap(), "first");
    assert_eq!(bob.wait_message_from("alice", T).unwrap(), "second");
    alice.wait_peer_ready("bob", T).unwrap();
    bob.wait_peer_ready("alice", T).unwrap();
    for i in 0..20 {
        bob.send_message("alice", &format!("b{i}")).unwrap();
        alice.send_message("bob", &format!("a{i}")).unwrap();
    }
    for i in 0..20 {
        assert_eq!(alice.wait_message_from("bob", T).unwrap(), format!("b{i}"));
        assert_eq!(bob.wait_message_from("alice", T).unwrap(), format!("a{i}"));
    }
    bob.typing("alice", true).unwrap();
    assert!(alice.wait_typing_from("bob", T).unwrap());
    // A new handshake from the other side works too.
    Client::pair_e2ee(&mut bob, &mut alice, T).unwrap();
    bob.start_e2ee("alice").unwrap();
    Client::pair_e2ee(&mut bob, &mut alice, T).unwrap();
    // Two threads: each side waits on its own.
    let t = thread::spawn(move || {
        bob.start_e2ee("alice").unwrap();
        bob.wait_peer_ready("alice", T).unwrap();
        bob.send_message("alice", "after re-key").unwrap();
        bob
    });
    assert_eq!(alice.wait_message_from("bob", T).unwrap(), "after re-key");
    let mut bob = t.join().unwrap();
    let events = alice.drain_events(Duration::from_millis(100)).unwrap();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::PeerFailed { .. } | Event::PeerDropped { .. })),
        "{events:?}"
    );
    assert!(
        alice.connection().renewals_completed() > 0 && bob.connection().renewals_completed() > 0
    );
    bob.close();
    alice.wait_user_offline("bob", T).unwrap();
    // Offline peer: sealed with the stored keys (the fake has no store: ERROR).
    alice.send_message("bob", "later").unwrap();
    assert_eq!(alice.wait_error(T).unwrap(), "user offline");
}

#[test]
fn mobile_like_renewal_and_client_initiated_renewal() {
    let fake = start_fake(2);
    let options = ConnectOptions {
        renewal: RenewalMode::MobileLike,
        ..ConnectOptions::default()
    };
    let mut c = Client::connect_with(&fake.url, &options).unwrap();
    let id = Identity::generate();
    c.register("carol", "pw", &id)
        .unwrap()
        .into_result()
        .unwrap();
    for _ in 0..6 {
        c.send(&json!({"type": "NOPE"})).unwrap();
        assert_eq!(c.wait_error(T).unwrap(), "unknown command");
    }
    let renewed = c.connection().renewals_completed();
    assert!(renewed >= 2, "{renewed}");
    assert_eq!(
        fake.immediate_inits.load(Ordering::SeqCst),
        0,
        "mobile-like INITs carry no immediate"
    );

    // Unprompted renewal from an immediate-mode client.
    let fake = start_fake(0);
    let mut conn = ClientConnection::connect(&fake.url).unwrap();
    assert!(conn.request_renewal().unwrap());
    assert!(!conn.request_renewal().unwrap(), "one in flight at a time");
    conn.send(&json!({"type": "NOPE"})).unwrap();
    let reply = conn.recv(T).unwrap().unwrap();
    assert_eq!(reply["type"], "ERROR");
    assert_eq!(conn.renewals_completed(), 1);
    assert_eq!(fake.immediate_inits.load(Ordering::SeqCst), 1);
    assert!(conn.recv(Duration::from_millis(50)).unwrap().is_none());
    conn.close().unwrap();
    assert_eq!(conn.close_info().map(|c| c.code), Some(1000));
}
