//! Client library (tests, tools, benchmarks): a synchronous chat client that
//! speaks the wire protocol exactly like the mobile client on its success
//! path, plus our additions (peer signature checks, `"immediate"` renewals).
//!
//! - [`identity`]: the Ed25519 identity key;
//! - [`connection`]: one secure-channel connection (raw access for tests);
//! - [`e2ee`]: the peer layer (pure state machines);
//! - [`Client`] (here): authentication, chat commands and an event stream in
//!   which the peer handshake is handled internally.

pub mod connection;
pub mod e2ee;
pub mod error;
pub mod identity;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub use crate::channel::ClientRenewalMode;
/// Short name of [`ClientRenewalMode`].
pub use crate::channel::ClientRenewalMode as RenewalMode;
pub use connection::{ClientConnection, CloseInfo, Command, ConnectOptions, WsUrl};
pub use e2ee::{E2eeError, PeerAction, PeerSession, PeerSessions, RekeyPolicy, SavedPeers};
pub use error::{ClientError, Result};
pub use identity::Identity;

use crate::crypto::{b64_decode, b64_encode};

/// Success statuses of `auth_response`.
pub const LOGIN_SUCCESS: &str = "LOGIN_SUCCESS";
pub const REGISTER_SUCCESS: &str = "REGISTER_SUCCESS";
pub const REGISTER_FAILED_USERNAME_EXISTS: &str = "REGISTER_FAILED:USERNAME_EXISTS";
pub const LOGIN_FAILED: &str = "LOGIN_FAILED";

/// How long auth commands wait for their answer by default.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// An `auth_response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthReply {
    pub status: String,
    pub message: Option<String>,
}

impl AuthReply {
    /// `LOGIN_SUCCESS` or `REGISTER_SUCCESS`.
    pub fn is_success(&self) -> bool {
        self.status == LOGIN_SUCCESS || self.status == REGISTER_SUCCESS
    }

    /// `Ok(self)` on success, else `ClientError::Auth`.
    pub fn into_result(self) -> Result<AuthReply> {
        if self.is_success() {
            Ok(self)
        } else {
            Err(ClientError::Auth {
                status: self.status,
                message: self.message,
            })
        }
    }
}

/// Something the server (or a peer, through it) told us.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A decrypted chat message.
    Message { from: String, text: String },
    /// `user_list_update`: every registered user and whether it is online.
    UserList(Vec<(String, bool)>),
    /// `TYPING_STATUS_UPDATE`.
    Typing { from: String, is_typing: bool },
    /// The peer session with this user is authenticated.
    PeerReady(String),
    /// The peer handshake failed (bad signature, bad identity key).
    PeerFailed { peer: String, reason: String },
    /// A peer frame was ignored (undecryptable, malformed, out of sequence).
    PeerDropped { from: String, reason: String },
    /// `ERROR {message}`.
    Error(String),
    /// `PUBLIC_KEY_RESPONSE`.
    PublicKey {
        username: String,
        public_key: String,
    },
    /// Anything else, as received.
    Other(Command),
}

fn same_name(a: &str, b: &str) -> bool {
    a.to_lowercase() == b.to_lowercase()
}

fn str_field(cmd: &Command, name: &str) -> Option<String> {
    cmd.get(name).and_then(Value::as_str).map(str::to_string)
}

/// A chat client over one connection.
pub struct Client {
    conn: ClientConnection,
    username: Option<String>,
    identity: Option<Identity>,
    peers: Option<PeerSessions>,
    rekey: RekeyPolicy,
    users: Option<Vec<(String, bool)>>,
    backlog: VecDeque<Event>,
}

impl Client {
    /// Connects (secure channel included) with default options.
    pub fn connect(url: &str) -> Result<Client> {
        Self::connect_with(url, &ConnectOptions::default())
    }

    /// Connects with `options`.
    pub fn connect_with(url: &str, options: &ConnectOptions) -> Result<Client> {
        Ok(Client::from_connection(ClientConnection::connect_with(
            url, options,
        )?))
    }

    /// Wraps an established connection.
    pub fn from_connection(conn: ClientConnection) -> Client {
        Client {
            conn,
            username: None,
            identity: None,
            peers: None,
            rekey: RekeyPolicy::MobileLike,
            users: None,
            backlog: VecDeque::new(),
        }
    }

