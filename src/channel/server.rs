//! The server side of the channel: accepts the handshake, seals and opens
//! frames, and runs key renewal (PROTOCOL.md 2.1): server-initiated requests
//! on a frame count or a timer, client `RENEGOTIATE_INIT` (prompted or not),
//! the Python server's `RENEGOTIATE_RESPONSE` variant, and the output hold.

use super::frame::Frame;
use super::keyring::{KeyRing, Slot};
use super::messages::{self, decode_field, is_immediate, message_type, Object, Offer};
use super::renewal::{deadline_after, RenewalPolicy, Schedule};
use super::replay::SeenTags;
use super::ChannelError;
use crate::crypto::KeyPair;
use crate::protocol::{self, ChatCommand};
use std::time::Instant;

/// What an inbound frame turned out to be.
#[derive(Debug, PartialEq)]
pub enum Inbound {
    /// A command for the command layer.
    Command(Object),
    /// A relay or typing notice, already parsed ([`protocol::parse_routed`]).
    Routed(ChatCommand),
    /// A renegotiation message handled by the channel; `Some` is a sealed
    /// frame to send at once (even while output is held).
    Control(Option<String>),
}

/// One connection's channel, server side.
#[derive(Debug)]
pub struct ServerChannel {
    keys: KeyRing,
    policy: RenewalPolicy,
    schedule: Schedule,
    /// Our unanswered `RENEGOTIATE_REQUEST` (kept for the Python variant).
    request: Option<Offer>,
    /// Output is held until then, or until a frame under the new keys.
    hold_until: Option<Instant>,
    renewals: u64,
    seen: SeenTags,
}

impl ServerChannel {
    /// Answers the client's first, plain-JSON frame. Returns the channel and
    /// the plain-JSON `HANDSHAKE_RESPONSE` text to send.
    pub fn accept_handshake(
        first_frame: &str,
        policy: RenewalPolicy,
        now: Instant,
    ) -> Result<(ServerChannel, String), ChannelError> {
        let start = messages::parse_object(first_frame)?;
        if message_type(&start) != Some(messages::HANDSHAKE_START) {
            return Err(ChannelError::UnexpectedHandshake {
                expected: messages::HANDSHAKE_START,
            });
        }
        let client_public = decode_field(&start, "public_key")?;
        let salt = decode_field(&start, "salt")?;
        let pair = KeyPair::generate();
        let keys =
            messages::derive_channel_keys(&pair, &client_public, &salt, messages::HANDSHAKE_START)?;
        let channel = ServerChannel::from_keys(keys, policy, now);
        Ok((channel, messages::handshake_response(&pair.public_bytes())))
    }

    /// Seals one outgoing command under the current sending keys and counts
    /// it toward the renewal threshold. Call [`Self::poll_renewal`] after.
    pub fn seal(&mut self, plaintext: &str, now: Instant) -> String {
        self.schedule.count_sent(now);
        Frame::seal(self.keys.sending(), plaintext.as_bytes())
    }

    /// As [`Self::seal`], the frame's text cut into pieces of at most
    /// `piece_bytes` (for a big command sent as WebSocket fragments).
    pub fn seal_in_pieces(
        &mut self,
        plaintext: &str,
        now: Instant,
        piece_bytes: usize,
    ) -> Vec<Vec<u8>> {
        self.schedule.count_sent(now);
        Frame::seal_in_pieces(self.keys.sending(), plaintext.as_bytes(), piece_bytes)
    }

    /// Verifies (new keys, else old), decrypts and parses one inbound frame.
    /// Renegotiation messages are handled here and come back as `Control`.
    pub fn open(&mut self, frame: &str, now: Instant) -> Result<Inbound, ChannelError> {
        let mut frame = Frame::parse(frame)?;
        self.seen.prefetch(&frame.tag);
        let awaiting = self.keys.awaiting_peer();
        let (plaintext, slot) = self.keys.open(&mut frame)?;
        if !self.seen.insert(&frame.tag) {
            return Err(ChannelError::Replayed);
        }
        if awaiting && slot == Slot::Newest {
            self.hold_until = None;
        }
        let text = messages::plaintext_text(plaintext)?;
        // Relays and typing notices (the bulk of the traffic) are
        // recognised without a JSON tree; they are never channel messages.
        let text = match protocol::parse_routed(text) {
            Ok(command) => return Ok(Inbound::Routed(command)),
            Err(text) => text,
        };
        let command = messages::command_object(&text)?;
        match message_type(&command) {
            Some(messages::RENEGOTIATE_INIT) => self.answer_init(&command, slot, now),
            Some(messages::RENEGOTIATE_RESPONSE) => self.accept_response(&command, slot, now),
            Some(other) if other.starts_with(messages::RENEGOTIATE_PREFIX) => {
                Ok(Inbound::Control(None))
            }
            _ => Ok(Inbound::Command(command)),
        }
    }

    /// A sealed `RENEGOTIATE_REQUEST` when a renewal is due (frame count or
    /// timer), else `None`. Never while output is held, never a second one
    /// while one is unanswered (until the next timer trigger). Also ends an
    /// expired hold, so call it at every [`Self::next_deadline`].
    pub fn poll_renewal(&mut self, now: Instant) -> Option<String> {
        if self.hold_until.is_some_and(|end| now >= end) {
            self.hold_until = None;
        }
        if self.hold_until.is_some() {
            return None;
        }
        let timer = self.schedule.timer_fired(now);
        let frames = self.request.is_none() && self.schedule.frames_due_at().is_some();
        if !timer && !frames {
            return None;
        }
        if timer {
            self.schedule.rearm_timer(&self.policy, now);
        }
        let offer = Offer::fresh();
        let text = messages::renegotiate_request(&offer.pair.public_bytes(), &offer.salt);
        self.request = Some(offer);
        Some(Frame::seal(self.keys.sending(), text.as_bytes()))
    }

