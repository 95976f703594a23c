// The page: log in or register, then chat end to end with anyone listed.
// Everything a person sees is set with textContent (never HTML from peers).
import { Channel, nextCommand } from './channel.js';
import { PeerSession, HANDSHAKE_STALL_MS } from './peer.js';
import * as c from './crypto.js';
import * as store from './store.js';

const $ = (id) => document.getElementById(id);
const lower = (name) => name.toLowerCase();
const MAX_MESSAGES_PER_PEER = 500;
const TYPING_IDLE_MS = 3000;

const state = {
  me: null,
  identity: null,
  channel: null,
  users: [],
  sessions: new Map(),
  conversations: new Map(),
  typing: new Map(),
  unread: new Map(),
  knownKeys: {},
  warnings: new Map(),
  selected: null,
  loggedInElsewhere: false,
  reconnectDelay: 1000,
  reconnectTimer: null,
  typingTo: null,
  typingTimer: null,
};

function wsUrl() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/`;
}

function setStatus(text, kind = '') {
  const el = $('status');
  el.textContent = text;
  el.dataset.kind = kind;
}

function showAuth(error = '') {
  $('auth-view').hidden = false;
  $('chat-view').hidden = true;
  $('logout').hidden = true;
  $('auth-error').textContent = error;
  setStatus(error ? '' : 'Not logged in');
  setBusy(false);
}

function setBusy(busy) {
  for (const id of ['login-btn', 'register-btn']) $(id).disabled = busy;
}

// ---- authentication -------------------------------------------------------

const identityKey = (name) => `identity:${lower(name)}`;

function authStatusText(reply, registering) {
  if (reply.status === 'LOGIN_FAILED') {
    return registering ? 'Could not log in after registering.' : 'Wrong user name or password.';
  }
  if (reply.status === 'REGISTER_FAILED:USERNAME_EXISTS') return 'That user name is taken: choose another.';
  return reply.message ? `The server refused: ${reply.message}` : `The server refused (${reply.status}).`;
}

async function openChannel() {
  const channel = await Channel.open(wsUrl(), { onCommand: () => {}, onClose: () => {} });
  return channel;
}

async function ask(channel, command) {
  const answer = nextCommand(channel, (cmd) => cmd.type === 'auth_response' || cmd.type === 'LOGIN_CHALLENGE');
  channel.send(command);
  return answer;
}

async function passwordLogin(username, password) {
  const identity = c.newIdentity();
  const channel = await openChannel();
  const reply = await ask(channel, {
    type: 'LOGIN',
    username,
    password,
    new_public_key: c.b64encode(identity.publicKey),
  });
  if (reply.status !== 'LOGIN_SUCCESS') {
    channel.close();
    throw new Error(authStatusText(reply, false));
  }
  await store.put(identityKey(username), c.b64encode(identity.seed));
  return { channel, identity };
}

async function register(username, password) {
  const identity = c.newIdentity();
  const channel = await openChannel();
  const reply = await ask(channel, {
    type: 'REGISTER',
    username,
    password,
    public_key: c.b64encode(identity.publicKey),
  });
  channel.close();
  if (reply.status !== 'REGISTER_SUCCESS') throw new Error(authStatusText(reply, true));
  await store.put(identityKey(username), c.b64encode(identity.seed));
  return challengeLogin(username);
}

/** Logs in with the identity key kept in this browser; null if there is none. */
async function challengeLogin(username) {
  const seed = await store.get(identityKey(username));
  if (!seed) return null;
  const identity = c.identityFromSeed(c.b64decode(seed));
  const channel = await openChannel();
  const challenge = await ask(channel, { type: 'LOGIN_CHALLENGE_REQUEST', username });
  if (challenge.type !== 'LOGIN_CHALLENGE') {
    channel.close();
    throw new Error(authStatusText(challenge, false));
  }
  const signature = c.sign(identity.seed, c.b64decode(challenge.nonce));
  const reply = await ask(channel, { type: 'LOGIN_CHALLENGE_RESPONSE', username, signature: c.b64encode(signature) });
  if (reply.status !== 'LOGIN_SUCCESS') {
    channel.close();
    const error = new Error('This browser\'s key for that user is no longer valid: log in with the password.');
    error.keyRejected = true;
    throw error;
  }
  return { channel, identity };
}

async function onAuthSubmit(event, registering) {
  event.preventDefault();
  const username = $('username').value.trim();
  const password = $('password').value;
  if (!username || !password) {
    $('auth-error').textContent = 'Enter a user name and a password.';
    return;
  }
  setBusy(true);
  $('auth-error').textContent = '';
  setStatus('Connecting…', 'busy');
  try {
    const session = registering ? await register(username, password) : await passwordLogin(username, password);
    $('password').value = '';
    await enterChat(username, session);
  } catch (e) {
    showAuth(e.message || 'Could not reach the server.');
  }
}

// ---- the chat session -----------------------------------------------------

async function enterChat(username, { channel, identity }) {
  const sameUser = state.me && lower(state.me) === lower(username);
  if (!sameUser) resetChatState();
  state.me = username;
  state.identity = identity;
  state.loggedInElsewhere = false;
  state.reconnectDelay = 1000;
  await store.put('last_user', username);
  if (!sameUser) {
    state.knownKeys = (await store.get(`known:${lower(username)}`)) || {};
    const saved = (await store.get(`peers:${lower(username)}`)) || {};
    for (const [peer, keys] of Object.entries(saved)) session(peer).restore(keys);
  } else {
    for (const s of state.sessions.values()) {
      s.identity = identity;
      if (s.inProgress()) s.phase = { name: 'idle' };
    }
  }
  attach(channel);
  channel.send({ type: 'REQUEST_USER_LIST' });
  channel.send({ type: 'REQUEST_OFFLINE_MESSAGES' });
  $('auth-view').hidden = true;
  $('chat-view').hidden = false;
  $('logout').hidden = false;
  setStatus(`Connected as ${username}`, 'ok');
  render();
}

function resetChatState() {
  state.sessions.clear();
  state.conversations.clear();
  state.typing.clear();
  state.unread.clear();
  state.warnings.clear();
  state.users = [];
  state.selected = null;
}

function attach(channel) {
  state.channel = channel;
  channel.onCommand = onCommand;
  channel.onClose = () => {
    if (state.channel === channel) connectionLost();
  };
}

function connectionLost() {
  state.channel = null;
  state.typing.clear();
  if (state.loggedInElsewhere) {
    showAuth('You logged in somewhere else, so this page was disconnected.');
    return;
  }
  const seconds = Math.round(state.reconnectDelay / 1000);
  setStatus(`Connection lost: reconnecting in ${seconds} s…`, 'error');
  render();
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = setTimeout(reconnect, state.reconnectDelay);
  state.reconnectDelay = Math.min(state.reconnectDelay * 2, 30000);
}

async function reconnect() {
  if (!state.me) return;
  setStatus('Reconnecting…', 'busy');
  try {
    const session = await challengeLogin(state.me);
    if (!session) throw Object.assign(new Error('no key'), { keyRejected: true });
    await enterChat(state.me, session);
  } catch (e) {
    if (e.keyRejected) {
      state.me = null;
      showAuth(e.message);
    } else {
      connectionLost();
    }
  }
}

function send(command) {
  return state.channel ? state.channel.send(command) : false;
}

function userOnline(name) {
  const user = state.users.find((u) => lower(u.username) === lower(name));
  return Boolean(user && user.isOnline);
}

function conversation(peer) {
  const key = lower(peer);
  if (!state.conversations.has(key)) state.conversations.set(key, []);
  return state.conversations.get(key);
}

function addMessage(peer, entry) {
  const list = conversation(peer);
  list.push(entry);
  if (list.length > MAX_MESSAGES_PER_PEER) list.splice(0, list.length - MAX_MESSAGES_PER_PEER);
  if (!entry.mine && (!state.selected || lower(state.selected) !== lower(peer))) {
    state.unread.set(lower(peer), (state.unread.get(lower(peer)) || 0) + 1);
  }
}

function markQueued(peer, status) {
  for (const m of conversation(peer)) if (m.mine && m.status === 'queued') m.status = status;
}

function session(peer) {
  const key = lower(peer);
  if (!state.sessions.has(key)) {
    const s = new PeerSession(state.me, peer, state.identity, {
      send: (type, payload) => send({ type, to: s.peer, payload }),
      fetchIdentity: () => send({ type: 'GET_PUBLIC_KEY', target_username: s.peer }),
      ready: () => {
        markQueued(s.peer, userOnline(s.peer) ? 'sent' : 'stored');
        savePeers();
        render();
      },
      message: (text) => {
        addMessage(s.peer, { mine: false, text, at: new Date() });
        state.typing.delete(lower(s.peer));
        render();
      },
      failed: (reason) => {
        markQueued(s.peer, 'failed');
        state.warnings.set(lower(s.peer), `Secure session with ${s.peer} failed: ${reason}.`);
        render();
      },
    });
    state.sessions.set(key, s);
  }
  return state.sessions.get(key);
}

function savePeers() {
  const saved = {};
  for (const s of state.sessions.values()) {
    const keys = s.saved();
    if (keys) saved[s.peer] = keys;
  }
  store.put(`peers:${lower(state.me)}`, saved);
}

function onCommand(cmd) {
  switch (cmd.type) {
    case 'user_list_update':
      if (Array.isArray(cmd.users)) onUserList(cmd.users);
      break;
    case 'E2E_HANDSHAKE':
    case 'E2E_AUTH':
    case 'E2E_MSG':
      if (typeof cmd.from === 'string') {
        const s = session(cmd.from);
        s.peer = cmd.from;
        s.handle(cmd.type, cmd.payload);
        if (cmd.type === 'E2E_HANDSHAKE') render();
      }
      break;
    case 'PUBLIC_KEY_RESPONSE':
      onPublicKey(cmd.username, cmd.public_key);
      break;
    case 'TYPING_STATUS_UPDATE':
      if (typeof cmd.from === 'string') {
        if (cmd.isTyping === true) state.typing.set(lower(cmd.from), true);
        else state.typing.delete(lower(cmd.from));
        renderConversation();
      }
      break;
    case 'ERROR':
      onError(String(cmd.message || ''));
      break;
    default:
      break;
  }
}

function onUserList(users) {
  state.users = users
    .filter((u) => u && typeof u.username === 'string')
    .map((u) => ({ username: u.username, isOnline: u.isOnline === true }));
  for (const s of state.sessions.values()) {
    if (!s.outbox.length) continue;
    if (!userOnline(s.peer)) {
      s.outbox = [];
      s.phase = { name: 'idle' };
      markQueued(s.peer, 'peer-left');
    } else if (!s.inProgress()) {
      s.start();
    }
  }
  render();
}

/** Restarts a handshake that got no answer while messages wait for it. */
function watchHandshake(peer) {
  setTimeout(() => {
    const s = state.sessions.get(lower(peer));
    if (s && s.inProgress() && s.outbox.length && userOnline(peer) && state.channel) {
      s.start();
      watchHandshake(peer);
    }
  }, HANDSHAKE_STALL_MS + 100);
}

function onPublicKey(username, publicKey) {
  if (typeof username !== 'string' || typeof publicKey !== 'string') return;
  const key = lower(username);
  const known = state.knownKeys[key];
  if (known && known !== publicKey) {
    state.warnings.set(
      key,
      `${username}'s security key changed. This happens when they log in with a password or on a new device; ` +
        'if you did not expect it, compare security codes with them before sharing secrets.',
    );
  }
  state.knownKeys[key] = publicKey;
  store.put(`known:${lower(state.me)}`, state.knownKeys);
  const s = state.sessions.get(key);
  if (s) s.setPeerIdentity(publicKey);
  render();
}

