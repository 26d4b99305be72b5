// A tab's side of the browser's one WebSocket (worker/hub.js says how the hub shares it).
//
// `openSocket(url)` answers a link: an object with the WebSocket interface the
// ChatClient uses (readyState, send, close, onmessage, onclose), carried to the hub:
// - over a MessagePort to the SharedWorker (worker/shared.js), where there is one;
// - else over a BroadcastChannel to the tab holding the Web Lock `chat-leader-<user>`
//   (that tab runs the hub itself). When it closes, the lock passes to another tab,
//   which announces itself; every tab's links close (code 1006) and their clients
//   connect again through the new leader, catching up with `after=cursor` and resending
//   their outbox with the same `client_msg_id`s, so nothing is lost or doubled;
// - else (neither API) a plain WebSocket per tab.

const PROTOCOL = "v1"; // bump when the messages between tabs and hub change
const CLAIM_WAIT = 2000; // no hub answer by then: show the notification

class Link {
  constructor(tabs, name) {
    this.tabs = tabs;
    this.name = name;
    this.readyState = 1; // WebSocket.OPEN: the client waits for session.ready anyway
    this.opened = false; // a frame came through (the hub knows this link)
    this.onmessage = null;
    this.onclose = null;
    this.onerror = null;
  }

  send(data) {
    if (this.readyState !== 1) throw new Error("link closed");
    this.tabs.post({ op: "send", link: this.name, data });
  }

  close() {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.tabs.links.delete(this.name);
    this.tabs.post({ op: "close", link: this.name });
  }

  /** The hub (or its loss) ended this link. */
  ended(code) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.tabs.links.delete(this.name);
    this.onclose?.({ code });
  }
}

