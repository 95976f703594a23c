//! Saving and restoring authenticated peer sessions between runs, as the
//! mobile client keeps its peer keys: once two users have completed the
//! handshake, a message to the peer while it is offline is sealed with the
//! saved keys and waits in the server's offline store.
//!
//! A session is saved as what its keys were derived from (the X25519 shared
//! secret and the salt), the peer's identity key and the send counter. The
//! text holds secrets: [`SavedPeers`] never shows it in `Debug`, and its
//! owner must write it only to private files.

use serde_json::{json, Value};

use super::{PeerSession, PeerSessions, Phase, E2EE_INFO};
use crate::crypto::{b64_decode, b64_encode, wipe, SymmetricKeys};

use super::E2eeError;

/// Format version of the saved text.
const VERSION: u64 = 1;

/// The inputs of the peer-key derivation (wiped on drop, never shown).
pub(super) struct KeyMaterial {
    shared: [u8; 32],
    salt: Vec<u8>,
}

impl KeyMaterial {
    pub(super) fn new(shared: [u8; 32], salt: Vec<u8>) -> KeyMaterial {
        KeyMaterial { shared, salt }
    }

    /// `HKDF-SHA256(shared, salt, "E2EE_CHAT", 64)`.
    pub(super) fn derive(&self) -> SymmetricKeys {
        SymmetricKeys::derive(&self.shared, &self.salt, E2EE_INFO)
    }

    fn to_json(&self) -> Value {
        json!({"shared": b64_encode(&self.shared), "salt": b64_encode(&self.salt)})
    }

    fn from_json(v: &Value) -> Result<KeyMaterial, E2eeError> {
        let bytes = |name: &str| {
            v.get(name)
                .and_then(Value::as_str)
                .and_then(|t| b64_decode(t).ok())
                .ok_or_else(|| E2eeError::Malformed(format!("saved keys: bad {name:?}")))
        };
        let shared: [u8; 32] = bytes("shared")?
            .try_into()
            .map_err(|_| E2eeError::Malformed("saved keys: shared is not 32 bytes".into()))?;
        Ok(KeyMaterial::new(shared, bytes("salt")?))
    }
}

impl Drop for KeyMaterial {
    fn drop(&mut self) {
        wipe(&mut self.shared);
        wipe(&mut self.salt);
    }
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyMaterial(<redacted>)")
    }
}

/// The authenticated peer sessions of one user, as text to keep in a
/// private file. `Debug` hides the content.
pub struct SavedPeers {
    text: String,
}

impl SavedPeers {
    /// Wraps text read back from a file.
    pub fn from_text(text: String) -> SavedPeers {
        SavedPeers { text }
    }

    /// The text to write (secret keys inside).
    pub fn as_text(&self) -> &str {
        &self.text
    }
}

impl Drop for SavedPeers {
    fn drop(&mut self) {
        // SAFETY: zero bytes are valid UTF-8, so the string stays valid.
        wipe(unsafe { self.text.as_bytes_mut() });
    }
}

impl std::fmt::Debug for SavedPeers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SavedPeers(<redacted>)")
    }
}

impl PeerSession {
    /// The last authenticated keys (and the ones before them), if any.
    fn saved(&self) -> Option<Value> {
        let (current, older) = if self.authenticated {
            (self.material.as_ref()?, self.previous_material.as_ref())
        } else {
            (self.previous_material.as_ref()?, None)
        };
        Some(json!({
            "peer": self.peer,
            "keys": current.to_json(),
            "previous": older.map(KeyMaterial::to_json),
            "peer_identity": self.peer_identity.as_deref().map(b64_encode),
            "sent": if self.authenticated { self.sent_count } else { 0 },
        }))
    }

    /// Applies a saved entry: the session becomes established with its keys.
    fn restore(&mut self, v: &Value) -> Result<(), E2eeError> {
        let current = KeyMaterial::from_json(v.get("keys").unwrap_or(&Value::Null))?;
        let older = match v.get("previous") {
            Some(p) if !p.is_null() => Some(KeyMaterial::from_json(p)?),
            _ => None,
        };
        self.peer_identity = v
            .get("peer_identity")
            .and_then(Value::as_str)
            .and_then(|t| b64_decode(t).ok())
            .filter(|k| k.len() == 32);
        self.keys = Some(current.derive());
        self.material = Some(current);
        self.previous = older.as_ref().map(KeyMaterial::derive);
        self.previous_material = older;
        self.authenticated = true;
        self.phase = Phase::Established;
        self.sent_count = v.get("sent").and_then(Value::as_u64).unwrap_or(0) as u32;
        Ok(())
    }
}

