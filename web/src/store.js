// What the browser keeps between visits, in IndexedDB: the identity key of
// each user who logged in here, the last user, peers' identity keys seen, and
// the E2EE keys of established peer sessions (so offline messages can be read
// at the next login).
const DB_NAME = 'chat_server_web';
const STORE = 'kv';
let dbPromise = null;
const memory = new Map();

function db() {
  if (!dbPromise) {
    dbPromise = new Promise((resolve) => {
      if (typeof indexedDB === 'undefined') return resolve(null);
      const request = indexedDB.open(DB_NAME, 1);
      request.onupgradeneeded = () => request.result.createObjectStore(STORE);
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => resolve(null);
    });
  }
  return dbPromise;
}

function request(mode, action) {
  return db().then(
    (database) =>
      new Promise((resolve, reject) => {
        const tx = database.transaction(STORE, mode);
        const req = action(tx.objectStore(STORE));
        tx.oncomplete = () => resolve(req.result);
        tx.onerror = () => reject(tx.error);
      }),
  );
}

/** The value under `key`, or undefined. */
export async function get(key) {
  if (!(await db())) return memory.get(key);
  return request('readonly', (s) => s.get(key));
}

export async function put(key, value) {
  if (!(await db())) return void memory.set(key, value);
  await request('readwrite', (s) => s.put(value, key));
}

export async function remove(key) {
  if (!(await db())) return void memory.delete(key);
  await request('readwrite', (s) => s.delete(key));
}
