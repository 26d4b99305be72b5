// The one WebSocket of a browser, shared by all its tabs (docs/architecture.md, "Web
// client"). A hub runs in the SharedWorker (worker/shared.js) or, where there is none,
// in the tab that holds the leader lock (worker/tabs.js). Every tab still runs its own
// ChatClient (client.js) with its cursors and outbox; what it opens is a *link*, a
// virtual socket carried over a MessagePort or a BroadcastChannel, and the hub
// multiplexes the links onto one real socket:
//
// - The first link opens the real socket; the server's `session.ready` goes to every
//   link waiting for it. A link opened on a socket already up gets a `session.ready`
//   made of the first one and a fresh `sync.state` (so its `last_seq`s are current);
//   frames after that are in order behind it.
// - Frames from a tab keep their meaning; their `ref` is prefixed with the link's
//   number (`3~r12`), and a reply with such a ref goes to that link only, with its own
//   ref back. Frames without a ref (live events) go to every link. The server sends a
//   message's `message.created` to every socket but the one that sent it (its
//   `message.sent` carries the message), so the hub gives the other links that event
//   itself when a `message.sent` comes back.
// - `activity` is the user's: idle only when every tab is idle (the hub sends the
//   change, not each tab's). `presence.subscribe` replaces a socket's set, so the hub
//   subscribes to the union of what the tabs follow. A browser notification is shown by the first tab that
//   claims it, and by none while a tab is visible.
// - The real socket closes when the last link closes; when the real socket closes,
//   every link closes with its code, and each tab reconnects with its own backoff
//   (catching up with `after=cursor` and resending its outbox with the same ids).
// - `reconnect` (a draining gateway) is the socket's: the hub leaves after its delay.
// - `stop` (log out in one tab) closes the socket and tells every tab.
//
// Messages from a tab: {op: "open", link, url} | {op: "send", link, data} |
// {op: "close", link} | {op: "visible", visible} | {op: "claim", key, id} |
// {op: "stop"} | {op: "bye"}. To a tab: {op: "message", link, data} |
// {op: "closed", link, code} | {op: "claimed", id, granted} | {op: "signedout"}.

const LINK_REF = /^(\d+)~(.*)$/s;
const HUB_REF = "hub~";
const TAB_SILENCE = 180_000; // a tab that sent nothing for this long is gone (crashed)
const CLAIM_MEMORY = 30_000;
const PRESENCE_MAX = 1000; // users one presence.subscribe may name

/** A frame as an object, or null for anything else (binary, not JSON, not an object). */
function parseFrame(data) {
  if (typeof data !== "string") return null;
  try {
    const frame = JSON.parse(data);
    return frame && typeof frame === "object" ? frame : null;
  } catch {
    return null;
  }
}

