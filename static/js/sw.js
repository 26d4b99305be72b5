// The service worker, served at /sw.js (scope: the whole site) by messaging.views,
// which prepends `self.SW_CONFIG = {version, precache}`.
//
// - The app shell: static files are precached at install; the app page (`/`) is fetched
//   from the network first and cached, and served from the cache when there is no
//   network, so the app opens offline (its outbox then shows what waits to be sent).
// - Web Push (messaging/notifications/payloads.py): a `message` push shows a notification
//   per conversation (a newer one replaces it and alerts again); a `remove` push takes
//   it back once the messages were read elsewhere; a `security` push (a device left the
//   account) shows as it is. A click opens the conversation (or the app).

const CONFIG = self.SW_CONFIG || { version: "dev", precache: [] };
const CACHE = `chat-${CONFIG.version}`;
const APP_URL = "/";

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      // `reload`: past the HTTP cache, so a new version never caches an old file.
      .then((cache) => cache.addAll(CONFIG.precache.map((url) => new Request(url, { cache: "reload" }))))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    (async () => {
      const names = await caches.keys();
      const old = names.filter((name) => name.startsWith("chat-") && name !== CACHE);
      // Carry the cached app page over to the new cache, then drop the old ones.
      const page = await caches.match(APP_URL, { ignoreVary: true });
      if (page) await (await caches.open(CACHE)).put(APP_URL, page);
      await Promise.all(old.map((name) => caches.delete(name)));
      await self.clients.claim();
    })(),
  );
});

async function cacheAppPage() {
  const response = await fetch(APP_URL, { credentials: "same-origin", cache: "no-store" });
  if (response.ok && !response.redirected) {
    await (await caches.open(CACHE)).put(APP_URL, response);
  }
}

async function forgetAppPage() {
  for (const name of await caches.keys()) {
    if (name.startsWith("chat-")) await (await caches.open(name)).delete(APP_URL);
  }
}

self.addEventListener("message", (event) => {
  const type = event.data?.type;
  if (type === "cache-app") event.waitUntil(cacheAppPage().catch(() => {}));
  if (type === "logout") event.waitUntil(forgetAppPage());
  const conversation = Number(event.data?.conversation);
  if (type === "dismiss" && Number.isSafeInteger(conversation)) event.waitUntil(inOrder(() => dismissShown(conversation)));
});

async function appNavigation(request) {
  try {
    const response = await fetch(request);
    if (response.ok && !response.redirected) {
      const copy = response.clone();
      caches.open(CACHE).then((cache) => cache.put(APP_URL, copy));
    } else if (response.redirected) {
      await forgetAppPage(); // logged out: the cached page is no longer theirs
    }
    return response;
  } catch (error) {
    const cached = await caches.match(APP_URL, { ignoreVary: true });
    if (cached) return cached;
    return new Response("You are offline, and the app has not been opened here before.", {
      status: 503,
      headers: { "Content-Type": "text/plain; charset=utf-8" },
    });
  }
}

async function staticFile(request) {
  const cached = await caches.match(request);
  if (cached) return cached;
  const response = await fetch(request);
  if (response.ok) {
    const copy = response.clone();
    caches.open(CACHE).then((cache) => cache.put(request, copy));
  }
  return response;
}

self.addEventListener("fetch", (event) => {
  const { request } = event;
  if (request.method !== "GET") return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  if (request.mode === "navigate" && url.pathname === APP_URL) {
    event.respondWith(appNavigation(request));
  } else if (url.pathname.startsWith("/static/")) {
    event.respondWith(staticFile(request));
  }
});

const ICON = "/static/img/icon.svg";
const tagOf = (conversation) => `conversation-${conversation}`;

function pushData(event) {
  try {
    return event.data ? event.data.json() : {};
  } catch {
    return { body: event.data ? event.data.text() : "" };
  }
}

/** Answer `url` if it is a page of this site, else null (a push never sends us elsewhere). */
function ownUrl(url) {
  try {
    const parsed = new URL(url, self.location.origin);
    return parsed.origin === self.location.origin ? parsed.href : null;
  } catch {
    return null;
  }
}

