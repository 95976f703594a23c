//! The client library's error type.

use crate::channel::ChannelError;

use super::e2ee::E2eeError;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Socket error (connect, read, write).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The server closed the connection (`code` 1006 when it did so without
    /// a close frame, 1005 when the frame had no code).
    #[error("connection closed (code {code}, reason {reason:?})")]
    Closed { code: u16, reason: String },
    /// Nothing (or not the awaited thing) arrived in time.
    #[error("timed out")]
    Timeout,
    /// The server sent something the protocol does not allow.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The secure channel rejected a frame or the handshake.
    #[error("secure channel: {0}")]
    Channel(#[from] ChannelError),
    /// WebSocket-level failure.
    #[error("WebSocket: {0}")]
    WebSocket(String),
    /// The URL is not `ws://host[:port][/path]`.
    #[error("bad URL: {0}")]
    Url(String),
    /// An authentication command was answered with a failure.
    #[error("authentication failed: {status} ({message:?})")]
    Auth {
        status: String,
        message: Option<String>,
    },
    /// The peer layer refused (e.g. no session with an offline peer).
    #[error("E2EE: {0}")]
    E2ee(#[from] E2eeError),
}

/// Result of the client library.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