impl PeerSessions {
    /// The authenticated sessions, to keep until the next run.
    pub fn save(&self) -> SavedPeers {
        let mut peers: Vec<Value> = self.sessions.values().filter_map(|s| s.saved()).collect();
        peers.sort_by_key(|p| p["peer"].as_str().map(str::to_lowercase));
        let text = json!({"version": VERSION, "me": self.me, "peers": peers}).to_string();
        SavedPeers { text }
    }

    /// Restores saved sessions (made by [`PeerSessions::save`] for the same
    /// user). A session that is ready or under way here is kept as it is.
    /// Returns how many sessions were restored.
    pub fn restore(&mut self, saved: &SavedPeers) -> Result<usize, E2eeError> {
        let v: Value = serde_json::from_str(saved.as_text())
            .map_err(|_| E2eeError::Malformed("saved peers are not JSON".into()))?;
        if v.get("version").and_then(Value::as_u64) != Some(VERSION) {
            return Err(E2eeError::Malformed("saved peers: unknown version".into()));
        }
        let me = v.get("me").and_then(Value::as_str).unwrap_or_default();
        if me.to_lowercase() != self.me.to_lowercase() {
            return Err(E2eeError::Malformed(
                "saved peers belong to another user".into(),
            ));
        }
        let entries = v.get("peers").and_then(Value::as_array).cloned();
        let mut restored = 0;
        for entry in entries.unwrap_or_default() {
            restored += usize::from(self.restore_one(&entry)?);
        }
        Ok(restored)
    }

    fn restore_one(&mut self, entry: &Value) -> Result<bool, E2eeError> {
        let peer = entry
            .get("peer")
            .and_then(Value::as_str)
            .ok_or_else(|| E2eeError::Malformed("saved peer without a name".into()))?;
        if self
            .get(peer)
            .is_some_and(|s| s.is_ready() || s.in_progress())
        {
            return Ok(false);
        }
        self.session(peer).restore(entry)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{PeerAction, E2E_MSG};
    use super::*;
    use crate::client::identity::Identity;

    /// Runs a full handshake between two session sets (relaying like the
    /// server, identity keys answered at once).
    fn pair(a: &mut PeerSessions, b: &mut PeerSessions, ida: &Identity, idb: &Identity) {
        let mut queue: std::collections::VecDeque<(char, PeerAction)> =
            a.start("bob").into_iter().map(|x| ('a', x)).collect();
        while let Some((side, action)) = queue.pop_front() {
            let (me, other, mine, theirs, key) = if side == 'a' {
                ("alice", 'b', &mut *a, &mut *b, idb)
            } else {
                ("bob", 'a', &mut *b, &mut *a, ida)
            };
            let out = match action {
                PeerAction::Send { kind, payload, .. } => {
                    let out = theirs.handle(kind, me, &payload);
                    queue.extend(out.into_iter().map(|x| (other, x)));
                    continue;
                }
                PeerAction::FetchIdentity { peer } => {
                    mine.set_peer_identity(&peer, &key.public_key_b64())
                }
                _ => continue,
            };
            queue.extend(out.into_iter().map(|x| (side, x)));
        }
    }

    fn sealed(actions: Vec<PeerAction>) -> Value {
        match &actions[..] {
            [PeerAction::Send {
                kind: E2E_MSG,
                payload,
                ..
            }] => payload.clone(),
            other => panic!("not one message: {other:?}"),
        }
    }

    #[test]
    fn saved_sessions_survive_a_restart_and_hide_their_keys() {
        let (ida, idb) = (Identity::generate(), Identity::generate());
        let mut a = PeerSessions::new("alice", ida.clone());
        let mut b = PeerSessions::new("bob", idb.clone());
        pair(&mut a, &mut b, &ida, &idb);
        assert!(a.is_ready("bob") && b.is_ready("alice"));
        let saved = a.save();
        assert_eq!(format!("{saved:?}"), "SavedPeers(<redacted>)");
        // A new run of alice: the restored session seals for offline bob.
        let mut again = PeerSessions::new("Alice", ida.clone());
        assert_eq!(
            again.restore(&SavedPeers::from_text(saved.as_text().into())),
            Ok(1)
        );
        assert!(again.is_ready("BOB"));
        let payload = sealed(again.send_message("bob", "later", false).unwrap());
        let got = b.handle(E2E_MSG, "alice", &payload);
        assert!(
            matches!(&got[..], [PeerAction::Message { text, .. }] if text == "later"),
            "{got:?}"
        );
        // Not for another user, not garbage.
        let mut carol = PeerSessions::new("carol", Identity::generate());
        assert!(carol.restore(&saved).is_err());
        assert!(carol.restore(&SavedPeers::from_text("{".into())).is_err());
        assert!(!PeerSessions::new("x", ida)
            .save()
            .as_text()
            .contains("shared"));
    }
}
