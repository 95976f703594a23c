//! Wire types of the chat protocol (PROTOCOL.md sections 3-5): the commands a
//! client sends inside the secure channel, and the JSON texts the server sends
//! back. Parsing never panics: a malformed command is a [`CommandError`] value.
//!
//! This module knows nothing of sockets, threads or crypto; the channel hands
//! it a decrypted text (relays and typing notices, [`parse_routed`]) or JSON
//! object ([`parse_command`]) and takes back plain JSON text to seal. A
//! relayed payload travels as its JSON text ([`Payload`]).

use serde_json::{json, Map, Value};

mod payload;
pub use payload::{parse_routed, Payload};

/// A decrypted command object, as the secure channel yields it.
pub type Object = Map<String, Value>;

/// The three relayed, end-to-end encrypted command types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayKind {
    /// `E2E_HANDSHAKE`: peer key agreement.
    Handshake,
    /// `E2E_AUTH`: peer mutual authentication.
    Auth,
    /// `E2E_MSG`: a chat message; the only kind stored for offline users.
    Message,
}

impl RelayKind {
    /// The `type` string on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            RelayKind::Handshake => "E2E_HANDSHAKE",
            RelayKind::Auth => "E2E_AUTH",
            RelayKind::Message => "E2E_MSG",
        }
    }

    fn from_type(kind: &str) -> Option<Self> {
        match kind {
            "E2E_HANDSHAKE" => Some(RelayKind::Handshake),
            "E2E_AUTH" => Some(RelayKind::Auth),
            "E2E_MSG" => Some(RelayKind::Message),
            _ => None,
        }
    }
}

/// Commands of the authentication phase (PROTOCOL.md section 3).
#[derive(Debug, Clone, PartialEq)]
pub enum AuthCommand {
    Register {
        username: String,
        password: String,
        public_key: String,
    },
    Login {
        username: String,
        password: String,
        new_public_key: Option<String>,
    },
    ChallengeRequest {
        username: String,
    },
    ChallengeResponse {
        username: String,
        signature: String,
    },
}

/// Commands of a logged-in session (PROTOCOL.md section 4).
#[derive(Debug, Clone, PartialEq)]
pub enum ChatCommand {
    /// `E2E_HANDSHAKE` / `E2E_AUTH` / `E2E_MSG` `{to, payload}`.
    Relay {
        kind: RelayKind,
        to: String,
        payload: Payload,
    },
    RequestOfflineMessages,
    GetPublicKey {
        target_username: String,
    },
    RequestUserList,
    /// `START_TYPING` / `STOP_TYPING` `{to}`.
    Typing {
        to: String,
        is_typing: bool,
    },
}

/// Any command a client can send once the channel is up.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Auth(AuthCommand),
    Chat(ChatCommand),
    /// A `type` this server does not know; answered with an error.
    Unknown(String),
}

/// Why a command object could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("missing or non-string field \"type\"")]
    MissingType,
    #[error("missing or non-string field \"{0}\"")]
    MissingField(&'static str),
    #[error("field \"payload\" must be a JSON object")]
    PayloadNotObject,
}

/// Parses a decrypted command object into a [`Command`].
pub fn parse_command(object: &Object) -> Result<Command, CommandError> {
    let kind = object
        .get("type")
        .and_then(Value::as_str)
        .ok_or(CommandError::MissingType)?;
    if let Some(relay) = RelayKind::from_type(kind) {
        return parse_relay(relay, object).map(Command::Chat);
    }
    let command = match kind {
        "REGISTER" => Command::Auth(AuthCommand::Register {
            username: text(object, "username")?,
            password: text(object, "password")?,
            public_key: text(object, "public_key")?,
        }),
        "LOGIN" => Command::Auth(AuthCommand::Login {
            username: text(object, "username")?,
            password: text(object, "password")?,
            new_public_key: optional_text(object, "new_public_key"),
        }),
        "LOGIN_CHALLENGE_REQUEST" => Command::Auth(AuthCommand::ChallengeRequest {
            username: text(object, "username")?,
        }),
        "LOGIN_CHALLENGE_RESPONSE" => Command::Auth(AuthCommand::ChallengeResponse {
            username: text(object, "username")?,
            signature: text(object, "signature")?,
        }),
        "REQUEST_OFFLINE_MESSAGES" => Command::Chat(ChatCommand::RequestOfflineMessages),
        "REQUEST_USER_LIST" => Command::Chat(ChatCommand::RequestUserList),
        "GET_PUBLIC_KEY" => Command::Chat(ChatCommand::GetPublicKey {
            target_username: text(object, "target_username")?,
        }),
        "START_TYPING" | "STOP_TYPING" => Command::Chat(ChatCommand::Typing {
            to: text(object, "to")?,
            is_typing: kind == "START_TYPING",
        }),
        other => Command::Unknown(other.to_owned()),
    };
    Ok(command)
}

