//! The logged-in loop of one connection: one thread, blocking in `ppoll` on
//! the socket, woken by the outbox's [`crate::waker::Waker`] signal (see
//! the module docs of [`crate::connection`] for why).
//!
//! Each turn it reads what the socket has (commands go to the dispatcher or
//! are answered here), moves what the dispatcher queued into a small staging
//! queue, and writes while the channel does not hold output for a key
//! renewal and the socket takes it. While output is held, staging goes on
//! (up to [`STAGE_LIMIT`]), so a held connection keeps draining its outbox
//! and is never taken for a slow one.
//!
//! When the connection ends, every `E2E_MSG` that did not reach the socket
//! (staged, still in the outbox, or handed back by the dispatcher) goes to
//! the offline store: nothing accepted is lost.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use log::{info, warn};

use super::auth::LoggedIn;
use super::link::{Link, LinkError};
use super::offline::OfflineDelivery;
use super::offline_batch::{distinct_recipients, OfflineBatch, MAX_BATCH};
use super::Services;
use crate::channel::Inbound;
use crate::dispatcher::{ConnId, Envelope, SessionCommand};
use crate::outbox::{CloseRequest, Outbox, Outgoing};
use crate::protocol::{self, messages, ChatCommand, Command, CommandError, Payload, RelayKind};
use crate::rate::{CommandRate, Verdict};
use crate::store::NewOffline;
use crate::waker::Attached;

/// Longest wait for the dispatcher's answer to `Envelope::Closed`.
const CLOSED_ANSWER_WAIT: Duration = Duration::from_secs(10);

/// Frames read per turn before the loop writes and checks the outbox.
const READ_BUDGET: usize = 64;

/// Frames written per turn before the loop reads again.
const WRITE_BUDGET: usize = 256;

/// Items staged from the outbox at most (the outbox itself is bounded too).
pub const STAGE_LIMIT: usize = 4096;

/// Something to send, in order.
enum Staged {
    /// From the dispatcher.
    Item(Outgoing),
    /// An answer produced on this thread.
    Reply(String),
}

/// Why the loop ended.
enum End {
    Link(LinkError),
    Requested(CloseRequest),
}

struct Session<'a> {
    link: Link,
    services: &'a Services,
    conn: ConnId,
    user: Arc<str>,
    outbox: Arc<Outbox>,
    receiver: Receiver<Outgoing>,
    staged: VecDeque<Staged>,
    offline: OfflineDelivery,
    /// The socket did not take everything: wait for `POLLOUT`.
    write_blocked: bool,
    /// Frames were queued in tungstenite since the last flush.
    unflushed: bool,
    /// When the next WebSocket ping is due.
    next_ping: Instant,
    /// The command rate limit.
    rate: CommandRate,
    /// Over the rate limit too often: close once the notice is written.
    rate_close: bool,
}

/// Runs a logged-in connection until it ends, then cleans up.
pub fn run(link: Link, login: LoggedIn, conn: ConnId, services: &Services) {
    let mut session = Session {
        link,
        services,
        conn,
        user: login.user,
        outbox: login.outbox,
        receiver: login.receiver,
        staged: VecDeque::new(),
        offline: OfflineDelivery::default(),
        write_blocked: false,
        unflushed: false,
        next_ping: Instant::now() + services.config.ping_interval,
        rate: CommandRate::new(services.config.rate, Instant::now()),
        rate_close: false,
    };
    // Attached through its own handle on the outbox: the session is
    // borrowed mutably while the thread is attached. Detached (the guard
    // dropped) before this thread can exit.
    let outbox = session.outbox.clone();
    let end = match outbox.waker().attach() {
        Ok(attached) => session.serve(&attached),
        Err(error) => {
            warn!(
                "{} {}: no wake-up signal: {error}",
                session.link.peer, session.user
            );
            End::Link(LinkError::Io(std::io::Error::other(error)))
        }
    };
    session.finish(end);
}