    /// Whether output (other than a `Control` reply) must wait: after a
    /// `RENEGOTIATE_RESPONSE` to a client that did not say `"immediate"`,
    /// until a frame under the new keys arrives or the hold passes.
    pub fn output_held(&self, now: Instant) -> bool {
        self.hold_until.is_some_and(|end| now < end)
    }

    /// The earliest moment the owner must call [`Self::poll_renewal`] and
    /// re-check [`Self::output_held`]: the hold's end while held, else the
    /// timer or a reached frame threshold.
    pub fn next_deadline(&self) -> Option<Instant> {
        if let Some(end) = self.hold_until {
            return Some(end);
        }
        let timer = self.schedule.timer_due_at();
        let frames = self
            .schedule
            .frames_due_at()
            .filter(|_| self.request.is_none());
        Some(frames.map_or(timer, |due| due.min(timer)))
    }

    /// Renewals completed on this connection (keys switched).
    pub fn renewals_completed(&self) -> u64 {
        self.renewals
    }

    /// Client `RENEGOTIATE_INIT`: new server pair, new keys from the client's
    /// new key and salt, a `RENEGOTIATE_RESPONSE` sealed under the keys the
    /// INIT came in, then send under the new keys.
    fn answer_init(
        &mut self,
        init: &Object,
        slot: Slot,
        now: Instant,
    ) -> Result<Inbound, ChannelError> {
        let client_public = decode_field(init, "public_key")?;
        let salt = decode_field(init, "salt")?;
        let pair = KeyPair::generate();
        let new_keys = messages::derive_channel_keys(
            &pair,
            &client_public,
            &salt,
            messages::RENEGOTIATE_INIT,
        )?;
        let response = messages::renegotiate_response(&pair.public_bytes());
        let reply = Frame::seal(self.keys.keys_for(slot), response.as_bytes());
        self.switch_keys(new_keys, slot, now);
        if !is_immediate(init) && !self.policy.hold.is_zero() {
            self.hold_until = Some(deadline_after(now, self.policy.hold));
        }
        Ok(Inbound::Control(Some(reply)))
    }

    /// Python variant: the client answered our request with its public key;
    /// keys come from the request's pair and salt.
    fn accept_response(
        &mut self,
        response: &Object,
        slot: Slot,
        now: Instant,
    ) -> Result<Inbound, ChannelError> {
        let request = self
            .request
            .take()
            .ok_or(ChannelError::UnsolicitedResponse)?;
        let client_public = decode_field(response, "public_key")?;
        let new_keys = messages::derive_channel_keys(
            &request.pair,
            &client_public,
            &request.salt,
            messages::RENEGOTIATE_RESPONSE,
        )?;
        self.switch_keys(new_keys, slot, now);
        Ok(Inbound::Control(None))
    }

    fn switch_keys(&mut self, new_keys: crate::crypto::SymmetricKeys, slot: Slot, now: Instant) {
        self.keys.rotate(new_keys, slot);
        self.request = None;
        self.hold_until = None;
        self.schedule.restart(&self.policy, now);
        self.renewals += 1;
    }

    /// A fresh channel over agreed keys (also used by the vector tests).
    pub(crate) fn from_keys(
        keys: crate::crypto::SymmetricKeys,
        policy: RenewalPolicy,
        now: Instant,
    ) -> ServerChannel {
        ServerChannel {
            keys: KeyRing::new(keys),
            schedule: Schedule::new(&policy, now),
            policy,
            request: None,
            hold_until: None,
            renewals: 0,
            seen: SeenTags::default(),
        }
    }

    #[cfg(test)]
    pub(crate) fn frames_counted(&self) -> u32 {
        self.schedule.frames_sent()
    }

    #[cfg(test)]
    pub(crate) fn request_pending(&self) -> bool {
        self.request.is_some()
    }

    #[cfg(test)]
    pub(crate) fn sending_keys(&self) -> &crate::crypto::SymmetricKeys {
        self.keys.sending()
    }
}

#[cfg(test)]
mod replay_tests {
    use super::*;
    use crate::crypto::SymmetricKeys;

    fn keys() -> SymmetricKeys {
        SymmetricKeys::derive(&[7u8; 32], &[9u8; 32], b"replay test")
    }

    fn client_frame(plaintext: &str) -> String {
        Frame::seal(&keys(), plaintext.as_bytes())
    }

    #[test]
    fn a_repeated_frame_is_refused() {
        let now = Instant::now();
        let mut server = ServerChannel::from_keys(keys(), RenewalPolicy::default(), now);
        let frame = client_frame(r#"{"type":"REQUEST_USER_LIST"}"#);
        assert!(matches!(server.open(&frame, now), Ok(Inbound::Command(_))));
        let error = server.open(&frame, now).unwrap_err();
        assert!(matches!(error, ChannelError::Replayed));
        assert_eq!(error.close_code(), 1008);
        let fresh = client_frame(r#"{"type":"REQUEST_USER_LIST"}"#);
        assert!(server.open(&fresh, now).is_ok());
    }
}
