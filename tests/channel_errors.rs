//! Bad input on the secure channel (PROTOCOL.md 2.5-2.7): the server closes
//! with 1002 (malformed frame) or 1008 (failed HMAC, rule broken), sends
//! nothing before `HANDSHAKE_RESPONSE` and nothing unencrypted after it, and
//! keeps serving everybody else. The channel is driven by hand here (keys
//! derived in the test) so that frames can be broken on purpose.

mod common;

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use aes::cipher::block_padding::{NoPadding, Pkcs7};
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use chat_server::channel::Frame;
use chat_server::client::connection::ClientStream;
use chat_server::client::{ClientConnection, ConnectOptions};
use chat_server::crypto::{b64_decode, b64_encode, random_bytes, KeyPair, SymmetricKeys};
use common::{assert_server_works, register, user, Backend, TestServer, WAIT};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tungstenite::{Message, WebSocket};

type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;

/// The order-8 Curve25519 point (a low-order X25519 key).
const ORDER_8_POINT: &str = "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800";

fn order_8_point() -> Vec<u8> {
    (0..32)
        .map(|i| u8::from_str_radix(&ORDER_8_POINT[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn upgrade(server: &TestServer) -> WebSocket<ClientStream> {
    ClientConnection::connect_websocket(&server.url, &ConnectOptions::default())
        .expect("WebSocket upgrade")
}

/// Reads until the server closes; returns its close code, or an error text
/// when the socket ended without a close frame (or stayed open).
fn close_code(ws: &mut WebSocket<ClientStream>) -> Result<u16, String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("still open".into());
        }
        ws.get_ref().set_read_timeout(Some(left)).unwrap();
        match ws.read() {
            Ok(Message::Close(frame)) => return Ok(frame.map_or(1005, |f| f.code.into())),
            // Sealed frames queued before the close (user lists) may come first.
            Ok(Message::Text(text)) if text.starts_with("{\"iv\":") => {}
            Ok(Message::Text(text)) => return Err(format!("a text frame instead: {text}")),
            Ok(Message::Binary(_)) => return Err("a binary frame instead".into()),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(format!("ended without a close frame: {e}")),
        }
    }
}

fn handshake_start(public_key: &[u8], salt: &[u8]) -> String {
    json!({"type": "HANDSHAKE_START", "public_key": b64_encode(public_key),
           "salt": b64_encode(salt)})
    .to_string()
}

// ----- a hand-driven channel ----------------------------------------------------

/// One connection whose channel the test runs itself.
struct Manual {
    ws: WebSocket<ClientStream>,
    keys: SymmetricKeys,
    aes_key: [u8; 32],
    mac_key: [u8; 32],
}

impl Manual {
    /// Upgrade and handshake.
    fn connect(server: &TestServer) -> Manual {
        Manual::handshake(upgrade(server))
    }

    fn handshake(mut ws: WebSocket<ClientStream>) -> Manual {
        let pair = KeyPair::generate();
        let salt = random_bytes::<32>();
        ws.send(Message::Text(handshake_start(&pair.public_bytes(), &salt)))
            .unwrap();
        ws.get_ref().set_read_timeout(Some(WAIT)).unwrap();
        let Message::Text(first) = ws.read().expect("HANDSHAKE_RESPONSE") else {
            panic!("the first frame is not text");
        };
        let response: Value = serde_json::from_str(&first).expect("plain JSON");
        assert_eq!(response["type"], "HANDSHAKE_RESPONSE", "{first}");
        let server_public = b64_decode(response["public_key"].as_str().unwrap()).unwrap();
        assert_eq!(server_public.len(), 32);
        let shared = pair.agree(&server_public).unwrap();
        let keys = SymmetricKeys::derive(&shared, &salt, b"handshake_info");
        let mut okm = [0u8; 64];
        Hkdf::<Sha256>::new(Some(&salt), &shared)
            .expand(b"handshake_info", &mut okm)
            .unwrap();
        Manual {
            ws,
            keys,
            aes_key: okm[..32].try_into().unwrap(),
            mac_key: okm[32..].try_into().unwrap(),
        }
    }

    fn send_text(&mut self, text: &str) {
        self.ws.send(Message::Text(text.to_string())).unwrap();
    }

    /// Seals with the crate's own channel keys.
    fn seal(&self, plaintext: &str) -> String {
        Frame::seal(&self.keys, plaintext.as_bytes())
    }

    fn send(&mut self, command: &Value) {
        let frame = self.seal(&command.to_string());
        self.send_text(&frame);
    }

    /// A frame sealed with the test's raw keys: `blocks` is encrypted as it
    /// is (no padding added), with a valid HMAC.
    fn seal_raw(&self, blocks: &[u8]) -> String {
        let iv = random_bytes::<16>();
        let ciphertext = Aes256CbcEnc::new(&self.aes_key.into(), &iv.into())
            .encrypt_padded_vec_mut::<NoPadding>(blocks);
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.mac_key).unwrap();
        mac.update(&iv);
        mac.update(&ciphertext);
        let tag = mac.finalize().into_bytes();
        json!({"iv": b64_encode(&iv), "payload": b64_encode(&ciphertext),
               "hmac": b64_encode(&tag)})
        .to_string()
    }

    /// The next command from the server, opened with the test's raw keys.
    /// Every frame must be an encrypted frame in padded url-safe base64.
    fn recv(&mut self) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "nothing from the server");
            self.ws.get_ref().set_read_timeout(Some(left)).unwrap();
            match self.ws.read() {
                Ok(Message::Text(text)) => return self.open(&text),
                Ok(Message::Close(frame)) => panic!("closed: {frame:?}"),
                Ok(Message::Binary(_)) => panic!("binary frame from the server"),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// The next command of type `kind` (user lists in between are skipped).
    fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let command = self.recv();
            if command["type"] == kind {
                return command;
            }
            assert_eq!(command["type"], "user_list_update", "expected {kind}");
        }
    }

    fn open(&self, text: &str) -> Value {
        let frame: Value = serde_json::from_str(text)
            .unwrap_or_else(|_| panic!("server frame is not JSON: {text}"));
        assert!(
            frame.get("type").is_none(),
            "plaintext from the server: {text}"
        );
        let field = |name: &str| {
            let encoded = frame[name]
                .as_str()
                .unwrap_or_else(|| panic!("no {name}: {text}"));
            assert!(
                !encoded.contains(['+', '/']) && encoded.len().is_multiple_of(4),
                "{name} is not padded url-safe base64: {encoded}"
            );
            b64_decode(encoded).unwrap()
        };
        let (iv, ciphertext, tag) = (field("iv"), field("payload"), field("hmac"));
        assert_eq!(iv.len(), 16);
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.mac_key).unwrap();
        mac.update(&iv);
        mac.update(&ciphertext);
        mac.verify_slice(&tag).expect("server frame HMAC");
        let iv: [u8; 16] = iv.try_into().unwrap();
        let plaintext = Aes256CbcDec::new(&self.aes_key.into(), &iv.into())
            .decrypt_padded_vec_mut::<Pkcs7>(&ciphertext)
            .expect("server frame padding");
        serde_json::from_slice(&plaintext).expect("server plaintext is JSON")
    }

    /// Challenge login as `name`.
    fn login(&mut self, name: &str, identity: &chat_server::client::Identity) {
        self.send(&json!({"type": "LOGIN_CHALLENGE_REQUEST", "username": name}));
        let challenge = self.recv_type("LOGIN_CHALLENGE");
        let nonce = b64_decode(challenge["nonce"].as_str().unwrap()).unwrap();
        self.send(
            &json!({"type": "LOGIN_CHALLENGE_RESPONSE", "username": name,
                          "signature": b64_encode(&identity.sign(&nonce))}),
        );
        let reply = self.recv_type("auth_response");
        assert_eq!(reply["status"], "LOGIN_SUCCESS", "{reply}");
        self.send(&json!({"type": "REQUEST_USER_LIST"}));
        self.recv_type("user_list_update");
    }

    fn close_code(&mut self) -> Result<u16, String> {
        close_code(&mut self.ws)
    }
}