export class Hub {
  constructor({ openSocket = (url) => new WebSocket(url) } = {}) {
    this.openSocket = openSocket;
    this.tabs = new Map(); // tab id -> {post, visible, idle, lastSeen}
    this.links = new Map(); // link number -> {tab, link, ready}
    this.byName = new Map(); // `${tab} ${link}` -> link number
    this.numbers = 0;
    this.ws = null;
    this.ready = null; // the real socket's session.ready
    this.waiting = new Set(); // link numbers waiting for a synthesized session.ready
    this.syncing = false;
    this.refs = 0;
    this.sentIdle = false;
    this.claims = new Map(); // key -> time claimed
    this.stopped = false;
    this.sweeper = setInterval(() => this.#sweep(), 30_000);
  }

  /** Take in a tab: `post(message)` delivers to it. */
  addTab(tab, post) {
    this.tabs.set(tab, { post, visible: false, idle: false, lastSeen: Date.now() });
  }

  /** Handle a message from tab `tab`. */
  receive(tab, message) {
    const state = this.tabs.get(tab);
    if (!state || !message || typeof message !== "object") return;
    state.lastSeen = Date.now();
    switch (message.op) {
      case "hello":
        // A page just loaded (so its login holds): a hub stopped by a log out serves again.
        if (message.fresh) this.stopped = false;
        return;
      case "open":
        this.#open(tab, String(message.link), String(message.url));
        return;
      case "send":
        this.#send(tab, String(message.link), message.data);
        return;
      case "close":
        this.#closeLink(this.byName.get(`${tab} ${message.link}`));
        return;
      case "visible":
        state.visible = Boolean(message.visible);
        return;
      case "claim":
        state.post({ op: "claimed", id: message.id, granted: this.#claim(String(message.key)) });
        return;
      case "stop":
        this.#stop();
        return;
      case "bye":
        this.removeTab(tab);
        return;
      default:
    }
  }

  /** Forget a tab and its links (it closed). */
  removeTab(tab) {
    for (const [number, link] of [...this.links]) if (link.tab === tab) this.#closeLink(number);
    this.tabs.delete(tab);
    this.#updateIdle();
  }

  /** How many real sockets are open (0 or 1), for tests and the console. */
  get sockets() {
    return this.ws ? 1 : 0;
  }

  // ---------------------------------------------------------------- links

  #open(tab, name, url) {
    const key = `${tab} ${name}`;
    if (this.byName.has(key)) return;
    if (this.stopped) {
      this.tabs.get(tab)?.post({ op: "closed", link: name, code: 4401 });
      return;
    }
    const number = ++this.numbers;
    this.links.set(number, { tab, link: name, ready: false });
    this.byName.set(key, number);
    if (!this.ws) {
      this.#connect(url);
    } else if (this.ready) {
      this.waiting.add(number);
      this.#syncForWaiting();
    }
    // else: the socket is connecting; its session.ready goes to this link too
  }

  #closeLink(number, code = null) {
    const link = number === undefined ? null : this.links.get(number);
    if (!link) return;
    this.links.delete(number);
    this.byName.delete(`${link.tab} ${link.link}`);
    this.waiting.delete(number);
    if (code !== null) this.tabs.get(link.tab)?.post({ op: "closed", link: link.link, code });
    if (this.links.size === 0 && this.ws) this.#dropSocket(1000);
    else this.#updateIdle();
  }

  #deliver(number, data) {
    const link = this.links.get(number);
    if (!link) return;
    this.tabs.get(link.tab)?.post({ op: "message", link: link.link, data });
  }

