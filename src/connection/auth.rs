//! The authentication phase (PROTOCOL.md section 3): `REGISTER`, `LOGIN`,
//! `LOGIN_CHALLENGE_REQUEST` / `LOGIN_CHALLENGE_RESPONSE`.
//!
//! Rules kept here: every auth command gets exactly one answer before any
//! close; never `ERROR` in this phase; close after `LOGIN_FAILED`; at most
//! [`MAX_AUTH_COMMANDS`] commands per connection; a challenge belongs to this
//! connection, is used once and expires; unknown user and wrong password get
//! the same answer after the same argon2 work; a password login's new key is
//! committed before `LOGIN_SUCCESS`.

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Receiver;
use log::{info, warn};

use super::link::{Link, LinkError};
use super::Services;
use crate::channel::Inbound;
use crate::crypto;
use crate::dispatcher::{ConnId, Envelope, LoginOutcome, LoginRequest};
use crate::outbox::{Outbox, Outgoing};
use crate::password::Verification;
use crate::presence::fold;
use crate::protocol::{self, messages, status, AuthCommand, Command, CommandError};
use crate::store::{StoreError, UserRecord};

/// Auth commands one connection may send; the next one is refused and closed.
pub const MAX_AUTH_COMMANDS: usize = 5;

/// Longest username, in characters.
const MAX_USERNAME_CHARS: usize = 64;

/// Shortest password of a new registration, in bytes (logins of existing
/// accounts are not checked against it).
const MIN_PASSWORD_BYTES: usize = 6;

/// Longest password, in bytes (bounds the argon2 input).
const MAX_PASSWORD_BYTES: usize = 1024;

/// A connection that became its user's session.
pub struct LoggedIn {
    /// The spelling stored at registration.
    pub user: Arc<str>,
    pub outbox: Arc<Outbox>,
    pub receiver: Receiver<Outgoing>,
}

/// A login challenge issued on this connection.
struct Challenge {
    user_key: String,
    nonce: [u8; 32],
    issued: Instant,
}

/// What one auth command led to.
enum Step {
    /// Answered; wait for the next command.
    Continue,
    /// Answered with `LOGIN_FAILED`: close.
    Failed,
    LoggedIn(LoggedIn),
}

/// Runs the authentication phase. `Ok(None)`: it ended without a login
/// (after `LOGIN_FAILED` or too many commands); the caller closes.
pub fn authenticate(
    link: &mut Link,
    conn: ConnId,
    services: &Services,
) -> Result<Option<LoggedIn>, LinkError> {
    let timeout = services.config.auth_timeout;
    link.set_deadline(Some(Instant::now() + timeout));
    let mut auth = Authenticator {
        link,
        conn,
        services,
        challenge: None,
        kind: "other",
    };
    let mut commands = 0;
    loop {
        let parsed = match auth.link.read() {
            Ok(Some(Inbound::Command(object))) => protocol::parse_command(&object),
            Ok(Some(Inbound::Routed(command))) => Ok(Command::Chat(command)),
            Ok(Some(Inbound::Control(reply))) => {
                if let Some(frame) = reply {
                    auth.link.send_sealed_now(frame)?;
                }
                continue;
            }
            Ok(None) => continue,
            Err(LinkError::WouldBlock) => return Err(LinkError::TimedOut),
            Err(error) => return Err(error),
        };
        commands += 1;
        if commands > MAX_AUTH_COMMANDS {
            auth.answer(status::SERVER_ERROR, Some(messages::TOO_MANY_AUTH_COMMANDS))?;
            return Ok(None);
        }
        match auth.handle(parsed)? {
            Step::Continue => auth.link.set_deadline(Some(Instant::now() + timeout)),
            Step::Failed => return Ok(None),
            Step::LoggedIn(login) => return Ok(Some(login)),
        }
    }
}

struct Authenticator<'a> {
    link: &'a mut Link,
    conn: ConnId,
    services: &'a Services,
    challenge: Option<Challenge>,
    /// What the command being answered is, for the metrics: register,
    /// password, challenge or other.
    kind: &'static str,
}

