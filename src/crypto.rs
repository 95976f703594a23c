//! Cryptographic primitives, with no protocol knowledge: base64 in the forms
//! the wire uses, X25519 key agreement, HKDF-SHA256 key derivation,
//! AES-256-CBC + HMAC-SHA256 sealing (encrypt-then-MAC), Ed25519 verification
//! and random bytes.
//!
//! Key material never appears in `Debug` output, and symmetric keys are wiped
//! when dropped.

use aes::cipher::inout::InOutBuf;
use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::Sha256;
use std::fmt;
use x25519_dalek::{PublicKey, StaticSecret};

type HmacSha256 = Hmac<Sha256>;
type Aes256CbcEnc = cbc::Encryptor<aes::Aes256Enc>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256Dec>;

/// Length of an X25519 key, an AES-256 key and an HMAC-SHA256 key or tag.
pub const KEY_LEN: usize = 32;
/// Length of an AES-CBC initialisation vector.
pub const IV_LEN: usize = 16;

/// Errors from the primitives. None of them carries key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum CryptoError {
    #[error("invalid base64")]
    BadBase64,
    #[error("public key is not 32 bytes")]
    BadKeyLength,
    #[error("public key is a low-order point (all-zero shared secret)")]
    LowOrderKey,
    #[error("HMAC does not verify")]
    BadMac,
    #[error("IV is not 16 bytes")]
    BadIv,
    #[error("ciphertext length or PKCS7 padding is invalid")]
    BadPadding,
}