function onError(message) {
  if (message === 'logged in elsewhere') {
    state.loggedInElsewhere = true;
    return;
  }
  if (state.selected) {
    addMessage(state.selected, { notice: true, text: `The server said: ${message}`, at: new Date() });
    renderConversation();
  }
}

// ---- sending ---------------------------------------------------------------

function stopTyping() {
  clearTimeout(state.typingTimer);
  if (state.typingTo) send({ type: 'STOP_TYPING', to: state.typingTo });
  state.typingTo = null;
}

function onComposerInput() {
  const peer = state.selected;
  if (!peer || !state.channel) return;
  if (!$('message').value) return stopTyping();
  if (state.typingTo !== peer) {
    stopTyping();
    if (userOnline(peer)) send({ type: 'START_TYPING', to: peer });
    state.typingTo = peer;
  }
  clearTimeout(state.typingTimer);
  state.typingTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
}

function onSend(event) {
  event.preventDefault();
  const peer = state.selected;
  const text = $('message').value;
  if (!peer || !text.trim()) return;
  stopTyping();
  const online = userOnline(peer);
  if (!state.channel) {
    addMessage(peer, { notice: true, text: 'Not sent: the connection is down. It will come back by itself.', at: new Date() });
    renderConversation();
    return;
  }
  const outcome = session(peer).sendMessage(text, online);
  if (outcome === 'full') {
    addMessage(peer, { notice: true, text: `Not sent: too many messages are waiting for ${peer}'s secure session.`, at: new Date() });
  } else if (outcome === 'no-keys') {
    addMessage(peer, {
      notice: true,
      text: `Not sent: ${peer} is offline and you have not exchanged keys yet. Send it when ${peer} is online.`,
      at: new Date(),
    });
  } else {
    const status = outcome === 'queued' ? 'queued' : online ? 'sent' : 'stored';
    if (outcome === 'queued') watchHandshake(peer);
    addMessage(peer, { mine: true, text, status, at: new Date() });
    $('message').value = '';
    if (outcome === 'sent') savePeers();
  }
  renderConversation();
}

