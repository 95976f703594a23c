// Browser scenarios of the web client, driven by playwright-core on Debian's
// chromium. Run by tests/web.rs against a real server:
//   node web/tests/browser.mjs <http url> <name of a Rust echo bot> <artefact dir>
// The bot (the crate's own client; "-" for none) answers every message with
// "echo: <text>", and "greet <name>" by writing "hello from rust" to <name>.
// Ann's browser has crypto.subtle removed by an init script; Ben's opens the
// page as http://classroom-server.test:<port>/ (mapped to 127.0.0.1), which,
// like a LAN address, is not a secure context: no WebCrypto at all.
// Prints "ok - <scenario>" per scenario; exits non-zero at the first failure.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const [url, botName, artefacts] = process.argv.slice(2);
if (!url || !botName || !artefacts) {
  console.error('usage: browser.mjs <http url> <bot name> <artefact dir>');
  process.exit(2);
}
mkdirSync(artefacts, { recursive: true });
// A hung browser must not hang the test suite (playwright closes it at exit).
setTimeout(() => {
  console.error('not ok - the browser scenarios did not finish within 120 s');
  process.exit(1);
}, 120000).unref();
const WAIT = 15000;
const LAN_HOST = 'classroom-server.test';
const lanUrl = (() => {
  const u = new URL(url);
  u.hostname = LAN_HOST;
  return u.toString();
})();
const suffix = process.env.CHAT_WEB_NAME_SUFFIX ?? `_${Math.random().toString(36).slice(2, 7)}`;
const ann = `ann${suffix}`;
const ben = `ben${suffix}`;
const password = 'correct horse battery';
const problems = [];
let revalidated = 0;

const browser = await chromium.launch({
  executablePath: process.env.CHAT_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-dev-shm-usage',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
    // A name that is not localhost: pages from it are not a secure context,
    // like http://<LAN address>:12345/ in a classroom.
    `--host-resolver-rules=MAP ${LAN_HOST} 127.0.0.1`,
  ],
});

function ok(what) {
  console.log(`ok - ${what}`);
}

async function newPage(context, label, address = url) {
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.on('console', (msg) => {
    if (msg.type() === 'error' || msg.type() === 'warning') problems.push(`${label} console ${msg.type()}: ${msg.text()}`);
  });
  page.on('pageerror', (error) => problems.push(`${label} page error: ${error.message}`));
  page.on('response', (response) => {
    if (response.status() === 304) revalidated++;
  });
  await page.goto(address);
  return page;
}

async function shot(page, name) {
  await page.screenshot({ path: join(artefacts, `${name}.png`) });
}

async function connected(page, name) {
  await page.locator('#status', { hasText: `Connected as ${name}` }).waitFor();
}

async function authenticate(page, name, action) {
  // By accessible names, as a screen reader user finds them.
  await page.getByLabel('User name').fill(name);
  await page.getByLabel('Password').fill(action === 'wrong' ? 'not the password' : password);
  const button = action === 'register' || action === 'taken' ? 'Create account' : 'Log in';
  await page.getByRole('button', { name: button, exact: true }).click();
}

async function open(page, peer) {
  const back = page.locator('#back');
  if (await back.isVisible()) await back.click();
  await page.locator(`button.user[data-user="${peer}"]`).click();
  await page.locator('#peer-name', { hasText: peer }).waitFor();
}

async function say(page, text) {
  await page.getByLabel('Message', { exact: true }).fill(text);
  await page.getByRole('button', { name: 'Send' }).click();
  await page.locator('#messages li.mine', { hasText: text }).last().waitFor();
}

async function sees(page, text) {
  await page.locator('#messages li.theirs', { hasText: text }).first().waitFor();
}

async function online(page, peer, isOnline) {
  const label = `${peer}, ${isOnline ? 'online' : 'offline'}`;
  await page.locator(`button.user[data-user="${peer}"][aria-label^="${label}"]`).waitFor();
}