/// Decoder accepting the url-safe alphabet with or without padding; standard
/// alphabet input is translated to it first.
const LENIENT_URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Encodes with the url-safe alphabet and `=` padding (the only form the
/// mobile client decodes). SIMD (AVX2/SSE4.1 when the CPU has them): every
/// sealed frame is encoded, and a user list of 10,000 names is ~600 KB.
pub fn b64_encode(bytes: &[u8]) -> String {
    base64_simd::URL_SAFE.encode_to_string(bytes)
}

/// As [`b64_encode`], appending to `out`.
pub fn b64_encode_into(bytes: &[u8], out: &mut String) {
    base64_simd::URL_SAFE.encode_append(bytes, out);
}

/// Decodes url-safe or standard base64, padded or not.
pub fn b64_decode(text: &str) -> Result<Vec<u8>, CryptoError> {
    let bytes = text.as_bytes();
    // The common case (url-safe, canonical) through SIMD: it accepts only
    // what the lenient decoder below accepts, with the same bytes (a unit
    // test compares them); anything it refuses takes the general path.
    let fast = if bytes.ends_with(b"=") {
        base64_simd::URL_SAFE
    } else {
        base64_simd::URL_SAFE_NO_PAD
    };
    if let Ok(decoded) = fast.decode_to_vec(bytes) {
        return Ok(decoded);
    }
    b64_decode_general(bytes)
}

/// Either alphabet, padded or not (canonical trailing bits only).
fn b64_decode_general(bytes: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if let Ok(decoded) = LENIENT_URL_SAFE.decode(bytes) {
        return Ok(decoded);
    }
    // Not url-safe base64: maybe the standard alphabet (`+`, `/`, which the
    // url-safe decoder refuses). Translate byte-wise and try again; input
    // that is neither fails here too.
    let url_safe: Vec<u8> = bytes
        .iter()
        .map(|&byte| match byte {
            b'+' => b'-',
            b'/' => b'_',
            other => other,
        })
        .collect();
    LENIENT_URL_SAFE
        .decode(url_safe)
        .map_err(|_| CryptoError::BadBase64)
}

/// Overwrites `bytes` with zeros in a way the optimiser does not remove.
pub fn wipe(bytes: &mut [u8]) {
    for byte in bytes.iter_mut() {
        // SAFETY: `byte` is a valid, aligned, exclusive reference.
        unsafe { std::ptr::write_volatile(byte, 0) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

/// `N` bytes from the operating system's random generator.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

/// A fresh AES-CBC IV from the thread's CSPRNG (`rand::thread_rng`: ChaCha,
/// seeded and periodically reseeded from the operating system). IVs are
/// drawn for every frame, so this avoids one `getrandom` system call per
/// frame; keys, salts and nonces still come from [`random_bytes`].
pub fn random_iv() -> [u8; IV_LEN] {
    let mut iv = [0u8; IV_LEN];
    rand::thread_rng().fill_bytes(&mut iv);
    iv
}

/// An AES-256 key and an HMAC-SHA256 key, used together (encrypt-then-MAC).
pub struct SymmetricKeys {
    aes_key: [u8; KEY_LEN],
    mac_key: [u8; KEY_LEN],
    /// HMAC with the key already absorbed (its inner and outer pad blocks
    /// hashed once per key): each frame clones it instead of hashing the
    /// two pad blocks again. Overwritten on drop.
    keyed_mac: HmacSha256,
}

impl SymmetricKeys {
    /// HKDF-SHA256(ikm = `shared_secret`, `salt`, `info`, L = 64), split into
    /// the AES key (first 32 bytes) and the HMAC key (last 32 bytes).
    pub fn derive(shared_secret: &[u8; KEY_LEN], salt: &[u8], info: &[u8]) -> SymmetricKeys {
        let mut okm = [0u8; 2 * KEY_LEN];
        Hkdf::<Sha256>::new(Some(salt), shared_secret)
            .expand(info, &mut okm)
            .expect("64 bytes is a valid HKDF-SHA256 output length (constant)");
        let mut aes_key = [0u8; KEY_LEN];
        let mut mac_key = [0u8; KEY_LEN];
        aes_key.copy_from_slice(&okm[..KEY_LEN]);
        mac_key.copy_from_slice(&okm[KEY_LEN..]);
        wipe(&mut okm);
        let keys = SymmetricKeys {
            keyed_mac: keyed_hmac(&mac_key),
            aes_key,
            mac_key,
        };
        wipe(&mut aes_key);
        wipe(&mut mac_key);
        keys
    }

    /// The AES key schedule is expanded per frame (a few dozen AES-NI
    /// instructions), not kept: with the `aes` crate's portable fallback
    /// in the same type it takes about 1 KB per direction, and a key lives
    /// inside every connection's state (measured: +40 KB of resident
    /// memory per connection at 10,000 connections).
    fn encryptor(&self, iv: &[u8; IV_LEN]) -> Aes256CbcEnc {
        Aes256CbcEnc::new(&self.aes_key.into(), iv.into())
    }

    /// AES-256-CBC-PKCS7 encryption of `plaintext` under `iv`, and the tag
    /// HMAC-SHA256(mac_key, iv || ciphertext).
    pub fn seal(&self, iv: &[u8; IV_LEN], plaintext: &[u8]) -> (Vec<u8>, [u8; KEY_LEN]) {
        let ciphertext = self
            .encryptor(iv)
            .encrypt_padded_vec_mut::<Pkcs7>(plaintext);
        let tag = self.mac(iv, &ciphertext).finalize().into_bytes().into();
        (ciphertext, tag)
    }

    /// As [`SymmetricKeys::seal`], but hands the ciphertext to `sink` in
    /// pieces (each a multiple of 3 bytes but the last, so that base64 of
    /// the pieces one after the other is base64 of the whole) instead of
    /// building it: a big plaintext (a user list of hundreds of KB) is not
    /// copied into a ciphertext buffer of its own first. Returns the tag.
    pub fn seal_in_pieces(
        &self,
        iv: &[u8; IV_LEN],
        plaintext: &[u8],
        mut sink: impl FnMut(&[u8]),
    ) -> [u8; KEY_LEN] {
        /// Bytes per piece: a multiple of the AES block and of 3.
        const PIECE: usize = 48 * 64;
        let mut cipher = self.encryptor(iv);
        let mut mac = self.mac(iv, &[]);
        let mut piece = [0u8; PIECE];
        let whole = plaintext.len() - plaintext.len() % PIECE;
        for chunk in plaintext[..whole].chunks_exact(PIECE) {
            // From the plaintext straight into the piece, a piece at once.
            let (blocks, _) = InOutBuf::new(chunk, &mut piece)
                .expect("a chunk and a piece have the same length")
                .into_chunks();
            cipher.encrypt_blocks_inout_mut(blocks);
            mac.update(&piece);
            sink(&piece);
        }
        // The rest is shorter than a piece, so the rest and its padding
        // (one block at most) fit in it.
        let rest = &plaintext[whole..];
        let last = cipher
            .encrypt_padded_b2b_mut::<Pkcs7>(rest, &mut piece)
            .expect("a piece holds the rest and its padding");
        mac.update(last);
        sink(last);
        mac.finalize().into_bytes().into()
    }

    /// Whether `tag` is HMAC-SHA256(mac_key, iv || ciphertext), compared in
    /// constant time.
    pub fn verify(&self, iv: &[u8], ciphertext: &[u8], tag: &[u8]) -> bool {
        self.mac(iv, ciphertext).verify_slice(tag).is_ok()
    }

    /// Checks the tag first, then decrypts and removes the padding.
    pub fn open(&self, iv: &[u8], ciphertext: &[u8], tag: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if !self.verify(iv, ciphertext, tag) {
            return Err(CryptoError::BadMac);
        }
        self.decrypt_verified(iv, ciphertext.to_vec())
    }

    /// Decrypts, in its own buffer, a ciphertext whose tag the caller has
    /// already checked with [`Self::verify`] (never call it otherwise:
    /// encrypt-then-MAC means nothing unverified is decrypted).
    pub fn decrypt_verified(
        &self,
        iv: &[u8],
        mut ciphertext: Vec<u8>,
    ) -> Result<Vec<u8>, CryptoError> {
        let iv: &[u8; IV_LEN] = iv.try_into().map_err(|_| CryptoError::BadIv)?;
        let plaintext_len = Aes256CbcDec::new(&self.aes_key.into(), iv.into())
            .decrypt_padded_mut::<Pkcs7>(&mut ciphertext)
            .map_err(|_| CryptoError::BadPadding)?
            .len();
        ciphertext.truncate(plaintext_len);
        Ok(ciphertext)
    }

    /// The raw AES and HMAC keys. Only for tests against known vectors.
    #[cfg(test)]
    pub(crate) fn raw_keys_for_tests(&self) -> (&[u8; KEY_LEN], &[u8; KEY_LEN]) {
        (&self.aes_key, &self.mac_key)
    }

    /// HMAC-SHA256(mac_key, iv || ciphertext) for any inputs. Only for tests
    /// that forge authentic-but-invalid frames.
    #[cfg(test)]
    pub(crate) fn tag_for_tests(&self, iv: &[u8], ciphertext: &[u8]) -> [u8; KEY_LEN] {
        self.mac(iv, ciphertext).finalize().into_bytes().into()
    }

    fn mac(&self, iv: &[u8], ciphertext: &[u8]) -> HmacSha256 {
        let mut mac = self.keyed_mac.clone();
        mac.update(iv);
        mac.update(ciphertext);
        mac
    }
}

impl Drop for SymmetricKeys {
    fn drop(&mut self) {
        wipe(&mut self.aes_key);
        wipe(&mut self.mac_key);
        // The keyed HMAC state stands for the MAC key: overwrite it with a
        // state keyed by zeros (a volatile write, so it is not elided).
        // SAFETY: `keyed_mac` is a valid, aligned place owned by `self`;
        // the old value needs no drop (plain bytes, no heap).
        unsafe { std::ptr::write_volatile(&mut self.keyed_mac, keyed_hmac(&[0; KEY_LEN])) };
    }
}

fn keyed_hmac(key: &[u8; KEY_LEN]) -> HmacSha256 {
    <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length")
}

impl fmt::Debug for SymmetricKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SymmetricKeys(<redacted>)")
    }
}

/// An X25519 key pair (the secret is wiped on drop by x25519-dalek).
pub struct KeyPair {
    secret: StaticSecret,
    public: PublicKey,
}

impl KeyPair {
    /// A fresh key pair from the operating system's random generator.
    pub fn generate() -> KeyPair {
        Self::from_secret(StaticSecret::random_from_rng(OsRng))
    }

    /// A key pair from a raw 32-byte scalar (clamped by X25519 itself).
    pub fn from_private_bytes(bytes: [u8; KEY_LEN]) -> KeyPair {
        Self::from_secret(StaticSecret::from(bytes))
    }

    /// The public key, as sent on the wire.
    pub fn public_bytes(&self) -> [u8; KEY_LEN] {
        self.public.to_bytes()
    }

    /// X25519(own secret, `peer_public`). Rejects a key that is not 32 bytes
    /// and a low-order point (one that makes the shared secret all zeros).
    pub fn agree(&self, peer_public: &[u8]) -> Result<[u8; KEY_LEN], CryptoError> {
        let peer: [u8; KEY_LEN] = peer_public
            .try_into()
            .map_err(|_| CryptoError::BadKeyLength)?;
        let shared = self.secret.diffie_hellman(&PublicKey::from(peer));
        if !shared.was_contributory() {
            return Err(CryptoError::LowOrderKey);
        }
        Ok(shared.to_bytes())
    }

    fn from_secret(secret: StaticSecret) -> KeyPair {
        let public = PublicKey::from(&secret);
        KeyPair { secret, public }
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyPair(<redacted>)")
    }
}

/// Whether `signature` is a valid Ed25519 signature of `message` under the
/// 32-byte `public_key`. Malformed inputs simply do not verify. Uses strict
/// verification (rejects small-order keys and non-canonical signatures, which
/// honest signers never produce).
pub fn verify_ed25519(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let Some(key) = ed25519_verifying_key(public_key) else {
        return false;
    };
    let Ok(signature) = ed25519_dalek::Signature::from_slice(signature) else {
        return false;
    };
    key.verify_strict(message, &signature).is_ok()
}

/// Whether `bytes` is a 32-byte compressed Edwards point usable as an Ed25519
/// public key (decodes, and is not a small-order "weak" key).
pub fn ed25519_public_key_is_valid(bytes: &[u8]) -> bool {
    ed25519_verifying_key(bytes).is_some_and(|key| !key.is_weak())
}

fn ed25519_verifying_key(bytes: &[u8]) -> Option<ed25519_dalek::VerifyingKey> {
    let bytes: &[u8; KEY_LEN] = bytes.try_into().ok()?;
    ed25519_dalek::VerifyingKey::from_bytes(bytes).ok()
}

#[cfg(test)]
pub(crate) mod test_vectors {
    //! Loads `shared/protocol/vectors.json` for the unit tests, plus
    //! hand-made low-order X25519 points (not in the vectors).
    use serde_json::Value;

    const VECTORS: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/protocol/vectors.json"
    ));

    pub fn vectors() -> Value {
        serde_json::from_str(VECTORS).unwrap()
    }

    /// The string at `path` (e.g. `["transport", "aes_key"]`).
    pub fn text(path: &[&str]) -> String {
        let root = vectors();
        let mut value = &root;
        for key in path {
            value = &value[*key];
        }
        value
            .as_str()
            .unwrap_or_else(|| panic!("vector {path:?} missing"))
            .to_owned()
    }

    /// The base64 vector at `path`, decoded.
    pub fn bytes(path: &[&str]) -> Vec<u8> {
        super::b64_decode(&text(path)).unwrap()
    }

    pub fn array32(path: &[&str]) -> [u8; 32] {
        bytes(path).try_into().unwrap()
    }

    pub fn array16(path: &[&str]) -> [u8; 16] {
        bytes(path).try_into().unwrap()
    }

    /// Curve25519 points of small order (encodings from the libsodium
    /// blacklist): 0, 1, order 8, order 4 (p-1), p, p+1.
    pub(crate) const LOW_ORDER_POINTS: [[u8; 32]; 6] = [
        [0; 32],
        {
            let mut one = [0u8; 32];
            one[0] = 1;
            one
        },
        [
            0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f,
            0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16,
            0x5f, 0x49, 0xb8, 0x00,
        ],
        [
            0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0x7f,
        ],
        [
            0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0x7f,
        ],
        [
            0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0x7f,
        ],
    ];
}