/// As [`parse_command`], taking the object (the general path of a routed
/// command; most take the fast path of [`parse_routed`]).
pub fn parse_command_owned(mut object: Object) -> Result<Command, CommandError> {
    let relay = object
        .get("type")
        .and_then(Value::as_str)
        .and_then(RelayKind::from_type);
    let Some(kind) = relay else {
        return parse_command(&object);
    };
    let to = text(&object, "to")?;
    let payload = relay_payload(object.remove("payload").as_ref())?;
    Ok(Command::Chat(ChatCommand::Relay { kind, to, payload }))
}

fn parse_relay(kind: RelayKind, object: &Object) -> Result<ChatCommand, CommandError> {
    let to = text(object, "to")?;
    let payload = relay_payload(object.get("payload"))?;
    Ok(ChatCommand::Relay { kind, to, payload })
}

/// A relayed payload must be a JSON object; it is relayed as its compact
/// text.
fn relay_payload(payload: Option<&Value>) -> Result<Payload, CommandError> {
    payload
        .filter(|payload| payload.is_object())
        .map(Payload::from_value)
        .ok_or(CommandError::PayloadNotObject)
}

fn text(object: &Object, field: &'static str) -> Result<String, CommandError> {
    optional_text(object, field).ok_or(CommandError::MissingField(field))
}

fn optional_text(object: &Object, field: &str) -> Option<String> {
    object.get(field).and_then(Value::as_str).map(str::to_owned)
}

/// The `step` of an `E2E_AUTH` payload, which travels outside the peer
/// encryption. Steps that carry a signature of a peer-chosen nonce void the
/// sender's pending login challenges (PROTOCOL.md section 3, signature oracle).
/// (Only `E2E_AUTH` payloads, three per peer session, are parsed for it.)
pub fn carries_peer_signature(kind: RelayKind, payload: &Payload) -> bool {
    kind == RelayKind::Auth
        && payload.to_value().is_some_and(|payload| {
            matches!(
                payload.get("step").and_then(Value::as_str),
                Some("RESPONSE_A_CHALLENGE_B" | "RESPONSE_B")
            )
        })
}

/// `auth_response` status strings the mobile client compares against.
pub mod status {
    pub const REGISTER_SUCCESS: &str = "REGISTER_SUCCESS";
    pub const USERNAME_EXISTS: &str = "REGISTER_FAILED:USERNAME_EXISTS";
    pub const LOGIN_SUCCESS: &str = "LOGIN_SUCCESS";
    pub const LOGIN_FAILED: &str = "LOGIN_FAILED";
    pub const SERVER_ERROR: &str = "SERVER_ERROR";
}

/// `{"type":"auth_response","status":S[,"message":M]}`.
pub fn auth_response(status: &str, message: Option<&str>) -> String {
    let mut object = json!({ "type": "auth_response", "status": status });
    if let Some(message) = message {
        object["message"] = Value::from(message);
    }
    object.to_string()
}

/// `{"type":"LOGIN_CHALLENGE","nonce":B64}`.
pub fn login_challenge(nonce_b64: &str) -> String {
    json!({ "type": "LOGIN_CHALLENGE", "nonce": nonce_b64 }).to_string()
}

/// `{"type":T,"from":sender,"payload":payload}` for a relayed or stored message.
///
/// Written into one buffer, the payload's text copied as it is, with the
/// keys in the order `json!` gives them (sorted): the bytes `json!` gives
/// for the same payload text.
pub fn relay(kind: RelayKind, from: &str, payload: &Payload) -> String {
    let payload = payload.as_str();
    let mut out = String::with_capacity(payload.len() + from.len() + 48);
    out.push_str(r#"{"from":"#);
    push_json_string(&mut out, from);
    out.push_str(r#","payload":"#);
    out.push_str(payload);
    out.push_str(r#","type":""#);
    out.push_str(kind.as_str());
    out.push_str("\"}");
    out
}

/// Appends `text` as a JSON string literal, escaped as serde_json does
/// (only quotes, backslashes and control characters need it).
fn push_json_string(out: &mut String, text: &str) {
    if text.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push_str(&json_string(text));
    } else {
        out.push('"');
        out.push_str(text);
        out.push('"');
    }
}

/// `{"type":"TYPING_STATUS_UPDATE","from":sender,"isTyping":bool}`.
pub fn typing_status(from: &str, is_typing: bool) -> String {
    json!({ "type": "TYPING_STATUS_UPDATE", "from": from, "isTyping": is_typing }).to_string()
}

/// `{"type":"PUBLIC_KEY_RESPONSE","username":U,"public_key":K}`.
pub fn public_key_response(username: &str, public_key: &str) -> String {
    json!({ "type": "PUBLIC_KEY_RESPONSE", "username": username, "public_key": public_key })
        .to_string()
}

/// `{"type":"ERROR","message":M}`.
pub fn error(message: &str) -> String {
    json!({ "type": "ERROR", "message": message }).to_string()
}

/// `{"type":"user_list_update","users":[{"username":U,"isOnline":bool},...]}`,
/// built from `(name, online)` pairs already in display order.
pub fn user_list_update<'a>(users: impl Iterator<Item = (&'a str, bool)>) -> String {
    let quoted: Vec<(String, bool)> = users
        .map(|(username, online)| (json_string(username), online))
        .collect();
    user_list_update_quoted(quoted.iter().map(|(name, online)| (name.as_str(), *online)))
}

