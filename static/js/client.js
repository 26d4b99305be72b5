// The browser client of PROTOCOL.md sections 1-3: one WebSocket, cursors per
// conversation, gap repair, reconnects with full-jitter backoff, and the offline outbox.
// It ports chatclient/client.py rule by rule (chatclient/README.md says why each rule is
// there); the UI listens to its events and never touches the socket.
//
// Before the first connection, the offline history (history-store.js, optional) puts the
// stored conversations and their newest pages in place, each with the cursor it is
// complete up to: the app shows history at once, and step 2 fetches `after=cursor`.
//
// What a connection lives through:
// 1. Open the socket (the session cookie authenticates it; the server checks Origin).
// 2. Read `session.ready`: note every conversation's `last_seq`; load the newest page of
//    the conversations (the open one and those with unsent messages first) and fetch
//    `after=cursor` wherever the log went past the cursor.
// 3. Flush the outbox: every unacknowledged `message.send` again, with its original
//    `client_msg_id`, so the server stores it once.
// 4. While open: apply live events through the cursor rules, fetch on a gap, `ping`
//    every heartbeat, `sync` every 60 s.
// 5. On a lost connection: wait a full-jitter backoff and go to 1 (close codes 4401 and
//    4409 stop the client). The browser's `offline` event drops the socket at once;
//    `online` reconnects without waiting.

import { fullJitter } from "./backoff.js";
import { APPLIED, ConversationState, GAP } from "./state.js";

export const AUTH_FAILED = 4401;
export const EVICTED = 4409;
const TERMINAL_CLOSE_CODES = new Set([AUTH_FAILED, EVICTED]);
const RETRYABLE = new Set(["unavailable", "rate_limited"]);
const FETCH_LIMIT = 200; // catch-up pages (after=cursor)
const PAGE_LIMIT = 40; // the newest page of a conversation
const OLDER_LIMIT = 50; // scrollback pages (before=seq)
const JUMP_LIMIT = 200; // pages loaded to reach a quoted message (the server's most)
const EAGER_LOADS = 100; // conversations whose newest page loads on connect
const FETCH_CONCURRENCY = 4;
const RESET_GAP = 1000; // a gap wider than this reloads the newest page instead
const MAX_STALLS = 3;
const DEFAULT_RETRY_AFTER = 1; // s, for `rate_limited` without `retry_after`
const LOCAL_DROP = 4000; // our own close code when we drop a socket (offline, silent)
// How long our log position may stay below the server's (`pong`) before we sync: an
// event committed just before the pong may still be on its way.
const POSITION_GRACE = 500;
// How long we wait after opening a socket for `session.ready` before we give up on it and
// connect again with backoff (the protocol's 10 s; a gateway that far behind sheds the
// handshake with 1013 anyway).
const READY_TIMEOUT = 10000;

export class ChatError extends Error {
  constructor(code, message, details = {}, retryAfter = null, ref = null) {
    super(message || code);
    this.code = code;
    this.details = details || {};
    this.retryAfter = retryAfter;
    this.ref = ref;
  }

  static fromFrame(frame) {
    return new ChatError(
      String(frame.code || "error"),
      String(frame.message || ""),
      frame.details,
      typeof frame.retry_after === "number" ? frame.retry_after : null,
      typeof frame.ref === "string" ? frame.ref : null,
    );
  }
}

export class ConnectionLost extends Error {
  constructor() {
    super("connection lost");
  }
}

export class RequestTimeout extends Error {
  constructor() {
    super("no reply in time");
  }
}

