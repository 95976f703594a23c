//! Channel tests: known-answer frames from `vectors.json`, the handshake, and
//! every malformed or forged input with its close code. Renewal is tested in
//! `renewal_tests.rs`; the shared helpers live here.

use super::messages::{self, Object};
use super::*;
use crate::crypto::test_vectors::{array16, array32, bytes, text, LOW_ORDER_POINTS};
use crate::crypto::{b64_encode, KeyPair, SymmetricKeys};
use serde_json::json;
use std::time::{Duration, Instant};

pub(crate) fn policy(frames: u32, secs: u64, hold_ms: u64) -> RenewalPolicy {
    RenewalPolicy {
        min_frames: frames,
        max_frames: frames,
        min_secs: secs,
        max_secs: secs,
        hold: Duration::from_millis(hold_ms),
    }
}

/// A server and a client channel after a real in-memory handshake.
pub(crate) fn connect(
    policy: RenewalPolicy,
    mode: ClientRenewalMode,
    now: Instant,
) -> (ServerChannel, ClientChannel) {
    let (handshake, start) = ClientChannel::start();
    let (server, response) = ServerChannel::accept_handshake(&start, policy, now).unwrap();
    let client = handshake.with_mode(mode).finish(&response).unwrap();
    (server, client)
}

pub(crate) fn object(value: serde_json::Value) -> Object {
    match value {
        serde_json::Value::Object(object) => object,
        other => panic!("not an object: {other}"),
    }
}

/// Client -> server, expecting a command back.
pub(crate) fn client_to_server(
    client: &mut ClientChannel,
    server: &mut ServerChannel,
    now: Instant,
) {
    let message = json!({"type": "PING", "n": 1});
    let frame = client.seal(&message.to_string());
    assert_eq!(
        server.open(&frame, now).unwrap(),
        Inbound::Command(object(message))
    );
}

/// Server -> client, expecting a command back.
pub(crate) fn server_to_client(
    server: &mut ServerChannel,
    client: &mut ClientChannel,
    now: Instant,
) {
    let message = json!({"type": "PONG"});
    let frame = server.seal(&message.to_string(), now);
    assert_eq!(
        client.open(&frame).unwrap(),
        ClientInbound::Command(object(message))
    );
}

fn transport_keys() -> SymmetricKeys {
    SymmetricKeys::derive(
        &array32(&["transport", "shared_secret"]),
        &bytes(&["transport", "salt"]),
        b"handshake_info",
    )
}

fn vector_server(now: Instant) -> ServerChannel {
    ServerChannel::from_keys(transport_keys(), RenewalPolicy::default(), now)
}

fn expect_error(result: Result<Inbound, ChannelError>, error: ChannelError, code: u16) {
    match result {
        Err(actual) => {
            assert_eq!(actual, error);
            assert_eq!(actual.close_code(), code, "{actual}");
        }
        Ok(inbound) => panic!("expected {error}, got {inbound:?}"),
    }
}

fn handshake_error(first_frame: &str) -> ChannelError {
    match ServerChannel::accept_handshake(first_frame, RenewalPolicy::default(), Instant::now()) {
        Err(error) => error,
        Ok(_) => panic!("handshake accepted: {first_frame}"),
    }
}

fn start_with_key(key: &[u8]) -> String {
    json!({"type": "HANDSHAKE_START", "public_key": b64_encode(key), "salt": b64_encode(&[5u8; 32])})
        .to_string()
}

/// A frame under `keys` with a correct tag over arbitrary `ciphertext`.
fn authentic_raw_frame(keys: &SymmetricKeys, iv: [u8; 16], ciphertext: Vec<u8>) -> String {
    let tag = keys.tag_for_tests(&iv, &ciphertext);
    Frame {
        iv: iv.to_vec(),
        ciphertext,
        tag: tag.to_vec(),
    }
    .to_json()
}

// ---- known-answer tests (vectors.json) ----

