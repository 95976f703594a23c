//! TEMPORARY stand-in for the channel branch's `crypto` module (same API as
//! specified for it), so the client can be written before that branch lands.
//! Replaced wholesale by the real module when `channel` is merged.

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("bad base64")]
    Base64,
    #[error("bad key")]
    BadKey,
    #[error("hmac mismatch")]
    BadMac,
    #[error("bad padding")]
    BadPadding,
}

pub fn b64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE.encode(bytes)
}

pub fn b64_decode(text: &str) -> Result<Vec<u8>, CryptoError> {
    let t: String = text
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t)
        .map_err(|_| CryptoError::Base64)
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

pub struct SymmetricKeys {
    aes: [u8; 32],
    mac: [u8; 32],
}

impl SymmetricKeys {
    pub fn derive(shared: &[u8; 32], salt: &[u8], info: &[u8]) -> SymmetricKeys {
        let hk = hkdf::Hkdf::<Sha256>::new(Some(salt), shared);
        let mut okm = [0u8; 64];
        let _ = hk.expand(info, &mut okm);
        let mut aes = [0u8; 32];
        let mut mac = [0u8; 32];
        aes.copy_from_slice(&okm[..32]);
        mac.copy_from_slice(&okm[32..]);
        SymmetricKeys { aes, mac }
    }

    fn tag(&self, iv: &[u8], ct: &[u8]) -> HmacSha256 {
        let mut m =
            <HmacSha256 as Mac>::new_from_slice(&self.mac).unwrap_or_else(|_| unreachable!());
        m.update(iv);
        m.update(ct);
        m
    }

    pub fn seal(&self, iv: &[u8; 16], plaintext: &[u8]) -> (Vec<u8>, [u8; 32]) {
        let ct = cbc::Encryptor::<aes::Aes256>::new(&self.aes.into(), iv.into())
            .encrypt_padded_vec_mut::<Pkcs7>(plaintext);
        let tag: [u8; 32] = self.tag(iv, &ct).finalize().into_bytes().into();
        (ct, tag)
    }

    pub fn verify(&self, iv: &[u8], ct: &[u8], tag: &[u8]) -> bool {
        self.tag(iv, ct).verify_slice(tag).is_ok()
    }

    pub fn open(&self, iv: &[u8], ct: &[u8], tag: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if !self.verify(iv, ct, tag) {
            return Err(CryptoError::BadMac);
        }
        let iv: [u8; 16] = iv.try_into().map_err(|_| CryptoError::BadPadding)?;
        cbc::Decryptor::<aes::Aes256>::new(&self.aes.into(), &iv.into())
            .decrypt_padded_vec_mut::<Pkcs7>(ct)
            .map_err(|_| CryptoError::BadPadding)
    }
}

pub struct KeyPair {
    secret: x25519_dalek::StaticSecret,
}

impl KeyPair {
    pub fn generate() -> KeyPair {
        KeyPair::from_private_bytes(random_bytes::<32>())
    }
    pub fn from_private_bytes(b: [u8; 32]) -> KeyPair {
        KeyPair {
            secret: x25519_dalek::StaticSecret::from(b),
        }
    }
    pub fn public_bytes(&self) -> [u8; 32] {
        x25519_dalek::PublicKey::from(&self.secret).to_bytes()
    }
    pub fn agree(&self, peer: &[u8]) -> Result<[u8; 32], CryptoError> {
        let p: [u8; 32] = peer.try_into().map_err(|_| CryptoError::BadKey)?;
        let s = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(p));
        if !s.was_contributory() {
            return Err(CryptoError::BadKey);
        }
        Ok(s.to_bytes())
    }
}

pub fn verify_ed25519(pk: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    let Ok(pk) = <[u8; 32]>::try_from(pk) else {
        return false;
    };
    let Ok(sig) = <[u8; 64]>::try_from(sig) else {
        return false;
    };
    let Ok(vk) = ed25519_dalek::VerifyingKey::from_bytes(&pk) else {
        return false;
    };
    vk.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&sig))
        .is_ok()
}