    /// Registers a new account on a fresh connection, then logs in on
    /// another with the challenge (like the mobile client's register page,
    /// then its auto-login). Returns the logged-in client and its identity.
    pub fn register_and_login(
        url: &str,
        username: &str,
        password: &str,
    ) -> Result<(Client, Identity)> {
        let identity = Identity::generate();
        let mut reg = Client::connect(url)?;
        reg.register(username, password, &identity)?.into_result()?;
        reg.close();
        let mut client = Client::connect(url)?;
        client.login_challenge(username, &identity)?.into_result()?;
        Ok((client, identity))
    }

    /// The connection, for raw tests.
    pub fn connection(&mut self) -> &mut ClientConnection {
        &mut self.conn
    }

    /// Our user name once logged in (as we typed it).
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// The identity key used for peer authentication.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// Sets the identity used for peer authentication (needed after a
    /// password login without a new key).
    pub fn set_identity(&mut self, identity: Identity) {
        self.identity = Some(identity.clone());
        if let Some(name) = self.username.clone() {
            self.peers = Some(self.new_peers(&name, identity));
        }
    }

    /// Peer re-keying policy (default: like the mobile client).
    pub fn set_rekey_policy(&mut self, policy: RekeyPolicy) {
        self.rekey = policy;
        if let Some(p) = &mut self.peers {
            p.set_rekey_policy(policy);
        }
    }

    /// The peer sessions (once logged in with an identity).
    pub fn peers(&self) -> Option<&PeerSessions> {
        self.peers.as_ref()
    }

    /// The authenticated peer sessions, to keep until the next run (`None`
    /// before a login with an identity).
    pub fn save_peers(&self) -> Option<SavedPeers> {
        self.peers.as_ref().map(PeerSessions::save)
    }

    /// Restores peer sessions saved by [`Client::save_peers`] (call it after
    /// the login). Returns how many were restored.
    pub fn restore_peers(&mut self, saved: &SavedPeers) -> Result<usize> {
        Ok(self.peers_mut()?.restore(saved)?)
    }

    /// The last user list received (`None` before the first).
    pub fn users(&self) -> Option<&[(String, bool)]> {
        self.users.as_deref()
    }

    /// Is `name` online according to the last user list? `None` if no list
    /// came yet or the name is not in it.
    pub fn is_online(&self, name: &str) -> Option<bool> {
        self.users
            .as_ref()?
            .iter()
            .find(|(u, _)| same_name(u, name))
            .map(|(_, online)| *online)
    }

    fn new_peers(&self, me: &str, identity: Identity) -> PeerSessions {
        let mut p = PeerSessions::new(me, identity);
        p.set_rekey_policy(self.rekey);
        p
    }

    /// Sends a command (sealed).
    pub fn send(&mut self, command: &Value) -> Result<()> {
        self.conn.send(command)
    }

    /// Closes the connection (logout). Errors are irrelevant here.
    pub fn close(&mut self) {
        let _ = self.conn.close();
    }

    // ----- authentication -------------------------------------------------