/// `text` as a JSON string literal (quoted and escaped as serde_json does).
pub fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// As [`user_list_update`], from names already written as JSON string
/// literals ([`json_string`]): the list is rebuilt on every presence change
/// and has one entry per registered user, so it is only copied together
/// into one buffer (no JSON tree, no escaping), with the bytes `json!`
/// gives (keys sorted).
pub fn user_list_update_quoted<'a>(users: impl Iterator<Item = (&'a str, bool)>) -> String {
    const ONLINE: &str = r#"{"isOnline":true,"username":"#;
    const OFFLINE: &str = r#"{"isOnline":false,"username":"#;
    let mut out = String::with_capacity(48 + 48 * users.size_hint().0);
    out.push_str(r#"{"type":"user_list_update","users":["#);
    for (index, (quoted_name, online)) in users.enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str(if online { ONLINE } else { OFFLINE });
        out.push_str(quoted_name);
        out.push('}');
    }
    out.push_str("]}");
    out
}

/// Error messages sent in `ERROR` frames and `auth_response` messages.
pub mod messages {
    pub const LOGGED_IN_ELSEWHERE: &str = "logged in elsewhere";
    pub const UNKNOWN_COMMAND: &str = "unknown command";
    pub const USER_NOT_FOUND: &str = "User not found";
    pub const NO_CHALLENGE: &str = "No challenge pending";
    pub const CHALLENGE_EXPIRED: &str = "Challenge expired";
    pub const INVALID_SIGNATURE: &str = "Invalid signature";
    pub const INVALID_CREDENTIALS: &str = "Invalid username or password";
    pub const LOGIN_REQUIRED: &str = "login required";
    pub const TOO_MANY_AUTH_COMMANDS: &str = "too many authentication commands";
    pub const STORE_UNAVAILABLE: &str = "storage unavailable, try again later";
    pub const RECIPIENT_OFFLINE: &str = "recipient is offline";
    pub const PAYLOAD_TOO_LARGE: &str = "payload too large for the offline store";
    pub const ALREADY_LOGGED_IN: &str = "already logged in";
    pub const SERVER_BUSY: &str = "server busy";
    pub const TOO_MANY_ATTEMPTS: &str = "too many attempts";
    pub const MAILBOX_FULL: &str = "mailbox full";
    pub const RATE_LIMITED: &str = "rate limit exceeded";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_list_text_is_what_json_gives() {
        let users = [("Ana", true), ("b\"o\\b", false), ("\u{e9}t\u{e9}\n", true)];
        let entries: Vec<Value> = users
            .iter()
            .map(|(username, online)| json!({ "username": username, "isOnline": online }))
            .collect();
        let expected = json!({ "type": "user_list_update", "users": entries }).to_string();
        assert_eq!(user_list_update(users.iter().copied()), expected);
        assert_eq!(
            user_list_update(std::iter::empty()),
            json!({ "type": "user_list_update", "users": [] }).to_string()
        );
    }

    #[test]
    fn owned_parsing_gives_the_same_commands() {
        let inputs = [
            json!({"type": "E2E_MSG", "to": "bob", "payload": {"iv": "x", "n": [1, 2]}}),
            json!({"type": "E2E_AUTH", "to": "bob", "payload": "not an object"}),
            json!({"type": "E2E_HANDSHAKE", "payload": {}}),
            json!({"type": "E2E_MSG", "to": "bob"}),
            json!({"type": "START_TYPING", "to": "bob"}),
            json!({"type": "LOGIN", "username": "a", "password": "b"}),
            json!({"type": "what"}),
            json!({"to": "bob"}),
        ];
        for input in inputs {
            let input = object(input);
            assert_eq!(
                parse_command_owned(input.clone()),
                parse_command(&input),
                "{input:?}"
            );
        }
    }

