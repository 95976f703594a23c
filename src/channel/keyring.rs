//! The keys one side of a channel holds: the newest (used to send, tried
//! first on receive) and, during a renewal, the older keys the peer may still
//! be using. The older keys are forgotten at the first frame that verifies
//! under the newest.

use super::frame::Frame;
use super::ChannelError;
use crate::crypto::SymmetricKeys;

/// Which keys an inbound frame verified under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Newest,
    Older,
}

#[derive(Debug)]
pub(crate) struct KeyRing {
    newest: SymmetricKeys,
    older: Option<SymmetricKeys>,
}

impl KeyRing {
    pub(crate) fn new(keys: SymmetricKeys) -> KeyRing {
        KeyRing {
            newest: keys,
            older: None,
        }
    }

    /// Keys for everything sent from now on.
    pub(crate) fn sending(&self) -> &SymmetricKeys {
        &self.newest
    }

    /// Keys the peer is known to use for `slot` (`Older` falls back to the
    /// newest once the older keys are gone).
    pub(crate) fn keys_for(&self, slot: Slot) -> &SymmetricKeys {
        match (slot, &self.older) {
            (Slot::Older, Some(older)) => older,
            _ => &self.newest,
        }
    }

    /// Whether the peer has not yet proven it uses the newest keys.
    pub(crate) fn awaiting_peer(&self) -> bool {
        self.older.is_some()
    }

    /// Verifies under the newest keys, else the older ones, then decrypts
    /// (taking the ciphertext out of the frame). A frame verifying under the
    /// newest keys forgets the older ones.
    pub(crate) fn open(&mut self, frame: &mut Frame) -> Result<(Vec<u8>, Slot), ChannelError> {
        let slot = if frame.verifies_under(&self.newest) {
            self.older = None;
            Slot::Newest
        } else if self
            .older
            .as_ref()
            .is_some_and(|older| frame.verifies_under(older))
        {
            Slot::Older
        } else {
            return Err(ChannelError::BadMac);
        };
        Ok((frame.take_verified_plaintext(self.keys_for(slot))?, slot))
    }

    /// Sends under `new` from now on; keeps accepting the keys the peer used
    /// in `peer_slot` until a frame verifies under `new`. Any other keys are
    /// dropped (and wiped).
    pub(crate) fn rotate(&mut self, new: SymmetricKeys, peer_slot: Slot) {
        let previous = std::mem::replace(&mut self.newest, new);
        if peer_slot == Slot::Newest || self.older.is_none() {
            self.older = Some(previous);
        }
    }
}
