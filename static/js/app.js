// The web app: renders what the ChatClient (client.js) holds and turns clicks and keys
// into its requests (WebSocket) or REST calls (api.js). Every user-provided string is
// rendered with textContent or as a text node (dom.js); nothing is parsed as HTML.
//
// The parts, in ui/: list.js (the conversation list), conversation.js (opening one, its
// header), messages.js (the message list), typing.js, composer.js (writing, editing,
// mentions, attachments, drafts), emoji.js (the emoji picker, :shortcode: completion),
// notifications.js (in-tab notifications, the notify menu), presence.js (presence, my
// status, idle), actions.js (the message action menu), viewer.js (the image viewer),
// dialogs.js, switcher.js (the quick switcher, Ctrl+K), search.js, announce.js (what a
// screen reader is told of new messages); helpers.js holds small shared helpers (toast,
// avatar, debounce, soon). The keys that work anywhere (Ctrl+K, Escape) are handled here.
//
// Shared state lives in one module, ui/shared.js: the client, `me`, `boot`, the `ui`
// element map, the names seen, and `current` (the open conversation). The parts import
// it rather than having it passed in: they call each other freely (opening a
// conversation touches the list, the messages, the composer, the notify menu), and a
// context object threaded through every call would only repeat those imports. Each
// part owns its own state (drafts, the typing timers, the rendered elements), and only
// ui/conversation.js changes `current` (setCurrent).
//
// Importing a part registers nothing: its install() adds its DOM listeners and the
// client events only it handles. This file installs them all, handles the client events
// that concern several parts, the page's own events, logging out, and starts the app.
//
// The tabs of a browser share one WebSocket (worker/tabs.js, worker/hub.js): this tab's
// ChatClient connects through a link to it. What only a page has stays here: REST calls
// and their CSRF token, `online`/`offline`, visibility and idleness (the hub counts the
// user active while any tab is), notifications (shown by one tab only).

import { api } from "./api.js";
import { AUTH_FAILED, EVICTED } from "./client.js";
import * as attention from "./notify.js";
import * as actions from "./ui/actions.js";
import * as announce from "./ui/announce.js";
import * as blocking from "./ui/blocking.js";
import * as composer from "./ui/composer.js";
import * as conversation from "./ui/conversation.js";
import { closeConversation, openConversation, prefetchDetails, reloadDetails, renderHeader } from "./ui/conversation.js";
import * as dialogs from "./ui/dialogs.js";
import * as emoji from "./ui/emoji.js";
import * as groupSettings from "./ui/group-settings.js";
import { confirmDialog, paintAvatar, soon, toast } from "./ui/helpers.js";
import * as list from "./ui/list.js";
import { arrowKeys, renderList } from "./ui/list.js";
import * as messages from "./ui/messages.js";
import { isAtBottom, markRead, renderMessages } from "./ui/messages.js";
import * as notifications from "./ui/notifications.js";
import { notifyAbout, renderNotifyBanner } from "./ui/notifications.js";
import * as presence from "./ui/presence.js";
import { idleTouch, onSessionReady, renderStatus } from "./ui/presence.js";
import * as search from "./ui/search.js";
import { $, boot, client, credentialsSettled, current, historyStore, learnPeople, me, store, ui } from "./ui/shared.js";
import * as switcher from "./ui/switcher.js";
import { clearTyping } from "./ui/typing.js";
import * as typing from "./ui/typing.js";
import * as viewer from "./ui/viewer.js";
import * as voice from "./ui/voice.js";
import { Tabs } from "./worker/tabs.js";

const tabs = new Tabs(me.id);
client.openSocket = (url) => tabs.openSocket(url);
attention.setNotifyGate((key) => tabs.claim(key));

for (const part of [presence, list, conversation, messages, actions, typing, composer, emoji, notifications, dialogs, groupSettings, switcher, search, announce, viewer, blocking, voice]) part.install();

// ---------------------------------------------------------------- connection status

