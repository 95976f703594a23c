//! One encrypted frame on the wire: `{"iv","payload","hmac"}`, each field
//! base64 of the IV, the AES-256-CBC ciphertext and the HMAC-SHA256 tag.
//! Parsing accepts both base64 alphabets, padded or not; output is always
//! padded url-safe.

use super::messages::{decode_field, parse_object};
use super::ChannelError;
use crate::crypto::{b64_decode, b64_encode, random_iv, SymmetricKeys, IV_LEN};

/// The frame's fields borrowed from the text (a field holding a JSON escape
/// cannot be borrowed: such a frame takes the general path).
#[derive(serde::Deserialize)]
struct WireFields<'a> {
    iv: Option<&'a str>,
    payload: Option<&'a str>,
    hmac: Option<&'a str>,
}

/// A parsed (not yet verified) frame.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    pub iv: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub tag: Vec<u8>,
}

impl Frame {
    /// Parses the frame's JSON text. Extra fields are ignored.
    pub fn parse(text: &str) -> Result<Frame, ChannelError> {
        if let Some(frame) = Self::parse_well_formed(text) {
            return Ok(frame);
        }
        // Something is wrong (or unusual, like a repeated key): the general
        // path below gives the precise error, or the same frame.
        let object = parse_object(text)?;
        Ok(Frame {
            iv: decode_field(&object, "iv")?,
            ciphertext: decode_field(&object, "payload")?,
            tag: decode_field(&object, "hmac")?,
        })
    }

    /// The common case without building a JSON tree: an object whose three
    /// fields are strings of valid base64 (other fields are skipped).
    /// `None` for anything else, left to the general path.
    fn parse_well_formed(text: &str) -> Option<Frame> {
        // serde would also take an array as a struct: only objects here.
        if !text.trim_start().starts_with('{') {
            return None;
        }
        let fields: WireFields<'_> = serde_json::from_str(text).ok()?;
        Some(Frame {
            iv: b64_decode(fields.iv?).ok()?,
            ciphertext: b64_decode(fields.payload?).ok()?,
            tag: b64_decode(fields.hmac?).ok()?,
        })
    }

    /// Encrypts `plaintext` under `keys` with a fresh random IV and returns
    /// the frame's JSON text.
    pub fn seal(keys: &SymmetricKeys, plaintext: &[u8]) -> String {
        Self::seal_with_iv(keys, &random_iv(), plaintext)
    }

    /// As [`Frame::seal`] with a given IV (for known-answer tests).
    pub fn seal_with_iv(keys: &SymmetricKeys, iv: &[u8; IV_LEN], plaintext: &[u8]) -> String {
        let (ciphertext, tag) = keys.seal(iv, plaintext);
        Frame {
            iv: iv.to_vec(),
            ciphertext,
            tag: tag.to_vec(),
        }
        .to_json()
    }

    /// Compact JSON text with padded url-safe base64.
    pub fn to_json(&self) -> String {
        // Base64 never contains characters that need JSON escaping.
        format!(
            r#"{{"iv":"{}","payload":"{}","hmac":"{}"}}"#,
            b64_encode(&self.iv),
            b64_encode(&self.ciphertext),
            b64_encode(&self.tag)
        )
    }

    /// Whether the tag verifies under `keys` (constant-time comparison).
    pub fn verifies_under(&self, keys: &SymmetricKeys) -> bool {
        keys.verify(&self.iv, &self.ciphertext, &self.tag)
    }

    /// Checks the tag under `keys`, then decrypts.
    pub fn open(&self, keys: &SymmetricKeys) -> Result<Vec<u8>, ChannelError> {
        keys.open(&self.iv, &self.ciphertext, &self.tag)
            .map_err(|error| match error {
                crate::crypto::CryptoError::BadMac => ChannelError::BadMac,
                other => ChannelError::Undecryptable(other),
            })
    }
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("iv_len", &self.iv.len())
            .field("ciphertext_len", &self.ciphertext.len())
            .field("tag_len", &self.tag.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frame as the general (JSON tree) path reads it.
    fn parse_general(text: &str) -> Result<Frame, ChannelError> {
        let object = parse_object(text)?;
        Ok(Frame {
            iv: decode_field(&object, "iv")?,
            ciphertext: decode_field(&object, "payload")?,
            tag: decode_field(&object, "hmac")?,
        })
    }

    #[test]
    fn fast_and_general_paths_read_the_same_frames() {
        let texts = [
            r#"{"iv":"AAAA","payload":"-_8=","hmac":"+/8"}"#,
            r#" {"hmac":"AQID","extra":[1,{"a":2}],"iv":"AAAA","payload":"AAAA"}"#,
            // Escapes cannot be borrowed: the general path decodes them.
            r#"{"iv":"\u0041AAA","payload":"AAAA","hmac":"AAAA"}"#,
            // A repeated key: the last one wins, as in a JSON tree.
            r#"{"iv":"AAAA","iv":"AQID","payload":"AAAA","hmac":"AAAA"}"#,
        ];
        for text in texts {
            assert_eq!(Frame::parse(text), parse_general(text), "{text}");
            assert!(Frame::parse(text).is_ok(), "{text}");
        }
    }

    #[test]
    fn an_array_is_not_a_frame() {
        assert_eq!(
            Frame::parse(r#"["AAAA","AAAA","AAAA"]"#),
            Err(ChannelError::NotJson)
        );
    }

    #[test]
    fn sealed_frames_parse_back() {
        let keys = SymmetricKeys::derive(&[7; 32], b"salt", b"info");
        let text = Frame::seal(&keys, b"{\"type\":\"x\"}");
        let frame = Frame::parse(&text).expect("a sealed frame parses");
        assert_eq!(frame.open(&keys).expect("opens"), b"{\"type\":\"x\"}");
    }
}
