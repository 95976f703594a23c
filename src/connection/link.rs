//! A [`Link`] is one client's WebSocket plus its secure channel: it turns
//! socket frames into decrypted commands and plaintext replies into sealed
//! frames, and knows how to wait on the socket with `ppoll(2)`.
//!
//! The socket is blocking (with deadlines) during the upgrade, the channel
//! handshake and the authentication phase, which only ever wait for the
//! client; it becomes non-blocking in the session loop, which also waits for
//! the dispatcher's wake-ups.

use std::collections::VecDeque;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use prometheus::IntCounter;

use crate::channel::{ChannelError, Inbound, RenewalPolicy, ServerChannel};
use crate::monitoring::Metrics;
use crate::waker::Attached;

use super::socket::Socket;

/// Bytes buffered before tungstenite writes to the socket by itself; the
/// session loop flushes after each batch anyway. Small, because
/// tungstenite's buffer keeps its largest size for the connection's life.
const WRITE_BUFFER_BYTES: usize = 16 * 1024;

/// Frames larger than this are sent as a fragmented message (RFC 6455
/// section 5.4) of pieces this large, fed to tungstenite only while the
/// socket takes them. Without it, each connection's write buffer would keep
/// the size of the largest frame it ever sent: a user list of every
/// registered user (~70 B each, sealed) for every connection.
const FRAGMENT_BYTES: usize = 16 * 1024;

/// How long a best-effort close may block.
const CLOSE_DEADLINE: Duration = Duration::from_secs(1);

/// Why a link stopped, with the close code the client should see.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("would block")]
    WouldBlock,
    #[error("closed by the client")]
    Closed,
    #[error("timed out")]
    TimedOut,
    #[error("no frame and no pong within the idle timeout")]
    Idle,
    #[error("socket error: {0}")]
    Io(io::Error),
    #[error("{reason}")]
    Violation { code: u16, reason: String },
}

impl LinkError {
    pub fn violation(code: u16, reason: impl Into<String>) -> LinkError {
        LinkError::Violation {
            code,
            reason: reason.into(),
        }
    }

    /// The close code to send, if a close frame still makes sense.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            LinkError::Violation { code, .. } => Some(*code),
            LinkError::TimedOut => Some(1008),
            LinkError::Idle => Some(1001),
            _ => None,
        }
    }
}

impl From<ChannelError> for LinkError {
    fn from(error: ChannelError) -> LinkError {
        LinkError::violation(error.close_code(), error.to_string())
    }
}

impl From<tungstenite::Error> for LinkError {
    fn from(error: tungstenite::Error) -> LinkError {
        use tungstenite::Error as E;
        match error {
            E::ConnectionClosed | E::AlreadyClosed => LinkError::Closed,
            E::Io(io) => LinkError::from_io(io),
            E::Capacity(error) => LinkError::violation(1009, error.to_string()),
            E::Utf8 => LinkError::violation(1007, "text frame is not UTF-8"),
            other => LinkError::violation(1002, other.to_string()),
        }
    }
}

impl LinkError {
    fn from_io(error: io::Error) -> LinkError {
        match error.kind() {
            io::ErrorKind::WouldBlock => LinkError::WouldBlock,
            io::ErrorKind::TimedOut => LinkError::TimedOut,
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => LinkError::Closed,
            _ => LinkError::Io(error),
        }
    }
}

/// What `ppoll` reported.
#[derive(Debug, Clone, Copy, Default)]
pub struct Readiness {
    pub readable: bool,
    pub writable: bool,
    /// The waker fired (`ppoll` was interrupted by its signal).
    pub woken: bool,
}

/// One client's WebSocket and secure channel.
pub struct Link {
    ws: WebSocket<Socket>,
    channel: ServerChannel,
    pub peer: SocketAddr,
    /// When the client last sent any frame (pongs included).
    last_heard: Instant,
    /// Frames not yet given to tungstenite: the rest of a fragmented
    /// message, and whatever was sent after it (in order).
    unfed: VecDeque<Frame>,
    /// Frame and renewal counters, from [`Link::counted`] on.
    counters: Option<LinkCounters>,
}

