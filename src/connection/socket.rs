//! [`Socket`]: a client's TCP stream with a whole-phase deadline and a
//! replay buffer.
//!
//! The deadline: while one is set, every read and write may only block until
//! it, and fails with `TimedOut` once it has passed. So a client trickling a
//! byte at a time (slowloris) cannot stretch the request head, the upgrade,
//! the handshake or an auth command past its deadline, as a per-read timeout
//! would let it.
//!
//! The replay buffer: the HTTP front door ([`crate::http`]) reads the request
//! head itself to decide between a page and a WebSocket upgrade; for an
//! upgrade those bytes are replayed, so tungstenite reads the request whole.
//!
//! TLS (optional, [`Socket::with_tls`]): reads and writes go through a
//! rustls server connection, so everything above (request head, WebSocket,
//! channel) sees plaintext. Non-blocking reads return plaintext rustls
//! already decrypted and buffered before touching the socket, and
//! [`Socket::has_buffered_input`] tells the session loop not to sleep in
//! `poll` while such plaintext waits.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use rustls::ServerConnection;

pub struct Socket {
    pub(crate) stream: TcpStream,
    pub(crate) deadline: Option<Instant>,
    replay: Vec<u8>,
    replayed: usize,
    tls: Option<Box<ServerConnection>>,
}

/// The TCP stream under the deadline (what TLS reads and writes through).
struct Timed<'a> {
    stream: &'a mut TcpStream,
    deadline: Option<Instant>,
}

impl Socket {
    /// Wraps `stream`; blocking reads and writes must end by `deadline`.
    pub fn new(stream: TcpStream, deadline: Option<Instant>) -> Socket {
        Socket {
            stream,
            deadline,
            replay: Vec::new(),
            replayed: 0,
            tls: None,
        }
    }

    /// Speaks TLS over the stream from now on (the handshake runs on the
    /// first read, under the deadline).
    pub fn with_tls(mut self, tls: ServerConnection) -> Socket {
        self.tls = Some(Box::new(tls));
        self
    }

    /// Whether input was already read from the socket but not handed out
    /// yet (replayed bytes, or plaintext decrypted by TLS): `poll` on the
    /// socket would not report it.
    pub fn has_buffered_input(&mut self) -> bool {
        if self.replayed < self.replay.len() {
            return true;
        }
        match &mut self.tls {
            Some(tls) => tls
                .process_new_packets()
                .map(|state| state.plaintext_bytes_to_read() > 0)
                .unwrap_or(true),
            None => false,
        }
    }

    fn timed(&mut self) -> (Timed<'_>, Option<&mut ServerConnection>) {
        let timed = Timed {
            stream: &mut self.stream,
            deadline: self.deadline,
        };
        (timed, self.tls.as_deref_mut())
    }

    /// Bytes to hand out again before reading the stream (already read
    /// request bytes).
    pub fn replay(&mut self, bytes: Vec<u8>) {
        self.replay = bytes;
        self.replayed = 0;
    }

    /// The underlying stream (socket options, `poll`).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    fn read_replay(&mut self, buf: &mut [u8]) -> usize {
        let pending = &self.replay[self.replayed..];
        let count = pending.len().min(buf.len());
        buf[..count].copy_from_slice(&pending[..count]);
        self.replayed += count;
        if self.replayed == self.replay.len() {
            self.replay = Vec::new();
            self.replayed = 0;
        }
        count
    }
}

impl Timed<'_> {
    fn left(&self) -> io::Result<Option<Duration>> {
        match self.deadline {
            None => Ok(None),
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    Err(io::ErrorKind::TimedOut.into())
                } else {
                    Ok(Some(left))
                }
            }
        }
    }

    fn timed_out(&self, error: io::Error) -> io::Error {
        if self.deadline.is_some() && error.kind() == io::ErrorKind::WouldBlock {
            io::ErrorKind::TimedOut.into()
        } else {
            error
        }
    }
}

impl Read for Timed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(left) = self.left()? {
            self.stream.set_read_timeout(Some(left))?;
        }
        self.stream.read(buf).map_err(|error| self.timed_out(error))
    }
}