try {
  // Ann's browser has no WebCrypto, as on http://<LAN address>.
  const annContext = await browser.newContext({ viewport: { width: 1100, height: 700 } });
  await annContext.addInitScript(() => {
    delete Crypto.prototype.subtle;
    // Lets the test cut the page's connection (a server restart, a Wi-Fi drop).
    const NativeWebSocket = window.WebSocket;
    window.testSockets = [];
    window.WebSocket = class extends NativeWebSocket {
      constructor(...args) {
        super(...args);
        window.testSockets.push(this);
      }
    };
  });
  // Ben uses a phone-sized screen.
  const benContext = await browser.newContext({ viewport: { width: 390, height: 780 }, isMobile: true, hasTouch: true });
  const strangerContext = await browser.newContext();

  let annPage = await newPage(annContext, 'ann');
  if ((await annPage.evaluate(() => typeof crypto.subtle)) !== 'undefined') throw new Error('crypto.subtle was not removed');
  await annPage.locator('#auth-view').waitFor();
  await shot(annPage, '01-login');
  await authenticate(annPage, ann, 'register');
  await connected(annPage, ann);
  ok('a browser without crypto.subtle registers and is logged in');

  let benPage = await newPage(benContext, 'ben', lanUrl);
  const benOrigin = await benPage.evaluate(() => ({ secure: isSecureContext, subtle: typeof crypto.subtle }));
  if (benOrigin.secure || benOrigin.subtle !== 'undefined') throw new Error(`${lanUrl} is a secure context`);
  await authenticate(benPage, ben, 'register');
  await connected(benPage, ben);
  ok(`a second browser registers from ${LAN_HOST}, an origin that is not a secure context`);

  const stranger = await newPage(strangerContext, 'stranger');
  await authenticate(stranger, ann, 'taken');
  await stranger.locator('#auth-error', { hasText: 'taken' }).waitFor();
  await authenticate(stranger, ann, 'wrong');
  await stranger.locator('#auth-error', { hasText: 'Wrong user name or password' }).waitFor();
  await shot(stranger, '02-wrong-password');
  ok('a taken name and a wrong password are told apart in plain words');

  await online(annPage, ben, true);
  await open(annPage, ben);
  await say(annPage, 'Hello Ben, this is end-to-end encrypted.');
  await open(benPage, ann);
  await sees(benPage, 'Hello Ben, this is end-to-end encrypted.');
  await benPage.locator('#message').pressSequentially('Hi Ann');
  await annPage.locator('#typing', { hasText: `${ben} is typing` }).waitFor();
  await benPage.locator('#composer button[type=submit]').click();
  await sees(annPage, 'Hi Ann');
  await annPage.locator('#typing', { hasText: 'typing' }).waitFor({ state: 'hidden' }).catch(() => {});
  await annPage.locator('#peer-state', { hasText: 'end-to-end encrypted' }).waitFor();
  ok('two browsers chat both ways, with the typing indicator');

  if (botName !== '-') {
    await online(annPage, botName, true);
    await open(annPage, botName);
    await say(annPage, 'hello bot from the browser');
    await sees(annPage, 'echo: hello bot from the browser');
    ok('a browser and the Rust client chat both ways');
    // The bot starts a session of its own with Ben (Ben's page answers the handshake).
    await say(annPage, `greet ${ben}`);
    await open(benPage, botName);
    await sees(benPage, 'hello from rust');
    await say(benPage, 'hi rust');
    await sees(benPage, 'echo: hi rust');
    ok('the Rust client starts a session with a browser, and they chat both ways');
  }
  await open(annPage, ben);
  await shot(annPage, '03-chat-desktop');
  await shot(benPage, '04-chat-phone');
  await benPage.getByRole('button', { name: 'Back to people' }).click();
  await shot(benPage, '04b-people-phone');

  await benPage.close();
  await online(annPage, ben, false);
  await say(annPage, 'Written while you were away');
  await annPage.locator('#messages li.mine', { hasText: 'stored on the server' }).waitFor();
  benPage = await newPage(benContext, 'ben', lanUrl);
  await connected(benPage, ben);
  // Ben presses Ann's name, and a message from her is shown (the list is
  // drawn again) before he lets go: the tap must still open the chat.
  const annButton = benPage.locator(`button.user[data-user="${ann}"]`);
  await annButton.waitFor();
  const box = await annButton.boundingBox();
  await benPage.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  await benPage.mouse.down();
  await say(annPage, 'Sent while you pressed my name');
  await annButton.locator('.badge', { hasText: '2' }).waitFor();
  await benPage.mouse.up();
  await benPage.locator('#peer-name', { hasText: ann }).waitFor();
  await sees(benPage, 'Written while you were away');
  await sees(benPage, 'Sent while you pressed my name');
  ok('a message to an offline browser user arrives at the next login (logged in again with the kept key)');
  ok('a name pressed while a message arrives still opens the chat');

  await annPage.reload();
  await connected(annPage, ann);
  await open(annPage, ben);
  await say(annPage, 'Still me after a reload');
  await sees(benPage, 'Still me after a reload');
  await say(benPage, 'Welcome back');
  await sees(annPage, 'Welcome back');
  ok('a reload logs in again with the key kept in IndexedDB and the chat goes on');
  await shot(annPage, '05-after-reload');

  await annContext.setOffline(true);
  await annPage.evaluate(() => window.testSockets.forEach((socket) => socket.close()));
  await annPage.locator('#status', { hasText: 'Connection lost' }).waitFor();
  await shot(annPage, '06-connection-lost');
  await annContext.setOffline(false);
  await connected(annPage, ann);
  await say(annPage, 'Back online');
  await sees(benPage, 'Back online');
  ok('a lost connection is shown and comes back by itself');

  await authenticate(stranger, ben, 'login');
  await connected(stranger, ben);
  await benPage.locator('#auth-error', { hasText: 'logged in somewhere else' }).waitFor();
  ok('a page replaced by a login elsewhere says so');
  await open(stranger, ann);
  await say(stranger, 'New device here');
  await sees(annPage, 'New device here');
  await annPage.locator('#key-warning', { hasText: 'security key changed' }).waitFor();
  await say(annPage, 'I see your key changed');
  await sees(stranger, 'I see your key changed');
  await annPage.getByText('Check security codes').click();
  const annSeesBen = await annPage.locator('#peer-code').textContent();
  await stranger.getByText('Check security codes').click();
  const benSeesHimself = await stranger.locator('#my-code').textContent();
  if (annSeesBen !== benSeesHimself || !/^([0-9a-f]{4} ){4}[0-9a-f]{4}$/.test(annSeesBen)) {
    throw new Error(`security codes differ: ${annSeesBen} / ${benSeesHimself}`);
  }
  await shot(annPage, '07-key-changed');
  ok('a peer whose key changed is chatted with, under a visible warning, and the security codes match');

  await annPage.locator('#logout').click();
  await annPage.locator('#auth-view').waitFor();
  await annPage.reload();
  await annPage.locator('#auth-view').waitFor();
  if ((await annPage.locator('#status').textContent()) !== 'Not logged in') throw new Error('logged in again after logging out');
  ok('log out forgets the key: a reload asks for the password again');

  if (!revalidated) throw new Error('no asset was revalidated with its ETag (304)');
  ok(`cached assets are revalidated: ${revalidated} answers 304 Not Modified`);

  if (problems.length) throw new Error(`console problems:\n${problems.join('\n')}`);
  ok('no console errors or warnings');
  await browser.close();
  console.log('browser scenarios passed');
} catch (error) {
  console.error(`not ok - ${error.message}`);
  if (problems.length) console.error(problems.join('\n'));
  for (const context of browser.contexts()) {
    for (const [i, page] of context.pages().entries()) {
      await page.screenshot({ path: join(artefacts, `failure-${browser.contexts().indexOf(context)}-${i}.png`) }).catch(() => {});
    }
  }
  await browser.close();
  process.exit(1);
}