#[cfg(test)]
mod tests {
    use super::test_vectors::{array16, array32, bytes, text, LOW_ORDER_POINTS};
    use super::*;

    fn transport_keys() -> SymmetricKeys {
        let shared = array32(&["transport", "shared_secret"]);
        SymmetricKeys::derive(&shared, &bytes(&["transport", "salt"]), b"handshake_info")
    }

    #[test]
    fn base64_output_is_padded_url_safe() {
        assert_eq!(b64_encode(&[0xfb, 0xff]), "-_8=");
        assert_eq!(b64_encode(b""), "");
        // Every length around the SIMD block sizes, against the scalar
        // encoder (and appending keeps what was there).
        let bytes: Vec<u8> = (0..300u32).map(|n| (n * 97 % 256) as u8).collect();
        for len in 0..bytes.len() {
            let expected = base64::engine::general_purpose::URL_SAFE.encode(&bytes[..len]);
            assert_eq!(b64_encode(&bytes[..len]), expected, "length {len}");
            let mut out = String::from("x");
            b64_encode_into(&bytes[..len], &mut out);
            assert_eq!(out, format!("x{expected}"), "length {len}");
        }
    }

    #[test]
    fn base64_input_accepts_both_alphabets_and_paddings() {
        for text in ["-_8=", "-_8", "+/8=", "+/8", "+_8=", "-/8"] {
            assert_eq!(b64_decode(text).unwrap(), vec![0xfb, 0xff], "{text}");
        }
        assert_eq!(b64_decode("not base64!"), Err(CryptoError::BadBase64));
        assert_eq!(b64_decode("-_8=="), Err(CryptoError::BadBase64));
    }