// ---- rendering ---------------------------------------------------------------

const STATUS_TEXT = {
  sent: 'sent, end-to-end encrypted',
  queued: 'waiting for a secure session…',
  stored: 'peer offline: stored on the server until they log in',
  failed: 'not sent: the secure session failed',
  'peer-left': 'not sent: they went offline before the secure session was ready',
};

function render() {
  renderUsers();
  renderConversation();
}

function renderUsers() {
  let unreadTotal = 0;
  for (const count of state.unread.values()) unreadTotal += count;
  document.title = unreadTotal ? `(${unreadTotal}) Secure chat` : 'Secure chat';
  const list = $('user-list');
  const others = state.users.filter((u) => !state.me || lower(u.username) !== lower(state.me));
  const shown = new Map();
  for (const button of list.querySelectorAll('button.user')) shown.set(button.dataset.user, button.parentElement);
  const items = others.length ? others.map((user) => userItem(shown.get(user.username), user)) : [emptyItem()];
  // Update in place, moving only what is out of order: a button replaced
  // between the press and the release of a click (a presence update or a
  // message arriving) would lose that click.
  items.forEach((item, i) => {
    if (list.children[i] !== item) list.insertBefore(item, list.children[i] || null);
  });
  while (list.children.length > items.length) list.lastElementChild.remove();
}

