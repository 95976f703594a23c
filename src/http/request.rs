//! Reading and parsing an HTTP/1.x request head (httparse does the parsing).

use std::io::{self, Read};

/// The most bytes a request head may take (request line and headers).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Most headers a request may carry.
const MAX_HEADERS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("the request head is over {MAX_HEAD_BYTES} bytes")]
    TooLarge,
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("the client closed before its request was complete")]
    Closed,
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
}

/// One parsed request head. `raw` keeps every byte read, so a WebSocket
/// upgrade can be replayed to tungstenite unchanged.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: String,
    /// The request target as sent (path and query).
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub raw: Vec<u8>,
}

impl RequestHead {
    /// Parses `bytes`: `Ok(None)` while the head is incomplete.
    pub fn parse(bytes: &[u8]) -> Result<Option<RequestHead>, HttpError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(bytes) {
            Ok(httparse::Status::Partial) => Ok(None),
            Ok(httparse::Status::Complete(_)) => Ok(Some(RequestHead {
                method: request.method.unwrap_or_default().to_owned(),
                target: request.path.unwrap_or_default().to_owned(),
                headers: request
                    .headers
                    .iter()
                    .map(|header| {
                        let value = String::from_utf8_lossy(header.value).into_owned();
                        (header.name.to_owned(), value)
                    })
                    .collect(),
                raw: bytes.to_vec(),
            })),
            Err(error) => Err(HttpError::Malformed(error.to_string())),
        }
    }

    /// The path, without the query string.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Whether the request asks to become a WebSocket (RFC 6455 4.1: an
    /// `Upgrade` header with the `websocket` token).
    pub fn is_websocket_upgrade(&self) -> bool {
        self.method == "GET"
            && self.header("upgrade").is_some_and(|value| {
                value
                    .split(',')
                    .any(|token| token.trim().eq_ignore_ascii_case("websocket"))
            })
    }
}

/// Reads from `reader` until a whole request head has arrived. The reader's
/// own deadline bounds the time; [`MAX_HEAD_BYTES`] bounds the memory.
pub fn read_head(reader: &mut impl Read) -> Result<RequestHead, HttpError> {
    let mut bytes = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let read = match reader.read(&mut chunk) {
            Ok(0) => return Err(HttpError::Closed),
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(HttpError::Io(error)),
        };
        bytes.extend_from_slice(&chunk[..read]);
        if let Some(head) = RequestHead::parse(&bytes)? {
            return Ok(head);
        }
        if bytes.len() > MAX_HEAD_BYTES {
            return Err(HttpError::TooLarge);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &str = "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    /// A reader that hands out one byte per read (a trickling client).
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.0.split_first() {
                None => Ok(0),
                Some((first, rest)) => {
                    buf[0] = *first;
                    self.0 = rest;
                    Ok(1)
                }
            }
        }
    }

    #[test]
    fn an_upgrade_is_recognised_and_kept_whole() {
        let head = read_head(&mut Trickle(UPGRADE.as_bytes())).expect("complete");
        assert!(head.is_websocket_upgrade());
        assert_eq!(head.path(), "/chat");
        assert_eq!(head.raw, UPGRADE.as_bytes());
    }

    #[test]
    fn a_page_request_is_not_an_upgrade() {
        let head = read_head(&mut "GET /app.js?v=2 HTTP/1.1\r\nHost: x\r\n\r\n".as_bytes())
            .expect("complete");
        assert!(!head.is_websocket_upgrade());
        assert_eq!(head.path(), "/app.js");
        assert_eq!(head.header("HOST"), Some("x"));
    }

    #[test]
    fn an_endless_head_is_refused() {
        let endless = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD_BYTES + 10));
        let error = read_head(&mut endless.as_bytes()).expect_err("too large");
        assert!(matches!(error, HttpError::TooLarge), "{error}");
    }

    #[test]
    fn garbage_and_early_close_are_errors() {
        let garbage = read_head(&mut &b"\x16\x03\x01\x02\x00\r\n\r\n"[..]).expect_err("bad");
        assert!(matches!(garbage, HttpError::Malformed(_)), "{garbage}");
        let closed = read_head(&mut &b"GET / HT"[..]).expect_err("closed");
        assert!(matches!(closed, HttpError::Closed), "{closed}");
    }
}