#[test]
fn sealing_with_vector_iv_gives_vector_frame() {
    let keys = transport_keys();
    let iv = array16(&["transport", "frame", "iv"]);
    let plaintext = text(&["transport", "frame", "plaintext"]);
    let frame = Frame::parse(&Frame::seal_with_iv(&keys, &iv, plaintext.as_bytes())).unwrap();
    assert_eq!(frame.ciphertext, bytes(&["transport", "frame", "payload"]));
    assert_eq!(frame.tag, bytes(&["transport", "frame", "hmac"]));
    let expected = format!(
        r#"{{"iv":"{}","payload":"{}","hmac":"{}"}}"#,
        text(&["transport", "frame", "iv"]),
        text(&["transport", "frame", "payload"]),
        text(&["transport", "frame", "hmac"]),
    );
    assert_eq!(
        Frame::seal_with_iv(&keys, &iv, plaintext.as_bytes()),
        expected
    );
}

#[test]
fn server_opens_python_style_vector_frame() {
    let now = Instant::now();
    let mut server = vector_server(now);
    let frame_json = text(&["transport", "frame_json"]);
    assert!(
        frame_json.contains("\", \""),
        "vector uses Python separators"
    );
    let expected: Object =
        serde_json::from_str(&text(&["transport", "frame", "plaintext"])).unwrap();
    assert_eq!(
        server.open(&frame_json, now).unwrap(),
        Inbound::Command(expected)
    );
}

