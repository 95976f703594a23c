//! One encrypted frame on the wire: `{"iv","payload","hmac"}`, each field
//! base64 of the IV, the AES-256-CBC ciphertext and the HMAC-SHA256 tag.
//! Parsing accepts both base64 alphabets, padded or not; output is always
//! padded url-safe.

use super::messages::{decode_field, parse_object};
use super::ChannelError;
use crate::crypto::{b64_decode, b64_encode_into, random_iv, SymmetricKeys, IV_LEN, KEY_LEN};

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
        let ciphertext_len = (plaintext.len() / IV_LEN + 1) * IV_LEN;
        let mut json = String::with_capacity(json_capacity(ciphertext_len));
        write_sealed(&mut json, keys, iv, plaintext);
        json
    }

    /// As [`Frame::seal`], the JSON text cut into pieces of at most
    /// `piece_bytes` as it is written (WebSocket fragments of a big frame):
    /// neither the ciphertext nor the whole text is ever in one buffer.
    pub fn seal_in_pieces(
        keys: &SymmetricKeys,
        plaintext: &[u8],
        piece_bytes: usize,
    ) -> Vec<Vec<u8>> {
        let mut pieces = Pieces::new(piece_bytes);
        write_sealed(&mut pieces, keys, &random_iv(), plaintext);
        pieces.finish()
    }

    /// Compact JSON text with padded url-safe base64.
    pub fn to_json(&self) -> String {
        let mut json = String::with_capacity(json_capacity(self.ciphertext.len()));
        write_json(&mut json, &self.iv, |json| {
            json.push_base64(&self.ciphertext);
            &self.tag
        });
        json
    }

    /// Whether the tag verifies under `keys` (constant-time comparison).
    pub fn verifies_under(&self, keys: &SymmetricKeys) -> bool {
        keys.verify(&self.iv, &self.ciphertext, &self.tag)
    }

    /// Checks the tag under `keys`, then decrypts (tests; the channel opens
    /// frames through its key ring, which verifies once per key).
    #[cfg(test)]
    pub(crate) fn open(&self, keys: &SymmetricKeys) -> Result<Vec<u8>, ChannelError> {
        keys.open(&self.iv, &self.ciphertext, &self.tag)
            .map_err(|error| match error {
                crate::crypto::CryptoError::BadMac => ChannelError::BadMac,
                other => ChannelError::Undecryptable(other),
            })
    }

    /// Decrypts the ciphertext in its own buffer, taking it out of the
    /// frame, once [`Self::verifies_under`] said yes for `keys` (the tag is
    /// not checked twice).
    pub(crate) fn take_verified_plaintext(
        &mut self,
        keys: &SymmetricKeys,
    ) -> Result<Vec<u8>, ChannelError> {
        keys.decrypt_verified(&self.iv, std::mem::take(&mut self.ciphertext))
            .map_err(ChannelError::Undecryptable)
    }
}

/// Somewhere a frame's JSON text is written to, in order.
trait TextSink {
    fn push(&mut self, text: &str);
    /// Appends `bytes` in padded url-safe base64.
    fn push_base64(&mut self, bytes: &[u8]);
}

impl TextSink for String {
    fn push(&mut self, text: &str) {
        self.push_str(text);
    }

    fn push_base64(&mut self, bytes: &[u8]) {
        b64_encode_into(bytes, self);
    }
}

/// Text cut into pieces of at most `max` bytes as it is written. The text
/// is ASCII (JSON keys and base64), so any cut is fine for WebSocket
/// fragments, which need not be valid UTF-8 one by one.
struct Pieces {
    max: usize,
    done: Vec<Vec<u8>>,
    current: Vec<u8>,
    /// Base64 of one ciphertext piece before it is cut (reused).
    encoded: String,
}

impl Pieces {
    fn new(max: usize) -> Pieces {
        let max = max.max(1);
        Pieces {
            max,
            done: Vec::new(),
            current: Vec::with_capacity(max),
            encoded: String::new(),
        }
    }

    fn finish(mut self) -> Vec<Vec<u8>> {
        if !self.current.is_empty() || self.done.is_empty() {
            self.done.push(self.current);
        }
        self.done
    }
}

impl TextSink for Pieces {
    fn push(&mut self, text: &str) {
        let mut bytes = text.as_bytes();
        loop {
            let room = self.max - self.current.len();
            if bytes.len() < room {
                self.current.extend_from_slice(bytes);
                return;
            }
            self.current.extend_from_slice(&bytes[..room]);
            bytes = &bytes[room..];
            let full = std::mem::replace(&mut self.current, Vec::with_capacity(self.max));
            self.done.push(full);
        }
    }

