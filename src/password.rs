//! Password hashing: argon2id PHC strings with configurable parameters,
//! verification of any argon2 PHC string (the Python server's m=65536,t=3,p=4
//! hashes included), the "needs rehash" test, and a dummy hash so that an
//! unknown user costs the same time as a wrong password.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::config::HashParams;

/// Why a hash could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("invalid argon2 parameters: {0}")]
    Params(String),
    #[error("hashing failed: {0}")]
    Hash(String),
}

/// The outcome of a password check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The password matches; `needs_rehash` when the stored hash was made
    /// with other parameters than the configured ones.
    Valid {
        needs_rehash: bool,
    },
    Invalid,
}

/// Hashes and verifies passwords with the configured argon2id parameters.
pub struct PasswordHasher {
    params: Params,
    dummy_hash: String,
}

impl PasswordHasher {
    /// A hasher for `params`; makes the dummy hash once.
    pub fn new(params: HashParams) -> Result<PasswordHasher, PasswordError> {
        let params = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .map_err(|error| PasswordError::Params(error.to_string()))?;
        let mut hasher = PasswordHasher {
            params,
            dummy_hash: String::new(),
        };
        hasher.dummy_hash = hasher.hash("dummy password for unknown users")?;
        Ok(hasher)
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// A new argon2id PHC string for `password`.
    pub fn hash(&self, password: &str) -> Result<String, PasswordError> {
        let salt = SaltString::generate(&mut OsRng);
        self.argon2()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|error| PasswordError::Hash(error.to_string()))
    }

    /// Checks `password` against a stored PHC string; `None` (unknown user)
    /// runs the same work against the dummy hash and is always invalid.
    pub fn verify(&self, password: &str, stored: Option<&str>) -> Verification {
        let Some(stored) = stored else {
            let _ = self.check(password, &self.dummy_hash);
            return Verification::Invalid;
        };
        match self.check(password, stored) {
            Some(hash) => Verification::Valid {
                needs_rehash: !self.is_current(&hash),
            },
            None => Verification::Invalid,
        }
    }

    fn check<'a>(&self, password: &str, stored: &'a str) -> Option<PasswordHash<'a>> {
        let hash = PasswordHash::new(stored).ok()?;
        // The verifier takes algorithm, version and parameters from the hash.
        self.argon2()
            .verify_password(password.as_bytes(), &hash)
            .ok()
            .map(|()| hash)
    }

    fn is_current(&self, hash: &PasswordHash<'_>) -> bool {
        let same_algorithm = hash.algorithm == Algorithm::Argon2id.ident();
        let same_version = hash.version == Some(Version::V0x13.into());
        let same_params = Params::try_from(hash).is_ok_and(|params| {
            params.m_cost() == self.params.m_cost()
                && params.t_cost() == self.params.t_cost()
                && params.p_cost() == self.params.p_cost()
        });
        same_algorithm && same_version && same_params
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordHasher {
        PasswordHasher::new(HashParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        })
        .unwrap()
    }

    use crate::crypto::test_vectors::vectors;

    #[test]
    fn new_hashes_are_argon2id_with_the_configured_parameters() {
        let hasher = cheap();
        let hash = hasher.hash("secret").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
        assert_eq!(
            hasher.verify("secret", Some(&hash)),
            Verification::Valid {
                needs_rehash: false
            }
        );
        assert_eq!(hasher.verify("Secret", Some(&hash)), Verification::Invalid);
    }

    #[test]
    fn seed_server_hash_verifies_and_asks_for_a_rehash() {
        let vectors = vectors();
        let argon2 = &vectors["argon2"];
        let phc = argon2["phc_from_seed_server"].as_str().unwrap();
        let password = argon2["password"].as_str().unwrap();
        let hasher = cheap();
        assert_eq!(
            hasher.verify(password, Some(phc)),
            Verification::Valid { needs_rehash: true }
        );
        assert_eq!(hasher.verify("wrong", Some(phc)), Verification::Invalid);
    }

    #[test]
    fn unknown_users_and_garbage_hashes_never_verify() {
        let hasher = cheap();
        assert_eq!(hasher.verify("anything", None), Verification::Invalid);
        assert_eq!(
            hasher.verify("anything", Some("not a phc string")),
            Verification::Invalid
        );
    }
}