function emptyItem() {
  const li = document.createElement('li');
  li.className = 'empty';
  li.textContent = 'Nobody else has registered yet.';
  return li;
}

/** The list item of `user`: `li` (already shown) brought up to date, or a new one. */
function userItem(li, user) {
  if (!li) {
    li = document.createElement('li');
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'user';
    button.dataset.user = user.username;
    const dot = document.createElement('span');
    dot.setAttribute('aria-hidden', 'true');
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = user.username;
    const badge = document.createElement('span');
    badge.className = 'badge';
    badge.setAttribute('aria-hidden', 'true');
    button.append(dot, name, badge);
    button.addEventListener('click', () => selectPeer(user.username));
    li.append(button);
  }
  const button = li.firstElementChild;
  const [dot, , badge] = button.children;
  const unread = state.unread.get(lower(user.username)) || 0;
  const presence = !state.channel ? 'status unknown while reconnecting' : user.isOnline ? 'online' : 'offline';
  button.setAttribute('aria-label', `${user.username}, ${presence}${unread ? `, ${unread} unread` : ''}`);
  if (state.selected && lower(state.selected) === lower(user.username)) button.setAttribute('aria-current', 'true');
  else button.removeAttribute('aria-current');
  dot.className = state.channel && user.isOnline ? 'dot online' : 'dot';
  badge.hidden = !unread;
  badge.textContent = unread ? String(unread) : '';
  return li;
}

