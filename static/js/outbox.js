// The offline outbox: messages not yet acknowledged, kept in IndexedDB so they survive
// a reload or a crash. An entry keeps its `client_msg_id` for its whole life; every
// retry repeats it, which is what makes a retry safe (PROTOCOL.md section 2).

const DB_NAME = "chat";
const DB_VERSION = 1;
const STORE = "outbox";

/** Settle with an IndexedDB request's result (also used by history-store.js). */
export function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

/** Settle when an IndexedDB transaction is complete, fail when it is aborted. */
export function done(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onabort = tx.onerror = () => reject(tx.error || new Error("transaction aborted"));
  });
}

/** A store of outbox entries for one user; falls back to memory without IndexedDB. */
export class OutboxStore {
  constructor(userId) {
    this.userId = userId;
    this.memory = new Map();
    this.dbPromise = null;
  }

  db() {
    if (!("indexedDB" in globalThis)) return Promise.resolve(null);
    if (!this.dbPromise) {
      const open = indexedDB.open(DB_NAME, DB_VERSION);
      open.onupgradeneeded = () => {
        const store = open.result.createObjectStore(STORE, { keyPath: "client_msg_id" });
        store.createIndex("user", "user");
      };
      this.dbPromise = request(open).catch(() => null); // private mode: memory only
    }
    return this.dbPromise;
  }

  /** Return this user's entries, oldest first. */
  async all() {
    const db = await this.db();
    if (!db) return [...this.memory.values()];
    const tx = db.transaction(STORE, "readonly");
    const rows = await request(tx.objectStore(STORE).index("user").getAll(this.userId));
    return rows.sort((a, b) => a.position - b.position);
  }

  /** Write an entry (insert or replace). */
  async put(entry) {
    const row = { ...entry, user: this.userId };
    this.memory.set(row.client_msg_id, row);
    const db = await this.db();
    if (!db) return;
    const tx = db.transaction(STORE, "readwrite");
    tx.objectStore(STORE).put(row);
    await done(tx);
  }

  /** Remove an entry (acknowledged or discarded). */
  async delete(clientMsgId) {
    this.memory.delete(clientMsgId);
    const db = await this.db();
    if (!db) return;
    const tx = db.transaction(STORE, "readwrite");
    tx.objectStore(STORE).delete(clientMsgId);
    await done(tx);
  }

  /** Remove every entry of this user (log out). */
  async clear() {
    this.memory.clear();
    const db = await this.db();
    if (!db) return;
    const tx = db.transaction(STORE, "readwrite");
    const store = tx.objectStore(STORE);
    const keys = await request(store.index("user").getAllKeys(this.userId));
    for (const key of keys) store.delete(key);
    await done(tx);
  }
}
