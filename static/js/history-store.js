// Offline history: the conversation list and the newest pages of each conversation,
// kept in IndexedDB so the app opens with history without a network, and resyncs with
// `after=<stored cursor>` when the network returns (PROTOCOL.md section 1).
//
// One database per user (`chat-history-<user id>`): signing out deletes it, and a start
// deletes any other user's, so someone else signing in on the same browser never sees
// it. Two object stores:
// - `conversations`: per conversation the payload the client knows (`session.ready`, the
//   REST list, live updates: title, last_seq, unread, read marker, preview) and its
//   members with their receipt markers;
// - `pages`: per conversation the newest messages (at most PAGE_CAP) in their current
//   version (edits and deletes applied), with the cursor they are complete up to.
// A page and its cursor are written in one record, so a stored cursor always describes
// the stored messages: every change up to it is applied to them.
//
// The store only reads a ChatClient's public API and listens to its events; it uses no
// DOM and no localStorage, so it works in a page and in a worker alike. Without
// IndexedDB, or when it fails (private mode, quota), it does nothing and the client
// works as without it.

import { done, request } from "./outbox.js";

const DB_PREFIX = "chat-history-";
const DB_VERSION = 1;
const CONVERSATIONS = "conversations";
const PAGES = "pages";
export const PAGE_CAP = 200; // messages kept per conversation (the newest)
export const CONVERSATION_CAP = 100; // conversations kept (the most recently active)
const WRITE_DELAY = 300; // ms: changes are written in batches

function deleteDatabase(name, waitMs = 3000) {
  // Resolves when deleted, failed, or after waitMs (another tab may hold it open a
  // moment; the deletion then completes once that tab closes it).
  return new Promise((resolve) => {
    let req;
    try {
      req = indexedDB.deleteDatabase(name);
    } catch {
      resolve(false);
      return;
    }
    const timer = setTimeout(() => resolve(false), waitMs);
    req.onsuccess = () => {
      clearTimeout(timer);
      resolve(true);
    };
    req.onerror = () => {
      clearTimeout(timer);
      resolve(false);
    };
  });
}

/** Return the page record to store for a conversation's state: its newest messages. */
export function pageRecord(id, state) {
  const messages = state.view();
  const kept = messages.slice(-PAGE_CAP);
  const trimmed = kept.length < messages.length;
  return {
    id,
    cursor: state.cursor,
    hasOlder: trimmed || state.hasOlder,
    oldestSeq: kept.length ? Number(kept[0].seq) : state.oldestSeq,
    messages: kept,
  };
}

/** One user's offline history in IndexedDB; every failure leaves it a no-op. */
export class HistoryStore {
  constructor(userId) {
    this.userId = Number(userId);
    this.name = `${DB_PREFIX}${this.userId}`;
    this.dbPromise = null;
    this.client = null;
    this.dirty = new Set(); // conversations whose page changed
    this.listDirty = false;
    this.removed = new Set();
    this.timer = null;
    this.writing = Promise.resolve();
    this.closed = false;
    this.warned = false;
  }

  db() {
    if (this.closed || !globalThis.indexedDB) return Promise.resolve(null);
    if (!this.dbPromise) {
      this.dbPromise = (async () => {
        const open = indexedDB.open(this.name, DB_VERSION);
        open.onupgradeneeded = () => {
          const db = open.result;
          const conversations = db.createObjectStore(CONVERSATIONS, { keyPath: "id" });
          conversations.createIndex("activity", "activity");
          db.createObjectStore(PAGES, { keyPath: "id" });
        };
        const db = await request(open);
        // Another tab deletes it (sign out): let go so the deletion is not blocked.
        db.onversionchange = () => {
          db.close();
          this.dbPromise = Promise.resolve(null);
        };
        return db;
      })().catch((error) => {
        this.#warn(error);
        return null;
      });
    }
    return this.dbPromise;
  }

  /** Return {conversations, pages} as stored (empty when there is nothing or no IndexedDB). */
  async read() {
    const db = await this.db();
    if (!db) return { conversations: [], pages: [] };
    try {
      const tx = db.transaction([CONVERSATIONS, PAGES], "readonly");
      const [conversations, pages] = await Promise.all([
        request(tx.objectStore(CONVERSATIONS).getAll()),
        request(tx.objectStore(PAGES).getAll()),
      ]);
      return { conversations, pages };
    } catch (error) {
      this.#warn(error);
      return { conversations: [], pages: [] };
    }
  }

