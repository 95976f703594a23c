//! One client connection, on its own OS thread, from upgrade to close:
//!
//! 0. [`crate::http::read_head`]: the request head; a plain HTTP request
//!    (the web page, `/healthz`, ...) is answered by the router and closed;
//! 1. [`link::Link::accept`]: WebSocket upgrade and channel handshake;
//! 2. [`auth::authenticate`]: register / password login / challenge login,
//!    blocking on this thread (argon2 and the store run here, never on the
//!    dispatcher);
//! 3. [`session::run`]: the logged-in loop, until the client leaves or the
//!    dispatcher asks it to close.
//!
//! ## Why one thread per connection, blocking in `ppoll`
//! tungstenite's blocking `WebSocket` cannot be split into a reader and a
//! writer. Instead of a second writer thread per client (two threads, a write
//! mutex, ~8,000 clients before this machine's thread limit), the session
//! loop makes the socket non-blocking and sleeps in `ppoll(2)` on its one
//! descriptor, the socket; the dispatcher wakes it after pushing into the
//! connection's outbox with a signal sent to this thread
//! ([`crate::waker::Waker`]: no second descriptor per client). So a routed
//! message is written as soon as it arrives (no timer tick), an idle
//! connection sleeps until its next deadline (the channel's renewal timer,
//! the next WebSocket ping, or the idle timeout: deadlines, not a tick), one
//! thread serves both directions, and tungstenite's own pongs and close
//! replies go through the same single writer.

pub mod auth;
pub mod link;
pub mod offline;
pub mod offline_batch;
pub mod session;
pub mod socket;

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Sender;
use log::{debug, info};

use crate::config::Config;
use crate::dispatcher::{ConnId, Envelope};
use crate::gate::Gate;
use crate::http::{self, RequestHead, Router};
use crate::monitoring::Metrics;
use crate::password::PasswordHasher;
use crate::quota::MailboxQuota;
use crate::store::Store;
use crate::throttle::AuthThrottle;

use self::link::{Link, LinkError};
use self::offline::OfflineClaims;
use self::socket::Socket;

/// What every connection thread shares.
pub struct Services {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub dispatcher: Sender<Envelope>,
    pub passwords: PasswordHasher,
    /// Bounds concurrent argon2 work.
    pub hash_gate: Gate,
    /// Bounds how many connection threads seal a user list at once (every
    /// broadcast wakes them all: unbounded, thousands of sealed copies
    /// would be in memory together).
    pub list_gate: Gate,
    pub offline_claims: OfflineClaims,
    /// Login and registration throttling.
    pub throttle: AuthThrottle,
    /// Offline quota per recipient.
    pub mailboxes: MailboxQuota,
    /// What plain HTTP requests on the chat port are answered with.
    pub http: Router,
    /// Counters and gauges of this server.
    pub metrics: Metrics,
    /// TLS settings when the port speaks TLS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Serves one client until it is gone. Never panics on client input; every
/// error ends this connection only.
pub fn serve(stream: TcpStream, peer: SocketAddr, conn: ConnId, services: &Services) {
    info!("{peer}: connected");
    let config = &services.config;
    if let Err(error) = tune_socket(&stream, config) {
        info!("{peer}: socket options not set: {error}");
    }
    let deadline = Instant::now() + config.handshake_timeout;
    let mut socket = Socket::new(stream, Some(deadline));
    if let Some(tls) = &services.tls {
        match rustls::ServerConnection::new(tls.clone()) {
            Ok(connection) => socket = socket.with_tls(connection),
            Err(error) => {
                info!("{peer}: no TLS session: {error}");
                return;
            }
        }
    }
    let head = match http::read_head(&mut socket) {
        Ok(head) => head,
        Err(error) => {
            info!("{peer}: no valid request: {error}");
            answer_bad_request(socket, &error);
            return;
        }
    };
    if !head.is_websocket_upgrade() {
        answer_http(socket, &head, peer, &services.http);
        return;
    }
    socket.replay(head.raw);
    let mut link = match Link::accept(
        socket,
        peer,
        config.max_auth_message_bytes,
        config.renewal.clone(),
    ) {
        Ok(link) => link.counted(&services.metrics),
        Err(error) => {
            info!("{peer}: handshake failed: {error}");
            return;
        }
    };
    match auth::authenticate(&mut link, conn, services) {
        Ok(Some(login)) => session::run(link, login, conn, services),
        Ok(None) => link.close(Some(1000), "authentication ended"),
        Err(error) => end_before_login(link, &error),
    }
}

/// Kernel-level liveness (PROTOCOL.md section 7): TCP keepalive probes and
/// `TCP_USER_TIMEOUT`, so a vanished peer is noticed even when idle.
fn tune_socket(stream: &TcpStream, config: &Config) -> std::io::Result<()> {
    let socket = socket2::SockRef::from(stream);
    let interval = (config.tcp_keepalive / 3).max(std::time::Duration::from_secs(1));
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(config.tcp_keepalive)
        .with_interval(interval)
        .with_retries(3);
    socket.set_tcp_keepalive(&keepalive)?;
    socket.set_tcp_user_timeout(Some(config.tcp_user_timeout))
}

/// Answers one plain HTTP request and closes the connection.
fn answer_http(mut socket: Socket, head: &RequestHead, peer: SocketAddr, router: &Router) {
    let response = router.respond(head, peer);
    info!(
        "{peer}: {} {} -> {}",
        head.method,
        head.path(),
        response.status
    );
    if let Err(error) = response.write_to(&mut socket, head.method == "HEAD") {
        debug!("{peer}: response not written: {error}");
    }
    link::linger(socket.stream());
}

/// Tells a client whose request could not be read why, when it is still
/// there to hear it.
fn answer_bad_request(mut socket: Socket, error: &http::HttpError) {
    let status = match error {
        http::HttpError::TooLarge => 431,
        http::HttpError::Malformed(_) => 400,
        http::HttpError::Closed | http::HttpError::Io(_) => {
            link::linger(socket.stream());
            return;
        }
    };
    let _ = http::Response::text(status, format!("{error}\n")).write_to(&mut socket, false);
    link::linger(socket.stream());
}

fn end_before_login(link: Link, error: &LinkError) {
    match error {
        LinkError::Closed => debug!("{}: left before logging in", link.peer),
        other => info!("{}: closed before login: {other}", link.peer),
    }
    let code = error.close_code();
    link.close(code, &error.to_string());
}