  #broadcast(frame, except = null) {
    const data = JSON.stringify(frame);
    for (const [number, link] of this.links) if (link.ready && number !== except) this.#deliver(number, data);
  }

  #send(tab, name, data) {
    const number = this.byName.get(`${tab} ${name}`);
    const link = number === undefined ? null : this.links.get(number);
    if (!link || !link.ready || !this.ws || this.ws.readyState !== 1) return;
    const frame = parseFrame(data);
    if (!frame) return;
    if (frame.type === "activity") {
      const state = this.tabs.get(tab);
      if (state) state.idle = Boolean(frame.idle);
      this.#updateIdle();
      return;
    }
    if (frame.type === "presence.subscribe" && Array.isArray(frame.users)) {
      // A subscription replaces the socket's set: subscribe to what every tab follows.
      const state = this.tabs.get(tab);
      if (state) state.follows = frame.users;
      const tabs = new Set([...this.links.values()].map((l) => l.tab));
      const users = new Set();
      for (const t of tabs) for (const user of this.tabs.get(t)?.follows || []) users.add(user);
      frame.users = [...users].slice(0, PRESENCE_MAX);
    }
    if (typeof frame.ref === "string") frame.ref = `${number}~${frame.ref}`;
    this.ws.send(JSON.stringify(frame));
  }

  // ---------------------------------------------------------------- the real socket

  #connect(url) {
    let ws;
    try {
      ws = this.openSocket(url);
    } catch {
      for (const number of [...this.links.keys()]) this.#closeLink(number, 1006);
      return;
    }
    this.ws = ws;
    this.ready = null;
    this.sentIdle = false;
    ws.onmessage = (event) => this.#frame(ws, event.data);
    ws.onclose = (event) => this.#socketClosed(ws, event.code);
    ws.onerror = () => {};
  }

  #dropSocket(code) {
    const ws = this.ws;
    if (!ws) return;
    ws.onmessage = ws.onclose = null;
    try {
      ws.close(code);
    } catch {
      // already closing
    }
    this.#socketClosed(ws, code === 1000 ? 1000 : 1006);
  }

  #socketClosed(ws, code) {
    if (this.ws !== ws) return;
    this.ws = null;
    this.ready = null;
    this.syncing = false;
    for (const number of [...this.links.keys()]) this.#closeLink(number, code);
  }

  #frame(ws, data) {
    if (this.ws !== ws) return;
    const frame = parseFrame(data);
    if (!frame) return;
    if (this.ready === null) {
      if (frame.type !== "session.ready") return; // the tabs' clients drop such a socket
      this.ready = frame;
      for (const [number, link] of this.links) {
        link.ready = true;
        this.#deliver(number, data);
      }
      this.#updateIdle(true);
      return;
    }
    if (frame.type === "reconnect") {
      // The gateway drains: the socket leaves after the delay it chose, all its links
      // with it (their clients connect again, through another gateway).
      const delay = Math.max(0, Number(frame.after_ms) || 0);
      setTimeout(() => {
        if (this.ws === ws) this.#dropSocket(4000);
      }, delay);
      return;
    }
    const ref = typeof frame.ref === "string" ? frame.ref : null;
    if (ref !== null && ref.startsWith(HUB_REF)) {
      this.#hubReply(frame);
      return;
    }
    const match = ref === null ? null : LINK_REF.exec(ref);
    if (match) {
      const number = Number(match[1]);
      this.#deliver(number, JSON.stringify({ ...frame, ref: match[2] }));
      // My own status change is news for the other tabs too.
      if (frame.type === "presence.changed") {
        const { ref: _, ...event } = frame;
        this.#broadcast(event, number);
      }
      // So is a message one tab sent: the server sends this socket no `message.created`.
      if (frame.type === "message.sent" && frame.message && typeof frame.message === "object") {
        this.#broadcast({ type: "message.created", message: frame.message }, number);
      }
      return;
    }
    this.#broadcast(frame);
  }

  // ---------------------------------------------------------------- a late tab's session.ready

  #syncForWaiting() {
    if (this.syncing || !this.ws || this.ws.readyState !== 1 || this.waiting.size === 0) return;
    this.syncing = true;
    this.ws.send(JSON.stringify({ type: "sync", ref: `${HUB_REF}${++this.refs}` }));
  }

  #hubReply(frame) {
    this.syncing = false;
    if (frame.type === "sync.state") {
      // Everything before this reply is in it; everything after reaches the link in order.
      const ready = JSON.stringify({ ...this.ready, conversations: frame.conversations || [] });
      for (const number of this.waiting) {
        const link = this.links.get(number);
        if (!link) continue;
        link.ready = true;
        this.#deliver(number, ready);
      }
      this.waiting.clear();
      this.#updateIdle();
      return;
    }
    // rate_limited (the socket's sync budget is shared by its tabs): try again later.
    const after = typeof frame.retry_after === "number" ? frame.retry_after * 1000 : 1000;
    setTimeout(() => this.#syncForWaiting(), after);
  }

  // ---------------------------------------------------------------- the user, not the tab

  #updateIdle(force = false) {
    if (!this.ws || !this.ready || this.ws.readyState !== 1) return;
    const tabs = new Set([...this.links.values()].filter((l) => l.ready).map((l) => l.tab));
    if (tabs.size === 0) return;
    const idle = [...tabs].every((tab) => this.tabs.get(tab)?.idle);
    if (idle === this.sentIdle && !(force && idle)) return;
    this.sentIdle = idle;
    this.ws.send(JSON.stringify({ type: "activity", idle }));
  }

  #claim(key) {
    const now = Date.now();
    for (const [k, at] of this.claims) if (now - at > CLAIM_MEMORY) this.claims.delete(k);
    if (this.claims.has(key)) return false;
    this.claims.set(key, now);
    // A tab in front of the user shows the message itself: no notification at all.
    return ![...this.tabs.values()].some((t) => t.visible);
  }

  #stop() {
    this.stopped = true;
    this.#dropSocket(1000);
    for (const tab of this.tabs.values()) tab.post({ op: "signedout" });
  }

  #sweep() {
    const now = Date.now();
    for (const [tab, state] of this.tabs) {
      if (now - state.lastSeen <= TAB_SILENCE) continue;
      // Gone without a word (crashed), or asleep: its links end; it may open new ones.
      state.visible = false;
      state.idle = true;
      for (const [number, link] of [...this.links]) if (link.tab === tab) this.#closeLink(number, 1006);
    }
  }
}
