//! The channel's own messages (handshake and renegotiation), their JSON
//! builders and field readers, key derivation for the channel, and the check
//! that a decrypted plaintext is a command object.

use super::ChannelError;
use crate::crypto::{b64_decode, b64_encode, wipe, KeyPair, SymmetricKeys, KEY_LEN};
use serde_json::{json, Map, Value};

/// A JSON object, as commands are passed on.
pub type Object = Map<String, Value>;

pub(crate) const HANDSHAKE_START: &str = "HANDSHAKE_START";
pub(crate) const HANDSHAKE_RESPONSE: &str = "HANDSHAKE_RESPONSE";
pub(crate) const RENEGOTIATE_REQUEST: &str = "RENEGOTIATE_REQUEST";
pub(crate) const RENEGOTIATE_INIT: &str = "RENEGOTIATE_INIT";
pub(crate) const RENEGOTIATE_RESPONSE: &str = "RENEGOTIATE_RESPONSE";
/// Every type with this prefix belongs to the channel, never to commands.
pub(crate) const RENEGOTIATE_PREFIX: &str = "RENEGOTIATE_";
/// HKDF info for the client <-> server channel keys.
pub(crate) const HANDSHAKE_INFO: &[u8] = b"handshake_info";

/// Parses text that must be a JSON object.
pub(crate) fn parse_object(text: &str) -> Result<Object, ChannelError> {
    match serde_json::from_str(text) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(ChannelError::NotJson),
    }
}

/// The object's string `"type"`, if any.
pub(crate) fn message_type(object: &Object) -> Option<&str> {
    object.get("type").and_then(Value::as_str)
}

/// Decodes the base64 string field `name`.
pub(crate) fn decode_field(object: &Object, name: &'static str) -> Result<Vec<u8>, ChannelError> {
    let text = object
        .get(name)
        .and_then(Value::as_str)
        .ok_or(ChannelError::MissingField(name))?;
    b64_decode(text).map_err(|_| ChannelError::BadBase64(name))
}

/// Whether the object says `"immediate": true`.
pub(crate) fn is_immediate(object: &Object) -> bool {
    object.get("immediate") == Some(&Value::Bool(true))
}

/// The decrypted plaintext as text; it must be UTF-8.
pub(crate) fn plaintext_text(plaintext: Vec<u8>) -> Result<String, ChannelError> {
    String::from_utf8(plaintext).map_err(|_| ChannelError::NotUtf8)
}

/// A decrypted text must be JSON: an object with a string "type".
pub(crate) fn command_object(text: &str) -> Result<Object, ChannelError> {
    match serde_json::from_str(text) {
        Ok(Value::Object(object)) if message_type(&object).is_some() => Ok(object),
        _ => Err(ChannelError::BadPlaintext),
    }
}

/// Whether a decrypted text is, at a glance, an application message: a JSON
/// object whose `"type"` is a plain string outside the channel's own
/// `RENEGOTIATE_*` family. Read without building a tree; `false` means "not
/// sure" (an escaped type, no type, not an object), and the caller parses it
/// fully.
pub(crate) fn is_application_text(text: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct TypeOnly<'a> {
        #[serde(rename = "type", borrow)]
        kind: Option<&'a str>,
    }
    match serde_json::from_str::<TypeOnly<'_>>(text) {
        Ok(TypeOnly { kind: Some(kind) }) => !kind.starts_with(RENEGOTIATE_PREFIX),
        _ => false,
    }
}

/// Channel keys from our pair, the peer's public key and the salt; `context`
/// names the message for the error (a bad or low-order key).
pub(crate) fn derive_channel_keys(
    pair: &KeyPair,
    peer_public: &[u8],
    salt: &[u8],
    context: &'static str,
) -> Result<SymmetricKeys, ChannelError> {
    let mut shared: [u8; KEY_LEN] = pair
        .agree(peer_public)
        .map_err(|source| ChannelError::BadKey { context, source })?;
    let keys = SymmetricKeys::derive(&shared, salt, HANDSHAKE_INFO);
    wipe(&mut shared);
    Ok(keys)
}

pub(crate) fn handshake_start(public_key: &[u8], salt: &[u8]) -> String {
    json!({"type": HANDSHAKE_START, "public_key": b64_encode(public_key), "salt": b64_encode(salt)})
        .to_string()
}

pub(crate) fn handshake_response(public_key: &[u8]) -> String {
    json!({"type": HANDSHAKE_RESPONSE, "public_key": b64_encode(public_key)}).to_string()
}

pub(crate) fn renegotiate_request(public_key: &[u8], salt: &[u8]) -> String {
    json!({"type": RENEGOTIATE_REQUEST, "public_key": b64_encode(public_key), "salt": b64_encode(salt)})
        .to_string()
}

pub(crate) fn renegotiate_init(public_key: &[u8], salt: &[u8], immediate: bool) -> String {
    let mut message = json!({
        "type": RENEGOTIATE_INIT,
        "public_key": b64_encode(public_key),
        "salt": b64_encode(salt),
    });
    if immediate {
        message["immediate"] = Value::Bool(true);
    }
    message.to_string()
}

pub(crate) fn renegotiate_response(public_key: &[u8]) -> String {
    json!({"type": RENEGOTIATE_RESPONSE, "public_key": b64_encode(public_key)}).to_string()
}

/// A fresh key pair and 32-byte salt, offered in a handshake or renewal.
pub(crate) struct Offer {
    pub(crate) pair: KeyPair,
    pub(crate) salt: [u8; KEY_LEN],
}

impl Offer {
    pub(crate) fn fresh() -> Offer {
        Offer {
            pair: KeyPair::generate(),
            salt: crate::crypto::random_bytes(),
        }
    }
}

impl std::fmt::Debug for Offer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Offer(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_text_is_told_from_channel_messages_at_a_glance() {
        assert!(is_application_text(
            r#"{"type":"E2E_MSG","payload":{"a":[1,"}"]}}"#
        ));
        assert!(is_application_text(
            r#"{"payload":{},"type":"user_list_update"}"#
        ));
        assert!(!is_application_text(r#"{"type":"RENEGOTIATE_REQUEST"}"#));
        // Unsure cases go to the full parse.
        for unsure in [
            r#"{"type":"E2E\u005fMSG"}"#,
            r#"{"type":"A","type":"RENEGOTIATE_INIT"}"#,
            r#"{"kind":"A"}"#,
            r#"{"type":1}"#,
            "[]",
            "{",
        ] {
            assert!(!is_application_text(unsure), "{unsure}");
        }
    }
}
