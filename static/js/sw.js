// The service worker, served at /sw.js (scope: the whole site) by messaging.views,
// which prepends `self.SW_CONFIG = {version, precache}`.
//
// - The app shell: static files are precached at install; the app page (`/`) is fetched
//   from the network first and cached, and served from the cache when there is no
//   network, so the app opens offline (its outbox then shows what waits to be sent).
// - Web Push: shows the notification a push carries (the sending side comes later).

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

self.addEventListener("push", (event) => {
  let data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch {
    data = { body: event.data ? event.data.text() : "" };
  }
  const title = String(data.title || "New message");
  const options = {
    body: String(data.body || ""),
    tag: data.conversation ? `conversation-${data.conversation}` : undefined,
    icon: "/static/img/icon.svg",
    data: { conversation: data.conversation || null },
  };
  event.waitUntil(self.registration.showNotification(title, options));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const conversation = event.notification.data?.conversation;
  const target = conversation ? `/#c${conversation}` : "/";
  event.waitUntil(
    (async () => {
      const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
      for (const client of windows) {
        if (new URL(client.url).origin === self.location.origin) {
          await client.focus();
          client.postMessage({ type: "open", conversation });
          return;
        }
      }
      await self.clients.openWindow(target);
    })(),
  );
});
