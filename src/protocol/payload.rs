//! Relayed payloads carried as JSON text, and the fast path that recognises
//! a routed command without building a JSON tree.
//!
//! The server relays an `E2E_*` payload without understanding it
//! (PROTOCOL.md section 4). A routed command (`E2E_*` `{type, to, payload}`,
//! `START_TYPING`/`STOP_TYPING` `{type, to}`) is checked by serde_json as a
//! whole, its payload borrowed as a [`RawValue`], and the payload's bytes
//! are then relayed (or stored) as they came: no `Value` tree is built and
//! nothing is written back.
//!
//! Only a *plain* payload takes that path ([`is_plain_object`]): an object
//! of strings without escapes, non-negative integers of up to 19 digits,
//! `true`, `false`, `null`, arrays and objects, with unique keys and no
//! whitespace between tokens. For such a
//! text the general path (parse into a `serde_json::Value`, write it back
//! compactly) gives the same text except that it sorts each object's keys;
//! the fast path keeps the sender's order. Everything else (escapes, other
//! numbers, whitespace, a repeated key, deep nesting, a field the command
//! does not have, a missing or mistyped field) is left to the general path
//! in [`super::parse_command`], which accepts and refuses exactly what it
//! did before, with the same errors.

use std::ops::Range;

use serde_json::value::RawValue;
use serde_json::Value;

use super::{ChatCommand, RelayKind};

/// Deepest nesting of a payload taken on the fast path (the general path,
/// with serde_json's recursion limit, decides about deeper ones).
const MAX_PLAIN_DEPTH: usize = 32;

/// Most digits of an integer on the fast path: any 19 digits fit in a
/// `u64`, which serde_json writes back as the same digits.
const MAX_PLAIN_DIGITS: usize = 19;

/// Most keys open at once (in the objects enclosing a point of the text)
/// on the fast path.
const MAX_PLAIN_KEYS: usize = 64;

/// A relayed payload: the JSON text of an object, compact, as relayed to
/// the recipient and stored for an offline one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload(String);

impl Payload {
    /// The compact text of `value` (what the general path relays).
    pub fn from_value(value: &Value) -> Payload {
        Payload(value.to_string())
    }

    /// `text[range]`, reusing `text`'s buffer.
    fn from_range(mut text: String, range: Range<usize>) -> Payload {
        text.truncate(range.end);
        text.drain(..range.start);
        Payload(text)
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The JSON text, owned (for the offline store).
    pub fn into_string(self) -> String {
        self.0
    }

    /// The payload as a JSON tree, for the few readers that look inside.
    pub fn to_value(&self) -> Option<Value> {
        serde_json::from_str(&self.0).ok()
    }
}

/// The fields of a routed command, borrowed from its text. serde refuses
/// anything else: another field, a repeated one, a string holding an
/// escape (it cannot be borrowed), a value of the wrong type.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutedFields<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    to: &'a str,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
}

/// The routed command in `text`, when it takes the fast path; otherwise
/// `text` back, for the general path.
pub fn parse_routed(text: String) -> Result<ChatCommand, String> {
    let Some((route, to, payload)) = recognise(&text) else {
        return Err(text);
    };
    Ok(match route {
        Route::Relay(kind) => ChatCommand::Relay {
            kind,
            to,
            payload: Payload::from_range(text, payload),
        },
        Route::Typing(is_typing) => ChatCommand::Typing { to, is_typing },
    })
}

/// What a recognised command does.
enum Route {
    Relay(RelayKind),
    Typing(bool),
}

/// The route, recipient and payload byte range of a routed command in
/// `text` (an empty range for a typing notice).
fn recognise(text: &str) -> Option<(Route, String, Range<usize>)> {
    // serde would also take an array as a struct: only objects here.
    if !text.trim_start_matches(JSON_WHITESPACE).starts_with('{') {
        return None;
    }
    let fields: RoutedFields<'_> = serde_json::from_str(text).ok()?;
    let route = match fields.kind {
        "START_TYPING" => Route::Typing(true),
        "STOP_TYPING" => Route::Typing(false),
        kind => Route::Relay(RelayKind::from_type(kind)?),
    };
    let range = match (&route, fields.payload) {
        (Route::Relay(_), Some(payload)) if is_plain_object(payload.get()) => {
            range_within(text, payload.get())?
        }
        (Route::Typing(_), None) => 0..0,
        _ => return None,
    };
    Some((route, fields.to.to_owned(), range))
}

