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