// ----- the first frame -------------------------------------------------------------

// A refused first frame gets a close frame with its code (PROTOCOL.md 2.5),
// not a bare reset.
fn first_frame_is_refused(backend: Backend, first: Message, expected: u16) {
    let Some(server) = TestServer::start(backend) else {
        return;
    };
    let mut ws = upgrade(&server);
    let shown = format!("{first:?}");
    ws.send(first).unwrap();
    let closed = close_code(&mut ws);
    assert_server_works(&server);
    assert_eq!(closed, Ok(expected), "first frame {shown}");
}

fn first_frame_not_json(backend: Backend) {
    first_frame_is_refused(backend, Message::Text("hello, server".into()), 1002);
}

both_stores!(first_frame_not_json);

fn first_frame_not_handshake_start(backend: Backend) {
    let salt = b64_encode(&[7u8; 32]);
    let key = b64_encode(&KeyPair::generate().public_bytes());
    let login = json!({"type": "LOGIN", "username": "a", "password": "b", "public_key": key,
                       "salt": salt});
    first_frame_is_refused(backend, Message::Text(login.to_string()), 1008);
}

both_stores!(first_frame_not_handshake_start);

fn first_frame_without_salt(backend: Backend) {
    let key = b64_encode(&KeyPair::generate().public_bytes());
    let start = json!({"type": "HANDSHAKE_START", "public_key": key});
    first_frame_is_refused(backend, Message::Text(start.to_string()), 1002);
}

