//! Password hashing: argon2id PHC strings with configurable parameters,
//! verification of any argon2 PHC string (the Python server's m=65536,t=3,p=4
//! hashes included), the "needs rehash" test, and a dummy hash so that an
//! unknown user costs the same time as a wrong password.
//!
//! The argon2 memory (19 MiB at the default parameters) is kept in a small
//! pool and reused from one hash to the next: a fresh allocation costs a
//! page fault and a zeroing per 4 KiB page on every hash, a quarter of the
//! hash's time. The pool keeps at most as many buffers as hashes may run at
//! once (the hash gate's limit), so it never holds more than that much.

use std::sync::{Mutex, MutexGuard};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

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
    memory: MemoryPool,
}

impl PasswordHasher {
    /// A hasher for `params` that keeps argon2 memory for up to
    /// `concurrent` hashes at once; makes the dummy hash once.
    pub fn new(params: HashParams, concurrent: usize) -> Result<PasswordHasher, PasswordError> {
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
            memory: MemoryPool::new(concurrent),
        };
        hasher.dummy_hash = hasher.hash("dummy password for unknown users")?;
        Ok(hasher)
    }

    /// A new argon2id PHC string for `password`.
    pub fn hash(&self, password: &str) -> Result<String, PasswordError> {
        self.hash_with_salt(password, &SaltString::generate(&mut OsRng))
    }

    fn hash_with_salt(&self, password: &str, salt: &SaltString) -> Result<String, PasswordError> {
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone());
        let output_len = self
            .params
            .output_len()
            .unwrap_or(Params::DEFAULT_OUTPUT_LEN);
        let failed = |error: &dyn std::fmt::Display| PasswordError::Hash(error.to_string());
        let output = self
            .compute(&argon2, password, salt.as_salt(), output_len)
            .map_err(|error| failed(&error))?;
        let params = ParamsString::try_from(&self.params).map_err(|error| failed(&error))?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params,
            salt: Some(salt.as_salt()),
            hash: Some(output),
        };
        Ok(phc.to_string())
    }

    /// argon2 of `password` and `salt` with `argon2`'s settings, in pooled
    /// memory.
    fn compute(
        &self,
        argon2: &Argon2<'_>,
        password: &str,
        salt: Salt<'_>,
        output_len: usize,
    ) -> argon2::password_hash::Result<Output> {
        let mut salt_bytes = [0u8; Salt::MAX_LENGTH];
        let salt = salt.decode_b64(&mut salt_bytes)?;
        let mut memory = self.memory.take();
        let needed = argon2.params().block_count();
        if memory.len() < needed {
            memory.resize(needed, Block::default());
        }
        let output = Output::init_with(output_len, |out| {
            Ok(argon2.hash_password_into_with_memory(
                password.as_bytes(),
                salt,
                out,
                &mut memory[..],
            )?)
        });
        self.memory.give_back(memory);
        output
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

    /// The stored hash when `password` matches it. Algorithm, version and
    /// parameters come from the hash; the outputs are compared in constant
    /// time (`Output`'s equality).
    fn check<'a>(&self, password: &str, stored: &'a str) -> Option<PasswordHash<'a>> {
        let hash = PasswordHash::new(stored).ok()?;
        let expected = hash.hash?;
        let algorithm = Algorithm::try_from(hash.algorithm).ok()?;
        let version = match hash.version {
            Some(version) => Version::try_from(version).ok()?,
            None => Version::default(),
        };
        let params = Params::try_from(&hash).ok()?;
        let argon2 = Argon2::new(algorithm, version, params);
        let computed = self
            .compute(&argon2, password, hash.salt?, expected.len())
            .ok()?;
        (computed == expected).then_some(hash)
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

/// Argon2 memory kept between hashes: at most `keep` buffers, each as big as
/// the largest hash it served (a seed hash at m=65536 grows one to 64 MiB).
struct MemoryPool {
    buffers: Mutex<Vec<Vec<Block>>>,
    keep: usize,
}

impl MemoryPool {
    fn new(keep: usize) -> MemoryPool {
        MemoryPool {
            buffers: Mutex::new(Vec::new()),
            keep: keep.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Vec<Block>>> {
        self.buffers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A buffer from the pool, or an empty one to be grown by the caller.
    fn take(&self) -> Vec<Block> {
        self.lock().pop().unwrap_or_default()
    }

    /// Keeps `buffer` for the next hash unless the pool is full.
    fn give_back(&self, buffer: Vec<Block>) {
        let mut buffers = self.lock();
        if buffers.len() < self.keep {
            buffers.push(buffer);
        }
    }

    #[cfg(test)]
    fn pooled(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordHasher {
        PasswordHasher::new(
            HashParams {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            },
            2,
        )
        .unwrap()
    }

    use crate::crypto::test_vectors::vectors;

    #[test]
    fn new_hashes_are_argon2id_with_the_configured_parameters() {
        let hasher = cheap();
        let hash = hasher.hash("secret").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
        assert_only_secret_verifies(&hasher, &hash);
    }

    /// `hash` (current parameters) verifies "secret" and nothing else.
    fn assert_only_secret_verifies(hasher: &PasswordHasher, hash: &str) {
        assert_eq!(
            hasher.verify("secret", Some(hash)),
            Verification::Valid {
                needs_rehash: false
            }
        );
        assert_eq!(hasher.verify("Secret", Some(hash)), Verification::Invalid);
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

    /// The pooled buffer is dirty from the previous hash and, after a seed
    /// hash, bigger than needed: the hashes must still be argon2's own.
    #[test]
    fn pooled_memory_gives_the_hashes_of_fresh_memory() {
        use argon2::password_hash::PasswordHasher as _;
        let hasher = cheap();
        let salt = SaltString::from_b64("c2FsdHNhbHRzYWx0c2FsdA").unwrap();
        let fresh = Argon2::new(Algorithm::Argon2id, Version::V0x13, hasher.params.clone())
            .hash_password(b"secret", &salt)
            .unwrap()
            .to_string();
        assert_eq!(hasher.hash_with_salt("secret", &salt).unwrap(), fresh);
        assert_eq!(hasher.hash_with_salt("secret", &salt).unwrap(), fresh);
        let seed = &vectors()["argon2"];
        let phc = seed["phc_from_seed_server"].as_str().unwrap();
        let password = seed["password"].as_str().unwrap();
        assert!(matches!(
            hasher.verify(password, Some(phc)),
            Verification::Valid { .. }
        ));
        assert_eq!(hasher.hash_with_salt("secret", &salt).unwrap(), fresh);
        assert_only_secret_verifies(&hasher, &fresh);
    }

    #[test]
    fn the_pool_keeps_no_more_buffers_than_hashes_may_run_at_once() {
        let hasher = cheap();
        std::thread::scope(|scope| {
            for _ in 0..6 {
                scope.spawn(|| {
                    for _ in 0..20 {
                        hasher.hash("secret").unwrap();
                    }
                });
            }
        });
        assert!(hasher.memory.pooled() <= 2, "{}", hasher.memory.pooled());
        assert!(hasher.memory.pooled() >= 1, "memory is reused");
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