#[test]
fn server_opens_unpadded_vector_frame() {
    let now = Instant::now();
    let mut server = vector_server(now);
    let unpadded =
        crate::crypto::test_vectors::vectors()["transport"]["frame_unpadded"].to_string();
    assert!(!unpadded.contains('='));
    let parsed = Frame::parse(&unpadded).unwrap();
    assert_eq!(
        parsed,
        Frame::parse(&text(&["transport", "frame_json"])).unwrap()
    );
    match server.open(&unpadded, now).unwrap() {
        Inbound::Command(command) => assert_eq!(command["username"], "alice"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn standard_alphabet_frame_is_accepted_and_output_is_url_safe() {
    let now = Instant::now();
    let mut server = vector_server(now);
    let standard = text(&["transport", "frame_json"])
        .replace('-', "+")
        .replace('_', "/");
    assert_ne!(standard, text(&["transport", "frame_json"]));
    assert!(matches!(
        server.open(&standard, now),
        Ok(Inbound::Command(_))
    ));
    for _ in 0..20 {
        let out = server.seal(r#"{"type":"X","pad":"????????>>>>>>>>"}"#, now);
        assert!(!out.contains('+') && !out.contains('/'), "{out}");
        let frame = Frame::parse(&out).unwrap();
        assert_eq!(frame.iv.len(), 16);
        assert_eq!(frame.tag.len(), 32);
        assert_eq!(out, frame.to_json(), "canonical padded url-safe output");
        assert!(out.contains("=\""), "16-byte IV always needs padding");
    }
}

#[test]
fn handshake_with_vector_client_key_interoperates() {
    let now = Instant::now();
    let client_pair = KeyPair::from_private_bytes(array32(&["transport", "client_private"]));
    let salt = bytes(&["transport", "salt"]);
    let start = json!({
        "type": "HANDSHAKE_START",
        "public_key": text(&["transport", "client_public"]),
        "salt": text(&["transport", "salt"]),
    })
    .to_string();
    let (mut server, response) =
        ServerChannel::accept_handshake(&start, RenewalPolicy::default(), now).unwrap();
    let response: Object = serde_json::from_str(&response).unwrap();
    assert_eq!(response["type"], "HANDSHAKE_RESPONSE");
    assert_eq!(response.len(), 2);
    let server_public =
        crate::crypto::b64_decode(response["public_key"].as_str().unwrap()).unwrap();
    let shared = client_pair.agree(&server_public).unwrap();
    let keys = SymmetricKeys::derive(&shared, &salt, b"handshake_info");

    let frame = Frame::seal(&keys, br#"{"type":"HELLO"}"#);
    assert!(matches!(server.open(&frame, now), Ok(Inbound::Command(_))));
    let reply = Frame::parse(&server.seal(r#"{"type":"OK"}"#, now)).unwrap();
    assert_eq!(reply.open(&keys).unwrap(), br#"{"type":"OK"}"#);
}

#[test]
fn full_handshake_between_channels() {
    let now = Instant::now();
    let (mut server, mut client) =
        connect(RenewalPolicy::default(), ClientRenewalMode::Immediate, now);
    client_to_server(&mut client, &mut server, now);
    server_to_client(&mut server, &mut client, now);
}

#[test]
fn handshake_start_text_is_padded_url_safe() {
    let (_, start) = ClientChannel::start();
    let start: Object = serde_json::from_str(&start).unwrap();
    assert_eq!(start["type"], "HANDSHAKE_START");
    for field in ["public_key", "salt"] {
        let value = start[field].as_str().unwrap();
        assert_eq!(value.len(), 44);
        assert!(value.ends_with('='));
        assert!(!value.contains('+') && !value.contains('/'));
    }
}

// ---- handshake errors ----

#[test]
fn garbage_first_frames_are_malformed() {
    for garbage in [
        "",
        "hello",
        "[]",
        "\"HANDSHAKE_START\"",
        "{\"type\":",
        "\u{0}",
    ] {
        let error = handshake_error(garbage);
        assert_eq!(error, ChannelError::NotJson, "{garbage:?}");
        assert_eq!(error.close_code(), 1002);
    }
}

#[test]
fn wrong_first_message_type_breaks_the_rule() {
    for first in [
        r#"{"type":"LOGIN","username":"a"}"#,
        r#"{"public_key":"AAAA","salt":"AAAA"}"#,
        r#"{"type":"handshake_start"}"#,
        &text(&["transport", "frame_json"]),
    ] {
        let error = handshake_error(first);
        assert!(
            matches!(error, ChannelError::UnexpectedHandshake { .. }),
            "{first}"
        );
        assert_eq!(error.close_code(), 1008);
    }
}

#[test]
fn handshake_missing_or_bad_fields_are_malformed() {
    let key = b64_encode(&KeyPair::generate().public_bytes());
    let cases = [
        (
            json!({"type": "HANDSHAKE_START", "salt": "AAAA"}),
            ChannelError::MissingField("public_key"),
        ),
        (
            json!({"type": "HANDSHAKE_START", "public_key": key}),
            ChannelError::MissingField("salt"),
        ),
        (
            json!({"type": "HANDSHAKE_START", "public_key": 7, "salt": "AAAA"}),
            ChannelError::MissingField("public_key"),
        ),
        (
            json!({"type": "HANDSHAKE_START", "public_key": "!!", "salt": "AAAA"}),
            ChannelError::BadBase64("public_key"),
        ),
        (
            json!({"type": "HANDSHAKE_START", "public_key": key, "salt": "a b"}),
            ChannelError::BadBase64("salt"),
        ),
    ];
    for (first, expected) in cases {
        let error = handshake_error(&first.to_string());
        assert_eq!(error, expected);
        assert_eq!(error.close_code(), 1002);
    }
}

#[test]
fn handshake_rejects_wrong_length_keys() {
    for length in [0, 16, 31, 33, 64] {
        let error = handshake_error(&start_with_key(&vec![9u8; length]));
        assert_eq!(
            error,
            ChannelError::BadKey {
                context: "HANDSHAKE_START",
                source: crate::crypto::CryptoError::BadKeyLength
            }
        );
        assert_eq!(error.close_code(), 1008);
    }
}

#[test]
fn handshake_rejects_low_order_keys() {
    for point in LOW_ORDER_POINTS {
        let error = handshake_error(&start_with_key(&point));
        assert_eq!(
            error,
            ChannelError::BadKey {
                context: "HANDSHAKE_START",
                source: crate::crypto::CryptoError::LowOrderKey
            }
        );
        assert_eq!(error.close_code(), 1008);
    }
}

#[test]
fn client_rejects_bad_handshake_response() {
    let (handshake, _) = ClientChannel::start();
    let error = handshake.finish(r#"{"type":"ERROR"}"#).unwrap_err();
    assert_eq!(error.close_code(), 1008);
    let (handshake, _) = ClientChannel::start();
    let low = json!({"type": "HANDSHAKE_RESPONSE", "public_key": b64_encode(&[0u8; 32])});
    assert!(matches!(
        handshake.finish(&low.to_string()),
        Err(ChannelError::BadKey { .. })
    ));
    let (handshake, _) = ClientChannel::start();
    assert_eq!(handshake.finish("nope").unwrap_err(), ChannelError::NotJson);
}

// ---- frame errors after the handshake ----

#[test]
fn malformed_frames_close_with_1002() {
    let now = Instant::now();
    let (mut server, _client) =
        connect(RenewalPolicy::default(), ClientRenewalMode::Immediate, now);
    let cases = [
        ("not json", ChannelError::NotJson),
        ("[1,2]", ChannelError::NotJson),
        (r#"{"type":"LOGIN"}"#, ChannelError::MissingField("iv")),
        (
            r#"{"iv":"AAAA","payload":"AAAA"}"#,
            ChannelError::MissingField("hmac"),
        ),
        (
            r#"{"iv":"AAAA","payload":null,"hmac":"AAAA"}"#,
            ChannelError::MissingField("payload"),
        ),
        (
            r#"{"iv":"A","payload":"AAAA","hmac":"AAAA"}"#,
            ChannelError::BadBase64("iv"),
        ),
    ];
    for (frame, expected) in cases {
        expect_error(server.open(frame, now), expected, 1002);
    }
}

#[test]
fn bad_hmac_is_rejected_with_1008() {
    let now = Instant::now();
    let (mut server, mut client) =
        connect(RenewalPolicy::default(), ClientRenewalMode::Immediate, now);
    let mut frame = Frame::parse(&client.seal(r#"{"type":"PING"}"#)).unwrap();
    frame.tag[31] ^= 1;
    expect_error(
        server.open(&frame.to_json(), now),
        ChannelError::BadMac,
        1008,
    );
    frame.tag.truncate(16);
    expect_error(
        server.open(&frame.to_json(), now),
        ChannelError::BadMac,
        1008,
    );
}

#[test]
fn flipped_ciphertext_or_iv_fails_the_hmac() {
    let now = Instant::now();
    let (mut server, mut client) =
        connect(RenewalPolicy::default(), ClientRenewalMode::Immediate, now);
    let original = Frame::parse(&client.seal(r#"{"type":"PING"}"#)).unwrap();
    let mut flipped = original.clone();
    flipped.ciphertext[0] ^= 0x01;
    expect_error(
        server.open(&flipped.to_json(), now),
        ChannelError::BadMac,
        1008,
    );
    let mut flipped = original.clone();
    flipped.iv[15] ^= 0x80;
    expect_error(
        server.open(&flipped.to_json(), now),
        ChannelError::BadMac,
        1008,
    );
    // The untouched frame still opens: the failures did not poison anything.
    assert!(matches!(
        server.open(&original.to_json(), now),
        Ok(Inbound::Command(_))
    ));
}

/// A frame that could not even be decrypted (ciphertext not a whole number
/// of blocks) is reported as a bad HMAC: the tag is checked first.
#[test]
fn hmac_is_checked_before_decrypting() {
    let now = Instant::now();
    let (mut server, _client) =
        connect(RenewalPolicy::default(), ClientRenewalMode::Immediate, now);
    let frame = Frame {
        iv: vec![1; 16],
        ciphertext: vec![2; 17],
        tag: vec![3; 32],
    };
    expect_error(
        server.open(&frame.to_json(), now),
        ChannelError::BadMac,
        1008,
    );
    let frame = Frame {
        iv: vec![1; 3],
        ciphertext: vec![],
        tag: vec![],
    };
    expect_error(
        server.open(&frame.to_json(), now),
        ChannelError::BadMac,
        1008,
    );
}

#[test]
fn authentic_but_undecryptable_frames_close_with_1002() {
    let now = Instant::now();
    let (mut server, client) = connect(RenewalPolicy::default(), ClientRenewalMode::Immediate, now);
    let keys = client.sending_keys();
    // Wrong length ciphertext, correctly tagged.
    let frame = authentic_raw_frame(keys, [4; 16], vec![0; 20]);
    expect_error(
        server.open(&frame, now),
        ChannelError::Undecryptable(crate::crypto::CryptoError::BadPadding),
        1002,
    );
    // One block whose padding byte is invalid.
    let (mut two_blocks, _) = keys.seal(&[4; 16], &[0u8; 16]);
    two_blocks.truncate(16);
    let frame = authentic_raw_frame(keys, [4; 16], two_blocks);
    expect_error(
        server.open(&frame, now),
        ChannelError::Undecryptable(crate::crypto::CryptoError::BadPadding),
        1002,
    );
}

#[test]
fn bad_plaintexts_close_with_1002() {
    let now = Instant::now();
    let (mut server, client) = connect(RenewalPolicy::default(), ClientRenewalMode::Immediate, now);
    let keys = client.sending_keys();
    let cases: [(&[u8], ChannelError); 6] = [
        (&[0xff, 0xfe, b'{'], ChannelError::NotUtf8),
        (b"not json", ChannelError::BadPlaintext),
        (b"[1,2,3]", ChannelError::BadPlaintext),
        (b"{\"type\":5}", ChannelError::BadPlaintext),
        (b"{\"to\":\"bob\"}", ChannelError::BadPlaintext),
        (b"", ChannelError::BadPlaintext),
    ];
    for (plaintext, expected) in cases {
        expect_error(
            server.open(&Frame::seal(keys, plaintext), now),
            expected,
            1002,
        );
    }
    // Python-style separators inside the plaintext are fine.
    let python = br#"{"type": "REQUEST_USER_LIST", "x": [1, 2]}"#;
    assert!(matches!(
        server.open(&Frame::seal(keys, python), now),
        Ok(Inbound::Command(_))
    ));
}

#[test]
fn plain_json_after_handshake_is_not_a_frame() {
    let now = Instant::now();
    let (mut server, _client) =
        connect(RenewalPolicy::default(), ClientRenewalMode::Immediate, now);
    let (_, start) = ClientChannel::start();
    expect_error(
        server.open(&start, now),
        ChannelError::MissingField("iv"),
        1002,
    );
}

#[test]
fn debug_output_never_shows_keys() {
    let now = Instant::now();
    let (server, client) = connect(RenewalPolicy::default(), ClientRenewalMode::Immediate, now);
    let shown = format!("{server:?} {client:?}");
    let (aes, mac) = server.sending_keys().raw_keys_for_tests();
    assert!(!shown.contains(&b64_encode(aes)));
    assert!(!shown.contains(&b64_encode(mac)));
    assert!(!shown.contains(&format!("{:?}", &aes[..4])));
    assert!(shown.contains("redacted"));
}

#[test]
fn close_codes_cover_every_variant() {
    use crate::crypto::CryptoError;
    let malformed = [
        ChannelError::NotJson,
        ChannelError::MissingField("iv"),
        ChannelError::BadBase64("iv"),
        ChannelError::Undecryptable(CryptoError::BadPadding),
        ChannelError::NotUtf8,
        ChannelError::BadPlaintext,
    ];
    let broken = [
        ChannelError::UnexpectedHandshake { expected: "X" },
        ChannelError::BadKey {
            context: "X",
            source: CryptoError::LowOrderKey,
        },
        ChannelError::BadMac,
        ChannelError::UnsolicitedResponse,
    ];
    assert!(malformed.iter().all(|e| e.close_code() == 1002));
    assert!(broken.iter().all(|e| e.close_code() == 1008));
}

#[test]
fn messages_builders_round_trip() {
    let init = messages::renegotiate_init(&[1; 32], &[2; 32], true);
    let init: Object = serde_json::from_str(&init).unwrap();
    assert_eq!(init["immediate"], true);
    let init = messages::renegotiate_init(&[1; 32], &[2; 32], false);
    assert!(!init.contains("immediate"));
}
