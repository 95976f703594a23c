//! The client <-> server secure channel of PROTOCOL.md section 2: the plain
//! X25519 handshake, the `{"iv","payload","hmac"}` frames (AES-256-CBC +
//! HMAC-SHA256, checked before decrypting) and key renewal (section 2.1).
//!
//! Pure state machines: no sockets, no threads, no clocks (the owner passes
//! `now`), no logging. The server side is [`ServerChannel`]; the client side
//! ([`ClientChannel`]) serves the crate's own client library, tests and the
//! benchmark. Renegotiation messages are handled inside the channel and never
//! reach the command layer.

mod client;
mod frame;
mod keyring;
mod messages;
mod renewal;
mod replay;
mod server;

pub use client::{ClientChannel, ClientHandshake, ClientInbound, ClientRenewalMode};
pub use frame::Frame;
pub use messages::Object;
pub use renewal::{PolicyError, RenewalPolicy};
pub use server::{Inbound, ServerChannel};

use crate::crypto::CryptoError;

/// WebSocket close code for a malformed frame.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// WebSocket close code for a failed HMAC or a broken rule.
pub const CLOSE_POLICY_VIOLATION: u16 = 1008;

/// Why a channel cannot go on. Every variant ends the connection; use
/// [`ChannelError::close_code`] for the WebSocket close code. No variant
/// carries key material or plaintext.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChannelError {
    #[error("frame is not a JSON object")]
    NotJson,
    #[error("missing or non-string field `{0}`")]
    MissingField(&'static str),
    #[error("field `{0}` is not valid base64")]
    BadBase64(&'static str),
    #[error("expected a {expected} message")]
    UnexpectedHandshake { expected: &'static str },
    #[error("bad public key in {context}: {source}")]
    BadKey {
        context: &'static str,
        source: CryptoError,
    },
    #[error("frame HMAC does not verify")]
    BadMac,
    #[error("authenticated frame does not decrypt: {0}")]
    Undecryptable(CryptoError),
    #[error("plaintext is not UTF-8")]
    NotUtf8,
    #[error("plaintext is not a JSON object with a string \"type\"")]
    BadPlaintext,
    #[error("unsolicited RENEGOTIATE_RESPONSE")]
    UnsolicitedResponse,
    #[error("frame replayed (its HMAC tag was seen recently)")]
    Replayed,
}

impl ChannelError {
    /// 1002 for a malformed frame, 1008 for a failed HMAC or a broken rule.
    pub fn close_code(&self) -> u16 {
        match self {
            ChannelError::NotJson
            | ChannelError::MissingField(_)
            | ChannelError::BadBase64(_)
            | ChannelError::Undecryptable(_)
            | ChannelError::NotUtf8
            | ChannelError::BadPlaintext => CLOSE_PROTOCOL_ERROR,
            ChannelError::UnexpectedHandshake { .. }
            | ChannelError::BadKey { .. }
            | ChannelError::BadMac
            | ChannelError::UnsolicitedResponse
            | ChannelError::Replayed => CLOSE_POLICY_VIOLATION,
        }
    }
}

#[cfg(test)]
mod renewal_tests;
#[cfg(test)]
mod tests;