/// The metrics a link counts into.
struct LinkCounters {
    frames_in: IntCounter,
    frames_out: IntCounter,
    renegotiations: IntCounter,
}

impl LinkCounters {
    fn of(metrics: &Metrics) -> LinkCounters {
        LinkCounters {
            frames_in: metrics.frames_in.clone(),
            frames_out: metrics.frames_out.clone(),
            renegotiations: metrics.renegotiations.clone(),
        }
    }
}

impl Link {
    /// Upgrades `stream` to a WebSocket and runs the channel handshake. Both
    /// must finish within the socket's deadline (one for the whole phase,
    /// not per read).
    pub fn accept(
        stream: Socket,
        peer: SocketAddr,
        max_message_bytes: usize,
        renewal: RenewalPolicy,
    ) -> Result<Link, LinkError> {
        stream.stream().set_nodelay(true).map_err(LinkError::Io)?;
        let config = WebSocketConfig {
            write_buffer_size: WRITE_BUFFER_BYTES,
            max_message_size: Some(max_message_bytes),
            max_frame_size: Some(max_message_bytes),
            ..WebSocketConfig::default()
        };
        let mut ws =
            tungstenite::accept_with_config(stream, Some(config)).map_err(|error| match error {
                tungstenite::HandshakeError::Failure(tungstenite::Error::Io(io))
                    if io.kind() == io::ErrorKind::TimedOut =>
                {
                    LinkError::TimedOut
                }
                error => LinkError::violation(1002, format!("upgrade failed: {error}")),
            })?;
        match handshake(&mut ws, renewal) {
            Ok(channel) => Ok(Link {
                ws,
                channel,
                peer,
                unfed: VecDeque::new(),
                last_heard: Instant::now(),
                counters: None,
            }),
            Err(error) => {
                close_websocket(&mut ws, error.close_code(), &error.to_string());
                Err(error)
            }
        }
    }

    /// Counts this link's frames and renewals into `metrics` from now on.
    /// (The frames of the handshake itself are not counted.)
    pub fn counted(mut self, metrics: &Metrics) -> Link {
        self.counters = Some(LinkCounters::of(metrics));
        self
    }

    fn count_frame_out(&self) {
        if let Some(counters) = &self.counters {
            counters.frames_out.inc();
        }
    }

    /// Reads one WebSocket message. `Ok(None)` for pings and pongs, which
    /// tungstenite answers by itself.
    pub fn read(&mut self) -> Result<Option<Inbound>, LinkError> {
        let message = self.ws.read()?;
        self.last_heard = Instant::now();
        match message {
            Message::Text(text) => {
                if let Some(counters) = &self.counters {
                    counters.frames_in.inc();
                }
                let renewals = self.channel.renewals_completed();
                let inbound = self.channel.open(&text, Instant::now())?;
                if let Some(counters) = &self.counters {
                    let completed = self.channel.renewals_completed().saturating_sub(renewals);
                    counters.renegotiations.inc_by(completed);
                }
                Ok(Some(inbound))
            }
            Message::Binary(_) => Err(LinkError::violation(1002, "binary frames are not allowed")),
            Message::Close(_) => Err(LinkError::Closed),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Ok(None),
        }
    }

    /// Seals and queues one command; if that reaches the renewal threshold,
    /// queues the `RENEGOTIATE_REQUEST` too. Call [`Link::flush`] after.
    /// Returns `Ok(false)` when the socket is full (the frame is buffered).
    pub fn send(&mut self, plaintext: &str) -> Result<bool, LinkError> {
        let now = Instant::now();
        let mut open = if plaintext.len() > FRAGMENT_BYTES {
            // Big (a user list): sealed straight into fragments.
            let pieces = self.channel.seal_in_pieces(plaintext, now, FRAGMENT_BYTES);
            self.write_pieces(pieces)?
        } else {
            let frame = self.channel.seal(plaintext, now);
            self.write(frame)?
        };
        if let Some(request) = self.channel.poll_renewal(now) {
            open &= self.write(request)?;
        }
        Ok(open)
    }

