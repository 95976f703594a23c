//! The dispatcher: one thread that owns who is online and routes every
//! command between sessions.
//!
//! Connection threads send it [`Envelope`]s over one bounded crossbeam
//! channel; it answers by pushing [`Outgoing`] items into the recipients'
//! [`Outbox`]es with non-blocking `try_send`. It never touches a socket or the
//! database and never waits on anything but its own inbox, so no client can
//! stall it:
//! - a full outbox means its reader is too slow: that connection is asked to
//!   close and the item that did not fit goes to its overflow, from where the
//!   connection thread moves any message to the offline store;
//! - a message for an offline user goes back to the *sender's* thread as
//!   [`Outgoing::StoreOffline`], which writes it to the store;
//! - relays for a session that is not yet ready (PROTOCOL.md section 3) wait
//!   here, bounded, until its first chat command or the ready timeout.
//!
//! A connection's cleanup says "connection N closed", never "user X left", so
//! an old connection can never remove the session that replaced it.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::{info, warn};

use crate::monitoring::Metrics;
use crate::outbox::{CloseRequest, Outbox, Outgoing};
use crate::presence::{fold, folded, Coalescing, Presence};
use crate::protocol::{carries_peer_signature, messages, Payload, RelayKind};

/// How long the dispatcher, once shut down, keeps answering the `Closed`
/// envelopes of the connections it asked to close.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(4);

/// Identifies one connection for the whole life of the server.
pub type ConnId = u64;

/// What connection threads tell the dispatcher.
#[derive(Debug)]
pub enum Envelope {
    /// A connection authenticated; the dispatcher answers on `reply`.
    /// Boxed, so that the common envelope (a command) stays small: the
    /// dispatch queue's slots are as big as its largest variant.
    Login(Box<LoginRequest>),
    /// A user was registered (the row is committed).
    Registered { username: String },
    /// A command of a logged-in session.
    Command {
        conn: ConnId,
        command: SessionCommand,
    },
    /// The connection ended; `unsent` are the items it had taken from its
    /// outbox but not written. The dispatcher forgets the connection, hands
    /// every undelivered message back in order (see [`Dispatcher::closed`]),
    /// and then answers on `done`, after which nothing more is ever pushed
    /// to that outbox.
    Closed {
        conn: ConnId,
        unsent: Vec<Outgoing>,
        done: Sender<()>,
    },
    /// Offline messages for these users were committed to the store: a
    /// recipient who is online by now and already fetched its mailbox
    /// gets it delivered again (it logged in while they were being stored).
    OfflineStored { recipients: Vec<Arc<str>> },
    /// Ask every connection to close and stop the dispatcher.
    Shutdown,
}

/// A successful authentication, to become the user's session.
#[derive(Debug)]
pub struct LoginRequest {
    pub conn: ConnId,
    /// The spelling stored at registration.
    pub username: String,
    pub peer: SocketAddr,
    pub outbox: Arc<Outbox>,
    /// Set for a challenge login: when its challenge was issued.
    pub challenge_issued: Option<Instant>,
    pub reply: Sender<LoginOutcome>,
}

/// The dispatcher's answer to a [`LoginRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginOutcome {
    /// The connection is now the user's session.
    Accepted,
    /// The user's live session sent a peer signature after the challenge was
    /// issued (PROTOCOL.md section 3, signature oracle): refused.
    ChallengeVoided,
}

/// Commands of a logged-in session that the dispatcher handles.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionCommand {
    Relay {
        kind: RelayKind,
        to: String,
        payload: Payload,
    },
    Typing {
        to: String,
        is_typing: bool,
    },
    RequestUserList,
    /// `REQUEST_OFFLINE_MESSAGES`: the connection thread delivers the
    /// mailbox; from now on, messages stored later are announced to it.
    OfflineRequested,
    /// Any other chat command (handled on the connection thread): the
    /// session is ready to receive.
    Ready,
}

/// Tuning of the dispatcher, from [`crate::config::Config`].
#[derive(Debug, Clone)]
pub struct DispatcherSettings {
    pub ready_timeout: Duration,
    /// Relays that may wait for a session that is not ready yet.
    pub pending_limit: usize,
    pub presence: Coalescing,
    /// Users online and routed relays are counted here.
    pub metrics: Metrics,
}

