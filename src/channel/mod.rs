//! TEMPORARY stand-in for the channel branch's client side of the secure
//! channel (same API as specified for it), so the client can be written
//! before that branch lands. Replaced by the real module on merge.

use serde_json::{json, Map, Value};

use crate::crypto::{b64_decode, b64_encode, random_bytes, KeyPair, SymmetricKeys};

pub const HANDSHAKE_INFO: &[u8] = b"handshake_info";

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("hmac check failed")]
    BadMac,
    #[error("bad key")]
    BadKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RenewalMode {
    #[default]
    Immediate,
    MobileLike,
    PythonVariant,
}

pub enum ClientInbound {
    Command(Map<String, Value>),
    Control(Option<String>),
}

pub struct ClientHandshake {
    keypair: KeyPair,
    salt: [u8; 32],
    mode: RenewalMode,
}

pub struct ClientChannel {
    keys: SymmetricKeys,
    pending: Option<(KeyPair, [u8; 32])>,
    mode: RenewalMode,
    renewals: u64,
}

fn s<'a>(m: &'a Map<String, Value>, k: &str) -> Result<&'a str, ChannelError> {
    m.get(k)
        .and_then(Value::as_str)
        .ok_or_else(|| ChannelError::Malformed(k.to_string()))
}

impl ClientChannel {
    pub fn start() -> (ClientHandshake, String) {
        Self::start_with(RenewalMode::default())
    }

    pub fn start_with(mode: RenewalMode) -> (ClientHandshake, String) {
        let keypair = KeyPair::generate();
        let salt = random_bytes::<32>();
        let msg = json!({"type": "HANDSHAKE_START", "public_key": b64_encode(&keypair.public_bytes()), "salt": b64_encode(&salt)}).to_string();
        (
            ClientHandshake {
                keypair,
                salt,
                mode,
            },
            msg,
        )
    }

    pub fn seal(&mut self, plaintext: &str) -> String {
        let iv = random_bytes::<16>();
        let (ct, tag) = self.keys.seal(&iv, plaintext.as_bytes());
        json!({"iv": b64_encode(&iv), "payload": b64_encode(&ct), "hmac": b64_encode(&tag)})
            .to_string()
    }

    pub fn request_renewal(&mut self) -> String {
        let kp = KeyPair::generate();
        let salt = random_bytes::<32>();
        let mut init = json!({"type": "RENEGOTIATE_INIT", "public_key": b64_encode(&kp.public_bytes()), "salt": b64_encode(&salt)});
        if self.mode == RenewalMode::Immediate {
            init["immediate"] = json!(true);
        }
        self.pending = Some((kp, salt));
        self.seal(&init.to_string())
    }

    pub fn renewals_completed(&self) -> u64 {
        self.renewals
    }

    pub fn open(&mut self, frame: &str) -> Result<ClientInbound, ChannelError> {
        let v: Map<String, Value> =
            serde_json::from_str(frame).map_err(|_| ChannelError::Malformed("not json".into()))?;
        let iv = b64_decode(s(&v, "iv")?).map_err(|_| ChannelError::Malformed("iv".into()))?;
        let ct =
            b64_decode(s(&v, "payload")?).map_err(|_| ChannelError::Malformed("payload".into()))?;
        let tag = b64_decode(s(&v, "hmac")?).map_err(|_| ChannelError::Malformed("hmac".into()))?;
        let pt = self
            .keys
            .open(&iv, &ct, &tag)
            .map_err(|_| ChannelError::BadMac)?;
        let cmd: Map<String, Value> =
            serde_json::from_slice(&pt).map_err(|_| ChannelError::Malformed("plaintext".into()))?;
        match cmd.get("type").and_then(Value::as_str) {
            Some("RENEGOTIATE_REQUEST") => {
                if self.mode == RenewalMode::PythonVariant {
                    let server_pk =
                        b64_decode(s(&cmd, "public_key")?).map_err(|_| ChannelError::BadKey)?;
                    let salt = b64_decode(s(&cmd, "salt")?).map_err(|_| ChannelError::BadKey)?;
                    let kp = KeyPair::generate();
                    let shared = kp.agree(&server_pk).map_err(|_| ChannelError::BadKey)?;
                    let reply = json!({"type": "RENEGOTIATE_RESPONSE", "public_key": b64_encode(&kp.public_bytes())});
                    let sealed = self.seal(&reply.to_string());
                    self.keys = SymmetricKeys::derive(&shared, &salt, HANDSHAKE_INFO);
                    self.renewals += 1;
                    return Ok(ClientInbound::Control(Some(sealed)));
                }
                Ok(ClientInbound::Control(Some(self.request_renewal())))
            }
            Some("RENEGOTIATE_RESPONSE") => {
                let Some((kp, salt)) = self.pending.take() else {
                    return Ok(ClientInbound::Control(None));
                };
                let pk = b64_decode(s(&cmd, "public_key")?).map_err(|_| ChannelError::BadKey)?;
                let shared = kp.agree(&pk).map_err(|_| ChannelError::BadKey)?;
                self.keys = SymmetricKeys::derive(&shared, &salt, HANDSHAKE_INFO);
                self.renewals += 1;
                Ok(ClientInbound::Control(None))
            }
            _ => Ok(ClientInbound::Command(cmd)),
        }
    }
}

impl ClientHandshake {
    pub fn finish(self, response: &str) -> Result<ClientChannel, ChannelError> {
        let v: Map<String, Value> = serde_json::from_str(response)
            .map_err(|_| ChannelError::Malformed("not json".into()))?;
        if v.get("type").and_then(Value::as_str) != Some("HANDSHAKE_RESPONSE") {
            return Err(ChannelError::Malformed("not a HANDSHAKE_RESPONSE".into()));
        }
        let pk = b64_decode(s(&v, "public_key")?).map_err(|_| ChannelError::BadKey)?;
        let shared = self.keypair.agree(&pk).map_err(|_| ChannelError::BadKey)?;
        Ok(ClientChannel {
            keys: SymmetricKeys::derive(&shared, &self.salt, HANDSHAKE_INFO),
            pending: None,
            mode: self.mode,
            renewals: 0,
        })
    }
}
