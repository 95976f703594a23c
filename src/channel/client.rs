//! The client side of the channel, for the crate's own client library, tests
//! and the benchmark. It can behave like our clients (`"immediate": true`),
//! like the mobile client (no `immediate`), or like a client of the Python
//! server's variant (answering a request with `RENEGOTIATE_RESPONSE`).

use super::frame::Frame;
use super::keyring::{KeyRing, Slot};
use super::messages::{self, decode_field, message_type, Object, Offer};
use super::ChannelError;

/// How the client answers renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientRenewalMode {
    /// Answers a request with `RENEGOTIATE_INIT` + `"immediate": true`.
    #[default]
    Immediate,
    /// As the mobile client: `RENEGOTIATE_INIT` without `immediate`.
    MobileLike,
    /// As a Python-variant client: answers a request with
    /// `RENEGOTIATE_RESPONSE` (keys from the request's key and salt).
    PythonVariant,
}

/// What an inbound frame turned out to be.
#[derive(Debug, PartialEq)]
pub enum ClientInbound<T = Object> {
    /// A message for the application.
    Command(T),
    /// A renegotiation message handled by the channel; `Some` is a sealed
    /// frame to send at once.
    Control(Option<String>),
}

/// A handshake in progress: our offer, waiting for `HANDSHAKE_RESPONSE`.
#[derive(Debug)]
pub struct ClientHandshake {
    offer: Offer,
    mode: ClientRenewalMode,
}

impl ClientHandshake {
    /// Sets how the finished channel answers renewal.
    pub fn with_mode(mut self, mode: ClientRenewalMode) -> ClientHandshake {
        self.mode = mode;
        self
    }

    /// Completes the handshake with the server's plain-JSON answer.
    pub fn finish(self, response: &str) -> Result<ClientChannel, ChannelError> {
        let answer = messages::parse_object(response)?;
        if message_type(&answer) != Some(messages::HANDSHAKE_RESPONSE) {
            return Err(ChannelError::UnexpectedHandshake {
                expected: messages::HANDSHAKE_RESPONSE,
            });
        }
        let server_public = decode_field(&answer, "public_key")?;
        let keys = messages::derive_channel_keys(
            &self.offer.pair,
            &server_public,
            &self.offer.salt,
            messages::HANDSHAKE_RESPONSE,
        )?;
        Ok(ClientChannel {
            keys: KeyRing::new(keys),
            pending_init: None,
            mode: self.mode,
            renewals: 0,
        })
    }
}

/// One connection's channel, client side.
#[derive(Debug)]
pub struct ClientChannel {
    keys: KeyRing,
    /// Our `RENEGOTIATE_INIT` in flight.
    pending_init: Option<Offer>,
    mode: ClientRenewalMode,
    renewals: u64,
}

impl ClientChannel {
    /// Begins a handshake: the state to finish it and the plain-JSON
    /// `HANDSHAKE_START` text to send.
    pub fn start() -> (ClientHandshake, String) {
        let offer = Offer::fresh();
        let text = messages::handshake_start(&offer.pair.public_bytes(), &offer.salt);
        let handshake = ClientHandshake {
            offer,
            mode: ClientRenewalMode::default(),
        };
        (handshake, text)
    }

    pub fn renewal_mode(&self) -> ClientRenewalMode {
        self.mode
    }

    pub fn set_renewal_mode(&mut self, mode: ClientRenewalMode) {
        self.mode = mode;
    }

    /// Seals one outgoing message under the current keys.
    pub fn seal(&mut self, plaintext: &str) -> String {
        Frame::seal(self.keys.sending(), plaintext.as_bytes())
    }

    /// Verifies, decrypts and parses one inbound frame; renegotiation
    /// messages are handled here.
    pub fn open(&mut self, frame: &str) -> Result<ClientInbound, ChannelError> {
        let (text, slot) = self.decrypt(frame)?;
        let message = messages::command_object(&text)?;
        self.classify(message, slot)
    }

    /// As [`Self::open`], but an application message comes back as its JSON
    /// text, for callers that parse it into their own types (the benchmark).
    /// The text is a JSON object with a string `"type"`, as for `open`.
    pub fn open_text(&mut self, frame: &str) -> Result<ClientInbound<String>, ChannelError> {
        let (text, slot) = self.decrypt(frame)?;
        if messages::is_application_text(&text) {
            return Ok(ClientInbound::Command(text));
        }
        match self.classify(messages::command_object(&text)?, slot)? {
            ClientInbound::Command(_) => Ok(ClientInbound::Command(text)),
            ClientInbound::Control(reply) => Ok(ClientInbound::Control(reply)),
        }
    }

