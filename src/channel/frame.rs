//! One encrypted frame on the wire: `{"iv","payload","hmac"}`, each field
//! base64 of the IV, the AES-256-CBC ciphertext and the HMAC-SHA256 tag.
//! Parsing accepts both base64 alphabets, padded or not; output is always
//! padded url-safe.

use super::messages::{decode_field, parse_object};
use super::ChannelError;
use crate::crypto::{b64_encode, random_bytes, SymmetricKeys, IV_LEN};

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
        let object = parse_object(text)?;
        Ok(Frame {
            iv: decode_field(&object, "iv")?,
            ciphertext: decode_field(&object, "payload")?,
            tag: decode_field(&object, "hmac")?,
        })
    }

    /// Encrypts `plaintext` under `keys` with a fresh random IV and returns
    /// the frame's JSON text.
    pub fn seal(keys: &SymmetricKeys, plaintext: &[u8]) -> String {
        Self::seal_with_iv(keys, &random_bytes::<IV_LEN>(), plaintext)
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
