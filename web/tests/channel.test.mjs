// The browser's secure channel against a scripted server: handshake, frames
// both ways, and a server-initiated key renewal ("immediate":true).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as c from '../src/crypto.js';

/** A stand-in for the browser's WebSocket that records what the page sends. */
class FakeSocket {
  static CONNECTING = 0;
  static OPEN = 1;
  static last = null;
  constructor(url) {
    this.url = url;
    this.readyState = FakeSocket.CONNECTING;
    this.sent = [];
    FakeSocket.last = this;
    queueMicrotask(() => {
      this.readyState = FakeSocket.OPEN;
      this.onopen();
    });
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close() {
    this.readyState = 3;
    this.onclose({ code: 1000, reason: '' });
  }
  deliver(object) {
    this.onmessage({ data: JSON.stringify(object) });
  }
}
globalThis.WebSocket = FakeSocket;
const { Channel } = await import('../src/channel.js');

/** The server's half of the handshake: returns its keys. */
function answerHandshake(socket) {
  const start = socket.sent.shift();
  assert.equal(start.type, 'HANDSHAKE_START');
  const server = c.x25519KeyPair();
  socket.deliver({ type: 'HANDSHAKE_RESPONSE', public_key: c.b64encode(server.publicKey) });
  const shared = c.agree(server.secretKey, c.b64decode(start.public_key));
  return c.deriveKeys(shared, c.b64decode(start.salt), c.CHANNEL_INFO);
}

test('handshake, frames both ways and a renewal with immediate:true', async () => {
  const received = [];
  const opening = Channel.open('ws://test/', { onCommand: (cmd) => received.push(cmd), onClose: () => {} });
  await new Promise((resolve) => setTimeout(resolve, 0));
  const socket = FakeSocket.last;
  const oldKeys = answerHandshake(socket);
  const channel = await opening;

  channel.send({ type: 'REQUEST_USER_LIST' });
  assert.deepEqual(JSON.parse(c.openFrame(oldKeys, socket.sent.shift())), { type: 'REQUEST_USER_LIST' });
  socket.deliver(c.sealFrame(oldKeys, '{"type":"user_list_update","users":[]}'));
  assert.deepEqual(received.shift(), { type: 'user_list_update', users: [] });

  const serverPair = c.x25519KeyPair();
  socket.deliver(c.sealFrame(oldKeys, JSON.stringify({ type: 'RENEGOTIATE_REQUEST', public_key: c.b64encode(serverPair.publicKey), salt: c.b64encode(c.randomBytes(32)) })));
  const init = JSON.parse(c.openFrame(oldKeys, socket.sent.shift()));
  assert.equal(init.type, 'RENEGOTIATE_INIT');
  assert.equal(init.immediate, true);
  const renewed = c.deriveKeys(c.agree(serverPair.secretKey, c.b64decode(init.public_key)), c.b64decode(init.salt), c.CHANNEL_INFO);
  socket.deliver(c.sealFrame(oldKeys, JSON.stringify({ type: 'RENEGOTIATE_RESPONSE', public_key: c.b64encode(serverPair.publicKey) })));
  // The very next frame is already under the new keys.
  socket.deliver(c.sealFrame(renewed, '{"type":"TYPING_STATUS_UPDATE","from":"x","isTyping":true}'));
  assert.equal(received.shift().type, 'TYPING_STATUS_UPDATE');
  channel.send({ type: 'REQUEST_OFFLINE_MESSAGES' });
  assert.equal(JSON.parse(c.openFrame(renewed, socket.sent.shift())).type, 'REQUEST_OFFLINE_MESSAGES');
  assert.equal(received.length, 0, 'renewal frames are not passed on');
});

test('frames that do not verify are dropped, not passed on', async () => {
  const received = [];
  const opening = Channel.open('ws://test/', { onCommand: (cmd) => received.push(cmd), onClose: () => {} });
  await new Promise((resolve) => setTimeout(resolve, 0));
  const socket = FakeSocket.last;
  answerHandshake(socket);
  const channel = await opening;
  const stranger = { aes: c.randomBytes(32), mac: c.randomBytes(32) };
  socket.deliver(c.sealFrame(stranger, '{"type":"ERROR","message":"forged"}'));
  socket.deliver({ type: 'ERROR', message: 'plaintext' });
  assert.equal(received.length, 0);
  assert.equal(channel.dropped, 2);
});