    fn decrypt(&mut self, frame: &str) -> Result<(String, Slot), ChannelError> {
        let mut frame = Frame::parse(frame)?;
        let (plaintext, slot) = self.keys.open(&mut frame)?;
        Ok((messages::plaintext_text(plaintext)?, slot))
    }

    /// Renegotiation messages are answered here; anything else is the
    /// application's.
    fn classify(&mut self, message: Object, slot: Slot) -> Result<ClientInbound, ChannelError> {
        match message_type(&message) {
            Some(messages::RENEGOTIATE_REQUEST) => self.answer_request(&message, slot),
            Some(messages::RENEGOTIATE_RESPONSE) => self.accept_response(&message, slot),
            Some(other) if other.starts_with(messages::RENEGOTIATE_PREFIX) => {
                Ok(ClientInbound::Control(None))
            }
            _ => Ok(ClientInbound::Command(message)),
        }
    }

    /// A client-initiated `RENEGOTIATE_INIT` (with `"immediate": true` unless
    /// the mode is `MobileLike`); `None` if one is already in flight.
    pub fn request_renewal(&mut self) -> Option<String> {
        if self.pending_init.is_some() {
            return None;
        }
        let offer = Offer::fresh();
        let immediate = self.mode != ClientRenewalMode::MobileLike;
        let text = messages::renegotiate_init(&offer.pair.public_bytes(), &offer.salt, immediate);
        self.pending_init = Some(offer);
        Some(self.seal(&text))
    }

    /// Renewals completed (keys switched) on this connection.
    pub fn renewals_completed(&self) -> u64 {
        self.renewals
    }

    #[cfg(test)]
    pub(crate) fn sending_keys(&self) -> &crate::crypto::SymmetricKeys {
        self.keys.sending()
    }

    /// Whether our `RENEGOTIATE_INIT` awaits its response.
    pub fn renewal_in_flight(&self) -> bool {
        self.pending_init.is_some()
    }

    fn answer_request(
        &mut self,
        request: &Object,
        slot: Slot,
    ) -> Result<ClientInbound, ChannelError> {
        if self.pending_init.is_some() {
            // Our own INIT answers the request too.
            return Ok(ClientInbound::Control(None));
        }
        match self.mode {
            ClientRenewalMode::PythonVariant => self.answer_request_python(request, slot),
            ClientRenewalMode::Immediate | ClientRenewalMode::MobileLike => {
                Ok(ClientInbound::Control(self.request_renewal()))
            }
        }
    }

    /// Python variant: keys from a new pair of ours, the request's key and
    /// its salt; answer under the current keys, then switch.
    fn answer_request_python(
        &mut self,
        request: &Object,
        slot: Slot,
    ) -> Result<ClientInbound, ChannelError> {
        let server_public = decode_field(request, "public_key")?;
        let salt = decode_field(request, "salt")?;
        let pair = crate::crypto::KeyPair::generate();
        let new_keys = messages::derive_channel_keys(
            &pair,
            &server_public,
            &salt,
            messages::RENEGOTIATE_REQUEST,
        )?;
        let text = messages::renegotiate_response(&pair.public_bytes());
        let reply = Frame::seal(self.keys.sending(), text.as_bytes());
        self.keys.rotate(new_keys, slot);
        self.renewals += 1;
        Ok(ClientInbound::Control(Some(reply)))
    }

    /// The server's answer to our INIT: derive and switch both directions.
    fn accept_response(
        &mut self,
        response: &Object,
        slot: Slot,
    ) -> Result<ClientInbound, ChannelError> {
        let offer = self
            .pending_init
            .take()
            .ok_or(ChannelError::UnsolicitedResponse)?;
        let server_public = decode_field(response, "public_key")?;
        let new_keys = messages::derive_channel_keys(
            &offer.pair,
            &server_public,
            &offer.salt,
            messages::RENEGOTIATE_RESPONSE,
        )?;
        self.keys.rotate(new_keys, slot);
        self.renewals += 1;
        Ok(ClientInbound::Control(None))
    }
}