const STATUS_TEXT = {
  connecting: "Connecting…",
  reconnecting: "Reconnecting…",
  online: "Online",
  offline: "Offline",
  stopped: "Disconnected",
};

client.addEventListener("status", ({ detail }) => {
  ui.conn.dataset.state = detail.state;
  ui.conn.textContent = STATUS_TEXT[detail.state] || detail.state;
  ui.offlineNote.hidden = detail.state !== "offline";
  if (current !== null) soon(renderMessages);
});

let resumedAt = 0;

function toLogin() {
  ui.conn.textContent = "Signed out: log in again";
  location.assign(`/accounts/login/?next=${encodeURIComponent(location.pathname + location.hash)}`);
}

client.addEventListener("stopped", ({ detail }) => {
  if (detail.code === AUTH_FAILED) {
    // A password change in this browser gives its session a new key, so the socket opened
    // with the old one is closed 4401 while the page is still signed in: connect again
    // (once in a while; a login that really ended goes to the login page). Ask once a
    // change made in this tab or another tab of the browser has its answer, which
    // brings the new key.
    if (Date.now() - resumedAt < 15_000) {
      toLogin();
      return;
    }
    credentialsSettled()
      .then(() => api("/api/v1/users/me"))
      .then(
        () => {
          resumedAt = Date.now();
          client.resume();
        },
        toLogin,
      );
  } else if (detail.code === EVICTED) {
    ui.conn.textContent = "Open in too many windows: reload to reconnect";
  }
});

// A pong showed that we missed a receipt in this chat: read its members again.
client.addEventListener("members-stale", ({ detail }) => reloadDetails(detail.conversation));

client.addEventListener("ready", ({ detail }) => {
  onSessionReady(detail);
  prefetchDetails();
  // The members' markers of the open chat were read before this connection followed
  // it: a receipt made in between (a read while we were offline, or before the first
  // connection) reached no socket of ours. Read them again now that new ones arrive.
  if (current !== null) reloadDetails(current);
  markRead(); // what was read offline (stored history) is marked now
});

// ---------------------------------------------------------------- events for several parts

client.addEventListener("user", ({ detail }) => {
  const user = detail.user;
  learnPeople([user]);
  if (user.id === me.id) {
    Object.assign(me, { display_name: user.display_name, avatar_url: user.avatar_url });
    paintAvatar(ui.meAvatar, me.display_name, me.id, me.avatar_url);
  }
});

client.addEventListener("conversations", () => {
  soon(renderList);
  if (current !== null) {
    if (!client.active.has(current) && client.connected) closeConversation();
    else soon(renderHeader);
  }
});

client.addEventListener("messages", ({ detail }) => {
  const id = detail.conversation;
  soon(renderList); // previews, unread badges, order by activity
  const fresh = detail.messages.filter((m) => m.sender !== me.id && m.kind === "text");
  if (fresh.length) client.markDelivered(id, client.stateOf(id).cursor);
  for (const m of detail.messages) {
    if (m.kind === "system" && id === current && m.system) reloadDetails(id);
    if (m.sender !== me.id) clearTyping(id, m.sender);
  }
  if (detail.via === "live") notifyAbout(id, fresh.filter((m) => m.version === m.seq && !m.deleted));
  if (id !== current) return;
  const wasAtBottom = isAtBottom();
  if (detail.via === "older") renderMessages({ prepend: true });
  else renderMessages();
  if (!wasAtBottom && fresh.length && detail.via !== "older") ui.jump.hidden = false;
  markRead();
});

client.addEventListener("outbox", ({ detail }) => {
  if (detail.conversation === current) renderMessages({ stick: true });
  soon(renderList);
});

client.addEventListener("error", ({ detail }) => {
  if (detail.error.code === "rate_limited") toast("Slow down a little.");
});

document.addEventListener("visibilitychange", () => {
  tabs.setVisible(document.visibilityState === "visible");
  if (document.visibilityState === "visible") markRead();
  idleTouch();
});
addEventListener("focus", () => markRead());

// ---------------------------------------------------------------- keys that work anywhere

