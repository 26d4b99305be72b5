// What every part of the web app shares: the page's bootstrap (`boot`, `me`), the
// element map (`ui`), the ChatClient with its outbox and history stores, the names of
// the people seen so far, and which conversation is open (`current`). `current` is read anywhere (an
// ES module import is a live binding) and changed only through setCurrent(), which
// ui/conversation.js calls when it opens or closes a conversation.

import { ChatClient } from "../client.js";
import { HistoryStore } from "../history-store.js";
import { OutboxStore } from "../outbox.js";

export const boot = JSON.parse(document.getElementById("bootstrap").textContent);
export const me = boot.user;
export const $ = (id) => document.getElementById(id);

export const ui = {
  shell: $("shell"),
  conn: $("conn-status"),
  meAvatar: $("me-avatar"),
  busy: $("busy-toggle"),
  list: $("conversation-list"),
  emptyList: $("empty-list"),
  conversations: $("conversations"),
  welcome: $("welcome"),
  chat: $("chat-view"),
  back: $("back"),
  chatAvatar: $("chat-avatar"),
  title: $("chat-title"),
  subtitle: $("chat-subtitle"),
  membersButton: $("members-button"),
  notifyWrap: $("notify-wrap"),
  notifyButton: $("notify-button"),
  notifyMenu: $("notify-menu"),
  muteItem: $("mute-item"),
  leaveButton: $("leave-button"),
  messages: $("messages"),
  messageList: $("message-list"),
  older: $("older"),
  loadOlder: $("load-older"),
  jump: $("jump"),
  typing: $("typing"),
  offlineNote: $("offline-note"),
  requestBar: $("request-bar"),
  requestText: $("request-text"),
  requestAccept: $("request-accept"),
  requestDecline: $("request-decline"),
  composer: $("composer"),
  input: $("composer-input"),
  editing: $("editing"),
  cancelEdit: $("cancel-edit"),
  tray: $("tray"),
  mentionList: $("mention-list"),
  fileInput: $("file-input"),
  attach: $("attach"),
  dropZone: $("drop-zone"),
  searchForm: $("search-form"),
  searchInput: $("search-input"),
  searchResults: $("search-results"),
  searchList: $("search-list"),
  searchStatus: $("search-status"),
  notifyBanner: $("notify-banner"),
  toast: $("toast"),
};

export const names = new Map([[me.id, me.display_name]]); // user id -> display name
export const usernames = new Map([[me.id, me.username]]); // user id -> username (for mentions)
export let current = null; // the open conversation

/** Make `id` the open conversation (null: none). Only ui/conversation.js calls it. */
export function setCurrent(id) {
  current = id;
}

export const store = new OutboxStore(me.id);
export const historyStore = new HistoryStore(me.id);
export const client = new ChatClient({
  url: `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/v1/?device=${deviceId()}`,
  user: me,
  store,
  history: historyStore,
});

function deviceId() {
  // Stable per browser and user: the server keys receipts and presence by device.
  const key = `chat.device.${me.id}`;
  let id = localStorage.getItem(key);
  if (!id || !/^[A-Za-z0-9_-]{1,64}$/.test(id)) {
    const bytes = crypto.getRandomValues(new Uint8Array(8));
    id = `web-${[...bytes].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
    localStorage.setItem(key, id);
  }
  return id;
}

// A password change made in this browser replaces the session key its sockets were
// opened with, and the gateway may close them 4401 before the change's answer, which
// carries the new key (a cookie every tab shares), has reached the page. The 4401
// handler waits for the change to settle before it asks whether the page is still signed
// in (with the old key it is not). The other tabs of the browser hear of a change in
// flight on a BroadcastChannel and wait for it too, at most CREDENTIAL_WAIT ms (the tab
// that made it may have been closed).
const CREDENTIAL_WAIT = 30_000;
let credentialChange = Promise.resolve();
let otherTabsChange = Promise.resolve();
let endOtherTabsChange = () => {};
const credentialTabs =
  typeof BroadcastChannel === "function" ? new BroadcastChannel(`chat-credentials-${me.id}`) : null;

if (credentialTabs) {
  credentialTabs.onmessage = ({ data }) => {
    if (data === "changing") {
      endOtherTabsChange();
      otherTabsChange = new Promise((resolve) => {
        const timer = setTimeout(resolve, CREDENTIAL_WAIT);
        endOtherTabsChange = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    } else if (data === "settled") {
      endOtherTabsChange();
    }
  };
}

/** Note that `request` changes this browser's credentials; return it. */
export function changingCredentials(request) {
  credentialTabs?.postMessage("changing");
  credentialChange = request.then(
    () => undefined,
    () => undefined,
  );
  credentialChange.then(() => credentialTabs?.postMessage("settled"));
  return request;
}

/** Resolve once the last credential change made in this browser has been answered. */
export const credentialsSettled = () => Promise.all([credentialChange, otherTabsChange]);

export const nameOf = (id) => (id === me.id ? "You" : names.get(id) || "Someone");

/** Remember the names of users an answer listed (members, people found). */
export function learnPeople(users) {
  for (const u of users || []) {
    names.set(u.id, u.display_name);
    if (u.username) usernames.set(u.id, u.username);
  }
}

export const isGroup = (id) => client.conversation(id)?.kind === "group";