  /**
   * Show what is stored in `client` (before it connects), then keep the store up to
   * date from its events. A stored conversation's page becomes its loaded window with
   * the stored cursor, so the client's first catch-up asks `after=cursor` (or, past its
   * reset limit, reloads the newest page).
   */
  async hydrate(client) {
    this.client = client;
    await this.#forgetOthers();
    const { conversations, pages } = await this.read();
    const byId = new Map(pages.map((p) => [Number(p.id), p]));
    for (const record of conversations) {
      const id = Number(record.id);
      const info = record.info;
      if (!info || typeof info !== "object") continue;
      const known = client.conversation(id);
      // The page's bootstrap may be fresher (online) or older (a cached page offline).
      if (!known || (Number(info.last_seq) || 0) > (Number(known.last_seq) || 0)) {
        client.adopt({ ...info, id });
      }
      if (Array.isArray(record.members) && !client.members.has(id)) {
        client.setMembers(id, record.members);
      }
      const page = byId.get(id);
      const state = client.stateOf(id);
      if (!page || state.loaded || !Array.isArray(page.messages)) continue;
      state.applyNewest(page.messages, page.hasOlder, page.cursor);
      if (page.hasOlder && page.oldestSeq !== null) state.oldestSeq = Number(page.oldestSeq);
      client.dispatchEvent(
        new CustomEvent("messages", { detail: { conversation: id, messages: [], via: "store" } }),
      );
    }
    if (conversations.length) client.dispatchEvent(new CustomEvent("conversations", { detail: {} }));
    this.#listen(client);
  }

  #listen(client) {
    const page = ({ detail }) => this.#touch(Number(detail.conversation));
    client.addEventListener("messages", page);
    client.addEventListener("reset", page);
    const members = () => {
      this.listDirty = true; // members (names, receipt markers) live with the conversation
      this.#schedule();
    };
    client.addEventListener("receipt", members);
    client.addEventListener("members", members);
    client.addEventListener("conversations", () => {
      this.listDirty = true;
      this.#schedule();
    });
    client.addEventListener("membership", ({ detail }) => {
      if (detail.reason === "left" || detail.reason === "removed") {
        const id = Number(detail.conversation);
        this.dirty.delete(id);
        this.removed.add(id);
        this.#schedule();
      }
    });
  }

  #touch(id) {
    if (!Number.isInteger(id)) return;
    this.dirty.add(id);
    this.#schedule();
  }

  #schedule() {
    if (this.closed || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.writing = this.writing.then(() => this.flush());
    }, WRITE_DELAY);
  }

  /** Write what changed since the last write (called after a short delay by itself). */
  async flush() {
    const client = this.client;
    if (!client || this.closed) return;
    const pages = [...this.dirty];
    const removed = [...this.removed];
    const list = this.listDirty;
    this.dirty.clear();
    this.removed.clear();
    this.listDirty = false;
    const db = await this.db();
    if (!db) return;
    try {
      const tx = db.transaction([CONVERSATIONS, PAGES], "readwrite");
      const conversations = tx.objectStore(CONVERSATIONS);
      const pageStore = tx.objectStore(PAGES);
      const ids = list ? client.conversationIds().slice(0, CONVERSATION_CAP) : [];
      for (const id of ids) conversations.put(this.#conversationRecord(id));
      for (const id of pages) {
        if (!client.active.has(id) || !client.conversation(id)) continue;
        const state = client.stateOf(id);
        if (state.loaded) pageStore.put(pageRecord(id, state));
        else pageStore.delete(id); // reset: the newest page is reloaded, then written
        if (!list) conversations.put(this.#conversationRecord(id));
      }
      for (const id of removed) {
        conversations.delete(id);
        pageStore.delete(id);
      }
      await done(tx);
      if (list) await this.#trim(db, new Set(ids));
    } catch (error) {
      this.#warn(error);
    }
  }

  #conversationRecord(id) {
    const info = this.client.conversation(id) || {};
    const members = this.client.members.get(id);
    return {
      id,
      activity: String(info.last_activity_at || ""),
      info,
      members: members ? [...members.values()] : null,
    };
  }

  /** Keep the most recently active conversations only (and none the user left). */
  async #trim(db, keep) {
    const tx = db.transaction([CONVERSATIONS, PAGES], "readwrite");
    const conversations = tx.objectStore(CONVERSATIONS);
    const keys = await request(conversations.getAllKeys());
    const connected = this.client.connected; // the list is the server's: drop the rest
    let excess = keys.length - CONVERSATION_CAP;
    for (const key of keys) {
      const gone = connected && !this.client.active.has(Number(key));
      if (gone || (excess > 0 && !keep.has(Number(key)))) {
        conversations.delete(key);
        tx.objectStore(PAGES).delete(key);
        excess -= 1;
      }
    }
    await done(tx);
  }

  /** Delete another user's history left on this browser (not signed out properly). */
  async #forgetOthers() {
    if (!globalThis.indexedDB?.databases) return;
    try {
      for (const { name } of await indexedDB.databases()) {
        if (name?.startsWith(DB_PREFIX) && name !== this.name) await deleteDatabase(name);
      }
    } catch (error) {
      this.#warn(error);
    }
  }

  /** Delete this user's history (sign out); nothing is written after. */
  async destroy() {
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = null;
    if (!globalThis.indexedDB) return;
    const db = await (this.dbPromise || Promise.resolve(null));
    db?.close();
    this.dbPromise = null;
    await this.writing.catch(() => {});
    await deleteDatabase(this.name);
  }

  #warn(error) {
    // The app works without it (as before this store existed): note it once, quietly.
    if (this.warned) return;
    this.warned = true;
    console.info("offline history unavailable:", error?.name || error);
  }
}