    /// When the client last sent a frame or a pong.
    pub fn last_heard(&self) -> Instant {
        self.last_heard
    }

    /// Queues a WebSocket ping (liveness, PROTOCOL.md section 7).
    pub fn send_ping(&mut self) -> Result<bool, LinkError> {
        match self.ws.write(Message::Ping(Vec::new())) {
            Ok(()) => Ok(true),
            Err(error) => match LinkError::from(error) {
                LinkError::WouldBlock => Ok(false),
                other => Err(other),
            },
        }
    }

    /// Queues an already sealed frame (channel control replies).
    pub fn send_sealed(&mut self, frame: String) -> Result<bool, LinkError> {
        self.write(frame)
    }

    fn write(&mut self, frame: String) -> Result<bool, LinkError> {
        self.count_frame_out();
        if frame.len() <= FRAGMENT_BYTES && self.unfed.is_empty() {
            return self.write_message(Message::Text(frame));
        }
        self.unfed.extend(fragments(cut(frame.as_bytes())));
        self.feed()
    }

    /// Queues one frame's text, already cut into fragments.
    fn write_pieces(&mut self, pieces: Vec<Vec<u8>>) -> Result<bool, LinkError> {
        self.count_frame_out();
        self.unfed.extend(fragments(pieces));
        self.feed()
    }

    fn write_message(&mut self, message: Message) -> Result<bool, LinkError> {
        match self.ws.write(message) {
            Ok(()) => Ok(true),
            Err(error) => match LinkError::from(error) {
                LinkError::WouldBlock => Ok(false),
                other => Err(other),
            },
        }
    }