impl Session<'_> {
    fn serve(&mut self, attached: &Attached<'_>) -> End {
        if let Err(error) = self
            .link
            .enter_session(self.services.config.max_message_bytes)
        {
            return End::Link(error);
        }
        let mut readable = true;
        // The waker is reset only after `ppoll` reported it (and on the
        // first turn): reset → drain → wait is the no-lost-wake order of
        // `Waker`; a turn for another reason drains the outbox anyway, and
        // the wake's signal stays pending for the next wait.
        let mut woken = true;
        loop {
            if woken {
                self.outbox.waker().reset();
            }
            if let Some(request) = self.outbox.close_requested() {
                return End::Requested(request);
            }
            // Many of this user's messages for offline recipients wait to
            // be stored: store them before reading more (bounds that list).
            let reading = readable && self.outbox.stores_waiting() < STAGE_LIMIT;
            let more_to_read = match reading.then(|| self.read_available()) {
                Some(Ok(more)) => more,
                Some(Err(error)) => return End::Link(error),
                None => false,
            };
            if let Err(error) = self.poll_channel() {
                return End::Link(error);
            }
            let liveness_deadline = match self.liveness() {
                Ok(deadline) => deadline,
                Err(error) => return End::Link(error),
            };
            let more_to_write = match self.write_pending() {
                Ok(more) => more,
                Err(error) => return End::Link(error),
            };
            if self.rate_close {
                return End::Link(LinkError::violation(1008, messages::RATE_LIMITED));
            }
            // With TLS, a write may have read input into rustls, where ppoll
            // cannot see it: never sleep while decrypted input waits.
            let more_to_read = more_to_read || self.link.has_buffered_input();
            let timeout = if more_to_read || more_to_write {
                Some(Duration::ZERO)
            } else {
                let deadline = self
                    .link
                    .channel_deadline()
                    .map_or(liveness_deadline, |channel| channel.min(liveness_deadline));
                Some(deadline.saturating_duration_since(Instant::now()))
            };
            match self.link.wait(self.write_blocked, attached, timeout) {
                Ok(ready) => {
                    woken = ready.woken;
                    readable = ready.readable || more_to_read;
                    if ready.writable {
                        self.write_blocked = false;
                    }
                }
                Err(error) => return End::Link(error),
            }
        }
    }

    /// Lets the channel act on a due deadline: the renewal timer, or the
    /// end of an output hold (which would otherwise stay due forever).
    fn poll_channel(&mut self) -> Result<(), LinkError> {
        if let Some(open) = self.link.poll_renewal()? {
            self.unflushed = true;
            self.write_blocked |= !open;
        }
        Ok(())
    }

    /// Closes a silent client (no frame and no pong for the idle timeout) and
    /// queues a ping when one is due. Returns the next liveness deadline.
    fn liveness(&mut self) -> Result<Instant, LinkError> {
        let config = &self.services.config;
        let now = Instant::now();
        let silent_until = self.link.last_heard() + config.idle_timeout;
        if now >= silent_until {
            return Err(LinkError::Idle);
        }
        if now >= self.next_ping {
            self.next_ping = now + config.ping_interval;
            self.unflushed = true;
            if !self.link.send_ping()? {
                self.write_blocked = true;
            }
        }
        Ok(self.next_ping.min(silent_until))
    }

    /// Reads and handles frames until the socket has no more (false) or the
    /// read budget is spent (true).
    fn read_available(&mut self) -> Result<bool, LinkError> {
        for _ in 0..READ_BUDGET {
            match self.link.read() {
                Ok(Some(Inbound::Command(object))) => {
                    self.command(protocol::parse_command_owned(object))?;
                    if self.rate_close {
                        // Write the notice, then close (in `serve`).
                        return Ok(false);
                    }
                }
                Ok(Some(Inbound::Routed(command))) => {
                    self.command(Ok(Command::Chat(command)))?;
                    if self.rate_close {
                        // Write the notice, then close (in `serve`).
                        return Ok(false);
                    }
                }
                Ok(Some(Inbound::Control(Some(reply)))) => {
                    self.unflushed = true;
                    if !self.link.send_sealed(reply)? {
                        self.write_blocked = true;
                    }
                }
                Ok(Some(Inbound::Control(None)) | None) => {}
                Err(LinkError::WouldBlock) => return Ok(false),
                Err(error) => return Err(error),
            }
        }
        Ok(true)
    }

    fn command(&mut self, parsed: Result<Command, CommandError>) -> Result<(), LinkError> {
        let typing = matches!(parsed, Ok(Command::Chat(ChatCommand::Typing { .. })));
        match self.rate.check(typing, Instant::now()) {
            Verdict::Allow => {}
            Verdict::Notify => {
                info!(
                    "{} {}: over the command rate limit",
                    self.link.peer, self.user
                );
                return self.reply_error(messages::RATE_LIMITED);
            }
            Verdict::Drop => return Ok(()),
            Verdict::Close => {
                info!(
                    "{} {}: kept over the command rate limit, closing",
                    self.link.peer, self.user
                );
                self.rate_close = true;
                return Ok(());
            }
        }
        let command = match parsed {
            Ok(Command::Chat(command)) => command,
            Ok(Command::Auth(_)) => return self.reply_error(messages::ALREADY_LOGGED_IN),
            Ok(Command::Unknown(_)) => return self.reply_error(messages::UNKNOWN_COMMAND),
            Err(error) => return self.reply_error(&error.to_string()),
        };
        let for_dispatcher = match command {
            ChatCommand::Relay { kind, to, payload } => SessionCommand::Relay { kind, to, payload },
            ChatCommand::Typing { to, is_typing } => SessionCommand::Typing { to, is_typing },
            ChatCommand::RequestUserList => SessionCommand::RequestUserList,
            ChatCommand::RequestOfflineMessages => {
                self.dispatch(SessionCommand::OfflineRequested)?;
                self.start_offline_delivery();
                return Ok(());
            }
            ChatCommand::GetPublicKey { target_username } => {
                self.dispatch(SessionCommand::Ready)?;
                return self.reply_public_key(&target_username);
            }
        };
        self.dispatch(for_dispatcher)
    }

    fn dispatch(&mut self, command: SessionCommand) -> Result<(), LinkError> {
        let envelope = Envelope::Command {
            conn: self.conn,
            command,
        };
        self.services
            .dispatcher
            .send(envelope)
            .map_err(|_| LinkError::Closed)
    }

    fn reply_error(&mut self, message: &str) -> Result<(), LinkError> {
        self.staged
            .push_back(Staged::Reply(protocol::error(message)));
        Ok(())
    }

    fn reply_public_key(&mut self, target: &str) -> Result<(), LinkError> {
        let reply = match self.services.store.find_user(target) {
            Ok(Some(record)) => protocol::public_key_response(&record.username, &record.public_key),
            Ok(None) => protocol::error(messages::USER_NOT_FOUND),
            Err(error) => {
                warn!("{} {}: store error: {error}", self.link.peer, self.user);
                protocol::error(messages::STORE_UNAVAILABLE)
            }
        };
        self.staged.push_back(Staged::Reply(reply));
        Ok(())
    }

    fn start_offline_delivery(&mut self) {
        if !self
            .offline
            .start(&self.user, &self.services.offline_claims)
        {
            info!(
                "{} {}: mailbox busy with another session of this user",
                self.link.peer, self.user
            );
        }
    }

    /// Moves outbox items into the staging queue (handling offline-store
    /// requests on the way), then writes what may be written. Returns true
    /// when the write budget ran out with more to write.
    fn write_pending(&mut self) -> Result<bool, LinkError> {
        self.stage_from_outbox();
        if self.outbox.close_requested().is_some() {
            // Closing: what is staged goes back to the dispatcher or to the
            // store in `finish`, not to the client (the dispatcher may have
            // pushed final items after its request).
            return self.flush();
        }
        if self.write_blocked || self.link.output_held() {
            return self.flush();
        }
        let mut budget = WRITE_BUDGET;
        if self.outbox.has_user_list() {
            let services = self.services;
            // Sealed and handed to the socket (never waiting for the peer
            // to read) a few threads at a time: memory holds a few sealed
            // copies, not one per online user. The list is taken once the
            // turn came: a broadcast that replaced it meanwhile is sealed
            // instead of both.
            let _turn = services.list_gate.enter();
            if let Some(list) = self.outbox.take_user_list() {
                self.send(&list)?;
                services.metrics.user_lists_sent.inc();
                self.flush()?;
                budget -= 1;
            }
        }
        while budget > 0 && !self.write_blocked {
            let Some(text) = self.next_text() else { break };
            self.send(&text)?;
            budget -= 1;
        }
        self.flush()?;
        Ok(budget == 0)
    }

    /// The next frame's plaintext: offline messages first while a delivery
    /// runs, then the staged queue in order.
    fn next_text(&mut self) -> Option<String> {
        let services = self.services;
        if let Some(frame) = self.offline.next_frame(
            &self.user,
            services.store.as_ref(),
            &services.offline_claims,
        ) {
            return Some(frame.text);
        }
        if self.offline.is_active() {
            // The previous batch must be flushed and deleted first.
            self.flush().ok()?;
            if let Some(frame) = self.offline.next_frame(
                &self.user,
                services.store.as_ref(),
                &services.offline_claims,
            ) {
                return Some(frame.text);
            }
        }
        loop {
            match self.staged.pop_front()? {
                Staged::Reply(text) => return Some(text),
                Staged::Item(item) => {
                    if let Some(text) = item_text(&item) {
                        return Some(text);
                    }
                }
            }
        }
    }

    fn send(&mut self, text: &str) -> Result<(), LinkError> {
        self.unflushed = true;
        if !self.link.send(text)? {
            self.write_blocked = true;
        }
        Ok(())
    }

    /// Flushes queued frames; once they are out, delivered offline messages
    /// are deleted. Returns false (and marks the socket blocked) if the
    /// socket is full.
    fn flush(&mut self) -> Result<bool, LinkError> {
        if !self.unflushed {
            return Ok(false);
        }
        if self.link.flush()? {
            self.unflushed = false;
            self.write_blocked = false;
            if self
                .offline
                .flushed(&self.user, self.services.store.as_ref())
            {
                // The mailbox shrank: count it afresh for the quota.
                self.services.mailboxes.forget(&self.user);
            }
        } else {
            self.write_blocked = true;
        }
        Ok(false)
    }

    /// Moves outbox items into the staging queue. Messages for offline
    /// recipients are collected and committed in one transaction per batch
    /// (see [`OfflineBatch`]) before this returns, so whatever was queued
    /// after them is written only once they are stored.
    fn stage_from_outbox(&mut self) {
        if self.outbox.take_offline_waiting() {
            self.start_offline_delivery();
        }
        let mut batch = OfflineBatch::default();
        while self.staged.len() < STAGE_LIMIT {
            let Some(item) = self.outbox.next(&self.receiver) else {
                break;
            };
            match item {
                Outgoing::StoreOffline { to, payload } => {
                    self.add_to_batch(&mut batch, to, payload)
                }
                item => self.staged.push_back(Staged::Item(item)),
            }
        }
        // Stores the dispatcher queued before anything staged above (the
        // loop may have stopped at the stage limit, or taken a queue item
        // pushed after a store it had already looked for).
        while let Some(item) = self.outbox.next_store() {
            if let Outgoing::StoreOffline { to, payload } = item {
                self.add_to_batch(&mut batch, to, payload);
            }
        }
        self.commit_offline(&mut batch);
    }

    fn add_to_batch(&mut self, batch: &mut OfflineBatch, to: Arc<str>, payload: Payload) {
        let services = self.services;
        let store = services.store.as_ref();
        if let Err(notice) = batch.push(&self.user, to, payload, store, &services.mailboxes) {
            self.staged
                .push_back(Staged::Reply(protocol::error(notice)));
        }
        if batch.is_full() {
            self.commit_offline(batch);
        }
    }

    /// Stores the batch; a message not stored is reported to the sender,
    /// never silent.
    fn commit_offline(&mut self, batch: &mut OfflineBatch) {
        let services = self.services;
        let recipients = batch.recipients();
        let notices = batch.commit(&self.user, services.store.as_ref(), &services.mailboxes);
        for notice in notices {
            self.staged
                .push_back(Staged::Reply(protocol::error(notice)));
        }
        self.announce_stored(recipients);
    }

    /// A recipient may have logged in and fetched its mailbox while
    /// messages for it were being stored: the dispatcher tells it to look
    /// again.
    fn announce_stored(&self, recipients: Vec<Arc<str>>) {
        if !recipients.is_empty() {
            let _ = self
                .services
                .dispatcher
                .send(Envelope::OfflineStored { recipients });
        }
    }

    /// Leaves the dispatcher (handing back what was never written), saves
    /// what is left to this thread, closes.
    fn finish(mut self, end: End) {
        let mut notices = Vec::new();
        let mut unsent = Vec::new();
        for staged in self.staged.drain(..) {
            match staged {
                Staged::Item(Outgoing::Error(message)) => notices.push(protocol::error(message)),
                Staged::Item(item) => unsent.push(item),
                Staged::Reply(_) => {}
            }
        }
        let (done, wait) = crossbeam_channel::bounded(1);
        let closed = Envelope::Closed {
            conn: self.conn,
            unsent,
            done,
        };
        if self.services.dispatcher.send(closed).is_ok() {
            // The dispatcher answers at once (also while shutting down);
            // after that it never pushes to this outbox again, so what is
            // left in it is final. The bound only guards against an envelope
            // left in the queue of a dispatcher that has already exited.
            if let Err(RecvTimeoutError::Timeout) = wait.recv_timeout(CLOSED_ANSWER_WAIT) {
                warn!(
                    "{} {}: no answer from the dispatcher to the close",
                    self.link.peer, self.user
                );
            }
        }
        self.offline
            .finish(&self.user, &self.services.offline_claims);
        notices.extend(self.save_undelivered());
        let (code, reason) = close_reason(&end);
        log_end(&self.link, &self.user, &end);
        if let End::Requested(CloseRequest::Replaced) = end {
            for notice in notices {
                let _ = self.link.send(&notice);
            }
        }
        self.link.close(code, &reason);
    }

    /// Stores what the dispatcher left in the outbox for this thread (its
    /// own offline-store duties, and messages whose sender is gone), one
    /// transaction per [`MAX_BATCH`] messages; returns the `ERROR` notices
    /// that were waiting.
    fn save_undelivered(&mut self) -> Vec<String> {
        let items: Vec<Outgoing> =
            std::iter::from_fn(|| self.outbox.next(&self.receiver)).collect();
        let mut notices = Vec::new();
        let mut rows: Vec<(Arc<str>, Arc<str>, String)> = Vec::new();
        for item in items {
            match item {
                Outgoing::Relay {
                    kind: RelayKind::Message,
                    from,
                    payload,
                } => rows.push((from, self.user.clone(), payload.into_string())),
                Outgoing::StoreOffline { to, payload } => {
                    rows.push((self.user.clone(), to, payload.into_string()))
                }
                Outgoing::Error(message) => notices.push(protocol::error(message)),
                Outgoing::Relay { .. } | Outgoing::Typing { .. } => {}
            }
        }
        let mut saved = 0;
        for chunk in rows.chunks(MAX_BATCH) {
            saved += self.save_rows(chunk);
        }
        self.announce_stored(distinct_recipients(rows.iter().map(|row| &row.1)));
        if saved > 0 {
            info!(
                "{} {}: {saved} undelivered messages moved to the offline store",
                self.link.peer, self.user
            );
        }
        notices
    }

    /// Stores `(sender, recipient, payload)` rows in one transaction (one by
    /// one if that fails); returns how many were stored.
    fn save_rows(&self, rows: &[(Arc<str>, Arc<str>, String)]) -> usize {
        let store = self.services.store.as_ref();
        let batch: Vec<NewOffline<'_>> = rows
            .iter()
            .map(|(sender, recipient, payload)| NewOffline {
                sender,
                recipient,
                payload,
            })
            .collect();
        let results = store.store_offline_batch(&batch).unwrap_or_else(|_| {
            batch
                .iter()
                .map(|m| store.store_offline(m.sender, m.recipient, m.payload))
                .collect()
        });
        let mut saved = 0;
        for result in results {
            match result {
                Ok(_) => saved += 1,
                Err(error) => warn!(
                    "{} {}: undelivered message lost, store failed: {error}",
                    self.link.peer, self.user
                ),
            }
        }
        saved
    }
}

