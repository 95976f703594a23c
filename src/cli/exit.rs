//! Exit codes and the one-line failure every command ends with.

use crate::client::ClientError;

/// Success.
pub const OK: u8 = 0;
/// The command could not do what was asked (no such user, no E2EE session
/// with an offline peer, a peer handshake failed, a local file problem).
pub const FAILED: u8 = 1;
/// Bad command line or missing input.
pub const USAGE: u8 = 2;
/// The server refused the login or the registration.
pub const AUTH: u8 = 3;
/// The server cannot be reached, closed the connection or reported an error.
pub const NETWORK: u8 = 4;
/// `recv --count N --timeout S`: fewer than N messages came in time.
pub const TIMEOUT: u8 = 5;

/// Why a command failed: an exit code and one line for stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::new(USAGE, message)
    }

    pub fn failed(message: impl Into<String>) -> Failure {
        Failure::new(FAILED, message)
    }

    pub fn network(message: impl Into<String>) -> Failure {
        Failure::new(NETWORK, message)
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        let code = match &e {
            ClientError::Url(_) => USAGE,
            ClientError::Auth { .. } => AUTH,
            ClientError::E2ee(_) => FAILED,
            _ => NETWORK,
        };
        let message = match e {
            ClientError::Closed { .. } => "the server closed the connection".to_string(),
            ClientError::Timeout => "the server did not answer in time".to_string(),
            other => other.to_string(),
        };
        Failure::new(code, message)
    }
}

/// Result of a command.
pub type CliResult<T> = Result<T, Failure>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_map_to_exit_codes() {
        let closed = ClientError::Closed {
            code: 1006,
            reason: String::new(),
        };
        assert_eq!(Failure::from(closed).code, NETWORK);
        assert_eq!(Failure::from(ClientError::Url("x".into())).code, USAGE);
        let auth = ClientError::Auth {
            status: "LOGIN_FAILED".into(),
            message: None,
        };
        assert_eq!(Failure::from(auth).code, AUTH);
    }
}