impl Authenticator<'_> {
    fn handle(&mut self, parsed: Result<Command, CommandError>) -> Result<Step, LinkError> {
        self.kind = "other";
        match parsed {
            Ok(Command::Auth(command)) => self.command(command),
            Ok(Command::Chat(_) | Command::Unknown(_)) => {
                self.answer(status::SERVER_ERROR, Some(messages::LOGIN_REQUIRED))?;
                Ok(Step::Continue)
            }
            Err(error) => {
                self.answer(status::SERVER_ERROR, Some(&error.to_string()))?;
                Ok(Step::Continue)
            }
        }
    }

    fn command(&mut self, command: AuthCommand) -> Result<Step, LinkError> {
        self.kind = match &command {
            AuthCommand::Register { .. } => "register",
            AuthCommand::Login { .. } => "password",
            AuthCommand::ChallengeRequest { .. } | AuthCommand::ChallengeResponse { .. } => {
                "challenge"
            }
        };
        match command {
            AuthCommand::Register {
                username,
                password,
                public_key,
            } => self.register(&username, &password, &public_key),
            AuthCommand::Login {
                username,
                password,
                new_public_key,
            } => self.password_login(&username, &password, new_public_key.as_deref()),
            AuthCommand::ChallengeRequest { username } => self.issue_challenge(&username),
            AuthCommand::ChallengeResponse {
                username,
                signature,
            } => self.challenge_login(&username, &signature),
        }
    }

    fn answer(&mut self, status: &str, message: Option<&str>) -> Result<(), LinkError> {
        let result = match status {
            status::REGISTER_SUCCESS | status::LOGIN_SUCCESS => "success",
            status::LOGIN_FAILED => "failure",
            status::USERNAME_EXISTS => "username_exists",
            _ => "error",
        };
        self.services.metrics.count_auth(self.kind, result);
        self.link
            .send_now(&protocol::auth_response(status, message))
    }

    fn fail(&mut self, message: &str) -> Result<Step, LinkError> {
        self.answer(status::LOGIN_FAILED, Some(message))?;
        Ok(Step::Failed)
    }

    fn server_error(&mut self, message: &str) -> Result<Step, LinkError> {
        self.answer(status::SERVER_ERROR, Some(message))?;
        Ok(Step::Continue)
    }

    fn store_error(&mut self, username: &str, error: &StoreError) -> Result<Step, LinkError> {
        warn!("{} {username}: store error: {error}", self.link.peer);
        self.server_error(messages::STORE_UNAVAILABLE)
    }

    fn register(
        &mut self,
        username: &str,
        password: &str,
        public_key: &str,
    ) -> Result<Step, LinkError> {
        if let Err(reason) = validate_username(username) {
            return self.server_error(reason);
        }
        if password.len() < MIN_PASSWORD_BYTES || password.len() > MAX_PASSWORD_BYTES {
            return self.server_error("password must be 6 to 1024 bytes");
        }
        let Some(public_key) = normalized_identity_key(public_key) else {
            return self.server_error("public_key must be a base64 Ed25519 public key");
        };
        let store = &self.services.store;
        match store.find_user(username) {
            Ok(Some(_)) => return self.username_taken(),
            Ok(None) => {}
            Err(error) => return self.store_error(username, &error),
        }
        let address = self.link.peer.ip();
        if self
            .services
            .throttle
            .registration(address, Instant::now())
            .is_err()
        {
            info!(
                "{} {username}: registration throttled (address)",
                self.link.peer
            );
            return self.server_error(messages::TOO_MANY_ATTEMPTS);
        }
        let Some(_turn) = self.services.hash_gate.enter() else {
            info!(
                "{} {username}: registration refused, argon2 queue full",
                self.link.peer
            );
            return self.server_error(messages::SERVER_BUSY);
        };
        let hash = match self.services.passwords.hash(password) {
            Ok(hash) => hash,
            Err(error) => {
                warn!("{} {username}: hashing failed: {error}", self.link.peer);
                return self.server_error("could not hash the password");
            }
        };
        match store.create_user(username, &hash, &public_key) {
            Ok(()) => {}
            Err(StoreError::UsernameTaken) => return self.username_taken(),
            Err(error) => return self.store_error(username, &error),
        }
        info!("{} {username}: registered", self.link.peer);
        let _ = self.services.dispatcher.send(Envelope::Registered {
            username: username.to_owned(),
        });
        self.answer(status::REGISTER_SUCCESS, None)?;
        Ok(Step::Continue)
    }

    fn username_taken(&mut self) -> Result<Step, LinkError> {
        self.answer(status::USERNAME_EXISTS, Some("username already exists"))?;
        Ok(Step::Continue)
    }

    fn password_login(
        &mut self,
        username: &str,
        password: &str,
        new_public_key: Option<&str>,
    ) -> Result<Step, LinkError> {
        let new_key = match new_public_key.map(normalized_identity_key) {
            Some(None) => {
                return self.server_error("new_public_key must be a base64 Ed25519 public key")
            }
            Some(Some(key)) => Some(key),
            None => None,
        };
        let address = self.link.peer.ip();
        let throttle = &self.services.throttle;
        if let Err(by) = throttle.password_login(username, address, Instant::now()) {
            info!(
                "{} {username}: password login throttled ({by:?})",
                self.link.peer
            );
            return self.fail(messages::TOO_MANY_ATTEMPTS);
        }
        let record = match self.services.store.find_user(username) {
            Ok(record) => record,
            Err(error) => return self.store_error(username, &error),
        };
        let Some(turn) = self.services.hash_gate.enter() else {
            info!(
                "{} {username}: password login refused, argon2 queue full",
                self.link.peer
            );
            return self.server_error(messages::SERVER_BUSY);
        };
        let stored_hash = record.as_ref().map(|record| record.password_hash.as_str());
        let verification = self.services.passwords.verify(password, stored_hash);
        let (record, needs_rehash) = match (record, verification) {
            (Some(record), Verification::Valid { needs_rehash }) => (record, needs_rehash),
            _ => {
                info!("{} {username}: password login failed", self.link.peer);
                throttle.password_failed(username, address, Instant::now());
                return self.fail(messages::INVALID_CREDENTIALS);
            }
        };
        throttle.login_succeeded(username);
        if needs_rehash {
            self.rehash(&record, password);
        }
        drop(turn);
        if let Some(key) = new_key {
            if let Err(error) = self.services.store.set_public_key(record.id, &key) {
                return self.store_error(&record.username, &error);
            }
        }
        self.become_session(&record.username, None, "password")
    }

    /// Stores a hash with the configured parameters; a failure only costs a
    /// rehash at the next login.
    fn rehash(&mut self, record: &UserRecord, password: &str) {
        let stored = self
            .services
            .passwords
            .hash(password)
            .map_err(|error| error.to_string())
            .and_then(|hash| {
                self.services
                    .store
                    .set_password_hash(record.id, &hash)
                    .map_err(|error| error.to_string())
            });
        match stored {
            Ok(()) => info!("{} {}: password rehashed", self.link.peer, record.username),
            Err(error) => warn!(
                "{} {}: rehash not stored: {error}",
                self.link.peer, record.username
            ),
        }
    }

    fn issue_challenge(&mut self, username: &str) -> Result<Step, LinkError> {
        let challenge = Challenge {
            user_key: fold(username),
            nonce: crypto::random_bytes::<32>(),
            issued: Instant::now(),
        };
        let nonce = crypto::b64_encode(&challenge.nonce);
        self.challenge = Some(challenge);
        self.link.send_now(&protocol::login_challenge(&nonce))?;
        Ok(Step::Continue)
    }

    fn challenge_login(&mut self, username: &str, signature: &str) -> Result<Step, LinkError> {
        let address = self.link.peer.ip();
        if self
            .services
            .throttle
            .challenge_login(address, Instant::now())
            .is_err()
        {
            info!(
                "{} {username}: challenge login throttled (address)",
                self.link.peer
            );
            return self.fail(messages::TOO_MANY_ATTEMPTS);
        }
        let step = self.check_challenge(username, signature)?;
        if let Step::Failed = step {
            self.services
                .throttle
                .challenge_failed(address, Instant::now());
        }
        Ok(step)
    }

    fn check_challenge(&mut self, username: &str, signature: &str) -> Result<Step, LinkError> {
        let Some(challenge) = self.challenge.take() else {
            return self.fail(messages::NO_CHALLENGE);
        };
        if challenge.user_key != fold(username) {
            return self.fail(messages::NO_CHALLENGE);
        }
        if challenge.issued.elapsed() > self.services.config.challenge_lifetime {
            return self.fail(messages::CHALLENGE_EXPIRED);
        }
        let record = match self.services.store.find_user(username) {
            Ok(Some(record)) => record,
            Ok(None) => return self.fail(messages::INVALID_SIGNATURE),
            Err(error) => return self.store_error(username, &error),
        };
        if !signature_valid(&record.public_key, &challenge.nonce, signature) {
            info!("{} {username}: challenge login failed", self.link.peer);
            return self.fail(messages::INVALID_SIGNATURE);
        }
        self.become_session(&record.username, Some(challenge.issued), "challenge")
    }

    /// Hands the authenticated connection to the dispatcher and answers
    /// `LOGIN_SUCCESS` once it is the user's session.
    fn become_session(
        &mut self,
        username: &str,
        challenge_issued: Option<Instant>,
        method: &str,
    ) -> Result<Step, LinkError> {
        if self.link.peer_gone() {
            info!("{} {username}: left during login", self.link.peer);
            return Err(LinkError::Closed);
        }
        let (outbox, receiver) = Outbox::new(self.services.config.outbox_capacity);
        let (reply, outcome) = crossbeam_channel::bounded(1);
        let request = LoginRequest {
            conn: self.conn,
            username: username.to_owned(),
            peer: self.link.peer,
            outbox: outbox.clone(),
            challenge_issued,
            reply,
        };
        if self
            .services
            .dispatcher
            .send(Envelope::Login(Box::new(request)))
            .is_err()
        {
            return self.server_error("server shutting down");
        }
        match outcome.recv() {
            Ok(LoginOutcome::Accepted) => {}
            Ok(LoginOutcome::ChallengeVoided) => return self.fail(messages::INVALID_SIGNATURE),
            Err(_) => return self.server_error("server shutting down"),
        }
        info!("{} {username}: logged in ({method})", self.link.peer);
        self.answer(status::LOGIN_SUCCESS, None)?;
        Ok(Step::LoggedIn(LoggedIn {
            user: Arc::from(username),
            outbox,
            receiver,
        }))
    }
}