    fn push_base64(&mut self, bytes: &[u8]) {
        let mut encoded = std::mem::take(&mut self.encoded);
        encoded.clear();
        b64_encode_into(bytes, &mut encoded);
        self.push(&encoded);
        self.encoded = encoded;
    }
}

/// Room for a frame's JSON text around a ciphertext of `ciphertext_len`.
fn json_capacity(ciphertext_len: usize) -> usize {
    let encoded = |len: usize| len.div_ceil(3) * 4;
    40 + encoded(IV_LEN) + encoded(ciphertext_len) + encoded(KEY_LEN)
}

/// Encrypts `plaintext` and writes the frame's JSON text as the ciphertext
/// is made, piece by piece.
fn write_sealed(
    out: &mut impl TextSink,
    keys: &SymmetricKeys,
    iv: &[u8; IV_LEN],
    plaintext: &[u8],
) {
    write_json(out, iv, |out| {
        keys.seal_in_pieces(iv, plaintext, |piece| out.push_base64(piece))
    });
}

/// Writes a frame's compact JSON text: `payload` writes the ciphertext's
/// base64 and returns the tag. Base64 never contains characters that need
/// JSON escaping.
fn write_json<S: TextSink, T: AsRef<[u8]>>(
    out: &mut S,
    iv: &[u8],
    payload: impl FnOnce(&mut S) -> T,
) {
    out.push(r#"{"iv":""#);
    out.push_base64(iv);
    out.push(r#"","payload":""#);
    let tag = payload(out);
    out.push(r#"","hmac":""#);
    out.push_base64(tag.as_ref());
    out.push(r#""}"#);
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
    use crate::crypto::b64_encode;

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
    fn json_text_is_the_formatted_one() {
        let frame = Frame {
            iv: vec![0xfb; 16],
            ciphertext: (0..=255).collect(),
            tag: vec![7; 32],
        };
        let expected = format!(
            r#"{{"iv":"{}","payload":"{}","hmac":"{}"}}"#,
            b64_encode(&frame.iv),
            b64_encode(&frame.ciphertext),
            b64_encode(&frame.tag)
        );
        assert_eq!(frame.to_json(), expected);
    }

    #[test]
    fn an_array_is_not_a_frame() {
        assert_eq!(
            Frame::parse(r#"["AAAA","AAAA","AAAA"]"#),
            Err(ChannelError::NotJson)
        );
    }

    /// Sealing piece by piece gives the frame that encrypting the whole
    /// plaintext at once gives, at every length around the piece size.
    #[test]
    fn sealing_in_pieces_is_sealing_at_once() {
        let keys = SymmetricKeys::derive(&[7; 32], b"salt", b"info");
        let iv = [9u8; IV_LEN];
        let plaintext: Vec<u8> = (0..10_000u32).map(|n| (n * 31 % 251) as u8).collect();
        for len in [0, 1, 15, 16, 17, 3071, 3072, 3073, 6144, 6160, 9999, 10_000] {
            let (ciphertext, tag) = keys.seal(&iv, &plaintext[..len]);
            let at_once = Frame {
                iv: iv.to_vec(),
                ciphertext,
                tag: tag.to_vec(),
            }
            .to_json();
            assert_eq!(
                Frame::seal_with_iv(&keys, &iv, &plaintext[..len]),
                at_once,
                "length {len}"
            );
        }
    }

    /// The pieces, joined, are a frame that opens to the plaintext; every
    /// piece but the last is full.
    #[test]
    fn a_frame_sealed_in_pieces_joins_into_one_frame() {
        let keys = SymmetricKeys::derive(&[7; 32], b"salt", b"info");
        let plaintext: Vec<u8> = (0..50_000u32).map(|n| b'a' + (n % 26) as u8).collect();
        for (len, piece_bytes) in [(0, 16), (10, 1000), (50_000, 16 * 1024), (50_000, 4096)] {
            let pieces = Frame::seal_in_pieces(&keys, &plaintext[..len], piece_bytes);
            let (last, full) = pieces.split_last().expect("at least one piece");
            assert!(full.iter().all(|piece| piece.len() == piece_bytes));
            assert!(!last.is_empty() && last.len() <= piece_bytes);
            let text = String::from_utf8(pieces.concat()).expect("ASCII");
            let frame = Frame::parse(&text).expect("parses");
            assert_eq!(frame.open(&keys).expect("opens"), &plaintext[..len]);
        }
    }

    #[test]
    fn sealed_frames_parse_back() {
        let keys = SymmetricKeys::derive(&[7; 32], b"salt", b"info");
        let text = Frame::seal(&keys, b"{\"type\":\"x\"}");
        let frame = Frame::parse(&text).expect("a sealed frame parses");
        assert_eq!(frame.open(&keys).expect("opens"), b"{\"type\":\"x\"}");
    }
}