const JSON_WHITESPACE: [char; 4] = [' ', '\t', '\n', '\r'];

/// The byte range of `part`, a slice of `whole`, within `whole`.
fn range_within(whole: &str, part: &str) -> Option<Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= whole.len()).then_some(start..end)
}

/// Whether `text`, valid JSON (serde_json checked it), is a plain object:
/// see the module docs. Bounded work: one pass, at most
/// `MAX_PLAIN_KEYS` keys compared per key.
fn is_plain_object(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.first() != Some(&b'{') || bytes.contains(&b'\\') {
        return false;
    }
    let mut keys = OpenKeys::default();
    let mut depth = 0;
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        at += 1;
        match byte {
            b'"' => {
                // Strings hold no backslash: the next quote ends this one
                // (`at` follows an ASCII quote: a character boundary).
                let Some(length) = text.get(at..).and_then(|rest| rest.find('"')) else {
                    return false;
                };
                let string = &bytes[at..at + length];
                at += length + 1;
                if bytes.get(at) == Some(&b':') && !keys.add(string, depth) {
                    return false;
                }
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_PLAIN_DEPTH {
                    return false;
                }
            }
            b'}' | b']' => {
                keys.close(depth);
                depth = depth.saturating_sub(1);
            }
            b'0'..=b'9' => {
                let digits = 1 + bytes[at..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                at += digits - 1;
                // No fraction or exponent (JSON allows no leading zeros).
                if digits > MAX_PLAIN_DIGITS || matches!(bytes.get(at), Some(b'.' | b'e' | b'E')) {
                    return false;
                }
            }
            // Separators, and the letters of true, false and null.
            b',' | b':' | b't' | b'r' | b'u' | b'e' | b'f' | b'a' | b'l' | b's' | b'n' => {}
            // Negative numbers and whitespace.
            _ => return false,
        }
    }
    true
}

/// The keys of the objects enclosing the point of a scan, innermost last.
struct OpenKeys<'a> {
    keys: [(&'a [u8], usize); MAX_PLAIN_KEYS],
    len: usize,
}

impl Default for OpenKeys<'_> {
    fn default() -> Self {
        OpenKeys {
            keys: [(&[], 0); MAX_PLAIN_KEYS],
            len: 0,
        }
    }
}

impl<'a> OpenKeys<'a> {
    /// Adds a key of the object at `depth`; false if that object already
    /// has it, or too many keys are open.
    fn add(&mut self, key: &'a [u8], depth: usize) -> bool {
        let open = &self.keys[..self.len];
        let siblings = open.iter().rev().take_while(|(_, d)| *d == depth);
        if siblings.into_iter().any(|(k, _)| *k == key) || self.len == MAX_PLAIN_KEYS {
            return false;
        }
        self.keys[self.len] = (key, depth);
        self.len += 1;
        true
    }

