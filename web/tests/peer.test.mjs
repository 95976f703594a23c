// Two peer sessions wired back to back: handshake, mutual authentication,
// messages both ways, re-keying, glare and a forged signature.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as c from '../src/crypto.js';
import { PeerSession } from '../src/peer.js';

function pair(nameA = 'ann', nameB = 'ben') {
  const ids = { [nameA]: c.newIdentity(), [nameB]: c.newIdentity() };
  const inbox = [];
  const got = { [nameA]: [], [nameB]: [] };
  const failed = [];
  const make = (me, peer) =>
    new PeerSession(me, peer, ids[me], {
      send: (kind, payload) => inbox.push({ to: peer, from: me, kind, payload: JSON.parse(JSON.stringify(payload)) }),
      fetchIdentity: () => inbox.push({ to: me, from: peer, kind: 'KEY', payload: c.b64encode(ids[peer].publicKey) }),
      ready: () => {},
      message: (text) => got[me].push(text),
      failed: (reason) => failed.push(reason),
    });
  const s = { [nameA]: make(nameA, nameB), [nameB]: make(nameB, nameA) };
  const pump = () => {
    while (inbox.length) {
      const f = inbox.shift();
      if (f.kind === 'KEY') s[f.to].setPeerIdentity(f.payload);
      else s[f.to].handle(f.kind, f.payload);
    }
  };
  return { s, got, pump, inbox, failed, ids };
}

test('a handshake authenticates both sides and messages flow both ways', () => {
  const { s, got, pump } = pair();
  assert.equal(s.ann.sendMessage('hi ben', true), 'queued');
  pump();
  assert.ok(s.ann.isReady() && s.ben.isReady());
  assert.deepEqual(got.ben, ['hi ben']);
  assert.equal(s.ben.sendMessage('hi ann', true), 'sent');
  pump();
  assert.deepEqual(got.ann, ['hi ann']);
});

test('an offline peer without keys gets nothing; with keys the message is sent', () => {
  const { s, pump } = pair();
  assert.equal(s.ann.sendMessage('x', false), 'no-keys');
  s.ann.sendMessage('first', true);
  pump();
  assert.equal(s.ann.sendMessage('stored', false), 'sent');
});

test('saved keys open messages after a reload', () => {
  const { s, pump, inbox, ids } = pair();
  s.ann.sendMessage('hello', true);
  pump();
  const saved = JSON.parse(JSON.stringify(s.ben.saved()));
  s.ann.sendMessage('while away', false);
  const texts = [];
  const reloaded = new PeerSession('ben', 'ann', ids.ben, { send() {}, fetchIdentity() {}, ready() {}, failed() {}, message: (t) => texts.push(t) });
  reloaded.restore(saved);
  const frame = inbox.shift();
  assert.equal(reloaded.handle(frame.kind, frame.payload), null);
  assert.deepEqual(texts, ['while away']);
});

test('re-keying keeps messages flowing and old keys still open late messages', () => {
  const { s, got, pump, inbox } = pair();
  s.ann.sendMessage('one', true);
  pump();
  s.ann.limits.maxMessages = 1;
  s.ben.sendMessage('late under old keys', true);
  const late = inbox.splice(0);
  assert.equal(s.ann.sendMessage('two', true), 'queued');
  pump();
  for (const f of late) s[f.to].handle(f.kind, f.payload);
  assert.deepEqual(got.ben, ['one', 'two']);
  assert.deepEqual(got.ann, ['late under old keys']);
});

test('glare: both send INIT and still end up with one authenticated session', () => {
  const { s, got, pump } = pair();
  s.ann.sendMessage('from ann', true);
  s.ben.sendMessage('from ben', true);
  pump();
  assert.ok(s.ann.isReady() && s.ben.isReady());
  assert.deepEqual(got.ben, ['from ann']);
  assert.deepEqual(got.ann, ['from ben']);
});

test('a peer that signs with another key is refused and nothing is delivered', () => {
  const { s, got, pump, failed } = pair();
  s.ben.identity = c.newIdentity();
  s.ann.sendMessage('secret', true);
  pump();
  assert.equal(failed.length, 1);
  assert.match(failed[0], /bad signature/);
  assert.deepEqual(got.ben, []);
});

/**
 * The mobile client's side of the peer layer, as PROTOCOL.md section 4
 * describes it: it signs the raw peer nonce and never checks signatures.
 */