/// Registration rules for names (PROTOCOL.md section 3).
pub fn validate_username(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("username must not be empty");
    }
    if name.chars().count() > MAX_USERNAME_CHARS {
        return Err("username must be at most 64 characters");
    }
    if name.chars().any(char::is_whitespace) {
        return Err("username must not contain whitespace");
    }
    if name.chars().any(char::is_control) {
        return Err("username must not contain control characters");
    }
    Ok(())
}

/// The key re-encoded as padded url-safe base64, if it is a valid Ed25519
/// public key.
fn normalized_identity_key(key: &str) -> Option<String> {
    let bytes = crypto::b64_decode(key).ok()?;
    crypto::ed25519_public_key_is_valid(&bytes).then(|| crypto::b64_encode(&bytes))
}

fn signature_valid(public_key: &str, nonce: &[u8], signature: &str) -> bool {
    match (
        crypto::b64_decode(public_key),
        crypto::b64_decode(signature),
    ) {
        (Ok(key), Ok(signature)) => crypto::verify_ed25519(&key, nonce, &signature),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn username_rules() {
        assert!(validate_username("ana").is_ok());
        assert!(validate_username("Ana Maria").is_err());
        assert!(validate_username("ana\u{a0}maria").is_err());
        assert!(validate_username(&"é".repeat(64)).is_ok());
        assert!(validate_username("").is_err());
        assert!(validate_username(" ana").is_err());
        assert!(validate_username("ana\t").is_err());
        assert!(validate_username("a\u{7}b").is_err());
        assert!(validate_username(&"x".repeat(65)).is_err());
    }

    #[test]
    fn identity_keys_are_checked_and_normalised() {
        let vectors = crate::crypto::test_vectors::vectors();
        let key = vectors["ed25519_login"]["public_key"].as_str().unwrap();
        assert_eq!(normalized_identity_key(key).as_deref(), Some(key));
        let unpadded = key.trim_end_matches('=');
        assert_eq!(normalized_identity_key(unpadded).as_deref(), Some(key));
        assert_eq!(normalized_identity_key("c2hvcnQ="), None);
        assert_eq!(normalized_identity_key("not base64!"), None);
    }
}
