// Attention while the tab is hidden: the unread count in the title, browser
// notifications (permission asked on a click only), the service worker and Web Push.

import { api } from "./api.js";

const BASE_TITLE = document.title;

/** Show the unread count in the tab title: "(3) Chat". */
export function setTitleCount(count) {
  document.title = count > 0 ? `(${count > 99 ? "99+" : count}) ${BASE_TITLE}` : BASE_TITLE;
}

export const notificationsSupported = () => "Notification" in globalThis;

export const notificationPermission = () =>
  notificationsSupported() ? Notification.permission : "denied";

/** Ask for permission (call from a click handler: browsers require a user gesture). */
export async function requestNotifications() {
  if (!notificationsSupported()) return "denied";
  return Notification.requestPermission();
}

let gate = null;

/**
 * Ask `claim(key)` (a promise of a boolean) before showing a notification: the tabs of
 * a browser show each one once, and none while one of them is visible (worker/tabs.js).
 */
export function setNotifyGate(claim) {
  gate = claim;
}

/**
 * Show a notification for a new message while the tab is hidden. `title` and `body`
 * are plain text (the Notification API never renders markup). Clicking it focuses the
 * tab and calls `onClick`.
 */
export function notify({ title, body, tag, onClick }) {
  if (notificationPermission() !== "granted" || !document.hidden) return;
  if (!gate) {
    show({ title, body, tag, onClick });
    return;
  }
  gate(`${tag}\n${title}\n${body}`).then(
    (granted) => granted && document.hidden && show({ title, body, tag, onClick }),
    () => show({ title, body, tag, onClick }),
  );
}

function show({ title, body, tag, onClick }) {
  try {
    const notification = new Notification(title, { body, tag, renotify: false, icon: "/static/img/icon.svg" });
    notification.addEventListener("click", () => {
      globalThis.focus();
      onClick?.();
      notification.close();
    });
    return notification;
  } catch {
    return null; // Android Chrome allows notifications only from the service worker
  }
}

/**
 * Close the notifications a push showed for `conversation`: it is in front of the user
 * now. The service worker does it, in turn with the pushes it is showing (reading the
 * notifications while one is on its way to the screen would lose that one).
 */
export function dismissShown(conversation) {
  if (notificationPermission() !== "granted") return;
  navigator.serviceWorker?.controller?.postMessage({ type: "dismiss", conversation });
}

/** Register the root-scoped service worker (offline app shell, push display). */
export async function registerServiceWorker() {
  if (!("serviceWorker" in navigator)) return null;
  try {
    const registration = await navigator.serviceWorker.register("/sw.js", { scope: "/" });
    const ready = await navigator.serviceWorker.ready;
    // The first page load is not controlled by the worker yet: have it cache the app
    // page now, so a reload without network still opens the app.
    ready.active?.postMessage({ type: "cache-app" });
    return registration;
  } catch (error) {
    console.warn("service worker registration failed:", error);
    return null;
  }
}

/** Tell the service worker to forget the cached app page (on log out). */
export function forgetCachedApp() {
  navigator.serviceWorker?.controller?.postMessage({ type: "logout" });
}

function vapidKeyBytes(base64) {
  const padded = (base64 + "=".repeat((4 - (base64.length % 4)) % 4)).replace(/-/g, "+").replace(/_/g, "/");
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
}

/**
 * Subscribe to Web Push and register the subscription with `POST /api/v1/devices`,
 * when the server has a VAPID key and the user allowed notifications.
 */
export async function subscribePush(vapidPublicKey) {
  if (!vapidPublicKey || notificationPermission() !== "granted") return null;
  if (!("serviceWorker" in navigator) || !("PushManager" in globalThis)) return null;
  try {
    const registration = await navigator.serviceWorker.ready;
    let subscription = await registration.pushManager.getSubscription();
    if (!subscription) {
      subscription = await registration.pushManager.subscribe({
        userVisibleOnly: true,
        applicationServerKey: vapidKeyBytes(vapidPublicKey),
      });
    }
    const json = subscription.toJSON();
    await api("/api/v1/devices", {
      method: "POST",
      body: {
        platform: "webpush",
        subscription: { endpoint: json.endpoint, keys: json.keys },
        name: navigator.userAgentData?.brands?.[0]?.brand || "Web browser",
      },
    });
    return subscription;
  } catch (error) {
    console.warn("push subscription failed:", error);
    return null;
  }
}
