// The peer layer (PROTOCOL.md section 4): end-to-end encryption with one
// other user, relayed blind by the server. The same state machine as the
// crate's Rust client (src/client/e2ee.rs) and the mobile client's wire
// format: INIT/RESPONSE, then the 3-step mutual authentication
// CHALLENGE_A / RESPONSE_A_CHALLENGE_B / RESPONSE_B. We sign only
// "E2EE_AUTH:" || nonce and verify the peer's signature against its identity
// key from GET_PUBLIC_KEY. Messages are shown and sent only under keys whose
// peer has proved itself (queued meanwhile).
import * as c from './crypto.js';

export const HANDSHAKE_STALL_MS = 10000;
/** Most messages kept waiting for authentication, each way. */
export const MAX_WAITING = 256;

const drawLimits = () => ({
  maxMessages: 50 + Math.floor(Math.random() * 51),
  maxAgeMs: (30 + Math.floor(Math.random() * 31)) * 60000,
});

/**
 * One peer session. `hooks`: send(kind, payload), fetchIdentity(), ready(),
 * message(text), failed(reason), keysChanged().
 */
export class PeerSession {
  constructor(me, peer, identity, hooks) {
    this.me = me;
    this.peer = peer;
    this.identity = identity;
    this.hooks = hooks;
    this.phase = { name: 'idle' };
    this.keys = null;
    this.previous = null;
    this.authenticated = false;
    this.peerIdentity = null;
    this.outbox = [];
    this.held = [];
    this.sent = 0;
    this.keysSince = Date.now();
    this.limits = drawLimits();
    this.handshakeSince = 0;
  }

  isReady() {
    return this.phase.name === 'established' && this.authenticated;
  }

  inProgress() {
    return !['idle', 'established', 'failed'].includes(this.phase.name);
  }

  /** Keys that outlive a reload (base64), or null. */
  saved() {
    if (!this.isReady()) return null;
    const enc = (k) => k && { aes: c.b64encode(k.aes), mac: c.b64encode(k.mac) };
    return { keys: enc(this.keys), previous: enc(this.previous) };
  }

  restore(saved) {
    const dec = (k) => k && { aes: c.b64decode(k.aes), mac: c.b64decode(k.mac) };
    this.keys = dec(saved.keys);
    this.previous = dec(saved.previous);
    this.authenticated = true;
    this.phase = { name: 'established' };
  }

  installKeys(keys) {
    if (this.authenticated) this.previous = this.keys;
    this.keys = keys;
    this.authenticated = false;
    this.sent = 0;
    this.keysSince = Date.now();
    this.limits = drawLimits();
  }

  /** Starts a handshake as initiator. */
  start() {
    const pair = c.x25519KeyPair();
    const salt = c.randomBytes(32);
    this.phase = { name: 'initiated', pair, salt };
    this.handshakeSince = Date.now();
    this.peerIdentity = null;
    this.hooks.send('E2E_HANDSHAKE', {
      subType: 'INIT',
      public_key: c.b64encode(pair.publicKey),
      salt: c.b64encode(salt),
    });
    this.hooks.fetchIdentity();
  }

  /** Feeds a relayed E2E_* payload; returns a reason if it was ignored. */
  handle(kind, payload) {
    try {
      if (!payload || typeof payload !== 'object') throw new Error('payload is not an object');
      if (kind === 'E2E_HANDSHAKE') return this.onHandshake(payload);
      if (kind === 'E2E_AUTH') return this.onAuth(payload);
      if (kind === 'E2E_MSG') return this.onMessage(payload);
      return 'not a peer command';
    } catch (e) {
      return e.message;
    }
  }

  onHandshake(payload) {
    if (payload.subType === 'INIT') {
      if (this.phase.name === 'initiated' && this.me.toLowerCase() < this.peer.toLowerCase()) {
        return 'INIT ignored: our own INIT wins the glare';
      }
      const pair = c.x25519KeyPair();
      const shared = c.agree(pair.secretKey, c.b64decode(payload.public_key));
      this.installKeys(c.deriveKeys(shared, c.b64decode(payload.salt), c.E2EE_INFO));
      this.handshakeSince = Date.now();
      this.peerIdentity = null;
      const nonceA = c.randomBytes(32);
      this.phase = { name: 'awaitResponseA', nonceA };
      this.hooks.send('E2E_HANDSHAKE', { subType: 'RESPONSE', public_key: c.b64encode(pair.publicKey) });
      this.hooks.fetchIdentity();
      this.hooks.send('E2E_AUTH', {
        step: 'CHALLENGE_A',
        payload: c.sealEnvelope(this.keys, c.b64encode(nonceA)),
      });
      return null;
    }
    if (payload.subType === 'RESPONSE') {
      if (this.phase.name !== 'initiated') return 'RESPONSE without a pending INIT';
      const { pair, salt } = this.phase;
      const shared = c.agree(pair.secretKey, c.b64decode(payload.public_key));
      this.installKeys(c.deriveKeys(shared, salt, c.E2EE_INFO));
      this.phase = { name: 'awaitChallenge' };
      return null;
    }
    return 'unknown subType';
  }

