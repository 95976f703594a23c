//! The non-interactive commands: `send` (one message, after the peer
//! handshake if the peer is online and no session exists) and `recv`
//! (prints messages as they come, answering peers' handshakes meanwhile).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::account::Session;
use super::exit::{CliResult, Failure, TIMEOUT};
use super::find_user;
use super::screen::clean;
use super::term;
use crate::client::{ClientError, E2eeError, Event};

/// How long a step waits for the server or the peer.
pub const WAIT: Duration = Duration::from_secs(15);

/// `send --to NAME TEXT`.
pub fn send(session: &mut Session, to: &str, text: &str) -> CliResult<()> {
    let client = &mut session.client;
    client.request_user_list()?;
    let users = client.wait_user_list(WAIT)?;
    let (peer, online) =
        find_user(&users, to).ok_or_else(|| Failure::failed(format!("no user named {to}")))?;
    let ready = client.peers().is_some_and(|p| p.is_ready(&peer));
    if online && !ready {
        client
            .ensure_e2ee(&peer, WAIT)
            .map_err(|e| handshake_failure(&peer, e))?;
        session.save_peers();
    }
    let client = &mut session.client;
    client
        .send_message(&peer, text)
        .map_err(|e| send_failure(&peer, e))?;
    if client
        .peers()
        .and_then(|p| p.get(&peer))
        .is_some_and(|s| s.queued() > 0)
    {
        client
            .wait_peer_ready(&peer, WAIT)
            .map_err(|e| handshake_failure(&peer, e))?;
    }
    let result = confirm(session);
    session.save_peers();
    result
}

fn handshake_failure(peer: &str, e: ClientError) -> Failure {
    match e {
        ClientError::Timeout => Failure::failed(format!(
            "{peer} did not complete the secure handshake in time"
        )),
        ClientError::Protocol(m) => Failure::failed(format!("secure session with {peer}: {m}")),
        other => other.into(),
    }
}

fn send_failure(peer: &str, e: ClientError) -> Failure {
    match e {
        ClientError::E2ee(E2eeError::NoSession(_)) => Failure::failed(format!(
            "{peer} is offline and has no secure session with you yet: \
             the first message needs {peer} online"
        )),
        other => other.into(),
    }
}

/// Waits until the server has handled everything sent: it answers our own
/// `GET_PUBLIC_KEY` in order, and nothing else looks like that answer. An
/// `ERROR` meanwhile is the command's failure. Messages that arrive
/// meanwhile are printed, not lost.
fn confirm(session: &mut Session) -> CliResult<()> {
    let me = session.name.to_lowercase();
    let client = &mut session.client;
    client.get_public_key(&session.name)?;
    let mut error = None;
    loop {
        match client.wait_for(WAIT, |e| match e {
            Event::PublicKey { username, .. } => username.to_lowercase() == me,
            Event::Error(_) | Event::Message { .. } => true,
            _ => false,
        })? {
            Event::Error(m) => error = Some(m),
            Event::Message { from, text } => print_message(&from, &text, false),
            _ => break,
        }
    }
    match error {
        Some(m) => Err(Failure::network(format!("the server refused: {m}"))),
        None => Ok(()),
    }
}

/// `recv [--count N] [--timeout S] [--json]`.
pub fn recv(
    session: &mut Session,
    count: Option<u64>,
    timeout: Option<Duration>,
    json: bool,
) -> CliResult<()> {
    session.client.open_home()?;
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut got = 0u64;
    while count.is_none_or(|c| got < c) {
        let step = match deadline {
            Some(d) if Instant::now() >= d => break,
            Some(d) => d.saturating_duration_since(Instant::now()).min(WAIT),
            None => WAIT,
        };
        if let Some(event) = session.client.next_event(step)? {
            got += u64::from(on_event(session, event, json));
        }
    }
    match count {
        Some(c) if got < c => Err(Failure::new(
            TIMEOUT,
            format!("timed out after {got} of {c} messages"),
        )),
        _ => Ok(()),
    }
}

/// Handles one event of `recv`; true for a chat message.
fn on_event(session: &Session, event: Event, json: bool) -> bool {
    match event {
        Event::Message { from, text } => {
            print_message(&from, &text, json);
            return true;
        }
        Event::PeerReady(_) => session.save_peers(),
        Event::PeerFailed { peer, reason } => {
            eprintln!("chat_client: secure session with {peer} failed: {reason}")
        }
        Event::PeerDropped { from, reason } => {
            eprintln!("chat_client: a message from {from} was dropped: {reason}")
        }
        Event::Error(m) => eprintln!("chat_client: server: {m}"),
        _ => {}
    }
    false
}

fn print_message(from: &str, text: &str, json: bool) {
    let now = SystemTime::now();
    if json {
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        println!("{}", json!({"from": from, "text": text, "time": secs}));
    } else {
        println!(
            "[{}] {}: {}",
            term::local_hhmm(now),
            clean(from),
            clean(text)
        );
    }
}