/** Return a random UUID (v4); `crypto.randomUUID` needs a secure context. */
export function uuid4() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function parse(raw) {
  if (typeof raw !== "string") return null;
  try {
    const frame = JSON.parse(raw);
    return frame && typeof frame === "object" && !Array.isArray(frame) ? frame : null;
  } catch {
    return null;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** One connection after its `session.ready`: the socket and its timers. */
class Session {
  constructor(ws) {
    this.ws = ws;
    this.alive = true;
    this.resumed = false; // caught up; the outbox may send
    this.timers = [];
    this.loads = new Map(); // conversation -> promise of its load / catch-up loop
    this.lastFrameAt = performance.now();
    this.slots = FETCH_CONCURRENCY;
    this.waiting = [];
  }

  send(frame) {
    if (!this.alive || this.ws.readyState !== WebSocket.OPEN) throw new ConnectionLost();
    this.ws.send(JSON.stringify(frame));
  }

  async slot(work) {
    if (this.slots === 0) await new Promise((resolve) => this.waiting.push(resolve));
    else this.slots -= 1;
    try {
      return await work();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.slots += 1;
    }
  }

  stop() {
    this.alive = false;
    for (const timer of this.timers) clearInterval(timer);
    this.timers = [];
  }
}

/**
 * Keep one user's conversations in sync over one WebSocket, across reconnects.
 *
 * Events (CustomEvent `detail`): `status` {state, retryIn}, `ready` {user, status},
 * `conversations` {}, `messages` {conversation, messages, via}, `reset` {conversation},
 * `outbox` {conversation}, `receipt` {conversation, user, delivered_seq, read_seq},
 * `typing` {conversation, user, state}, `presence` {user, state, last_seen},
 * `membership` {conversation, reason}, `members` {conversation}, `user` {user} (a name
 * or picture changed), `error` {error}, `stopped` {code}.
 */
export class ChatClient extends EventTarget {
  constructor({
    url,
    user,
    store,
    history = null,
    sendTimeout = 10_000,
    syncInterval = 300_000,
    backoffBase = 500,
    backoffMax = 30_000,
    openSocket = (socketUrl) => new WebSocket(socketUrl),
  }) {
    super();
    this.url = url;
    this.user = user;
    this.userId = user.id;
    this.store = store;
    this.history = history; // offline history (history-store.js), or null
    this.sendTimeout = sendTimeout;
    this.syncInterval = syncInterval;
    this.backoffBase = backoffBase;
    this.backoffMax = backoffMax;
    // What opens a connection: a WebSocket, or a link to the socket the tabs share
    // (worker/tabs.js), which behaves as one.
    this.openSocket = openSocket;

    this.states = new Map(); // conversation -> ConversationState
    this.info = new Map(); // conversation -> payload as last known (+ `last`: preview)
    this.active = new Set();
    this.members = new Map(); // conversation -> Map(user id -> member with markers)
    this.entries = new Map(); // client_msg_id -> outbox entry, oldest first
    this.pending = new Map(); // ref -> request waiting for its reply
    this.refs = 0;
    this.positions = 0;
    this.ws = null;
    this.session = null;
    this.attempt = 0;
    this.reconnectTimer = null;
    this.pumpTimer = null;
    this.syncSoon = null;
    this.stoppedCode = null;
    this.state = "connecting";
    this.heartbeat = 25;
    this.focused = null; // the conversation on screen: loaded first
    // Receipts of the chat on screen heard before its members were first read:
    // {conversation, markers: Map(user -> {read_seq, delivered_seq})}, or null.
    this.earlyMarkers = null;
    this.missedEventSyncs = 0; // times a `pong` revealed a missed live event
    this.missedReceiptReloads = 0; // times a `pong` revealed a missed `receipt.updated`
    this.markersReloadedFor = new Map(); // conversation -> the server sum last reloaded for
    this.markersHigher = null; // the conversation whose last pong sum was below ours
  }

  // ---------------------------------------------------------------- lifecycle

  /** Show the stored history, load the persisted outbox and connect. */
  async start() {
    if (this.history) await this.history.hydrate(this).catch(() => {});
    for (const row of await this.store.all()) {
      this.entries.set(row.client_msg_id, this.#entry(row));
      this.positions = Math.max(this.positions, row.position);
    }
    for (const conversation of new Set([...this.entries.values()].map((e) => e.conversation))) {
      this.#emit("outbox", { conversation });
    }
    addEventListener("online", () => this.#online());
    addEventListener("offline", () => this.#offline());
    this.connect();
  }

  /** Open a connection now (no-op while one is open or the client has stopped). */
  connect() {
    if (this.stoppedCode !== null || this.ws) return;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.#setStatus(navigator.onLine === false ? "offline" : "connecting");
    let ws;
    try {
      ws = this.openSocket(this.url);
    } catch {
      this.#scheduleReconnect();
      return;
    }
    this.ws = ws;
    let session = null;
    const readyTimer = setTimeout(() => {
      if (session === null && this.ws === ws) this.#drop(ws, null);
    }, READY_TIMEOUT);
    ws.onmessage = (event) => {
      const frame = parse(event.data);
      if (!frame) return;
      if (session === null) {
        clearTimeout(readyTimer);
        if (frame.type !== "session.ready") {
          this.#drop(ws, null);
          return;
        }
        session = new Session(ws);
        this.#begin(session, frame);
        return;
      }
      session.lastFrameAt = performance.now();
      try {
        this.#dispatch(frame);
      } catch (error) {
        console.error("cannot handle frame", frame.type, error);
      }
    };
    ws.onclose = (event) => {
      clearTimeout(readyTimer);
      this.#closed(ws, session, event.code);
    };
    ws.onerror = () => {}; // a close event follows
    ws.sessionRef = () => session;
  }

  /** Stop for good (log out). */
  stop(code = 1000) {
    this.stoppedCode = code;
    clearTimeout(this.reconnectTimer);
    if (this.ws) this.#drop(this.ws, 1000);
    this.#setStatus("stopped");
    this.#emit("stopped", { code });
  }

  /** Connect again after a stop: the page's login still holds (a password change here). */
  resume() {
    if (this.stoppedCode === null) return;
    this.stoppedCode = null;
    this.attempt = 0;
    this.connect();
  }

  get connected() {
    return this.session !== null;
  }

  #online() {
    if (this.stoppedCode !== null) return;
    this.attempt = 0;
    if (!this.ws) this.connect();
  }

  #offline() {
    // The browser has no network: a socket would only buffer frames until it returns.
    // Drop it now, so new messages wait in the outbox (shown as pending) instead.
    if (this.ws) this.#drop(this.ws, LOCAL_DROP);
    this.#setStatus("offline");
  }

  /** Forget a socket at once (without waiting for its close handshake). */
  #drop(ws, code) {
    const session = ws.sessionRef ? ws.sessionRef() : null;
    ws.onmessage = ws.onclose = null;
    try {
      ws.close(code === 1000 ? 1000 : LOCAL_DROP);
    } catch {
      // already closing
    }
    this.#closed(ws, session, code ?? 1006);
  }

  #closed(ws, session, code) {
    if (this.ws !== ws) return;
    this.ws = null;
    if (session) this.#end(session, code);
    if (TERMINAL_CLOSE_CODES.has(code)) {
      this.stop(code);
      return;
    }
    if (this.stoppedCode === null) this.#scheduleReconnect();
  }

  #scheduleReconnect() {
    if (this.stoppedCode !== null || this.reconnectTimer) return;
    const delay = fullJitter(this.attempt, this.backoffBase, this.backoffMax);
    this.attempt += 1;
    this.#setStatus(navigator.onLine === false ? "offline" : "reconnecting", delay);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.connect();
    }, delay);
  }

  #setStatus(state, retryIn = null) {
    this.state = state;
    this.#emit("status", { state, retryIn });
  }

  #begin(session, ready) {
    this.session = session;
    this.attempt = 0;
    this.user = ready.user || this.user;
    const interval = Number(ready.heartbeat_interval);
    this.heartbeat = interval > 0 ? interval : 25;
    this.#applySnapshot(ready.conversations || []);
    this.#setStatus("online");
    this.#emit("ready", { user: this.user, status: ready.status });
    const beat = setInterval(() => this.#beat(session), Math.max(1000, this.heartbeat * 1000));
    session.timers.push(beat);
    if (this.syncInterval > 0) this.#schedulePeriodicSync(session);
    this.#resume(session);
  }

  /**
   * `sync` about every `syncInterval` (0.5 to 1.5 of it, at random): the safety net for
   * what the pong's log position cannot show (a lost mute, a read on another device),
   * spread so that tabs that connected together (after a restart) do not sync together.
   */
  #schedulePeriodicSync(session) {
    const delay = this.syncInterval * (0.5 + Math.random());
    const timer = setTimeout(() => {
      session.timers = session.timers.filter((t) => t !== timer);
      if (!session.alive) return;
      this.#syncOn(session);
      this.#schedulePeriodicSync(session);
    }, delay);
    session.timers.push(timer);
  }

  #beat(session) {
    // Any frame is a heartbeat. A socket that has been silent for two intervals (the
    // server answers every ping) is dead even if the browser has not noticed yet.
    const silentFor = performance.now() - session.lastFrameAt;
    if (silentFor > (2 * this.heartbeat + 5) * 1000) {
      if (this.ws === session.ws) this.#drop(session.ws, LOCAL_DROP);
      return;
    }
    const ping = { type: "ping", ref: `hb${++this.refs}` };
    // The chat on screen: the pong then says whether we hold all its members' markers.
    if (this.focused !== null && this.members.has(this.focused)) ping.conversation = this.focused;
    try {
      session.send(ping);
    } catch {
      // the close handler reconnects
    }
  }

  #end(session, code) {
    session.stop();
    if (this.session === session) this.session = null;
    for (const entry of this.entries.values()) entry.ref = null; // re-sent next session
    for (const [ref, waiting] of this.pending) {
      if (waiting.session !== session) continue;
      clearTimeout(waiting.timer);
      this.pending.delete(ref);
      waiting.reject(new ConnectionLost());
    }
    clearTimeout(this.pumpTimer);
    this.#emit("disconnected", { code });
  }

  async #resume(session) {
    // The open conversation and those with unsent messages first, then the outbox,
    // then everything else (most recently active first).
    const first = new Set([...this.entries.values()].map((e) => e.conversation));
    if (this.focused !== null) first.add(this.focused);
    const urgent = [...first].filter((id) => this.active.has(id));
    await Promise.allSettled(urgent.map((id) => this.#ensureLoaded(id, session)));
    if (this.session !== session) return;
    session.resumed = true;
    this.#pump();
    const rest = this.conversationIds().filter((id) => !first.has(id));
    await Promise.allSettled(
      rest.map((id, index) => {
        const state = this.#state(id);
        if (state.loaded) return state.behind ? this.#ensureLoaded(id, session) : null;
        return index < EAGER_LOADS ? this.#ensureLoaded(id, session) : null;
      }),
    );
  }

  // ---------------------------------------------------------------- local view

  /** Return the active conversations, most recently active first. */
  conversationIds() {
    const key = (id) => {
      const info = this.info.get(id) || {};
      return info.last_activity_at || "";
    };
    // Only those we can describe: a live event may name one before its details arrive.
    return [...this.active].filter((id) => this.info.has(id)).sort((a, b) => {
      const ka = key(a);
      const kb = key(b);
      return ka === kb ? b - a : kb < ka ? -1 : 1;
    });
  }

  conversation(id) {
    return this.info.get(id) || null;
  }

  /** The conversation's messages, with the edits and deletes still in the outbox applied. */
  view(id) {
    const view = this.#state(id).view();
    const changes = new Map();
    for (const e of this.entries.values()) if (e.op && e.conversation === id) changes.set(e.message, e);
    if (!changes.size) return view;
    return view.map((m) => {
      const change = changes.get(m.id);
      if (!change || m.deleted) return m;
      if (change.op === "delete") return { ...m, deleted: true, body: "", attachments: [], pending: "delete" };
      return { ...m, body: change.body, edited_at: m.edited_at || change.created_at, pending: "edit" };
    });
  }

  stateOf(id) {
    return this.#state(id);
  }

  /** Drop a message deleted for me on this and every later load (`message.hidden`, or
   * the hidden-ids sync of a device that was away); the history store rewrites its page. */
  forgetMessage(conversation, message) {
    const id = Number(conversation);
    this.#state(id).hide(Number(message));
    this.#emit("messages", { conversation: id, messages: [], via: "hidden" });
  }

  /** Return the unsent messages of a conversation, oldest first. */
  outbox(id) {
    return [...this.entries.values()].filter((e) => e.conversation === id && !e.op);
  }

  totalUnread() {
    let total = 0;
    for (const id of this.active) {
      const info = this.info.get(id);
      if (info && !info.muted) total += info.unread || 0;
    }
    return total;
  }

  // ---------------------------------------------------------------- requests

  /** Make sure a conversation's newest page is loaded and it is caught up. */
  open(id) {
    this.focused = id;
    if (this.session) return this.#ensureLoaded(id, this.session);
    return Promise.resolve();
  }

  /** Load the page before the window (scrollback); return whether older ones remain. */
  async loadOlder(id) {
    const state = this.#state(id);
    if (!state.loaded || !state.hasOlder || state.oldestSeq === null) return false;
    const session = this.#requireSession();
    const batch = await this.#requestOn(
      session,
      { type: "messages.fetch", conversation: id, before: state.oldestSeq, limit: OLDER_LIMIT },
      "messages.batch",
      { conversation: id },
    );
    const changed = state.applyOlder(batch.messages || [], batch.has_more);
    this.#emit("messages", { conversation: id, messages: changed, via: "older" });
    return state.hasOlder;
  }

  /**
   * Load older pages until the message at `seq` is in the window (a quoted message far
   * back); answer whether it is. `shouldStop()` ends it early (the user went elsewhere),
   * `onProgress(loaded)` hears each page; one `messages` event (`older`) tells the rest.
   */
  async loadThrough(id, seq, { shouldStop = () => false, onProgress = () => {} } = {}) {
    const state = this.#state(id);
    const changed = [];
    try {
      while (state.loaded && state.hasOlder && state.oldestSeq !== null && state.oldestSeq > seq && !shouldStop()) {
        const session = this.#requireSession();
        const batch = await this.#requestOn(
          session,
          { type: "messages.fetch", conversation: id, before: state.oldestSeq, limit: JUMP_LIMIT },
          "messages.batch",
          { conversation: id },
        );
        changed.push(...state.applyOlder(batch.messages || [], batch.has_more));
        onProgress(changed.length);
      }
    } finally {
      if (changed.length) this.#emit("messages", { conversation: id, messages: changed, via: "older" });
    }
    return state.oldestSeq !== null && state.oldestSeq <= seq;
  }

  /**
   * Queue a message (persisted first, so it survives a reload) and send it when possible.
   * `replyTo`: the id of a message of the conversation it replies to.
   */
  async send(conversation, body, attachments = [], { replyTo = null } = {}) {
    const row = {
      client_msg_id: uuid4(),
      conversation,
      body,
      reply_to: replyTo,
      attachments: attachments.map((a) => a.id),
      attachment_meta: attachments,
      created_at: new Date().toISOString(),
      position: Math.max(Date.now() * 1000, this.positions + 1),
      status: "pending",
      error: null,
    };
    this.positions = row.position;
    await this.store.put(row);
    const entry = this.#entry(row);
    this.entries.set(entry.client_msg_id, entry);
    this.#emit("outbox", { conversation });
    this.#pump();
    return entry;
  }

  /** Send a failed message again (same `client_msg_id`). */
  async retry(clientMsgId) {
    const entry = this.entries.get(clientMsgId);
    if (!entry) return;
    entry.status = "pending";
    entry.error = null;
    entry.notBefore = 0;
    await this.store.put(this.#row(entry));
    this.#emit("outbox", { conversation: entry.conversation });
    this.#pump();
  }

  /** Give up on an unsent message. */
  async discard(clientMsgId) {
    const entry = this.entries.get(clientMsgId);
    if (!entry) return;
    this.entries.delete(clientMsgId);
    await this.store.delete(clientMsgId);
    this.#emit("outbox", { conversation: entry.conversation });
    this.#pump();
  }

  /**
   * Edit a message. Offline, the edit waits in the outbox (persisted, shown at once) and
   * is sent in order with the conversation's other unsent changes; the edit of a message
   * still in the outbox (`message` is then its `client_msg_id`) changes that send.
   */
  async edit(conversation, message, body) {
    if (typeof message === "string") {
      const unsent = this.entries.get(message);
      if (unsent && !unsent.op && !unsent.ref) {
        unsent.body = body;
        await this.store.put(this.#row(unsent));
        this.#emit("outbox", { conversation });
        return null;
      }
      // On its way or sent meanwhile: edit the stored message once it is known.
      const sent = this.#state(conversation).view().find((m) => m.client_msg_id === message);
      if (!sent) throw new ChatError("not_found", "The message is being sent: edit it once it is.");
      message = sent.id;
    }
    if (this.#queues(conversation)) return this.#queue({ op: "edit", conversation, message, body });
    return this.#request({ type: "message.edit", conversation, message, body }, "message.updated");
  }

  async delete(conversation, message) {
    if (this.#queues(conversation)) return this.#queue({ op: "delete", conversation, message, body: "" });
    return this.#request({ type: "message.delete", conversation, message }, "message.updated");
  }

  /** Add (or, with `add` false, take back) my emoji reaction to a message. */
  react(conversation, message, emoji, add = true) {
    const type = add ? "reaction.add" : "reaction.remove";
    return this.#request({ type, conversation, message, emoji }, "message.updated");
  }

  /** Changes wait in the outbox offline, and behind unsent ones of the conversation. */
  #queues(conversation) {
    return !this.session || [...this.entries.values()].some((e) => e.conversation === conversation);
  }

  async #queue(change) {
    const row = {
      ...change,
      client_msg_id: `${change.op}-${uuid4()}`,
      attachments: [],
      created_at: new Date().toISOString(),
      position: Math.max(Date.now() * 1000, this.positions + 1),
      status: "pending",
      error: null,
    };
    this.positions = row.position;
    await this.store.put(row);
    this.entries.set(row.client_msg_id, this.#entry(row));
    this.#emit("outbox", { conversation: change.conversation });
    this.#pump();
    return null;
  }

  /** Raise the read marker (and the delivered one) to `seq`. */
  markRead(id, seq) {
    const info = this.info.get(id);
    // Offline (history from the store) the marker waits: it could not be sent.
    if (!this.session || !info || !(seq > (info.read_seq || 0))) return;
    // Only others' messages need a receipt: the server raised ours when it stored them.
    const previous = info.read_seq || 0;
    const news = this.#state(id)
      .view()
      .some((m) => m.seq > previous && m.seq <= seq && m.sender !== this.userId);
    info.read_seq = seq;
    info.delivered_seq = Math.max(info.delivered_seq || 0, seq);
    info.unread = this.#unreadAfter(id, seq);
    if (news || !this.#state(id).loaded) this.#send({ type: "receipt.read", conversation: id, seq });
    this.#emit("conversations", {});
  }

  /** Raise the delivered marker to `seq` (this device has the messages). */
  markDelivered(id, seq) {
    const info = this.info.get(id);
    if (!info || !(seq > (info.delivered_seq || 0))) return;
    info.delivered_seq = seq;
    this.#send({ type: "receipt.delivered", conversation: id, seq });
  }

  typing(id, state) {
    this.#send({ type: `typing.${state}`, conversation: id });
  }

  activity(idle) {
    this.#send({ type: "activity", idle });
  }

  setStatus(status) {
    return this.#request({ type: "status.set", status }, "presence.changed");
  }

  subscribePresence(users) {
    return this.#request({ type: "presence.subscribe", users }, "presence.snapshot").then(
      (frame) => {
        for (const entry of frame.users || []) {
          this.#emit("presence", { user: entry.id, state: entry.state, last_seen: entry.last_seen });
        }
        return frame;
      },
    );
  }

  /** Send `sync` now (also every 60 s): it catches a lost last message. */
  sync() {
    if (this.session) return this.#syncOn(this.session);
    return Promise.resolve();
  }

  /** Take in a conversation answered by REST (created, joined) before its event arrives. */
  adopt(conversation) {
    this.#takeConversation(conversation);
    this.#emit("conversations", {});
    if (this.session) this.#ensureLoaded(conversation.id, this.session);
  }

  /** Forget a conversation the user left (REST answered before the event). */
  forget(id) {
    this.#deactivate(id);
    this.#emit("conversations", {});
  }

  /**
   * Take a conversation's members (with markers) as `GET /conversations/{id}` listed
   * them. A member's markers only move forward: a list read before a `receipt.updated`
   * that came in while it was on its way must not take that receipt back.
   */
  setMembers(id, members) {
    const early = this.earlyMarkers?.conversation === id ? this.earlyMarkers.markers : null;
    if (early) this.earlyMarkers = null;
    const known = this.members.get(id) || early;
    const merged = members.map((m) => {
      const member = { ...m };
      const had = known?.get(m.id);
      if (had) {
        member.read_seq = Math.max(had.read_seq || 0, m.read_seq || 0);
        member.delivered_seq = Math.max(had.delivered_seq || 0, m.delivered_seq || 0);
      }
      return [m.id, member];
    });
    this.members.set(id, new Map(merged));
    this.#emit("members", { conversation: id });
  }

  #requireSession() {
    if (!this.session) throw new ConnectionLost();
    return this.session;
  }

  #send(frame) {
    if (!this.session) return;
    try {
      this.session.send({ ...frame, ref: `f${++this.refs}` });
    } catch {
      // lost: receipts and typing are hints; the next session catches up
    }
  }

  #request(frame, reply, options = {}) {
    try {
      return this.#requestOn(this.#requireSession(), frame, reply, options);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  #requestOn(session, frame, reply, { conversation = null, onReply = null, timeout } = {}) {
    const ref = `r${++this.refs}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(ref);
        reject(new RequestTimeout());
      }, timeout ?? this.sendTimeout);
      this.pending.set(ref, { reply, resolve, reject, timer, onReply, conversation, session });
      try {
        session.send({ ...frame, ref });
      } catch (error) {
        clearTimeout(timer);
        this.pending.delete(ref);
        reject(error instanceof ConnectionLost ? error : new ConnectionLost());
      }
    });
  }

  // ---------------------------------------------------------------- frames in

  #dispatch(frame) {
    switch (frame.type) {
      case "message.created":
      case "message.updated":
        if (frame.message && typeof frame.message === "object") {
          this.#offer(Number(frame.message.conversation), frame.message, "live");
        }
        if (typeof frame.ref === "string") {
          const change = this.#entryByRef(frame.ref);
          if (change?.op) this.#finish(change.client_msg_id);
          else this.#resolve(frame);
        }
        return;
      case "message.sent":
        this.#onSent(frame);
        return;
      case "error":
        this.#onError(frame);
        return;
      case "conversation.updated":
        this.#onConversationUpdated(frame);
        return;
      case "receipt.updated":
        this.#onReceipt(frame);
        return;
      case "user.updated":
        this.#onUserUpdated(frame);
        return;
      case "typing":
        this.#emit("typing", frame);
        return;
      case "presence.changed":
        this.#emit("presence", frame);
        if (typeof frame.ref === "string") this.#resolve(frame); // the reply to status.set
        return;
      case "pong":
        this.#onPong(frame);
        this.#resolve(frame);
        return;
      case "reconnect":
        this.#onReconnect(frame);
        return;
      case "message.hidden":
        this.forgetMessage(frame.conversation, frame.message);
        return;
      case "block.updated":
        this.#emit("block", frame);
        return;
      default:
        this.#resolve(frame); // messages.batch, sync.state, presence.snapshot
    }
  }

  /** The gateway is draining: leave it after the delay it chose and connect again
   * (the load balancer picks another gateway; the draining one refuses new sockets). */
  #onReconnect(frame) {
    const session = this.session;
    if (!session) return;
    const delay = Math.max(0, Number(frame.after_ms) || 0);
    const leave = setTimeout(() => {
      if (this.ws !== session.ws) return;
      this.attempt = 0;
      this.#drop(session.ws, LOCAL_DROP);
    }, delay);
    session.timers.push(leave);
  }

  #resolve(frame) {
    let key = typeof frame.ref === "string" && this.pending.has(frame.ref) ? frame.ref : null;
    if (key === null && (frame.ref === undefined || frame.ref === null)) {
      // A reply without a ref completes the oldest request waiting for that type.
      for (const [ref, waiting] of this.pending) {
        const sameConversation =
          waiting.conversation === null || waiting.conversation === frame.conversation;
        if (waiting.reply === frame.type && sameConversation) {
          key = ref;
          break;
        }
      }
    }
    const waiting = key === null ? null : this.pending.get(key);
    if (!waiting || waiting.reply !== frame.type) return;
    this.pending.delete(key);
    clearTimeout(waiting.timer);
    if (waiting.onReply) waiting.onReply(frame);
    waiting.resolve(frame);
  }

  #offer(id, message, via) {
    if (!this.active.has(id)) {
      // Events go to members only: the join notice may still be on its way.
      this.active.add(id);
      this.#scheduleSync();
    }
    const state = this.#state(id);
    this.#notePreview(id, message);
    this.#count(id, [message]);
    const result = state.offer(message);
    if (result === APPLIED) {
      this.#emit("messages", { conversation: id, messages: [message], via });
    } else if (result === GAP && this.session && (state.loaded || this.#wanted(id))) {
      this.#ensureLoaded(id, this.session);
    }
    if (!state.loaded) this.#emit("conversations", {});
  }

  #wanted(id) {
    return id === this.focused || this.outbox(id).length > 0 || this.active.size <= EAGER_LOADS;
  }

  /**
   * The channel layer may drop a live event; if it was a conversation's last, nothing
   * later reveals the gap. Every heartbeat's `pong` carries the server's log position
   * (the sum of `last_seq` over the user's conversations): ours still lower after a
   * short grace, or higher (a departure we missed), means `sync` now, not in 60 s.
   */
  #onPong(frame) {
    const server = frame.log_position;
    const session = this.session;
    if (session && frame.markers) this.#checkMarkers(session, frame.markers);
    if (!session || typeof server !== "number") return;
    const mine = this.logPosition();
    if (mine === server) return;
    const resync = () => {
      this.missedEventSyncs += 1;
      this.#syncOn(session);
    };
    if (mine > server) {
      resync();
      return;
    }
    setTimeout(() => {
      if (this.session === session && this.logPosition() < server) resync();
    }, POSITION_GRACE);
  }

  /**
   * Read receipts are not in the log, so the log position cannot show a lost
   * `receipt.updated`. A `ping` that names the chat on screen gets its members' marker
   * sum back. Ours lower after the same grace means a receipt we missed; ours higher at
   * two pongs in a row, a member we hold and the server no longer counts (once only, it
   * is a receipt that overtook the pong's read). Either way the member list is read
   * again (`members-stale`, answered by the app with `GET /conversations/{id}`), once
   * per server sum: a difference the list cannot explain costs one read, not one a beat.
   */
  #checkMarkers(session, markers) {
    const id = Number(markers.conversation);
    const server = markers.sum;
    if (typeof server !== "number") return;
    const mine = this.markerSum(id);
    const wasHigher = this.markersHigher === id;
    this.markersHigher = mine !== null && mine > server ? id : null;
    if (mine === null || mine === server) return;
    const reload = () => {
      if (this.markersReloadedFor.get(id) === server) return;
      this.markersReloadedFor.set(id, server);
      this.missedReceiptReloads += 1;
      this.#emit("members-stale", { conversation: id });
    };
    if (mine > server) {
      if (wasHigher) reload();
      return;
    }
    setTimeout(() => {
      const mine = this.markerSum(id);
      if (this.session === session && mine !== null && mine < server) reload();
    }, POSITION_GRACE);
  }

  /** Return the sum of the markers we hold for a conversation's members (null: no list). */
  markerSum(id) {
    const members = this.members.get(id);
    if (!members) return null;
    let total = 0;
    // A member who has not accepted a message request counts 0, as the server lists them.
    for (const m of members.values()) if (!m.pending) total += (m.read_seq || 0) + (m.delivered_seq || 0);
    return total;
  }

  /** Return our log position: per active conversation its cursor (or `last_seq` if not loaded). */
  logPosition() {
    let total = 0;
    for (const id of this.active) {
      const state = this.#state(id);
      total += state.loaded ? state.cursor : state.knownSeq;
    }
    return total;
  }

  #onSent(frame) {
    const message = frame.message;
    let cmid = frame.client_msg_id;
    if (message && typeof message === "object") {
      cmid = cmid || message.client_msg_id;
      this.#offer(Number(message.conversation), message, "reply");
    }
    if (typeof cmid === "string") this.#finish(cmid);
  }

  #onError(frame) {
    const error = ChatError.fromFrame(frame);
    const entry =
      this.#entryByRef(error.ref) ||
      (typeof frame.client_msg_id === "string" ? this.entries.get(frame.client_msg_id) : null);
    if (entry) {
      this.#onSendError(entry, error);
      return;
    }
    const waiting = error.ref ? this.pending.get(error.ref) : null;
    if (waiting) {
      this.pending.delete(error.ref);
      clearTimeout(waiting.timer);
      waiting.reject(error);
      return;
    }
    this.#emit("error", { error });
  }

  #onSendError(entry, error) {
    // A transient error answering an older attempt says nothing about the current one.
    const current = error.ref === null || error.ref === entry.ref;
    const now = performance.now();
    if (error.code === "rate_limited") {
      if (current) {
        entry.ref = null;
        entry.notBefore = now + 1000 * (error.retryAfter ?? DEFAULT_RETRY_AFTER);
      }
    } else if (error.code === "unavailable") {
      if (current) {
        entry.ref = null;
        entry.failures += 1;
        entry.notBefore = now + fullJitter(entry.failures - 1, this.backoffBase, this.backoffMax);
      }
    } else if (entry.op) {
      // An edit or delete the server refuses (the message is gone): nothing to retry.
      this.#finish(entry.client_msg_id);
      this.#emit("error", { error });
      return;
    } else {
      entry.ref = null;
      entry.status = "failed";
      entry.error = { code: error.code, message: error.message };
      this.store.put(this.#row(entry));
      this.#emit("outbox", { conversation: entry.conversation });
    }
    this.#pump();
  }

  #onConversationUpdated(frame) {
    const conversation = frame.conversation;
    const reason = frame.reason;
    const id = Number(typeof conversation === "object" ? conversation.id : conversation);
    if (reason === "left" || reason === "removed") {
      this.#deactivate(id);
    } else if (typeof conversation === "object") {
      this.#takeConversation(conversation);
      if ((reason === "created" || reason === "joined") && this.session) {
        this.#ensureLoaded(id, this.session);
      }
    }
    this.#emit("membership", { conversation: id, reason });
    this.#emit("conversations", {});
  }

  /** A user's name or picture changed (once per conversation shared with them): update
   * the members that are that user and the direct chats with them. */
  #onUserUpdated(frame) {
    const user = frame.user;
    if (!user || typeof user !== "object") return;
    const id = Number(user.id);
    const seen = { display_name: user.display_name, username: user.username, avatar_url: user.avatar_url ?? null };
    for (const members of this.members.values()) {
      const member = members.get(id);
      if (member) Object.assign(member, seen);
    }
    for (const info of this.info.values()) {
      if (info.kind !== "direct" || Number(info.peer) !== id) continue;
      info.peer_avatar_url = seen.avatar_url;
      if (typeof user.display_name === "string") info.title = user.display_name;
    }
    this.#emit("user", { user: { id, ...seen } });
    this.#emit("conversations", {});
  }

  #onReceipt(frame) {
    const id = Number(frame.conversation);
    const user = Number(frame.user);
    let members = this.members.get(id);
    if (!members && id === this.focused) {
      // Its members are being read (the chat was just opened): a list read before this
      // receipt must not take it back when it arrives (`setMembers`).
      if (this.earlyMarkers?.conversation !== id) {
        this.earlyMarkers = { conversation: id, markers: new Map() };
      }
      members = this.earlyMarkers.markers;
    }
    if (members) {
      const member = members.get(user) || { id: user };
      member.read_seq = Math.max(member.read_seq || 0, frame.read_seq || 0);
      member.delivered_seq = Math.max(member.delivered_seq || 0, frame.delivered_seq || 0);
      members.set(user, member);
    }
    const info = this.info.get(id);
    if (user === this.userId && info) {
      // Read on another device.
      if ((frame.read_seq || 0) > (info.read_seq || 0)) {
        info.read_seq = frame.read_seq;
        info.unread = this.#unreadAfter(id, frame.read_seq);
        this.#emit("conversations", {});
      }
    }
    this.#emit("receipt", frame);
  }

  // ---------------------------------------------------------------- conversations

  #state(id) {
    let state = this.states.get(id);
    if (!state) {
      state = new ConversationState(id);
      this.states.set(id, state);
    }
    return state;
  }

  #takeConversation(conversation) {
    const id = Number(conversation.id);
    const previous = this.info.get(id) || {};
    const merged = { ...previous, ...conversation };
    delete merged.members;
    if (previous.read_seq > (conversation.read_seq ?? -1)) {
      // A receipt we sent may not be written yet (receipts are coalesced for 0.5 s).
      merged.read_seq = previous.read_seq;
      if (merged.read_seq >= (merged.last_seq || 0)) merged.unread = 0;
    }
    merged.counted = Math.max(previous.counted || 0, Number(conversation.last_seq) || 0);
    this.info.set(id, merged);
    if (Array.isArray(conversation.members)) this.setMembers(id, conversation.members);
    if (conversation.last_seq !== undefined) this.#state(id).noteLastSeq(conversation.last_seq);
    this.active.add(id);
  }

  #applySnapshot(conversations) {
    const ids = new Set();
    for (const conversation of conversations) {
      ids.add(Number(conversation.id));
      this.#takeConversation(conversation);
    }
    for (const id of [...this.active]) if (!ids.has(id)) this.#deactivate(id);
    this.#emit("conversations", {});
  }

  #deactivate(id) {
    this.active.delete(id);
    if (this.focused === id) this.focused = null;
  }

  /**
   * A sender has read everything up to their own message: the server raises the
   * sender's markers when it stores a send, and that raise is not broadcast as a
   * `receipt.updated` (a coalesced read receipt it overtakes may then change nothing).
   */
  #noteSender(id, message) {
    const member = this.members.get(id)?.get(message.sender);
    if (!member || message.kind !== "text") return;
    const seq = Number(message.seq);
    if (seq > (member.read_seq || 0) || seq > (member.delivered_seq || 0)) {
      member.read_seq = Math.max(member.read_seq || 0, seq);
      member.delivered_seq = Math.max(member.delivered_seq || 0, seq);
      this.#emit("receipt", { conversation: id, user: message.sender, ...member });
    }
  }

  #notePreview(id, message) {
    this.#noteSender(id, message);
    const info = this.info.get(id);
    if (!info) return;
    const last = info.last;
    if (!last || message.seq > last.seq || (message.id === last.id && message.version > last.version)) {
      info.last = message;
    }
    info.last_seq = Math.max(info.last_seq || 0, Number(message.version) || 0);
    if (message.version === message.seq && message.created_at) {
      if (!info.last_activity_at || message.created_at > info.last_activity_at) {
        info.last_activity_at = message.created_at;
      }
    }
  }

  /** Count new messages from others as unread (each seq once). */
  #count(id, messages) {
    const info = this.info.get(id);
    if (!info) return;
    for (const m of messages) {
      if (!(m.seq > (info.counted || 0))) continue;
      info.counted = m.seq;
      if (m.kind === "text" && m.sender !== this.userId && !m.deleted && m.seq > (info.read_seq || 0)) {
        info.unread = (info.unread || 0) + 1;
      }
    }
  }

  #unreadAfter(id, seq) {
    const state = this.#state(id);
    const info = this.info.get(id) || {};
    if (!state.loaded || (state.oldestSeq !== null && state.oldestSeq > seq + 1 && state.hasOlder)) {
      return seq >= (info.last_seq || 0) ? 0 : info.unread || 0;
    }
    return state
      .view()
      .filter((m) => m.seq > seq && m.kind === "text" && m.sender !== this.userId && !m.deleted)
      .length;
  }

  #scheduleSync() {
    if (this.syncSoon) return;
    this.syncSoon = setTimeout(() => {
      this.syncSoon = null;
      this.sync();
    }, 300);
  }

  // ---------------------------------------------------------------- catching up

  #ensureLoaded(id, session) {
    let task = session.loads.get(id);
    if (!task) {
      task = this.#load(session, id).finally(() => {
        if (session.loads.get(id) === task) session.loads.delete(id);
      });
      session.loads.set(id, task);
    }
    return task;
  }

  async #load(session, id) {
    const state = this.#state(id);
    try {
      if (state.loaded && state.knownSeq - state.cursor > RESET_GAP) {
        state.reset();
        this.#emit("reset", { conversation: id });
      }
      if (!state.loaded) await this.#loadNewest(session, id);
      await this.#catchUp(session, id);
    } catch (error) {
      if (error instanceof ChatError && error.code === "forbidden") {
        this.#deactivate(id);
        this.#emit("conversations", {});
      } else if (!(error instanceof ConnectionLost)) {
        console.warn("loading conversation", id, "failed:", error);
      }
    }
  }

  async #loadNewest(session, id) {
    const state = this.#state(id);
    for (let failures = 0; ; failures += 1) {
      // Every change up to the log number known now is in the page the server answers.
      const completeUpto = state.knownSeq;
      try {
        const batch = await session.slot(() =>
          this.#requestOn(
            session,
            { type: "messages.fetch", conversation: id, limit: PAGE_LIMIT },
            "messages.batch",
            { conversation: id },
          ),
        );
        if (this.session !== session) throw new ConnectionLost();
        const messages = batch.messages || [];
        for (const m of messages) this.#notePreview(id, m);
        this.#count(id, messages);
        const changed = state.applyNewest(messages, batch.has_more, completeUpto);
        this.#emit("messages", { conversation: id, messages: changed, via: "fetch" });
        this.#emit("conversations", {});
        return;
      } catch (error) {
        if (!this.#retryable(error)) throw error;
        await sleep(this.#retryDelay(error, failures));
      }
    }
  }

  async #catchUp(session, id) {
    const state = this.#state(id);
    let more = false;
    let stalls = 0;
    let failures = 0;
    while (this.active.has(id) && (more || state.behind) && this.session === session) {
      const before = state.cursor;
      let batch;
      try {
        batch = await session.slot(() => this.#fetchAfter(session, id, state.cursor));
      } catch (error) {
        if (!this.#retryable(error)) throw error;
        failures += 1;
        await sleep(this.#retryDelay(error, failures - 1));
        continue;
      }
      failures = 0;
      more = Boolean(batch.has_more);
      if (state.cursor > before) {
        stalls = 0;
        continue;
      }
      stalls += 1; // the fetch raced a live event, or the server is inconsistent
      if (stalls >= MAX_STALLS) return; // the next sync tries again
    }
  }

  #retryable(error) {
    return (
      error instanceof RequestTimeout || (error instanceof ChatError && RETRYABLE.has(error.code))
    );
  }

  #retryDelay(error, failures) {
    if (error instanceof ChatError && error.retryAfter) return error.retryAfter * 1000;
    if (error instanceof RequestTimeout) return 0;
    return fullJitter(failures, this.backoffBase, this.backoffMax);
  }

  #fetchAfter(session, id, after) {
    const onReply = (frame) => {
      const state = this.#state(id);
      const messages = frame.messages || [];
      for (const m of messages) this.#notePreview(id, m);
      this.#count(id, messages);
      const changed = state.applyBatch(messages, frame.upto, after);
      if (changed.length) this.#emit("messages", { conversation: id, messages: changed, via: "fetch" });
      this.#emit("conversations", {});
    };
    return this.#requestOn(
      session,
      { type: "messages.fetch", conversation: id, after, limit: FETCH_LIMIT },
      "messages.batch",
      { conversation: id, onReply },
    );
  }

  async #syncOn(session) {
    try {
      await this.#requestOn(session, { type: "sync" }, "sync.state", {
        onReply: (frame) => this.#applySnapshot(frame.conversations || []),
      });
    } catch (error) {
      if (!(error instanceof ConnectionLost)) console.info("sync failed:", error);
      return;
    }
    const work = this.conversationIds().map((id) => {
      const state = this.#state(id);
      if (state.loaded ? state.behind : this.#wanted(id)) return this.#ensureLoaded(id, session);
      return null;
    });
    await Promise.allSettled(work);
  }

  // ---------------------------------------------------------------- the outbox

  #entry(row) {
    return { ...row, ref: null, refs: [], attempts: 0, failures: 0, deadline: 0, notBefore: 0 };
  }

  #row(entry) {
    const { ref, refs, attempts, failures, deadline, notBefore, ...row } = entry;
    return row;
  }

  #entryByRef(ref) {
    if (!ref) return null;
    for (const entry of this.entries.values()) if (entry.refs.includes(ref)) return entry;
    return null;
  }

  #finish(clientMsgId) {
    const entry = this.entries.get(clientMsgId);
    if (!entry) return;
    this.entries.delete(clientMsgId);
    this.store.delete(clientMsgId);
    this.#emit("outbox", { conversation: entry.conversation });
    this.#pump();
  }

  /**
   * Send what is due. One message per conversation is in flight at a time (the oldest
   * unsent), so a conversation's messages are stored in the order they were written,
   * even across retries and rate limits.
   */
  #pump() {
    clearTimeout(this.pumpTimer);
    const session = this.session;
    if (!session || !session.resumed) return;
    const now = performance.now();
    const heads = new Set();
    let wakeup = Infinity;
    for (const entry of this.entries.values()) {
      if (entry.status === "failed" || heads.has(entry.conversation)) continue;
      heads.add(entry.conversation);
      const due = entry.ref ? entry.deadline : entry.notBefore;
      if (due > now) {
        wakeup = Math.min(wakeup, due);
        continue;
      }
      const ref = `s${++this.refs}`;
      const frame = entry.op
        ? { type: `message.${entry.op}`, conversation: entry.conversation, message: entry.message, ref }
        : {
            type: "message.send",
            conversation: entry.conversation,
            client_msg_id: entry.client_msg_id,
            body: entry.body,
            ref,
          };
      if (entry.op === "edit") frame.body = entry.body;
      if (entry.attachments.length) frame.attachments = entry.attachments;
      if (entry.reply_to) frame.reply_to = entry.reply_to;
      try {
        session.send(frame);
      } catch {
        return; // the close handler re-sends on the next session
      }
      entry.ref = ref;
      entry.refs = [...entry.refs.slice(-19), ref];
      entry.attempts += 1;
      entry.deadline = now + this.sendTimeout; // no reply by then: send again, same id
      wakeup = Math.min(wakeup, entry.deadline);
    }
    if (wakeup < Infinity) {
      this.pumpTimer = setTimeout(() => this.#pump(), Math.max(0, wakeup - now) + 5);
    }
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