impl Write for Timed<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(left) = self.left()? {
            self.stream.set_write_timeout(Some(left))?;
        }
        self.stream
            .write(buf)
            .map_err(|error| self.timed_out(error))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.replayed < self.replay.len() {
            return Ok(self.read_replay(buf));
        }
        match self.timed() {
            (mut timed, Some(tls)) => rustls::Stream::new(tls, &mut timed).read(buf),
            (mut timed, None) => timed.read(buf),
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.timed() {
            (mut timed, Some(tls)) => rustls::Stream::new(tls, &mut timed).write(buf),
            (mut timed, None) => timed.write(buf),
        }
    }

    /// With TLS, returns `Ok` only once every TLS byte is in the socket (a
    /// rustls flush may return `Ok` with records still queued after a
    /// partial write; then the session would sleep on data it never sent).
    fn flush(&mut self) -> io::Result<()> {
        match self.timed() {
            (mut timed, Some(tls)) => {
                tls.writer().flush()?;
                while tls.wants_write() {
                    if tls.write_tls(&mut timed)? == 0 {
                        return Err(io::ErrorKind::WriteZero.into());
                    }
                }
                timed.flush()
            }
            (mut timed, None) => timed.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        (client, server)
    }

    #[test]
    fn replayed_bytes_come_before_the_stream() {
        let (mut client, server) = pair();
        client.write_all(b" world").expect("write");
        let mut socket = Socket::new(server, None);
        socket.replay(b"hello".to_vec());
        let mut out = [0u8; 11];
        let mut filled = 0;
        while filled < out.len() {
            filled += socket.read(&mut out[filled..]).expect("read");
        }
        assert_eq!(&out, b"hello world");
    }

    /// A TLS server socket and a blocking rustls client over a TCP pair.
    fn tls_pair() -> (
        Socket,
        rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    ) {
        use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let generated =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
        let cert = CertificateDer::from(generated.cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            generated.signing_key.serialize_der(),
        ));
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .expect("server config");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).expect("root");
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let (client_tcp, server_tcp) = pair();
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        let client =
            rustls::ClientConnection::new(std::sync::Arc::new(client), name).expect("client");
        let server = ServerConnection::new(std::sync::Arc::new(server)).expect("server");
        let socket = Socket::new(server_tcp, Some(Instant::now() + Duration::from_secs(10)))
            .with_tls(server);
        (socket, rustls::StreamOwned::new(client, client_tcp))
    }

    /// While the peer does not read, a non-blocking TLS flush fails with
    /// `WouldBlock` (never `Ok` with records still queued in rustls), and
    /// once it succeeds every byte reaches the peer.
    #[test]
    fn a_tls_flush_succeeds_only_when_every_record_is_sent() {
        let (mut socket, mut client) = tls_pair();
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let total = 4 * 1024 * 1024;
        let reader = std::thread::spawn(move || {
            client.write_all(b"hello").expect("client writes");
            client.flush().expect("client flushes");
            wait.recv().expect("go");
            let mut got = vec![0u8; total];
            client.read_exact(&mut got).expect("client reads all");
            got
        });
        let mut hello = [0u8; 5];
        socket.read_exact(&mut hello).expect("handshake and hello");
        assert_eq!(&hello, b"hello");
        socket.deadline = None;
        socket.stream.set_nonblocking(true).expect("non-blocking");

        let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        let mut sent = 0;
        while sent < total {
            match socket.write(&data[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("write: {e}"),
            }
        }
        let blocked = socket.flush().expect_err("the peer reads nothing yet");
        assert_eq!(blocked.kind(), io::ErrorKind::WouldBlock);

        go.send(()).expect("reader waits");
        loop {
            while sent < total {
                match socket.write(&data[sent..]) {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("write: {e}"),
                }
            }
            match socket.flush() {
                Ok(()) => {
                    let tls = socket.tls.as_ref().expect("tls");
                    assert!(!tls.wants_write(), "flush said Ok with records queued");
                    if sent == total {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("flush: {e}"),
            }
        }
        assert_eq!(reader.join().expect("reader"), data);
    }

    #[test]
    fn a_passed_deadline_fails_reads_with_timed_out() {
        let (_client, server) = pair();
        let mut socket = Socket::new(server, Some(Instant::now() + Duration::from_millis(50)));
        let error = socket.read(&mut [0u8; 4]).expect_err("nothing was sent");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }
}