async function appWindows() {
  const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  return windows.filter((client) => new URL(client.url).origin === self.location.origin);
}

/** Ask an app window which conversation it shows (null: none, or no answer in time). */
function shownBy(client, timeout = 300) {
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    const timer = setTimeout(() => resolve(null), timeout);
    channel.port1.onmessage = (event) => {
      clearTimeout(timer);
      resolve(event.data?.conversation ?? null);
    };
    client.postMessage({ type: "showing" }, [channel.port2]);
  });
}

/**
 * Whether a focused, visible app window shows the conversation: it needs no notice.
 * Asked, not read from `client.url`: the app moves between conversations with
 * history.replaceState, which the client's URL does not follow.
 */
async function watching(conversation) {
  const windows = (await appWindows()).filter((client) => client.focused && client.visibilityState === "visible");
  const shown = await Promise.all(windows.map((client) => shownBy(client)));
  return shown.some((id) => Number(id) === Number(conversation));
}

async function showMessage(data) {
  const conversation = data.conversation ?? null;
  if (conversation !== null && (await watching(conversation))) return;
  const tag = conversation !== null ? tagOf(conversation) : undefined;
  await self.registration.showNotification(String(data.title || "New message"), {
    body: String(data.body || ""),
    tag,
    renotify: tag !== undefined, // a new message in the same conversation alerts again
    icon: ICON,
    data: {
      conversation,
      seq: data.seq ?? null,
      url: ownUrl(data.url || (conversation !== null ? `/#c${conversation}` : "/")) || "/",
    },
  });
}

/** Close what shows the conversation, up to `up_to_seq` (a newer message stays). */
async function removeShown(data) {
  if (data.conversation === undefined || data.conversation === null) return;
  const shown = await self.registration.getNotifications({ tag: tagOf(data.conversation) });
  for (const notification of shown) {
    const seq = notification.data?.seq;
    if (seq === null || seq === undefined || !(seq > data.up_to_seq)) notification.close();
  }
}

/*
 * Pushes, and the pages' requests to close what they show, are handled one at a time, in
 * the order they came. Chromium's getNotifications() deletes from its store every
 * notification that its platform does not report as shown yet, unless it was created
 * after the read began: a `remove` read while an earlier `message` was between
 * showNotification() and its display would lose that notification from the store (it
 * stays on screen, and no later `remove` could close it). A showNotification() has
 * resolved once the notification is on display, so the next one starts after that.
 */
let queue = Promise.resolve();

/** Run `work` after everything queued before it; answer its own outcome. */
function inOrder(work) {
  const done = queue.then(work);
  queue = done.catch(() => {}); // the next goes on; a failure is its event's own
  return queue.then(() => done);
}

// How many pushes this worker finished since it started (DevTools and the browser tests
// read it to know that a push they delivered is done; a stopped worker starts at 0).
self.pushesHandled = 0;

self.addEventListener("push", (event) => {
  const data = pushData(event);
  const done = inOrder(() => (data.type === "remove" ? removeShown(data) : showMessage(data)));
  event.waitUntil(
    done.finally(() => {
      self.pushesHandled += 1;
    }),
  );
});

/** Close every notification of the conversation (a page shows it now). */
async function dismissShown(conversation) {
  for (const notification of await self.registration.getNotifications({ tag: tagOf(conversation) })) {
    notification.close();
  }
}

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const { conversation = null, url = null } = event.notification.data || {};
  event.waitUntil(
    (async () => {
      const windows = await appWindows();
      // The window the user looked at last, else any of ours.
      const client = windows.find((w) => w.focused) || windows.find((w) => w.visibilityState === "visible") || windows[0];
      if (client) {
        await client.focus().catch(() => {});
        if (conversation !== null) client.postMessage({ type: "open", conversation });
        return;
      }
      await self.clients.openWindow(ownUrl(url) || (conversation !== null ? `/#c${conversation}` : "/"));
    })(),
  );
});
