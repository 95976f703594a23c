//! One connection to the server: TCP (connect timeout, `TCP_NODELAY`), the
//! WebSocket upgrade, the secure-channel handshake, then sealed commands in
//! both directions. Channel renewals are answered transparently; the close
//! code and reason sent by the server are kept for tests to assert on.
//!
//! `wss://` URLs speak TLS (rustls) under the WebSocket; the server's
//! certificate must chain to [`ConnectOptions::tls`], or else to the CA file
//! named by the environment variable [`CA_FILE_ENV`] (for a self-signed
//! server certificate, that certificate itself).

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tungstenite::protocol::WebSocket;
use tungstenite::{HandshakeError, Message};

use super::error::{ClientError, Result};
use crate::channel::{ChannelError, ClientChannel, ClientInbound, ClientRenewalMode};

/// Commands as decrypted from the channel.
pub type Command = Map<String, Value>;

/// How to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Limit for the TCP connect, the upgrade, the channel handshake, and
    /// each blocked write.
    pub timeout: Duration,
    /// How to answer the server's renewal requests. Default: immediate
    /// (`"immediate": true` in `RENEGOTIATE_INIT`, PROTOCOL.md 2.1.6).
    pub renewal: ClientRenewalMode,
    /// Trust anchors for `wss://`; `None`: the CA file in [`CA_FILE_ENV`].
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// Environment variable naming a PEM file of certificates to trust for
/// `wss://` when [`ConnectOptions::tls`] is not set.
pub const CA_FILE_ENV: &str = "CHAT_CA_FILE";

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            timeout: Duration::from_secs(10),
            renewal: ClientRenewalMode::Immediate,
            tls: None,
        }
    }
}

impl ConnectOptions {
    /// The TLS settings for a `wss://` connection.
    fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>> {
        if let Some(config) = &self.tls {
            return Ok(config.clone());
        }
        let path = std::env::var_os(CA_FILE_ENV).ok_or_else(|| {
            ClientError::Url(format!(
                "wss:// needs the server's CA certificate: set {CA_FILE_ENV} (chat_client: --ca-file)"
            ))
        })?;
        crate::tls::client_config(std::path::Path::new(&path))
            .map_err(|e| ClientError::Url(e.to_string()))
    }
}

/// The byte stream under the WebSocket: plain TCP or TLS over TCP. It
/// dereferences to the TCP stream (timeouts, shutdown, descriptor).
pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Deref for ClientStream {
    type Target = TcpStream;
    fn deref(&self) -> &TcpStream {
        match self {
            ClientStream::Plain(tcp) => tcp,
            ClientStream::Tls(tls) => tls.get_ref(),
        }
    }
}

impl DerefMut for ClientStream {
    fn deref_mut(&mut self) -> &mut TcpStream {
        match self {
            ClientStream::Plain(tcp) => tcp,
            ClientStream::Tls(tls) => tls.get_mut(),
        }
    }
}

impl std::os::fd::AsFd for ClientStream {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.deref().as_fd()
    }
}

impl Read for ClientStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ClientStream::Plain(tcp) => tcp.read(buf),
            ClientStream::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for ClientStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ClientStream::Plain(tcp) => tcp.write(buf),
            ClientStream::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            ClientStream::Plain(tcp) => tcp.flush(),
            ClientStream::Tls(tls) => tls.flush(),
        }
    }
}

/// How the server closed the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    /// The close code; 1005 for a close frame without one, 1006 when the
    /// socket ended with no close frame.
    pub code: u16,
    pub reason: String,
}

/// `ws://host[:port][/path]` (or `wss://`) split up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsUrl {
    pub host: String,
    pub port: u16,
    pub path: String,
    /// `wss://`: TLS under the WebSocket.
    pub tls: bool,
}

impl WsUrl {
    /// Parses `ws://host[:port][/path]` or `wss://...` (host may be `[v6]`;
    /// port 80, or 443 for `wss://`, by default).
    pub fn parse(url: &str) -> Result<WsUrl> {
        let bad = |why: &str| ClientError::Url(format!("{url}: {why}"));
        let (rest, tls) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
            (Some(rest), _) => (rest, false),
            (None, Some(rest)) => (rest, true),
            (None, None) => return Err(bad("only ws:// and wss:// are supported")),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            match after.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None if after.is_empty() => (h, None),
                None => return Err(bad("junk after ]")),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() || authority.contains('@') {
            return Err(bad("bad host"));
        }
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| bad("bad port"))?,
            None if tls => 443,
            None => 80,
        };
        Ok(WsUrl {
            host: host.to_string(),
            port,
            path,
            tls,
        })
    }

    fn request_url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            format!("{scheme}://{}:{}{}", self.host, self.port, self.path)
        }
    }
}

