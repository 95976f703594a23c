//! The user's long-term Ed25519 identity key: the key registered with the
//! server, used to answer login challenges and to sign peer-authentication
//! nonces. Stored, like the mobile client does, as its 32-byte seed.

use crate::crypto::{b64_encode, random_bytes};
use ed25519_dalek::{Signer, SigningKey};

/// An Ed25519 signing key. `Debug` shows the public key only.
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
}

impl Identity {
    /// A fresh random identity.
    pub fn generate() -> Identity {
        Identity {
            key: SigningKey::from_bytes(&random_bytes::<32>()),
        }
    }

    /// The identity whose 32-byte seed (the "private key" the mobile client
    /// stores, `extractPrivateKeyBytes`) is `seed`.
    pub fn from_seed(seed: [u8; 32]) -> Identity {
        Identity {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// The 32-byte seed.
    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The raw 32-byte public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The public key as the server stores it: url-safe base64 with padding.
    pub fn public_key_b64(&self) -> String {
        b64_encode(&self.public_key())
    }

    /// Ed25519 signature of `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).to_bytes()
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("public_key", &self.public_key_b64())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{b64_decode, verify_ed25519};

    use crate::crypto::test_vectors::vectors;

    #[test]
    fn login_vector_signature() {
        let v = &vectors()["ed25519_login"];
        let seed: [u8; 32] = b64_decode(v["seed"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let id = Identity::from_seed(seed);
        assert_eq!(id.seed(), seed);
        assert_eq!(id.public_key_b64(), v["public_key"].as_str().unwrap());
        let nonce = b64_decode(v["nonce"].as_str().unwrap()).unwrap();
        let sig = id.sign(&nonce);
        assert_eq!(b64_encode(&sig), v["signature"].as_str().unwrap());
        assert!(verify_ed25519(&id.public_key(), &nonce, &sig));
    }

    #[test]
    fn debug_hides_the_seed() {
        let id = Identity::from_seed([7u8; 32]);
        let shown = format!("{id:?}");
        assert!(shown.contains(&id.public_key_b64()));
        assert!(!shown.contains(&b64_encode(&id.seed())));
        assert!(!shown.contains("7, 7"));
        assert_ne!(Identity::generate().seed(), Identity::generate().seed());
    }
}