    /// Gives waiting frames to tungstenite until the socket is full.
    fn feed(&mut self) -> Result<bool, LinkError> {
        while let Some(frame) = self.unfed.pop_front() {
            // On `WouldBlock` tungstenite has buffered the frame already.
            if !self.write_message(Message::Frame(frame))? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Writes everything buffered. `Ok(false)` when the socket is full.
    pub fn flush(&mut self) -> Result<bool, LinkError> {
        loop {
            match self.ws.flush() {
                Ok(()) => {}
                Err(error) => match LinkError::from(error) {
                    LinkError::WouldBlock => return Ok(false),
                    other => return Err(other),
                },
            }
            if self.unfed.is_empty() {
                return Ok(true);
            }
            self.feed()?;
        }
    }

    /// Sends one command and waits until it is written (blocking phase).
    pub fn send_now(&mut self, plaintext: &str) -> Result<(), LinkError> {
        self.send(plaintext)?;
        match self.flush()? {
            true => Ok(()),
            false => Err(LinkError::WouldBlock),
        }
    }

    /// Sends a sealed control frame and waits until it is written.
    pub fn send_sealed_now(&mut self, frame: String) -> Result<(), LinkError> {
        self.count_frame_out();
        self.ws.send(Message::Text(frame))?;
        Ok(())
    }

    /// Lets the channel act on its deadlines (renewal timer, end of a
    /// hold); queues a `RENEGOTIATE_REQUEST` if one is due. `Ok(None)`:
    /// nothing queued; `Ok(Some(false))`: queued, the socket is full.
    pub fn poll_renewal(&mut self) -> Result<Option<bool>, LinkError> {
        match self.channel.poll_renewal(Instant::now()) {
            Some(request) => self.write(request).map(Some),
            None => Ok(None),
        }
    }

    /// Whether output waits for the client to take new keys into use.
    pub fn output_held(&self) -> bool {
        self.channel.output_held(Instant::now())
    }

    /// When the channel next needs attention (renewal timer, end of a hold).
    pub fn channel_deadline(&self) -> Option<Instant> {
        self.channel.next_deadline()
    }

    /// Renewals completed on this link.
    pub fn renewals_completed(&self) -> u64 {
        self.channel.renewals_completed()
    }

    /// Sets the deadline of blocking reads and writes (authentication
    /// phase): past it they fail with [`LinkError::TimedOut`].
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.ws.get_mut().deadline = deadline;
    }

    /// Switches to the session loop: non-blocking socket, full message size.
    pub fn enter_session(&mut self, max_message_bytes: usize) -> Result<(), LinkError> {
        self.ws.set_config(|config| {
            config.max_message_size = Some(max_message_bytes);
            config.max_frame_size = Some(max_message_bytes);
        });
        self.ws.get_mut().deadline = None;
        self.ws
            .get_ref()
            .stream
            .set_nonblocking(true)
            .map_err(LinkError::Io)
    }

    /// Whether input was read from the socket but not handed out yet
    /// (plaintext TLS decrypted ahead): `ppoll` would not report it.
    pub fn has_buffered_input(&mut self) -> bool {
        self.ws.get_mut().has_buffered_input()
    }

    /// Whether the client is already gone (reset or closed its side): used
    /// right before a login becomes a session.
    pub fn peer_gone(&self) -> bool {
        let mut byte = [0u8; 1];
        let socket = &self.ws.get_ref().stream;
        if socket.set_nonblocking(true).is_err() {
            return true;
        }
        let gone = match socket.peek(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(error) => error.kind() != io::ErrorKind::WouldBlock,
        };
        gone || socket.set_nonblocking(false).is_err()
    }

    /// Sleeps until the socket is readable (or writable, if asked), the
    /// waker this thread is attached to fires, or `timeout` passes: `ppoll`
    /// on the socket alone (the wake is a signal, see [`crate::waker`]).
    pub fn wait(
        &self,
        want_write: bool,
        attached: &Attached<'_>,
        timeout: Option<Duration>,
    ) -> Result<Readiness, LinkError> {
        let mut events = libc::POLLIN;
        if want_write {
            events |= libc::POLLOUT;
        }
        let mut fds = [libc::pollfd {
            fd: self.ws.get_ref().stream.as_raw_fd(),
            events,
            revents: 0,
        }];
        // Round up to whole milliseconds, as poll(2) timeouts were: a
        // deadline is never waited for early, and nearby timers coalesce.
        let timeout = timeout.map(|timeout| {
            let millis = timeout.as_micros().div_ceil(1000);
            Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
        });
        if attached.wait(&mut fds, timeout).map_err(LinkError::Io)? {
            return Ok(Readiness {
                woken: true,
                ..Readiness::default()
            });
        }
        let revents = fds[0].revents;
        Ok(Readiness {
            readable: revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0,
            writable: revents & (libc::POLLOUT | libc::POLLERR) != 0,
            woken: false,
        })
    }

    /// Sends a close frame (best effort, bounded in time) and shuts the
    /// socket down.
    pub fn close(mut self, code: Option<u16>, reason: &str) {
        // Best effort: what the socket takes now of a fragmented message.
        let _ = self.flush();
        close_websocket(&mut self.ws, code, reason);
    }
}

/// `text` in pieces of [`FRAGMENT_BYTES`].
fn cut(text: &[u8]) -> Vec<Vec<u8>> {
    text.chunks(FRAGMENT_BYTES).map(<[u8]>::to_vec).collect()
}

/// One text message's `pieces` as WebSocket frames: the first a text
/// frame, the others continuations, the last one final.
fn fragments(pieces: Vec<Vec<u8>>) -> Vec<Frame> {
    if pieces.is_empty() {
        return vec![Frame::message(Vec::new(), OpCode::Data(Data::Text), true)];
    }
    let count = pieces.len();
    let opcode = |i: usize| match i {
        0 => OpCode::Data(Data::Text),
        _ => OpCode::Data(Data::Continue),
    };
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, piece)| Frame::message(piece, opcode(i), i + 1 == count))
        .collect()
}