    /// Waits for the answer to an auth command: an `auth_response` or a
    /// `LOGIN_CHALLENGE`. Anything else is kept as an event.
    fn auth_answer(&mut self, timeout: Duration) -> Result<Command> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(cmd) = self.conn.recv(left)? else {
                return Err(ClientError::Timeout);
            };
            match cmd.get("type").and_then(Value::as_str) {
                Some("auth_response") | Some("LOGIN_CHALLENGE") => return Ok(cmd),
                _ => {
                    let events = self.process(cmd)?;
                    self.backlog.extend(events);
                }
            }
        }
    }

    fn auth_reply(&mut self) -> Result<AuthReply> {
        let cmd = self.auth_answer(AUTH_TIMEOUT)?;
        if cmd.get("type").and_then(Value::as_str) != Some("auth_response") {
            return Err(ClientError::Protocol(format!(
                "expected auth_response, got {}",
                Value::Object(cmd)
            )));
        }
        let status = str_field(&cmd, "status")
            .ok_or_else(|| ClientError::Protocol("auth_response without a status string".into()))?;
        Ok(AuthReply {
            status,
            message: str_field(&cmd, "message"),
        })
    }

    fn logged_in(&mut self, username: &str, identity: Option<&Identity>) {
        let same_user = self
            .username
            .as_deref()
            .is_some_and(|previous| same_name(previous, username));
        let same_identity = match (identity, &self.identity) {
            (Some(new), Some(old)) => new.public_key() == old.public_key(),
            (None, _) => true,
            (Some(_), None) => false,
        };
        self.username = Some(username.to_string());
        if let Some(id) = identity {
            self.identity = Some(id.clone());
        }
        // Peer session keys outlive a connection, as in the mobile client:
        // a returning user keeps them and can read its offline messages.
        let keep_peers = same_user && same_identity && self.peers.is_some();
        if let (false, Some(id)) = (keep_peers, self.identity.clone()) {
            self.peers = Some(self.new_peers(username, id));
        }
    }

    /// Replaces the connection with a new one to `url` (not logged in yet),
    /// keeping the identity and the peer sessions for the next login.
    pub fn reconnect(&mut self, url: &str) -> Result<()> {
        self.close();
        self.conn = ClientConnection::connect(url)?;
        self.users = None;
        self.backlog.clear();
        Ok(())
    }

    /// `REGISTER {username, password, public_key}`. Returns the reply,
    /// whatever its status (see [`AuthReply::into_result`]).
    pub fn register(
        &mut self,
        username: &str,
        password: &str,
        identity: &Identity,
    ) -> Result<AuthReply> {
        self.send(&json!({
            "type": "REGISTER",
            "username": username,
            "password": password,
            "public_key": identity.public_key_b64(),
        }))?;
        self.auth_reply()
    }

    /// `LOGIN {username, password, new_public_key?}`. The mobile client
    /// always sends a fresh key; on success it becomes our identity.
    pub fn login_password(
        &mut self,
        username: &str,
        password: &str,
        new_key: Option<&Identity>,
    ) -> Result<AuthReply> {
        let mut cmd = json!({"type": "LOGIN", "username": username, "password": password});
        if let Some(id) = new_key {
            cmd["new_public_key"] = json!(id.public_key_b64());
        }
        self.send(&cmd)?;
        let reply = self.auth_reply()?;
        if reply.status == LOGIN_SUCCESS {
            self.logged_in(username, new_key);
        }
        Ok(reply)
    }

    /// `LOGIN_CHALLENGE_REQUEST`, then `LOGIN_CHALLENGE_RESPONSE` with the
    /// Ed25519 signature of the raw nonce bytes (the server's login protocol,
    /// as the mobile client's auto-login does).
    pub fn login_challenge(&mut self, username: &str, identity: &Identity) -> Result<AuthReply> {
        self.send(&json!({"type": "LOGIN_CHALLENGE_REQUEST", "username": username}))?;
        let cmd = self.auth_answer(AUTH_TIMEOUT)?;
        if cmd.get("type").and_then(Value::as_str) == Some("auth_response") {
            // Not a challenge: report what the server said.
            return Ok(AuthReply {
                status: str_field(&cmd, "status").unwrap_or_default(),
                message: str_field(&cmd, "message"),
            });
        }
        let nonce = str_field(&cmd, "nonce")
            .and_then(|n| b64_decode(&n).ok())
            .ok_or_else(|| {
                ClientError::Protocol("LOGIN_CHALLENGE without a base64 nonce".into())
            })?;
        let signature = identity.sign(&nonce);
        self.send(&json!({
            "type": "LOGIN_CHALLENGE_RESPONSE",
            "username": username,
            "signature": b64_encode(&signature),
        }))?;
        let reply = self.auth_reply()?;
        if reply.status == LOGIN_SUCCESS {
            self.logged_in(username, Some(identity));
        }
        Ok(reply)
    }

    // ----- chat commands --------------------------------------------------

    /// What the mobile client does when its home screen opens:
    /// `REQUEST_USER_LIST` then `REQUEST_OFFLINE_MESSAGES`.
    pub fn open_home(&mut self) -> Result<()> {
        self.request_user_list()?;
        self.request_offline_messages()
    }

    /// `REQUEST_USER_LIST`.
    pub fn request_user_list(&mut self) -> Result<()> {
        self.send(&json!({"type": "REQUEST_USER_LIST"}))
    }

    /// `REQUEST_OFFLINE_MESSAGES`.
    pub fn request_offline_messages(&mut self) -> Result<()> {
        self.send(&json!({"type": "REQUEST_OFFLINE_MESSAGES"}))
    }

    /// `START_TYPING` / `STOP_TYPING`.
    pub fn typing(&mut self, to: &str, is_typing: bool) -> Result<()> {
        let kind = if is_typing {
            "START_TYPING"
        } else {
            "STOP_TYPING"
        };
        self.send(&json!({"type": kind, "to": to}))
    }

    /// `GET_PUBLIC_KEY {target_username}`; the answer is an
    /// [`Event::PublicKey`] (or an [`Event::Error`]).
    pub fn get_public_key(&mut self, name: &str) -> Result<()> {
        self.send(&json!({"type": "GET_PUBLIC_KEY", "target_username": name}))
    }

    fn peers_mut(&mut self) -> Result<&mut PeerSessions> {
        self.peers
            .as_mut()
            .ok_or_else(|| ClientError::Protocol("not logged in with an identity key".into()))
    }

    /// Starts a peer handshake with `peer` (an `E2E_HANDSHAKE` INIT); an
    /// [`Event::PeerReady`] follows once both sides are authenticated.
    pub fn start_e2ee(&mut self, peer: &str) -> Result<()> {
        let actions = self.peers_mut()?.start(peer);
        let events = self.execute(actions)?;
        self.backlog.extend(events);
        Ok(())
    }

    /// Starts a handshake unless the session is ready, and waits for it.
    pub fn ensure_e2ee(&mut self, peer: &str, timeout: Duration) -> Result<()> {
        if !self.peers_mut()?.is_ready(peer) {
            self.start_e2ee(peer)?;
        }
        self.wait_peer_ready(peer, timeout)
    }

    /// Sends an end-to-end encrypted message (see
    /// [`PeerSession::send_message`]: it may be queued behind a handshake;
    /// an offline peer gets the stored keys). Peers count as online unless
    /// the last user list says otherwise.
    pub fn send_message(&mut self, peer: &str, text: &str) -> Result<()> {
        let online = self.is_online(peer).unwrap_or(self.users.is_none());
        let actions = self.peers_mut()?.send_message(peer, text, online)?;
        let events = self.execute(actions)?;
        self.backlog.extend(events);
        Ok(())
    }

    /// Carries out peer actions; returns the events they make.
    fn execute(&mut self, actions: Vec<PeerAction>) -> Result<Vec<Event>> {
        let mut events = Vec::new();
        for action in actions {
            match action {
                PeerAction::Send { to, kind, payload } => {
                    self.send(&json!({"type": kind, "to": to, "payload": payload}))?
                }
                PeerAction::FetchIdentity { peer } => self.get_public_key(&peer)?,
                PeerAction::Ready { peer } => events.push(Event::PeerReady(peer)),
                PeerAction::Message { from, text } => events.push(Event::Message { from, text }),
                PeerAction::Failed { peer, reason } => {
                    log::warn!("peer handshake with {peer} failed: {reason}");
                    events.push(Event::PeerFailed { peer, reason })
                }
                PeerAction::Dropped { from, reason } => {
                    log::debug!("dropped a peer frame from {from}: {reason}");
                    events.push(Event::PeerDropped { from, reason })
                }
            }
        }
        Ok(events)
    }

    /// Turns one command into events, answering peer signalling.
    fn process(&mut self, cmd: Command) -> Result<Vec<Event>> {
        let kind = cmd
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        match kind.as_str() {
            "user_list_update" => {
                let Some(list) = cmd.get("users").and_then(Value::as_array) else {
                    return Ok(vec![Event::Other(cmd)]);
                };
                let users: Vec<(String, bool)> = list
                    .iter()
                    .filter_map(|u| {
                        let name = u.get("username")?.as_str()?;
                        let online = u.get("isOnline")?.as_bool()?;
                        Some((name.to_string(), online))
                    })
                    .collect();
                self.users = Some(users.clone());
                Ok(vec![Event::UserList(users)])
            }
            "TYPING_STATUS_UPDATE" => match (
                str_field(&cmd, "from"),
                cmd.get("isTyping").and_then(Value::as_bool),
            ) {
                (Some(from), Some(is_typing)) => Ok(vec![Event::Typing { from, is_typing }]),
                _ => Ok(vec![Event::Other(cmd)]),
            },
            e2ee::E2E_HANDSHAKE | e2ee::E2E_AUTH | e2ee::E2E_MSG => {
                let (Some(from), Some(payload), Some(peers)) =
                    (str_field(&cmd, "from"), cmd.get("payload"), &mut self.peers)
                else {
                    return Ok(vec![Event::Other(cmd)]);
                };
                let actions = peers.handle(&kind, &from, payload);
                self.execute(actions)
            }
            "PUBLIC_KEY_RESPONSE" => {
                let (Some(username), Some(public_key)) =
                    (str_field(&cmd, "username"), str_field(&cmd, "public_key"))
                else {
                    return Ok(vec![Event::Other(cmd)]);
                };
                let mut events = Vec::new();
                if let Some(peers) = &mut self.peers {
                    let actions = peers.set_peer_identity(&username, &public_key);
                    events = self.execute(actions)?;
                }
                events.insert(
                    0,
                    Event::PublicKey {
                        username,
                        public_key,
                    },
                );
                Ok(events)
            }
            "ERROR" => Ok(vec![Event::Error(
                str_field(&cmd, "message").unwrap_or_default(),
            )]),
            _ => Ok(vec![Event::Other(cmd)]),
        }
    }

    /// Reads commands until at least one event comes or the deadline passes.
    fn read_events(&mut self, deadline: Instant) -> Result<Vec<Event>> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(cmd) = self.conn.recv(left)? else {
                return Ok(Vec::new());
            };
            let events = self.process(cmd)?;
            if !events.is_empty() {
                return Ok(events);
            }
        }
    }

    /// The next event, `None` if none within `timeout`. Peer signalling is
    /// answered internally.
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<Event>> {
        if let Some(e) = self.backlog.pop_front() {
            return Ok(Some(e));
        }
        let mut events = self.read_events(Instant::now() + timeout)?.into_iter();
        let first = events.next();
        self.backlog.extend(events);
        Ok(first)
    }

    /// Reads and processes whatever arrives within `window` (answering peer
    /// signalling and renewals); the events stay queued for `next_event` and
    /// the `wait_*` helpers. Returns how many events were queued. A
    /// synchronous client only answers its peers while it reads: when two
    /// clients run on one thread, poll the one that is not waiting.
    pub fn poll(&mut self, window: Duration) -> Result<usize> {
        let deadline = Instant::now() + window;
        let mut n = 0;
        while Instant::now() < deadline {
            let events = self.read_events(deadline)?;
            n += events.len();
            self.backlog.extend(events);
        }
        Ok(n)
    }

    /// Makes sure `a` and `b` (both logged in, on one thread) share a ready
    /// peer session: starts a handshake from `a` unless one is ready or under
    /// way, then polls both in turn until both sides are ready.
    pub fn pair_e2ee(a: &mut Client, b: &mut Client, timeout: Duration) -> Result<()> {
        let (Some(name_a), Some(name_b)) = (a.username.clone(), b.username.clone()) else {
            return Err(ClientError::Protocol(
                "both clients must be logged in".into(),
            ));
        };
        let ready = |c: &Client, peer: &str| c.peers.as_ref().is_some_and(|p| p.is_ready(peer));
        let busy = |c: &Client, peer: &str| {
            c.peers
                .as_ref()
                .and_then(|p| p.get(peer))
                .is_some_and(PeerSession::in_progress)
        };
        let both_ready = |a: &Client, b: &Client| ready(a, &name_b) && ready(b, &name_a);
        let any_busy = |a: &Client, b: &Client| busy(a, &name_b) || busy(b, &name_a);
        if !both_ready(a, b) && !any_busy(a, b) {
            a.start_e2ee(&name_b)?;
        }
        let deadline = Instant::now() + timeout;
        while !both_ready(a, b) || any_busy(a, b) {
            if Instant::now() >= deadline {
                return Err(ClientError::Timeout);
            }
            a.poll(Duration::from_millis(5))?;
            b.poll(Duration::from_millis(5))?;
        }
        Ok(())
    }

    /// All events that arrive within `window` (handy to assert silence).
    pub fn drain_events(&mut self, window: Duration) -> Result<Vec<Event>> {
        let deadline = Instant::now() + window;
        let mut out: Vec<Event> = self.backlog.drain(..).collect();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(out);
            }
            out.extend(self.read_events(deadline)?);
        }
    }

    /// The first event matching `pred` within `timeout`; events that do not
    /// match stay queued, in order, for `next_event`.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&Event) -> bool,
    ) -> Result<Event> {
        if let Some(i) = self.backlog.iter().position(&mut pred) {
            if let Some(e) = self.backlog.remove(i) {
                return Ok(e);
            }
        }
        let deadline = Instant::now() + timeout;
        loop {
            if Instant::now() >= deadline {
                return Err(ClientError::Timeout);
            }
            let events = self.read_events(deadline)?;
            let mut found = None;
            for e in events {
                if found.is_none() && pred(&e) {
                    found = Some(e);
                } else {
                    self.backlog.push_back(e);
                }
            }
            if let Some(e) = found {
                return Ok(e);
            }
        }
    }

    /// The next chat message from `peer`.
    pub fn wait_message_from(&mut self, peer: &str, timeout: Duration) -> Result<String> {
        match self.wait_for(
            timeout,
            |e| matches!(e, Event::Message { from, .. } if same_name(from, peer)),
        )? {
            Event::Message { text, .. } => Ok(text),
            other => Err(ClientError::Protocol(format!("unexpected event {other:?}"))),
        }
    }

    /// Waits until the session with `peer` is ready and no handshake is
    /// under way (at once if so; stale `PeerReady` events do not count). A
    /// failed handshake is an error.
    pub fn wait_peer_ready(&mut self, peer: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let session = self.peers.as_ref().and_then(|p| p.get(peer));
            if session.is_some_and(PeerSession::is_ready) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let e = self.wait_for(left, |e| match e {
                Event::PeerReady(p) => same_name(p, peer),
                Event::PeerFailed { peer: p, .. } => same_name(p, peer),
                _ => false,
            })?;
            if let Event::PeerFailed { reason, .. } = e {
                let busy = self
                    .peers
                    .as_ref()
                    .and_then(|p| p.get(peer))
                    .is_some_and(PeerSession::in_progress);
                if !busy {
                    return Err(ClientError::Protocol(format!(
                        "peer handshake failed: {reason}"
                    )));
                }
            }
        }
    }

    fn wait_presence(&mut self, name: &str, online: bool, timeout: Duration) -> Result<()> {
        if self.is_online(name) == Some(online) {
            return Ok(());
        }
        let listed = |users: &[(String, bool)]| {
            users
                .iter()
                .any(|(u, o)| same_name(u, name) && *o == online)
        };
        self.wait_for(
            timeout,
            |e| matches!(e, Event::UserList(users) if listed(users)),
        )?;
        Ok(())
    }

    /// Waits until the user list shows `name` online (at once if the last
    /// one did).
    pub fn wait_user_online(&mut self, name: &str, timeout: Duration) -> Result<()> {
        self.wait_presence(name, true, timeout)
    }

    /// Waits until the user list shows `name` offline.
    pub fn wait_user_offline(&mut self, name: &str, timeout: Duration) -> Result<()> {
        self.wait_presence(name, false, timeout)
    }

    /// The next user list.
    pub fn wait_user_list(&mut self, timeout: Duration) -> Result<Vec<(String, bool)>> {
        match self.wait_for(timeout, |e| matches!(e, Event::UserList(_)))? {
            Event::UserList(users) => Ok(users),
            other => Err(ClientError::Protocol(format!("unexpected event {other:?}"))),
        }
    }

    /// The next typing notice from `peer`; returns its `isTyping`.
    pub fn wait_typing_from(&mut self, peer: &str, timeout: Duration) -> Result<bool> {
        match self.wait_for(
            timeout,
            |e| matches!(e, Event::Typing { from, .. } if same_name(from, peer)),
        )? {
            Event::Typing { is_typing, .. } => Ok(is_typing),
            other => Err(ClientError::Protocol(format!("unexpected event {other:?}"))),
        }
    }

    /// The next `ERROR` message.
    pub fn wait_error(&mut self, timeout: Duration) -> Result<String> {
        match self.wait_for(timeout, |e| matches!(e, Event::Error(_)))? {
            Event::Error(m) => Ok(m),
            other => Err(ClientError::Protocol(format!("unexpected event {other:?}"))),
        }
    }

    /// Asks for `name`'s identity key and waits for it.
    pub fn fetch_public_key(&mut self, name: &str, timeout: Duration) -> Result<String> {
        self.get_public_key(name)?;
        match self.wait_for(timeout, |e| match e {
            Event::PublicKey { username, .. } => same_name(username, name),
            Event::Error(_) => true,
            _ => false,
        })? {
            Event::PublicKey { public_key, .. } => Ok(public_key),
            Event::Error(m) => Err(ClientError::Protocol(format!("GET_PUBLIC_KEY: {m}"))),
            other => Err(ClientError::Protocol(format!("unexpected event {other:?}"))),
        }
    }

    /// Waits until the server closes the connection; returns how.
    pub fn wait_closed(&mut self, timeout: Duration) -> Result<CloseInfo> {
        self.conn.wait_closed(timeout)
    }
}
