// Crypto of the chat protocol (PROTOCOL.md sections 2 and 4), in pure
// JavaScript from the audited @noble libraries: WebCrypto (crypto.subtle)
// exists only in secure contexts, and http://<LAN address> is not one.
// Randomness comes from crypto.getRandomValues, which every origin keeps.
import { x25519, ed25519 } from '@noble/curves/ed25519.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { hmac } from '@noble/hashes/hmac.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { cbc } from '@noble/ciphers/aes.js';

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/** UTF-8 bytes of a string. */
export const utf8 = (text) => encoder.encode(text);
/** A string from UTF-8 bytes (throws on invalid UTF-8). */
export const fromUtf8 = (bytes) => decoder.decode(bytes);

/** `n` random bytes. */
export function randomBytes(n) {
  const out = new Uint8Array(n);
  crypto.getRandomValues(out);
  return out;
}

/** Url-safe base64 with `=` padding (what the mobile client decodes). */
export function b64encode(bytes) {
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_');
}

/** Base64 in either alphabet, padded or not; throws on anything else. */
export function b64decode(text) {
  if (typeof text !== 'string' || !/^[A-Za-z0-9+/_-]*={0,2}$/.test(text)) {
    throw new Error('not base64');
  }
  let std = text.replace(/=+$/, '').replace(/-/g, '+').replace(/_/g, '/');
  if (std.length % 4 === 1) throw new Error('not base64');
  while (std.length % 4) std += '=';
  const binary = atob(std);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Constant-time equality of two byte arrays. */
export function equalBytes(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

/** A fresh X25519 key pair. */
export function x25519KeyPair() {
  const secretKey = x25519.utils.randomSecretKey();
  return { secretKey, publicKey: x25519.getPublicKey(secretKey) };
}

/** The X25519 public key of a raw 32-byte scalar. */
export const x25519Public = (secretKey) => x25519.getPublicKey(secretKey);

/** X25519 agreement; throws on a bad or low-order peer key. */
export function agree(secretKey, peerPublic) {
  if (!(peerPublic instanceof Uint8Array) || peerPublic.length !== 32) {
    throw new Error('peer key is not 32 bytes');
  }
  return x25519.getSharedSecret(secretKey, peerPublic);
}

/** `{aes, mac}` keys: HKDF-SHA256(shared, salt, info, 64) split in halves. */
export function deriveKeys(shared, salt, info) {
  const km = hkdf(sha256, shared, salt, utf8(info), 64);
  return { aes: km.slice(0, 32), mac: km.slice(32, 64) };
}

/** HKDF info of the client <-> server channel. */
export const CHANNEL_INFO = 'handshake_info';
/** HKDF info of the peer layer. */
export const E2EE_INFO = 'E2EE_CHAT';

/** AES-256-CBC-PKCS7 then HMAC-SHA256(iv || ct): `{iv, ct, mac}` bytes. */
export function seal(keys, plaintext, iv = randomBytes(16)) {
  const ct = cbc(keys.aes, iv).encrypt(plaintext);
  const mac = hmac(sha256, keys.mac, concat(iv, ct));
  return { iv, ct, mac };
}

/** Checks the MAC (constant time) before decrypting; throws if either fails. */
export function open(keys, iv, ct, mac) {
  if (iv.length !== 16) throw new Error('iv is not 16 bytes');
  const expected = hmac(sha256, keys.mac, concat(iv, ct));
  if (!equalBytes(expected, mac)) throw new Error('bad MAC');
  return cbc(keys.aes, iv).decrypt(ct);
}

/** A channel frame `{"iv","payload","hmac"}` carrying `text`. */
export function sealFrame(keys, text, iv) {
  const s = seal(keys, utf8(text), iv);
  return { iv: b64encode(s.iv), payload: b64encode(s.ct), hmac: b64encode(s.mac) };
}

/** The text inside a channel frame object; throws if it does not verify. */
export function openFrame(keys, frame) {
  return fromUtf8(open(keys, b64decode(frame.iv), b64decode(frame.payload), b64decode(frame.hmac)));
}

/** A peer envelope `{"iv","ct","mac"}` carrying `text`. */
export function sealEnvelope(keys, text, iv) {
  const s = seal(keys, utf8(text), iv);
  return { iv: b64encode(s.iv), ct: b64encode(s.ct), mac: b64encode(s.mac) };
}

/** The text inside a peer envelope; throws if it does not verify. */
export function openEnvelope(keys, env) {
  if (!env || typeof env !== 'object') throw new Error('envelope is not an object');
  return fromUtf8(open(keys, b64decode(env.iv), b64decode(env.ct), b64decode(env.mac)));
}

/** A fresh Ed25519 identity: `{seed, publicKey}`. */
export function newIdentity() {
  const seed = ed25519.utils.randomSecretKey();
  return { seed, publicKey: ed25519.getPublicKey(seed) };
}

export const identityFromSeed = (seed) => ({ seed, publicKey: ed25519.getPublicKey(seed) });
export const sign = (seed, message) => ed25519.sign(message, seed);

export function verify(publicKey, message, signature) {
  try {
    return ed25519.verify(signature, message, publicKey);
  } catch {
    return false;
  }
}

/** What our clients put before a peer's nonce when signing it (PROTOCOL.md 7). */
export const AUTH_SIGNATURE_PREFIX = utf8('E2EE_AUTH:');

/** Our signature of a peer nonce: always over "E2EE_AUTH:" || nonce. */
export const signPeerNonce = (seed, nonce) => sign(seed, concat(AUTH_SIGNATURE_PREFIX, nonce));

/** Does `sig` sign `nonce`, prefixed or raw (the mobile client signs it raw)? */
export const verifyPeerSignature = (publicKey, nonce, sig) =>
  verify(publicKey, concat(AUTH_SIGNATURE_PREFIX, nonce), sig) || verify(publicKey, nonce, sig);

/**
 * A short code for an identity key that two people can compare in person:
 * the first 10 bytes of its SHA-256, as five groups of four hex digits.
 */
export function securityCode(publicKey) {
  const hex = Array.from(sha256(publicKey).slice(0, 10), (b) => b.toString(16).padStart(2, '0')).join('');
  return hex.match(/.{4}/g).join(' ');
}
