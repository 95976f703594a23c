// The secure channel to the server over one WebSocket (PROTOCOL.md section 2):
// X25519 handshake, AES-CBC + HMAC frames, and key renewal. Renewal is
// applied synchronously before the next frame is read, so every
// RENEGOTIATE_INIT says "immediate":true.
import * as c from './crypto.js';

/** Why a channel ended, in words a person understands. */
export class ChannelClosed extends Error {}

export class Channel {
  /**
   * Opens `url` and runs the handshake. `onCommand(obj)` receives every
   * decrypted command; `onClose(reason)` is called once when the socket ends.
   */
  static open(url, { onCommand, onClose }) {
    return new Promise((resolve, reject) => {
      const channel = new Channel(url, onCommand, onClose, resolve, reject);
      channel.start();
    });
  }

  constructor(url, onCommand, onClose, resolve, reject) {
    this.url = url;
    this.onCommand = onCommand;
    this.onClose = onClose;
    this.resolveReady = resolve;
    this.rejectReady = reject;
    this.keys = null;
    this.previousKeys = null;
    this.renewal = null;
    this.closed = false;
    this.dropped = 0;
  }

  start() {
    this.ws = new WebSocket(this.url);
    this.ws.onopen = () => this.sendHandshake();
    this.ws.onmessage = (event) => this.receive(event.data);
    this.ws.onerror = () => {};
    this.ws.onclose = (event) => this.ended(event);
  }

  sendHandshake() {
    this.pair = c.x25519KeyPair();
    this.salt = c.randomBytes(32);
    this.ws.send(
      JSON.stringify({
        type: 'HANDSHAKE_START',
        public_key: c.b64encode(this.pair.publicKey),
        salt: c.b64encode(this.salt),
      }),
    );
  }

  receive(data) {
    if (typeof data !== 'string') return;
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      this.dropped++;
      return;
    }
    if (!this.keys) {
      this.finishHandshake(frame);
      return;
    }
    const command = this.decrypt(frame);
    if (!command) {
      this.dropped++;
      return;
    }
    if (command.type === 'RENEGOTIATE_REQUEST') {
      this.startRenewal();
    } else if (command.type === 'RENEGOTIATE_RESPONSE') {
      this.finishRenewal(command);
    } else {
      this.onCommand(command);
    }
  }

  finishHandshake(frame) {
    try {
      if (frame.type !== 'HANDSHAKE_RESPONSE') throw new Error('no handshake answer');
      const shared = c.agree(this.pair.secretKey, c.b64decode(frame.public_key));
      this.keys = c.deriveKeys(shared, this.salt, c.CHANNEL_INFO);
      this.pair = null;
      this.resolveReady(this);
    } catch (e) {
      this.rejectReady(new ChannelClosed('the server answered the handshake wrongly'));
      this.close();
    }
  }

  decrypt(frame) {
    for (const keys of [this.keys, this.previousKeys]) {
      if (!keys) continue;
      try {
        const command = JSON.parse(c.openFrame(keys, frame));
        return command && typeof command === 'object' ? command : null;
      } catch {
        // try the next keys
      }
    }
    return null;
  }

  startRenewal() {
    const pair = c.x25519KeyPair();
    const salt = c.randomBytes(32);
    this.renewal = { pair, salt };
    this.send({
      type: 'RENEGOTIATE_INIT',
      public_key: c.b64encode(pair.publicKey),
      salt: c.b64encode(salt),
      immediate: true,
    });
  }

  finishRenewal(command) {
    if (!this.renewal) return;
    try {
      const shared = c.agree(this.renewal.pair.secretKey, c.b64decode(command.public_key));
      this.previousKeys = this.keys;
      this.keys = c.deriveKeys(shared, this.renewal.salt, c.CHANNEL_INFO);
    } catch {
      this.dropped++;
    }
    this.renewal = null;
  }

  /** Sends one command object, encrypted. */
  send(command) {
    if (this.closed || !this.keys || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(c.sealFrame(this.keys, JSON.stringify(command))));
    return true;
  }

  ended(event) {
    if (this.closed) return;
    this.closed = true;
    this.rejectReady(new ChannelClosed('could not reach the server'));
    this.onClose({ code: event.code, reason: event.reason });
  }

  close() {
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000);
  }
}

/**
 * Waits for the first command for which `match(cmd)` is true, within `ms`.
 * `channel.onCommand` is wrapped meanwhile (other commands go on as before).
 */
export function nextCommand(channel, match, ms = 10000) {
  return new Promise((resolve, reject) => {
    const previous = channel.onCommand;
    const timer = setTimeout(() => {
      channel.onCommand = previous;
      reject(new ChannelClosed('the server did not answer'));
    }, ms);
    channel.onCommand = (cmd) => {
      if (match(cmd)) {
        clearTimeout(timer);
        channel.onCommand = previous;
        resolve(cmd);
      } else {
        previous(cmd);
      }
    };
    const previousClose = channel.onClose;
    channel.onClose = (info) => {
      clearTimeout(timer);
      channel.onClose = previousClose;
      reject(new ChannelClosed('the connection closed'));
      previousClose(info);
    };
  });
}