/// One connection known to the dispatcher (a live session, or a replaced
/// one that has not closed yet).
#[derive(Debug)]
struct Connection {
    user: Arc<str>,
    /// `fold(user)`: the key of the user's session, computed once.
    key: String,
    peer: SocketAddr,
    outbox: Arc<Outbox>,
}

/// The live session of a user.
#[derive(Debug)]
struct Session {
    conn: ConnId,
    /// Relays waiting for the first chat command; `None` once ready.
    pending: Option<VecDeque<Outgoing>>,
    /// When this session last relayed a peer signature.
    last_peer_signature: Option<Instant>,
    /// Whether it asked for its offline messages.
    asked_offline: bool,
}

/// The routing state; run it with [`Dispatcher::run`] on its own thread.
pub struct Dispatcher {
    inbox: Receiver<Envelope>,
    settings: DispatcherSettings,
    connections: HashMap<ConnId, Connection>,
    /// fold(user) -> live session.
    sessions: HashMap<String, Session>,
    presence: Presence,
    /// Sessions to make ready by the timeout, in login order.
    ready_deadlines: VecDeque<(Instant, ConnId)>,
}

impl Dispatcher {
    /// A dispatcher reading `inbox`, with the registered `usernames`.
    pub fn new(
        inbox: Receiver<Envelope>,
        usernames: Vec<String>,
        settings: DispatcherSettings,
    ) -> Dispatcher {
        let presence = Presence::new(usernames, settings.presence.clone());
        Dispatcher {
            inbox,
            settings,
            connections: HashMap::new(),
            sessions: HashMap::new(),
            presence,
            ready_deadlines: VecDeque::new(),
        }
    }

