//! Property tests of the secure channel and the command parser: hostile
//! input never panics, always fails with close code 1002 or 1008, and never
//! spoils a channel for the valid frames that follow.
//!
//! Case counts: every property below runs `CASES` (256) generated cases, so
//! the suite runs 8 x 256 = 2048 cases (no persistence file is written).

use std::time::Instant;

use chat_server::channel::{ClientChannel, Frame, Inbound, RenewalPolicy, ServerChannel};
use chat_server::crypto::{b64_decode, b64_encode, random_bytes, KeyPair, SymmetricKeys};
use chat_server::protocol::{parse_command, parse_routed, Command, CommandError};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{json, Map, Value};

/// Generated cases per property.
const CASES: u32 = 256;

fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..ProptestConfig::with_cases(CASES)
    }
}

fn assert_close_code(code: u16) {
    assert!(code == 1002 || code == 1008, "close code {code}");
}

// ----- strategies ---------------------------------------------------------------

/// Any text, and text that looks like JSON.
fn arbitrary_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[{}\\[\\]\":,a-zA-Z0-9_+/=. -]{0,80}",
        arbitrary_json().prop_map(|value| value.to_string()),
    ]
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(field_name(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

const COMMAND_TYPES: &[&str] = &[
    "REGISTER",
    "LOGIN",
    "LOGIN_CHALLENGE_REQUEST",
    "LOGIN_CHALLENGE_RESPONSE",
    "REQUEST_OFFLINE_MESSAGES",
    "REQUEST_USER_LIST",
    "GET_PUBLIC_KEY",
    "START_TYPING",
    "STOP_TYPING",
    "E2E_HANDSHAKE",
    "E2E_AUTH",
    "E2E_MSG",
    "HANDSHAKE_START",
    "RENEGOTIATE_INIT",
    "RENEGOTIATE_RESPONSE",
    "RENEGOTIATE_REQUEST",
];

const FIELD_NAMES: &[&str] = &[
    "type",
    "to",
    "payload",
    "username",
    "password",
    "public_key",
    "new_public_key",
    "signature",
    "target_username",
    "salt",
    "step",
    "immediate",
];

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(FIELD_NAMES).prop_map(str::to_owned),
        ".{0,12}",
    ]
}

/// A `"type"` value: a real command name, a random string, or not a string.
fn type_value() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        4 => prop::sample::select(COMMAND_TYPES).prop_map(|t| Some(Value::from(t))),
        2 => ".{0,16}".prop_map(|t| Some(Value::from(t))),
        1 => arbitrary_json().prop_map(Some),
        1 => Just(None),
    ]
}

/// A command-like object: a type plus random fields.
fn command_object() -> impl Strategy<Value = Map<String, Value>> {
    (
        type_value(),
        prop::collection::vec((field_name(), arbitrary_json()), 0..8),
    )
        .prop_map(|(kind, fields)| {
            let mut object: Map<String, Value> = fields.into_iter().collect();
            match kind {
                Some(kind) => {
                    object.insert("type".into(), kind);
                }
                None => {
                    object.remove("type");
                }
            }
            object
        })
}

/// Which part of a sealed frame to damage.
#[derive(Debug, Clone, Copy)]
enum Part {
    Iv,
    Payload,
    Hmac,
}

// ----- helpers ------------------------------------------------------------------

fn valid_handshake_start() -> String {
    ClientChannel::start().1
}

/// A real in-memory handshake through the crate's own client.
fn connected() -> (ClientChannel, ServerChannel) {
    let (handshake, start) = ClientChannel::start();
    let (server, response) =
        ServerChannel::accept_handshake(&start, RenewalPolicy::default(), Instant::now())
            .expect("a valid HANDSHAKE_START is accepted");
    let client = handshake.finish(&response).expect("the client finishes");
    (client, server)
}

/// A handshake done by hand so the test holds the channel keys and can seal
/// arbitrary (even non-UTF-8) plaintext.
fn connected_with_keys() -> (SymmetricKeys, ServerChannel) {
    let pair = KeyPair::generate();
    let salt = random_bytes::<32>();
    let start = json!({"type": "HANDSHAKE_START",
                       "public_key": b64_encode(&pair.public_bytes()),
                       "salt": b64_encode(&salt)})
    .to_string();
    let (server, response) =
        ServerChannel::accept_handshake(&start, RenewalPolicy::default(), Instant::now())
            .expect("a valid HANDSHAKE_START is accepted");
    let response: Value = serde_json::from_str(&response).unwrap();
    let server_public = b64_decode(response["public_key"].as_str().unwrap()).unwrap();
    let shared = pair.agree(&server_public).unwrap();
    (
        SymmetricKeys::derive(&shared, &salt, b"handshake_info"),
        server,
    )
}