fn ws_error(e: tungstenite::Error) -> ClientError {
    match e {
        tungstenite::Error::Io(io)
            if matches!(io.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
        {
            ClientError::Timeout
        }
        tungstenite::Error::Io(io) => ClientError::Io(io),
        other => ClientError::WebSocket(other.to_string()),
    }
}

/// A connected, handshaken client connection.
pub struct ClientConnection {
    ws: WebSocket<ClientStream>,
    channel: ClientChannel,
    closed: Option<CloseInfo>,
    /// The socket's read timeout as last set (set again only when a wait
    /// needs a shorter one, or a much longer one: one system call less per
    /// read).
    read_timeout: Option<Duration>,
    /// Commands read by `wait_closed` and the like, handed out by `recv`.
    inbox: VecDeque<Command>,
}

impl ClientConnection {
    /// Connects with default options.
    pub fn connect(url: &str) -> Result<ClientConnection> {
        Self::connect_with(url, &ConnectOptions::default())
    }

    /// Connects, upgrades to WebSocket and runs the channel handshake.
    pub fn connect_with(url: &str, options: &ConnectOptions) -> Result<ClientConnection> {
        let mut ws = Self::connect_websocket(url, options)?;
        let (handshake, start) = ClientChannel::start();
        let handshake = handshake.with_mode(options.renewal);
        ws.send(Message::Text(start)).map_err(ws_error)?;
        let deadline = Instant::now() + options.timeout;
        let response = loop {
            set_read_deadline(&ws, deadline)?;
            match ws.read() {
                Ok(Message::Text(t)) => break t,
                Ok(Message::Binary(_)) => {
                    return Err(ClientError::Protocol(
                        "binary frame instead of HANDSHAKE_RESPONSE".into(),
                    ))
                }
                Ok(Message::Close(frame)) => return Err(closed_error(frame)),
                Ok(_) => continue,
                Err(e) => return Err(read_error(e, &mut None)),
            }
        };
        let channel = handshake.finish(&response)?;
        Ok(ClientConnection {
            ws,
            channel,
            closed: None,
            read_timeout: None,
            inbox: VecDeque::new(),
        })
    }

    /// TCP connect and WebSocket upgrade only, no channel handshake (for tests
    /// of what the server does with a bad first frame).
    pub fn connect_websocket(
        url: &str,
        options: &ConnectOptions,
    ) -> Result<WebSocket<ClientStream>> {
        let parsed = WsUrl::parse(url)?;
        let addrs: Vec<_> = (parsed.host.as_str(), parsed.port)
            .to_socket_addrs()?
            .collect();
        let mut last = None;
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, options.timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let stream = match (stream, last) {
            (Some(s), _) => s,
            (None, Some(e)) if e.kind() == ErrorKind::TimedOut => return Err(ClientError::Timeout),
            (None, Some(e)) => return Err(ClientError::Io(e)),
            (None, None) => return Err(ClientError::Url(format!("{url}: host has no address"))),
        };
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(options.timeout))?;
        stream.set_write_timeout(Some(options.timeout))?;
        let stream = if parsed.tls {
            let name = rustls_pki_types::ServerName::try_from(parsed.host.clone())
                .map_err(|e| ClientError::Url(format!("{url}: {e}")))?;
            let tls = rustls::ClientConnection::new(options.tls_config()?, name)
                .map_err(|e| ClientError::WebSocket(format!("TLS: {e}")))?;
            ClientStream::Tls(Box::new(rustls::StreamOwned::new(tls, stream)))
        } else {
            ClientStream::Plain(stream)
        };
        match tungstenite::client(parsed.request_url().as_str(), stream) {
            Ok((ws, _response)) => Ok(ws),
            Err(HandshakeError::Interrupted(_)) => Err(ClientError::Timeout),
            Err(HandshakeError::Failure(e)) => Err(ws_error(e)),
        }
    }

    /// Sends one command, sealed.
    pub fn send(&mut self, command: &Value) -> Result<()> {
        let frame = self.channel.seal(&command.to_string());
        self.write(Message::Text(frame))
    }

    /// Sends a text frame as is, unsealed (tests of bad input).
    pub fn send_raw_text(&mut self, text: &str) -> Result<()> {
        self.write(Message::Text(text.to_string()))
    }

    /// Sends a binary frame (a protocol error for the server).
    pub fn send_raw_binary(&mut self, bytes: &[u8]) -> Result<()> {
        self.write(Message::Binary(bytes.to_vec()))
    }

    /// Seals `plaintext` as it is, even if it is not a JSON command (tests).
    pub fn send_sealed_text(&mut self, plaintext: &str) -> Result<()> {
        let frame = self.channel.seal(plaintext);
        self.write(Message::Text(frame))
    }

    /// Seals `plaintext` (a JSON command's text) and queues it without
    /// writing to the socket; [`Self::flush`] sends everything queued in as
    /// few writes as the socket allows (the benchmark's senders).
    pub fn queue_sealed_text(&mut self, plaintext: &str) -> Result<()> {
        self.check_open()?;
        let frame = self.channel.seal(plaintext);
        self.ws
            .write(Message::Text(frame))
            .map_err(|e| read_error(e, &mut self.closed))
    }

    /// Writes out what [`Self::queue_sealed_text`] queued.
    pub fn flush(&mut self) -> Result<()> {
        self.check_open()?;
        self.ws.flush().map_err(|e| read_error(e, &mut self.closed))
    }

    /// Asks the server for new channel keys (`RENEGOTIATE_INIT`, unprompted).
    /// Returns false (and sends nothing) if a renewal is already in flight.
    pub fn request_renewal(&mut self) -> Result<bool> {
        match self.channel.request_renewal() {
            Some(frame) => self.write(Message::Text(frame)).map(|()| true),
            None => Ok(false),
        }
    }

    /// The channel state (renewal mode, renewal in flight).
    pub fn channel(&self) -> &ClientChannel {
        &self.channel
    }

    /// Channel renewals completed so far.
    pub fn renewals_completed(&self) -> u64 {
        self.channel.renewals_completed()
    }

    /// Writes and flushes one message (the socket's write timeout was set
    /// at connect).
    fn write(&mut self, message: Message) -> Result<()> {
        self.check_open()?;
        self.ws
            .send(message)
            .map_err(|e| read_error(e, &mut self.closed))
    }

    fn check_open(&self) -> Result<()> {
        match &self.closed {
            Some(c) => Err(ClientError::Closed {
                code: c.code,
                reason: c.reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// The next decrypted command, `None` if nothing came within `timeout`.
    /// Renewal frames are answered here and never returned. A closed
    /// connection gives `ClientError::Closed` (see also [`Self::close_info`]).
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<Command>> {
        if let Some(cmd) = self.inbox.pop_front() {
            return Ok(Some(cmd));
        }
        self.recv_inner(Instant::now() + timeout)
    }

    /// As [`Self::recv`], but the command comes back as its JSON text, not
    /// parsed (for callers with their own types: the benchmark).
    pub fn recv_text(&mut self, timeout: Duration) -> Result<Option<String>> {
        if let Some(cmd) = self.inbox.pop_front() {
            return Ok(Some(serde_json::Value::Object(cmd).to_string()));
        }
        self.recv_opened(Instant::now() + timeout, ClientChannel::open_text)
    }

    fn recv_inner(&mut self, deadline: Instant) -> Result<Option<Command>> {
        self.recv_opened(deadline, ClientChannel::open)
    }

    /// Reads frames until one opens (with `open`) to an application message.
    fn recv_opened<T>(
        &mut self,
        deadline: Instant,
        open: fn(&mut ClientChannel, &str) -> std::result::Result<ClientInbound<T>, ChannelError>,
    ) -> Result<Option<T>> {
        loop {
            self.check_open()?;
            if Instant::now() >= deadline {
                return Ok(None);
            }
            self.set_read_deadline(deadline)?;
            let message = match self.ws.read() {
                Ok(m) => m,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    continue
                }
                Err(e) => return Err(read_error(e, &mut self.closed)),
            };
            match message {
                Message::Text(text) => match open(&mut self.channel, &text)? {
                    ClientInbound::Command(cmd) => return Ok(Some(cmd)),
                    ClientInbound::Control(Some(reply)) => self.write(Message::Text(reply))?,
                    ClientInbound::Control(None) => {}
                },
                Message::Binary(_) => {
                    return Err(ClientError::Protocol("binary frame from the server".into()))
                }
                Message::Close(frame) => {
                    let info = close_info(frame);
                    self.closed = Some(info.clone());
                    // Answer the close; errors here do not matter.
                    let _ = self.ws.flush();
                    return Err(ClientError::Closed {
                        code: info.code,
                        reason: info.reason,
                    });
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {
                    let _ = self.ws.flush();
                }
            }
        }
    }

    /// Makes the next blocking read return by `deadline`. The timeout is
    /// set again only if the one in force is longer than the time left (a
    /// read could overrun) or less than half of it (a long wait would wake
    /// needlessly often); a read that times out early just loops.
    fn set_read_deadline(&mut self, deadline: Instant) -> Result<()> {
        let left = time_left(deadline);
        let fits = self
            .read_timeout
            .is_some_and(|set| set <= left && set * 2 >= left);
        if !fits {
            self.read_timeout = None;
            self.ws.get_ref().set_read_timeout(Some(left))?;
            self.read_timeout = Some(left);
        }
        Ok(())
    }

    /// Reads until the server closes the connection and returns how it did;
    /// commands read meanwhile are kept for `recv`. `Timeout` if it stays open.
    pub fn wait_closed(&mut self, timeout: Duration) -> Result<CloseInfo> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.recv_inner(deadline) {
                Ok(Some(cmd)) => self.inbox.push_back(cmd),
                Ok(None) => return Err(ClientError::Timeout),
                Err(ClientError::Closed { code, reason }) => return Ok(CloseInfo { code, reason }),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads the next raw text frame without opening it (tests of the
    /// handshake; renewal is not handled here).
    pub fn recv_raw(&mut self, timeout: Duration) -> Result<Option<Message>> {
        let deadline = Instant::now() + timeout;
        loop {
            if Instant::now() >= deadline {
                return Ok(None);
            }
            self.set_read_deadline(deadline)?;
            match self.ws.read() {
                Ok(Message::Close(frame)) => {
                    let info = close_info(frame);
                    self.closed = Some(info.clone());
                    return Err(ClientError::Closed {
                        code: info.code,
                        reason: info.reason,
                    });
                }
                Ok(m) => return Ok(Some(m)),
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => return Err(read_error(e, &mut self.closed)),
            }
        }
    }

    /// How the server closed the connection, once it has.
    pub fn close_info(&self) -> Option<&CloseInfo> {
        self.closed.as_ref()
    }

    /// Closes the connection (normal closure) and waits briefly for the
    /// server's answer.
    pub fn close(&mut self) -> Result<()> {
        if self.closed.is_some() {
            return Ok(());
        }
        let _ = self.ws.close(None);
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            if self.set_read_deadline(deadline).is_err() {
                break;
            }
            match self.ws.read() {
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        self.closed = Some(CloseInfo {
            code: 1000,
            reason: String::new(),
        });
        Ok(())
    }

    /// The WebSocket, for raw tests.
    pub fn websocket_mut(&mut self) -> &mut WebSocket<ClientStream> {
        &mut self.ws
    }
}

/// Time until `deadline`, at least 1 ms (a zero timeout means "none").
fn time_left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

fn set_read_deadline(ws: &WebSocket<ClientStream>, deadline: Instant) -> Result<()> {
    ws.get_ref().set_read_timeout(Some(time_left(deadline)))?;
    Ok(())
}

fn close_info(frame: Option<tungstenite::protocol::CloseFrame<'static>>) -> CloseInfo {
    match frame {
        Some(f) => CloseInfo {
            code: f.code.into(),
            reason: f.reason.into_owned(),
        },
        None => CloseInfo {
            code: 1005,
            reason: String::new(),
        },
    }
}

fn closed_error(frame: Option<tungstenite::protocol::CloseFrame<'static>>) -> ClientError {
    let info = close_info(frame);
    ClientError::Closed {
        code: info.code,
        reason: info.reason,
    }
}

/// Maps a read/write error; a socket that ended counts as closed (1006
/// unless a close frame was seen).
fn read_error(e: tungstenite::Error, closed: &mut Option<CloseInfo>) -> ClientError {
    use tungstenite::error::ProtocolError;
    let ended = match &e {
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => true,
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => true,
        tungstenite::Error::Io(io) => matches!(
            io.kind(),
            ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
                | ErrorKind::UnexpectedEof
        ),
        _ => false,
    };
    if ended {
        let info = closed.get_or_insert_with(|| CloseInfo {
            code: 1006,
            reason: e.to_string(),
        });
        return ClientError::Closed {
            code: info.code,
            reason: info.reason.clone(),
        };
    }
    ws_error(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ws_urls() {
        let u = WsUrl::parse("ws://127.0.0.1:12345").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 12345, "/")
        );
        let u = WsUrl::parse("ws://localhost/chat/x?y=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("localhost", 80, "/chat/x?y=1")
        );
        let u = WsUrl::parse("ws://[::1]:9000/p").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 9000, "/p")
        );
        assert_eq!(u.request_url(), "ws://[::1]:9000/p");
        let u = WsUrl::parse("ws://h:1?q").unwrap();
        assert_eq!(u.path, "/?q");
        let u = WsUrl::parse("wss://chat.local/x").unwrap();
        assert_eq!((u.port, u.tls), (443, true));
        assert_eq!(u.request_url(), "wss://chat.local:443/x");
        assert!(!WsUrl::parse("ws://h:1").unwrap().tls);
        for bad in [
            "wss://",
            "http://h",
            "ws://",
            "ws://h:99999",
            "ws://h:x",
            "ws://[::1",
            "ws://u@h:1",
        ] {
            assert!(
                matches!(WsUrl::parse(bad), Err(ClientError::Url(_))),
                "{bad}"
            );
        }
    }
}