function selectPeer(name) {
  stopTyping();
  state.selected = name;
  state.unread.delete(lower(name));
  document.body.classList.add('show-conversation');
  render();
  $('message').focus();
}

function peerStateText(peer) {
  const s = state.sessions.get(lower(peer));
  const online = userOnline(peer);
  const secure = s && s.isReady() ? 'end-to-end encrypted' : s && s.inProgress() ? 'setting up encryption…' : '';
  if (!state.channel) return 'you are offline';
  if (online) return secure ? `online · ${secure}` : 'online';
  return s && s.isReady()
    ? 'offline · messages are stored until they log in'
    : 'offline · you can write once you have talked while both online';
}

/** Both security codes, once the peer's identity key is known. */
function renderCodes(peer) {
  const known = peer && state.knownKeys[lower(peer)];
  $('codes').hidden = !known;
  if (!known) return;
  $('my-code').textContent = c.securityCode(state.identity.publicKey);
  $('peer-code-label').textContent = `${peer}'s`;
  try {
    $('peer-code').textContent = c.securityCode(c.b64decode(known));
  } catch {
    $('peer-code').textContent = 'unreadable key';
  }
}

function renderConversation() {
  const peer = state.selected;
  $('composer').hidden = !peer;
  $('peer-name').textContent = peer || 'Choose someone to chat with';
  $('peer-state').textContent = peer ? peerStateText(peer) : '';
  const warning = peer ? state.warnings.get(lower(peer)) : null;
  $('key-warning').hidden = !warning;
  $('key-warning').textContent = warning || '';
  $('typing').textContent = peer && state.typing.get(lower(peer)) ? `${peer} is typing…` : '';
  renderCodes(peer);
  const list = $('messages');
  list.replaceChildren();
  for (const m of peer ? conversation(peer) : []) {
    const li = document.createElement('li');
    li.className = m.notice ? 'notice' : m.mine ? 'mine' : 'theirs';
    const text = document.createElement('p');
    text.className = 'text';
    text.textContent = m.text;
    const meta = document.createElement('p');
    meta.className = 'meta';
    const time = m.at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    meta.textContent = m.mine ? `${time} · ${STATUS_TEXT[m.status] || ''}` : m.notice ? time : `${peer} · ${time}`;
    li.append(text, meta);
    list.append(li);
  }
  list.scrollTop = list.scrollHeight;
}

/** Logs out and forgets this user's keys here (classroom computers are shared). */
async function logout() {
  const channel = state.channel;
  const me = state.me;
  state.me = null;
  state.channel = null;
  clearTimeout(state.reconnectTimer);
  if (channel) channel.close();
  await store.remove('last_user');
  if (me) {
    await store.remove(identityKey(me));
    await store.remove(`peers:${lower(me)}`);
  }
  resetChatState();
  document.body.classList.remove('show-conversation');
  showAuth();
}

// ---- start -------------------------------------------------------------------

async function start() {
  $('auth-form').addEventListener('submit', (e) => onAuthSubmit(e, false));
  $('register-btn').addEventListener('click', (e) => {
    if ($('auth-form').reportValidity()) onAuthSubmit(e, true);
  });
  $('composer').addEventListener('submit', onSend);
  $('message').addEventListener('input', onComposerInput);
  $('logout').addEventListener('click', logout);
  $('back').addEventListener('click', () => {
    document.body.classList.remove('show-conversation');
    stopTyping();
  });
  const last = await store.get('last_user');
  if (!last) return showAuth();
  setStatus('Connecting…', 'busy');
  $('username').value = last;
  try {
    const session = await challengeLogin(last);
    if (!session) return showAuth();
    await enterChat(last, session);
  } catch (e) {
    showAuth(e.keyRejected ? e.message : 'Could not reach the server: try again.');
  }
}

start();