export class Tabs {
  constructor(userId, { sharedWorker = globalThis.SharedWorker } = {}) {
    this.userId = userId;
    this.links = new Map(); // name -> Link
    this.names = 0;
    this.claims = new Map(); // id -> resolve
    this.claimsSettled = 0; // claims answered or given up on (for tests)
    this.onSignedOut = null;
    this.mode = "alone";
    this.port = null;
    this.channel = null;
    this.hub = null; // the hub, when this tab leads
    this.tab = `t${Date.now().toString(36)}${Math.random().toString(36).slice(2, 10)}`;
    this.visible = document.visibilityState === "visible";
    if (sharedWorker && this.#useSharedWorker(sharedWorker)) return;
    this.#useLocks();
  }

  /** Open a link (the ChatClient's `openSocket`). */
  openSocket(url) {
    if (this.mode === "alone") return new WebSocket(url);
    const name = `l${++this.names}`;
    const link = new Link(this, name);
    if (navigator.onLine === false) {
      // This page knows it has no network; the shared socket might not (a worker may
      // not share a page's view of being offline): fail as a socket would, and wait
      // for `online`.
      setTimeout(() => link.ended(1006), 0);
      return link;
    }
    link.url = url;
    this.links.set(name, link);
    this.post({ op: "open", link: name, url });
    return link;
  }

  /** Log out: the hub closes the socket and tells every tab. */
  stop() {
    if (this.mode !== "alone") this.post({ op: "stop" });
  }

  /** Tell the hub whether this tab is in front of the user. */
  setVisible(visible) {
    this.visible = visible;
    if (this.mode !== "alone") this.post({ op: "visible", visible });
  }

  /** Answer whether this tab shows the notification `key` (once per browser, none if a tab is visible). */
  claim(key) {
    if (this.mode === "alone") return Promise.resolve(true);
    const id = `${this.tab}:${++this.names}`;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.claims.delete(id);
        this.claimsSettled += 1;
        resolve(true);
      }, CLAIM_WAIT);
      this.claims.set(id, (granted) => {
        clearTimeout(timer);
        this.claimsSettled += 1;
        resolve(granted);
      });
      this.post({ op: "claim", key, id });
    });
  }

  /** Send a message to the hub. */
  post(message) {
    if (this.mode === "shared") this.port.postMessage(message);
    else if (this.hub) this.hub.receive(this.tab, message);
    else this.channel?.postMessage({ to: "hub", from: this.tab, body: message });
  }

  // ---------------------------------------------------------------- the two transports

  #useSharedWorker(SharedWorkerClass) {
    let worker;
    try {
      worker = new SharedWorkerClass(new URL("./shared.js", import.meta.url), {
        type: "module",
        name: `chat-${PROTOCOL}-${this.userId}`,
      });
    } catch {
      return false;
    }
    this.mode = "shared";
    this.port = worker.port;
    this.port.onmessage = (event) => this.#fromHub(event.data);
    this.port.start();
    // The worker's script did not load (offline without a cached copy, say): elect a leader.
    worker.addEventListener("error", () => {
      if (this.mode !== "shared") return;
      this.port.onmessage = null;
      this.port = null;
      this.#useLocks();
      this.#hubChanged();
    });
    this.#greet(true);
    addEventListener("pagehide", () => this.post({ op: "bye" }));
    addEventListener("pageshow", (event) => {
      if (event.persisted) this.#hubChanged(); // back from the back/forward cache
    });
    return true;
  }

  #useLocks() {
    if (!navigator.locks || !globalThis.BroadcastChannel) {
      this.mode = "alone";
      return;
    }
    this.mode = "tabs";
    this.channel = new BroadcastChannel(`chat-tabs-${PROTOCOL}-${this.userId}`);
    this.channel.onmessage = ({ data }) => {
      if (!data || typeof data !== "object") return;
      if (data.to === "hub" && this.hub) {
        if (!this.hub.tabs.has(data.from)) {
          this.hub.addTab(data.from, (body) => this.channel.postMessage({ to: data.from, body }));
        }
        this.hub.receive(data.from, data.body);
      } else if (data.to === this.tab) {
        this.#fromHub(data.body);
      } else if (data.op === "leader" && data.from !== this.tab) {
        this.#hubChanged();
      }
    };
    navigator.locks.request(`chat-leader-${PROTOCOL}-${this.userId}`, () => this.#lead());
    this.#greet(true);
    addEventListener("pagehide", () => {
      if (!this.hub) this.post({ op: "bye" });
    });
    addEventListener("pageshow", (event) => {
      if (event.persisted) this.#hubChanged();
    });
  }

  /** This tab got the leader lock: run the hub here until the tab goes away. */
  async #lead() {
    const { Hub } = await import("./hub.js");
    this.hub = new Hub();
    this.hub.addTab(this.tab, (body) => queueMicrotask(() => this.#fromHub(body)));
    globalThis.chatHub = this.hub; // for the console and tests
    this.channel.postMessage({ op: "leader", from: this.tab });
    this.#hubChanged();
    await new Promise(() => {}); // hold the lock for the tab's life
  }

  /** A new hub: links it does not know end (their clients reconnect); unanswered opens go again. */
  #hubChanged() {
    this.#greet(false);
    for (const link of [...this.links.values()]) {
      if (link.opened) link.ended(1006);
      else this.post({ op: "open", link: link.name, url: link.url });
    }
  }

  #greet(fresh) {
    this.post({ op: "hello", fresh });
    this.post({ op: "visible", visible: this.visible });
  }

  #fromHub(message) {
    if (!message || typeof message !== "object") return;
    switch (message.op) {
      case "message": {
        const link = this.links.get(message.link);
        if (!link) return;
        link.opened = true;
        link.onmessage?.({ data: message.data });
        return;
      }
      case "closed":
        this.links.get(message.link)?.ended(message.code);
        return;
      case "claimed": {
        const resolve = this.claims.get(message.id);
        this.claims.delete(message.id);
        resolve?.(Boolean(message.granted));
        return;
      }
      case "signedout":
        this.onSignedOut?.();
        return;
      default:
    }
  }
}