    proptest::proptest! {
        /// The SIMD fast path never accepts what the general decoder refuses,
        /// nor decodes to other bytes: on near-base64 text (both alphabets,
        /// stray padding, non-canonical endings) both give the same answer.
        #[test]
        fn fast_base64_decoding_agrees_with_the_general_decoder(
            text in "[A-Za-z0-9_=+/-]{0,90}",
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..70),
        ) {
            proptest::prop_assert_eq!(b64_decode(&text), b64_decode_general(text.as_bytes()));
            let encoded = b64_encode(&bytes);
            proptest::prop_assert_eq!(b64_decode(&encoded), Ok(bytes.clone()));
            let unpadded = encoded.trim_end_matches('=');
            proptest::prop_assert_eq!(b64_decode(unpadded), Ok(bytes));
        }
    }

    #[test]
    fn decrypting_in_place_gives_the_plaintext_and_checks_padding() {
        let keys = transport_keys();
        let iv = [7u8; IV_LEN];
        for len in [0, 1, 15, 16, 17, 100] {
            let plaintext: Vec<u8> = (0..len as u8).collect();
            let (ciphertext, tag) = keys.seal(&iv, &plaintext);
            assert!(keys.verify(&iv, &ciphertext, &tag));
            assert_eq!(
                keys.decrypt_verified(&iv, ciphertext.clone()),
                Ok(plaintext.clone())
            );
            assert_eq!(keys.open(&iv, &ciphertext, &tag), Ok(plaintext));
        }
        let (mut ciphertext, _) = keys.seal(&iv, b"x");
        ciphertext.pop();
        assert_eq!(
            keys.decrypt_verified(&iv, ciphertext),
            Err(CryptoError::BadPadding)
        );
        assert_eq!(
            keys.decrypt_verified(&iv[..8], vec![0; 16]),
            Err(CryptoError::BadIv)
        );
    }

    #[test]
    fn x25519_agreement_matches_transport_vector() {
        let client = KeyPair::from_private_bytes(array32(&["transport", "client_private"]));
        let server = KeyPair::from_private_bytes(array32(&["transport", "server_private"]));
        assert_eq!(
            client.public_bytes().to_vec(),
            bytes(&["transport", "client_public"])
        );
        assert_eq!(
            server.public_bytes().to_vec(),
            bytes(&["transport", "server_public"])
        );
        let shared = array32(&["transport", "shared_secret"]);
        assert_eq!(client.agree(&server.public_bytes()).unwrap(), shared);
        assert_eq!(server.agree(&client.public_bytes()).unwrap(), shared);
    }

    #[test]
    fn hkdf_matches_transport_vector() {
        let keys = transport_keys();
        let (aes, mac) = keys.raw_keys_for_tests();
        assert_eq!(aes.to_vec(), bytes(&["transport", "aes_key"]));
        assert_eq!(mac.to_vec(), bytes(&["transport", "hmac_key"]));
    }

    #[test]
    fn seal_matches_transport_frame_vector() {
        let keys = transport_keys();
        let iv = array16(&["transport", "frame", "iv"]);
        let plaintext = text(&["transport", "frame", "plaintext"]);
        let (ciphertext, tag) = keys.seal(&iv, plaintext.as_bytes());
        assert_eq!(ciphertext, bytes(&["transport", "frame", "payload"]));
        assert_eq!(tag.to_vec(), bytes(&["transport", "frame", "hmac"]));
        let opened = keys.open(&iv, &ciphertext, &tag).unwrap();
        assert_eq!(opened, plaintext.as_bytes());
    }

    #[test]
    fn e2ee_vector_keys_and_message() {
        let a = KeyPair::from_private_bytes(array32(&["e2ee", "a_private"]));
        let b = KeyPair::from_private_bytes(array32(&["e2ee", "b_private"]));
        assert_eq!(a.public_bytes().to_vec(), bytes(&["e2ee", "a_public"]));
        let shared = a.agree(&b.public_bytes()).unwrap();
        assert_eq!(shared, b.agree(&a.public_bytes()).unwrap());
        let info = text(&["e2ee", "hkdf_info"]);
        assert_eq!(info, "E2EE_CHAT");
        let keys = SymmetricKeys::derive(&shared, &bytes(&["e2ee", "salt"]), info.as_bytes());
        let (aes, mac) = keys.raw_keys_for_tests();
        assert_eq!(aes.to_vec(), bytes(&["e2ee", "aes_key"]));
        assert_eq!(mac.to_vec(), bytes(&["e2ee", "hmac_key"]));

        let plaintext = text(&["e2ee", "message", "plaintext"]);
        assert_eq!(plaintext, "olá, mundo");
        let iv = array16(&["e2ee", "message", "iv"]);
        let (ct, tag) = keys.seal(&iv, plaintext.as_bytes());
        assert_eq!(ct, bytes(&["e2ee", "message", "ct"]));
        assert_eq!(tag.to_vec(), bytes(&["e2ee", "message", "mac"]));
    }

    #[test]
    fn open_rejects_bad_tag_before_decrypting() {
        let keys = transport_keys();
        let iv = [7u8; 16];
        let (ct, mut tag) = keys.seal(&iv, b"hello");
        tag[0] ^= 1;
        assert_eq!(keys.open(&iv, &ct, &tag), Err(CryptoError::BadMac));
        assert_eq!(keys.open(&iv, &ct, &tag[..31]), Err(CryptoError::BadMac));
        assert!(!keys.verify(&iv, &ct, &tag));
    }

    #[test]
    fn open_rejects_flipped_ciphertext_and_iv() {
        let keys = transport_keys();
        let iv = [7u8; 16];
        let (mut ct, tag) = keys.seal(&iv, b"hello");
        ct[3] ^= 0x80;
        assert_eq!(keys.open(&iv, &ct, &tag), Err(CryptoError::BadMac));
        let (ct, tag) = keys.seal(&iv, b"hello");
        let mut other_iv = iv;
        other_iv[0] ^= 1;
        assert_eq!(keys.open(&other_iv, &ct, &tag), Err(CryptoError::BadMac));
    }

    /// Authentic (correctly MACed) ciphertexts that are still invalid: the
    /// errors come back, nothing panics.
    #[test]
    fn open_reports_bad_iv_and_bad_padding_after_valid_mac() {
        let keys = transport_keys();
        let tag_for = |iv: &[u8], ct: &[u8]| keys.mac(iv, ct).finalize().into_bytes().to_vec();

        let short_iv = [1u8; 15];
        let ct = [0u8; 16];
        assert_eq!(
            keys.open(&short_iv, &ct, &tag_for(&short_iv, &ct)),
            Err(CryptoError::BadIv)
        );

        let iv = [1u8; 16];
        for ct in [vec![], vec![0u8; 15], vec![0u8; 17]] {
            assert_eq!(
                keys.open(&iv, &ct, &tag_for(&iv, &ct)),
                Err(CryptoError::BadPadding)
            );
        }

        // Encrypt 16 bytes with a last byte 0x00 (never valid PKCS7) by
        // sealing them plus a full padding block and dropping that block.
        let (full, _) = keys.seal(&iv, &[0u8; 16]);
        let bad = &full[..16];
        assert_eq!(
            keys.open(&iv, bad, &tag_for(&iv, bad)),
            Err(CryptoError::BadPadding)
        );
    }

    #[test]
    fn agree_rejects_wrong_length() {
        let pair = KeyPair::generate();
        assert_eq!(pair.agree(&[9u8; 31]), Err(CryptoError::BadKeyLength));
        assert_eq!(pair.agree(&[9u8; 33]), Err(CryptoError::BadKeyLength));
        assert_eq!(pair.agree(&[]), Err(CryptoError::BadKeyLength));
    }

    #[test]
    fn agree_rejects_low_order_points() {
        let pair = KeyPair::generate();
        for point in LOW_ORDER_POINTS {
            assert_eq!(
                pair.agree(&point),
                Err(CryptoError::LowOrderKey),
                "{point:?}"
            );
        }
        let other = KeyPair::generate();
        assert!(pair.agree(&other.public_bytes()).is_ok());
    }

    #[test]
    fn generated_pairs_differ_and_agree() {
        let a = KeyPair::generate();
        let b = KeyPair::generate();
        assert_ne!(a.public_bytes(), b.public_bytes());
        assert_eq!(
            a.agree(&b.public_bytes()).unwrap(),
            b.agree(&a.public_bytes()).unwrap()
        );
        assert_ne!(random_bytes::<32>(), random_bytes::<32>());
    }

    #[test]
    fn debug_output_redacts_keys() {
        let keys = transport_keys();
        let shown = format!("{keys:?} {:?}", KeyPair::generate());
        assert!(shown.contains("redacted"));
        let (aes, _) = keys.raw_keys_for_tests();
        assert!(!shown.contains(&b64_encode(aes)));
        assert!(!shown.contains(&format!("{}", aes[0])));
    }

    #[test]
    fn ed25519_login_vector() {
        let seed = array32(&["ed25519_login", "seed"]);
        let public = bytes(&["ed25519_login", "public_key"]);
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        assert_eq!(signing.verifying_key().to_bytes().to_vec(), public);
        assert!(ed25519_public_key_is_valid(&public));

        let nonce = bytes(&["ed25519_login", "nonce"]);
        let signature = bytes(&["ed25519_login", "signature"]);
        assert!(verify_ed25519(&public, &nonce, &signature));

        let mut other_nonce = nonce.clone();
        other_nonce[0] ^= 1;
        assert!(!verify_ed25519(&public, &other_nonce, &signature));
        let mut bad_sig = signature.clone();
        bad_sig[10] ^= 1;
        assert!(!verify_ed25519(&public, &nonce, &bad_sig));
        assert!(!verify_ed25519(&public, &nonce, &signature[..63]));
        assert!(!verify_ed25519(&public[..31], &nonce, &signature));
    }

    #[test]
    fn ed25519_public_key_validity() {
        assert!(!ed25519_public_key_is_valid(&[0u8; 31]));
        assert!(!ed25519_public_key_is_valid(&[0u8; 33]));
        // The identity point (small order) decodes but is weak.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(!ed25519_public_key_is_valid(&identity));
        // Some 32-byte strings are not the encoding of any curve point.
        let undecodable = (0u8..=255)
            .map(|b| [b; 32])
            .find(|candidate| ed25519_dalek::VerifyingKey::from_bytes(candidate).is_err())
            .unwrap();
        assert!(!ed25519_public_key_is_valid(&undecodable));
    }
}