    /// Handles envelopes until `Shutdown` or until every sender is gone.
    pub fn run(mut self) {
        loop {
            let received = match self.next_deadline() {
                Some(deadline) => self.inbox.recv_deadline(deadline),
                None => self
                    .inbox
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
            };
            match received {
                Ok(Envelope::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(envelope) => self.handle(envelope, Instant::now()),
                Err(RecvTimeoutError::Timeout) => {}
            }
            self.fire_timers(Instant::now());
            let online = i64::try_from(self.sessions.len()).unwrap_or(i64::MAX);
            self.settings.metrics.users_online.set(online);
        }
        self.shut_down();
        self.settings.metrics.users_online.set(0);
        self.drain_closing(Instant::now() + SHUTDOWN_DRAIN);
    }

    /// After `shut_down`: answers the `Closed` envelopes of the closing
    /// connections (each thread waits for that answer before it stores what
    /// is left in its outbox) until none is left or `deadline` passes.
    /// Other envelopes are dropped, which fails their reply channels.
    fn drain_closing(&mut self, deadline: Instant) {
        while !self.connections.is_empty() {
            match self.inbox.recv_deadline(deadline) {
                Ok(Envelope::Closed { conn, unsent, done }) => {
                    self.closed(conn, unsent, Instant::now());
                    let _ = done.send(());
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let ready = self.ready_deadlines.front().map(|(deadline, _)| *deadline);
        match (ready, self.presence.broadcast_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn handle(&mut self, envelope: Envelope, now: Instant) {
        match envelope {
            Envelope::Login(request) => self.login(*request, now),
            Envelope::Registered { username } => {
                self.presence.register(&username, now);
            }
            Envelope::Command { conn, command } => self.command(conn, command, now),
            Envelope::OfflineStored { recipients } => self.offline_stored(&recipients),
            Envelope::Closed { conn, unsent, done } => {
                self.closed(conn, unsent, now);
                let _ = done.send(());
            }
            Envelope::Shutdown => {}
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(&(deadline, conn)) = self.ready_deadlines.front() {
            if deadline > now {
                break;
            }
            self.ready_deadlines.pop_front();
            self.make_ready(conn);
        }
        if let Some(list) = self.presence.take_due_broadcast(now) {
            self.settings.metrics.presence_broadcasts.inc();
            for session in self.sessions.values() {
                if let Some(connection) = self.connections.get(&session.conn) {
                    connection.outbox.set_user_list(list.clone());
                }
            }
        }
    }

    fn login(&mut self, request: LoginRequest, now: Instant) {
        let key = fold(&request.username);
        let voided = match (request.challenge_issued, self.sessions.get(&key)) {
            (Some(issued), Some(session)) => session
                .last_peer_signature
                .is_some_and(|signed| signed >= issued),
            _ => false,
        };
        if voided {
            warn!(
                "{} {}: challenge login refused, the live session relayed a peer signature after the challenge was issued",
                request.peer, request.username
            );
            let _ = request.reply.send(LoginOutcome::ChallengeVoided);
            return;
        }
        let user = self.presence.register(&request.username, now);
        let mut pending = VecDeque::new();
        if let Some(old) = self.sessions.remove(&key) {
            if request.challenge_issued.is_some() {
                let old_peer = self
                    .connections
                    .get(&old.conn)
                    .map_or_else(|| "?".to_owned(), |c| c.peer.to_string());
                warn!(
                    "{} {user}: challenge login replaces the live session from {old_peer}",
                    request.peer
                );
            }
            pending = self.replace(old, &user);
        }
        self.connections.insert(
            request.conn,
            Connection {
                user: user.clone(),
                key: key.clone(),
                peer: request.peer,
                outbox: request.outbox,
            },
        );
        self.sessions.insert(
            key,
            Session {
                conn: request.conn,
                pending: Some(pending),
                last_peer_signature: None,
                asked_offline: false,
            },
        );
        self.ready_deadlines
            .push_back((now + self.settings.ready_timeout, request.conn));
        self.presence.set_online(&user, true, now);
        let _ = request.reply.send(LoginOutcome::Accepted);
    }

    /// Tells a replaced session to go, and takes back the relays it has not
    /// read yet so the new session gets them instead.
    fn replace(&mut self, old: Session, user: &str) -> VecDeque<Outgoing> {
        let mut moved: VecDeque<Outgoing> = old.pending.unwrap_or_default();
        if let Some(connection) = self.connections.get(&old.conn) {
            info!("{} {}: replaced by a newer login", connection.peer, user);
            for item in connection.outbox.reclaim() {
                match item {
                    Outgoing::StoreOffline { .. } => connection.outbox.push_final(item),
                    relay => moved.push_back(relay),
                }
            }
            connection
                .outbox
                .push_final(Outgoing::Error(messages::LOGGED_IN_ELSEWHERE));
            connection.outbox.request_close(CloseRequest::Replaced);
        }
        moved
    }

    /// Forgets a closed connection. What it never delivered (its unsent
    /// items, its outbox, the relays waiting for it to be ready) goes, in
    /// order, to its user's newer session if there is one, else back to
    /// each sender's thread for the offline store: the same path later
    /// messages from that sender take, so their order in the store holds.
    /// Only messages whose sender is gone, and this connection's own
    /// offline-store duties, stay in its outbox for its thread to store.
    fn closed(&mut self, conn: ConnId, unsent: Vec<Outgoing>, now: Instant) {
        let Some(connection) = self.connections.remove(&conn) else {
            return;
        };
        let key = fold(&connection.user);
        let mut undelivered = unsent;
        undelivered.extend(connection.outbox.reclaim());
        if self.sessions.get(&key).is_some_and(|s| s.conn == conn) {
            if let Some(session) = self.sessions.remove(&key) {
                undelivered.extend(session.pending.unwrap_or_default());
            }
            self.presence.set_online(&connection.user, false, now);
        }
        for item in undelivered {
            self.hand_back(item, &connection, conn);
        }
    }

    fn hand_back(&mut self, item: Outgoing, closed: &Connection, closed_conn: ConnId) {
        let Outgoing::Relay {
            kind: RelayKind::Message,
            from,
            payload,
        } = item
        else {
            // Its own offline-store duties and its last notices (e.g.
            // "logged in elsewhere") stay with the closing connection.
            if matches!(item, Outgoing::StoreOffline { .. } | Outgoing::Error(_)) {
                closed.outbox.push_final(item);
            }
            return;
        };
        let recipient_key = fold(&closed.user);
        if self.sessions.contains_key(&recipient_key) {
            let relay = Outgoing::Relay {
                kind: RelayKind::Message,
                from,
                payload,
            };
            self.deliver(&recipient_key, relay, closed_conn);
            return;
        }
        match self.sessions.get(&fold(&from)).map(|sender| sender.conn) {
            Some(sender) => {
                let store = Outgoing::StoreOffline {
                    to: closed.user.clone(),
                    payload,
                };
                self.push_or_evict(sender, store);
            }
            None => closed.outbox.push_final(Outgoing::Relay {
                kind: RelayKind::Message,
                from,
                payload,
            }),
        }
    }

    fn command(&mut self, conn: ConnId, command: SessionCommand, now: Instant) {
        let Some(sender) = self.connections.get(&conn) else {
            return;
        };
        let sender_name = sender.user.clone();
        self.make_ready(conn);
        match command {
            SessionCommand::Relay { kind, to, payload } => {
                if carries_peer_signature(kind, &payload) {
                    if let Some(session) = self.own_session_mut(conn) {
                        session.last_peer_signature = Some(now);
                    }
                }
                self.relay(conn, sender_name, kind, &to, payload);
            }
            SessionCommand::Typing { to, is_typing } => self.typing(sender_name, &to, is_typing),
            SessionCommand::RequestUserList => {
                if self.presence.request_waits_for_broadcast() {
                    self.settings.metrics.list_requests_coalesced.inc();
                    return;
                }
                let list = self.presence.snapshot();
                if let Some(sender) = self.connections.get(&conn) {
                    sender.outbox.set_user_list(list);
                }
            }
            SessionCommand::OfflineRequested => {
                if let Some(session) = self.own_session_mut(conn) {
                    session.asked_offline = true;
                }
            }
            SessionCommand::Ready => {}
        }
    }

    /// Announces newly stored offline messages to recipients who already
    /// fetched their mailbox in this session.
    fn offline_stored(&mut self, recipients: &[Arc<str>]) {
        for recipient in recipients {
            let Some(session) = self.sessions.get(&fold(recipient)) else {
                continue;
            };
            if !session.asked_offline {
                continue;
            }
            if let Some(connection) = self.connections.get(&session.conn) {
                connection.outbox.note_offline_waiting();
            }
        }
    }

    /// The live session of `conn`'s user, if `conn` is still it (not a
    /// replaced connection that has not closed yet).
    fn own_session_mut(&mut self, conn: ConnId) -> Option<&mut Session> {
        let key = &self.connections.get(&conn)?.key;
        self.sessions
            .get_mut(key)
            .filter(|session| session.conn == conn)
    }

    fn relay(
        &mut self,
        sender: ConnId,
        from: Arc<str>,
        kind: RelayKind,
        to: &str,
        payload: Payload,
    ) {
        let key = folded(to);
        if self.sessions.contains_key(key.as_ref()) {
            self.settings.metrics.messages_routed.inc();
            let item = Outgoing::Relay {
                kind,
                from,
                payload,
            };
            self.deliver(&key, item, sender);
            return;
        }
        let answer = match self.presence.registered(to) {
            Some(stored) if kind == RelayKind::Message => Outgoing::StoreOffline {
                to: stored.clone(),
                payload,
            },
            Some(_) => Outgoing::Error(messages::RECIPIENT_OFFLINE),
            None => Outgoing::Error(messages::USER_NOT_FOUND),
        };
        self.push_or_evict(sender, answer);
    }

    /// Hands a relay to the live session `key`: queued while it is not
    /// ready; a message that finds no room goes back to the sender's thread
    /// for the offline store.
    fn deliver(&mut self, key: &str, item: Outgoing, sender: ConnId) {
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let recipient = session.conn;
        match &mut session.pending {
            Some(pending) if pending.len() < self.settings.pending_limit => {
                pending.push_back(item);
            }
            Some(_) => {
                if let Outgoing::Relay {
                    kind: RelayKind::Message,
                    payload,
                    ..
                } = item
                {
                    let to = self
                        .connections
                        .get(&recipient)
                        .map(|c| c.user.clone())
                        .unwrap_or_else(|| Arc::from(key));
                    self.push_or_evict(sender, Outgoing::StoreOffline { to, payload });
                }
            }
            None => self.push_or_evict(recipient, item),
        }
    }

    fn typing(&mut self, from: Arc<str>, to: &str, is_typing: bool) {
        let Some(session) = self.sessions.get(folded(to).as_ref()) else {
            return;
        };
        if session.pending.is_some() {
            return;
        }
        if let Some(connection) = self.connections.get(&session.conn) {
            // A typing notice that finds no room is dropped: it is not worth
            // closing a connection over.
            let _ = connection.outbox.push(Outgoing::Typing { from, is_typing });
        }
    }

    /// Pushes into a connection's outbox (a store request into its own
    /// list, never refused); if the queue is full, that connection is too
    /// slow: it is asked to close (the item goes to its overflow) and stops
    /// being its user's session.
    fn push_or_evict(&mut self, conn: ConnId, item: Outgoing) {
        let Some(connection) = self.connections.get(&conn) else {
            return;
        };
        if let Outgoing::StoreOffline { .. } = item {
            // The connection's own duty, stored by its thread in batches:
            // a burst of them does not mean it reads too slowly.
            connection.outbox.push_store(item);
            return;
        }
        let Err(item) = connection.outbox.push(item) else {
            return;
        };
        warn!(
            "{} {}: outbox full, closing the connection as too slow",
            connection.peer, connection.user
        );
        connection.outbox.push_final(item);
        connection.outbox.request_close(CloseRequest::TooSlow);
        let user = connection.user.clone();
        let key = fold(&user);
        if self.sessions.get(&key).is_some_and(|s| s.conn == conn) {
            self.sessions.remove(&key);
            self.presence.set_online(&user, false, Instant::now());
        }
    }

    fn make_ready(&mut self, conn: ConnId) {
        let Some(connection) = self.connections.get(&conn) else {
            return;
        };
        let Some(session) = self.sessions.get_mut(&connection.key) else {
            return;
        };
        if session.conn != conn {
            return;
        }
        if let Some(pending) = session.pending.take() {
            for item in pending {
                self.push_or_evict(conn, item);
            }
        }
    }

    fn shut_down(&mut self) {
        info!(
            "dispatcher stopping: closing {} connections",
            self.connections.len()
        );
        // Relays queued for sessions that are not ready yet: such a client
        // would drop them if they were sent now, so each message goes back to
        // its sender's thread to be stored (or, with the sender gone, to the
        // recipient's thread, which stores what it has not sent: the close is
        // requested first, and a thread asked to close writes nothing more).
        for connection in self.connections.values() {
            connection.outbox.request_close(CloseRequest::Shutdown);
        }
        let mut queued = Vec::new();
        for (conn, connection) in &self.connections {
            let key = fold(&connection.user);
            if let Some(session) = self.sessions.get_mut(&key) {
                if session.conn == *conn {
                    if let Some(pending) = session.pending.take() {
                        queued.push((*conn, connection.user.clone(), pending));
                    }
                }
            }
        }
        for (recipient_conn, recipient, pending) in queued {
            for item in pending {
                let Outgoing::Relay {
                    kind: RelayKind::Message,
                    from,
                    payload,
                } = item
                else {
                    continue;
                };
                match self.sessions.get(&fold(&from)).map(|sender| sender.conn) {
                    Some(sender) if sender != recipient_conn => {
                        let store = Outgoing::StoreOffline {
                            to: recipient.clone(),
                            payload,
                        };
                        self.push_or_evict(sender, store);
                    }
                    _ => {
                        if let Some(connection) = self.connections.get(&recipient_conn) {
                            connection.outbox.push_final(Outgoing::Relay {
                                kind: RelayKind::Message,
                                from,
                                payload,
                            });
                        }
                    }
                }
            }
        }
    }

    /// Number of live sessions (for tests and logs).
    pub fn online_count(&self) -> usize {
        self.presence.online_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::Receiver;
    use serde_json::json;

    struct Harness {
        dispatcher: Dispatcher,
        now: Instant,
    }

    struct TestConn {
        outbox: Arc<Outbox>,
        receiver: Receiver<Outgoing>,
    }

    impl TestConn {
        fn drain(&self) -> Vec<Outgoing> {
            std::iter::from_fn(|| self.outbox.next(&self.receiver)).collect()
        }
    }

    fn harness(users: &[&str]) -> Harness {
        let (_tx, inbox) = crossbeam_channel::bounded(16);
        let settings = DispatcherSettings {
            ready_timeout: Duration::from_secs(5),
            pending_limit: 3,
            presence: Coalescing {
                base_window: Duration::from_millis(100),
                budget_bytes_per_sec: 100_000_000,
                burst_changes: 3,
            },
            metrics: Metrics::new(),
        };
        let names = users.iter().map(|name| name.to_string()).collect();
        Harness {
            dispatcher: Dispatcher::new(inbox, names, settings),
            now: Instant::now(),
        }
    }

    impl Harness {
        fn login(&mut self, conn: ConnId, user: &str, capacity: usize) -> TestConn {
            self.try_login(conn, user, capacity, None).0
        }

        fn try_login(
            &mut self,
            conn: ConnId,
            user: &str,
            capacity: usize,
            challenge_issued: Option<Instant>,
        ) -> (TestConn, LoginOutcome) {
            let (outbox, receiver) = Outbox::new(capacity);
            let (reply, outcome) = crossbeam_channel::bounded(1);
            let request = LoginRequest {
                conn,
                username: user.to_owned(),
                peer: "127.0.0.1:1".parse().unwrap(),
                outbox: outbox.clone(),
                challenge_issued,
                reply,
            };
            self.dispatcher
                .handle(Envelope::Login(Box::new(request)), self.now);
            (TestConn { outbox, receiver }, outcome.recv().unwrap())
        }

        fn command(&mut self, conn: ConnId, command: SessionCommand) {
            self.dispatcher
                .handle(Envelope::Command { conn, command }, self.now);
        }

        fn message(&mut self, conn: ConnId, to: &str, n: i64) {
            self.command(
                conn,
                SessionCommand::Relay {
                    kind: RelayKind::Message,
                    to: to.into(),
                    payload: Payload::from_value(&json!({ "n": n })),
                },
            );
        }

        fn close(&mut self, conn: ConnId) {
            let (done, wait) = crossbeam_channel::bounded(1);
            let unsent = Vec::new();
            self.dispatcher
                .handle(Envelope::Closed { conn, unsent, done }, self.now);
            wait.try_recv().expect("Closed is acknowledged at once");
        }
    }

    fn relayed(from: &str, n: i64) -> Outgoing {
        Outgoing::Relay {
            kind: RelayKind::Message,
            from: Arc::from(from),
            payload: Payload::from_value(&json!({ "n": n })),
        }
    }

    /// The dispatch queue's slots are as big as the biggest envelope: a
    /// command (the bulk of the traffic) must not pay for a login's fields.
    #[test]
    fn an_envelope_fits_a_cache_line() {
        assert!(std::mem::size_of::<Envelope>() <= 64);
    }

    #[test]
    fn relays_wait_until_the_recipient_is_ready_then_keep_order() {
        let mut h = harness(&["ana", "bob"]);
        let ana = h.login(1, "ana", 8);
        let bob = h.login(2, "bob", 8);
        h.command(1, SessionCommand::Ready);
        h.message(1, "BOB", 1);
        h.message(1, "bob", 2);
        assert!(bob.drain().is_empty(), "bob is not ready yet");
        h.command(2, SessionCommand::RequestUserList);
        assert_eq!(bob.drain(), vec![relayed("ana", 1), relayed("ana", 2)]);
        assert!(ana.drain().is_empty());
    }

    #[test]
    fn ready_timeout_releases_queued_relays() {
        let mut h = harness(&["ana", "bob"]);
        let _ana = h.login(1, "ana", 8);
        let bob = h.login(2, "bob", 8);
        h.message(1, "bob", 1);
        h.dispatcher.fire_timers(h.now + Duration::from_secs(4));
        assert!(bob.drain().is_empty());
        h.dispatcher.fire_timers(h.now + Duration::from_secs(5));
        assert_eq!(bob.drain(), vec![relayed("ana", 1)]);
    }

    #[test]
    fn offline_and_unknown_recipients() {
        let mut h = harness(&["ana", "Bob"]);
        let ana = h.login(1, "ana", 8);
        h.message(1, "bob", 7);
        h.message(1, "nobody", 8);
        h.command(
            1,
            SessionCommand::Relay {
                kind: RelayKind::Handshake,
                to: "bob".into(),
                payload: Payload::from_value(&json!({})),
            },
        );
        assert_eq!(
            ana.drain(),
            vec![
                Outgoing::StoreOffline {
                    to: Arc::from("Bob"),
                    payload: Payload::from_value(&json!({ "n": 7 }))
                },
                Outgoing::Error(messages::USER_NOT_FOUND),
                Outgoing::Error(messages::RECIPIENT_OFFLINE),
            ]
        );
    }

    #[test]
    fn newest_login_replaces_and_old_close_keeps_the_new_session() {
        let mut h = harness(&["ana", "bob"]);
        let _bob = h.login(2, "bob", 8);
        h.command(2, SessionCommand::Ready);
        let old = h.login(1, "ana", 8);
        h.command(1, SessionCommand::Ready);
        h.message(2, "ana", 1);
        let new = h.login(3, "ANA", 8);
        assert_eq!(old.outbox.close_requested(), Some(CloseRequest::Replaced));
        assert_eq!(
            old.drain(),
            vec![Outgoing::Error(messages::LOGGED_IN_ELSEWHERE)],
            "the unread relay moved to the new session"
        );
        h.close(1);
        h.command(3, SessionCommand::Ready);
        assert_eq!(new.drain(), vec![relayed("bob", 1)]);
        h.message(2, "ana", 2);
        assert_eq!(new.drain(), vec![relayed("bob", 2)]);
        assert_eq!(h.dispatcher.online_count(), 2);
    }

    #[test]
    fn full_outbox_evicts_the_slow_reader_without_losing_the_message() {
        let mut h = harness(&["ana", "bob"]);
        let _ana = h.login(1, "ana", 8);
        let bob = h.login(2, "bob", 2);
        h.command(2, SessionCommand::Ready);
        for n in 0..3 {
            h.message(1, "bob", n);
        }
        assert_eq!(bob.outbox.close_requested(), Some(CloseRequest::TooSlow));
        assert_eq!(bob.drain().len(), 3, "the overflowing message is kept");
        assert_eq!(h.dispatcher.online_count(), 1);
    }

    #[test]
    fn peer_signature_after_a_challenge_voids_it() {
        let mut h = harness(&["ana", "bob"]);
        let _ana = h.login(1, "ana", 8);
        let _bob = h.login(2, "bob", 8);
        let issued = h.now;
        h.now += Duration::from_millis(1);
        h.command(
            1,
            SessionCommand::Relay {
                kind: RelayKind::Auth,
                to: "bob".into(),
                payload: Payload::from_value(&json!({"step": "RESPONSE_B", "payload": {}})),
            },
        );
        let (_, outcome) = h.try_login(3, "ana", 8, Some(issued));
        assert_eq!(outcome, LoginOutcome::ChallengeVoided);
        let (_, outcome) = h.try_login(4, "ana", 8, Some(h.now + Duration::from_millis(1)));
        assert_eq!(outcome, LoginOutcome::Accepted, "a later challenge is fine");
    }

    #[test]
    fn presence_broadcast_is_coalesced_and_reaches_everyone() {
        let mut h = harness(&["ana", "bob"]);
        let ana = h.login(1, "ana", 8);
        let bob = h.login(2, "bob", 8);
        assert_eq!(ana.outbox.take_user_list(), None, "not before the window");
        h.dispatcher.fire_timers(h.now + Duration::from_millis(100));
        for conn in [&ana, &bob] {
            let list: serde_json::Value =
                serde_json::from_str(&conn.outbox.take_user_list().unwrap()).unwrap();
            assert_eq!(list["users"][0]["isOnline"], json!(true));
            assert_eq!(list["users"][1]["isOnline"], json!(true));
        }
        h.close(2);
        h.dispatcher.fire_timers(h.now + Duration::from_secs(1));
        let list: serde_json::Value =
            serde_json::from_str(&ana.outbox.take_user_list().unwrap()).unwrap();
        assert_eq!(
            list["users"][1],
            json!({"username": "bob", "isOnline": false})
        );
    }

    #[test]
    fn list_requests_in_a_login_burst_are_answered_by_the_broadcast() {
        let online = |list: &str| -> Vec<bool> {
            let list: serde_json::Value = serde_json::from_str(list).unwrap();
            let users = list["users"].as_array().unwrap();
            users.iter().map(|u| u["isOnline"] == json!(true)).collect()
        };
        let mut h = harness(&["ana", "bob", "cleo"]);
        let ana = h.login(1, "ana", 8);
        h.command(1, SessionCommand::RequestUserList);
        let at_once = ana.outbox.take_user_list().expect("one login: at once");
        assert_eq!(online(&at_once), [true, false, false]);
        let bob = h.login(2, "bob", 8);
        let cleo = h.login(3, "cleo", 8);
        h.command(3, SessionCommand::RequestUserList);
        assert_eq!(cleo.outbox.take_user_list(), None, "three logins: a burst");
        h.dispatcher.fire_timers(h.now + Duration::from_millis(100));
        for conn in [&ana, &bob, &cleo] {
            let list = conn.outbox.take_user_list().expect("the broadcast");
            assert_eq!(online(&list), [true, true, true]);
        }
        h.command(2, SessionCommand::RequestUserList);
        assert!(bob.outbox.take_user_list().is_some(), "after it: at once");
    }

    #[test]
    fn a_closing_recipient_hands_messages_back_in_order() {
        let mut h = harness(&["ana", "bob"]);
        let ana = h.login(1, "ana", 8);
        let bob = h.login(2, "bob", 8);
        h.command(1, SessionCommand::Ready);
        h.message(1, "bob", 0);
        h.message(1, "bob", 1);
        let (done, wait) = crossbeam_channel::bounded(1);
        let unsent = vec![relayed("ana", -1)];
        h.dispatcher.handle(
            Envelope::Closed {
                conn: 2,
                unsent,
                done,
            },
            h.now,
        );
        wait.try_recv().unwrap();
        h.message(1, "bob", 2);
        let stored: Vec<_> = ana
            .drain()
            .into_iter()
            .map(|item| match item {
                Outgoing::StoreOffline { to, payload } => {
                    assert_eq!(&*to, "bob");
                    payload.to_value().unwrap()["n"].as_i64().unwrap()
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(stored, vec![-1, 0, 1, 2], "the sender stores them in order");
        assert!(bob.drain().is_empty());
    }

    #[test]
    fn pending_overflow_sends_messages_back_for_the_store() {
        let mut h = harness(&["ana", "bob"]);
        let ana = h.login(1, "ana", 8);
        let _bob = h.login(2, "bob", 8);
        for n in 0..4 {
            h.message(1, "bob", n);
        }
        assert_eq!(
            ana.drain(),
            vec![Outgoing::StoreOffline {
                to: Arc::from("bob"),
                payload: Payload::from_value(&json!({ "n": 3 }))
            }]
        );
    }

    #[test]
    fn stored_offline_messages_are_announced_only_to_who_fetched_the_mailbox() {
        let mut h = harness(&["ana", "bob", "cleo"]);
        let bob = h.login(2, "bob", 8);
        let cleo = h.login(3, "cleo", 8);
        h.command(2, SessionCommand::OfflineRequested);
        h.command(3, SessionCommand::Ready);
        let stored = Envelope::OfflineStored {
            recipients: vec![Arc::from("BOB"), Arc::from("cleo"), Arc::from("dan")],
        };
        h.dispatcher.handle(stored, h.now);
        assert!(bob.outbox.take_offline_waiting(), "bob fetched: look again");
        assert!(!bob.outbox.take_offline_waiting(), "once per announcement");
        assert!(
            !cleo.outbox.take_offline_waiting(),
            "cleo's own request is still to come and will find them"
        );
    }
}