both_stores!(first_frame_without_salt);

fn handshake_key_of_31_bytes(backend: Backend) {
    let start = handshake_start(&[9u8; 31], &[7u8; 32]);
    first_frame_is_refused(backend, Message::Text(start), 1008);
}

both_stores!(handshake_key_of_31_bytes);

fn handshake_key_all_zeros(backend: Backend) {
    let start = handshake_start(&[0u8; 32], &[7u8; 32]);
    first_frame_is_refused(backend, Message::Text(start), 1008);
}

both_stores!(handshake_key_all_zeros);

fn handshake_key_of_order_8(backend: Backend) {
    let start = handshake_start(&order_8_point(), &[7u8; 32]);
    first_frame_is_refused(backend, Message::Text(start), 1008);
}

both_stores!(handshake_key_of_order_8);

fn first_frame_binary(backend: Backend) {
    let start = handshake_start(&KeyPair::generate().public_bytes(), &[7u8; 32]);
    first_frame_is_refused(backend, Message::Binary(start.into_bytes()), 1002);
}

both_stores!(first_frame_binary);

fn nothing_is_sent_before_handshake_response(backend: Backend) {
    let Some(server) = TestServer::start(backend) else {
        return;
    };
    let mut ws = upgrade(&server);
    ws.get_ref()
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    match ws.read() {
        Err(tungstenite::Error::Io(e))
            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("something arrived before HANDSHAKE_START: {other:?}"),
    }
    // The first frame is the HANDSHAKE_RESPONSE, and the channel works.
    let mut manual = Manual::handshake(ws);
    manual.send(&json!({"type": "LOGIN_CHALLENGE_REQUEST", "username": "nobody"}));
    assert_eq!(manual.recv()["type"], "LOGIN_CHALLENGE");
    assert_server_works(&server);
}

both_stores!(nothing_is_sent_before_handshake_response);

// ----- after the handshake ---------------------------------------------------------

/// Runs `attack` on a connection right after the handshake and on one that
/// is logged in (with a bystander online), expecting the close `expected`;
/// then checks that the bystander and new users are still served.
fn refused_after_handshake(backend: Backend, expected: u16, attack: impl Fn(&mut Manual)) {
    let Some(server) = TestServer::start(backend) else {
        return;
    };
    let (mut bystander, _) = user(&server, "bystander");

    // Before login.
    let mut manual = Manual::connect(&server);
    // The channel works with the test's keys ...
    manual.send(&json!({"type": "LOGIN_CHALLENGE_REQUEST", "username": "nobody"}));
    assert_eq!(manual.recv()["type"], "LOGIN_CHALLENGE");
    // ... until the bad frame.
    attack(&mut manual);
    assert_eq!(manual.close_code(), Ok(expected), "before login");
    assert_server_works(&server);

    // Logged in.
    let victim = register(&server, "mallory");
    let mut manual = Manual::connect(&server);
    manual.login("mallory", &victim);
    bystander.wait_user_online("mallory", WAIT).unwrap();
    attack(&mut manual);
    assert_eq!(manual.close_code(), Ok(expected), "logged in");
    bystander
        .wait_user_offline("mallory", WAIT)
        .expect("the closed session goes offline");
    bystander.request_user_list().unwrap();
    bystander
        .wait_user_list(WAIT)
        .expect("bystander still served");
    assert_server_works(&server);
}

fn frame_with_bad_hmac(backend: Backend) {
    refused_after_handshake(backend, 1008, |manual| {
        let frame = manual.seal(&json!({"type": "REQUEST_USER_LIST"}).to_string());
        let mut frame: Value = serde_json::from_str(&frame).unwrap();
        let mut tag = b64_decode(frame["hmac"].as_str().unwrap()).unwrap();
        tag[5] ^= 0x01;
        frame["hmac"] = json!(b64_encode(&tag));
        manual.send_text(&frame.to_string());
    });
}

both_stores!(frame_with_bad_hmac);

fn frame_with_flipped_ciphertext(backend: Backend) {
    refused_after_handshake(backend, 1008, |manual| {
        let frame = manual.seal(&json!({"type": "REQUEST_USER_LIST"}).to_string());
        let mut frame: Value = serde_json::from_str(&frame).unwrap();
        let mut ciphertext = b64_decode(frame["payload"].as_str().unwrap()).unwrap();
        ciphertext[0] ^= 0x80;
        frame["payload"] = json!(b64_encode(&ciphertext));
        manual.send_text(&frame.to_string());
    });
}

both_stores!(frame_with_flipped_ciphertext);

fn plaintext_json_instead_of_a_frame(backend: Backend) {
    refused_after_handshake(backend, 1002, |manual| {
        manual.send_text(&json!({"type": "REQUEST_USER_LIST"}).to_string());
    });
}