/// A valid command frame from the client must still open as a command.
fn assert_still_opens(client: &mut ClientChannel, server: &mut ServerChannel) {
    let frame = client.seal(r#"{"type":"REQUEST_USER_LIST"}"#);
    match server.open(&frame, Instant::now()) {
        Ok(Inbound::Command(command)) => assert_eq!(command["type"], "REQUEST_USER_LIST"),
        other => panic!("a valid frame after bad input: {other:?}"),
    }
}

fn assert_keyed_still_opens(keys: &SymmetricKeys, server: &mut ServerChannel) {
    let frame = Frame::seal(keys, br#"{"type":"REQUEST_USER_LIST"}"#);
    match server.open(&frame, Instant::now()) {
        Ok(Inbound::Command(command)) => assert_eq!(command["type"], "REQUEST_USER_LIST"),
        other => panic!("a valid frame after bad input: {other:?}"),
    }
}

// ----- (a) the handshake ---------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn handshake_rejects_arbitrary_text(text in arbitrary_text()) {
        let error = ServerChannel::accept_handshake(&text, RenewalPolicy::default(), Instant::now())
            .expect_err("arbitrary text is no HANDSHAKE_START");
        assert_close_code(error.close_code());
    }

    #[test]
    fn handshake_survives_mutated_start(
        index in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<bool>(),
    ) {
        let mut bytes = valid_handshake_start().into_bytes();
        let at = index.index(bytes.len());
        if cut {
            bytes.truncate(at);
        } else {
            bytes[at] = byte;
        }
        let text = String::from_utf8_lossy(&bytes);
        // A mutation may keep it valid (e.g. another base64 digit of the salt).
        if let Err(error) =
            ServerChannel::accept_handshake(&text, RenewalPolicy::default(), Instant::now())
        {
            assert_close_code(error.close_code());
        }
    }
}

// ----- (b) frames after the handshake ----------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn open_rejects_arbitrary_text(texts in prop::collection::vec(arbitrary_text(), 1..4)) {
        let (mut client, mut server) = connected();
        for text in &texts {
            let error = server
                .open(text, Instant::now())
                .expect_err("arbitrary text is no valid frame");
            assert_close_code(error.close_code());
        }
        assert_still_opens(&mut client, &mut server);
    }

    #[test]
    fn open_rejects_one_damaged_byte(
        part in prop_oneof![Just(Part::Iv), Just(Part::Payload), Just(Part::Hmac)],
        index in any::<prop::sample::Index>(),
        flip in 1u8..=255,
        body in ".{0,40}",
    ) {
        let (mut client, mut server) = connected();
        let plaintext = json!({"type": "E2E_MSG", "to": "bob", "payload": {"text": body}});
        let mut frame = Frame::parse(&client.seal(&plaintext.to_string())).unwrap();
        let bytes = match part {
            Part::Iv => &mut frame.iv,
            Part::Payload => &mut frame.ciphertext,
            Part::Hmac => &mut frame.tag,
        };
        let at = index.index(bytes.len());
        bytes[at] ^= flip;
        let error = server
            .open(&frame.to_json(), Instant::now())
            .expect_err("a damaged frame must not open");
        assert_eq!(error.close_code(), 1008, "{error:?}");
        assert_still_opens(&mut client, &mut server);
    }

    #[test]
    fn open_handles_arbitrary_plaintext_bytes(plaintext in prop::collection::vec(any::<u8>(), 0..200)) {
        let (keys, mut server) = connected_with_keys();
        match server.open(&Frame::seal(&keys, &plaintext), Instant::now()) {
            Ok(_) => {}
            Err(error) => assert_close_code(error.close_code()),
        }
        assert_keyed_still_opens(&keys, &mut server);
    }

    #[test]
    fn open_handles_arbitrary_json_plaintext(
        value in prop_oneof![
            arbitrary_json(),
            command_object().prop_map(Value::Object),
        ],
    ) {
        let (mut client, mut server) = connected();
        match server.open(&client.seal(&value.to_string()), Instant::now()) {
            Ok(Inbound::Command(command)) => {
                prop_assert!(command.get("type").and_then(Value::as_str).is_some());
            }
            Ok(Inbound::Routed(_) | Inbound::Control(_)) => {}
            Err(error) => assert_close_code(error.close_code()),
        }
        assert_still_opens(&mut client, &mut server);
    }
}

// ----- (c) the command parser --------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn parse_command_never_panics(object in command_object()) {
        let kind = object.get("type").and_then(Value::as_str).map(str::to_owned);
        match parse_command(&object) {
            Ok(Command::Unknown(unknown)) => {
                prop_assert_eq!(Some(unknown), kind);
            }
            Ok(_) => prop_assert!(kind.is_some()),
            Err(CommandError::MissingType) => prop_assert!(kind.is_none()),
            Err(CommandError::MissingField(_) | CommandError::PayloadNotObject) => {
                prop_assert!(kind.is_some());
            }
        }
    }
}

/// A string that needs no escape in JSON.
const PLAIN_STRING: &str = "[^\"\\\\\\x00-\\x1f]{0,12}";

/// A payload the routed fast path takes: strings without escapes,
/// integers of up to 19 digits, booleans, null, arrays and objects.
fn plain_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        (0..10_000_000_000_000_000_000_u64).prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        PLAIN_STRING.prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(PLAIN_STRING, inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(config())]

    /// A relay in the form serde_json writes (keys sorted) gives the same
    /// command, payload bytes included, on the fast path as on the general
    /// path; any other command text gives the same command or is left to the
    /// general path.
    #[test]
    fn routed_fast_path_gives_what_the_general_path_gives(
        kind in prop::sample::select(&["E2E_MSG", "E2E_AUTH", "E2E_HANDSHAKE"][..]),
        to in PLAIN_STRING,
        payload in prop::collection::btree_map(PLAIN_STRING, plain_json(), 0..6),
        other in command_object(),
    ) {
        let text = json!({"type": kind, "to": to, "payload": payload}).to_string();
        let fast = parse_routed(text.clone()).map(Command::Chat);
        let object: Map<String, Value> = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(fast, Ok(parse_command(&object).unwrap()));
        if let Ok(fast) = parse_routed(Value::Object(other.clone()).to_string()) {
            prop_assert_eq!(Ok(Command::Chat(fast)), parse_command(&other));
        }
    }
}