  onAuth(payload) {
    const step = payload.step;
    const inner = payload.payload;
    if (step === 'CHALLENGE_A' && this.phase.name === 'awaitChallenge') {
      const nonceA = c.b64decode(c.openEnvelope(this.keys, inner));
      const nonceB = c.randomBytes(32);
      const sig = c.signPeerNonce(this.identity.seed, nonceA);
      this.phase = { name: 'awaitResponseB', nonceB };
      this.hooks.send('E2E_AUTH', {
        step: 'RESPONSE_A_CHALLENGE_B',
        payload: c.sealEnvelope(this.keys, JSON.stringify({ sig: c.b64encode(sig), nonce: c.b64encode(nonceB) })),
      });
      return null;
    }
    if (step === 'RESPONSE_A_CHALLENGE_B' && this.phase.name === 'awaitResponseA') {
      const content = JSON.parse(c.openEnvelope(this.keys, inner));
      this.phase = {
        name: 'verify',
        nonce: this.phase.nonceA,
        sig: c.b64decode(content.sig),
        answer: c.b64decode(content.nonce),
      };
      this.tryVerify();
      return null;
    }
    if (step === 'RESPONSE_B' && this.phase.name === 'awaitResponseB') {
      const sig = c.b64decode(c.openEnvelope(this.keys, inner));
      this.phase = { name: 'verify', nonce: this.phase.nonceB, sig, answer: null };
      this.tryVerify();
      return null;
    }
    return `E2E_AUTH step ${step} out of sequence`;
  }

  /** The peer's identity key (base64 of 32 bytes) from PUBLIC_KEY_RESPONSE. */
  setPeerIdentity(publicKeyB64) {
    let key = null;
    try {
      key = c.b64decode(publicKeyB64);
    } catch {
      key = null;
    }
    if (!key || key.length !== 32) return this.fail('the peer identity key is not 32 bytes');
    this.peerIdentity = key;
    this.tryVerify();
  }

  fail(reason) {
    this.phase = { name: 'failed' };
    this.outbox = [];
    this.held = [];
    this.hooks.failed(reason);
  }

  tryVerify() {
    if (this.phase.name !== 'verify' || !this.peerIdentity) return;
    const { nonce, sig, answer } = this.phase;
    if (!c.verifyPeerSignature(this.peerIdentity, nonce, sig)) {
      this.fail(`${this.peer} could not prove who they are (bad signature)`);
      return;
    }
    if (answer) {
      const mine = c.signPeerNonce(this.identity.seed, answer);
      this.hooks.send('E2E_AUTH', { step: 'RESPONSE_B', payload: c.sealEnvelope(this.keys, c.b64encode(mine)) });
    }
    this.phase = { name: 'established' };
    this.authenticated = true;
    this.hooks.ready();
    for (const text of this.held.splice(0)) this.hooks.message(text);
    for (const text of this.outbox.splice(0)) this.sealNow(text);
  }

  onMessage(payload) {
    if (this.keys) {
      let text = null;
      try {
        text = c.openEnvelope(this.keys, payload);
      } catch {
        text = null;
      }
      if (text !== null) {
        if (this.authenticated) this.hooks.message(text);
        else if (this.held.length < MAX_WAITING) this.held.push(text);
        else return 'too many messages before authentication';
        return null;
      }
    }
    if (this.previous) {
      try {
        this.hooks.message(c.openEnvelope(this.previous, payload));
        return null;
      } catch {
        // fall through
      }
    }
    return this.keys ? 'a message that our keys cannot open' : 'a message before any key exchange';
  }

  sealNow(text) {
    this.sent++;
    this.hooks.send('E2E_MSG', c.sealEnvelope(this.keys, text));
  }

  rekeyDue() {
    return this.sent >= this.limits.maxMessages || Date.now() - this.keysSince >= this.limits.maxAgeMs;
  }

  /**
   * Sends `text` like the mobile client: now under authenticated keys (also
   * to an offline peer, whose server stores it), or after a handshake with an
   * online peer. Returns 'sent', 'queued', 'no-keys' (offline peer, no
   * keys) or 'full' (too many waiting for the handshake).
   */
  sendMessage(text, peerOnline) {
    if (this.outbox.length >= MAX_WAITING) return 'full';
    if (this.inProgress()) {
      this.outbox.push(text);
      if (peerOnline && Date.now() - this.handshakeSince >= HANDSHAKE_STALL_MS) this.start();
      return 'queued';
    }
    if (this.isReady() && (!this.rekeyDue() || !peerOnline)) {
      this.sealNow(text);
      return 'sent';
    }
    if (!peerOnline) return 'no-keys';
    this.outbox.push(text);
    this.start();
    return 'queued';
  }
}