    /// Forgets the keys of the object (or array) closing at `depth`.
    fn close(&mut self, depth: usize) {
        while self.len > 0 && self.keys[self.len - 1].1 == depth {
            self.len -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse_command_owned, Command, CommandError, Object};

    /// What the general path makes of `text` (the channel checked before
    /// that it is an object with a string "type").
    fn general(text: &str) -> Option<Result<Command, CommandError>> {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(object)) => Some(parse_command_owned(object)),
            _ => None,
        }
    }

    fn fast(text: &str) -> Option<ChatCommand> {
        parse_routed(text.to_owned()).ok()
    }

    fn payload_of(command: &ChatCommand) -> &str {
        match command {
            ChatCommand::Relay { payload, .. } => payload.as_str(),
            other => panic!("not a relay: {other:?}"),
        }
    }

    #[test]
    fn a_plain_payload_is_relayed_as_the_bytes_that_came() {
        let sent = r#"{"iv":"aXY=","ct":"Y3Q-_w==","mac":"bWFj","ok":true,"n":null}"#;
        let text = format!(r#"{{"type":"E2E_MSG","to":"bob","payload":{sent}}}"#);
        let command = fast(&text).expect("fast path");
        assert_eq!(payload_of(&command), sent);
        let ChatCommand::Relay { kind, to, payload } = command else {
            panic!("not a relay")
        };
        assert_eq!((kind, to.as_str()), (RelayKind::Message, "bob"));
        // The recipient's text carries those bytes unchanged.
        assert_eq!(
            crate::protocol::relay(RelayKind::Message, "ana", &payload),
            format!(r#"{{"from":"ana","payload":{sent},"type":"E2E_MSG"}}"#)
        );
    }

    #[test]
    fn nested_and_unicode_payloads_mean_what_the_general_path_gives() {
        let texts = [
            r#"{"to":"bob","type":"E2E_AUTH","payload":{"step":"CHALLENGE_A","payload":{"iv":"a","ct":"b","mac":"c"}}}"#,
            r#"{"type":"E2E_HANDSHAKE","to":"Zoë","payload":{"subType":"INIT","public_key":"k","salt":"s"}}"#,
            r#"{"type":"E2E_MSG","to":"bob","payload":{"z":["é✓😀",[],{}],"a":{"b":{"c":[true,false,null]}},"":""}}"#,
            r#"{"type":"E2E_MSG","to":"bob","payload":{"x":[{"k":"1"},{"k":"2"}],"k":"3"}}"#,
            r#"{"type":"E2E_MSG","to":"bob","payload":{"ts":1764489600123456,"seq":0,"n":[9999999999999999999,7]}}"#,
        ];
        for text in texts {
            let command = fast(text).unwrap_or_else(|| panic!("fast path: {text}"));
            let Some(Ok(Command::Chat(expected))) = general(text) else {
                panic!("general path refused {text}");
            };
            assert_eq!(command_value(&command), command_value(&expected), "{text}");
            // The bytes are the sender's.
            assert!(text.contains(payload_of(&command)), "{text}");
        }
    }

    /// A relay with its payload as a JSON tree (key order aside).
    fn command_value(command: &ChatCommand) -> (String, Value) {
        match command {
            ChatCommand::Relay { kind, to, payload } => (
                format!("{kind:?} {to}"),
                payload.to_value().expect("payload is JSON"),
            ),
            other => (format!("{other:?}"), Value::Null),
        }
    }

    #[test]
    fn typing_notices_take_the_fast_path() {
        let start = fast(r#"{"type":"START_TYPING","to":"bob"}"#);
        assert_eq!(
            start,
            Some(ChatCommand::Typing {
                to: "bob".into(),
                is_typing: true
            })
        );
        let stop = fast(r#" { "to" : "bob" , "type" : "STOP_TYPING" , "payload" : null } "#);
        assert_eq!(
            stop,
            Some(ChatCommand::Typing {
                to: "bob".into(),
                is_typing: false
            })
        );
    }

    /// Texts that the fast path leaves to the general path, and what that
    /// one makes of them (unchanged by this module).
    #[test]
    fn anything_unusual_takes_the_general_path_with_its_errors() {
        let payload_error = Some(Err(CommandError::PayloadNotObject));
        let cases: &[(&str, Option<Result<(), CommandError>>)] = &[
            // Escapes (a lone surrogate is refused by the general path).
            (
                r#"{"type":"E2E_MSG","to":"bob","payload":{"ct":"\ud800"}}"#,
                None,
            ),
            (
                r#"{"type":"E2E_MSG","to":"bob","payload":{"ct":"a\"b\u00e9"}}"#,
                Some(Ok(())),
            ),
            (
                r#"{"type":"E2E_MSG","to":"b\u006fb","payload":{"ct":"x"}}"#,
                Some(Ok(())),
            ),
            // Numbers (one out of range is refused by the general path).
            (
                r#"{"type":"E2E_MSG","to":"bob","payload":{"n":1e400}}"#,
                None,
            ),
            (
                r#"{"type":"E2E_MSG","to":"bob","payload":{"n":-0.50}}"#,
                Some(Ok(())),
            ),
            (
                r#"{"type":"E2E_MSG","to":"bob","payload":{"n":-1}}"#,
                Some(Ok(())),
            ),
            (
                r#"{"type":"E2E_MSG","to":"bob","payload":{"n":[10.5]}}"#,
                Some(Ok(())),
            ),
            (
                r#"{"type":"E2E_MSG","to":"bob","payload":{"n":2e3}}"#,
                Some(Ok(())),
            ),
            (
                r#"{"type":"E2E_MSG","to":"bob","payload":{"n":12345678901234567890}}"#,
                Some(Ok(())),
            ),
            // Whitespace, repeated keys.
            (
                r#"{"type":"E2E_MSG","to":"bob","payload":{"ct": "x"}}"#,
                Some(Ok(())),
            ),
            (
                r#"{"type":"E2E_MSG","to":"bob","payload":{"ct":"x","ct":"y"}}"#,
                Some(Ok(())),
            ),
            (
                r#"{"type":"E2E_MSG","to":"bob","to":"eve","payload":{}}"#,
                Some(Ok(())),
            ),
            // Another field: ignored by the general path, unless it is invalid there.
            (
                r#"{"type":"E2E_MSG","to":"bob","payload":{},"id":7}"#,
                Some(Ok(())),
            ),
            (
                r#"{"type":"E2E_MSG","to":"bob","payload":{},"id":"\udc00"}"#,
                None,
            ),
            (
                r#"{"type":"START_TYPING","to":"bob","payload":{"n":1e999}}"#,
                None,
            ),
            // Missing or mistyped fields: the same errors as before.
            (
                r#"{"type":"E2E_MSG","to":"bob","payload":"text"}"#,
                payload_error.clone(),
            ),
            (
                r#"{"type":"E2E_MSG","to":"bob","payload":[1]}"#,
                payload_error.clone(),
            ),
            (r#"{"type":"E2E_MSG","to":"bob"}"#, payload_error),
            (
                r#"{"type":"E2E_MSG","payload":{}}"#,
                Some(Err(CommandError::MissingField("to"))),
            ),
            (
                r#"{"type":"E2E_MSG","to":5,"payload":{}}"#,
                Some(Err(CommandError::MissingField("to"))),
            ),
            (
                r#"{"type":"STOP_TYPING"}"#,
                Some(Err(CommandError::MissingField("to"))),
            ),
            // Not a routed command, or not an object at all.
            (r#"{"type":"REQUEST_USER_LIST","to":"bob"}"#, Some(Ok(()))),
            (r#"["E2E_MSG","bob",{}]"#, None),
        ];
        for (text, expected) in cases {
            assert_eq!(fast(text), None, "{text}");
            let got = general(text).map(|result| result.map(|_| ()));
            assert_eq!(&got, expected, "{text}");
        }
    }

    #[test]
    fn deep_nesting_is_left_to_the_general_path() {
        let nested = |depth: usize| {
            format!(
                r#"{{"type":"E2E_MSG","to":"b","payload":{}{}}}"#,
                "{\"a\":".repeat(depth) + "{}",
                "}".repeat(depth)
            )
        };
        assert!(fast(&nested(MAX_PLAIN_DEPTH - 1)).is_some());
        assert!(fast(&nested(MAX_PLAIN_DEPTH)).is_none());
        // The general path refuses what serde_json's recursion limit refuses.
        assert!(general(&nested(200)).is_none());
    }

    #[test]
    fn plain_objects() {
        assert!(is_plain_object(r#"{}"#));
        assert!(is_plain_object(r#"{"a":{"a":{"a":"a"}},"b":["a","a"]}"#));
        assert!(is_plain_object(r#"{"a":{"b":"1"},"b":"2"}"#));
        assert!(!is_plain_object(r#"{"a":{"b":"1"},"a":"2"}"#));
        assert!(!is_plain_object(r#"{"a":{"b":"1","b":"2"}}"#));
        assert!(!is_plain_object(r#"["a"]"#));
        assert!(is_plain_object(
            r#"{"a":1,"b":[0,10],"c":9999999999999999999}"#
        ));
        assert!(!is_plain_object(r#"{"a":1.0}"#));
        assert!(!is_plain_object(r#"{"a":1E2}"#));
        assert!(!is_plain_object(r#"{"a":-1}"#));
        assert!(!is_plain_object(r#"{"a":10000000000000000000}"#));
        assert!(!is_plain_object(r#"{"a":"\n"}"#));
        assert!(!is_plain_object("{\"a\":\n\"b\"}"));
        let many: Vec<String> = (0..=MAX_PLAIN_KEYS)
            .map(|i| format!("\"k{i}\":\"v\""))
            .collect();
        assert!(!is_plain_object(&format!("{{{}}}", many.join(","))));
        let enough = &many[..MAX_PLAIN_KEYS];
        assert!(is_plain_object(&format!("{{{}}}", enough.join(","))));
    }

    #[test]
    fn payload_text_round_trips() {
        let object: Object = serde_json::from_str(r#"{"b":"x","a":[true]}"#).unwrap();
        let payload = Payload::from_value(&Value::Object(object));
        assert_eq!(payload.as_str(), r#"{"a":[true],"b":"x"}"#);
        assert_eq!(
            payload.to_value(),
            serde_json::from_str(payload.as_str()).ok()
        );
        assert_eq!(payload.into_string(), r#"{"a":[true],"b":"x"}"#);
    }
}