both_stores!(plaintext_json_instead_of_a_frame);

fn valid_hmac_but_bad_padding(backend: Backend) {
    refused_after_handshake(backend, 1002, |manual| {
        // The raw keys are right: a frame sealed by hand with PKCS7 works.
        let mut padded = json!({"type": "LOGIN_CHALLENGE_REQUEST", "username": "x"})
            .to_string()
            .into_bytes();
        let pad = 16 - padded.len() % 16;
        padded.extend(std::iter::repeat_n(pad as u8, pad));
        let frame = manual.seal_raw(&padded);
        manual.send_text(&frame);
        let reply = loop {
            let reply = manual.recv();
            if reply["type"] != "user_list_update" {
                break reply;
            }
        };
        assert!(
            reply["type"] == "LOGIN_CHALLENGE" || reply["type"] == "ERROR",
            "{reply}"
        );
        // Now the last byte is no valid PKCS7 padding.
        let mut bad = b"{\"type\":\"REQUEST_USER_LIST\"}".to_vec();
        bad.resize(32, 0);
        bad[31] = 0x00;
        let frame = manual.seal_raw(&bad);
        manual.send_text(&frame);
    });
}

both_stores!(valid_hmac_but_bad_padding);

fn sealed_plaintext_not_json(backend: Backend) {
    refused_after_handshake(backend, 1002, |manual| {
        let frame = manual.seal("this is not JSON");
        manual.send_text(&frame);
    });
}

both_stores!(sealed_plaintext_not_json);

fn binary_frame_after_handshake(backend: Backend) {
    refused_after_handshake(backend, 1002, |manual| {
        let frame = manual.seal(&json!({"type": "REQUEST_USER_LIST"}).to_string());
        manual.ws.send(Message::Binary(frame.into_bytes())).unwrap();
    });
}

both_stores!(binary_frame_after_handshake);

fn unsolicited_renegotiate_response(backend: Backend) {
    refused_after_handshake(backend, 1008, |manual| {
        let key = b64_encode(&KeyPair::generate().public_bytes());
        manual.send(&json!({"type": "RENEGOTIATE_RESPONSE", "public_key": key}));
    });
}

both_stores!(unsolicited_renegotiate_response);

fn renegotiate_init_with_zero_key(backend: Backend) {
    refused_after_handshake(backend, 1008, |manual| {
        manual.send(
            &json!({"type": "RENEGOTIATE_INIT", "public_key": b64_encode(&[0u8; 32]),
                            "salt": b64_encode(&[7u8; 32]), "immediate": true}),
        );
    });
}

both_stores!(renegotiate_init_with_zero_key);

fn renegotiate_init_with_order_8_key(backend: Backend) {
    refused_after_handshake(backend, 1008, |manual| {
        manual.send(
            &json!({"type": "RENEGOTIATE_INIT", "public_key": b64_encode(&order_8_point()),
                            "salt": b64_encode(&[7u8; 32])}),
        );
    });
}

both_stores!(renegotiate_init_with_order_8_key);

fn every_server_message_is_encrypted(backend: Backend) {
    let Some(server) = TestServer::start(backend) else {
        return;
    };
    let (mut bob, _) = user(&server, "bob");
    let alice = register(&server, "alice");
    // Manual::recv refuses anything that is not a sealed frame, so every
    // answer below (auth phase included) is checked.
    let mut manual = Manual::connect(&server);
    manual.send(&json!({"type": "REQUEST_USER_LIST"}));
    let reply = manual.recv();
    assert_eq!(reply["type"], "auth_response");
    assert_eq!(reply["status"], "SERVER_ERROR");
    manual.login("alice", &alice);
    manual.send(&json!({"type": "NO_SUCH_COMMAND"}));
    assert_eq!(
        manual.recv_type("ERROR"),
        json!({"type": "ERROR", "message": "unknown command"})
    );
    // Still up: routing both ways works.
    manual.send(&json!({"type": "GET_PUBLIC_KEY", "target_username": "nobody"}));
    assert_eq!(manual.recv_type("ERROR")["message"], "User not found");
    bob.send(&json!({"type": "E2E_MSG", "to": "alice",
                     "payload": {"iv": "a", "ct": "b", "mac": "c"}}))
        .unwrap();
    let relayed = manual.recv_type("E2E_MSG");
    assert_eq!(relayed["from"], "bob");
    manual.send(&json!({"type": "START_TYPING", "to": "bob"}));
    assert!(bob.wait_typing_from("alice", WAIT).unwrap());
    drop(manual);
    bob.wait_user_offline("alice", WAIT).unwrap();
    assert_server_works(&server);
}

both_stores!(every_server_message_is_encrypted);