/// The frame text of a deliverable item; `None` for a store request, which
/// is handled when staged and never written to the client.
fn item_text(item: &Outgoing) -> Option<String> {
    Some(match item {
        Outgoing::Relay {
            kind,
            from,
            payload,
        } => protocol::relay(*kind, from, payload),
        Outgoing::Typing { from, is_typing } => protocol::typing_status(from, *is_typing),
        Outgoing::Error(message) => protocol::error(message),
        Outgoing::StoreOffline { .. } => return None,
    })
}

fn close_reason(end: &End) -> (Option<u16>, String) {
    match end {
        End::Link(error) => (error.close_code(), error.to_string()),
        End::Requested(CloseRequest::Replaced) => {
            (Some(1000), messages::LOGGED_IN_ELSEWHERE.to_owned())
        }
        End::Requested(CloseRequest::TooSlow) => (Some(1008), "too slow".to_owned()),
        End::Requested(CloseRequest::Shutdown) => (Some(1001), "server shutting down".to_owned()),
    }
}

fn log_end(link: &Link, user: &str, end: &End) {
    let renewals = link.renewals_completed();
    match end {
        End::Link(LinkError::Closed) => {
            info!("{} {user}: logged out ({renewals} key renewals)", link.peer)
        }
        End::Link(error) => info!("{} {user}: disconnected: {error}", link.peer),
        End::Requested(request) => info!("{} {user}: closed by server: {request:?}", link.peer),
    }
}