// The phone layout (one pane at a time), as static/css/app.css draws it.
const phone = matchMedia("(max-width: 47.99em)");

document.addEventListener("keydown", (event) => {
  if (event.isComposing) return;
  // Ctrl+K (Cmd+K on a Mac): the quick switcher, from anywhere (the composer too).
  if ((event.ctrlKey || event.metaKey) && !event.altKey && !event.shiftKey && (event.key || "").toLowerCase() === "k") {
    event.preventDefault();
    if (!document.querySelector("dialog[open]:not(#dialog-switcher)")) switcher.openSwitcher();
    return;
  }
  // Escape nobody used (an open dialog closes itself; the menus, lists and the picker
  // use theirs): on a phone it leaves the conversation, back to the list.
  if (event.key === "Escape" && !event.defaultPrevented && current !== null && phone.matches && !document.querySelector("dialog[open]")) {
    event.preventDefault();
    ui.back.click();
  }
});

// Search: Down from the box goes to the first result (or conversation); arrows move
// between the results; Up from the first, or Escape, goes back to the box.
ui.searchInput.addEventListener("keydown", (event) => {
  if (event.key !== "ArrowDown" || event.isComposing) return;
  const first = !ui.searchResults.hidden ? ui.searchList.querySelector(".result") : !ui.conversations.hidden ? ui.list.querySelector(".conv") : null;
  if (!first) return;
  event.preventDefault();
  first.focus();
});
ui.searchList.addEventListener("keydown", (event) => {
  if (arrowKeys(event, ui.searchList, ".result", ui.searchInput)) return;
  if (event.key === "Escape") {
    event.preventDefault();
    ui.searchInput.focus();
  }
});

// ---------------------------------------------------------------- log out

let loggingOut = false;

// Signed out in another tab: its socket, which was ours too, is closed.
tabs.onSignedOut = () => {
  if (loggingOut) return;
  client.stop();
  toLogin();
};

$("logout-form").addEventListener("submit", async (event) => {
  const form = event.currentTarget;
  if (form.dataset.confirmed) return;
  event.preventDefault();
  const unsent = client.entries.size;
  if (unsent) {
    const ok = await confirmDialog("Log out?", `${unsent} unsent message${unsent === 1 ? "" : "s"} will be discarded.`, "Log out");
    if (!ok) return;
  }
  loggingOut = true;
  client.stop();
  tabs.stop();
  attention.forgetCachedApp();
  await store.clear().catch(() => {});
  await historyStore.destroy().catch(() => {}); // the next user of this browser sees none of it
  composer.drafts.clear();
  form.dataset.confirmed = "1";
  form.submit();
});

// ---------------------------------------------------------------- start

function routeFromHash() {
  const match = /^#c(\d+)$/.exec(location.hash);
  if (match) {
    const id = Number(match[1]);
    if (client.active.has(id) && id !== current) openConversation(id);
  }
}

addEventListener("hashchange", routeFromHash);
navigator.serviceWorker?.addEventListener("message", (event) => {
  if (event.data?.type === "open" && event.data.conversation) openConversation(Number(event.data.conversation));
  // A push arrived: the worker shows no notification for what is on screen here.
  if (event.data?.type === "showing") {
    event.ports[0]?.postMessage({ conversation: document.visibilityState === "visible" ? current : null });
  }
});

paintAvatar(ui.meAvatar, me.display_name, me.id, me.avatar_url);
renderStatus();
renderNotifyBanner();
for (const conversation of boot.conversations) client.adopt(conversation);
renderList();
routeFromHash();
idleTouch();
client.start().then(() => {
  // The names of the stored conversations' members, for history shown offline.
  for (const members of client.members.values()) {
    learnPeople([...members.values()].filter((m) => m.display_name));
  }
  routeFromHash(); // a conversation only the stored history knows (offline)
  if (current !== null) renderMessages({ stick: true });
});
attention.registerServiceWorker().then(() => {
  if (attention.notificationPermission() === "granted") attention.subscribePush(boot.vapid_public_key);
});
window.chat = { client, tabs }; // for the browser console and tests