    #[test]
    fn relay_text_is_what_json_gives() {
        let payload = json!({"z": [1, "two", null], "a": {"nested": "\"quoted\" \u{e9}"}});
        for kind in [RelayKind::Handshake, RelayKind::Auth, RelayKind::Message] {
            for from in ["Ana", "b\"o\\b\u{1}", "Zo\u{eb}"] {
                let expected =
                    json!({ "type": kind.as_str(), "from": from, "payload": payload }).to_string();
                assert_eq!(relay(kind, from, &Payload::from_value(&payload)), expected);
            }
        }
    }

    fn object(value: Value) -> Object {
        match value {
            Value::Object(map) => map,
            _ => panic!("test input must be an object"),
        }
    }

    #[test]
    fn parses_every_auth_command() {
        let login = parse_command(&object(json!({
            "type": "LOGIN", "username": "Ana", "password": "pw", "new_public_key": "k"
        })));
        assert_eq!(
            login,
            Ok(Command::Auth(AuthCommand::Login {
                username: "Ana".into(),
                password: "pw".into(),
                new_public_key: Some("k".into()),
            }))
        );
        let without_key = parse_command(&object(
            json!({"type": "LOGIN", "username": "a", "password": "b"}),
        ));
        assert!(matches!(
            without_key,
            Ok(Command::Auth(AuthCommand::Login {
                new_public_key: None,
                ..
            }))
        ));
        let challenge = parse_command(&object(
            json!({"type": "LOGIN_CHALLENGE_REQUEST", "username": "a"}),
        ));
        assert!(matches!(
            challenge,
            Ok(Command::Auth(AuthCommand::ChallengeRequest { .. }))
        ));
    }

    #[test]
    fn missing_fields_are_named() {
        let result = parse_command(&object(json!({"type": "REGISTER", "username": "a"})));
        assert_eq!(result, Err(CommandError::MissingField("password")));
        let result = parse_command(&object(json!({"username": "a"})));
        assert_eq!(result, Err(CommandError::MissingType));
        let result = parse_command(&object(json!({"type": 5})));
        assert_eq!(result, Err(CommandError::MissingType));
    }

    #[test]
    fn relay_payload_must_be_an_object() {
        let ok = parse_command(&object(
            json!({"type": "E2E_MSG", "to": "bob", "payload": {"iv": "x"}}),
        ));
        assert!(matches!(
            ok,
            Ok(Command::Chat(ChatCommand::Relay {
                kind: RelayKind::Message,
                ..
            }))
        ));
        let text_payload = parse_command(&object(
            json!({"type": "E2E_MSG", "to": "bob", "payload": "text"}),
        ));
        assert_eq!(text_payload, Err(CommandError::PayloadNotObject));
    }

    #[test]
    fn typing_and_unknown_commands() {
        let stop = parse_command(&object(json!({"type": "STOP_TYPING", "to": "bob"})));
        assert_eq!(
            stop,
            Ok(Command::Chat(ChatCommand::Typing {
                to: "bob".into(),
                is_typing: false
            }))
        );
        let unknown = parse_command(&object(json!({"type": "chat_message"})));
        assert_eq!(unknown, Ok(Command::Unknown("chat_message".into())));
    }

    #[test]
    fn only_signature_steps_void_challenges() {
        let step = |name: &str| Payload::from_value(&json!({"step": name, "payload": {}}));
        assert!(carries_peer_signature(
            RelayKind::Auth,
            &step("RESPONSE_A_CHALLENGE_B")
        ));
        assert!(carries_peer_signature(RelayKind::Auth, &step("RESPONSE_B")));
        assert!(!carries_peer_signature(
            RelayKind::Auth,
            &step("CHALLENGE_A")
        ));
        assert!(!carries_peer_signature(
            RelayKind::Message,
            &step("RESPONSE_B")
        ));
    }

    #[test]
    fn outgoing_texts_have_the_exact_field_names() {
        let response: Value =
            serde_json::from_str(&auth_response(status::LOGIN_FAILED, Some("x"))).unwrap();
        assert_eq!(
            response,
            json!({"type": "auth_response", "status": "LOGIN_FAILED", "message": "x"})
        );
        let list: Value = serde_json::from_str(&user_list_update(
            [("ana", true), ("Bob", false)].into_iter(),
        ))
        .unwrap();
        assert_eq!(
            list["users"][1],
            json!({"username": "Bob", "isOnline": false})
        );
        let typing: Value = serde_json::from_str(&typing_status("ana", true)).unwrap();
        assert_eq!(typing["isTyping"], json!(true));
    }
}