/// Reads `HANDSHAKE_START` (the socket's deadline bounds it) and answers it.
fn handshake(
    ws: &mut WebSocket<Socket>,
    renewal: RenewalPolicy,
) -> Result<ServerChannel, LinkError> {
    let first = read_first_text(ws)?;
    let (channel, response) = ServerChannel::accept_handshake(&first, renewal, Instant::now())?;
    ws.send(Message::Text(response))?;
    Ok(channel)
}

/// Sends a close frame with `code` if given (best effort, bounded in time),
/// then shuts the socket down.
fn close_websocket(ws: &mut WebSocket<Socket>, code: Option<u16>, reason: &str) {
    ws.get_mut().deadline = Some(Instant::now() + CLOSE_DEADLINE);
    let socket = &ws.get_ref().stream;
    let _ = socket.set_nonblocking(false);
    let _ = socket.set_write_timeout(Some(CLOSE_DEADLINE));
    if let Some(code) = code {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            // A close reason is at most 123 bytes.
            reason: truncate(reason, 120).to_owned().into(),
        };
        let _ = ws.close(Some(frame));
    }
    let _ = ws.flush();
    linger(&ws.get_ref().stream);
}

/// Most bytes read and discarded while lingering at close.
const LINGER_BYTES: usize = 256 * 1024;

/// Half-closes the socket, then reads and discards what the peer still
/// sends until it closes too, the close deadline passes or [`LINGER_BYTES`]
/// were read; then shuts it down. Closing a socket with unread input makes
/// the kernel send a reset, which can destroy our last frames (an `ERROR`
/// notice, the close frame) before the peer has read them.
pub(crate) fn linger(socket: &std::net::TcpStream) {
    use std::io::Read;
    let deadline = Instant::now() + CLOSE_DEADLINE;
    if socket.shutdown(Shutdown::Write).is_ok() {
        let mut buffer = [0u8; 4096];
        let mut discarded = 0;
        while discarded < LINGER_BYTES {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || socket.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match (&mut &*socket).read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(read) => discarded += read,
            }
        }
    }
    let _ = socket.shutdown(Shutdown::Both);
}

/// The longest prefix of `text` of at most `max` bytes, on a char boundary.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Reads until the first text message; the socket's deadline bounds it.
fn read_first_text(ws: &mut WebSocket<Socket>) -> Result<String, LinkError> {
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => return Ok(text),
            Ok(Message::Binary(_)) => {
                return Err(LinkError::violation(1002, "binary frames are not allowed"))
            }
            Ok(Message::Close(_)) => return Err(LinkError::Closed),
            Ok(_) => continue,
            Err(error) => match LinkError::from(error) {
                LinkError::WouldBlock => return Err(LinkError::TimedOut),
                other => return Err(other),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_frame_becomes_pieces_that_join_back() {
        let text: Vec<u8> = (0..FRAGMENT_BYTES * 2 + 5)
            .map(|i| b'a' + (i % 26) as u8)
            .collect();
        let pieces = fragments(cut(&text));
        let shape: Vec<(OpCode, bool, usize)> = pieces
            .iter()
            .map(|f| (f.header().opcode, f.header().is_final, f.payload().len()))
            .collect();
        assert_eq!(
            shape,
            vec![
                (OpCode::Data(Data::Text), false, FRAGMENT_BYTES),
                (OpCode::Data(Data::Continue), false, FRAGMENT_BYTES),
                (OpCode::Data(Data::Continue), true, 5),
            ]
        );
        let joined: Vec<u8> = pieces.into_iter().flat_map(Frame::into_data).collect();
        assert_eq!(joined, text);
        // A small frame queued behind a fragmented one is one final piece.
        let one = fragments(cut(b"{}"));
        assert_eq!(one.len(), 1);
        assert!(one[0].header().is_final);
        assert_eq!(fragments(cut(b"")).len(), 1);
    }
}
