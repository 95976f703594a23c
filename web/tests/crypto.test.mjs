// The browser's crypto against the shared protocol vectors
// (../shared/protocol/vectors.json beside the repository).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as c from '../src/crypto.js';

const vectorsPath = fileURLToPath(new URL('../../../shared/protocol/vectors.json', import.meta.url));
const v = JSON.parse(readFileSync(process.env.CHAT_VECTORS || vectorsPath, 'utf8'));
const b = c.b64decode;

test('channel keys and frame match the vectors', () => {
  const t = v.transport;
  assert.equal(c.b64encode(c.x25519Public(b(t.client_private))), t.client_public);
  const shared = c.agree(b(t.client_private), b(t.server_public));
  assert.equal(c.b64encode(shared), t.shared_secret);
  const keys = c.deriveKeys(shared, b(t.salt), c.CHANNEL_INFO);
  assert.equal(c.b64encode(keys.aes), t.aes_key);
  assert.equal(c.b64encode(keys.mac), t.hmac_key);
  const frame = c.sealFrame(keys, t.frame.plaintext, b(t.frame.iv));
  assert.deepEqual(frame, { iv: t.frame.iv, payload: t.frame.payload, hmac: t.frame.hmac });
  assert.equal(c.openFrame(keys, JSON.parse(t.frame_json)), t.frame.plaintext);
  assert.equal(c.openFrame(keys, t.frame_unpadded), t.frame.plaintext);
});

test('a frame with a changed byte is refused before decryption', () => {
  const t = v.transport;
  const keys = { aes: b(t.aes_key), mac: b(t.hmac_key) };
  const bad = { ...t.frame, hmac: c.b64encode(b(t.frame.hmac).map((x, i) => (i === 0 ? x ^ 1 : x))) };
  assert.throws(() => c.openFrame(keys, bad), /bad MAC/);
});

test('peer envelope matches the vectors', () => {
  const e = v.e2ee;
  const shared = c.agree(b(e.a_private), b(e.b_public));
  assert.deepEqual(shared, c.agree(b(e.b_private), b(e.a_public)));
  const keys = c.deriveKeys(shared, b(e.salt), c.E2EE_INFO);
  assert.equal(c.b64encode(keys.aes), e.aes_key);
  assert.equal(c.b64encode(keys.mac), e.hmac_key);
  const env = c.sealEnvelope(keys, e.message.plaintext, b(e.message.iv));
  assert.deepEqual(env, { iv: e.message.iv, ct: e.message.ct, mac: e.message.mac });
  assert.equal(c.openEnvelope(keys, env), e.message.plaintext);
});

test('ed25519 login signature matches the vectors', () => {
  const l = v.ed25519_login;
  const id = c.identityFromSeed(b(l.seed));
  assert.equal(c.b64encode(id.publicKey), l.public_key);
  assert.equal(c.b64encode(c.sign(id.seed, b(l.nonce))), l.signature);
  assert.ok(c.verify(id.publicKey, b(l.nonce), b(l.signature)));
});

test('peer nonce signatures are prefixed and both forms verify', () => {
  const id = c.newIdentity();
  const nonce = c.randomBytes(32);
  const ours = c.signPeerNonce(id.seed, nonce);
  assert.ok(c.verifyPeerSignature(id.publicKey, nonce, ours));
  assert.ok(!c.verify(id.publicKey, nonce, ours), 'a raw nonce is never signed');
  assert.ok(c.verifyPeerSignature(id.publicKey, nonce, c.sign(id.seed, nonce)));
  assert.ok(!c.verifyPeerSignature(c.newIdentity().publicKey, nonce, ours));
});

test('low-order and short X25519 keys are refused', () => {
  const me = c.x25519KeyPair();
  assert.throws(() => c.agree(me.secretKey, new Uint8Array(32)));
  assert.throws(() => c.agree(me.secretKey, new Uint8Array(31)));
});

test('base64 accepts both alphabets, padded or not, and refuses junk', () => {
  const bytes = new Uint8Array([251, 255, 191, 1]);
  assert.equal(c.b64encode(bytes), '-_-_AQ==');
  assert.deepEqual(c.b64decode('+/+/AQ'), bytes);
  assert.deepEqual(c.b64decode('-_-_AQ=='), bytes);
  assert.throws(() => c.b64decode('a b'));
  assert.throws(() => c.b64decode('abcde'));
});

test('security codes are five groups of four hex digits, one per key', () => {
  const a = c.securityCode(c.newIdentity().publicKey);
  assert.match(a, /^([0-9a-f]{4} ){4}[0-9a-f]{4}$/);
  assert.notEqual(a, c.securityCode(c.newIdentity().publicKey));
});