function mobilePeer(name, identity, sendToBrowser) {
  const me = { keys: null, pair: null, salt: null, got: [] };
  me.start = () => {
    me.pair = c.x25519KeyPair();
    me.salt = c.randomBytes(32);
    sendToBrowser('E2E_HANDSHAKE', { subType: 'INIT', public_key: c.b64encode(me.pair.publicKey), salt: c.b64encode(me.salt) });
  };
  me.handle = (kind, p) => {
    if (kind === 'E2E_HANDSHAKE' && p.subType === 'INIT') {
      const pair = c.x25519KeyPair();
      me.keys = c.deriveKeys(c.agree(pair.secretKey, c.b64decode(p.public_key)), c.b64decode(p.salt), c.E2EE_INFO);
      sendToBrowser('E2E_HANDSHAKE', { subType: 'RESPONSE', public_key: c.b64encode(pair.publicKey) });
      me.nonce = c.randomBytes(32);
      sendToBrowser('E2E_AUTH', { step: 'CHALLENGE_A', payload: c.sealEnvelope(me.keys, c.b64encode(me.nonce)) });
    } else if (kind === 'E2E_HANDSHAKE' && p.subType === 'RESPONSE') {
      me.keys = c.deriveKeys(c.agree(me.pair.secretKey, c.b64decode(p.public_key)), me.salt, c.E2EE_INFO);
    } else if (kind === 'E2E_AUTH' && p.step === 'CHALLENGE_A') {
      const nonceA = c.b64decode(c.openEnvelope(me.keys, p.payload));
      const content = { sig: c.b64encode(c.sign(identity.seed, nonceA)), nonce: c.b64encode(c.randomBytes(32)) };
      sendToBrowser('E2E_AUTH', { step: 'RESPONSE_A_CHALLENGE_B', payload: c.sealEnvelope(me.keys, JSON.stringify(content)) });
    } else if (kind === 'E2E_AUTH' && p.step === 'RESPONSE_A_CHALLENGE_B') {
      const content = JSON.parse(c.openEnvelope(me.keys, p.payload));
      const sig = c.sign(identity.seed, c.b64decode(content.nonce));
      sendToBrowser('E2E_AUTH', { step: 'RESPONSE_B', payload: c.sealEnvelope(me.keys, c.b64encode(sig)) });
    } else if (kind === 'E2E_MSG') {
      me.got.push(c.openEnvelope(me.keys, p));
    }
  };
  me.say = (text) => sendToBrowser('E2E_MSG', c.sealEnvelope(me.keys, text));
  return me;
}

function browserAndMobile() {
  const ids = { web: c.newIdentity(), mob: c.newIdentity() };
  const queue = [];
  const got = [];
  const browser = new PeerSession('web', 'mob', ids.web, {
    send: (kind, payload) => queue.push({ to: 'mob', kind, payload: JSON.parse(JSON.stringify(payload)) }),
    fetchIdentity: () => queue.push({ to: 'web', kind: 'KEY', payload: c.b64encode(ids.mob.publicKey) }),
    ready: () => {},
    message: (text) => got.push(text),
    failed: (reason) => assert.fail(reason),
  });
  const mobile = mobilePeer('mob', ids.mob, (kind, payload) => queue.push({ to: 'web', kind, payload: JSON.parse(JSON.stringify(payload)) }));
  const pump = () => {
    while (queue.length) {
      const f = queue.shift();
      if (f.to === 'mob') mobile.handle(f.kind, f.payload);
      else if (f.kind === 'KEY') browser.setPeerIdentity(f.payload);
      else browser.handle(f.kind, f.payload);
    }
  };
  return { browser, mobile, got, pump };
}

test('the browser starts a session with a mobile client (raw signatures accepted)', () => {
  const { browser, mobile, got, pump } = browserAndMobile();
  browser.sendMessage('hello phone', true);
  pump();
  assert.ok(browser.isReady());
  assert.deepEqual(mobile.got, ['hello phone']);
  mobile.say('hello browser');
  pump();
  assert.deepEqual(got, ['hello browser']);
});

test('a mobile client starts a session with the browser, and re-keys later', () => {
  const { browser, mobile, got, pump } = browserAndMobile();
  mobile.start();
  pump();
  assert.ok(browser.isReady());
  mobile.say('first');
  mobile.start();
  pump();
  mobile.say('after re-key');
  pump();
  assert.deepEqual(got, ['first', 'after re-key']);
  browser.sendMessage('reply', true);
  pump();
  assert.deepEqual(mobile.got, ['reply']);
});

test('messages waiting for a handshake are bounded', () => {
  const { s } = pair();
  for (let i = 0; i < 256; i++) assert.equal(s.ann.sendMessage(`m${i}`, true), 'queued');
  assert.equal(s.ann.sendMessage('one too many', true), 'full');
});
